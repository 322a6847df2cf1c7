//! Every job has an attempt cap: a poison event dies visibly (counted `dead` with its reason)
//! instead of retrying forever, and the order's later events go on without it.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{ADMIN_TOKEN, Behaviour, PartnerServer, TestApp, TestOptions, eventually};

#[tokio::test]
async fn a_poison_event_dies_visibly_and_does_not_block_its_order() {
    let app = TestApp::spawn(TestOptions {
        args: vec![
            "--job-retry-delay=20ms".into(),
            "--job-retry-max-delay=50ms".into(),
        ],
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;
    // Every fan-out of an `order.created` fails (a poison event, as a bug would make it).
    sqlx::raw_sql(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.event_type = 'order.created' THEN RAISE EXCEPTION 'poisoned event'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER poison BEFORE INSERT ON webhook_messages
           FOR EACH ROW EXECUTE FUNCTION poison();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let order: Value = app.post_order(&key, "poison-1").await.json().await.unwrap();
    let queues = || async {
        let v: Value = app
            .http
            .get(app.url("/admin/v1/queues"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == "event_fan_out")
            .cloned()
            .unwrap()
    };
    let q = eventually(
        Duration::from_secs(30),
        "the event's job to die",
        || async {
            let q = queues().await;
            (q["dead"] == 1).then_some(q)
        },
    )
    .await;
    assert_eq!(q["pending"], 0, "{q}");
    let (attempt, error): (i32, String) = sqlx::query_as(
        "SELECT attempt, last_error FROM jobs WHERE queue = 'event_fan_out' AND state = 'dead'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempt, switchyard_shared::events::FAN_OUT_MAX_ATTEMPTS);
    assert!(
        error.contains("gave up after") && error.contains("poisoned event"),
        "{error}"
    );
    // The order goes on: its next event is delivered.
    let r = app
        .partner_post(
            &key,
            &format!("/v1/orders/{}/status", order["id"].as_str().unwrap()),
            json!({ "status": "confirmed" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(10), "order.confirmed", || async {
        partner
            .received()
            .iter()
            .any(|r| r.json()["type"] == "order.confirmed")
            .then_some(())
    })
    .await;
    assert_eq!(
        partner.count(),
        1,
        "the poisoned order.created never went out"
    );
}
