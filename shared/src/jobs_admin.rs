//! The ledger as operators browse it (`GET /admin/v1/jobs`, the dashboard): jobs by queue,
//! state, tenant and error text, newest first, a page at a time, and one job in detail with
//! what its run did (a delivery's attempts).
//!
//! Pages are keysets that ride the ledger's own partial indexes, so they stay fast with
//! millions of jobs without an index of their own (every index on `jobs` is paid by every
//! state change on the hot path): finished states (`succeeded`, `cancelled`, `dead`) are
//! ordered by when they finished (`jobs_finished`, `jobs_dead`), the rest by id (UUIDv7, so
//! by creation; the primary key).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{
    error::{Error, Result},
    queue,
};

/// A job's state in the ledger.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its time, its endpoint's slot or the dispatcher.
    Pending,
    /// Pushed to Redis, not yet claimed.
    Queued,
    Running,
    Succeeded,
    /// Given up on, with its last error.
    Dead,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    fn finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

/// What a list is filtered by; every field optional.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub tenant_id: Option<Uuid>,
    /// Jobs whose last error contains this (case-insensitive).
    pub error: Option<String>,
    /// Dead jobs whose error has exactly this fingerprint (one group of [`dead_groups`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_fingerprint: Option<String>,
    /// Jobs made at or after this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_after: Option<DateTime<Utc>>,
    /// Jobs made before this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_before: Option<DateTime<Utc>>,
}

/// One job of the ledger.
#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub queue: String,
    pub state: JobState,
    pub tenant_id: Uuid,
    /// The row the job works on (a delivery, an event, an inbound event, a sync run, …).
    pub subject_id: Uuid,
    /// Runs so far (crashed runs count too).
    pub attempt: i32,
    pub max_attempts: i32,
    /// When it is (or was) due.
    pub run_at: DateTime<Utc>,
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// The worker running it (`GET /admin/v1/workers`), while it runs.
    #[oai(nullable)]
    pub lease_owner: Option<String>,
    #[oai(nullable)]
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, queue, state, tenant_id, subject_id, attempt, max_attempts, run_at, \
     last_error, lease_owner, lease_until, created_at, updated_at, finished_at";

/// Adds `filter`'s conditions to `q` (which ends in a `WHERE` clause).
fn push_filter(q: &mut QueryBuilder<Postgres>, filter: &JobFilter) {
    if let Some(state) = filter.state {
        // A literal, so the planner matches the state's partial index.
        q.push(format!(" AND state = '{}'", state.as_str()));
    }
    if let Some(queue) = &filter.queue {
        q.push(" AND queue = ").push_bind(queue.clone());
    }
    if let Some(tenant) = filter.tenant_id {
        q.push(" AND tenant_id = ").push_bind(tenant);
    }
    if let Some(after) = filter.created_after {
        q.push(" AND created_at >= ").push_bind(after);
    }
    if let Some(before) = filter.created_before {
        q.push(" AND created_at < ").push_bind(before);
    }
    if let Some(error) = &filter.error {
        let escaped = error
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        q.push(" AND last_error ILIKE ")
            .push_bind(format!("%{escaped}%"));
    }
    if let Some(fingerprint) = &filter.error_fingerprint {
        // A group is of dead jobs: a job retried since keeps its old fingerprint.
        q.push(" AND state = 'dead' AND error_fingerprint = ")
            .push_bind(fingerprint.clone());
    }
}

/// Jobs matching `filter`, newest first (finished states: by when they finished), `limit` at
/// most, after the job `starting_after`.
pub async fn list(
    pool: &PgPool,
    filter: &JobFilter,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<Job>> {
    let by_finish = filter.state.is_some_and(JobState::finished);
    let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM jobs WHERE true"));
    push_filter(&mut q, filter);
    if let Some(after) = starting_after {
        if by_finish {
            q.push(" AND (finished_at, id) < (SELECT finished_at, id FROM jobs WHERE id = ")
                .push_bind(after)
                .push(")");
        } else {
            q.push(" AND id < ").push_bind(after);
        }
    }
    q.push(if by_finish {
        " ORDER BY finished_at DESC, id DESC LIMIT "
    } else {
        " ORDER BY id DESC LIMIT "
    })
    .push_bind(limit);
    Ok(q.build_query_as().fetch_all(pool).await?)
}

/// How many jobs match `filter` (what a bulk action's dry run reports).
pub async fn count(pool: &PgPool, filter: &JobFilter) -> Result<i64> {
    let mut q = QueryBuilder::<Postgres>::new("SELECT count(*) FROM jobs WHERE true");
    push_filter(&mut q, filter);
    Ok(q.build_query_scalar().fetch_one(pool).await?)
}

/// Ids of jobs matching `filter` below id `before` (newest first, by id: an order an action
/// cannot change), `limit` at most — how a bulk action walks its jobs.
pub async fn ids(
    pool: &PgPool,
    filter: &JobFilter,
    limit: i64,
    before: Option<Uuid>,
) -> Result<Vec<Uuid>> {
    let mut q = QueryBuilder::<Postgres>::new("SELECT id FROM jobs WHERE true");
    push_filter(&mut q, filter);
    if let Some(before) = before {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    Ok(q.build_query_scalar().fetch_all(pool).await?)
}

/// The row a job works on, and where the partner API shows it.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct Subject {
    /// `webhook_delivery`, `event`, `webhook_replay`, `inbound_event`, `sync_run`, or the queue
    /// name for maintenance jobs.
    pub kind: String,
    pub id: Uuid,
    /// `GET` path in the partner API (with a key of the job's tenant), if it has one.
    #[oai(nullable)]
    pub path: Option<String>,
}

/// One attempt of a delivery job.
#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct JobAttempt {
    pub attempt: i32,
    #[oai(nullable)]
    pub status_code: Option<i32>,
    #[oai(nullable)]
    pub error_class: Option<String>,
    #[oai(nullable)]
    pub error_message: Option<String>,
    pub duration_ms: i32,
    pub created_at: DateTime<Utc>,
}

