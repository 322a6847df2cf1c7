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

/// A job to insert with the business rows it works on (same statement or transaction). New jobs
/// are born `queued` with `dispatch_seq = 1`: the caller pushes that task right after commit
/// (`dispatch::FastPath`); if Redis refuses or fails, the job goes back to `pending` for the
/// dispatcher, and if the process dies first, the reconciler finds the task missing.
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

    /// The task to push once the job is committed.
    pub fn task(&self) -> JobTask {
        JobTask {
            job: self.id,
            seq: 1,
        }
    }
}

/// Binds `$1..$5` of `insert_jobs_sql!()`.
pub(crate) fn bind_insert<'q>(query: PgQuery<'q>, jobs: &[NewJob]) -> PgQuery<'q> {
    query
        .bind(jobs.iter().map(|j| j.id).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.queue).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.tenant_id).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.subject_id).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.max_attempts).collect::<Vec<_>>())
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

/// The ledger's "record the outcome" statement: the one definition of how a run finishes.
/// It only applies while the caller still holds the lease. Parameters `$1..$6` are bound by
/// [`bind_finish`]; statements that record business results in the same round trip embed it
/// with `concat!` as a CTE (`WITH fin AS (…)`) and number their own parameters from `$7`.
macro_rules! finish_sql {
    () => {
        "UPDATE jobs
            SET state = $4, run_at = COALESCE($5, run_at), last_error = $6,
                lease_owner = NULL, lease_until = NULL, queued_at = NULL, updated_at = now(),
                finished_at = CASE WHEN $4 = 'pending' THEN NULL ELSE now() END
          WHERE id = $1 AND dispatch_seq = $2 AND lease_owner = $3 AND state = 'running'"
    };
}
pub(crate) use finish_sql;

/// The ledger's insert of new jobs (born `queued`, see [`NewJob`]); `$1..$5` are arrays (id,
/// queue, tenant, subject, max attempts). Embedded as a CTE by statements that create work
/// together with its business rows.
macro_rules! insert_jobs_sql {
    () => {
        "INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, dispatch_seq, queued_at)
         SELECT t.*, 'queued', 1, now()
           FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::int[]) AS t"
    };
}
pub(crate) use insert_jobs_sql;

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `$1..$6` of `finish_sql!()`.
pub fn bind_finish<'q>(
    query: PgQuery<'q>,
    job: &'q ClaimedJob,
    owner: &'q str,
    outcome: &'q Outcome,
) -> PgQuery<'q> {
    let (state, run_at, error): (&str, Option<DateTime<Utc>>, Option<&str>) = match outcome {
        Outcome::Succeeded => ("succeeded", None, None),
        Outcome::Retry { at, error } => ("pending", Some(*at), Some(error)),
        Outcome::Dead { error } => ("dead", None, Some(error)),
        Outcome::Cancelled { reason } => ("cancelled", None, Some(reason)),
    };
    query
        .bind(job.id)
        .bind(job.dispatch_seq)
        .bind(owner)
        .bind(state)
        .bind(run_at)
        .bind(error)
}

/// Records the outcome if this process still holds the lease; returns whether it did.
pub async fn finish(
    conn: &mut PgConnection,
    job: &ClaimedJob,
    owner: &str,
    outcome: &Outcome,
) -> Result<bool> {
    let done = bind_finish(sqlx::query(finish_sql!()), job, owner, outcome)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(done == 1)
}

/// Puts a job this process runs back to wait until `at` without using up an attempt: the job
/// could not start yet (an earlier event of the same order goes first).
pub async fn defer(
    pool: &PgPool,
    job: &ClaimedJob,
    owner: &str,
    at: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE jobs
            SET state = 'pending', run_at = $4, attempt = attempt - 1, lease_owner = NULL,
                lease_until = NULL, queued_at = NULL, updated_at = now()
          WHERE id = $1 AND dispatch_seq = $2 AND lease_owner = $3 AND state = 'running'",
    )
    .bind(job.id)
    .bind(job.dispatch_seq)
    .bind(owner)
    .bind(at)
    .execute(pool)
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
