//! One connection check of an integration, as `POST /v1/integrations/{id}/test` and the
//! scheduled health checks run it: open the credentials (audited), check, record the outcome,
//! and tell the tenant's operational endpoints when the connection breaks or comes back.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    ConnectionStatus,
    connection::{self, Call, CheckResult, Checker, Transition},
    get,
    vault::{self, Purpose},
};
use crate::{
    audit::Actor,
    crypto::Keyring,
    error::Result,
    events::{Audience, NewEvent, Source, insert_one},
    queue::JobTask,
    tenants::Scope,
};

/// Checks the integration now. Returns the result, and the fan-out task of the
/// `integration.unhealthy` / `integration.recovered` event it emitted, if any (push it).
pub async fn check_now(
    pool: &PgPool,
    keyring: &Keyring,
    checker: &Checker,
    scope: Scope,
    id: Uuid,
    actor: &Actor,
    purpose: Purpose,
) -> Result<(CheckResult, Option<JobTask>)> {
    let integration = get(pool, scope, id).await?;
    let (result, call) = match vault::open_for_use(pool, keyring, scope, id, actor, purpose).await?
    {
        Ok(credentials) => checker.check(&integration, &credentials).await,
        Err(unreadable) => (
            CheckResult {
                ok: false,
                latency_ms: 0,
                status_code: None,
                error: Some(unreadable.to_string()),
                checked_at: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6),
            },
            Call {
                method: None,
                target: None,
                response_body: None,
            },
        ),
    };
    let transition = connection::record(pool, id, purpose.as_str(), &result, &call).await?;
    let event_type = match transition {
        Some(Transition {
            from,
            to: ConnectionStatus::Error,
        }) if from != ConnectionStatus::Error => "integration.unhealthy",
        Some(Transition {
            from: ConnectionStatus::Error,
            to: ConnectionStatus::Connected,
        }) => "integration.recovered",
        _ => return Ok((result, None)),
    };
    let mut event = NewEvent::new(
        scope.tenant_id,
        scope.mode,
        event_type,
        json!({
            "integration_id": id, "code": integration.code, "name": integration.name,
            "provider": integration.provider, "error": result.error,
            "checked_at": result.checked_at,
        }),
        Source::Integration,
        result.checked_at,
    );
    event.audience = Audience::Operational;
    // An integration's notices reach each endpoint in the order they happened.
    event.ordering_key = Some(id.to_string());
    let task = insert_one(pool, &event).await?;
    Ok((result, Some(task)))
}

/// Claims up to `limit` integrations whose scheduled check is due, moving each one interval on
/// (so a concurrent run does not take them too). Returns their ids and scopes.
pub async fn claim_due(pool: &PgPool, limit: i64) -> Result<Vec<(Uuid, Scope)>> {
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "UPDATE integrations i
            SET next_health_check_at = now() + make_interval(secs => i.health_interval_ms / 1000.0)
           FROM (SELECT id FROM integrations
                  WHERE deleted_at IS NULL AND health_interval_ms IS NOT NULL
                    AND status <> 'inactive' AND next_health_check_at <= now()
                  ORDER BY next_health_check_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
          WHERE i.id = due.id
         RETURNING i.id, i.tenant_id, i.mode",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, tenant_id, mode)| {
            Ok((
                id,
                Scope {
                    tenant_id,
                    mode: crate::mode::Mode::parse(&mode)?,
                },
            ))
        })
        .collect()
}
