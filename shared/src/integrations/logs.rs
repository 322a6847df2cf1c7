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
