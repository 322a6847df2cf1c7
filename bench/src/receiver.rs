//! The benchmark's partner endpoint: verifies every signature and records when each order's
//! webhook first arrived at each endpoint.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use poem::{
    Body, EndpointExt, Request, Route, handler, listener::TcpAcceptor, post, web::Data, web::Path,
};
use switchyard_shared::webhooks::signing;

#[derive(Default)]
struct State {
    secrets: Vec<Vec<u8>>,
    seen: HashSet<(String, usize)>,
    first_seen: HashMap<String, Vec<Instant>>,
    total: usize,
    bad_signatures: usize,
    last_at: Option<Instant>,
    /// Per endpoint, the highest `webhook-id` seen so far (ids sort in message order), and how
    /// many first arrivals came after a later message's.
    highest: HashMap<usize, String>,
    out_of_order: usize,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<State>>,
}

pub struct Report {
    pub first_seen: HashMap<String, Vec<Instant>>,
    pub unique: usize,
    pub total: usize,
    pub bad_signatures: usize,
    pub last_at: Option<Instant>,
    /// Messages that reached an endpoint after a later one (what FIFO endpoints must never see).
    pub out_of_order: usize,
}

#[handler]
async fn receive(
    req: &Request,
    Path(endpoint): Path<usize>,
    body: Body,
    state: Data<&Arc<Mutex<State>>>,
) -> &'static str {
    let now = Instant::now();
    let body = body.into_vec().await.unwrap_or_default();
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, ts, sig) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let order_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["data"]["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut s = state.lock().unwrap();
    let valid = s.secrets.get(endpoint).is_some_and(|key| {
        ts.parse::<i64>().is_ok_and(|t| {
            signing::verify(
                key,
                &id,
                t,
                &body,
                &sig,
                chrono::Utc::now().timestamp(),
                300,
            )
            .is_ok()
        })
    });
    if !valid {
        s.bad_signatures += 1;
    }
    s.total += 1;
    s.last_at = Some(now);
    if s.seen.insert((id.clone(), endpoint)) {
        s.first_seen.entry(order_id).or_default().push(now);
        match s.highest.get(&endpoint) {
            Some(h) if *h > id => s.out_of_order += 1,
            _ => {
                s.highest.insert(endpoint, id);
            }
        }
    }
    "ok"
}

/// The noisy neighbour: a partner that never answers (the request times out on our side).
#[handler]
async fn dead() -> &'static str {
    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    "too late"
}

impl Receiver {
    pub async fn start(listen: &str) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let app = Route::new()
            .at("/hook/dead", post(dead))
            .at("/hook/:endpoint", post(receive))
            .data(state.clone());
        let acceptor = TcpAcceptor::from_tokio(listener)?;
        tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        Ok(Receiver {
            url: format!("http://{addr}/hook"),
            state,
        })
    }

    pub fn set_secrets(&self, secrets: Vec<String>) {
        self.state.lock().unwrap().secrets = secrets
            .iter()
            .map(|s| signing::secret_key(s).expect("whsec_ secret"))
            .collect();
    }

    /// A message a broker consumer received for endpoint `endpoint` (no signature to check:
    /// brokers carry none).
    pub fn record(&self, endpoint: usize, id: String, body: &[u8]) {
        let now = Instant::now();
        let order_id = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["data"]["id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut s = self.state.lock().unwrap();
        s.total += 1;
        s.last_at = Some(now);
        if s.seen.insert((id, endpoint)) {
            s.first_seen.entry(order_id).or_default().push(now);
        }
    }

    pub fn unique_count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    pub fn report(&self) -> Report {
        let s = self.state.lock().unwrap();
        Report {
            first_seen: s.first_seen.clone(),
            unique: s.seen.len(),
            total: s.total,
            bad_signatures: s.bad_signatures,
            last_at: s.last_at,
            out_of_order: s.out_of_order,
        }
    }
}
