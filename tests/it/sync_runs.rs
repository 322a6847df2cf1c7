//! Sync runs as jobs: one active run per configuration, cancellation within a batch, and a
//! worker SIGKILLed mid-run whose run another worker resumes from the last checkpoint, with
//! no row skipped and none written twice.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Executor, PgConnection};
use switchyard_tests::{TestApp, TestOptions, db::TestDb, eventually, process::WorkerProcess};

use crate::sync::{all_records, configure, erp, finished, integration, setup, start};

/// An ERP table of `n` rows and a view over it whose every query waits `delay_ms` once (an
/// uncorrelated subquery runs once per query): a slow source, so a run is still going when
/// the test acts.
async fn slow_source(erp: &mut PgConnection, n: i32, delay_ms: i32) {
    erp.execute(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE erp.products (sku text PRIMARY KEY, price numeric(12, 2) NOT NULL,
                                    updated_at timestamptz NOT NULL);
         INSERT INTO erp.products
         SELECT 'SKU-' || lpad(i::text, 6, '0'), i * 1.25, now() - interval '1 hour'
           FROM generate_series(1, {n}) i;
         CREATE VIEW erp.slow_products AS
         SELECT p.* FROM erp.products p
          WHERE (SELECT pg_sleep({delay_ms} / 1000.0)::text) IS NOT NULL;"
    )))
    .await
    .unwrap();
}

async fn products_config(app: &TestApp, key: &str, db: &TestDb, batch: i64) -> String {
    let source = integration(app, key, "postgres", &db.url).await;
    configure(
        app,
        key,
        json!({
            "name": "Products", "entity": "products", "mode": "incremental",
            "source": {"integration_id": source, "table": "erp.slow_products", "key": ["sku"]},
            "target": {"store": "switchyard"},
            "cursor": {"strategy": "timestamp", "column": "updated_at"},
            "batch_size": batch,
        }),
    )
    .await
}

async fn run_now(app: &TestApp, key: &str, id: &str) -> Value {
    app.partner_get(key, &format!("/v1/sync/runs/{id}")).await
}

