//! W3C trace context: a partner's `traceparent` goes on through its request into the events it
//! writes and every webhook attempt they become (same trace, a new span per attempt); without
//! one, a message's attempts still share one trace.

use std::time::Duration;

use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The `traceparent` header's trace id and span id, checking its shape.
fn parts(header: &str) -> (String, String) {
    let p: Vec<&str> = header.split('-').collect();
    assert_eq!(p.len(), 4, "{header}");
    assert_eq!(p[0], "00");
    assert!(
        p[1].len() == 32 && p[2].len() == 16 && p[3].len() == 2,
        "{header}"
    );
    (p[1].to_owned(), p[2].to_owned())
}

#[tokio::test]
async fn a_requests_traceparent_reaches_every_attempt_of_the_webhooks_it_causes() {
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "100ms".into(),
        ..Default::default()
    })
    .await;
    // Each message fails once, then succeeds: two attempts each.
    let partner = PartnerServer::start(Behaviour::PerMessage(vec![503, 200])).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["order.created"])
        .await;
    let traced = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&key)
        .header("traceparent", PARENT)
        .json(&TestApp::order_body("traced"))
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 201);
    assert_eq!(app.post_order(&key, "untraced").await.status(), 201);
    // A malformed header is ignored: the request starts its own trace.
    let bad = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&key)
        .header("traceparent", "00-nonsense")
        .json(&TestApp::order_body("malformed"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 201);

    let received = eventually(
        Duration::from_secs(15),
        "two attempts per order",
        || async {
            let r = partner.received();
            (r.len() == 6).then_some(r)
        },
    )
    .await;
    let attempts = |external_id: &str| -> Vec<(String, String)> {
        received
            .iter()
            .filter(|r| r.json()["data"]["external_id"] == external_id)
            .map(|r| parts(r.header("traceparent")))
            .collect()
    };
    let traced = attempts("traced");
    assert_eq!(traced.len(), 2);
    for (trace, span) in &traced {
        assert_eq!(trace, TRACE_ID, "the caller's trace");
        assert_ne!(span, "00f067aa0ba902b7", "a span of its own");
    }
    assert_ne!(traced[0].1, traced[1].1, "a new span per attempt");
    for other in ["untraced", "malformed"] {
        let a = attempts(other);
        assert_eq!(a.len(), 2);
        assert_ne!(a[0].0, TRACE_ID);
        assert_eq!(a[0].0, a[1].0, "a message's attempts share its trace");
    }
    assert_ne!(attempts("untraced")[0].0, attempts("malformed")[0].0);
    // The event keeps the request's context.
    let stored: String =
        sqlx::query_scalar("SELECT traceparent FROM events WHERE data->>'external_id' = 'traced'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(parts(&stored).0, TRACE_ID);
}

/// An OpenTelemetry collector's OTLP/HTTP endpoint: keeps every span it is sent.
struct Collector {
    url: String,
    spans: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    _stop: tokio_util::sync::CancellationToken,
}

impl Collector {
    async fn start() -> Collector {
        use poem::{EndpointExt, Route, handler, post, web::Data, web::Json};
        type Spans = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;
        #[handler]
        fn traces(Json(body): Json<serde_json::Value>, spans: Data<&Spans>) -> &'static str {
            let mut all = spans.lock().unwrap();
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                let service = rs["resource"]["attributes"][0]["value"]["stringValue"].clone();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        let mut s = s.clone();
                        s["service"] = service.clone();
                        all.push(s);
                    }
                }
            }
            "{}"
        }
        let spans: Spans = Default::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = switchyard_tests::partner::serve(
            listener,
            Route::new()
                .at("/v1/traces", post(traces))
                .data(spans.clone()),
        );
        Collector {
            url: format!("http://{addr}"),
            spans,
            _stop: stop,
        }
    }

    fn spans(&self) -> Vec<serde_json::Value> {
        self.spans.lock().unwrap().clone()
    }
}

fn attribute<'a>(span: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map_or(&serde_json::Value::Null, |kv| &kv["value"])
}

