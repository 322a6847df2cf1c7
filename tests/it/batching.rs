//! The worker's batched statements: shared by concurrent runs (group commit), and planned so
//! that a plan made once per connection on a young ledger stays an index probe
//! (docs/architecture.md §8).

use std::time::Duration;

use sqlx::{Executor, Row};
use switchyard_shared::{db, webhooks};
use switchyard_tests::{
    Behaviour, PartnerServer, TestApp, TestOptions, eventually, process::Process,
};

/// Concurrent runs share their ledger statements (`batch`): 30 orders fanned out to 8 endpoints
/// are read and recorded in far fewer statements than one per delivery, each webhook arrives
/// once, and every job and delivery ends finished. Deliveries run in the fan-out's process
/// where it has room, born running: those are never claimed. Counted on a real
/// `switchyard-api --with-worker` process's own `/metrics` (batches served and requests in them).
#[tokio::test]
async fn concurrent_deliveries_share_their_claims_reads_and_records() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    for _ in 0..8 {
        app.create_endpoint(&key, &partner.url, &["order.created"])
            .await;
    }
    let (_api, base) = app.api_with_worker().await;
    let ids: Vec<String> = (0..30).map(|i| format!("batched-{i}")).collect();
    let posts = ids.iter().map(|id| app.post_order_at(&base, &key, id));
    for r in futures::future::join_all(posts).await {
        assert_eq!(r.status(), 201);
    }
    eventually(Duration::from_secs(30), "240 deliveries", || async {
        (partner.count() >= 240).then_some(())
    })
    .await;
    assert_eq!(partner.unique_ids().len(), 30, "one webhook id per order");
    assert_eq!(partner.count(), 240, "each endpoint got each message once");
    let unfinished = "SELECT count(*) FROM jobs WHERE state <> 'succeeded'
                        AND queue IN ('event_fan_out', 'webhook_deliveries')";
    eventually(Duration::from_secs(10), "every job finished", || async {
        (app.count(unfinished).await == 0).then_some(())
    })
    .await;
    let pending = "SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded'";
    assert_eq!(app.count(pending).await, 0);

    let metrics = app.get_text(&format!("{base}/metrics")).await;
    let value = |name: &str, batch: &str| {
        metric(
            &metrics,
            &format!("switchyard_batch_size_{name}{{batch=\"{batch}\"}}"),
        )
    };
    // Deliveries that could go straight out were born running in the fan-out's own process
    // while it had room, or took the slot a success freed: no trip through Redis and no
    // claim. The others went through Redis; either way each arrived once (above). At least the
    // first two events' fitted (64 slots).
    let here = metric(&metrics, "switchyard_tasks_run_here_total");
    assert!((16.0..=240.0).contains(&here), "{here} run here");
    let handed = metric_or_zero(&metrics, "switchyard_slot_handoffs_total");
    // Claims: the 30 fan-outs and the deliveries neither run here nor handed a slot (and a few
    // periodic jobs: the janitor's, integration health's); reads and records: the 240
    // deliveries.
    let batches = [
        ("claim", 270.0 - here - handed),
        ("delivery_target", 240.0),
        ("attempt_record", 240.0),
    ];
    for (batch, requests) in batches {
        let (statements, served) = (value("count", batch), value("sum", batch));
        if batch == "claim" {
            // Few enough left that whether they shared statements depends on timing.
            assert!(
                (requests..=requests + 8.0).contains(&served),
                "{batch}: {served} served for {requests} jobs not born running"
            );
            continue;
        }
        assert_eq!(served, requests, "{batch}: every request served once");
        assert!(
            statements < requests * 0.5,
            "{batch}: {statements} statements for {requests} requests"
        );
    }
}

/// Deliveries the dispatcher admits (an endpoint with a cap of its own: none goes straight out)
/// are born running in the dispatcher's process while it has room: never claimed, never pushed
/// to Redis, each run once as its first attempt.
#[tokio::test]
async fn deliveries_the_dispatcher_admits_run_in_its_process_without_a_claim() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    let body = serde_json::json!({ "url": partner.url, "max_concurrency": 4 });
    app.create_endpoint_with(&key, body).await;
    let (_api, base) = app.api_with_worker().await;
    for i in 0..20 {
        let r = app
            .post_order_at(&base, &key, &format!("admitted-{i}"))
            .await;
        assert_eq!(r.status(), 201);
    }
    eventually(Duration::from_secs(30), "20 deliveries", || async {
        (partner.count() >= 20).then_some(())
    })
    .await;
    let unfinished = "SELECT count(*) FROM jobs WHERE queue = 'webhook_deliveries'
                        AND (state <> 'succeeded' OR attempt <> 1)";
    eventually(
        Duration::from_secs(10),
        "every delivery job finished",
        || async { (app.count(unfinished).await == 0).then_some(()) },
    )
    .await;
    assert_eq!(partner.count(), 20, "each delivered once");
    let metrics = app.get_text(&format!("{base}/metrics")).await;
    // Born running by a dispatch pass, or handed a slot a success freed (next test).
    let here = metric(&metrics, "switchyard_tasks_run_here_total");
    let handed = metric_or_zero(&metrics, "switchyard_slot_handoffs_total");
    assert_eq!(
        here + handed,
        20.0,
        "{here} run here, {handed} handed a slot"
    );
    // Claims: the 20 fan-outs and a few periodic jobs, no delivery.
    let claims = metric(&metrics, "switchyard_batch_size_sum{batch=\"claim\"}");
    assert!((20.0..=28.0).contains(&claims), "{claims} claims");
}

