//! What starts sync runs besides a manual start: a configuration's schedule, one run per slot
//! however many worker replicas race for it, and an ERP's "data changed" webhook, which starts
//! a run, or one more run after the one going.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Executor;
use switchyard_tests::{TestOptions, eventually, problem, process::WorkerProcess};

use crate::{
    sync::{all_records, configure, erp, finished, integration, setup},
    sync_runs::{run_now, slow_source},
};

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

/// An ERP's "data changed" webhook starts a run (`trigger: inbound`); one that arrives while
/// that run is going asks for one more run after it, which reads the row the first one could
/// not see. A `sync_run` action names an existing configuration.
#[tokio::test]
async fn an_inbound_webhook_starts_a_run_and_one_during_it_gets_a_follow_up_run() {
    let (app, key) = setup(TestOptions::default()).await;
    let (db, mut erp) = erp().await;
    slow_source(&mut erp, 1000, 4.0).await;
    let source = integration(&app, &key, "postgres", &db.url).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Products", "entity": "products", "mode": "incremental",
            "source": {"integration_id": source, "table": "erp.slow_products", "key": ["sku"]},
            "target": {"store": "switchyard"},
            "cursor": {"strategy": "timestamp", "column": "updated_at", "lag_seconds": 0},
            "batch_size": 100,
        }),
    )
    .await;
    let hooks = |action: Value| {
        json!({"name": "ERP hooks", "code": "erp-hooks", "type": "erp", "provider": "erp",
               "inbound": {"scheme": "none", "action": action}})
    };
    for (action, why) in [
        (json!({"type": "sync_run"}), "no configuration"),
        (
            json!({"type": "sync_run", "configuration_id": "01900000-0000-7000-8000-000000000000"}),
            "a missing configuration",
        ),
    ] {
        let r = app
            .partner_post(&key, "/v1/integrations", hooks(action))
            .await;
        assert_eq!(r.status(), 400, "{why}");
        problem(
            r,
            400,
            "parameter_invalid",
            Some("inbound.action.configuration_id"),
        )
        .await;
    }
    let r = app
        .partner_post(
            &key,
            "/v1/integrations",
            hooks(json!({"type": "sync_run", "configuration_id": config})),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let hooks: Value = r.json().await.unwrap();
    let inbound_url = app.url(hooks["inbound_url"].as_str().unwrap());
    let notify = |n: u32| {
        app.http
            .post(&inbound_url)
            .json(&json!({"event": "products.changed", "n": n}))
            .send()
    };
    assert_eq!(notify(1).await.unwrap().status(), 202);
    let first = newest_outcome(&app, &key, 1).await;
    assert_eq!(first["follow_up"], false, "{first}");
    let first_run = first["run_id"].as_str().unwrap().to_owned();
    // Running: its watermark is taken, so what changes now is past it.
    let run = eventually(Duration::from_secs(20), "the run to start", || async {
        let run = run_now(&app, &key, &first_run).await;
        (run["status"] == "running").then_some(run)
    })
    .await;
    assert_eq!(run["trigger"], "inbound");
    assert!(run["watermark"].is_string(), "{run}");
    // A row changes while the run goes (after its watermark), and the ERP says so.
    erp.execute("INSERT INTO erp.products VALUES ('SKU-NEW', 9.99, now())")
        .await
        .unwrap();
    assert_eq!(notify(2).await.unwrap().status(), 202);
    let second = newest_outcome(&app, &key, 2).await;
    assert_eq!(second["follow_up"], true, "{second}");
    assert_eq!(second["run_id"], first_run.as_str());

    let done = finished(&app, &key, &first_run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["rows_inserted"], 1000, "{done}");
    let runs = app
        .partner_get(&key, &format!("/v1/sync/runs?configuration_id={config}"))
        .await;
    let runs = runs["data"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let follow = runs.iter().find(|r| r["id"] != first_run.as_str()).unwrap();
    assert_eq!(follow["trigger"], "inbound");
    let follow = finished(&app, &key, follow["id"].as_str().unwrap()).await;
    assert_eq!(follow["status"], "succeeded", "{follow}");
    assert_eq!(
        follow["rows_inserted"], 1,
        "the row changed during the first run: {follow}"
    );
    let logs = app
        .partner_get(&key, &format!("/v1/sync/runs/{first_run}/logs"))
        .await;
    assert!(
        logs.to_string()
            .contains("follows: a webhook or a resolution asked for it"),
        "{logs}"
    );
    assert_eq!(all_records(&app, &key, "products").await.len(), 1001);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM sync_runs").await,
        2,
        "no third run"
    );
}

