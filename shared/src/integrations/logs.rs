//! The integration's call log: every call made on its behalf and every inbound request,
//! newest first, with credential values redacted before they are written.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{error::Result, tenants::Scope};

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct IntegrationLog {
    pub id: Uuid,
    /// `outbound` (a call Switchyard made) or `inbound` (a request it received).
    pub direction: String,
    /// What made it: `connection_test`, `health_check`, `sync`, `inbound`.
    pub kind: String,
    #[oai(nullable)]
    pub method: Option<String>,
    /// The URL path (HTTP) or `host:port/database` (SQL).
    #[oai(nullable)]
    pub target: Option<String>,
    #[oai(nullable)]
    pub status_code: Option<i32>,
    pub ok: bool,
    pub duration_ms: i32,
    #[oai(nullable)]
    pub error: Option<String>,
    /// At most 2 KiB of each body, credential values redacted.
    #[oai(nullable)]
    pub request_body: Option<String>,
    #[oai(nullable)]
    pub response_body: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The log of one integration of the tenant and mode, newest first; `None` if there is no
/// such integration.
pub async fn list(
    pool: &PgPool,
    scope: Scope,
    integration_id: Uuid,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Option<Vec<IntegrationLog>>> {
    let exists: Option<bool> = sqlx::query_scalar(
        "SELECT true FROM integrations
          WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL",
    )
    .bind(scope.tenant_id)
    .bind(integration_id)
    .bind(scope.mode.as_str())
    .fetch_optional(pool)
    .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query_as::<_, IntegrationLog>(
        "SELECT id, direction, kind, method, target, status_code, ok, duration_ms, error,
                request_body, response_body, created_at
           FROM integration_logs
          WHERE integration_id = $1 AND ($3::uuid IS NULL OR id < $3)
          ORDER BY id DESC LIMIT $2",
    )
    .bind(integration_id)
    .bind(limit)
    .bind(starting_after)
    .fetch_all(pool)
    .await?;
    Ok(Some(rows))
}

/// A call made on an integration's behalf by something other than a connection check (a sync
/// run's reads, a preview), for its log. Messages are redacted by the caller.
pub struct SourceCall<'a> {
    pub integration_id: Uuid,
    pub tenant_id: Uuid,
    /// `sync`.
    pub kind: &'a str,
    /// `READ` (a run), `PREVIEW` (`delta`).
    pub method: &'a str,
    /// `host:port/database table`.
    pub target: Option<&'a str>,
    pub ok: bool,
    pub duration_ms: i64,
    pub error: Option<&'a str>,
    /// What came back, in a line (`1200 rows in 3 batches`).
    pub summary: Option<&'a str>,
}

/// Writes `call` to the integration's log (on the caller's transaction, or the pool).
pub async fn write<'e>(db: impl sqlx::PgExecutor<'e>, call: &SourceCall<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO integration_logs (id, integration_id, tenant_id, direction, kind, method,
                                       target, ok, duration_ms, error, response_body)
         VALUES ($1, $2, $3, 'outbound', $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(Uuid::now_v7())
    .bind(call.integration_id)
    .bind(call.tenant_id)
    .bind(call.kind)
    .bind(call.method)
    .bind(call.target)
    .bind(call.ok)
    .bind(call.duration_ms.clamp(0, i32::MAX as i64) as i32)
    .bind(call.error)
    .bind(call.summary)
    .execute(db)
    .await?;
    Ok(())
}