/// A success hands its endpoint's slot to the endpoint's next due delivery in the statement
/// that records it, and the run that freed the slot runs that delivery next: behind a cap of 1,
/// ten deliveries waiting take one dispatch pass between them, not ten, never two at once.
#[tokio::test]
async fn a_success_hands_its_slot_to_the_endpoints_next_due_delivery() {
    // Slow enough that every delivery is waiting before the first one ends.
    let run = CappedBacklog::deliver(10, Duration::from_millis(300)).await;
    let unfinished = "SELECT count(*) FROM jobs WHERE queue = 'webhook_deliveries'
                        AND (state <> 'succeeded' OR attempt <> 1)";
    eventually(
        Duration::from_secs(10),
        "every delivery job finished",
        || async { (run.app.count(unfinished).await == 0).then_some(()) },
    )
    .await;
    assert_eq!(run.partner.count(), 10, "each delivered once");
    let metrics = &run.metrics;
    assert_eq!(
        metric(metrics, "switchyard_tasks_run_here_total"),
        1.0,
        "one delivery admitted by a dispatch pass"
    );
    assert_eq!(
        metric(metrics, "switchyard_slot_handoffs_total"),
        9.0,
        "each of the others handed the slot of the one before"
    );
    let claims = metric(metrics, "switchyard_batch_size_sum{batch=\"claim\"}");
    assert!(
        (10.0..=18.0).contains(&claims),
        "{claims} claims: no delivery's"
    );
}

/// A chain of hand-offs ends after `MAX_HANDOFFS` (32): behind a cap of 1, 34 deliveries
/// waiting take at least two dispatch passes, so a few endpoints with long backlogs cannot
/// keep a worker's slots from everything else.
#[tokio::test]
async fn a_chain_of_hand_offs_ends_after_32() {
    let run = CappedBacklog::deliver(34, Duration::from_millis(100)).await;
    let here = metric(&run.metrics, "switchyard_tasks_run_here_total");
    let handed = metric(&run.metrics, "switchyard_slot_handoffs_total");
    assert_eq!(
        here + handed,
        34.0,
        "{here} admitted by a pass, {handed} handed a slot"
    );
    assert!(
        handed <= 32.0,
        "{handed} hand-offs: a chain is at most 32 long"
    );
    assert!(here >= 2.0, "{here} dispatch admissions");
}

/// `n` orders to one endpoint with a cap of 1 whose partner answers after `delay`, accepted
/// before any worker runs, then delivered by a `switchyard-api --with-worker` process: its
/// `/metrics` once every delivery arrived, the cap checked.
struct CappedBacklog {
    app: TestApp,
    partner: PartnerServer,
    metrics: String,
    _api: Process,
}

impl CappedBacklog {
    async fn deliver(n: usize, delay: Duration) -> CappedBacklog {
        let app = TestApp::spawn(TestOptions::no_worker()).await;
        let partner = PartnerServer::start(Behaviour::Slow(delay)).await;
        let (_, key) = app.partner_account().await;
        let body = serde_json::json!({ "url": partner.url, "max_concurrency": 1 });
        app.create_endpoint_with(&key, body).await;
        for i in 0..n {
            let r = app.post_order(&key, &format!("capped-{i}")).await;
            assert_eq!(r.status(), 201);
        }
        let (api, base) = app.api_with_worker().await;
        eventually(Duration::from_secs(60), "every delivery", || async {
            (partner.count() >= n).then_some(())
        })
        .await;
        assert_eq!(partner.max_in_flight(), 1, "the cap held");
        let metrics = app.get_text(&format!("{base}/metrics")).await;
        CappedBacklog {
            app,
            partner,
            metrics,
            _api: api,
        }
    }
}

/// The value of the sample `name` (with its labels) in a Prometheus text exposition, if any.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

/// [`sample`], or 0 when none was recorded yet.
fn metric_or_zero(metrics: &str, name: &str) -> f64 {
    sample(metrics, name).unwrap_or(0.0)
}

