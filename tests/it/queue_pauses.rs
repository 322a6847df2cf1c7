//! Operators pause a queue cluster-wide: nothing of it is dispatched, claimed or started —
//! not by a dispatch pass, a fan-out, a hand-off or a task already in Redis — until they
//! resume it, and then every job runs, once.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually};

async fn queue(app: &TestApp, name: &str) -> Value {
    let (_, list) = app.admin_get_json("/admin/v1/queues").await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == name)
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_paused_queue_starts_nothing_until_resumed_and_then_runs_every_job_once() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["order.created"])
        .await;
    // A first order goes through: the path is warm, the deliveries queue has run here.
    assert_eq!(app.post_order(&key, "before").await.status(), 201);
    eventually(Duration::from_secs(10), "the first webhook", || async {
        (partner.count() == 1).then_some(())
    })
    .await;

    for q in ["event_fan_out", "webhook_deliveries"] {
        let (status, paused) = app
            .admin_post_json(&format!("/admin/v1/queues/{q}/pause"), json!({}))
            .await;
        assert_eq!(status, 200, "{paused}");
        assert_eq!(paused["paused"], true);
        assert_eq!(queue(&app, q).await["paused"], true);
    }
    assert_eq!(queue(&app, "sync_runs").await["paused"], false);
    app.post_orders(&key, "paused", 5, 5).await;
    // Fan-outs were pushed to Redis by the API at once; claims refuse them, and the reconciler
    // (after 1 s here) returns them to the ledger, where no pass dispatches them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(partner.count(), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_deliveries").await,
        1,
        "no fan-out ran"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE queue = 'event_fan_out' AND state = 'pending'")
            .await,
        5
    );

    // Fan-outs resume; their deliveries are born pending behind the paused queue.
    let (status, resumed) = app
        .admin_post_json("/admin/v1/queues/event_fan_out/resume", json!({}))
        .await;
    assert_eq!((status, resumed["paused"].as_bool()), (200, Some(false)));
    eventually(Duration::from_secs(10), "the fan-outs", || async {
        let n = app.count("SELECT count(*) FROM webhook_deliveries").await;
        (n == 6).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(partner.count(), 1, "deliveries stay paused");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM jobs WHERE queue = 'webhook_deliveries' AND state = 'pending'"
        )
        .await,
        5
    );

    app.admin_post_json("/admin/v1/queues/webhook_deliveries/resume", json!({}))
        .await;
    eventually(Duration::from_secs(10), "every paused webhook", || async {
        (partner.count() == 6).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        (partner.count(), partner.unique_ids().len()),
        (6, 6),
        "each once"
    );

    // Audited, and only real queues.
    let audited = app
        .count(
            "SELECT count(*) FROM audit_events WHERE action IN ('queue.paused', 'queue.resumed')",
        )
        .await;
    assert_eq!(audited, 4);
    let (status, body) = app
        .admin_post_json("/admin/v1/queues/no_such_queue/pause", json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("resource_not_found"))
    );
}

/// A success frees its endpoint's slot and would hand it to the endpoint's next delivery in
/// the same statement (the hand-off): not while the queue is paused.
#[tokio::test]
async fn a_pause_stops_hand_offs_too() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Slow(Duration::from_secs(1))).await;
    let (_, key) = app.partner_account().await;
    let body = json!({ "url": partner.url, "max_concurrency": 1 });
    app.create_endpoint_with(&key, body).await;
    app.post_orders(&key, "handoff", 4, 4).await;
    // The first delivery is in flight (the partner answers after a second); the other three
    // wait behind the cap of 1 for the slot it will free.
    eventually(Duration::from_secs(10), "the first delivery", || async {
        (partner.count() == 1).then_some(())
    })
    .await;
    app.admin_post_json("/admin/v1/queues/webhook_deliveries/pause", json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(partner.count(), 1, "no hand-off while paused");
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'")
            .await,
        1
    );
    app.admin_post_json("/admin/v1/queues/webhook_deliveries/resume", json!({}))
        .await;
    eventually(Duration::from_secs(15), "the other three", || async {
        (partner.count() == 4).then_some(())
    })
    .await;
    assert_eq!(partner.max_in_flight(), 1, "the cap held");
}