#[tokio::test]
async fn spans_of_the_request_and_its_webhook_reach_an_opentelemetry_collector() {
    let collector = Collector::start().await;
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["order.created"])
        .await;
    let mut env = app.process_env();
    env.push(("SWITCHYARD_WITH_WORKER".into(), "true".into()));
    env.push(("SWITCHYARD_OTLP_ENDPOINT".into(), collector.url.clone()));
    let (_api, base) = switchyard_tests::process::Process::spawn_api(&env).await;
    let r = app
        .http
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&key)
        .header("traceparent", PARENT)
        .json(&TestApp::order_body("exported"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sent = eventually(Duration::from_secs(15), "the webhook", || async {
        partner
            .received()
            .first()
            .map(|r| parts(r.header("traceparent")))
    })
    .await;
    let spans = eventually(Duration::from_secs(15), "both spans exported", || async {
        let spans = collector.spans();
        let server = spans
            .iter()
            .find(|s| s["kind"] == 2 && s["traceId"] == TRACE_ID)
            .cloned();
        let client = spans.iter().find(|s| s["kind"] == 3).cloned();
        server.zip(client)
    })
    .await;
    let (server, client) = spans;
    // The request: a span of the caller's trace, under the caller's span.
    assert_eq!(server["name"], "POST createOrder", "{server}");
    assert_eq!(server["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(server["service"], "switchyard-api");
    assert_eq!(
        attribute(&server, "http.response.status_code")["intValue"],
        "201"
    );
    assert_eq!(server["status"]["code"], 1);
    // The attempt: the very span the partner was told of, under the request's span.
    assert_eq!(client["traceId"], TRACE_ID);
    assert_eq!(client["spanId"], sent.1.as_str(), "{client}");
    assert_eq!(client["parentSpanId"], server["spanId"]);
    assert_eq!(
        attribute(&client, "http.response.status_code")["intValue"],
        "200"
    );
    assert_eq!(
        attribute(&client, "server.address")["stringValue"],
        "127.0.0.1"
    );
    let start: u128 = client["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u128 = client["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(end >= start);
    let metrics = app.get_text(&format!("{base}/metrics")).await;
    let exported =
        super::metrics::value(&metrics, "switchyard_otlp_spans_exported_total", &[]).unwrap_or(0.0);
    assert!(exported >= 2.0, "{exported}");
}

/// Posts an order from a trace whose id starts with `head` (16 hex digits); its trace id.
async fn post_traced(app: &TestApp, base: &str, key: &str, head: &str, n: usize) -> String {
    let trace_id = format!("{head}{:016x}", n + 1);
    let r = app
        .http
        .post(format!("{base}/v1/orders"))
        .bearer_auth(key)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&TestApp::order_body(&format!("sampled-{head}-{n}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    trace_id
}

#[tokio::test]
async fn a_sample_ratio_keeps_whole_traces_and_a_collector_that_is_down_costs_only_spans() {
    let collector = Collector::start().await;
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["order.created"])
        .await;
    let mut env = app.process_env();
    env.push(("SWITCHYARD_WITH_WORKER".into(), "true".into()));
    env.push(("SWITCHYARD_OTLP_ENDPOINT".into(), collector.url.clone()));
    env.push(("SWITCHYARD_OTLP_SAMPLE_RATIO".into(), "0.5".into()));
    let (sampling, base) = switchyard_tests::process::Process::spawn_api(&env).await;
    // Traces are kept by their id's first 8 bytes (below half of 2^64 at 0.5), in every
    // process alike: the ones posted first are dropped, the ones posted last kept.
    let mut dropped = Vec::new();
    for n in 0..5 {
        dropped.push(post_traced(&app, &base, &key, "c000000000000000", n).await);
    }
    let mut kept = Vec::new();
    for n in 0..5 {
        kept.push(post_traced(&app, &base, &key, "1000000000000000", n).await);
    }
    eventually(Duration::from_secs(15), "every webhook", || async {
        (partner.received().len() == 10).then_some(())
    })
    .await;
    // Each kept trace whole: its request's span and its attempt's.
    let spans = eventually(Duration::from_secs(15), "the kept traces", || async {
        let spans = collector.spans();
        kept.iter()
            .all(|t| {
                let of = |kind: i64| {
                    spans
                        .iter()
                        .any(|s| s["traceId"] == *t && s["kind"] == kind)
                };
                of(2) && of(3)
            })
            .then_some(spans)
    })
    .await;
    for t in &dropped {
        assert!(
            !spans.iter().any(|s| s["traceId"] == *t),
            "trace {t} is not sampled, none of its spans is exported"
        );
    }

    // A collector that cannot be reached: orders and webhooks go on; the spans are dropped
    // and counted (both the request's and the attempt's: this process alone runs now).
    drop(sampling);
    let mut env = app.process_env();
    env.push(("SWITCHYARD_WITH_WORKER".into(), "true".into()));
    env.push((
        "SWITCHYARD_OTLP_ENDPOINT".into(),
        "http://127.0.0.1:9".into(),
    ));
    let (_down, base) = switchyard_tests::process::Process::spawn_api(&env).await;
    post_traced(&app, &base, &key, "2000000000000000", 0).await;
    eventually(Duration::from_secs(15), "the webhook", || async {
        (partner.received().len() == 11).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(15),
        "the spans counted as dropped",
        || async {
            let metrics = app.get_text(&format!("{base}/metrics")).await;
            let dropped =
                super::metrics::value(&metrics, "switchyard_otlp_spans_dropped_total", &[]);
            dropped.filter(|d| *d >= 2.0)
        },
    )
    .await;
}
