//! Integrations as the operator dashboard shows them, across tenants: connection status, the
//! last health check and its error, calls and failures.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct IntegrationRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub mode: String,
    pub name: String,
    pub r#type: String,
    pub provider: String,
    pub connection_status: String,
    pub last_health_check_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub calls_total: i64,
    pub failures_total: i64,
}

/// Integrations (not deleted), failing connections first.
pub async fn integrations(pool: &PgPool, limit: i64) -> Result<Vec<IntegrationRow>> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, mode, name, type, provider, connection_status,
                last_health_check_at, last_error, calls_total, failures_total
           FROM integrations WHERE deleted_at IS NULL
          ORDER BY (connection_status = 'error') DESC, created_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
