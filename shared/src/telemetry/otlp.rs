//! OpenTelemetry trace export, off unless `SWITCHYARD_OTLP_ENDPOINT` names a collector: spans
//! of the work a trace passes through — every API request (`SERVER`) and every webhook attempt
//! (`CLIENT`, with the very span id its `traceparent` header carried, so the receiver's spans
//! hang under it) — sent as OTLP/HTTP JSON (`POST {endpoint}/v1/traces`) in batches, off the
//! request and job paths. A full buffer drops spans (counted), never waits; a collector that
//! is down costs a warning per batch. `SWITCHYARD_OTLP_SAMPLE_RATIO` keeps a share of traces,
//! whole (decided by the trace id, so every process keeps the same ones).
//!
//! This is a small exporter of our own rather than the OpenTelemetry SDK: the two span kinds
//! above are all Switchyard records, and the SDK's OTLP stack would double the HTTP client in
//! every binary.

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    metrics as m,
    trace::{TraceParent, hex},
};

/// Spans waiting to be sent, at most.
const BUFFER: usize = 10_000;
/// Spans per request to the collector, at most.
const BATCH: usize = 512;
/// How long a span waits for its batch, at most.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// What a span is, as OTLP numbers it.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Server = 2,
    Client = 3,
}

/// A finished span.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace: TraceParent,
    /// The span that caused this one, if any.
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
    pub failed: bool,
}

struct Exporter {
    tx: mpsc::Sender<Span>,
    /// Traces whose first eight id bytes, read as a number, are below this are kept.
    keep_below: u64,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Starts exporting to `endpoint` (a base URL; `/v1/traces` is appended) as `service`. Once
/// per process; later calls do nothing.
pub fn install(endpoint: &str, service: &'static str, sample_ratio: f64) {
    if EXPORTER.get().is_some() {
        return;
    }
    let (tx, rx) = mpsc::channel(BUFFER);
    let keep_below = (sample_ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    if EXPORTER.set(Exporter { tx, keep_below }).is_ok() {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        tokio::spawn(run(url, service, rx));
        tracing::info!(%endpoint, service, sample_ratio, "exporting traces (OTLP/HTTP JSON)");
    }
}

/// Whether spans are exported at all (so callers skip building them when not).
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Hands a finished span to the exporter (dropped, and counted, when its buffer is full).
pub fn record(span: Span) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    let head = u64::from_be_bytes(span.trace.trace_id[..8].try_into().expect("16 bytes"));
    if head > exporter.keep_below {
        return;
    }
    if exporter.tx.try_send(span).is_err() {
        metrics::counter!(m::OTLP_SPANS_DROPPED).increment(1);
    }
}

async fn run(url: String, service: &'static str, mut rx: mpsc::Receiver<Span>) {
    crate::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client builds");
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = match rx.recv().await {
            Some(s) => s,
            None => return,
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let body = encode(service, &batch);
        let n = batch.len() as u64;
        batch.clear();
        match client.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                metrics::counter!(m::OTLP_SPANS_EXPORTED).increment(n);
            }
            Ok(r) => {
                metrics::counter!(m::OTLP_SPANS_DROPPED).increment(n);
                tracing::warn!(
                    status = r.status().as_u16(),
                    spans = n,
                    "the trace collector refused a batch"
                );
            }
            Err(e) => {
                metrics::counter!(m::OTLP_SPANS_DROPPED).increment(n);
                tracing::warn!(error = %e, spans = n, "cannot reach the trace collector");
            }
        }
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

/// An attribute value in OTLP's JSON form.
fn any_value(v: &Value) -> Value {
    match v {
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n.as_f64() }),
        Value::String(s) => json!({ "stringValue": s }),
        other => json!({ "stringValue": other.to_string() }),
    }
}

/// One OTLP/HTTP JSON export request (`ExportTraceServiceRequest`).
fn encode(service: &str, spans: &[Span]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let attributes: Vec<Value> = s
                .attributes
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": any_value(v) }))
                .collect();
            json!({
                "traceId": hex(&s.trace.trace_id),
                "spanId": hex(&s.trace.span_id),
                "parentSpanId": s.parent.map(|p| hex(&p)).unwrap_or_default(),
                "name": s.name,
                "kind": s.kind as i32,
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": attributes,
                "status": { "code": if s.failed { 2 } else { 1 } },
            })
        })
        .collect();
    json!({ "resourceSpans": [{
        "resource": { "attributes": [
            { "key": "service.name", "value": { "stringValue": service } },
            { "key": "service.version", "value": { "stringValue": env!("CARGO_PKG_VERSION") } },
        ]},
        "scopeSpans": [{ "scope": { "name": "switchyard" }, "spans": spans }],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_encode_as_otlp_json() {
        let trace =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let start = UNIX_EPOCH + Duration::from_millis(1_500);
        let span = Span {
            trace,
            parent: Some([1, 2, 3, 4, 5, 6, 7, 8]),
            name: "POST /v1/orders".into(),
            kind: Kind::Server,
            start,
            end: start + Duration::from_millis(3),
            attributes: vec![("http.response.status_code", json!(201))],
            failed: false,
        };
        let body = encode("switchyard-api", &[span]);
        let s = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["spanId"], "00f067aa0ba902b7");
        assert_eq!(s["parentSpanId"], "0102030405060708");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["startTimeUnixNano"], "1500000000");
        assert_eq!(s["endTimeUnixNano"], "1503000000");
        assert_eq!(s["attributes"][0]["value"]["intValue"], "201");
        assert_eq!(
            body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "switchyard-api"
        );
    }
}
