//! The job ledger (docs/architecture.md §2): every unit of work is a `jobs` row before it is anything else.
//!
//! States: `pending → queued → running → succeeded | pending (retry) | dead | cancelled`.
//! The claim is a conditional update on `(id, dispatch_seq, state = 'queued')`, so of all the
//! copies of a task Redis may hold (re-dispatch, orphan recovery) exactly one runs the job.
//! A job the committing process runs at once itself is born `running` under its lease
//! ([`Lease::born`]): one row version and one round trip fewer than born `queued` and claimed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{error::Result, queue::JobTask, telemetry::metrics as m};

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

/// Inserts jobs that must exist at most once per key (a schedule's slots), born queued like
/// every new job, on the caller's transaction. Returns the tasks of those inserted; a key that
/// exists already (another replica was first) inserts nothing.
pub async fn insert_unique(
    conn: &mut PgConnection,
    jobs: &[(NewJob, String)],
) -> Result<Vec<JobTask>> {
    let (new, keys): (Vec<NewJob>, Vec<String>) = jobs.iter().cloned().unzip();
    let inserted: Vec<Uuid> = sqlx::query_scalar(concat!(
        insert_jobs_from_sql!(
            "SELECT t.id, t.q, t.tenant, t.subject, t.ma, NULL, now(), 'queued', 1, now(), t.k
                   FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::int[],
                               $6::text[]) AS t(id, q, tenant, subject, ma, k)"
        ),
        " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING id"
    ))
    .bind(new.iter().map(|j| j.id).collect::<Vec<_>>())
    .bind(new.iter().map(|j| j.queue).collect::<Vec<_>>())
    .bind(new.iter().map(|j| j.tenant_id).collect::<Vec<_>>())
    .bind(new.iter().map(|j| j.subject_id).collect::<Vec<_>>())
    .bind(new.iter().map(|j| j.max_attempts).collect::<Vec<_>>())
    .bind(&keys)
    .fetch_all(conn)
    .await?;
    Ok(inserted
        .into_iter()
        .map(|job| JobTask { job, seq: 1 })
        .collect())
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
    /// Why the previous run ended, if it failed.
    pub last_error: Option<String>,
    /// When the job became due, for the enqueue-to-start delay; `None` for a job born running
    /// (it starts as it is made).
    #[sqlx(default)]
    pub run_at: Option<DateTime<Utc>>,
}

/// A job this process holds: the job and the owner its lease is held under. Every statement
/// that moves the job, or a row the job owns, is gated on both (docs/architecture.md §2.6), so
/// this one value is what a run passes around.
#[derive(Clone, Debug)]
pub struct Lease {
    pub job: ClaimedJob,
    pub owner: String,
}

impl Lease {
    /// The lease of a job inserted `running` under `owner` (its first run, dispatch 1): the
    /// process that commits it runs it at once, without a claim. Should that process die, the
    /// lease expires and the reconciler hands the job out again, as for any claimed job.
    pub fn born(job: &NewJob, owner: &str) -> Lease {
        Lease {
            job: ClaimedJob {
                id: job.id,
                queue: job.queue.to_owned(),
                tenant_id: job.tenant_id,
                subject_id: job.subject_id,
                attempt: 1,
                max_attempts: job.max_attempts,
                dispatch_seq: 1,
                last_error: None,
                run_at: None,
            },
            owner: owner.to_owned(),
        }
    }
}

impl std::ops::Deref for Lease {
    type Target = ClaimedJob;

    fn deref(&self) -> &ClaimedJob {
        &self.job
    }
}

/// Claims the jobs behind `tasks` in one statement (the worker batches concurrent claims,
/// `batch::Batcher`). Per task: its job, or `None` when the task is a stale duplicate (another
/// dispatch of the job, the job already claimed, or the same task twice in `tasks`) or its
/// queue is paused (the reconciler returns such a job to `pending`). Each task
/// is one primary-key probe: the tasks are joined as a row set (`UNNEST`), and the expected
/// state is a parameter, not a literal, so the plan (made once per connection, see
/// `db::connect_for_batches`) can never scan the `queued` partial index instead, which a
/// planner without statistics (a young ledger) finds cheaper and which reads every entry.
pub async fn claim(
    pool: &PgPool,
    tasks: &[JobTask],
    owner: &str,
    lease: Duration,
) -> Result<Vec<Option<Lease>>> {
    let rows = sqlx::query_as::<_, ClaimedJob>(
        "UPDATE jobs j
            SET state = 'running', attempt = j.attempt + 1, lease_owner = $3,
                lease_until = now() + make_interval(secs => $4), updated_at = now()
           FROM UNNEST($1::uuid[], $2::bigint[]) AS t(id, seq)
          WHERE j.id = t.id AND j.dispatch_seq = t.seq AND j.state = $5
            AND NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = j.queue)
      RETURNING j.id, j.queue, j.tenant_id, j.subject_id, j.attempt, j.max_attempts,
                j.dispatch_seq, j.last_error, j.run_at",
    )
    .bind(tasks.iter().map(|t| t.job).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.seq).collect::<Vec<_>>())
    .bind(owner)
    .bind(lease.as_secs_f64())
    .bind("queued")
    .fetch_all(pool)
    .await?;
    let mut claimed: std::collections::HashMap<Uuid, ClaimedJob> =
        rows.into_iter().map(|j| (j.id, j)).collect();
    Ok(tasks
        .iter()
        .map(|t| {
            // Each claimed job goes to the first task of its dispatch, once.
            if claimed.get(&t.job)?.dispatch_seq != t.seq {
                return None;
            }
            claimed.remove(&t.job).map(|job| Lease {
                job,
                owner: owner.to_owned(),
            })
        })
        .collect())
}

