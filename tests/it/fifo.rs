//! A FIFO endpoint gets events in the order they were accepted, also when their fan-outs run
//! in another order: an event with a FIFO subscriber is fanned out only after every earlier
//! event of its tenant.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually};

#[tokio::test]
async fn a_fifo_endpoint_waits_for_an_earlier_event_still_to_be_fanned_out() {
    let mut app = TestApp::spawn(TestOptions::no_worker()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint_with(&key, json!({"url": partner.url, "fifo": true}))
        .await;
    assert_eq!(app.post_order(&key, "first").await.status(), 201);
    assert_eq!(app.post_order(&key, "second").await.status(), 201);
    // The first event's fan-out waits for a retry 2 s ahead (as after a failed try; its task
    // in Redis is stale now); the second one's is due.
    let retried = sqlx::query(
        "UPDATE jobs j SET state = 'pending', run_at = now() + interval '2 s',
                           dispatch_seq = dispatch_seq + 1, queued_at = NULL
           FROM events e
          WHERE e.id = j.subject_id AND j.queue = 'event_fan_out'
            AND e.data->>'external_id' = 'first'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(retried.rows_affected(), 1);
    app.start_worker();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(partner.count(), 0, "the second event waits for the first");
    eventually(Duration::from_secs(10), "both webhooks", || async {
        (partner.count() == 2).then_some(())
    })
    .await;
    let order: Vec<String> = partner
        .received()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            body["data"]["external_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(order, ["first", "second"]);
}