/// A job with its subject and, for deliveries, every attempt (oldest first, at most 100).
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct JobDetail {
    #[oai(flatten)]
    #[serde(flatten)]
    pub job: Job,
    pub subject: Subject,
    pub attempts: Vec<JobAttempt>,
}

fn subject(job: &Job) -> Subject {
    let (kind, path) = match queue::subject_path(&job.queue, job.subject_id) {
        Some((kind, path)) => (kind.to_owned(), Some(path)),
        None => (job.queue.clone(), None),
    };
    Subject {
        kind,
        id: job.subject_id,
        path,
    }
}

/// Job `id` in detail.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<JobDetail> {
    let job: Job = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::not_found("job"))?;
    let attempts = if job.queue == queue::WEBHOOK_DELIVERIES {
        // Only the attempt partitions since the job was made.
        sqlx::query_as(
            "SELECT attempt, status_code, error_class, left(error_message, 500) AS error_message,
                    duration_ms, created_at
               FROM webhook_attempts
              WHERE delivery_id = $1 AND id >= uuid_v7_floor($2)
              ORDER BY id LIMIT 100",
        )
        .bind(job.subject_id)
        .bind(job.created_at - chrono::TimeDelta::seconds(1))
        .fetch_all(pool)
        .await?
    } else {
        Vec::new()
    };
    Ok(JobDetail {
        subject: subject(&job),
        job,
        attempts,
    })
}

/// Dead jobs sharing a queue and an error fingerprint.
#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct DeadGroup {
    pub queue: String,
    /// The last error with its numbers and ids replaced by `#`, so errors that differ only by
    /// an id, a count or a status detail fall together.
    pub fingerprint: String,
    pub count: i64,
    /// The newest of them (`GET /admin/v1/jobs/{id}`) and its error as it was.
    pub example_id: Uuid,
    #[oai(nullable)]
    pub example_error: Option<String>,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
}

/// Dead jobs grouped by queue and error fingerprint, biggest groups first (100 at most). The
/// fingerprint is written when a job dies (`job_error_fingerprint`, migration
/// `dead_job_groups`), so the groups come from one index (`jobs_dead_groups`) and each
/// group's newest job from the same index.
pub async fn dead_groups(pool: &PgPool, queue: Option<&str>) -> Result<Vec<DeadGroup>> {
    Ok(sqlx::query_as(
        "SELECT g.queue, g.fingerprint, g.count, e.id AS example_id, e.last_error AS example_error,
                g.first_at, g.last_at
           FROM (SELECT queue, error_fingerprint AS fingerprint, count(*) AS count,
                        min(finished_at) AS first_at, max(finished_at) AS last_at
                   FROM jobs
                  WHERE state = 'dead' AND finished_at IS NOT NULL
                    AND ($1::text IS NULL OR queue = $1)
                  GROUP BY queue, error_fingerprint
                  ORDER BY count(*) DESC, max(finished_at) DESC LIMIT 100) g
          CROSS JOIN LATERAL (
                SELECT id, last_error FROM jobs j
                 WHERE j.state = 'dead' AND j.queue = g.queue
                   AND j.error_fingerprint = g.fingerprint AND j.finished_at IS NOT NULL
                 ORDER BY j.finished_at DESC LIMIT 1) e
          ORDER BY g.count DESC, g.last_at DESC",
    )
    .bind(queue)
    .fetch_all(pool)
    .await?)
}

/// Jobs of one queue that ended within a window, by outcome.
#[derive(Clone, Debug, Default, Serialize, sqlx::FromRow)]
pub struct Finished {
    pub queue: String,
    pub succeeded: i64,
    /// Ended dead (attempts used up).
    pub failed: i64,
    pub cancelled: i64,
}

/// Jobs per queue that ended after `since` (the dashboard's throughput and failure rate). It
/// reads the finished and dead indexes from `since` on only, so its cost follows the
/// throughput, not the ledger's size.
pub async fn finished_since(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<Finished>> {
    Ok(sqlx::query_as::<_, Finished>(
        "SELECT queue, count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
                count(*) FILTER (WHERE state = 'dead') AS failed,
                count(*) FILTER (WHERE state = 'cancelled') AS cancelled
           FROM (SELECT queue, state FROM jobs
                  WHERE state IN ('succeeded', 'cancelled')
                    AND finished_at > $1
                 UNION ALL
                 SELECT queue, state FROM jobs WHERE state = 'dead' AND finished_at > $1) f
          GROUP BY queue",
    )
    .bind(since)
    .fetch_all(pool)
    .await?)
}

/// Per queue, how long the oldest task handed to Redis has waited for a worker to claim it
/// (seconds). Reads the queued jobs' partial index: at most the high-water mark per queue.
pub async fn oldest_queued_age(pool: &PgPool) -> Result<Vec<(String, f64)>> {
    Ok(sqlx::query_as(
        "SELECT queue, extract(epoch FROM now() - min(queued_at))::float8
           FROM jobs WHERE state = 'queued' GROUP BY queue",
    )
    .fetch_all(pool)
    .await?)
}
