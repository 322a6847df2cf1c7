//! Recording what a delivery job did, in the statement that moves its job: an attempt and its
//! outcome, a test send, or an end without an attempt.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, LazyLock},
    time::Duration,
};

use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{
    deliveries::DeliveryStatus,
    delivery::{Decision, HealthPolicy, Target},
    send::AttemptResult,
};
use crate::{
    error::Result,
    events::{NewEvent, events_json, insert_events_sql},
    jobs::{self, ClaimedJob, Lease, Outcome, finish_many_sql, finish_sql, start_next_sql},
};

fn headers_json(h: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Array(h.iter().map(|(k, v)| serde_json::json!([k, v])).collect())
}

/// What recording an attempt did.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Recorded {
    /// False when the lease was lost meanwhile: the attempt is logged, the outcome is not.
    pub recorded: bool,
    /// The endpoint was disabled by this attempt, for this reason (`gone`, `failing`).
    pub disabled: Option<String>,
    /// Deliveries to this endpoint are due and waiting for a slot: the one just freed.
    pub group_waiting: bool,
    /// The endpoint's next due delivery, which took the slot this success freed: its job is
    /// committed `running` under the recording process's lease; the run that freed the slot
    /// runs it next ([`Handoff`]).
    pub next: Option<Lease>,
}

/// Who takes the endpoint slots that successes free, in the statement recording them: the
/// recording process, under its lease. Absent while the process shuts down.
#[derive(Clone, Copy, Debug)]
pub struct Handoff<'a> {
    pub owner: &'a str,
    pub lease: Duration,
    /// The default per-endpoint cap (`SWITCHYARD_ENDPOINT_CONCURRENCY`).
    pub group_concurrency: i64,
}

/// Columns of an attempt row, in the order [`bind_attempt`] binds them (18 values).
const ATTEMPT_COLUMNS: &str = "id, tenant_id, delivery_id, endpoint_id, message_id, attempt, \
    webhook_timestamp, status_code, error_class, error_message, duration_ms, response_body, \
    response_size, remote_ip, ttfb_ms, connect_ms, request_headers, response_headers";

/// `INSERT INTO webhook_attempts … VALUES ($first, …, $first+17)`.
fn insert_attempt_sql(first: usize) -> String {
    let values: Vec<String> = (first..first + 18).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS}) VALUES ({})",
        values.join(", ")
    )
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the 18 values of [`insert_attempt_sql`].
fn bind_attempt<'q>(
    query: PgQuery<'q>,
    target: &Target,
    attempt: i32,
    result: &'q AttemptResult,
) -> PgQuery<'q> {
    let ms = |d: Duration| d.as_millis().min(i32::MAX as u128) as i32;
    query
        .bind(Uuid::now_v7())
        .bind(target.tenant_id)
        .bind(target.delivery_id)
        .bind(target.endpoint_id)
        .bind(target.message_id)
        .bind(attempt)
        .bind(result.webhook_timestamp)
        .bind(result.status_code.map(i32::from))
        .bind(result.error_class)
        .bind(&result.error_message)
        .bind(ms(result.duration))
        .bind(&result.response_body)
        .bind(result.response_size)
        .bind(&result.remote_ip)
        .bind(result.ttfb.map(ms))
        .bind(result.connect.map(ms))
        .bind(headers_json(&result.request_headers))
        .bind(headers_json(&result.response_headers))
}

/// One attempt to record, shared by the run that made it and the batch recording it.
#[derive(Debug)]
pub struct AttemptRecord {
    pub job: Lease,
    pub decision: Decision,
    pub target: Target,
    pub result: AttemptResult,
    /// A success may hand its endpoint slot on ([`Handoff`]): false at the end of a chain.
    pub may_hand_on: bool,
}

