//! Pausing a queue cluster-wide. A paused queue's jobs stay in the ledger: the dispatcher
//! leaves them out of its passes, claims refuse tasks already in Redis (the reconciler puts
//! those jobs back to `pending`), and fan-outs and hand-offs start none. Jobs running when the
//! pause lands finish. Every replica sees the row in its next statement, so dispatch stops
//! within one dispatch interval (100 ms by default); resuming takes effect as fast.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    error::Result,
};

/// Pauses `queue` for an operator, audited as `actor`'s; returns when it was paused.
pub async fn pause_audited(
    pool: &PgPool,
    actor: &Actor,
    queue: &str,
    by: &str,
) -> Result<DateTime<Utc>> {
    let mut tx = pool.begin().await?;
    let at = pause(&mut tx, queue, by).await?;
    audited(&mut tx, actor, queue, "queue.paused").await?;
    tx.commit().await?;
    Ok(at)
}

/// Resumes `queue` for an operator, audited as `actor`'s when it was paused.
pub async fn resume_audited(pool: &PgPool, actor: &Actor, queue: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    if resume(&mut tx, queue).await? {
        audited(&mut tx, actor, queue, "queue.resumed").await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The audit entry of a pause or resume; the target is the queue, by a name-based UUID, so
/// every entry of one queue shares its id.
async fn audited(conn: &mut PgConnection, actor: &Actor, queue: &str, action: &str) -> Result<()> {
    let target = Uuid::new_v5(&Uuid::NAMESPACE_OID, queue.as_bytes());
    let changes = serde_json::json!({ "queue": queue });
    audit::record_operator(conn, actor, "queue", target, action, changes).await
}

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