/// [`sample`], which must be there.
pub(crate) fn metric(metrics: &str, name: &str) -> f64 {
    sample(metrics, name).unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

/// The plan (one generic plan per connection, `db::connect_for_batches`) of each batched read
/// and record, and of the fan-out, made on a young ledger: 5 orders to 10 endpoints, every delivery pending and its
/// job queued (the fast path), analysed. With so few rows the costs of the pending-delivery
/// indexes tie, and a planner free to sort picks the FIFO index for the per-order ordering
/// probe, then filters an endpoint's whole backlog by order (1,100 rows per delivery in a
/// fan-out benchmark). With no pending job, an `EXISTS` "due jobs waiting" probe was planned as
/// one scan of every group's due jobs, filtered afterwards (500 buffers per recorded attempt
/// once a backlog formed); it must be one `jobs_group_due` probe per endpoint.
#[tokio::test]
async fn batched_statements_probe_their_own_index_on_a_young_ledger() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let seed = "
        INSERT INTO webhook_messages (id, tenant_id, event_id, event_type, payload,
                                      ordering_key, ordering_seq)
        SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001', gen_random_uuid(),
               'order.created', '{}', 'ord_' || md5(i::text), i
          FROM generate_series(1, 5) i;
        INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id, ordering_key,
                                        ordering_seq)
        SELECT gen_random_uuid(), m.tenant_id, m.id,
               ('00000000-0000-0000-0000-' || lpad(e::text, 12, '0'))::uuid,
               m.ordering_key, m.ordering_seq
          FROM webhook_messages m, generate_series(1, 10) e;
        INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, group_key, state)
        SELECT gen_random_uuid(), 'webhook_deliveries', tenant_id, id, 5, endpoint_id, 'queued'
          FROM webhook_deliveries;
        ANALYZE webhook_messages, webhook_deliveries, jobs;";
    app.pool.execute(seed).await.unwrap();

    let pool = db::connect_for_batches(&app.db.url, 1).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    // A ruled-out plan (an ordered aggregate's sort) costs ~1e10: with JIT on, every execution
    // would be compiled first (about a second each).
    let jit: String = sqlx::query_scalar("SHOW jit")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(jit, "off");
    let targets = generic_plan(
        &mut conn,
        "targets",
        &webhooks::delivery::LOAD_TARGETS_SQL,
        1,
    )
    .await;
    assert!(!targets.contains("Sort"), "no probe sorts:\n{targets}");
    // FIFO's probe for earlier events not yet fanned out: by index.
    assert!(
        !targets.contains("Seq Scan"),
        "no scan of a table:\n{targets}"
    );
    for index in ["jobs_fan_outs_waiting", "jobs_running"] {
        assert!(targets.contains(index), "{index}:\n{targets}");
    }
    assert!(
        targets.contains("Index Scan using webhook_deliveries_ordering"),
        "the ordering probe walks the ordering index:\n{targets}"
    );

    // The fan-out (on the same pool): its job by primary key, no sort anywhere.
    let fan_out = generic_plan(&mut conn, "fan_out", webhooks::messages::FAN_OUT_SQL, 25).await;
    assert!(!fan_out.contains("Sort"), "no sort:\n{fan_out}");
    let finish = line_after(&fan_out, "Update on jobs");
    assert!(
        finish.contains("Index Scan using jobs_pkey"),
        "the fan-out's job by its key:\n{fan_out}"
    );

    let record = generic_plan(&mut conn, "record", &webhooks::record::RECORD_SQL, 34).await;
    let probes: Vec<&str> = record
        .split("using jobs_group_due")
        .skip(1)
        .map(|rest| rest.lines().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        probes.len(),
        2,
        "the waiting probe and the hand-off's:\n{record}"
    );
    assert!(
        probes
            .iter()
            .all(|p| p.contains("Index Cond: ((group_key = ")),
        "one probe per endpoint, by its group key:\n{record}"
    );
    let inflight = line_after(&record, "jobs_group_inflight");
    assert!(
        inflight.contains("Index Cond: (group_key = "),
        "the hand-off counts an endpoint's jobs in flight by its key:\n{record}"
    );
}

/// The generic plan of `sql` (with `args` parameters) on this connection, as EXPLAIN text.
async fn generic_plan(conn: &mut sqlx::PgConnection, name: &str, sql: &str, args: usize) -> String {
    let nulls = vec!["NULL"; args].join(", ");
    let sql = format!("PREPARE {name} AS {sql}; EXPLAIN EXECUTE {name}({nulls})");
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await
        .unwrap();
    rows.iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The plan line right after the first one containing `marker` (its scan's condition).
fn line_after<'a>(plan: &'a str, marker: &str) -> &'a str {
    plan.lines()
        .skip_while(|l| !l.contains(marker))
        .nth(1)
        .unwrap_or_else(|| panic!("no {marker}:\n{plan}"))
}