async fn batches_at_least(app: &TestApp, key: &str, id: &str, n: i64) {
    eventually(
        Duration::from_secs(30),
        "the run to commit batches",
        || async { (run_now(app, key, id).await["batches"].as_i64().unwrap() >= n).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn one_run_at_a_time_and_cancel_stops_within_a_batch() {
    let (app, key) = setup(TestOptions::default()).await;
    let (db, mut erp) = erp().await;
    // A second per page of 50: the run lasts about 40 s unless cancelled.
    slow_source(&mut erp, 2000, 1000).await;
    let config = products_config(&app, &key, &db, 50).await;
    let id = start(&app, &key, &config).await;
    batches_at_least(&app, &key, &id, 1).await;
    assert_eq!(run_now(&app, &key, &id).await["status"], "running");

    let r = app
        .partner_post(
            &key,
            &format!("/v1/sync/configurations/{config}/runs"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "sync_run_active");
    assert!(body["detail"].as_str().unwrap().contains(&id), "{body}");

    let r = app
        .partner_post(&key, &format!("/v1/sync/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let done = finished(&app, &key, &id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    let batches = done["batches"].as_i64().unwrap();
    assert!(batches < 5, "stopped within a batch of the request: {done}");
    // What it committed stays; the cursor does not move.
    assert_eq!(
        all_records(&app, &key, "products").await.len() as i64,
        batches * 50
    );
    let cfg = app
        .partner_get(&key, &format!("/v1/sync/configurations/{config}"))
        .await;
    assert!(cfg["state"].is_null());
    // A finished run cannot be cancelled again; a new run may start.
    let r = app
        .partner_post(&key, &format!("/v1/sync/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(r.status(), 409);
    let next = start(&app, &key, &config).await;
    let r = app
        .partner_post(&key, &format!("/v1/sync/runs/{next}/cancel"), json!({}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(finished(&app, &key, &next).await["status"], "cancelled");
}

#[tokio::test]
async fn a_run_killed_mid_way_resumes_from_its_checkpoint_elsewhere() {
    let opts = TestOptions {
        lease: "3s".into(),
        ..TestOptions::no_worker()
    };
    let (app, key) = setup(opts).await;
    let (db, mut erp) = erp().await;
    const N: i64 = 3000;
    slow_source(&mut erp, N as i32, 150).await;
    let config = products_config(&app, &key, &db, 100).await;
    let env = app.process_env();
    let mut first = WorkerProcess::spawn(&env);
    let id = start(&app, &key, &config).await;
    batches_at_least(&app, &key, &id, 5).await;
    first.kill9();
    let at_kill = run_now(&app, &key, &id).await;
    assert_eq!(at_kill["status"], "running");
    assert!(at_kill["batches"].as_i64().unwrap() < N / 100, "{at_kill}");

    let _second = WorkerProcess::spawn(&env);
    let done = eventually(
        Duration::from_secs(90),
        "the resumed run to finish",
        || async {
            let run = run_now(&app, &key, &id).await;
            (run["status"] != "running").then_some(run)
        },
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Every row read and written exactly once: the batch in flight at the kill was not
    // committed, and the resumed run started after the last one that was.
    assert_eq!(done["rows_read"], N, "{done}");
    assert_eq!(done["rows_inserted"], N, "{done}");
    assert_eq!(done["batches"], N / 100);
    let logs = app
        .partner_get(&key, &format!("/v1/sync/runs/{id}/logs"))
        .await;
    assert!(
        logs["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"] == "resumed from its checkpoint"),
        "{logs}"
    );
    // The store holds exactly the source: same keys, same values.
    let source: Vec<(String, String)> =
        sqlx::query_as("SELECT sku, price::text FROM erp.products ORDER BY sku COLLATE \"C\"")
            .fetch_all(&mut erp)
            .await
            .unwrap();
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, (data ->> 'price')::numeric(12, 2)::text FROM sync_records
          WHERE entity = 'products' ORDER BY key COLLATE \"C\"",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, source);
}

/// Two worker replicas run a configuration with a 1-second schedule: every slot from the first
/// to the last has exactly one run, or is counted in a run's log as skipped (the previous run
/// was still going) or folded (the scheduler was late); no slot has two runs. Disabling it stops the schedule.
#[tokio::test]
async fn two_workers_start_one_run_per_slot_of_a_one_second_schedule() {
    let (app, key) = setup(TestOptions::no_worker()).await;
    let (db, mut erp) = erp().await;
    erp.execute(
        "CREATE TABLE erp.shifts (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO erp.shifts SELECT i, 'Shift ' || i FROM generate_series(1, 50) i;",
    )
    .await
    .unwrap();
    let source = integration(&app, &key, "postgres", &db.url).await;
    let env = app.process_env();
    let mut workers: Vec<WorkerProcess> = (0..2).map(|_| WorkerProcess::spawn(&env)).collect();
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Shifts", "entity": "shifts", "mode": "full",
            "source": {"integration_id": source, "table": "erp.shifts", "key": ["id"]},
            "target": {"store": "switchyard"},
            "schedule": {"interval_seconds": 1},
        }),
    )
    .await;
    let shown = app
        .partner_get(&key, &format!("/v1/sync/configurations/{config}"))
        .await;
    assert_eq!(shown["schedule"]["interval_seconds"], 1, "{shown}");
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let first_slot = at(&shown["next_run_at"]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    for w in &mut workers {
        assert!(w.is_running(), "{}", w.log_text());
        w.terminate(Duration::from_secs(20)).await;
    }
    // Every slot from the first to the one the schedule waits for now is accounted for.
    let next: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT next_run_at FROM sync_configurations")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let slots = (next - first_slot).num_seconds();
    let runs: Vec<(chrono::DateTime<chrono::Utc>, String)> =
        sqlx::query_as("SELECT scheduled_for, trigger FROM sync_runs ORDER BY scheduled_for")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let skipped = app
        .count(
            "SELECT coalesce(sum((details ->> 'skipped_slots')::bigint), 0)::bigint
               FROM sync_run_logs WHERE details ? 'skipped_slots'",
        )
        .await;
    assert!(runs.len() >= 5, "{} scheduled runs in 10 s", runs.len());
    assert_eq!(
        runs.len() as i64 + skipped,
        slots,
        "each slot ran once or is counted as skipped or folded"
    );
    for pair in runs.windows(2) {
        assert!(pair[1].0 > pair[0].0, "two runs for one slot: {pair:?}");
    }
    assert!(runs.iter().all(|(_, t)| t == "scheduled"));

    // Without its schedule, the configuration runs no more; the runs started finish.
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/sync/configurations/{config}"),
            json!({ "schedule": null }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let stopped: Value = r.json().await.unwrap();
    assert!(stopped["next_run_at"].is_null(), "{stopped}");
    assert!(stopped["schedule"].is_null(), "{stopped}");
    let _worker = WorkerProcess::spawn(&env);
    eventually(
        Duration::from_secs(30),
        "the started runs to finish",
        || async {
            let unfinished = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM sync_runs WHERE status <> 'succeeded'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (unfinished == 0).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM sync_runs").await,
        runs.len() as i64
    );
    assert_eq!(all_records(&app, &key, "shifts").await.len(), 50);
}
