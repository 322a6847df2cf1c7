//! A partner's webhook endpoint: records every request and answers as told.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use poem::{
    Body, EndpointExt, Request, Response, Route, handler, http::StatusCode, listener::TcpAcceptor,
    post, web::Data,
};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer this status to everything.
    Status(u16),
    /// Per `webhook-id`: the n-th request gets the n-th status (the last one repeats).
    PerMessage(Vec<u16>),
    /// Answer 200 after this long.
    Slow(Duration),
    /// Per `webhook-id`: the n-th request gets the n-th reply (the last one repeats).
    Replies(Vec<Reply>),
    /// Requests whose body's `type` is this one get `Slow(delay)`; the rest 200 at once.
    SlowFor(String, Duration),
}

/// A scripted answer: status, extra headers, and a delay before answering.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Option<Duration>,
    /// Response body; default `partner says hi`.
    pub body: Option<String>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            ..Default::default()
        }
    }

    pub fn body(mut self, body: impl Into<String>) -> Reply {
        self.body = Some(body.into());
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

#[derive(Clone, Debug)]
pub struct Received {
    /// The path and query it was sent to.
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

struct State {
    behaviour: Mutex<Behaviour>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    received: Mutex<Vec<Received>>,
    per_message: Mutex<HashMap<String, usize>>,
}

pub struct PartnerServer {
    /// `http://127.0.0.1:port`: every path is answered the same way.
    pub base: String,
    pub url: String,
    state: Arc<State>,
    stop: CancellationToken,
}

#[handler]
async fn receive(req: &Request, body: Body, state: Data<&Arc<State>>) -> Response {
    let body = body.into_vec().await.unwrap_or_default();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let id = headers.get("webhook-id").cloned().unwrap_or_default();
    let nth = {
        let mut per = state.per_message.lock().unwrap();
        let n = per.entry(id).or_insert(0);
        *n += 1;
        *n - 1
    };
    let behaviour = state.behaviour.lock().unwrap().clone();
    let reply = match &behaviour {
        Behaviour::Status(s) => Reply::status(*s),
        Behaviour::PerMessage(seq) => Reply::status(seq[nth.min(seq.len() - 1)]),
        Behaviour::Slow(d) => Reply {
            status: 200,
            delay: Some(*d),
            ..Default::default()
        },
        Behaviour::Replies(seq) => seq[nth.min(seq.len() - 1)].clone(),
        Behaviour::SlowFor(kind, d) => {
            let is = serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|v| v["type"] == kind.as_str());
            Reply {
                status: 200,
                delay: is.then_some(*d),
                ..Default::default()
            }
        }
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.as_str().to_owned());
    state.received.lock().unwrap().push(Received {
        path,
        headers,
        body,
        at: Instant::now(),
        status: reply.status,
    });
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
    for (name, value) in &reply.headers {
        response = response.header(*name, value.as_str());
    }
    response.body(reply.body.unwrap_or_else(|| "partner says hi".into()))
}

impl PartnerServer {
    pub async fn start(behaviour: Behaviour) -> PartnerServer {
        Self::start_on("127.0.0.1", behaviour).await
    }

    /// Listens on `ip` (any loopback address, e.g. `127.0.0.2`) and an ephemeral port.
    pub async fn start_on(ip: &str, behaviour: Behaviour) -> PartnerServer {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            behaviour: Mutex::new(behaviour),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            per_message: Mutex::new(HashMap::new()),
        });
        let stop = serve(
            listener,
            Route::new()
                .at("/hook", post(receive))
                .at("/*path", post(receive))
                .data(state.clone()),
        );
        PartnerServer {
            base: format!("http://{addr}"),
            url: format!("http://{addr}/hook"),
            state,
            stop,
        }
    }

    /// Changes how the server answers from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    /// Most requests the server was handling at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// The `webhook-id` of every request, in the order they arrived.
    pub fn ids(&self) -> Vec<String> {
        self.state
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect()
    }

    /// Distinct `webhook-id`s seen (each is one message).
    pub fn unique_ids(&self) -> HashSet<String> {
        self.ids().into_iter().collect()
    }
}

/// Serves `app` on `listener` until the returned token is cancelled: how every test server
/// playing the outside world runs.
pub fn serve(
    listener: tokio::net::TcpListener,
    app: impl poem::Endpoint + 'static,
) -> CancellationToken {
    let stop = CancellationToken::new();
    let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(app, token.cancelled_owned(), Some(Duration::from_secs(1)))
            .await;
    });
    stop
}

impl Drop for PartnerServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
