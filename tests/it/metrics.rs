//! The metric catalogue, as an operator's Prometheus sees it: one real `switchyard-api
//! --with-worker` process runs a scripted workload (orders delivered to a healthy and a failing
//! endpoint, inbound webhooks, a sync run, a rate-limited key), and its `/metrics` then holds
//! every family the workload touches, with the values the workload implies, help texts, and no
//! ids in any label.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Executor;
use switchyard_shared::telemetry::metrics as m;
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions};

/// The sum of the samples of `name` whose labels include all of `labels`; `None` when there
/// is no such sample.
pub(crate) fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        {
            *found.get_or_insert(0.0) += v.parse::<f64>().unwrap();
        }
    }
    found
}

/// A series (name, labels) and what its value must satisfy.
type Expected = (String, Vec<(&'static str, &'static str)>, fn(f64) -> bool);

async fn post(app: &TestApp, base: &str, key: &str, path: &str, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_metric_family_is_exported_with_plausible_values_after_a_workload() {
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "200ms,200ms".into(),
        ..TestOptions::no_worker()
    })
    .await;
    let (_process, base) = app.api_with_worker().await;
    let tenant = app.create_tenant("metered").await;
    let (_, key) = app
        .create_key(
            &tenant,
            Some(&[
                "orders:write",
                "webhooks:write",
                "integrations:write",
                "sync:write",
            ]),
        )
        .await;
    let limited = app
        .create_key_with(
            &tenant,
            json!({"name": "limited", "scopes": ["orders:read"], "rate_limit_per_minute": 2}),
        )
        .await;
    let limited = limited["key"].as_str().unwrap();

    // Orders to a healthy and a failing endpoint.
    let healthy = PartnerServer::start(Behaviour::Status(200)).await;
    let failing = PartnerServer::start(Behaviour::Status(503)).await;
    for url in [&healthy.url, &failing.url] {
        let r = post(
            &app,
            &base,
            &key,
            "/v1/webhook-endpoints",
            json!({"url": url, "event_types": ["order.created"]}),
        )
        .await;
        assert_eq!(r.status(), 201);
    }
    for i in 0..3 {
        let r = post(
            &app,
            &base,
            &key,
            "/v1/orders",
            TestApp::order_body(&format!("m-{i}")),
        )
        .await;
        assert_eq!(r.status(), 201);
    }
    // Inbound webhooks: one accepted (and processed), one refused.
    let integration: Value = post(
        &app,
        &base,
        &key,
        "/v1/integrations",
        json!({"name": "Carrier", "code": "carrier", "type": "erp", "provider": "http",
               "base_url": "http://127.0.0.1:9",
               "inbound": {"scheme": "none", "action": {"type": "store"}}}),
    )
    .await
    .json()
    .await
    .unwrap();
    let inbound = format!("{base}{}", integration["inbound_url"].as_str().unwrap());
    for (content_type, status) in [("application/json", 202), ("text/plain", 415)] {
        let r = app
            .http
            .post(&inbound)
            .header("content-type", content_type)
            .body(r#"{"id": 1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }
    // A sync run of three rows into the record store.
    let (erp, mut conn) = crate::sync::erp().await;
    conn.execute(
        "CREATE TABLE erp.items (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO erp.items VALUES (1, 'a'), (2, 'b'), (3, 'c');",
    )
    .await
    .unwrap();
    let source = crate::sync::integration(&app, &key, "postgres", &erp.url).await;
    let config = crate::sync::configure(
        &app,
        &key,
        json!({"name": "Items", "entity": "items", "mode": "full",
               "source": {"integration_id": source, "table": "erp.items", "key": ["id"]},
               "target": {"store": "switchyard"}}),
    )
    .await;
    let r = post(
        &app,
        &base,
        &key,
        &format!("/v1/sync/configurations/{config}/runs"),
        json!({}),
    )
    .await;
    assert_eq!(r.status(), 202);
    // A key over its limit.
    let statuses: Vec<u16> = futures::future::join_all((0..3).map(|_| async {
        app.http
            .get(format!("{base}/v1/orders"))
            .bearer_auth(limited)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );

    let count = |histogram: &str| format!("{histogram}_count");
    let expected: Vec<Expected> = vec![
        (
            count(m::HTTP_REQUEST_DURATION),
            vec![("operation", "createOrder"), ("status", "201")],
            |v| v == 3.0,
        ),
        (m::RATE_LIMITED.into(), vec![("limit", "key-minute")], |v| {
            v == 1.0
        }),
        (
            m::INBOUND_EVENTS.into(),
            vec![("outcome", "accepted")],
            |v| v == 1.0,
        ),
        (
            m::INBOUND_EVENTS.into(),
            vec![("outcome", "rejected")],
            |v| v == 1.0,
        ),
        (
            m::INBOUND_EVENTS.into(),
            vec![("outcome", "completed")],
            |v| v == 1.0,
        ),
        (
            m::WEBHOOK_ATTEMPTS.into(),
            vec![("outcome", "succeeded"), ("status_class", "2xx")],
            |v| v == 3.0,
        ),
        (
            m::WEBHOOK_ATTEMPTS.into(),
            vec![("outcome", "http_status"), ("status_class", "5xx")],
            |v| v >= 3.0,
        ),
        (count(m::WEBHOOK_ATTEMPT_DURATION), vec![], |v| v >= 6.0),
        (
            m::JOBS_FINISHED.into(),
            vec![("queue", "webhook_deliveries"), ("outcome", "succeeded")],
            |v| v >= 3.0,
        ),
        (
            m::JOBS_FINISHED.into(),
            vec![("queue", "webhook_deliveries"), ("outcome", "dead")],
            |v| v >= 1.0,
        ),
        (
            m::JOBS_FINISHED.into(),
            // Three orders, and the sync run's `sync.run.succeeded`.
            vec![("queue", "event_fan_out"), ("outcome", "succeeded")],
            |v| v == 4.0,
        ),
        (
            count(m::JOB_DURATION),
            vec![("queue", "webhook_deliveries")],
            |v| v >= 6.0,
        ),
        (
            count(m::JOB_START_DELAY),
            vec![("queue", "webhook_deliveries")],
            |v| v >= 6.0,
        ),
        (m::DISPATCHED.into(), vec![], |v| v >= 1.0),
        (
            m::RECONCILED.into(),
            vec![("reason", "expired_lease")],
            |v| v == 0.0,
        ),
        (
            m::JOBS.into(),
            vec![("queue", "webhook_deliveries"), ("state", "dead")],
            |v| v >= 1.0,
        ),
        (
            m::OLDEST_DUE_JOB_AGE.into(),
            vec![("queue", "webhook_deliveries")],
            |v| v >= 0.0,
        ),
        (m::ENDPOINT_BREAKERS.into(), vec![], |v| v == 2.0),
        (m::SYNC_ROWS.into(), vec![("outcome", "read")], |v| v == 3.0),
        (m::SYNC_ROWS.into(), vec![("outcome", "inserted")], |v| {
            v == 3.0
        }),
        (
            m::SYNC_RUNS_FINISHED.into(),
            vec![("status", "succeeded")],
            |v| v == 1.0,
        ),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let text = loop {
        let text = app.get_text(&format!("{base}/metrics")).await;
        let missing: Vec<_> = expected
            .iter()
            .filter(|(name, labels, ok)| !value(&text, name, labels).is_some_and(ok))
            .map(|(name, labels, _)| (name, labels, value(&text, name, labels)))
            .collect();
        if missing.is_empty() {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not as expected: {missing:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for family in [
        m::HTTP_REQUEST_DURATION,
        m::RATE_LIMITED,
        m::INBOUND_EVENTS,
        m::JOBS,
        m::OLDEST_DUE_JOB_AGE,
        m::JOBS_FINISHED,
        m::JOB_DURATION,
        m::JOB_START_DELAY,
        m::DISPATCHED,
        m::RECONCILED,
        m::WEBHOOK_ATTEMPTS,
        m::WEBHOOK_ATTEMPT_DURATION,
        m::ENDPOINT_BREAKERS,
        m::SYNC_ROWS,
        m::SYNC_RUNS_FINISHED,
    ] {
        let help = m::CATALOGUE.iter().find(|c| c.name == family).unwrap().help;
        assert!(
            text.contains(&format!("# HELP {family} {help}")),
            "{family} has no help text"
        );
    }
    // Bounded labels: no id of any kind.
    let hex = |s: &[u8]| s.iter().all(u8::is_ascii_hexdigit);
    let bytes = text.as_bytes();
    let uuid_like = (0..bytes.len().saturating_sub(14)).any(|i| {
        hex(&bytes[i..i + 8])
            && bytes[i + 8] == b'-'
            && hex(&bytes[i + 9..i + 13])
            && bytes[i + 13] == b'-'
    });
    assert!(!uuid_like, "an id in a label:\n{text}");
}

/// Operators read the catalogue in the README: it lists every family there is.
#[test]
fn the_readme_lists_every_metric_of_the_catalogue() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    for metric in m::CATALOGUE {
        assert!(
            readme.contains(&format!("| `{}` |", metric.name)),
            "the README's metric table lacks {}",
            metric.name
        );
    }
}

/// The Grafana dashboard and the alert rules in `deploy/` query only metrics that exist.
#[test]
fn the_deploy_dashboards_and_alerts_use_catalogued_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dashboard = std::fs::read_to_string(root.join("grafana/switchyard.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).unwrap();
    assert!(parsed["panels"].as_array().unwrap().len() > 10);
    let alerts = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    let mut used = 0;
    for text in [&dashboard, &alerts] {
        for (at, _) in text.match_indices("switchyard_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                m::CATALOGUE.iter().any(|c| c.name == family),
                "{name} is not in the metric catalogue"
            );
            used += 1;
        }
    }
    assert!(used > 30, "{used}");
}
