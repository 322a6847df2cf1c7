//! Leases: a run that lost its lease changes nothing; a long run keeps its lease; time
//! decisions use the database's clock, whatever the worker's clock says.

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_tests::{
    Behaviour, PartnerServer, Reply, TestApp, TestOptions, eventually, process::WorkerProcess,
};

fn env_with(app: &TestApp, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = app.process_env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn live_jobs(app: &TestApp, delivery: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE subject_id = $1::uuid
            AND state IN ('pending', 'queued', 'running')",
    )
    .bind(delivery)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// A worker frozen mid-request loses its lease; another worker delivers; when the first one
/// thaws and its request fails, it logs its attempt and changes nothing else: the delivery
/// stays `succeeded`, and the order's next event is delivered.
#[tokio::test]
async fn a_run_that_lost_its_lease_leaves_the_delivery_alone() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    // Request #1 of a message is held 12 s, then answered 500; every later one 200 at once.
    let slow_fail = Reply {
        status: 500,
        delay: Some(Duration::from_secs(12)),
        ..Default::default()
    };
    let partner =
        PartnerServer::start(Behaviour::Replies(vec![slow_fail, Reply::status(200)])).await;
    let (_, key) = app.partner_account().await;
    let (endpoint, _) = app.create_endpoint(&key, &partner.url, &["*"]).await;
    let mut first = WorkerProcess::spawn(&app.process_env());
    let order: serde_json::Value = app.post_order(&key, "lease-1").await.json().await.unwrap();
    eventually(Duration::from_secs(20), "request #1", || async {
        (partner.count() == 1).then_some(())
    })
    .await;
    first.freeze();
    let mut second = WorkerProcess::spawn(&app.process_env());
    let deliveries = format!("/v1/webhook-endpoints/{endpoint}/deliveries");
    let delivery = eventually(
        Duration::from_secs(30),
        "the second worker's success",
        || async {
            let v = app.partner_get(&key, &deliveries).await;
            let d = v["data"][0].clone();
            (d["status"] == "succeeded").then_some(d)
        },
    )
    .await;
    let id = delivery["id"].as_str().unwrap().to_owned();
    first.thaw();
    // The thawed worker's request ends with a 500 (12 s after it began): it is logged...
    eventually(
        Duration::from_secs(20),
        "the stale attempt to be logged",
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM webhook_attempts WHERE delivery_id = $1::uuid",
            )
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (n == 2).then_some(())
        },
    )
    .await;
    // ... and changes nothing: the delivery is still succeeded, with no job left to move it.
    let d = app
        .partner_get(&key, &format!("/v1/webhook-deliveries/{id}"))
        .await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert!(d["next_attempt_at"].is_null());
    assert_eq!(live_jobs(&app, &id).await, 0);
    let ep = app
        .partner_get(&key, &format!("/v1/webhook-endpoints/{endpoint}"))
        .await;
    assert_eq!(
        ep["consecutive_failures"], 0,
        "health is the new holder's business"
    );
    // The order's next event is not held back by it.
    let r = app
        .partner_post(
            &key,
            &format!("/v1/orders/{}/status", order["id"].as_str().unwrap()),
            json!({ "status": "confirmed" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(15), "order.confirmed", || async {
        partner
            .received()
            .iter()
            .any(|r| r.json()["type"] == "order.confirmed")
            .then_some(())
    })
    .await;
    assert!(first.is_running() && second.is_running());
}

/// A delivery that takes longer than the lease keeps it (renewed every third of it): it is
/// sent once, not handed to another run.
#[tokio::test]
async fn a_long_run_renews_its_lease_and_runs_once() {
    let app = TestApp::spawn(TestOptions {
        lease: "1s".into(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Slow(Duration::from_secs(3))).await;
    let (_, key) = app.partner_account().await;
    let (endpoint, _) = app.create_endpoint(&key, &partner.url, &["*"]).await;
    assert_eq!(app.post_order(&key, "long-1").await.status(), 201);
    let deliveries = format!("/v1/webhook-endpoints/{endpoint}/deliveries");
    eventually(
        Duration::from_secs(15),
        "the delivery to succeed",
        || async {
            let v = app.partner_get(&key, &deliveries).await;
            (v["data"][0]["status"] == "succeeded").then_some(())
        },
    )
    .await;
    // Longer than a lease and a reconciler pass again: still one request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(partner.count(), 1);
    let reclaimed = app
        .count("SELECT count(*) FROM jobs WHERE last_error = 'lease expired: worker lost'")
        .await;
    assert_eq!(reclaimed, 0);
}

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A worker whose clock is an hour behind schedules retries on the database's clock: the
/// second attempt still waits for its delay (on the worker's clock it would be long due).
#[tokio::test]
async fn retries_wait_on_the_database_clock_whatever_the_worker_clock_says() {
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "this test needs libfaketime (Debian package `faketime`; .ci/run installs it)"
    );
    let app = TestApp::spawn(TestOptions {
        with_worker: false,
        retry_schedule: "2s,2s".into(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(500)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;
    let env = env_with(
        &app,
        &[
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME", "-1h"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let _skewed = WorkerProcess::spawn(&env);
    assert_eq!(app.post_order(&key, "skew-1").await.status(), 201);
    let started = Instant::now();
    eventually(Duration::from_secs(30), "three attempts", || async {
        (partner.count() >= 3).then_some(())
    })
    .await;
    let at: Vec<Instant> = partner.received().iter().map(|r| r.at).collect();
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(1500),
            "a 2 s ± 20 % retry came after {gap:?}"
        );
    }
    assert!(started.elapsed() >= Duration::from_secs(3));
}

/// A worker whose lease ran out while it was recording its outcome keeps that outcome: the
/// reconciler skips a job whose row is locked and never moves one that is no longer running.
/// (Before, a pass that found the expired lease waited for the record's lock, then wrote
/// `pending` over the recorded `succeeded`.)
#[tokio::test]
async fn the_reconciler_never_overwrites_an_outcome_being_recorded() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, queue, tenant_id, subject_id, state, max_attempts, dispatch_seq,
                           lease_owner, lease_until)
         VALUES ($1, $2, $1, $1, 'running', 3, 1, 'a-frozen-worker', now() - interval '1 s')",
    )
    .bind(id)
    .bind(switchyard_shared::queue::EVENT_FAN_OUT)
    .execute(&app.pool)
    .await
    .unwrap();
    let mut recording = app.pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE jobs SET state = 'succeeded', finished_at = now(), lease_owner = NULL,
                         lease_until = NULL
          WHERE id = $1 AND lease_owner = 'a-frozen-worker'",
    )
    .bind(id)
    .execute(&mut *recording)
    .await
    .unwrap();
    let dispatcher =
        switchyard_shared::dispatch::Dispatcher::new(app.pool.clone(), app.queues.clone(), 16);
    let pass = tokio::spawn(async move { dispatcher.reconcile(Duration::from_secs(30)).await });
    // The pass runs meanwhile: it skips the locked row (or, before, waited for it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    recording.commit().await.unwrap();
    let repairs = pass.await.unwrap().unwrap();
    assert_eq!(repairs.expired_leases, 0);
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "succeeded");
}
