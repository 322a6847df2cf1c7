//! Recording what a delivery job did, in the statement that moves its job: an attempt and its
//! outcome, a test send, or an end without an attempt.

use std::{sync::LazyLock, time::Duration};

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
    jobs::{self, Lease, Outcome, finish_sql},
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

/// The statement of [`record`]: `$1..$6` finish the job, `$7..$24` are the attempt (`$9` the
/// delivery, `$10` the endpoint, `$12` the attempt number, `$14` the status code), then the
/// delivery's new status, disable reason, success flag and health thresholds. The delivery
/// and the endpoint's health change only if the job's transition matched (`fin`): a run whose
/// lease was taken over logs its attempt (it happened) and changes nothing else.
static RECORD_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH fin AS ({finish} RETURNING id, state, run_at),
         attempt AS ({attempt}),
         delivery AS (
            UPDATE webhook_deliveries d
               SET status = $25, attempts = GREATEST(attempts, $12), last_status_code = $14,
                   next_attempt_at = CASE WHEN fin.state = 'pending' THEN fin.run_at END,
                   updated_at = now()
              FROM fin
             WHERE d.id = $9),
         verdict AS (
            SELECT CASE WHEN status <> 'enabled' OR $27 THEN NULL
                        WHEN $26::text IS NOT NULL THEN $26::text
                        WHEN consecutive_failures + 1 >= $28
                          OR COALESCE(failing_since, now()) <= now() - make_interval(secs => $29)
                        THEN 'failing'
                   END AS reason
              FROM webhook_endpoints WHERE id = $10 AND EXISTS (SELECT 1 FROM fin)),
         endpoint AS (
            -- A success only writes the row when it ends a run of failures.
            UPDATE webhook_endpoints w
               SET consecutive_failures = CASE WHEN $27 THEN 0 ELSE w.consecutive_failures + 1 END,
                   failing_since = CASE WHEN $27 THEN NULL ELSE COALESCE(w.failing_since, now()) END,
                   status = CASE WHEN v.reason IS NULL THEN w.status ELSE 'disabled' END,
                   disabled_reason = COALESCE(v.reason, w.disabled_reason),
                   disabled_at = CASE WHEN v.reason IS NULL THEN w.disabled_at ELSE now() END,
                   updated_at = CASE WHEN v.reason IS NULL THEN w.updated_at ELSE now() END
              FROM verdict v
             WHERE w.id = $10
               AND (NOT $27 OR w.consecutive_failures > 0 OR w.failing_since IS NOT NULL)
         RETURNING v.reason)
         SELECT EXISTS (SELECT 1 FROM fin) AS recorded, (SELECT reason FROM endpoint) AS disabled,
                EXISTS (SELECT 1 FROM jobs w WHERE w.group_key = $10 AND w.state = 'pending'
                           AND w.run_at <= now()) AS group_waiting",
        finish = finish_sql!(),
        attempt = insert_attempt_sql(7),
    )
});

/// In one statement: logs the attempt, records the job's outcome and, only if that matched,
/// moves the delivery to its new status and keeps the endpoint's health (consecutive failures,
/// failing since; disables it on 410 or when it has only failed for too long). The attempt is
/// logged even if the lease was lost meanwhile (it happened).
pub async fn record(
    pool: &PgPool,
    job: &Lease,
    decision: &Decision,
    target: &Target,
    result: &AttemptResult,
    health: &HealthPolicy,
) -> Result<Recorded> {
    let query = jobs::bind_finish(
        sqlx::query(sqlx::AssertSqlSafe(RECORD_SQL.as_str())),
        job,
        &decision.outcome,
    );
    let row = bind_attempt(query, target, job.attempt, result)
        .bind(decision.status)
        .bind(decision.disable)
        .bind(result.succeeded())
        .bind(health.disable_after_failures)
        .bind(health.disable_after.as_secs_f64())
        .fetch_one(pool)
        .await?;
    Ok(<Recorded as sqlx::FromRow<_>>::from_row(&row)?)
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
                   SET status = $8, next_attempt_at = NULL, updated_at = now()
                 WHERE id = $7 AND EXISTS (SELECT 1 FROM fin))
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