/// What became of a run.
#[derive(Clone, Debug)]
pub enum Outcome {
    Succeeded,
    /// Run again `after` this long, counted on the database's clock (the ledger, not Redis or
    /// memory, holds the wait).
    Retry {
        after: Duration,
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
/// It only applies while the caller still holds the lease. Parameters `$1..$7` are bound by
/// [`bind_finish`] (`$7` is the text `running`: a value, not a literal, so a plan made once per
/// connection probes the primary key, never the `running` partial index, as in [`claim`]);
/// statements that record business results in the same round trip embed it with `concat!` as
/// a CTE (`WITH fin AS (…)`), number their own parameters from `$8`, and
/// gate every change of a row the job owns on `EXISTS (SELECT 1 FROM fin)`: a run that lost
/// its lease changes nothing (docs/architecture.md §2, rule 6). `$5` is the retry delay in seconds.
macro_rules! finish_sql {
    () => {
        "UPDATE jobs
            SET state = $4,
                run_at = CASE WHEN $5::float8 IS NULL THEN run_at
                              ELSE now() + make_interval(secs => $5) END,
                last_error = $6,
                lease_owner = NULL, lease_until = NULL, queued_at = NULL, updated_at = now(),
                finished_at = CASE WHEN $4 = 'pending' THEN NULL ELSE now() END
          WHERE id = $1 AND dispatch_seq = $2 AND lease_owner = $3 AND state = $7"
    };
}
pub(crate) use finish_sql;

/// [`finish_sql`] for many runs at once: the same transition for each row of a CTE `i` with
/// columns `job_id`, `seq`, `owner`, `state`, `after` and `error` (the values of
/// [`finish_values`]) and `running` (the text `running`: a value, not a literal, so the plan
/// probes the primary key and never the `running` partial index, as in [`claim`]); the jobs
/// table is `j`. Embedded the same way, by statements that record many runs'
/// results in one round trip.
macro_rules! finish_many_sql {
    () => {
        "UPDATE jobs j
            SET state = i.state,
                run_at = CASE WHEN i.after IS NULL THEN j.run_at
                              ELSE now() + make_interval(secs => i.after) END,
                last_error = i.error,
                lease_owner = NULL, lease_until = NULL, queued_at = NULL, updated_at = now(),
                finished_at = CASE WHEN i.state = 'pending' THEN NULL ELSE now() END
           FROM i
          WHERE j.id = i.job_id AND j.dispatch_seq = i.seq AND j.lease_owner = i.owner
            AND j.state = i.running"
    };
}
pub(crate) use finish_many_sql;

/// The ledger's insert of new jobs (born `queued`, see [`NewJob`]); `$1..$5` are arrays (id,
/// queue, tenant, subject, max attempts). Embedded as a CTE by statements that create work
/// together with its business rows.
macro_rules! insert_jobs_sql {
    () => {
        $crate::jobs::insert_jobs_from_sql!(
            "SELECT t.*, NULL, now(), 'queued', 1, now(), NULL
               FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::int[]) AS t"
        )
    };
}
pub(crate) use insert_jobs_sql;

/// The ledger's one `INSERT INTO jobs`: every job row is written by it, embedded in the
/// statement that creates the job's work. `$select` yields per job, in this order: id, queue,
/// tenant, subject, max attempts, dispatch group (or NULL), `run_at`, state (`queued`, pushed
/// right after commit, with `dispatch_seq` 1 and `queued_at` now; or `pending`, for the
/// dispatcher, with 0 and NULL), `dispatch_seq`, `queued_at`, unique key (or NULL).
///
/// `leased: $select` also yields, after the unique key, the attempt number, lease owner and
/// lease expiry: for jobs born `running` in the process that runs them ([`Lease::born`]).
macro_rules! insert_jobs_from_sql {
    ($select:literal) => {
        concat!(
            "INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, group_key, run_at,
                               state, dispatch_seq, queued_at, unique_key) ",
            $select
        )
    };
    (leased: $select:literal) => {
        concat!(
            "INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, group_key, run_at,
                               state, dispatch_seq, queued_at, unique_key, attempt, lease_owner,
                               lease_until) ",
            $select
        )
    };
}
pub(crate) use insert_jobs_from_sql;

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `$1..$7` of `finish_sql!()`.
pub fn bind_finish<'q>(query: PgQuery<'q>, job: &'q Lease, outcome: &'q Outcome) -> PgQuery<'q> {
    let (state, after, error) = finish_values(outcome);
    query
        .bind(job.id)
        .bind(job.dispatch_seq)
        .bind(job.owner.as_str())
        .bind(state)
        .bind(after)
        .bind(error)
        .bind("running")
}

