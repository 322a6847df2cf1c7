//! A configuration's statistics over time windows (`GET /v1/sync/configurations/{id}/stats`):
//! runs by outcome, rows by what they did, durations, and the last success and failure, from
//! its runs (kept for `SWITCHYARD_SYNC_RETENTION`, so the longest window is 30 days).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::config;
use crate::{
    error::{Error, Result},
    tenants::Scope,
};

/// One window's figures (runs counted by when they were created).
#[derive(Clone, Debug, Serialize, sqlx::FromRow, poem_openapi::Object)]
pub struct WindowStats {
    /// `1h`, `24h`, `7d` or `30d`.
    pub window: String,
    pub runs: i64,
    pub succeeded: i64,
    pub partial: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Pending or running now.
    pub active: i64,
    pub rows_read: i64,
    pub rows_inserted: i64,
    pub rows_updated: i64,
    pub rows_unchanged: i64,
    pub rows_deleted: i64,
    pub rows_failed: i64,
    /// Of finished runs, from start to finish.
    #[oai(nullable)]
    pub duration_ms_avg: Option<f64>,
    #[oai(nullable)]
    pub duration_ms_p95: Option<f64>,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct SyncStats {
    pub configuration_id: Uuid,
    pub windows: Vec<WindowStats>,
    #[oai(nullable)]
    pub last_succeeded_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub last_failed_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub last_error: Option<String>,
}

/// The statistics of configuration `id`: three statements over its runs.
pub async fn stats(pool: &PgPool, scope: Scope, id: Uuid) -> Result<SyncStats> {
    if !config::exists(pool, scope, id).await? {
        return Err(Error::not_found("sync configuration"));
    }
    let windows: Vec<WindowStats> = sqlx::query_as(
        "SELECT w.name AS window,
                count(r.id) AS runs,
                count(r.id) FILTER (WHERE r.status = 'succeeded') AS succeeded,
                count(r.id) FILTER (WHERE r.status = 'partial') AS partial,
                count(r.id) FILTER (WHERE r.status = 'failed') AS failed,
                count(r.id) FILTER (WHERE r.status = 'cancelled') AS cancelled,
                count(r.id) FILTER (WHERE r.status IN ('pending', 'running')) AS active,
                coalesce(sum(r.rows_read), 0)::bigint AS rows_read,
                coalesce(sum(r.rows_inserted), 0)::bigint AS rows_inserted,
                coalesce(sum(r.rows_updated), 0)::bigint AS rows_updated,
                coalesce(sum(r.rows_unchanged), 0)::bigint AS rows_unchanged,
                coalesce(sum(r.rows_deleted), 0)::bigint AS rows_deleted,
                coalesce(sum(r.rows_failed), 0)::bigint AS rows_failed,
                avg(r.ms) AS duration_ms_avg,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY r.ms) AS duration_ms_p95
           FROM (VALUES (1, '1h', interval '1 hour'), (2, '24h', interval '24 hours'),
                        (3, '7d', interval '7 days'), (4, '30d', interval '30 days'))
                AS w(n, name, span)
           LEFT JOIN (SELECT *, (extract(epoch FROM finished_at - started_at) * 1000)::float8 AS ms
                        FROM sync_runs WHERE configuration_id = $1
                         AND created_at > now() - interval '30 days') r
             ON r.created_at > now() - w.span
          GROUP BY w.n, w.name ORDER BY w.n",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let (last_succeeded_at, last_failed_at, last_error): (
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT max(finished_at) FILTER (WHERE status IN ('succeeded', 'partial')),
                max(finished_at) FILTER (WHERE status = 'failed'),
                (SELECT error FROM sync_runs WHERE configuration_id = $1 AND status = 'failed'
                  ORDER BY finished_at DESC LIMIT 1)
           FROM sync_runs WHERE configuration_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    Ok(SyncStats {
        configuration_id: id,
        windows,
        last_succeeded_at,
        last_failed_at,
        last_error,
    })
}
