//! The circuit breaker: it opens on a failing window, parks the endpoint's deliveries in the
//! ledger, lets one probe through after the cool-down, re-opens for longer when the probe
//! fails, and closes on success.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually};

async fn group(app: &TestApp, endpoint: &str) -> Option<(String, i32)> {
    sqlx::query_as("SELECT breaker, trips FROM dispatch_groups WHERE key = $1::uuid")
        .bind(endpoint)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
}

/// How long the endpoint's breaker stays open from now, on the database's clock.
async fn open_for(app: &TestApp, endpoint: &str) -> Duration {
    let ms: f64 = sqlx::query_scalar(
        "SELECT (extract(epoch FROM paused_until - now()) * 1000)::float8
           FROM dispatch_groups WHERE key = $1::uuid",
    )
    .bind(endpoint)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    Duration::from_millis(ms.max(0.0) as u64)
}

/// An app whose breakers trip after `min_attempts` failures and cool down for a second, a
/// partner answering 500, and an endpoint to it retried on `retry_schedule`: the app, the
/// partner, the partner's API key and the endpoint's id.
async fn failing_endpoint(
    min_attempts: u32,
    retry_schedule: Value,
) -> (TestApp, PartnerServer, String, String) {
    let app = TestApp::spawn(TestOptions {
        breaker_cooldown: "1s".into(),
        breaker_min_attempts: min_attempts,
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(500)).await;
    let (_, key) = app.partner_account().await;
    let ep = app
        .create_endpoint_with(
            &key,
            json!({ "url": partner.url, "retry_schedule": retry_schedule }),
        )
        .await;
    let id = ep["id"].as_str().unwrap().to_owned();
    (app, partner, key, id)
}

/// Eight retries 100 ms apart: deliveries outlive a trip.
fn short_retries() -> Value {
    json!([
        "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms"
    ])
}

#[tokio::test]
async fn the_breaker_opens_parks_probes_and_closes() {
    let (app, partner, key, id) = failing_endpoint(4, short_retries()).await;
    let ops = PartnerServer::start(Behaviour::Status(200)).await;
    app.create_endpoint_with(&key, json!({ "url": ops.url, "operational": true }))
        .await;
    app.post_orders(&key, "ord-brk", 6, 6).await;

    // Open: the endpoint shows it, and its deliveries wait in Postgres, not in Redis or a worker.
    eventually(Duration::from_secs(10), "the breaker to open", || async {
        (group(&app, &id).await == Some(("open".into(), 1))).then_some(())
    })
    .await;
    let first = open_for(&app, &id).await;
    assert!(
        first <= Duration::from_secs(1),
        "first cool-down 1 s: {first:?}"
    );
    let v: Value = app
        .partner_get(&key, &format!("/v1/webhook-endpoints/{id}"))
        .await;
    assert_eq!(v["circuit_state"], "open");
    assert!(v["circuit_open_until"].is_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = partner.count();
    let busy: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE group_key = $1::uuid AND state IN ('queued', 'running')",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        busy, 0,
        "parked deliveries hold no worker slot and no Redis space"
    );
    assert_eq!(app.queues.depth("webhook_deliveries").await.unwrap(), 0);

    // Cool-down over, still failing: exactly one probe, then open again for longer.
    eventually(Duration::from_secs(10), "the probe to fail", || async {
        (group(&app, &id).await == Some(("open".into(), 2))).then_some(())
    })
    .await;
    // Seen within a poll of the trip: more than the first cool-down is left of the second.
    let second = open_for(&app, &id).await;
    assert!(
        second > Duration::from_millis(1200) && second <= Duration::from_secs(2),
        "second cool-down doubled to 2 s: {second:?} left"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(partner.count(), settled + 1, "one probe while half-open");

    // The endpoint recovers: the next probe succeeds, the breaker closes, everything arrives.
    partner.set_behaviour(Behaviour::Status(200));
    eventually(Duration::from_secs(15), "the breaker to close", || async {
        (group(&app, &id).await == Some(("closed".into(), 0))).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(15),
        "every delivery to succeed",
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM webhook_deliveries
                  WHERE endpoint_id = $1::uuid AND status = 'succeeded'",
            )
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (n == 6).then_some(())
        },
    )
    .await;
    let v: Value = app
        .partner_get(&key, &format!("/v1/webhook-endpoints/{id}"))
        .await;
    assert_eq!(v["circuit_state"], "closed");
    assert_eq!(v["circuit_open_until"], Value::Null);
    let notice = eventually(Duration::from_secs(5), "endpoint.recovered", || async {
        ops.received().into_iter().next()
    })
    .await;
    assert_eq!(notice.json()["type"], "endpoint.recovered");
    assert_eq!(notice.json()["data"]["endpoint_id"], id.as_str());
}

#[tokio::test]
async fn a_failing_endpoint_is_disabled_announced_and_catches_up_when_enabled_again() {
    let app = TestApp::spawn(TestOptions {
        disable_after_failures: 3,
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(500)).await;
    let ops = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    let ep = app
        .create_endpoint_with(
            &key,
            json!({ "url": partner.url, "retry_schedule": ["100ms", "100ms", "100ms", "100ms", "100ms"] }),
        )
        .await;
    let id = ep["id"].as_str().unwrap().to_owned();
    let op = app
        .create_endpoint_with(&key, json!({ "url": ops.url, "operational": true }))
        .await;
    assert_eq!(op["operational"], true);
    assert_eq!(app.post_order(&key, "ord-dis-1").await.status(), 201);

    // Three consecutive failures: disabled, and the operational endpoint hears of it (and of
    // nothing else: no order events go there).
    let notice = eventually(Duration::from_secs(10), "endpoint.disabled", || async {
        ops.received().into_iter().next()
    })
    .await;
    let body = notice.json();
    assert_eq!(body["type"], "endpoint.disabled");
    assert_eq!(body["data"]["endpoint_id"], id.as_str());
    assert_eq!(body["data"]["reason"], "failing");
    let v = app
        .partner_get(&key, &format!("/v1/webhook-endpoints/{id}"))
        .await;
    assert_eq!(v["status"], "disabled");
    assert_eq!(v["disabled_reason"], "failing");
    assert_eq!(v["consecutive_failures"], 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        partner.count(),
        3,
        "no attempt after the endpoint was disabled"
    );

    // Orders while it is disabled reach nobody …
    app.post_orders(&key, "ord-dis-while", 2, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(partner.count(), 3);
    assert_eq!(ops.count(), 1, "operational endpoints get no order events");

    // … until it is enabled with replay: the cancelled delivery and both missed messages.
    partner.set_behaviour(Behaviour::Status(200));
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/webhook-endpoints/{id}"),
            json!({ "status": "enabled", "replay_missed": true }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "enabled");
    assert_eq!(v["replayed"], 3);
    assert_eq!(v["consecutive_failures"], 0);
    eventually(Duration::from_secs(10), "the missed messages", || async {
        (partner.unique_ids().len() == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok = partner
        .received()
        .iter()
        .filter(|r| r.status == 200)
        .count();
    assert_eq!(ok, 3, "each missed message answered once, nothing twice");
    assert_eq!(partner.count(), 6, "three failures, then three successes");
}

#[tokio::test]
async fn fewer_attempts_than_the_minimum_never_trip_the_breaker() {
    let (app, partner, key, id) = failing_endpoint(4, json!([])).await;
    // Three failures, every one of them: a 100 % failure rate, but below the minimum.
    app.post_orders(&key, "ord-few", 3, 3).await;
    eventually(Duration::from_secs(10), "three failed attempts", || async {
        (partner.count() == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        group(&app, &id).await.map(|g| g.0).as_deref(),
        Some("closed")
    );
    // The fourth failure reaches the minimum and trips it.
    assert_eq!(app.post_order(&key, "ord-few-4").await.status(), 201);
    eventually(Duration::from_secs(10), "the breaker to open", || async {
        (group(&app, &id).await == Some(("open".into(), 1))).then_some(())
    })
    .await;
}

/// After a trip, every parked delivery is due at the same moment, so the dispatcher's probe may
/// be a later change of an order whose earlier change is still pending. That probe hands the
/// probe to the earlier change and sends it in its place (`webhooks::ordering`): the endpoint
/// recovers at its first cool-down, and the changes still arrive in order.
#[tokio::test]
async fn a_probe_that_must_wait_for_an_earlier_change_of_its_order_sends_that_one_instead() {
    let (app, partner, key, id) = failing_endpoint(3, short_retries()).await;
    let order: Value = app.post_order(&key, "probe-1").await.json().await.unwrap();
    let order_id = order["id"].as_str().unwrap();
    for n in 1..=5 {
        let path = format!("/v1/orders/{order_id}");
        let r = app
            .partner_patch(&key, &path, json!({ "notes": format!("change {n}") }))
            .await;
        assert_eq!(r.status(), 200);
    }
    eventually(Duration::from_secs(10), "the breaker to open", || async {
        (group(&app, &id).await.is_some_and(|(b, _)| b == "open")).then_some(())
    })
    .await;
    // The parked deliveries are all due at the cool-down's end; which one a pass picks among
    // equal due times is up to Postgres. Make it the last change, one millisecond ahead of
    // the others: the probe is then sure to be a delivery that must wait.
    let moved = sqlx::query(
        "UPDATE jobs SET run_at = run_at - interval '1 millisecond'
          WHERE id = (SELECT j.id FROM jobs j JOIN webhook_deliveries d ON d.id = j.subject_id
                       WHERE d.endpoint_id = $1::uuid AND j.state = 'pending'
                       ORDER BY d.ordering_seq DESC LIMIT 1)",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(moved, 1);

    // The partner recovers before the first cool-down ends: the probe succeeds, whichever
    // delivery it had to send first.
    partner.set_behaviour(Behaviour::Status(200));
    eventually(
        Duration::from_secs(8),
        "the breaker to close and all six changes to arrive",
        || async {
            let ok = partner.received().into_iter().filter(|r| r.status == 200);
            (ok.count() == 6 && group(&app, &id).await == Some(("closed".into(), 0))).then_some(())
        },
    )
    .await;
    let notes: Vec<Value> = partner
        .received()
        .into_iter()
        .filter(|r| r.status == 200)
        .map(|r| r.json()["data"]["notes"].clone())
        .collect();
    let expected: Vec<Value> = std::iter::once(json!("extra basil"))
        .chain((1..=5).map(|n| json!(format!("change {n}"))))
        .collect();
    assert_eq!(notes, expected, "in the order of the changes");
}

/// A breaker that closed counts failures from then on: the failures that opened it were
/// answered by the probe that closed it, so the next single failure does not open it again.
#[tokio::test]
async fn a_closed_breaker_forgets_the_failures_that_opened_it() {
    let (app, partner, key, id) = failing_endpoint(4, json!([])).await;
    app.post_orders(&key, "ord-fail", 4, 1).await;
    eventually(Duration::from_secs(10), "the breaker to open", || async {
        (group(&app, &id).await == Some(("open".into(), 1))).then_some(())
    })
    .await;
    partner.set_behaviour(Behaviour::Status(200));
    assert_eq!(app.post_order(&key, "ord-probe").await.status(), 201);
    eventually(Duration::from_secs(10), "the probe to close it", || async {
        (group(&app, &id).await == Some(("closed".into(), 0))).then_some(())
    })
    .await;
    partner.set_behaviour(Behaviour::Status(500));
    assert_eq!(app.post_order(&key, "ord-one-failure").await.status(), 201);
    eventually(Duration::from_secs(10), "the failure recorded", || async {
        (partner.count() == 6).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(group(&app, &id).await, Some(("closed".into(), 0)));
}
