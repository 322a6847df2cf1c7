//! Every growing table has a retention, and the janitor purges what passed it: finished and
//! dead jobs, webhook history, closed orders with their events, usage, audit, idempotency
//! records, and attempt and request log partitions whose day is over.

use std::time::Duration;

use serde_json::json;
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually};

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_janitor_purges_every_table_past_its_retention() {
    let app = TestApp::spawn(TestOptions {
        payload_retention: "3s".into(),
        args: [
            "--job-retention=1s",
            "--dead-job-retention=1s",
            "--webhook-retention=3s",
            "--order-retention=1s",
            "--usage-retention=1s",
            "--audit-retention=1s",
            "--idempotency-ttl=1s",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;
    // One order run to completion (closed), one left open.
    let closed = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&key)
        .header("idempotency-key", "retention-1")
        .json(&TestApp::order_body("closed"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let id = closed["id"].as_str().unwrap();
    for status in ["confirmed", "preparing", "ready", "completed"] {
        let r = app
            .partner_post(
                &key,
                &format!("/v1/orders/{id}/status"),
                json!({ "status": status }),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(app.post_order(&key, "open").await.status(), 201);
    eventually(Duration::from_secs(10), "six webhooks", || async {
        (partner.count() == 6).then_some(())
    })
    .await;
    // A dead job, and an attempt partition of a day long past (as a deployment that has run
    // for years would have).
    sqlx::raw_sql(
        "INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, finished_at)
         VALUES (gen_random_uuid(), 'event_fan_out', gen_random_uuid(), gen_random_uuid(), 1,
                 'dead', now() - interval '1 minute');
         CREATE TABLE webhook_attempts_p20200101 PARTITION OF webhook_attempts
           FOR VALUES FROM (uuid_v7_floor('2020-01-01T00:00:00Z'))
                        TO (uuid_v7_floor('2020-01-02T00:00:00Z'));
         CREATE TABLE request_logs_p20200101 PARTITION OF request_logs
           FOR VALUES FROM (uuid_v7_floor('2020-01-01T00:00:00Z'))
                        TO (uuid_v7_floor('2020-01-02T00:00:00Z'));",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    for (table, sql) in [
        // The janitor's own jobs go too, but a new one is made every interval.
        (
            "finished and dead jobs",
            "SELECT count(*) FROM jobs
              WHERE queue <> 'janitor' OR finished_at < now() - interval '5 seconds'",
        ),
        (
            "webhook deliveries",
            "SELECT count(*) FROM webhook_deliveries",
        ),
        ("webhook messages", "SELECT count(*) FROM webhook_messages"),
        ("events", "SELECT count(*) FROM events"),
        (
            "the closed order and its history",
            "SELECT count(*) FROM orders WHERE status = 'completed'",
        ),
        (
            "the closed order's events",
            "SELECT count(*) FROM order_events e JOIN orders o ON o.id = e.order_id
              WHERE o.status = 'completed'",
        ),
        (
            "idempotency records",
            "SELECT count(*) FROM idempotency_keys",
        ),
        ("audit events", "SELECT count(*) FROM audit_events"),
        (
            "the expired attempt partition",
            "SELECT count(*) FROM pg_class WHERE relname = 'webhook_attempts_p20200101'",
        ),
        (
            "the expired request log partition",
            "SELECT count(*) FROM pg_class WHERE relname = 'request_logs_p20200101'",
        ),
    ] {
        eventually(Duration::from_secs(20), table, || async {
            (count(&app, sql).await == 0).then_some(())
        })
        .await;
    }
    // Open orders stay, with their history.
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM order_events").await, 1);
    // Attempt partitions are ready a week ahead.
    let ahead = count(
        &app,
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE c.relname ~ '^webhook_attempts_p[0-9]{8}$'
            AND to_date(substr(c.relname, 19), 'YYYYMMDD') >= current_date",
    )
    .await;
    assert!(ahead >= 8, "{ahead} partitions from today on");
    let ahead = count(
        &app,
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE c.relname ~ '^request_logs_p[0-9]{8}$'
            AND to_date(substr(c.relname, 15), 'YYYYMMDD') >= current_date",
    )
    .await;
    assert!(ahead >= 8, "{ahead} request log partitions from today on");
}

/// The job-kind registry gives the janitor's own runs a day in the ledger, whatever the job
/// retention: one per slot would otherwise pile up for a week.
#[tokio::test]
async fn the_janitors_own_runs_leave_the_ledger_after_a_day() {
    let app = TestApp::spawn(TestOptions::default()).await;
    sqlx::raw_sql(
        "INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, finished_at,
                           unique_key)
         SELECT gen_random_uuid(), q, gen_random_uuid(), gen_random_uuid(), 1, 'succeeded',
                now() - interval '2 days', q || '@2026-01-01T00:00:00Z'
           FROM UNNEST(ARRAY['janitor', 'event_fan_out']) AS q",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let old = "SELECT count(*) FROM jobs WHERE finished_at < now() - interval '1 day'";
    eventually(Duration::from_secs(20), "the old janitor run", || async {
        let janitor = count(&app, &format!("{old} AND queue = 'janitor'")).await;
        (janitor == 0).then_some(())
    })
    .await;
    // Other queues keep the default (7 days).
    assert_eq!(
        count(&app, &format!("{old} AND queue = 'event_fan_out'")).await,
        1
    );
}

/// A Redis the janitor cannot trim (here a queue's set of finished tasks holding the wrong
/// type) fails its runs, but does not stop the purges of Postgres: before, the Redis error
/// ended each run before any table's retention, for as long as the key stayed broken.
#[tokio::test]
async fn a_redis_error_does_not_stop_the_retention_of_the_tables() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let done = app
        .queues
        .apalis_config("webhook_replays", 1)
        .done_jobs_set();
    let mut redis = app.queues.connection();
    let _: () = redis::cmd("SET")
        .arg(&done)
        .arg("not a sorted set")
        .query_async(&mut redis)
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, finished_at)
         VALUES (gen_random_uuid(), 'event_fan_out', gen_random_uuid(), gen_random_uuid(), 1,
                 'succeeded', now() - interval '30 days')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    eventually(Duration::from_secs(20), "the old job purged", || async {
        let old = count(
            &app,
            "SELECT count(*) FROM jobs WHERE finished_at < now() - interval '8 days'",
        );
        (old.await == 0).then_some(())
    })
    .await;
    let _: () = redis::cmd("DEL")
        .arg(&done)
        .query_async(&mut redis)
        .await
        .unwrap();
}

/// A table autovacuum left behind (off here, or behind) is vacuumed by the janitor: 20,000
/// dead ledger rows are gone within a few runs. Counted by `vacuum_count`, which only a manual
/// `VACUUM` moves (autovacuum has its own counter).
#[tokio::test]
async fn the_janitor_vacuums_a_table_autovacuum_left_behind() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, finished_at)
         SELECT gen_random_uuid(), 'event_fan_out', gen_random_uuid(), gen_random_uuid(), 1,
                'succeeded', now()
           FROM generate_series(1, 20000);
         UPDATE jobs SET updated_at = now() WHERE state = 'succeeded'",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    // Statistics reach shared memory when a backend flushes them: now, not in a second.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
    drop(conn);
    let stats = "SELECT vacuum_count FROM pg_stat_user_tables
                  WHERE relname = 'jobs' AND n_dead_tup < 1000";
    eventually(Duration::from_secs(40), "the janitor's vacuum", || async {
        let vacuums: Option<i64> = sqlx::query_scalar(stats)
            .fetch_optional(&app.pool)
            .await
            .unwrap();
        vacuums.filter(|n| *n > 0)
    })
    .await;
}

/// Sync history past `SWITCHYARD_SYNC_RETENTION` (30 days) goes: conflicts once applied, and
/// the links of records deleted on both sides. Open conflicts, recent ones and the links of
/// live records stay.
#[tokio::test]
async fn applied_sync_conflicts_and_links_of_deleted_records_leave_after_the_sync_retention() {
    let (app, key) = super::sync::setup(TestOptions::default()).await;
    let source =
        super::sync::integration(&app, &key, "postgres", "postgres://db.example/erp").await;
    let config = super::sync::configure(
        &app,
        &key,
        serde_json::json!({
            "name": "Items", "entity": "items", "mode": "full",
            "source": {"integration_id": source, "table": "items", "key": ["id"]},
            "target": {"store": "switchyard"},
        }),
    )
    .await;
    // What runs leave behind, aged.
    sqlx::query(
        "INSERT INTO sync_conflicts (id, tenant_id, mode, configuration_id, key, status, reason,
                                     fields, applied_at, created_at)
         SELECT gen_random_uuid(), c.tenant_id, c.mode, c.id, k, s, 'both_changed', '{name}', a,
                now() - interval '40 days'
           FROM sync_configurations c,
                (VALUES ('old-applied', 'resolved', now() - interval '31 days'),
                        ('old-open', 'open', NULL::timestamptz),
                        ('new-applied', 'resolved', now())) AS v(k, s, a)
          WHERE c.id = $1::uuid;
         ",
    )
    .bind(&config)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sync_links (configuration_id, key, base, synced_at)
         SELECT $1::uuid, k, b, t
           FROM (VALUES ('old-gone', NULL::jsonb, now() - interval '31 days'),
                        ('old-live', '{}'::jsonb, now() - interval '31 days'),
                        ('new-gone', NULL::jsonb, now())) AS v(k, b, t)",
    )
    .bind(&config)
    .execute(&app.pool)
    .await
    .unwrap();
    eventually(
        Duration::from_secs(20),
        "old sync history purged",
        || async {
            let conflicts = count(
                &app,
                "SELECT count(*) FROM sync_conflicts WHERE key = 'old-applied'",
            )
            .await;
            let links = count(
                &app,
                "SELECT count(*) FROM sync_links WHERE key = 'old-gone'",
            )
            .await;
            (conflicts + links == 0).then_some(())
        },
    )
    .await;
    let left = |table: &str| format!("SELECT string_agg(key, ',' ORDER BY key) FROM {table}");
    let conflicts: String = sqlx::query_scalar(sqlx::AssertSqlSafe(left("sync_conflicts")))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let links: String = sqlx::query_scalar(sqlx::AssertSqlSafe(left("sync_links")))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(conflicts, "new-applied,old-open");
    assert_eq!(links, "new-gone,old-live");
}

