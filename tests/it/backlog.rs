//! Statements that run every few seconds whatever the load (the dispatcher's pass, the
//! janitor's) stay index probes behind a large backlog whose statistics are stale: their cost
//! must follow the number of queues and groups, never the number of waiting jobs.

use serde_json::Value;
use sqlx::Executor;
use switchyard_shared::{db, dispatch, retention};
use switchyard_tests::{TestApp, TestOptions};

/// Buffers (hit + read) an `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` answer says the statement
/// touched.
fn buffers(plan: &Value) -> i64 {
    let top = &plan[0]["Plan"];
    top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap()
}

/// The ledger as a worker outage leaves it: analysed while small, then 30,000 due fan-outs
/// (outside any group) and 30,000 due deliveries in 10 groups, not analysed since. Before, the
/// dispatcher's pass ran on the ordinary pool, where these statistics made each step of its
/// skip scan a sequential scan and sort of the ledger (11,858 buffers here), and its "is any
/// ungrouped job due" check could walk every due fan-out (160 ms a pass in the burn-down
/// benchmark); the janitor's orphan-group purge hashed every unfinished job (half a second
/// every 10 s there, 1,187 buffers here).
#[tokio::test]
async fn periodic_statements_probe_a_large_stale_backlog() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = "'00000000-0000-0000-0000-000000000001'";
    app.pool
        .execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, run_at)
             SELECT gen_random_uuid(), 'event_fan_out', {tenant}, gen_random_uuid(), 5, 'pending',
                    now() - interval '1 minute'
               FROM generate_series(1, 10);
             ANALYZE jobs;
             INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, run_at)
             SELECT gen_random_uuid(), 'event_fan_out', {tenant}, gen_random_uuid(), 5, 'pending',
                    now() - interval '1 minute'
               FROM generate_series(1, 30000);
             INSERT INTO dispatch_groups (key)
             SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid
               FROM generate_series(1, 11) g;
             INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, run_at,
                               group_key)
             SELECT gen_random_uuid(), 'webhook_deliveries', {tenant}, gen_random_uuid(), 5,
                    'pending', now() - interval '1 minute',
                    ('00000000-0000-0000-0000-' || lpad((i % 10 + 1)::text, 12, '0'))::uuid
               FROM generate_series(1, 30000) i;"
        )))
        .await
        .unwrap();

    // The dispatcher runs it on the planned-once pool, as a generic plan.
    let planned = db::connect_for_batches(&app.db.url, 1).await.unwrap();
    let mut conn = planned.acquire().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE due_work AS {}",
        dispatch::DUE_WORK_SQL
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Value = sqlx::query_scalar(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE due_work(1000,
           '{event_fan_out,webhook_deliveries,webhook_replays,janitor}')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let top = &plan[0]["Plan"];
    assert_eq!(
        top["Actual Rows"], 11,
        "10 due groups and the one due queue outside groups: {plan}"
    );
    assert!(
        buffers(&plan) < 2_000,
        "a pass probes each group and queue once: {} buffers\n{plan:#}",
        buffers(&plan)
    );

    // The janitor's purge of orphan groups: the 11th group has no endpoint and no work.
    let mut tx = app.pool.begin().await.unwrap();
    let (plan,): (Value,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
        retention::ORPHAN_GROUPS_SQL
    )))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        plan[0]["Plan"]["Actual Rows"], 0,
        "a DELETE returns no rows"
    );
    assert!(
        buffers(&plan) < 200,
        "one probe per group: {} buffers\n{plan:#}",
        buffers(&plan)
    );
    let purged = sqlx::query(retention::ORPHAN_GROUPS_SQL)
        .execute(&app.pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(
        purged, 1,
        "only the group with no endpoint and no work goes"
    );
}
