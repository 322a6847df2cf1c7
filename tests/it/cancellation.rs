//! Nothing waits `pending` without a live job: deleting or disabling an endpoint cancels what
//! waits for it at once (parked by its breaker or not), and an interrupted test send leaves
//! nothing that could hold up real deliveries.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually};

async fn pending_of(app: &TestApp, endpoint: &str) -> (i64, i64) {
    let deliveries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1::uuid AND status = 'pending'",
    )
    .bind(endpoint)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE group_key = $1::uuid
            AND state IN ('pending', 'queued', 'running')",
    )
    .bind(endpoint)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    (deliveries, jobs)
}

/// An endpoint whose breaker parked its backlog is deleted: every delivery of it is cancelled
/// in the same request, its jobs too, and its dispatch group is gone (no probes cycle over a
/// deleted endpoint, no pass looks at it again).
#[tokio::test]
async fn deleting_an_endpoint_cancels_its_parked_backlog_at_once() {
    let app = TestApp::spawn(TestOptions {
        breaker_min_attempts: 3,
        breaker_cooldown: "60s".into(),
        retry_schedule: "1s,1s,1s".into(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(500)).await;
    let (_, key) = app.partner_account().await;
    let (endpoint, _) = app.create_endpoint(&key, &partner.url, &["*"]).await;
    app.post_orders(&key, "parked", 40, 8).await;
    eventually(Duration::from_secs(20), "the breaker to open", || async {
        let ep = app
            .partner_get(&key, &format!("/v1/webhook-endpoints/{endpoint}"))
            .await;
        (ep["circuit_state"] == "open").then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "the backlog to be parked",
        || async {
            let (d, j) = pending_of(&app, &endpoint).await;
            (d >= 30 && j >= 30).then_some(())
        },
    )
    .await;
    let r = app
        .http
        .delete(app.url(&format!("/v1/webhook-endpoints/{endpoint}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // In the same transaction as the deletion: nothing of it waits any more (a delivery whose
    // attempt runs right now ends with that attempt).
    let (deliveries, jobs) = pending_of(&app, &endpoint).await;
    assert!(
        deliveries <= 16 && jobs <= 16,
        "{deliveries} deliveries, {jobs} jobs left"
    );
    // A run that read the target before the deletion and found the breaker open may already
    // have parked its job until the cool-down (60 s) ends; it then finds the endpoint gone.
    eventually(
        Duration::from_secs(75),
        "the running ones to end",
        || async { (pending_of(&app, &endpoint).await == (0, 0)).then_some(()) },
    )
    .await;
    let groups: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dispatch_groups WHERE key = $1::uuid")
            .bind(&endpoint)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        groups <= 1,
        "the group is deleted (and a late retry's row is purged)"
    );
    let cancelled = app
        .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'cancelled'")
        .await;
    assert!(cancelled >= 24, "{cancelled}");
}

/// Disabling an endpoint by hand cancels its pending deliveries at once (the README's
/// promise), shows `disabled_reason: manual`, and it gets no new deliveries until enabled.
#[tokio::test]
async fn disabling_an_endpoint_cancels_what_waits_and_stops_new_deliveries() {
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "30s".into(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(500)).await;
    let (_, key) = app.partner_account().await;
    let (endpoint, _) = app.create_endpoint(&key, &partner.url, &["*"]).await;
    assert_eq!(app.post_order(&key, "disable-1").await.status(), 201);
    // Recorded, not only sent: a run still recording is left to finish (it retries later and
    // then finds the endpoint disabled), so it would not be cancelled at once.
    let recorded = "SELECT count(*) FROM webhook_attempts";
    eventually(
        Duration::from_secs(5),
        "a first attempt, recorded",
        || async {
            (pending_of(&app, &endpoint).await == (1, 1) && app.count(recorded).await == 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(partner.count(), 1);
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/webhook-endpoints/{endpoint}"),
            json!({ "status": "disabled" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let ep: Value = r.json().await.unwrap();
    assert_eq!(ep["status"], "disabled");
    assert_eq!(ep["disabled_reason"], "manual");
    assert_eq!(
        pending_of(&app, &endpoint).await,
        (0, 0),
        "cancelled at once"
    );
    // New events skip it, in the ledger as well as on the wire.
    assert_eq!(app.post_order(&key, "disable-2").await.status(), 201);
    eventually(
        Duration::from_secs(5),
        "the second order's fan-out",
        || async {
            let n = app.count("SELECT count(*) FROM webhook_messages").await;
            (n == 2).then_some(())
        },
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_deliveries").await,
        1,
        "no delivery for a disabled endpoint"
    );
    assert_eq!(partner.count(), 1);
}

/// A test send whose client gives up (the API drops the request) writes nothing; a FIFO
/// endpoint's real deliveries are never held up by it.
#[tokio::test]
async fn an_interrupted_test_send_never_blocks_a_fifo_endpoint() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::SlowFor(
        "webhook.test".into(),
        Duration::from_secs(10),
    ))
    .await;
    let (_, key) = app.partner_account().await;
    let ep = app
        .create_endpoint_with(&key, json!({ "url": partner.url, "fifo": true }))
        .await;
    let endpoint = ep["id"].as_str().unwrap().to_owned();
    let gave_up = app
        .http
        .post(app.url(&format!("/v1/webhook-endpoints/{endpoint}/test")))
        .bearer_auth(&key)
        .timeout(Duration::from_secs(1))
        .json(&json!({}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    assert_eq!(app.post_order(&key, "fifo-after-test").await.status(), 201);
    eventually(
        Duration::from_secs(8),
        "order.created despite the test send",
        || async {
            partner
                .received()
                .iter()
                .any(|r| r.json()["type"] == "order.created")
                .then_some(())
        },
    )
    .await;
    // The test message never was a pending delivery (the API is still sending it).
    let pending = app
        .count(
            "SELECT count(*) FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
              WHERE m.event_type = 'webhook.test'",
        )
        .await;
    assert_eq!(pending, 0);
}
