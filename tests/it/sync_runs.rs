//! Sync runs as jobs: one active run per configuration, cancellation within a batch, and a
//! worker SIGKILLed mid-run whose run another worker resumes from the last checkpoint, with
//! no row skipped and none written twice.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Executor, PgConnection};
use switchyard_tests::{TestApp, TestOptions, db::TestDb, eventually, process::WorkerProcess};

use crate::sync::{all_records, configure, erp, finished, full_sync, integration, setup, start};

/// An ERP table of `n` rows and a view over it that waits `row_ms` milliseconds per row: a
/// slow source, so a run is still going when the test acts. Runs read one streamed statement,
/// so rows must come one by one: an index in the run's `(updated_at, sku)` order, and no sort
/// (which would read every row, and wait every wait, before the first one arrives).
pub async fn slow_source(erp: &mut PgConnection, n: i32, row_ms: f64) {
    erp.execute(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE erp.products (sku text PRIMARY KEY, price numeric(12, 2) NOT NULL,
                                    updated_at timestamptz NOT NULL);
         CREATE INDEX ON erp.products (updated_at, sku);
         INSERT INTO erp.products
         SELECT 'SKU-' || lpad(i::text, 6, '0'), i * 1.25, now() - interval '1 hour'
           FROM generate_series(1, {n}) i;
         ANALYZE erp.products;
         CREATE VIEW erp.slow_products AS
         SELECT p.* FROM erp.products p WHERE pg_sleep({row_ms} / 1000.0)::text IS NOT NULL;
         DO $$ BEGIN
           EXECUTE format('ALTER DATABASE %I SET enable_sort = off', current_database());
         END $$;"
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

pub async fn run_now(app: &TestApp, key: &str, id: &str) -> Value {
    app.partner_get(key, &format!("/v1/sync/runs/{id}")).await
}

/// Waits for a run a killed worker left `running` to be finished by another.
async fn resumed(app: &TestApp, key: &str, id: &str) -> Value {
    eventually(
        Duration::from_secs(90),
        "the resumed run to finish",
        || async {
            let run = run_now(app, key, id).await;
            (run["status"] != "running").then_some(run)
        },
    )
    .await
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
    // A second per batch of 50: the run lasts about 40 s unless cancelled.
    slow_source(&mut erp, 2000, 20.0).await;
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
    slow_source(&mut erp, N as i32, 1.5).await;
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
    let done = resumed(&app, &key, &id).await;
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

/// An outbound run writing to an ERP is killed mid-way and resumed elsewhere from its last
/// checkpoint: a batch the ERP had taken but the run had not checkpointed would be read again,
/// found equal on both sides and not written twice; the ERP ends with exactly the store's
/// records.
#[tokio::test]
async fn an_outbound_run_killed_mid_way_resumes_and_writes_no_row_twice() {
    let opts = TestOptions {
        lease: "3s".into(),
        ..TestOptions::no_worker()
    };
    let (app, key) = setup(opts).await;
    let (db, mut erp) = erp().await;
    const N: i64 = 2000;
    // The store's records come from a fast inbound sync of one table; an outbound sync writes
    // them to another, whose trigger takes 2 ms per row.
    erp.execute(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE erp.items (sku text PRIMARY KEY, price numeric(12, 2) NOT NULL);
         INSERT INTO erp.items SELECT 'SKU-' || lpad(i::text, 6, '0'), i * 1.25
           FROM generate_series(1, {N}) i;
         CREATE TABLE erp.copies (sku text PRIMARY KEY, price numeric(12, 2) NOT NULL);
         CREATE FUNCTION erp.slow() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT ON erp.copies FOR EACH ROW EXECUTE FUNCTION erp.slow();"
    )))
    .await
    .unwrap();
    let erp_integration = integration(&app, &key, "postgres", &db.url).await;
    let inbound = configure(
        &app,
        &key,
        json!({
            "name": "Items", "entity": "items", "mode": "full",
            "source": {"integration_id": erp_integration, "table": "erp.items", "key": ["sku"]},
            "target": {"store": "switchyard"},
            "batch_size": 1000,
        }),
    )
    .await;
    let outbound = configure(
        &app,
        &key,
        json!({
            "name": "Copies", "entity": "items", "direction": "outbound", "mode": "full",
            "source": {"store": "switchyard"},
            "target": {"integration_id": erp_integration, "table": "erp.copies", "key": ["sku"]},
            "mappings": [{"source": "price", "target": "price"}],
            "delete_policy": "hard",
            "batch_size": 100,
        }),
    )
    .await;
    let env = app.process_env();
    let mut first = WorkerProcess::spawn(&env);
    let loaded = start(&app, &key, &inbound).await;
    assert_eq!(finished(&app, &key, &loaded).await["rows_inserted"], N);
    let id = start(&app, &key, &outbound).await;
    batches_at_least(&app, &key, &id, 4).await;
    first.kill9();
    let at_kill = run_now(&app, &key, &id).await;
    assert_eq!(at_kill["status"], "running");
    let _second = WorkerProcess::spawn(&env);
    let done = resumed(&app, &key, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["rows_read"], N, "{done}");
    let written = done["rows_inserted"].as_i64().unwrap();
    let unchanged = done["rows_unchanged"].as_i64().unwrap();
    assert_eq!(written + unchanged, N, "{done}");
    assert!(
        unchanged <= 100,
        "at most the batch in flight was found written: {done}"
    );
    let source: Vec<(String, String)> =
        sqlx::query_as("SELECT sku, price::text FROM erp.items ORDER BY sku")
            .fetch_all(&mut erp)
            .await
            .unwrap();
    let copies: Vec<(String, String)> =
        sqlx::query_as("SELECT sku, price::text FROM erp.copies ORDER BY sku")
            .fetch_all(&mut erp)
            .await
            .unwrap();
    assert_eq!(copies, source);
}

/// A run whose job dies (its source unreachable through every attempt) ends as any failed run
/// ends: `sync.run.failed` in the outbox, and the follow-up a webhook asked for meanwhile.
#[tokio::test]
async fn a_run_whose_job_dies_announces_it_and_starts_its_follow_up() {
    // The reconciler far away: what the death adds must reach the dispatcher by itself.
    let (app, key) = setup(TestOptions {
        args: vec!["--job-retry-delay=300ms".into()],
        reconcile_after: "60s".into(),
        ..Default::default()
    })
    .await;
    let (db, mut erp) = erp().await;
    erp.execute("CREATE TABLE erp.parts (id integer PRIMARY KEY, name text)")
        .await
        .unwrap();
    let source = integration(&app, &key, "postgres", &db.url).await;
    let config = full_sync(&app, &key, &source, "erp.parts", "id").await;
    // The source goes away.
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/integrations/{source}"),
            json!({"credentials": {"url": "postgres://postgres@127.0.0.1:1/gone"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let run = start(&app, &key, &config).await;
    // A webhook asks for another run while this one retries (as `trigger_inbound` records it).
    sqlx::query("UPDATE sync_configurations SET rerun_requested = true WHERE id = $1::uuid")
        .bind(&config)
        .execute(&app.pool)
        .await
        .unwrap();
    let failed = finished(&app, &key, &run).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let events = app
        .partner_get(&key, "/v1/events?type=sync.run.failed")
        .await;
    let announced = events["data"].as_array().unwrap();
    assert!(
        announced.iter().any(|e| e["data"]["id"] == run.as_str()),
        "{events}"
    );
    // The follow-up runs (it fails too: the same source), and the event is fanned out.
    eventually(
        Duration::from_secs(15),
        "the follow-up run, run",
        || async {
            let runs = app
                .partner_get(&key, &format!("/v1/sync/runs?configuration_id={config}"))
                .await;
            let runs = runs["data"].as_array().unwrap().clone();
            runs.iter()
                .any(|r| {
                    r["id"] != run.as_str() && r["trigger"] == "inbound" && r["status"] == "failed"
                })
                .then_some(())
        },
    )
    .await;
    let fanned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE queue = 'event_fan_out' AND state = 'succeeded'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(fanned >= 1, "sync.run.failed fanned out");
}
