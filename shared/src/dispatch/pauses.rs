//! Pausing a queue cluster-wide. A paused queue's jobs stay in the ledger: the dispatcher
//! leaves them out of its passes, claims refuse tasks already in Redis (the reconciler puts
//! those jobs back to `pending`), and fan-outs and hand-offs start none. Jobs running when the
//! pause lands finish. Every replica sees the row in its next statement, so dispatch stops
//! within one dispatch interval (100 ms by default); resuming takes effect as fast.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::error::Result;

/// Pauses `queue`; returns when it was paused (earlier, if it already was).
pub async fn pause(conn: &mut PgConnection, queue: &str, by: &str) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO queue_pauses (queue, paused_by) VALUES ($1, $2)
         ON CONFLICT (queue) DO UPDATE SET queue = EXCLUDED.queue
         RETURNING paused_at",
    )
    .bind(queue)
    .bind(by)
    .fetch_one(conn)
    .await?)
}

/// Resumes `queue`; returns whether it was paused.
pub async fn resume(conn: &mut PgConnection, queue: &str) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM queue_pauses WHERE queue = $1")
        .bind(queue)
        .execute(conn)
        .await?
        .rows_affected()
        > 0)
}

/// The paused queues, with when each was paused.
pub async fn paused(pool: &PgPool) -> Result<Vec<(String, DateTime<Utc>)>> {
    Ok(sqlx::query_as("SELECT queue, paused_at FROM queue_pauses")
        .fetch_all(pool)
        .await?)
}
