//! Bulk replays: counted first, run at their rate, reach endpoints that never had the
//! messages, and stop when cancelled.

use std::time::Duration;

use serde_json::Value;
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually};

#[tokio::test]
async fn bulk_replays_count_first_run_at_their_rate_reach_new_endpoints_and_can_be_cancelled() {
    use serde_json::json;
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Status(500)).await;
    let (_, key) = app.partner_account().await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    let a = app
        .create_endpoint_with(&key, json!({ "url": partner.url, "retry_schedule": [] }))
        .await;
    let a = a["id"].as_str().unwrap().to_owned();
    app.post_orders(&key, "ord-replay", 6, 6).await;
    eventually(Duration::from_secs(10), "six failed deliveries", || async {
        let n = app
            .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'")
            .await;
        (n == 6).then_some(())
    })
    .await;
    let replay = |endpoint: String, body: Value| {
        let (app, key) = (&app, &key);
        async move {
            let r = app
                .partner_post(
                    key,
                    &format!("/v1/webhook-endpoints/{endpoint}/replays"),
                    body,
                )
                .await;
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()
        }
    };
    let wait_done = |id: String| {
        let (app, key) = (&app, &key);
        async move {
            eventually(
                Duration::from_secs(20),
                "the replay to complete",
                || async {
                    let v = app
                        .partner_get(key, &format!("/v1/webhook-replays/{id}"))
                        .await;
                    (v["state"] == "completed").then_some(v)
                },
            )
            .await
        }
    };

    // Dry run: counted, nothing sent.
    let dry = replay(a.clone(), json!({ "since": since, "dry_run": true })).await;
    assert_eq!(dry["state"], "dry_run");
    assert_eq!(dry["total"], 6);
    assert_eq!(dry["scheduled"], 0);

    // The endpoint works again: replay its failures at 2 per second.
    partner.set_behaviour(Behaviour::Status(200));
    let r = replay(a.clone(), json!({ "since": since, "rate_per_second": 2 })).await;
    assert_eq!(r["state"], "running");
    let done = wait_done(r["id"].as_str().unwrap().to_owned()).await;
    assert_eq!(done["processed"], 6);
    assert_eq!(done["scheduled"], 6);
    eventually(
        Duration::from_secs(10),
        "the replayed deliveries",
        || async { (partner.count() == 12).then_some(()) },
    )
    .await;
    assert_eq!(
        partner.unique_ids().len(),
        6,
        "same webhook-ids as the first time"
    );
    let replayed: Vec<_> = partner
        .received()
        .into_iter()
        .skip(6)
        .map(|r| r.at)
        .collect();
    let span = *replayed.last().unwrap() - replayed[0];
    // Six at 2/s are three batches of two, a second apart: the first to the last is 2 s.
    assert!(span >= Duration::from_millis(1900), "2/s: 6 took {span:?}");

    // A new endpoint gets the history it never had.
    let newcomer = PartnerServer::start(Behaviour::Status(200)).await;
    let (b, _) = app.create_endpoint(&key, &newcomer.url, &["order.*"]).await;
    let r = replay(
        b.clone(),
        json!({ "since": since, "statuses": [], "include_missing": true, "rate_per_second": 100 }),
    )
    .await;
    wait_done(r["id"].as_str().unwrap().to_owned()).await;
    eventually(
        Duration::from_secs(10),
        "the newcomer's history",
        || async { (newcomer.unique_ids().len() == 6).then_some(()) },
    )
    .await;

    // Cancelled after its first batch: nothing more is scheduled.
    let r = replay(
        b.clone(),
        json!({ "since": since, "statuses": ["succeeded"], "rate_per_second": 1 }),
    )
    .await;
    let id = r["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(5), "the first batch", || async {
        let v = app
            .partner_get(&key, &format!("/v1/webhook-replays/{id}"))
            .await;
        (v["scheduled"] == 1).then_some(())
    })
    .await;
    let c: Value = app
        .partner_post(&key, &format!("/v1/webhook-replays/{id}/cancel"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["state"], "cancelled");
    let at_cancel = c["scheduled"].as_i64().unwrap();
    let sent = newcomer.count();
    // Three more 1/s batches would have come by now.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let v = app
        .partner_get(&key, &format!("/v1/webhook-replays/{id}"))
        .await;
    assert_eq!(v["scheduled"].as_i64().unwrap(), at_cancel, "{v}");
    assert_eq!(v["state"], "cancelled");
    assert!(
        newcomer.count() <= sent + at_cancel as usize,
        "only what was scheduled before the cancel went out"
    );
}