/// The statement of [`record`], over arrays with one element per attempt: `$1..$6` finish the
/// jobs (`finish_many_sql!`), `$7..$24` are the attempts, then each delivery's new status
/// (`$25`), disable reason (`$26`) and success flag (`$27`), the health thresholds, and `$30`
/// the text `running` (see `jobs::finish_many_sql!`). A
/// delivery and its endpoint's health change only if its job's transition matched (`fin`): a
/// run whose lease was taken over logs its attempt (it happened) and changes nothing else.
///
/// An endpoint's health takes all of its attempts in the batch, in order (`ord`): the failures
/// after its last success add to (or, after a success, restart) its run of failures.
///
/// `waiting` probes each endpoint's due pending jobs in `jobs_group_due` order, one index
/// probe per endpoint: an `EXISTS` here was planned as one scan of every group's due jobs.
///
/// Hand-off (`freed`, `next`, `started`; docs/architecture.md §2, rule 2): each success frees
/// its endpoint's slot; for those that may hand on (`$34`, false at the end of a chain), as
/// many of the endpoint's oldest due deliveries take the slots at once, born `running` under
/// `$31`'s lease (`$32` seconds), where the dispatcher would admit them just the same: a
/// closed breaker, no rate limit, the queue not paused, and after this batch still under the
/// cap (`$33` the default). A hand-off never raises the endpoint's in-flight count, so the
/// caps hold beside concurrent dispatch passes; the runs that freed the slots run them next,
/// with no wake-up, dispatch pass, trip through Redis or claim in between. `$31` NULL: none.
pub static RECORD_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH i AS (
            SELECT *, $30::text AS running FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::float8[],
                                 $6::text[], $7::uuid[], $8::uuid[], $9::uuid[], $10::uuid[],
                                 $11::uuid[], $12::int[], $13::bigint[], $14::int[], $15::text[],
                                 $16::text[], $17::int[], $18::text[], $19::bigint[], $20::text[],
                                 $21::int[], $22::int[], $23::jsonb[], $24::jsonb[], $25::text[],
                                 $26::text[], $27::bool[], $34::bool[])
                   WITH ORDINALITY AS i(job_id, seq, owner, state, after, error, {ATTEMPT_COLUMNS},
                                        status, disable, succeeded, hand_on, ord)),
         fin AS ({finish} RETURNING j.id, j.state, j.run_at),
         attempt AS (INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS})
                     SELECT {ATTEMPT_COLUMNS} FROM i),
         done AS (SELECT i.*, fin.state AS job_state, fin.run_at FROM i JOIN fin ON fin.id = i.job_id),
         delivery AS (
            UPDATE webhook_deliveries d
               SET status = done.status, attempts = GREATEST(d.attempts, done.attempt),
                   last_status_code = done.status_code,
                   next_attempt_at = CASE WHEN done.job_state = 'pending' THEN done.run_at END,
                   updated_at = now()
              FROM done
             WHERE d.id = ANY($9) AND d.id = done.delivery_id),
         per_endpoint AS (
            SELECT endpoint_id, max(ord) FILTER (WHERE succeeded) AS last_success,
                   (array_agg(disable ORDER BY ord) FILTER (WHERE disable IS NOT NULL))[1] AS disable
              FROM done GROUP BY endpoint_id),
         health AS (
            SELECT w.id, w.status, p.last_success, p.disable, f.trailing,
                   CASE WHEN p.last_success IS NULL THEN w.consecutive_failures + f.trailing
                        ELSE f.trailing END AS failures,
                   CASE WHEN f.trailing = 0 THEN NULL
                        WHEN p.last_success IS NULL THEN COALESCE(w.failing_since, now())
                        ELSE now() END AS since
              FROM per_endpoint p
              JOIN webhook_endpoints w ON w.id = p.endpoint_id
              CROSS JOIN LATERAL (
                  SELECT count(*) AS trailing FROM done
                   WHERE done.endpoint_id = p.endpoint_id AND NOT done.succeeded
                     AND done.ord > COALESCE(p.last_success, 0)) f),
         verdict AS (
            SELECT h.*, CASE WHEN h.status <> 'enabled' THEN NULL
                             WHEN h.disable IS NOT NULL THEN h.disable
                             WHEN h.trailing = 0 THEN NULL
                             WHEN h.failures >= $28
                               OR h.since <= now() - make_interval(secs => $29) THEN 'failing'
                        END AS reason
              FROM health h),
         endpoint AS (
            -- Successes only write the row when they end a run of failures.
            UPDATE webhook_endpoints w
               SET consecutive_failures = v.failures, failing_since = v.since,
                   status = CASE WHEN v.reason IS NULL THEN w.status ELSE 'disabled' END,
                   disabled_reason = COALESCE(v.reason, w.disabled_reason),
                   disabled_at = CASE WHEN v.reason IS NULL THEN w.disabled_at ELSE now() END,
                   updated_at = CASE WHEN v.reason IS NULL THEN w.updated_at ELSE now() END
              FROM verdict v
             WHERE w.id = ANY($10) AND w.id = v.id
               AND (v.trailing > 0 OR w.consecutive_failures > 0 OR w.failing_since IS NOT NULL)
         RETURNING w.id, v.reason),
         freed AS (
            SELECT endpoint_id, count(*) AS n FROM done
             WHERE succeeded AND hand_on AND $31::text IS NOT NULL GROUP BY endpoint_id),
         next AS (
            SELECT x.id FROM freed f
              JOIN dispatch_groups g ON g.key = f.endpoint_id
             CROSS JOIN LATERAL (
                   SELECT count(*) AS c FROM jobs y
                    WHERE y.group_key = f.endpoint_id AND y.state IN ('queued', 'running')) c
             CROSS JOIN LATERAL (
                   SELECT id FROM jobs x
                    WHERE x.group_key = f.endpoint_id AND x.state = 'pending' AND x.run_at <= now()
                    ORDER BY x.group_key, x.run_at
                    LIMIT GREATEST(0, LEAST(f.n, COALESCE(g.max_concurrency, $33) - c.c + f.n))
                    FOR UPDATE SKIP LOCKED) x
             WHERE g.breaker = 'closed' AND g.rate_per_second IS NULL
               AND (g.paused_until IS NULL OR g.paused_until <= now())
               AND NOT EXISTS (SELECT 1 FROM queue_pauses p
                                WHERE p.queue = 'webhook_deliveries')),
         started AS ({start})
         SELECT ARRAY(SELECT id FROM fin) AS recorded,
                ARRAY(SELECT id FROM endpoint WHERE reason IS NOT NULL) AS disabled,
                ARRAY(SELECT reason FROM endpoint WHERE reason IS NOT NULL) AS reasons,
                ARRAY(SELECT p.endpoint_id FROM per_endpoint p
                       CROSS JOIN LATERAL (
                           SELECT 1 FROM jobs w
                            WHERE w.group_key = p.endpoint_id AND w.state = 'pending'
                              AND w.run_at <= now()
                            ORDER BY w.group_key, w.run_at LIMIT 1) w) AS waiting,
                ARRAY(SELECT id FROM started) AS next_ids,
                ARRAY(SELECT queue FROM started) AS next_queues,
                ARRAY(SELECT tenant_id FROM started) AS next_tenants,
                ARRAY(SELECT subject_id FROM started) AS next_subjects,
                ARRAY(SELECT attempt FROM started) AS next_attempts,
                ARRAY(SELECT max_attempts FROM started) AS next_max_attempts,
                ARRAY(SELECT dispatch_seq FROM started) AS next_seqs,
                ARRAY(SELECT last_error FROM started) AS next_errors,
                ARRAY(SELECT group_key FROM started) AS next_groups,
                ARRAY(SELECT run_at FROM started) AS next_run_ats",
        finish = finish_many_sql!(),
        start = start_next_sql!("$31", "$32"),
    )
});