/// An outcome as the ledger stores it: the job's new state, the retry delay in seconds, and
/// its error or reason.
pub(crate) fn finish_values(outcome: &Outcome) -> (&'static str, Option<f64>, Option<&str>) {
    match outcome {
        Outcome::Succeeded => ("succeeded", None, None),
        Outcome::Retry { after, error } => ("pending", Some(after.as_secs_f64()), Some(error)),
        Outcome::Dead { error } => ("dead", None, Some(error)),
        Outcome::Cancelled { reason } => ("cancelled", None, Some(reason)),
    }
}

/// Counts a recorded outcome of a run of `queue` (`switchyard_jobs_finished_total`); every
/// statement that finishes jobs calls it for those whose transition matched.
pub fn count_finished(queue: &str, outcome: &Outcome) {
    let label = match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Retry { .. } => "retry",
        Outcome::Dead { .. } => "dead",
        Outcome::Cancelled { .. } => "cancelled",
    };
    metrics::counter!(m::JOBS_FINISHED, "queue" => queue.to_owned(), "outcome" => label)
        .increment(1);
}

/// Records the outcome if this process still holds the lease; returns whether it did.
pub async fn finish(conn: &mut PgConnection, job: &Lease, outcome: &Outcome) -> Result<bool> {
    let done = bind_finish(sqlx::query(finish_sql!()), job, outcome)
        .execute(conn)
        .await?
        .rows_affected()
        == 1;
    if done {
        count_finished(&job.queue, outcome);
    }
    Ok(done)
}

/// [`finish`] for many runs in one statement (the worker batches the finishes of concurrent
/// runs whose outcome is all they record, `batch::Batcher`): whether each matched.
pub async fn finish_many(pool: &PgPool, runs: &[(Lease, Outcome)]) -> Result<Vec<bool>> {
    let values: Vec<_> = runs.iter().map(|(_, o)| finish_values(o)).collect();
    let matched: Vec<Uuid> = sqlx::query_scalar(concat!(
        "WITH i AS (
            SELECT *, $7::text AS running
              FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::float8[],
                          $6::text[]) AS i(job_id, seq, owner, state, after, error)) ",
        finish_many_sql!(),
        " RETURNING j.id"
    ))
    .bind(runs.iter().map(|(l, _)| l.id).collect::<Vec<_>>())
    .bind(runs.iter().map(|(l, _)| l.dispatch_seq).collect::<Vec<_>>())
    .bind(
        runs.iter()
            .map(|(l, _)| l.owner.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(values.iter().map(|v| v.0).collect::<Vec<_>>())
    .bind(values.iter().map(|v| v.1).collect::<Vec<_>>())
    .bind(values.iter().map(|v| v.2).collect::<Vec<_>>())
    .bind("running")
    .fetch_all(pool)
    .await?;
    Ok(runs
        .iter()
        .map(|(l, o)| {
            let done = matched.contains(&l.id);
            if done {
                count_finished(&l.queue, o);
            }
            done
        })
        .collect())
}

/// The ledger's "not yet" statement: puts a job this process runs back to wait without using
/// up an attempt (an earlier event of the same order goes first, the endpoint's breaker is
/// open, a replay's next batch is due in a second). `$1..$3` identify the run (as for
/// [`finish_sql`]), `$4` is a time read from the database it must not run before (or NULL),
/// `$5` seconds to wait after the later of that and now. Embedded like [`finish_sql`].
macro_rules! defer_sql {
    () => {
        "UPDATE jobs
            SET state = 'pending', attempt = attempt - 1, lease_owner = NULL,
                run_at = GREATEST(now(), COALESCE($4, now())) + make_interval(secs => $5),
                lease_until = NULL, queued_at = NULL, updated_at = now()
          WHERE id = $1 AND dispatch_seq = $2 AND lease_owner = $3 AND state = 'running'"
    };
}
pub(crate) use defer_sql;

/// Starts, under this process's lease, the pending jobs a CTE named `next` (one `id` column)
/// picked and locked: committed `running` as a dispatch would (a new `dispatch_seq`, one more
/// attempt), without a trip through Redis or a claim; the process runs them after the commit.
/// `$owner` and `$lease` (seconds) are the placeholders of the lease. Returns the columns of a
/// [`ClaimedJob`] and the job's `group_key`. Used by a success that hands its endpoint slot on
/// (`webhooks::record`) and by a delivery that runs an earlier one in its place
/// (`webhooks::ordering`).
macro_rules! start_next_sql {
    ($owner:literal, $lease:literal) => {
        concat!(
            "UPDATE jobs j
                SET state = 'running', dispatch_seq = j.dispatch_seq + 1, attempt = j.attempt + 1,
                    queued_at = now(), updated_at = now(), lease_owner = ",
            $owner,
            ", lease_until = now() + make_interval(secs => ",
            $lease,
            ")
               FROM next WHERE j.id = next.id
          RETURNING j.id, j.queue, j.tenant_id, j.subject_id, j.attempt, j.max_attempts,
                    j.dispatch_seq, j.last_error, j.group_key, j.run_at"
        )
    };
}
pub(crate) use start_next_sql;

/// Binds `$1..$5` of `defer_sql!()`.
pub(crate) fn bind_defer<'q>(
    query: PgQuery<'q>,
    job: &'q Lease,
    not_before: Option<DateTime<Utc>>,
    after: Duration,
) -> PgQuery<'q> {
    query
        .bind(job.id)
        .bind(job.dispatch_seq)
        .bind(job.owner.as_str())
        .bind(not_before)
        .bind(after.as_secs_f64())
}

