//! The destination boundary: what the delivery engine calls to make one attempt. The engine
//! (load the target, the breaker, ordering, [`super::delivery::decide`], [`super::record`])
//! knows nothing of the wire; a transport knows nothing of retries or the ledger. Signed HTTP
//! webhooks are the first transport; another destination is one more implementation chosen by
//! the endpoint, with the engine untouched (docs/architecture.md §4).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;

use super::{credentials::Credentials, delivery::Target, scrub, send, send::AttemptResult};
use crate::{
    net::{self, Egress},
    telemetry::{otlp, trace::TraceParent},
};

/// Makes one attempt of a message to an endpoint. Never fails: every failure (refused address,
/// timeout, an error answer) is a classified [`AttemptResult`] for the engine to log and decide on.
pub trait Transport: Send + Sync {
    fn send<'a>(
        &'a self,
        target: &'a Target,
        credentials: &'a Credentials,
        timeout: Duration,
    ) -> BoxFuture<'a, AttemptResult>;
}

/// Standard Webhooks over HTTP: a signed POST through the SSRF-guarded client.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    egress: Egress,
}

impl HttpTransport {
    /// `max_timeout` bounds every request; each attempt sets its endpoint's own, shorter one.
    pub fn new(egress: Egress, connect_timeout: Duration, max_timeout: Duration) -> Self {
        HttpTransport {
            client: net::outbound_client(egress.clone(), connect_timeout, max_timeout),
            egress,
        }
    }

    /// The SSRF-guarded client, for other destinations that speak HTTP.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The egress rules this transport enforces (endpoint URLs are checked against them when
    /// saved, too).
    pub fn egress(&self) -> &Egress {
        &self.egress
    }
}

impl Transport for HttpTransport {
    fn send<'a>(
        &'a self,
        target: &'a Target,
        credentials: &'a Credentials,
        timeout: Duration,
    ) -> BoxFuture<'a, AttemptResult> {
        Box::pin(async move {
            let start = std::time::SystemTime::now();
            let mut result =
                send::send(&self.client, target, credentials, &self.egress, timeout).await;
            scrub::for_log(&mut result, credentials);
            if otlp::enabled() {
                let attributes = http_attributes(target, &result);
                let span = attempt_span(target, &result, start, "POST webhook".into(), attributes);
                otlp::record(span);
            }
            result
        })
    }
}

/// An attempt as a `CLIENT` span of the trace the event was written under: the span id its
/// `traceparent` header carried when it had one (webhooks), else a child of the event's span.
/// `name` and `attributes` are the destination's; the delivery's ids and the error class are
/// added here. Used by every destination kind.
pub fn attempt_span(
    target: &Target,
    result: &AttemptResult,
    start: std::time::SystemTime,
    name: String,
    mut attributes: Vec<(&'static str, serde_json::Value)>,
) -> otlp::Span {
    let written = target.traceparent.as_deref().and_then(TraceParent::parse);
    let parent = written.as_ref().map(|t| t.span_id);
    let trace = result
        .request_headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .and_then(|(_, v)| TraceParent::parse(v))
        .or_else(|| written.map(|t| t.child()))
        .unwrap_or_else(|| TraceParent::of_message(target.message_id));
    attributes.extend([
        (
            "switchyard.delivery_id",
            json!(target.delivery_id.to_string()),
        ),
        (
            "switchyard.endpoint_id",
            json!(target.endpoint_id.to_string()),
        ),
        (
            "switchyard.message_id",
            json!(target.message_id.to_string()),
        ),
    ]);
    if let Some(class) = result.error_class {
        attributes.push(("error.type", json!(class)));
    }
    otlp::Span {
        trace,
        parent,
        name,
        kind: otlp::Kind::Client,
        start,
        end: start + result.duration,
        attributes,
        failed: !result.succeeded(),
    }
}

/// A webhook attempt's span attributes: the method, the host and the status.
fn http_attributes(
    target: &Target,
    result: &AttemptResult,
) -> Vec<(&'static str, serde_json::Value)> {
    let host = url::Url::parse(&target.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let mut attributes = vec![
        ("http.request.method", json!("POST")),
        ("server.address", json!(host)),
    ];
    if let Some(status) = result.status_code {
        attributes.push(("http.response.status_code", json!(status)));
    }
    attributes
}
