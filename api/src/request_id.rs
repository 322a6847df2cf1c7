//! Every request gets an id (`Request-Id: req_…`), a W3C trace context (the caller's
//! `traceparent` continued, or a new trace; events it writes keep it), a tracing span, an
//! access-log line, a metrics sample labelled by operation (bounded cardinality), and, when
//! traces are exported, a `SERVER` span.

use std::time::{Instant, SystemTime};

use poem::{Endpoint, IntoResponse, Middleware, Request, Response, http::HeaderValue};
use poem_openapi::OperationId;
use serde_json::json;
use switchyard_shared::telemetry::{
    metrics as m, otlp,
    trace::{self, TraceParent},
};
use tracing::Instrument;

#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub struct RequestIdMiddleware;

impl<E: Endpoint> Middleware<E> for RequestIdMiddleware {
    type Output = RequestIdEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        RequestIdEndpoint(ep)
    }
}

pub struct RequestIdEndpoint<E>(E);

impl<E: Endpoint> Endpoint for RequestIdEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let id = format!("req_{}", uuid::Uuid::now_v7().simple());
        req.extensions_mut().insert(RequestId(id.clone()));
        let method = req.method().clone();
        let path = path_for_logs(req.uri().path());
        // The caller's trace goes on through this request (a new span of it), or one starts.
        let caller = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        let trace = caller.map_or_else(TraceParent::root, |t| t.child());
        let span = tracing::info_span!("request", request_id = %id, %method, %path,
            trace_id = %trace.trace_id_hex(), tenant_id = tracing::field::Empty);
        let started = Instant::now();
        let result = trace::scope(trace, self.0.call(req).instrument(span.clone())).await;
        let mut resp = match result {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        };
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert("request-id", v);
        }
        let status = resp.status().as_u16();
        let elapsed = started.elapsed();
        let operation = resp.data::<OperationId>().map(|o| o.0).unwrap_or("other");
        metrics::histogram!(m::HTTP_REQUEST_DURATION,
            "operation" => operation, "status" => status.to_string())
        .record(elapsed.as_secs_f64());
        span.in_scope(|| {
            tracing::info!(
                status,
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                "request"
            );
        });
        if otlp::enabled() {
            let end = SystemTime::now();
            otlp::record(otlp::Span {
                trace,
                parent: caller.map(|c| c.span_id),
                name: format!("{method} {operation}"),
                kind: otlp::Kind::Server,
                start: end - elapsed,
                end,
                attributes: vec![
                    ("http.request.method", json!(method.as_str())),
                    ("url.path", json!(path)),
                    ("http.response.status_code", json!(status)),
                    ("switchyard.operation", json!(operation)),
                    ("switchyard.request_id", json!(id)),
                ],
                failed: status >= 500,
            });
        }
        Ok(resp)
    }
}

/// A request's path as logs and traces keep it: an inbound URL's token is a credential (with
/// scheme `none`, the only one), so only its first characters are kept.
pub(crate) fn path_for_logs(path: &str) -> String {
    match path.strip_prefix("/inbound/") {
        Some(token) => format!("/inbound/{}…", token.chars().take(7).collect::<String>()),
        None => path.to_owned(),
    }
}
