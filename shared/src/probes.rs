//! Queue probes: jobs that do nothing, so what they cost is the queue path alone — the ledger
//! insert, a dispatch pass, Redis, the claim and the finish — the floor under every job kind.
//! `switchyard-bench --queue-floor` measures it beside raw apalis-redis in the same run
//! (docs/benchmarks.md).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{error::Result, jobs::insert_jobs_from_sql, queue::QUEUE_PROBES};

/// Runs a probe gets: it only fails if Postgres does.
pub const MAX_ATTEMPTS: i32 = 3;
/// Most probes one call enqueues.
pub const MAX_PROBES: usize = 1_000_000;

/// A batch of probes as the ledger sees it.
#[derive(Debug, sqlx::FromRow)]
pub struct Progress {
    pub jobs: i64,
    pub succeeded: i64,
    /// When they were enqueued, and when the last one finished (the database's clock).
    pub enqueued_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
}

/// Inserts `n` probes (at most [`MAX_PROBES`]) in one statement, `pending` and due now, so the
/// dispatcher takes them as it takes any backlog; their subject is the returned batch id.
pub async fn enqueue(pool: &PgPool, n: usize) -> Result<Uuid> {
    let batch = Uuid::now_v7();
    let ids: Vec<Uuid> = (0..n.min(MAX_PROBES)).map(|_| Uuid::now_v7()).collect();
    sqlx::query(insert_jobs_from_sql!(
        "SELECT id, $1, $2, $3, $4, NULL, now(), 'pending', 0, NULL, NULL
           FROM UNNEST($5::uuid[]) AS t(id)"
    ))
    .bind(QUEUE_PROBES)
    .bind(Uuid::nil())
    .bind(batch)
    .bind(MAX_ATTEMPTS)
    .bind(&ids)
    .execute(pool)
    .await?;
    Ok(batch)
}

/// How far the probes of `batch` got.
pub async fn progress(pool: &PgPool, batch: Uuid) -> Result<Progress> {
    Ok(sqlx::query_as::<_, Progress>(
        "SELECT count(*) AS jobs, count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
                min(created_at) AS enqueued_at, max(finished_at) AS last_finished_at
           FROM jobs WHERE queue = $1 AND subject_id = $2",
    )
    .bind(QUEUE_PROBES)
    .bind(batch)
    .fetch_one(pool)
    .await?)
}
