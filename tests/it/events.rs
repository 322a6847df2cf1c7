//! Partner events (`POST /v1/events`): catalogued types, schema checks, fan-out to every
//! matching endpoint, ordering keys, and the outbox every producer writes to.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{
    Behaviour, PartnerServer, Received, TestApp, TestOptions, eventually, problem,
};

/// Verifies a received webhook with the Standard Webhooks reference library (Python
/// `standardwebhooks`, installed by `.ci/run`): a third party's rules, not ours. Returns the
/// payload it accepted.
fn third_party_verify(secret: &str, hook: &Received) -> Value {
    let headers: Value = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .iter()
        .map(|h| (h.to_string(), json!(hook.header(h))))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             from standardwebhooks.webhooks import Webhook\n\
             secret, headers, body = sys.argv[1], json.loads(sys.argv[2]), sys.stdin.buffer.read()\n\
             print(json.dumps(Webhook(secret).verify(body, headers)))",
            secret,
            &headers.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&hook.body)?;
            child.wait_with_output()
        })
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the reference verifier refused the webhook: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn add_type(app: &TestApp, key: &str, name: &str, schema: Option<Value>) {
    let r = app
        .partner_post(
            key,
            "/v1/event-types",
            json!({ "name": name, "schema": schema }),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

fn ncr_schema() -> Value {
    json!({
        "type": "object",
        "required": ["ncr_id", "severity"],
        "properties": {
            "ncr_id": {"type": "string"},
            "severity": {"enum": ["minor", "major", "critical"]},
            "lines": {"type": "array", "items": {"type": "object",
                "properties": {"qty": {"type": "integer", "minimum": 1}}}}
        }
    })
}

#[tokio::test]
async fn a_partner_event_reaches_every_matching_endpoint_signed_and_is_listed() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let (_, key) = app.partner_account().await;
    add_type(&app, &key, "ncr.created", Some(ncr_schema())).await;
    let quality = PartnerServer::start(Behaviour::Status(200)).await;
    let everything = PartnerServer::start(Behaviour::Status(200)).await;
    let orders_only = PartnerServer::start(Behaviour::Status(200)).await;
    let (quality_id, quality_secret) = app.create_endpoint(&key, &quality.url, &["ncr.*"]).await;
    let (all_id, all_secret) = app.create_endpoint(&key, &everything.url, &["*"]).await;
    app.create_endpoint(&key, &orders_only.url, &["order.*"])
        .await;

    let body = json!({
        "type": "ncr.created",
        "data": {"ncr_id": "NCR-1042", "severity": "major", "lines": [{"qty": 3}]},
        "occurred_at": "2026-11-30T08:15:00.250Z",
    });
    let post = || {
        app.http
            .post(app.url("/v1/events"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "ncr-1042")
            .json(&body)
            .send()
    };
    let r = post().await.unwrap();
    assert_eq!(r.status(), 201);
    let event: Value = r.json().await.unwrap();
    let id = event["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
    assert_eq!(event["type"], "ncr.created");
    assert_eq!(event["data"], body["data"]);
    assert_eq!(event["source"], "api");
    assert_eq!(event["occurred_at"], "2026-11-30T08:15:00.250Z");
    // A retry with the same key is the same event, not a second one.
    let again: Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(again, event);
    assert_eq!(app.count("SELECT count(*) FROM events").await, 1);

    for (partner, secret) in [(&quality, &quality_secret), (&everything, &all_secret)] {
        let hook = eventually(Duration::from_secs(10), "the event's webhook", || async {
            partner.received().first().cloned()
        })
        .await;
        let verified = third_party_verify(secret, &hook);
        assert_eq!(
            verified,
            json!({"type": "ncr.created", "timestamp": "2026-11-30T08:15:00.250Z",
                   "data": body["data"]})
        );
        assert!(hook.header("webhook-id").starts_with("msg_"));
    }
    // One message per event: the same webhook-id at every endpoint.
    assert_eq!(
        quality.received()[0].header("webhook-id"),
        everything.received()[0].header("webhook-id")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        orders_only.count(),
        0,
        "an order.* endpoint gets no ncr event"
    );
    assert_eq!((quality.count(), everything.count()), (1, 1));

    // Where it went: one delivery per receiving endpoint, each succeeded.
    let detail = eventually(Duration::from_secs(10), "both deliveries", || async {
        let d = app.partner_get(&key, &format!("/v1/events/{id}")).await;
        let done = d["deliveries"]
            .as_array()
            .is_some_and(|ds| ds.len() == 2 && ds.iter().all(|x| x["status"] == "succeeded"));
        done.then_some(d)
    })
    .await;
    let mut endpoints: Vec<&str> = detail["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["endpoint_id"].as_str().unwrap())
        .collect();
    endpoints.sort();
    let mut expected = vec![quality_id.as_str(), all_id.as_str()];
    expected.sort();
    assert_eq!(endpoints, expected);
    assert_eq!(detail["has_more_deliveries"], false);
    assert_eq!(detail["type"], "ncr.created");

    // The outbox holds order events too; filters and pages.
    app.post_order(&key, "events-1").await;
    let list = app.partner_get(&key, "/v1/events").await;
    let types: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["order.created", "ncr.created"]);
    assert_eq!(list["data"][0]["source"], "order");
    let only = app.partner_get(&key, "/v1/events?type=ncr.created").await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
    assert_eq!(only["data"][0]["id"], id.as_str());
    let page = app.partner_get(&key, "/v1/events?limit=1").await;
    assert_eq!(page["has_more"], true);
    let next = app
        .partner_get(
            &key,
            &format!(
                "/v1/events?limit=1&starting_after={}",
                page["data"][0]["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(next["data"][0]["id"], id.as_str());
    assert_eq!(next["has_more"], false);
    let future = app
        .partner_get(&key, "/v1/events?created%5Bgte%5D=2099-01-01T00:00:00Z")
        .await;
    assert_eq!(future["data"], json!([]));
    let past = app
        .partner_get(&key, "/v1/events?created%5Blte%5D=2020-01-01T00:00:00Z")
        .await;
    assert_eq!(past["data"], json!([]));

    // Another tenant sees none of it.
    let (_, other) = app.partner_account().await;
    let r = app
        .http
        .get(app.url(&format!("/v1/events/{id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    problem(r, 404, "resource_not_found", None).await;
    assert_eq!(
        app.partner_get(&other, "/v1/events").await["data"],
        json!([])
    );
}

#[tokio::test]
async fn events_outside_the_catalog_or_its_schema_are_refused_and_write_nothing() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (tenant, key) = app.partner_account().await;
    let post = |body: Value| app.partner_post(&key, "/v1/events", body);

    let r = post(json!({"type": "ncr.created", "data": {}})).await;
    let p = problem(r, 400, "unknown_event_type", Some("type")).await;
    assert!(p["detail"].as_str().unwrap().contains("ncr.created"), "{p}");
    let r = post(json!({"type": "order.created", "data": {}})).await;
    problem(r, 400, "event_type_built_in", Some("type")).await;
    let r = post(json!({"type": "not a type!", "data": {}})).await;
    assert_eq!(r.status(), 400);
    let r = post(json!({"type": "ncr.created", "data": [1, 2]})).await;
    assert_eq!(r.status(), 400, "data must be an object");

    // A schema is checked when it is saved.
    for bad in [
        json!({"type": "objekt"}),
        json!({"$ref": "https://schemas.example.com/ncr.json"}),
        json!({"type": "string", "pattern": "(unclosed"}),
    ] {
        let r = app
            .partner_post(
                &key,
                "/v1/event-types",
                json!({"name": "ncr.created", "schema": bad}),
            )
            .await;
        problem(r, 400, "schema_invalid", Some("schema")).await;
    }
    add_type(&app, &key, "ncr.created", Some(ncr_schema())).await;
    let r = app
        .partner_patch(
            &key,
            "/v1/event-types/ncr.created",
            json!({"schema": {"type": 42}}),
        )
        .await;
    problem(r, 400, "schema_invalid", Some("schema")).await;

    // `data` is checked against it: the first violation, by its JSON pointer.
    let r = post(json!({"type": "ncr.created", "data": {"ncr_id": "N-1"}})).await;
    let p = problem(r, 422, "schema_mismatch", Some("/data")).await;
    assert!(p["detail"].as_str().unwrap().contains("severity"), "{p}");
    let r = post(json!({"type": "ncr.created",
                        "data": {"ncr_id": "N-1", "severity": "major",
                                 "lines": [{"qty": 1}, {"qty": 0}]}}))
    .await;
    problem(r, 422, "schema_mismatch", Some("/data/lines/1/qty")).await;
    let r = post(json!({"type": "ncr.created",
                        "data": {"ncr_id": "N-1", "severity": "catastrophic"}}))
    .await;
    problem(r, 422, "schema_mismatch", Some("/data/severity")).await;
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE queue = 'event_fan_out'")
            .await,
        0
    );

    // A changed schema applies at once (the compiled one is not kept past its version).
    let ok = json!({"type": "ncr.created", "data": {"ncr_id": "N-1", "severity": "minor"}});
    assert_eq!(post(ok.clone()).await.status(), 201);
    let r = app
        .partner_patch(
            &key,
            "/v1/event-types/ncr.created",
            json!({"schema": {"type": "object", "required": ["capa_id"]}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    problem(post(ok).await, 422, "schema_mismatch", Some("/data")).await;
    // A type without a schema takes any object.
    add_type(&app, &key, "capa.closed", None).await;
    let r = post(json!({"type": "capa.closed", "data": {"anything": [1, {"x": null}]}})).await;
    assert_eq!(r.status(), 201);

    // Posting needs `events:write`; reading `events:read`.
    let (_, reader) = app.create_key(&tenant, Some(&["events:read"])).await;
    let r = app
        .partner_post(
            &reader,
            "/v1/events",
            json!({"type": "capa.closed", "data": {}}),
        )
        .await;
    problem(r, 403, "insufficient_scope", None).await;
    let (_, orders_key) = app.create_key(&tenant, Some(&["orders:read"])).await;
    let r = app
        .http
        .get(app.url("/v1/events"))
        .bearer_auth(&orders_key)
        .send()
        .await
        .unwrap();
    problem(r, 403, "insufficient_scope", None).await;
    let r = app
        .http
        .get(app.url("/v1/events/evt_0000"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    problem(r, 404, "resource_not_found", None).await;
}

/// Events sharing an ordering key reach an endpoint one after another, each only once the one
/// before it succeeded; another key is not held back by them.
#[tokio::test]
async fn events_with_one_ordering_key_arrive_in_order_even_through_retries() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let (_, key) = app.partner_account().await;
    add_type(&app, &key, "payment.completed", None).await;
    // Every message fails once, then succeeds.
    let partner = PartnerServer::start(Behaviour::PerMessage(vec![500, 200])).await;
    app.create_endpoint_with(
        &key,
        json!({"url": partner.url, "event_types": ["payment.*"], "retry_schedule": ["200ms"]}),
    )
    .await;
    let n = 6;
    for i in 0..n {
        let r = app
            .partner_post(
                &key,
                "/v1/events",
                json!({"type": "payment.completed", "ordering_key": "invoice-7",
                       "data": {"i": i}}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let r = app
        .partner_post(
            &key,
            "/v1/events",
            json!({"type": "payment.completed", "ordering_key": "invoice-8", "data": {"i": 99}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    eventually(Duration::from_secs(30), "every event delivered", || async {
        (partner
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .count()
            == n + 1)
            .then_some(())
    })
    .await;
    let seen: Vec<(i64, u16)> = partner
        .received()
        .iter()
        .map(|r| (r.json()["data"]["i"].as_i64().unwrap(), r.status))
        .collect();
    let keyed: Vec<(i64, u16)> = seen.iter().copied().filter(|(i, _)| *i != 99).collect();
    let expected: Vec<(i64, u16)> = (0..n as i64).flat_map(|i| [(i, 500), (i, 200)]).collect();
    assert_eq!(
        keyed, expected,
        "each event only after the previous one succeeded"
    );
    // The other key's event did not wait for the six.
    let other = seen.iter().position(|(i, _)| *i == 99).unwrap();
    assert!(
        other < seen.len() - 2,
        "invoice-8 went on its own: {seen:?}"
    );
}