/// A day partition is made and attached without waiting for readers of its table: while one
/// reads `webhook_attempts` at length, a missing partition is still created at once, and
/// attempts can still be written meanwhile.
#[tokio::test]
async fn a_new_partition_never_waits_behind_a_long_read() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let newest: String = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
          WHERE p.relname = 'webhook_attempts' AND c.relname LIKE 'webhook\\_attempts\\_p%'
          ORDER BY c.relname DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {newest}")))
        .execute(&app.pool)
        .await
        .unwrap();
    let mut reader = app.pool.begin().await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_attempts")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    let ensured = tokio::time::timeout(
        Duration::from_secs(5),
        switchyard_shared::retention::partitions::ensure(&app.pool),
    )
    .await;
    assert!(matches!(ensured, Ok(Ok(()))), "{ensured:?}");
    let back = count(
        &app,
        &format!("SELECT count(*) FROM pg_class WHERE relname = '{newest}' AND relispartition"),
    )
    .await;
    assert_eq!(back, 1, "{newest} is a partition again");
    reader.rollback().await.unwrap();
}

/// A message's payload outlives its retention while a delivery of it still waits (here in a
/// paused queue): the delivery is sent, not cancelled, and the payload goes once nothing
/// needs it.
#[tokio::test]
async fn a_payload_stays_while_a_delivery_of_it_waits() {
    let app = TestApp::spawn(TestOptions {
        payload_retention: "1s".into(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint_with(&key, json!({"url": partner.url, "retry_schedule": []}))
        .await;
    let queue = "/admin/v1/queues/webhook_deliveries";
    assert_eq!(
        app.admin_post_json(&format!("{queue}/pause"), json!({}))
            .await
            .0,
        200
    );
    assert_eq!(app.post_order(&key, "kept").await.status(), 201);
    // Past the payload retention, with the janitor running every second meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.admin_post_json(&format!("{queue}/resume"), json!({}))
            .await
            .0,
        200
    );
    eventually(Duration::from_secs(15), "the delivery", || async {
        let done = count(
            &app,
            "SELECT count(*) FROM webhook_deliveries WHERE status <> 'pending'",
        )
        .await;
        (done == 1).then_some(())
    })
    .await;
    let delivered = count(
        &app,
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
    )
    .await;
    assert_eq!(delivered, 1, "sent with its payload, not cancelled");
    assert_eq!(partner.count(), 1);
    eventually(Duration::from_secs(10), "the payload, purged", || async {
        let left = count(
            &app,
            "SELECT count(*) FROM webhook_messages WHERE payload IS NOT NULL",
        )
        .await;
        (left == 0).then_some(())
    })
    .await;
}

/// The fan-out reads only the outbox, so an event past the retention stays while its fan-out
/// has yet to run (here: its queue paused) or is dead and may still be retried.
#[tokio::test]
async fn an_event_stays_while_its_fan_out_waits_or_may_be_retried() {
    let app = TestApp::spawn(TestOptions {
        payload_retention: "1s".into(),
        args: vec!["--webhook-retention=1s".into()],
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;
    let queue = "/admin/v1/queues/event_fan_out";
    assert_eq!(
        app.admin_post_json(&format!("{queue}/pause"), json!({}))
            .await
            .0,
        200
    );
    assert_eq!(app.post_order(&key, "waiting").await.status(), 201);
    assert_eq!(app.post_order(&key, "dead").await.status(), 201);
    // The second order's fan-out gave up (as after its last attempt failed).
    let dead: uuid::Uuid = sqlx::query_scalar(
        "WITH j AS (
            UPDATE jobs SET state = 'dead', finished_at = now(), last_error = 'gave up'
             WHERE id = (SELECT j.id FROM jobs j JOIN events e ON e.id = j.subject_id
                          WHERE j.queue = 'event_fan_out' ORDER BY e.id DESC LIMIT 1)
            RETURNING id, subject_id),
         e AS (UPDATE events SET fan_out_failed_at = now(), fan_out_error = 'gave up'
                WHERE id = (SELECT subject_id FROM j))
         SELECT id FROM j",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // Past the retention, with the janitor running every second meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 2);
    assert_eq!(
        app.admin_post_json(&format!("{queue}/resume"), json!({}))
            .await
            .0,
        200
    );
    let retry = format!("/admin/v1/jobs/{dead}/retry");
    assert_eq!(app.admin_post_json(&retry, json!({})).await.0, 200);
    eventually(Duration::from_secs(15), "both webhooks", || async {
        (partner.count() == 2).then_some(())
    })
    .await;
    // Once fanned out, they go with the rest of the history.
    eventually(Duration::from_secs(20), "the events, purged", || async {
        (count(&app, "SELECT count(*) FROM events").await == 0).then_some(())
    })
    .await;
}
