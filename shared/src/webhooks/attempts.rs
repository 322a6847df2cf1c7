//! The attempt log of an endpoint, newest first.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct Attempt {
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub message_id: Uuid,
    /// The `webhook-id` header sent (stable across the attempts of a delivery).
    pub webhook_id: String,
    pub event_type: String,
    /// 1-based attempt number of the delivery.
    pub attempt: i32,
    /// The `webhook-timestamp` header sent with this attempt.
    pub webhook_timestamp: i64,
    /// The HTTP status; `null` for destinations that are not HTTP (brokers, SMTP) and for
    /// attempts that got no answer.
    #[oai(nullable)]
    pub status_code: Option<i32>,
    /// `dns`, `connect`, `tls`, `timeout`, `http_status`, `blocked_address`, `circuit_open`
    /// or `body_too_large`; for other destination kinds also `api_error` (Slack's `ok:
    /// false`), `broker` (a nack or a failed publish), `unroutable` (no queue bound),
    /// `smtp_rejected` (5xx), `smtp_deferred` (4xx), `template`, `config`, `integration` or
    /// `message`; `null` on success.
    #[oai(nullable)]
    pub error_class: Option<String>,
    #[oai(nullable)]
    pub error_message: Option<String>,
    /// Total time of the attempt.
    pub duration_ms: i32,
    /// Time until the response headers arrived.
    #[oai(nullable)]
    pub ttfb_ms: Option<i32>,
    /// Time spent opening a new connection (TCP + TLS); `null` when one was reused.
    #[oai(nullable)]
    pub connect_ms: Option<i32>,
    /// Address the request went to (after our own DNS resolution and checks).
    #[oai(nullable)]
    pub remote_ip: Option<String>,
    /// Request headers as sent, as `[name, value]` pairs; credentials are redacted.
    #[sqlx(json(nullable))]
    #[oai(nullable)]
    pub request_headers: Option<Vec<Vec<String>>>,
    /// Response headers as `[name, value]` pairs (at most 64, values cut at 1 KiB).
    #[sqlx(json(nullable))]
    #[oai(nullable)]
    pub response_headers: Option<Vec<Vec<String>>>,
    /// First 64 KiB of the response body (lossy UTF-8).
    #[oai(nullable)]
    pub response_body: Option<String>,
    /// Size of the whole response body in bytes, where known.
    #[oai(nullable)]
    pub response_size: Option<i64>,
    pub created_at: DateTime<Utc>,
}

const SELECT: &str = "SELECT a.id, a.delivery_id, a.message_id,
        'msg_' || replace(a.message_id::text, '-', '') AS webhook_id, m.event_type, a.attempt,
        a.webhook_timestamp, a.status_code, a.error_class, a.error_message, a.duration_ms,
        a.ttfb_ms, a.connect_ms, a.remote_ip, a.request_headers, a.response_headers,
        a.response_body, a.response_size, a.created_at
   FROM webhook_attempts a JOIN webhook_messages m ON m.id = a.message_id";

/// Attempts of an endpoint of `tenant_id`, newest first, after the cursor `starting_after`.
pub async fn list_for_endpoint(
    pool: &PgPool,
    tenant_id: Uuid,
    endpoint_id: Uuid,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<Attempt>> {
    Ok(sqlx::query_as::<_, Attempt>(sqlx::AssertSqlSafe(format!(
        "{SELECT}
          WHERE a.tenant_id = $1 AND a.endpoint_id = $2 AND ($4::uuid IS NULL OR a.id < $4)
          ORDER BY a.id DESC LIMIT $3"
    )))
    .bind(tenant_id)
    .bind(endpoint_id)
    .bind(limit)
    .bind(starting_after)
    .fetch_all(pool)
    .await?)
}

pub async fn get<'e>(db: impl sqlx::PgExecutor<'e>, tenant_id: Uuid, id: Uuid) -> Result<Attempt> {
    sqlx::query_as::<_, Attempt>(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE a.tenant_id = $1 AND a.id = $2"
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| Error::not_found("webhook attempt"))
}
