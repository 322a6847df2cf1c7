//! What the destinations that speak HTTP share: a JSON request as sent and as logged, the
//! exchange through the SSRF-guarded client, and which answers are final.

use serde_json::Value;
use switchyard_shared::{
    net,
    webhooks::send::{self, AttemptResult, Outbound},
};

use crate::Attempt;

/// A request to build on: sent headers and logged headers start equal.
pub(crate) struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub logged: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A `POST` of `body` as JSON.
pub(crate) fn json_request(url: &str, body: &Value) -> Request {
    let headers = vec![
        (
            "content-type".to_owned(),
            "application/json; charset=utf-8".to_owned(),
        ),
        ("user-agent".to_owned(), net::USER_AGENT.to_owned()),
    ];
    Request {
        method: reqwest::Method::POST,
        url: url.to_owned(),
        logged: headers.clone(),
        headers,
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

pub(crate) async fn exchange(at: &Attempt<'_>, r: Request) -> AttemptResult {
    let outbound = Outbound {
        method: r.method,
        url: &r.url,
        headers: r.headers,
        logged: r.logged,
        body: r.body,
    };
    send::exchange(
        at.client, at.egress, outbound, at.ts, at.started, at.timeout,
    )
    .await
}

/// A `4xx` that says the request itself is wrong (not `408`, `409`, `425`, `429`) fails the
/// delivery at once: sending it again cannot succeed. (`410` keeps its meaning: the engine
/// disables the endpoint.)
pub(crate) fn final_client_errors(result: &mut AttemptResult) {
    if let Some(s @ 400..=499) = result.status_code
        && !matches!(s, 408 | 409 | 410 | 425 | 429)
    {
        result.permanent = true;
    }
}
