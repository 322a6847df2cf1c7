//! Bulk replays: the messages of a time range, filtered by event type and by the status of
//! their earlier delivery to one endpoint, sent (again) to that endpoint. A replay is counted
//! when created (a dry run stops there), then runs as a background job that schedules one
//! batch of `rate_per_second` messages per second, records its progress, and stops when
//! cancelled. Replayed deliveries keep their `webhook-id` and go through the endpoint's caps.

use crate::input::Time;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::uuid_v7_floor;
use crate::events::types::{self as event_types, EventTypePattern};
use crate::{
    error::{Error, Result},
    input::Int,
    jobs::{self, Lease, NewJob, Outcome, insert_jobs_from_sql, insert_jobs_sql},
    queue::{JobTask, WEBHOOK_DELIVERIES, WEBHOOK_REPLAYS},
    tenants::Scope,
};

/// Body of `POST /v1/webhook-endpoints/{id}/replays`.
/// An earlier delivery status a replay selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "lowercase")]
#[oai(rename_all = "lowercase")]
pub enum ReplayStatus {
    Failed,
    Cancelled,
    Succeeded,
}

impl ReplayStatus {
    fn as_str(self) -> &'static str {
        match self {
            ReplayStatus::Failed => "failed",
            ReplayStatus::Cancelled => "cancelled",
            ReplayStatus::Succeeded => "succeeded",
        }
    }
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CreateReplay {
    /// Messages created at or after this time.
    pub since: Time,
    /// … and before this time, which must be after `since` (default: now).
    #[oai(nullable)]
    pub until: Option<Time>,
    /// 1 to 100 event types or patterns (`order.*`); default: the endpoint's own filter.
    #[oai(nullable, validator(min_items = 1, max_items = 100))]
    pub event_types: Option<Vec<EventTypePattern>>,
    /// Replay messages whose delivery to this endpoint ended with one of these statuses;
    /// default `["failed"]`.
    #[oai(nullable)]
    pub statuses: Option<Vec<ReplayStatus>>,
    /// Also send messages the endpoint never had a delivery of (e.g. it was added later).
    #[oai(nullable)]
    pub include_missing: Option<bool>,
    /// Messages scheduled per second (1–1000, default 50).
    #[oai(nullable)]
    pub rate_per_second: Option<Int<1, 1000>>,
    /// Only count what would be replayed.
    #[oai(nullable)]
    pub dry_run: Option<bool>,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct Replay {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub event_types: Vec<String>,
    pub statuses: Vec<String>,
    pub include_missing: bool,
    pub rate_per_second: i32,
    /// `dry_run`, `running`, `completed`, `cancelled` or `failed` (see `error`).
    pub state: String,
    /// Why a `failed` replay stopped.
    #[oai(nullable)]
    pub error: Option<String>,
    /// Messages in the time range matching the event types (an upper bound of what is sent).
    pub total: i64,
    /// Messages looked at so far.
    pub processed: i64,
    /// Deliveries scheduled so far.
    pub scheduled: i64,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, endpoint_id, since, until, event_types, statuses, include_missing, \
    rate_per_second, state, error, total, processed, scheduled, created_at, finished_at";

/// Messages of the replay's tenant and mode in its range whose type matches its patterns.
const MATCHING: &str = "FROM webhook_messages m JOIN events ev ON ev.id = m.event_id
   WHERE m.tenant_id = $1 AND ev.mode = $2 AND ev.audience = 'endpoints' AND m.id >= $3 AND m.created_at >= $4
     AND m.created_at < $5 AND m.payload IS NOT NULL
     AND EXISTS (SELECT 1 FROM unnest($6::text[]) p
                  WHERE p = '*' OR p = m.event_type
                     OR (right(p, 2) = '.*' AND starts_with(m.event_type, left(p, -1))))";

/// Failed runs a replay job may have (batches themselves use up no attempt): after that the
/// replay stops as `failed`.
pub const REPLAY_MAX_ATTEMPTS: i32 = 25;

/// Validates, counts, and (unless a dry run) records the replay and its job. Returns the
/// replay and the task to push.
pub async fn create(
    conn: &mut PgConnection,
    scope: Scope,
    endpoint_id: Uuid,
    input: CreateReplay,
) -> Result<(Replay, Option<JobTask>)> {
    let filter: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT event_types FROM webhook_endpoints
          WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL",
    )
    .bind(scope.tenant_id)
    .bind(endpoint_id)
    .bind(scope.mode.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let filter = filter.ok_or_else(|| Error::not_found("webhook endpoint"))?;
    let types = match input.event_types {
        Some(t) => event_types::validate_filter(Some(t))?,
        None => filter,
    };
    let statuses: Vec<String> = input.statuses.map_or_else(
        || vec!["failed".to_owned()],
        |s| s.into_iter().map(|s| s.as_str().to_owned()).collect(),
    );
    let rate = input.rate_per_second.map_or(50, |r| r.get() as i32);
    let since = input.since.get();
    let until = input.until.map_or_else(Utc::now, Time::get);
    if until <= since {
        return Err(Error::invalid(
            "parameter_invalid",
            "until",
            "`until` must be after `since`.",
        ));
    }
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {MATCHING}")))
        .bind(scope.tenant_id)
        .bind(scope.mode.as_str())
        .bind(uuid_v7_floor(since))
        .bind(since)
        .bind(until)
        .bind(&types)
        .fetch_one(&mut *conn)
        .await?;
    let dry_run = input.dry_run.unwrap_or(false);
    let id = Uuid::now_v7();
    let job = NewJob::new(WEBHOOK_REPLAYS, scope.tenant_id, id, REPLAY_MAX_ATTEMPTS);
    let state = if dry_run { "dry_run" } else { "running" };
    let replay = sqlx::query_as::<_, Replay>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_replays
            (id, tenant_id, mode, endpoint_id, since, until, event_types, statuses,
             include_missing, rate_per_second, state, total, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, CASE WHEN $13 THEN now() END)
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(endpoint_id)
    .bind(since)
    .bind(until)
    .bind(&types)
    .bind(&statuses)
    .bind(input.include_missing.unwrap_or(false))
    .bind(rate)
    .bind(state)
    .bind(total)
    .bind(dry_run)
    .fetch_one(&mut *conn)
    .await?;
    if !dry_run {
        jobs::bind_insert(sqlx::query(insert_jobs_sql!()), std::slice::from_ref(&job))
            .execute(&mut *conn)
            .await?;
    }
    Ok((replay, (!dry_run).then(|| job.task())))
}

pub async fn get<'e>(db: impl sqlx::PgExecutor<'e>, scope: Scope, id: Uuid) -> Result<Replay> {
    sqlx::query_as::<_, Replay>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_replays WHERE tenant_id = $1 AND mode = $2 AND id = $3"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| Error::not_found("webhook replay"))
}

/// Stops a running replay after its current batch; what was scheduled stays scheduled.
pub async fn cancel(conn: &mut PgConnection, scope: Scope, id: Uuid) -> Result<Replay> {
    sqlx::query(
        "UPDATE webhook_replays SET state = 'cancelled', finished_at = now(), updated_at = now()
          WHERE tenant_id = $1 AND mode = $2 AND id = $3 AND state = 'running'",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    get(conn, scope, id).await
}

#[derive(sqlx::FromRow)]
struct Running {
    tenant_id: Uuid,
    mode: String,
    endpoint_id: Uuid,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    event_types: Vec<String>,
    statuses: Vec<String>,
    include_missing: bool,
    rate_per_second: i32,
    state: String,
    cursor: Option<Uuid>,
}

/// A message of the replay's range, and the status of its delivery to the endpoint, if any.
#[derive(sqlx::FromRow)]
struct Candidate {
    id: Uuid,
    ordering_key: Option<String>,
    ordering_seq: Option<i64>,
    delivered: Option<String>,
}

/// What one batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// More to do: the job waits a second (on the database's clock) for the next batch.
    Again,
    /// Finished, cancelled, or gone.
    Done,
}

/// Pause between batches: a replay schedules `rate_per_second` messages per batch.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Schedules the replay's next batch and records its progress, in one transaction with the
/// job's transition (finished after the last batch, deferred a second otherwise): a run that
/// lost its lease rolls back and changes nothing.
pub async fn run_batch(pool: &PgPool, job: &Lease) -> Result<Step> {
    let mut tx = pool.begin().await?;
    let r: Option<Running> = sqlx::query_as(
        "SELECT tenant_id, mode, endpoint_id, since, until, event_types, statuses,
                include_missing, rate_per_second, state, cursor
           FROM webhook_replays WHERE id = $1 FOR UPDATE",
    )
    .bind(job.subject_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(r) = r.filter(|r| r.state == "running") else {
        if jobs::finish(&mut tx, job, &Outcome::Succeeded).await? {
            tx.commit().await?;
        }
        return Ok(Step::Done);
    };
    let floor = uuid_v7_floor(r.since);
    let batch: Vec<Candidate> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT m.id, m.ordering_key, m.ordering_seq,
                    (SELECT d.status FROM webhook_deliveries d
                      WHERE d.message_id = m.id AND d.endpoint_id = $8) AS delivered
               {MATCHING} AND m.id > COALESCE($7, $3)
              ORDER BY m.id LIMIT $9"
    )))
    .bind(r.tenant_id)
    .bind(&r.mode)
    .bind(floor)
    .bind(r.since)
    .bind(r.until)
    .bind(&r.event_types)
    .bind(r.cursor)
    .bind(r.endpoint_id)
    .bind(i64::from(r.rate_per_second))
    .fetch_all(&mut *tx)
    .await?;
    let wanted: Vec<_> = batch
        .iter()
        .filter(|c| match &c.delivered {
            None => r.include_missing,
            Some(s) => r.statuses.contains(s),
        })
        .collect();
    let scheduled = if wanted.is_empty() {
        0
    } else {
        sqlx::query(concat!(
            "WITH d AS (
                INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id,
                                                ordering_key, ordering_seq, job_id)
                SELECT t.id, $1, t.m, $2, t.ok, t.os, gen_random_uuid()
                  FROM UNNEST($3::uuid[], $4::uuid[], $5::text[], $6::bigint[]) AS t(id, m, ok, os)
                ON CONFLICT (message_id, endpoint_id) DO UPDATE
                   SET status = 'pending', next_attempt_at = now(), updated_at = now(),
                       job_id = EXCLUDED.job_id
                 WHERE webhook_deliveries.status <> 'pending'
                RETURNING id, job_id)",
            insert_jobs_from_sql!(
                "SELECT d.job_id, $7, $1, d.id, $8, $2, now(), 'pending', 0, NULL, NULL
                   FROM d"
            )
        ))
        .bind(r.tenant_id)
        .bind(r.endpoint_id)
        .bind(wanted.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(wanted.iter().map(|w| w.id).collect::<Vec<_>>())
        .bind(
            wanted
                .iter()
                .map(|w| w.ordering_key.clone())
                .collect::<Vec<_>>(),
        )
        .bind(wanted.iter().map(|w| w.ordering_seq).collect::<Vec<_>>())
        .bind(WEBHOOK_DELIVERIES)
        .bind(super::endpoints::MANUAL_MAX_ATTEMPTS)
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64
    };
    let done = (batch.len() as i64) < i64::from(r.rate_per_second);
    sqlx::query(
        "UPDATE webhook_replays
            SET processed = processed + $2, scheduled = scheduled + $3, cursor = COALESCE($4, cursor),
                state = CASE WHEN $5 THEN 'completed' ELSE state END,
                finished_at = CASE WHEN $5 THEN now() END, updated_at = now()
          WHERE id = $1",
    )
    .bind(job.subject_id)
    .bind(batch.len() as i64)
    .bind(scheduled)
    .bind(batch.last().map(|b| b.id))
    .bind(done)
    .execute(&mut *tx)
    .await?;
    let held = if done {
        jobs::finish(&mut tx, job, &Outcome::Succeeded).await?
    } else {
        jobs::defer(&mut tx, job, None, BATCH_PAUSE).await?
    };
    if !held {
        // Another run holds the job: drop this batch (the transaction rolls back).
        return Ok(Step::Done);
    }
    tx.commit().await?;
    Ok(if done { Step::Done } else { Step::Again })
}

/// Stops a replay whose job died, keeping why (in the transaction that buries the job).
pub async fn mark_failed(conn: &mut sqlx::PgConnection, id: Uuid, error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_replays SET state = 'failed', error = $2, finished_at = now(),
                updated_at = now()
          WHERE id = $1 AND state = 'running'",
    )
    .bind(id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}
