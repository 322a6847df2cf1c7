//! The job ledger (DESIGN §2): every unit of work is a `jobs` row before it is anything else.
//!
//! States: `pending → queued → running → succeeded | pending (retry) | dead | cancelled`.
//! The claim is a conditional update on `(id, dispatch_seq, state = 'queued')`, so of all the
//! copies of a task Redis may hold (re-dispatch, orphan recovery) exactly one runs the job.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{error::Result, queue::JobTask};

/// A job to insert in the same transaction as the business rows it works on.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: Uuid,
    pub queue: &'static str,
    pub tenant_id: Uuid,
    pub subject_id: Uuid,
    pub max_attempts: i32,
}

impl NewJob {
    pub fn new(queue: &'static str, tenant_id: Uuid, subject_id: Uuid, max_attempts: i32) -> Self {
        NewJob {
            id: Uuid::now_v7(),
            queue,
            tenant_id,
            subject_id,
            max_attempts,
        }
    }
}

/// Inserts `pending` jobs due now; one statement however many.
pub async fn insert(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue).collect();
    let tenants: Vec<Uuid> = jobs.iter().map(|j| j.tenant_id).collect();
    let subjects: Vec<Uuid> = jobs.iter().map(|j| j.subject_id).collect();
    let max: Vec<i32> = jobs.iter().map(|j| j.max_attempts).collect();
    sqlx::query(
        "INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::int[])",
    )
    .bind(&ids)
    .bind(&queues)
    .bind(&tenants)
    .bind(&subjects)
    .bind(&max)
    .execute(conn)
    .await?;
    Ok(())
}

/// A job this process holds the lease of.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub queue: String,
    pub tenant_id: Uuid,
    pub subject_id: Uuid,
    /// 1-based number of this run (crashed runs count too).
    pub attempt: i32,
    pub max_attempts: i32,
    pub dispatch_seq: i64,
}

/// Claims the job behind `task`, or returns `None` when the task is a stale duplicate.
pub async fn claim(
    pool: &PgPool,
    task: JobTask,
    owner: &str,
    lease: Duration,
) -> Result<Option<ClaimedJob>> {
    let job = sqlx::query_as::<_, ClaimedJob>(
        "UPDATE jobs
            SET state = 'running', attempt = attempt + 1, lease_owner = $3,
                lease_until = now() + make_interval(secs => $4), updated_at = now()
          WHERE id = $1 AND dispatch_seq = $2 AND state = 'queued'
      RETURNING id, queue, tenant_id, subject_id, attempt, max_attempts, dispatch_seq",
    )
    .bind(task.job)
    .bind(task.seq)
    .bind(owner)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(job)
}

/// What became of a run.
#[derive(Clone, Debug)]
pub enum Outcome {
    Succeeded,
    /// Run again at `at` (the ledger, not Redis or memory, holds the wait).
    Retry {
        at: DateTime<Utc>,
        error: String,
    },
    /// Give up for good.
    Dead {
        error: String,
    },
    /// Nothing left to do (e.g. the endpoint was deleted).
    Cancelled {
        reason: String,
    },
}

/// Records the outcome if this process still holds the lease; returns whether it did.
/// Call it inside the transaction that writes the run's business results.
pub async fn finish(
    conn: &mut PgConnection,
    job: &ClaimedJob,
    owner: &str,
    outcome: &Outcome,
) -> Result<bool> {
    let (state, run_at, error): (&str, Option<DateTime<Utc>>, Option<&str>) = match outcome {
        Outcome::Succeeded => ("succeeded", None, None),
        Outcome::Retry { at, error } => ("pending", Some(*at), Some(error)),
        Outcome::Dead { error } => ("dead", None, Some(error)),
        Outcome::Cancelled { reason } => ("cancelled", None, Some(reason)),
    };
    let done = sqlx::query(
        "UPDATE jobs
            SET state = $4, run_at = COALESCE($5, run_at), last_error = $6,
                lease_owner = NULL, lease_until = NULL, queued_at = NULL, updated_at = now(),
                finished_at = CASE WHEN $4 = 'pending' THEN NULL ELSE now() END
          WHERE id = $1 AND dispatch_seq = $2 AND lease_owner = $3 AND state = 'running'",
    )
    .bind(job.id)
    .bind(job.dispatch_seq)
    .bind(owner)
    .bind(state)
    .bind(run_at)
    .bind(error)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Extends the leases of the jobs this process is running: one statement per tick, not per job.
pub async fn renew_leases(
    pool: &PgPool,
    owner: &str,
    ids: &[Uuid],
    lease: Duration,
) -> Result<u64> {
    let n = sqlx::query(
        "UPDATE jobs SET lease_until = now() + make_interval(secs => $3)
          WHERE id = ANY($2) AND lease_owner = $1 AND state = 'running'",
    )
    .bind(owner)
    .bind(ids)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}

/// Hands back every job this process still runs (shutdown deadline passed): they run again
/// at once elsewhere instead of waiting for their lease to expire.
pub async fn release_leases(pool: &PgPool, owner: &str) -> Result<u64> {
    let n = sqlx::query(
        "UPDATE jobs SET state = 'pending', run_at = now(), lease_owner = NULL, lease_until = NULL,
                last_error = 'handed back at shutdown', updated_at = now()
          WHERE lease_owner = $1 AND state = 'running'",
    )
    .bind(owner)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}

/// Deletes finished jobs older than `retention`, in bounded batches.
pub async fn purge_finished(pool: &PgPool, retention: Duration) -> Result<u64> {
    let n = sqlx::query(
        "DELETE FROM jobs WHERE id IN (
            SELECT id FROM jobs
             WHERE state IN ('succeeded', 'cancelled')
               AND finished_at < now() - make_interval(secs => $1)
             LIMIT 5000)",
    )
    .bind(retention.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}

/// Work not yet finished, per queue: what operators and alerts watch.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub pending: i64,
    pub due: i64,
    pub queued: i64,
    pub running: i64,
    /// Seconds the oldest due job has been waiting (0 when none is due).
    pub oldest_due_age_seconds: f64,
}

/// Served by the partial indexes, so its cost follows the unfinished work, not the ledger size.
pub async fn queue_stats(pool: &PgPool) -> Result<Vec<QueueStats>> {
    Ok(sqlx::query_as::<_, QueueStats>(
        "SELECT q.queue,
                (SELECT count(*) FROM jobs WHERE queue = q.queue AND state = 'pending') AS pending,
                (SELECT count(*) FROM jobs WHERE queue = q.queue AND state = 'pending' AND run_at <= now()) AS due,
                (SELECT count(*) FROM jobs WHERE queue = q.queue AND state = 'queued') AS queued,
                (SELECT count(*) FROM jobs WHERE queue = q.queue AND state = 'running') AS running,
                COALESCE((SELECT extract(epoch FROM now() - min(run_at))::float8 FROM jobs
                           WHERE queue = q.queue AND state = 'pending' AND run_at <= now()), 0) AS oldest_due_age_seconds
           FROM UNNEST($1::text[]) AS q(queue)",
    )
    .bind(&crate::queue::ALL_QUEUES[..])
    .fetch_all(pool)
    .await?)
}
