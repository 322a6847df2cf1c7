//! Inbound webhooks as the operator dashboard shows them, across tenants: the newest received,
//! with verification, status and error (never their bodies or headers).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct InboundRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub status: String,
    pub verification: String,
    pub reason: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

/// The newest inbound events (ids are UUIDv7: newest by primary key).
pub async fn recent(pool: &PgPool, limit: i64) -> Result<Vec<InboundRow>> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, integration_id, status, verification, reason, attempts, last_error,
                received_at, processed_at
           FROM inbound_events ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
