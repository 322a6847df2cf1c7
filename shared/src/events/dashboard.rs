//! Events as the operator dashboard shows them, across tenants: the newest of the outbox with
//! their type, source and fan-out outcome (never their data).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub mode: String,
    pub r#type: String,
    pub source: String,
    pub ordering_key: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub fan_out_error: Option<String>,
}

/// The newest events (ids are UUIDv7: newest by primary key).
pub async fn recent(pool: &PgPool, limit: i64) -> Result<Vec<EventRow>> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, mode, type, source, ordering_key, occurred_at, fan_out_error
           FROM events ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