/// The result of the newest inbound event once `n` are completed (the list is newest first).
async fn newest_outcome(app: &switchyard_tests::TestApp, key: &str, n: usize) -> Value {
    eventually(
        Duration::from_secs(20),
        "the webhook to be processed",
        || async {
            let list = app
                .partner_get(key, "/v1/inbound-events?status=completed&limit=10")
                .await;
            let done = list["data"].as_array().unwrap().clone();
            (done.len() >= n).then(|| done[0]["result"].clone())
        },
    )
    .await
}

/// A configuration whose slot already had its run (its `next_run_at` set back to that slot,
/// as a host with a clock behind the database's could) neither runs it twice nor holds back
/// the other due configurations: before, the second run's unique slot failed the scheduler's
/// whole transaction, every pass, until the slot was over. A change that leaves the schedule
/// alone keeps the slot it waits for.
#[tokio::test]
async fn a_slot_that_already_ran_holds_back_no_other_configuration() {
    let (app, key) = setup(TestOptions::no_worker()).await;
    let (db, mut erp) = erp().await;
    erp.execute("CREATE TABLE erp.shifts (id int PRIMARY KEY, name text NOT NULL)")
        .await
        .unwrap();
    let source = integration(&app, &key, "postgres", &db.url).await;
    let config = |name: &str| {
        json!({
            "name": name, "entity": "shifts", "mode": "full",
            "source": {"integration_id": source, "table": "erp.shifts", "key": ["id"]},
            "target": {"store": "switchyard"},
            "schedule": {"interval_seconds": 86_400},
        })
    };
    let ran = configure(&app, &key, config("Ran")).await;
    let other = configure(&app, &key, config("Other")).await;
    let set_due = |id: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query(
                "UPDATE sync_configurations
                    SET next_run_at = to_timestamp(floor(extract(epoch FROM now()) / 86400) * 86400)
                  WHERE id = $1::uuid",
            )
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    set_due(ran.clone()).await;
    let started = switchyard_shared::sync::schedule::start_due(&app.pool)
        .await
        .unwrap();
    assert_eq!(started.len(), 1);
    sqlx::query("UPDATE sync_runs SET status = 'succeeded', finished_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();

    set_due(ran.clone()).await;
    set_due(other.clone()).await;
    let due: Value = app
        .partner_get(&key, &format!("/v1/sync/configurations/{other}"))
        .await;
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/sync/configurations/{other}"),
            json!({ "name": "Other, renamed" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let renamed: Value = r.json().await.unwrap();
    assert_eq!(renamed["next_run_at"], due["next_run_at"], "{renamed}");

    let started = switchyard_shared::sync::schedule::start_due(&app.pool)
        .await
        .expect("the scheduler's pass goes through");
    assert_eq!(started.len(), 1, "only the other configuration's slot runs");
    let runs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.name, count(r.id) FROM sync_configurations c
           LEFT JOIN sync_runs r ON r.configuration_id = c.id GROUP BY c.name ORDER BY c.name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        runs,
        [("Other, renamed".to_owned(), 1), ("Ran".to_owned(), 1)]
    );
    let waiting = app
        .count("SELECT count(*) FROM sync_configurations WHERE next_run_at > now()")
        .await;
    assert_eq!(waiting, 2, "both wait for their next slot");
}