#[derive(sqlx::FromRow)]
struct RecordRow {
    recorded: Vec<Uuid>,
    disabled: Vec<Uuid>,
    reasons: Vec<String>,
    waiting: Vec<Uuid>,
    next_ids: Vec<Uuid>,
    next_queues: Vec<String>,
    next_tenants: Vec<Uuid>,
    next_subjects: Vec<Uuid>,
    next_attempts: Vec<i32>,
    next_max_attempts: Vec<i32>,
    next_seqs: Vec<i64>,
    next_errors: Vec<Option<String>>,
    next_groups: Vec<Uuid>,
    next_run_ats: Vec<chrono::DateTime<chrono::Utc>>,
}

impl RecordRow {
    /// The jobs that took freed slots, by endpoint, each under `owner`'s lease.
    fn started(&mut self, owner: &str) -> HashMap<Uuid, Vec<Lease>> {
        let mut by_group: HashMap<Uuid, Vec<Lease>> = HashMap::new();
        for (i, id) in self.next_ids.iter().enumerate() {
            let job = ClaimedJob {
                id: *id,
                queue: std::mem::take(&mut self.next_queues[i]),
                tenant_id: self.next_tenants[i],
                subject_id: self.next_subjects[i],
                attempt: self.next_attempts[i],
                max_attempts: self.next_max_attempts[i],
                dispatch_seq: self.next_seqs[i],
                last_error: self.next_errors[i].take(),
                run_at: self.next_run_ats.get(i).copied(),
            };
            let lease = Lease {
                job,
                owner: owner.to_owned(),
            };
            by_group.entry(self.next_groups[i]).or_default().push(lease);
        }
        by_group
    }
}

