//! API keys as the operator dashboard shows them, across tenants: name, mode, scopes, expiry,
//! revocation, last use, and requests and errors over the last 24 hours (never a key).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct KeyRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub key_id: String,
    pub name: String,
    pub mode: String,
    pub scopes: Vec<String>,
    pub last4: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub requests_day: i64,
    pub errors_day: i64,
}

/// Keys, newest first, with their usage over the last day.
pub async fn keys(pool: &PgPool, limit: i64) -> Result<Vec<KeyRow>> {
    Ok(sqlx::query_as(
        "SELECT k.id, k.tenant_id, k.key_id, k.name, k.mode, k.scopes, k.last4, k.created_at,
                k.expires_at, k.revoked_at, k.last_used_at,
                COALESCE(u.requests, 0)::int8 AS requests_day, COALESCE(u.errors, 0)::int8 AS errors_day
           FROM api_keys k
           LEFT JOIN LATERAL (SELECT sum(requests) AS requests, sum(errors) AS errors
                                FROM api_key_usage u
                               WHERE u.api_key_id = k.id AND u.hour > now() - interval '1 day') u
                  ON true
          ORDER BY k.created_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
