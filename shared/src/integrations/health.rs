//! One connection check of an integration, as `POST /v1/integrations/{id}/test` and the
//! scheduled health checks run it: open the credentials (audited), check, record the outcome,
//! and tell the tenant's operational endpoints when the connection breaks or comes back.

use std::time::Duration;

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

/// How often an integration's connection is checked when `config.health_interval` is unset.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(300);

/// `config.health_interval`: `None` = off (`0`), else between 30 s and 24 h.
pub fn health_interval(raw: Option<&str>) -> std::result::Result<Option<Duration>, String> {
    let Some(raw) = raw else {
        return Ok(Some(DEFAULT_HEALTH_INTERVAL));
    };
    let d = crate::duration::parse_duration(raw)?;
    if d.is_zero() {
        Ok(None)
    } else if (Duration::from_secs(30)..=Duration::from_secs(86_400)).contains(&d) {
        Ok(Some(d))
    } else {
        Err("must be `0` (off) or between 30s and 24h".to_owned())
    }
}

/// The scheduled-check interval of a (checked) config, in milliseconds; `None` = off.
pub(super) fn interval_ms(config: &serde_json::Value) -> Option<i32> {
    let raw = config.get("health_interval").and_then(|v| v.as_str());
    health_interval(raw)
        .ok()
        .flatten()
        .map(|d| d.as_millis() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_interval_defaults_turns_off_and_is_bounded() {
        assert_eq!(health_interval(None), Ok(Some(DEFAULT_HEALTH_INTERVAL)));
        assert_eq!(health_interval(Some("0")), Ok(None));
        assert_eq!(
            health_interval(Some("1m")),
            Ok(Some(Duration::from_secs(60)))
        );
        assert!(health_interval(Some("5s")).is_err());
        assert!(health_interval(Some("2d")).is_err());
        assert!(health_interval(Some("soon")).is_err());
    }
}