/// One array parameter of [`record`]: `f` of every attempt, in order.
fn column<'a, T>(attempts: &'a [Arc<AttemptRecord>], f: impl Fn(&'a AttemptRecord) -> T) -> Vec<T> {
    attempts.iter().map(|a| f(a)).collect()
}

/// In one statement for many attempts (the worker batches concurrent ones, `batch::Batcher`):
/// logs each attempt, records its job's outcome and, only if that matched, moves its delivery
/// to its new status and keeps its endpoint's health (consecutive failures, failing since;
/// disables it on 410 or when it has only failed for too long). Attempts are logged even if
/// the lease was lost meanwhile (they happened). An endpoint disabled by the batch is reported
/// once, on its last attempt in it. Slots freed by successes go to the endpoints' next due
/// deliveries, under `handoff`'s lease (see [`RECORD_SQL`]).
pub async fn record(
    pool: &PgPool,
    attempts: &[Arc<AttemptRecord>],
    health: &HealthPolicy,
    handoff: Option<Handoff<'_>>,
) -> Result<Vec<Recorded>> {
    let ms = |d: Duration| d.as_millis().min(i32::MAX as u128) as i32;
    let finish = column(attempts, |a| jobs::finish_values(&a.decision.outcome));
    let row = sqlx::query(sqlx::AssertSqlSafe(RECORD_SQL.as_str()))
        .bind(column(attempts, |a| a.job.id))
        .bind(column(attempts, |a| a.job.dispatch_seq))
        .bind(column(attempts, |a| a.job.owner.as_str()))
        .bind(finish.iter().map(|f| f.0).collect::<Vec<_>>())
        .bind(finish.iter().map(|f| f.1).collect::<Vec<_>>())
        .bind(finish.iter().map(|f| f.2).collect::<Vec<_>>())
        .bind(column(attempts, |_| Uuid::now_v7()))
        .bind(column(attempts, |a| a.target.tenant_id))
        .bind(column(attempts, |a| a.target.delivery_id))
        .bind(column(attempts, |a| a.target.endpoint_id))
        .bind(column(attempts, |a| a.target.message_id))
        .bind(column(attempts, |a| a.job.attempt))
        .bind(column(attempts, |a| a.result.webhook_timestamp))
        .bind(column(attempts, |a| a.result.status_code.map(i32::from)))
        .bind(column(attempts, |a| a.result.error_class))
        .bind(column(attempts, |a| a.result.error_message.as_deref()))
        .bind(column(attempts, |a| ms(a.result.duration)))
        .bind(column(attempts, |a| a.result.response_body.as_deref()))
        .bind(column(attempts, |a| a.result.response_size))
        .bind(column(attempts, |a| a.result.remote_ip.as_deref()))
        .bind(column(attempts, |a| a.result.ttfb.map(ms)))
        .bind(column(attempts, |a| a.result.connect.map(ms)))
        .bind(column(attempts, |a| {
            headers_json(&a.result.request_headers)
        }))
        .bind(column(attempts, |a| {
            headers_json(&a.result.response_headers)
        }))
        .bind(column(attempts, |a| a.decision.status.as_str()))
        .bind(column(attempts, |a| a.decision.disable))
        .bind(column(attempts, |a| a.result.succeeded()))
        .bind(health.disable_after_failures)
        .bind(health.disable_after.as_secs_f64())
        .bind("running")
        .bind(handoff.map(|h| h.owner))
        .bind(handoff.map_or(0.0, |h| h.lease.as_secs_f64()))
        .bind(handoff.map_or(0, |h| h.group_concurrency))
        .bind(column(attempts, |a| a.may_hand_on))
        .fetch_one(pool)
        .await?;
    let mut row = <RecordRow as sqlx::FromRow<_>>::from_row(&row)?;
    let mut started = row.started(handoff.map_or("", |h| h.owner));
    let recorded: HashSet<Uuid> = row.recorded.into_iter().collect();
    let waiting: HashSet<Uuid> = row.waiting.into_iter().collect();
    let mut disabled: HashMap<Uuid, String> = row.disabled.into_iter().zip(row.reasons).collect();
    let mut out: Vec<Recorded> = attempts
        .iter()
        .map(|a| Recorded {
            recorded: recorded.contains(&a.job.id),
            disabled: None,
            group_waiting: waiting.contains(&a.target.endpoint_id),
            next: None,
        })
        .collect();
    for (a, out) in attempts.iter().zip(&mut out) {
        if out.recorded {
            jobs::count_finished(&a.job.queue, &a.decision.outcome);
        }
        if out.recorded && a.result.succeeded() && a.may_hand_on {
            out.next = started.get_mut(&a.target.endpoint_id).and_then(Vec::pop);
        }
    }
    for (i, a) in attempts.iter().enumerate().rev() {
        if out[i].recorded
            && let Some(reason) = disabled.remove(&a.target.endpoint_id)
        {
            out[i].disabled = Some(reason);
        }
    }
    Ok(out)
}

