//! An external system's HTTP API (an ERP, a payment gateway): answers every `GET` with the
//! status it is told and records each request's path and headers.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
};

use poem::{EndpointExt, Request, Route, get, handler, http::StatusCode, web::Data};
use tokio_util::sync::CancellationToken;

/// One request as the system saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
}

struct State {
    status: AtomicU16,
    seen: Mutex<Vec<Seen>>,
}

pub struct ErpServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<State>,
    stop: CancellationToken,
}

#[handler]
fn answer(req: &Request, state: Data<&Arc<State>>) -> (StatusCode, &'static str) {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    state.seen.lock().unwrap().push(Seen {
        path: req.uri().path().to_owned(),
        headers,
    });
    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap();
    (status, "{\"status\":\"up\"}")
}

impl ErpServer {
    pub async fn start(status: u16) -> ErpServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            status: AtomicU16::new(status),
            seen: Mutex::new(Vec::new()),
        });
        let stop = crate::partner::serve(
            listener,
            Route::new().at("/*path", get(answer)).data(state.clone()),
        );
        ErpServer {
            url: format!("http://{addr}"),
            state,
            stop,
        }
    }

    /// Answers `status` from now on.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for ErpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