/// Runs `defer_sql!()` alone; returns whether this process still held the lease.
pub async fn defer(
    conn: &mut PgConnection,
    job: &Lease,
    not_before: Option<DateTime<Utc>>,
    after: Duration,
) -> Result<bool> {
    let done = bind_defer(sqlx::query(defer_sql!()), job, not_before, after)
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

/// Work not yet finished, per queue: what operators and alerts watch.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub pending: i64,
    pub due: i64,
    pub queued: i64,
    pub running: i64,
    pub dead: i64,
    /// Seconds the oldest due job has been waiting (0 when none is due).
    pub oldest_due_age_seconds: f64,
}

/// One pass over the unfinished work (each state from its partial index; pending jobs outside
/// and inside dispatch groups apart), so its cost follows the unfinished work, never the
/// ledger's size, and it reads each pending job once however many queues there are.
pub async fn queue_stats(pool: &PgPool, queues: &[&str]) -> Result<Vec<QueueStats>> {
    Ok(sqlx::query_as::<_, QueueStats>(
        "WITH pending AS (
            SELECT queue, count(*) AS pending, count(*) FILTER (WHERE run_at <= now()) AS due,
                   min(run_at) FILTER (WHERE run_at <= now()) AS oldest
              FROM jobs WHERE state = 'pending' AND group_key IS NULL GROUP BY queue
            UNION ALL
            SELECT queue, count(*), count(*) FILTER (WHERE run_at <= now()),
                   min(run_at) FILTER (WHERE run_at <= now())
              FROM jobs WHERE state = 'pending' AND group_key IS NOT NULL GROUP BY queue),
         queued AS (SELECT queue, count(*) AS n FROM jobs WHERE state = 'queued' GROUP BY queue),
         running AS (SELECT queue, count(*) AS n FROM jobs WHERE state = 'running' GROUP BY queue),
         dead AS (SELECT queue, count(*) AS n FROM jobs WHERE state = 'dead' GROUP BY queue)
         SELECT q.queue,
                COALESCE((SELECT sum(pending) FROM pending p WHERE p.queue = q.queue), 0)::int8 AS pending,
                COALESCE((SELECT sum(due) FROM pending p WHERE p.queue = q.queue), 0)::int8 AS due,
                COALESCE((SELECT n FROM queued x WHERE x.queue = q.queue), 0) AS queued,
                COALESCE((SELECT n FROM running x WHERE x.queue = q.queue), 0) AS running,
                COALESCE((SELECT n FROM dead x WHERE x.queue = q.queue), 0) AS dead,
                COALESCE(extract(epoch FROM now() - (SELECT min(oldest) FROM pending p
                                                     WHERE p.queue = q.queue))::float8, 0)
                    AS oldest_due_age_seconds
           FROM UNNEST($1::text[]) AS q(queue)",
    )
    .bind(queues)
    .fetch_all(pool)
    .await?)
}
