//! The worker registry: each worker process reports itself every few seconds (its identity,
//! the queues it consumes and how busy it is), so operators see the pool
//! (`GET /admin/v1/workers`). Reporting is one upsert per process per interval, off every job's
//! path; a process that stops cleanly records when.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, types::Json};

use crate::error::Result;

/// How often a worker reports.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A worker silent for this long is shown as `lost`.
pub const LOST_AFTER: Duration = Duration::from_secs(30);

/// A queue a worker consumes, and how many of its jobs it runs at once.
#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
pub struct QueueConsumer {
    pub queue: String,
    pub concurrency: u32,
}

/// What a worker process says of itself.
#[derive(Clone, Debug)]
pub struct Identity {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub queues: Vec<QueueConsumer>,
}

/// Records (or refreshes) `worker`'s report: `busy` jobs running now.
pub async fn report(pool: &PgPool, worker: &Identity, busy: usize) -> Result<()> {
    sqlx::query(
        "INSERT INTO workers (id, host, pid, version, queues, busy)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET busy = EXCLUDED.busy, last_seen_at = now()",
    )
    .bind(&worker.id)
    .bind(&worker.host)
    .bind(i32::try_from(worker.pid).unwrap_or(i32::MAX))
    .bind(&worker.version)
    .bind(Json(&worker.queues))
    .bind(i32::try_from(busy).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that worker `id` stopped cleanly.
pub async fn stopped(pool: &PgPool, id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE workers SET stopped_at = now(), busy = 0, last_seen_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Where a worker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Reported within the last 30 seconds.
    Running,
    /// Stopped cleanly (its unfinished jobs were handed back).
    Stopped,
    /// Silent for 30 seconds without saying it stopped (killed, frozen, cut off): its jobs come
    /// back when their leases expire.
    Lost,
}

/// One worker process.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct Worker {
    /// The process's identity (`host-pid-nonce`), as its leases name it.
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub status: WorkerStatus,
    pub queues: Vec<QueueConsumer>,
    /// Jobs running at its last report.
    pub busy: u32,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    #[oai(nullable)]
    pub stopped_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    host: String,
    pid: i32,
    version: String,
    queues: Json<Vec<QueueConsumer>>,
    busy: i32,
    started_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    stopped_at: Option<DateTime<Utc>>,
    lost: bool,
}

/// Workers seen within `window`, running ones first, then by last report.
pub async fn list(pool: &PgPool, window: Duration) -> Result<Vec<Worker>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, host, pid, version, queues, busy, started_at, last_seen_at, stopped_at,
                last_seen_at < now() - make_interval(secs => $2) AS lost
           FROM workers WHERE last_seen_at >= now() - make_interval(secs => $1)
          ORDER BY (stopped_at IS NULL) DESC, last_seen_at DESC, id LIMIT 1000",
    )
    .bind(window.as_secs_f64())
    .bind(LOST_AFTER.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Worker {
            status: match (r.stopped_at.is_some(), r.lost) {
                (true, _) => WorkerStatus::Stopped,
                (false, true) => WorkerStatus::Lost,
                (false, false) => WorkerStatus::Running,
            },
            id: r.id,
            host: r.host,
            pid: r.pid.max(0) as u32,
            version: r.version,
            queues: r.queues.0,
            busy: r.busy.max(0) as u32,
            started_at: r.started_at,
            last_seen_at: r.last_seen_at,
            stopped_at: r.stopped_at,
        })
        .collect())
}
