//! Sync as the operator dashboard shows it, across tenants: configurations with their last
//! run, recent runs with their live counters, and open conflicts (resolved from the page with
//! [`super::conflicts::resolve`] in the conflict's own tenant and mode).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct ConfigurationRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub mode: String,
    pub name: String,
    pub entity: String,
    pub enabled: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_status: Option<String>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub open_conflicts: i64,
}

pub async fn configurations(pool: &PgPool, limit: i64) -> Result<Vec<ConfigurationRow>> {
    Ok(sqlx::query_as(
        "SELECT c.id, c.tenant_id, c.mode, c.name, c.entity, c.enabled, c.next_run_at,
                r.status AS last_status, r.finished_at AS last_finished_at,
                (SELECT count(*) FROM sync_conflicts x
                  WHERE x.configuration_id = c.id AND x.status = 'open') AS open_conflicts
           FROM sync_configurations c
           LEFT JOIN LATERAL (SELECT status, finished_at FROM sync_runs r
                               WHERE r.configuration_id = c.id
                               ORDER BY r.created_at DESC LIMIT 1) r ON true
          ORDER BY c.created_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub configuration_id: Uuid,
    pub status: String,
    pub trigger: String,
    pub rows_read: i64,
    pub rows_inserted: i64,
    pub rows_updated: i64,
    pub conflicts: i64,
    pub rows_failed: i64,
    pub job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// The newest runs (their counters move while they run).
pub async fn runs(pool: &PgPool, limit: i64) -> Result<Vec<RunRow>> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, configuration_id, status, trigger, rows_read, rows_inserted,
                rows_updated, conflicts, rows_failed, job_id, created_at, finished_at, error
           FROM sync_runs ORDER BY created_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct ConflictRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub configuration_id: Uuid,
    pub key: String,
    pub reason: String,
    pub fields: Vec<String>,
    pub source_data: Option<serde_json::Value>,
    pub target_data: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// Open conflicts, oldest first.
pub async fn open_conflicts(pool: &PgPool, limit: i64) -> Result<Vec<ConflictRow>> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, configuration_id, key, reason, fields, source_data, target_data,
                created_at
           FROM sync_conflicts WHERE status = 'open' ORDER BY created_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
