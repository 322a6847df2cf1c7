//! Endpoints as the operator dashboard shows them, across tenants: status, breaker, and the
//! health of their last 100 attempts (success rate, median latency), read from the attempts'
//! per-endpoint index, so the cost follows the number of endpoints shown.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct EndpointHealth {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub mode: String,
    /// `http`, `slack`, `rabbitmq`, … (`crate::destinations`).
    pub kind: String,
    pub url: String,
    pub status: String,
    pub disabled_reason: Option<String>,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    pub consecutive_failures: i32,
    /// Of the last 100 attempts.
    pub attempts: i64,
    pub succeeded: i64,
    pub p50_ms: Option<f64>,
    pub last_attempt_at: Option<DateTime<Utc>>,
}

/// Endpoints (not deleted), unhealthy first, `limit` at most.
pub async fn endpoints(pool: &PgPool, limit: i64) -> Result<Vec<EndpointHealth>> {
    Ok(sqlx::query_as(
        "SELECT e.id, e.tenant_id, e.mode, e.kind, e.url, e.status, e.disabled_reason,
                COALESCE(g.breaker, 'closed') AS breaker, e.consecutive_failures,
                a.attempts, a.succeeded, a.p50_ms, a.last_attempt_at
           FROM webhook_endpoints e
           LEFT JOIN dispatch_groups g ON g.key = e.id
           CROSS JOIN LATERAL (
               SELECT count(*) AS attempts,
                      count(*) FILTER (WHERE error_class IS NULL) AS succeeded,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
                      max(created_at) AS last_attempt_at
                 FROM (SELECT error_class, duration_ms, created_at FROM webhook_attempts w
                        WHERE w.endpoint_id = e.id ORDER BY w.id DESC LIMIT 100) l) a
          WHERE e.deleted_at IS NULL
          ORDER BY (e.status = 'disabled') DESC, e.consecutive_failures DESC, e.created_at DESC
          LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