/// Records a test send after it happened, in one statement: its event (in the outbox, for
/// this endpoint only), its message, a finished delivery and the attempt. Nothing of a test send exists before (no job, no retries, never pending).
/// Returns the attempt id.
pub async fn record_test(
    conn: &mut PgConnection,
    target: &Target,
    event: &NewEvent,
    result: &AttemptResult,
) -> Result<Uuid> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH ev AS ({}),
             m AS (
                INSERT INTO webhook_messages (id, tenant_id, event_id, event_type, payload)
                VALUES ($5, $2, $22, $19, $20)),
             d AS (
                INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id, status,
                                                attempts, last_status_code)
                VALUES ($3, $2, $5, $4, CASE WHEN $21 THEN 'succeeded' ELSE 'failed' END, 1, $8)),
             attempt AS ({} RETURNING id)
             SELECT id FROM attempt",
            insert_events_sql!("$23"),
            insert_attempt_sql(1)
        )
    });
    let id: Uuid = bind_attempt(
        sqlx::query(sqlx::AssertSqlSafe(SQL.as_str())),
        target,
        1,
        result,
    )
    .bind(&event.event_type)
    .bind(target.payload.as_deref())
    .bind(result.succeeded())
    .bind(event.id)
    .bind(events_json(std::slice::from_ref(event)))
    .fetch_one(conn)
    .await?
    .try_get("id")?;
    Ok(id)
}

/// Finishes a delivery job without an attempt (endpoint deleted or disabled, payload expired,
/// attempts used up by runs that never finished) and, only if the job's transition matched,
/// ends its delivery with `close` (`cancelled`, `failed`). Returns whether it matched.
pub async fn end_without_attempt(
    conn: &mut PgConnection,
    job: &Lease,
    outcome: &Outcome,
    close: Option<(Uuid, DeliveryStatus)>,
) -> Result<bool> {
    let matched: bool = jobs::bind_finish(
        sqlx::query(concat!(
            "WITH fin AS (",
            finish_sql!(),
            " RETURNING id),
             d AS (
                UPDATE webhook_deliveries
                   SET status = $9, next_attempt_at = NULL, updated_at = now()
                 WHERE id = $8 AND EXISTS (SELECT 1 FROM fin))
             SELECT EXISTS (SELECT 1 FROM fin)"
        )),
        job,
        outcome,
    )
    .bind(close.map(|c| c.0))
    .bind(close.map(|c| c.1))
    .fetch_one(conn)
    .await?
    .try_get(0)?;
    if matched {
        jobs::count_finished(&job.queue, outcome);
    }
    Ok(matched)
}

/// Fails a delivery whose job died without an outcome of its own (in the transaction that
/// buries the job), unless it already ended.
pub async fn fail_delivery(conn: &mut PgConnection, delivery_id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, updated_at = now()
          WHERE id = $1 AND status = 'pending'",
    )
    .bind(delivery_id)
    .execute(conn)
    .await?;
    Ok(())
}
