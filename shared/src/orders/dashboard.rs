//! Orders as the operator dashboard shows them, across tenants: the newest (one order's
//! history is read with [`super::history`] in the order's own tenant and mode).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub mode: String,
    pub external_id: String,
    pub provider: String,
    pub status: String,
    pub currency: String,
    pub total: i64,
    pub event_seq: i32,
    pub updated_at: DateTime<Utc>,
}

/// The newest orders (ids are UUIDv7: newest by primary key).
pub async fn recent(pool: &PgPool, limit: i64) -> Result<Vec<OrderRow>> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, mode, external_id, provider, status, currency, total, event_seq,
                updated_at
           FROM orders ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
