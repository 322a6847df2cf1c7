//! Integrations: the external systems a tenant connects (ERP, MES, payment gateways, …), their
//! settings and their credentials (sealed one by one, see [`vault`]). What requests may say is
//! in [`input`]; checking a connection is [`connection`].

pub mod connection;
pub mod dashboard;
pub mod health;

pub use health::{DEFAULT_HEALTH_INTERVAL, health_interval};
pub mod input;
pub mod logs;
pub mod smtp;
pub mod sql;
pub mod vault;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::types::MaybeUndefined;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, PgPool, types::Json};
use url::Url;
use uuid::Uuid;

pub use input::{
    ConnectionStatus, CreateIntegration, IntegrationStatus, IntegrationType, UpdateIntegration,
};
use vault::CredentialInfo;

use crate::{
    audit::{self, Actor},
    crypto::Keyring,
    error::{Error, Result, is_unique_violation},
    tenants::Scope,
};

#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct Integration {
    pub id: Uuid,
    /// `live` or `test`, as the key that created it.
    pub mode: String,
    pub name: String,
    pub code: String,
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub kind: IntegrationType,
    pub provider: String,
    pub status: IntegrationStatus,
    #[oai(nullable)]
    pub base_url: Option<String>,
    pub config: BTreeMap<String, serde_json::Value>,
    /// The stored credentials by name: a fingerprint and the last four characters, never the
    /// value.
    pub credentials: BTreeMap<String, CredentialInfo>,
    /// Inbound webhook settings, if the integration receives webhooks.
    #[oai(nullable)]
    pub inbound: Option<crate::inbound::InboundView>,
    /// Where the system posts its webhooks (a path on this server): `/inbound/in_…`.
    #[oai(nullable)]
    pub inbound_url: Option<String>,
    /// What the last connection check found.
    pub connection_status: ConnectionStatus,
    #[oai(nullable)]
    pub last_health_check_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// Connection checks and calls made on the integration's behalf, and how many failed.
    pub calls_total: i64,
    pub failures_total: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct IntegrationRow {
    id: Uuid,
    mode: String,
    name: String,
    code: String,
    #[sqlx(rename = "type")]
    kind: IntegrationType,
    provider: String,
    status: IntegrationStatus,
    base_url: Option<String>,
    config: Json<BTreeMap<String, serde_json::Value>>,
    credentials: Json<BTreeMap<String, StoredInfo>>,
    inbound: Option<Json<crate::inbound::Stored>>,
    inbound_token: Option<String>,
    inbound_secrets: Json<Vec<StoredInfo>>,
    connection_status: ConnectionStatus,
    last_health_check_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    calls_total: i64,
    failures_total: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(serde::Deserialize)]
struct StoredInfo {
    fingerprint: String,
    last4: Option<String>,
    updated_at: DateTime<Utc>,
}

impl From<StoredInfo> for CredentialInfo {
    fn from(c: StoredInfo) -> Self {
        CredentialInfo {
            fingerprint: c.fingerprint,
            last4: c.last4,
            updated_at: c.updated_at,
        }
    }
}

impl From<IntegrationRow> for Integration {
    fn from(r: IntegrationRow) -> Self {
        let secrets = r
            .inbound_secrets
            .0
            .into_iter()
            .map(CredentialInfo::from)
            .collect();
        Integration {
            inbound: r
                .inbound
                .map(|i| crate::inbound::InboundView::new(i.0, secrets)),
            inbound_url: r.inbound_token.as_deref().map(crate::inbound::path),
            id: r.id,
            mode: r.mode,
            name: r.name,
            code: r.code,
            kind: r.kind,
            provider: r.provider,
            status: r.status,
            base_url: r.base_url,
            config: r.config.0,
            credentials: r
                .credentials
                .0
                .into_iter()
                .map(|(name, c)| (name, CredentialInfo::from(c)))
                .collect(),
            connection_status: r.connection_status,
            last_health_check_at: r.last_health_check_at,
            last_error: r.last_error,
            calls_total: r.calls_total,
            failures_total: r.failures_total,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const COLUMNS: &str = "i.id, i.mode, i.name, i.code, i.type, i.provider, i.status, i.base_url, \
    i.config, i.connection_status, i.last_health_check_at, i.last_error, i.calls_total, \
    i.failures_total, i.created_at, i.updated_at, i.inbound, i.inbound_token, \
    COALESCE((SELECT jsonb_object_agg(c.name, jsonb_build_object('fingerprint', c.fingerprint, \
                      'last4', c.last4, 'updated_at', c.updated_at)) \
                FROM integration_credentials c \
               WHERE c.integration_id = i.id AND c.name NOT LIKE 'inbound/%'), '{}') AS credentials, \
    COALESCE((SELECT jsonb_agg(jsonb_build_object('fingerprint', c.fingerprint, \
                      'last4', c.last4, 'updated_at', c.updated_at) ORDER BY c.name) \
                FROM integration_credentials c \
               WHERE c.integration_id = i.id AND c.name LIKE 'inbound/%'), '[]') AS inbound_secrets";

/// What a create or update may touch beyond the request: the keyring and pepper that seal
/// and fingerprint credentials, and who is acting (for the audit log).
pub struct Writer<'a> {
    pub keyring: &'a Keyring,
    pub pepper: &'a [u8],
    pub actor: &'a Actor,
}

/// Creates an integration on `conn` (the caller's transaction). `base_url` was vetted against
/// the egress rules beforehand (it may wait on DNS).
pub async fn create(
    conn: &mut PgConnection,
    w: &Writer<'_>,
    scope: Scope,
    base_url: Option<Url>,
    input: CreateIntegration,
) -> Result<Integration> {
    let config = input::check_config(input.config.unwrap_or_default())?;
    let credentials = input.credentials.unwrap_or_default();
    for name in credentials.keys() {
        input::credential_name(name)?;
    }
    let id = Uuid::now_v7();
    let status = input.status.unwrap_or(IntegrationStatus::Active);
    let interval_ms = health::interval_ms(&config);
    let inbound = match input.inbound {
        Some(i) => Some(crate::inbound::check(conn, scope, i).await?),
        None => None,
    };
    // The first scheduled check comes one interval after creation; `test` checks at once.
    let inserted = sqlx::query(
        "INSERT INTO integrations (id, tenant_id, mode, name, code, type, provider, status,
                                   base_url, config, health_interval_ms, next_health_check_at,
                                   inbound, inbound_token)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                 now() + make_interval(secs => $11 / 1000.0), $12, $13)",
    )
    .bind(id)
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(input.name.as_str())
    .bind(input.code.as_str())
    .bind(input.kind)
    .bind(input.provider.as_str())
    .bind(status)
    .bind(base_url.as_ref().map(Url::as_str))
    .bind(&config)
    .bind(interval_ms)
    .bind(inbound.as_ref().map(|(stored, _)| Json(stored)))
    .bind(inbound.as_ref().map(|_| crate::inbound::new_token()))
    .execute(&mut *conn)
    .await;
    if let Err(e) = inserted {
        return Err(code_taken(e, input.code.as_str()));
    }
    if let Some((_, secrets)) = &inbound {
        store_inbound_secrets(conn, w, scope, id, secrets).await?;
    }
    let names: Vec<&str> = credentials.keys().map(String::as_str).collect();
    let changes: Vec<(&str, Option<&str>)> = credentials
        .iter()
        .map(|(n, v)| (n.as_str(), Some(v.as_str())))
        .collect();
    store_credentials(conn, w, scope, id, &changes).await?;
    audit::record(
        conn,
        w.actor,
        audit::Entry {
            tenant_id: Some(scope.tenant_id),
            mode: Some(scope.mode),
            action: "integration.created",
            target_type: "integration",
            target_id: id,
            changes: serde_json::json!({
                "name": input.name.as_str(), "code": input.code.as_str(), "type": input.kind,
                "provider": input.provider.as_str(), "status": status,
                "base_url": base_url.as_ref().map(Url::as_str), "credentials_set": names,
                "inbound": inbound.as_ref().map(|(s, _)| s.rules.scheme),
            }),
        },
    )
    .await?;
    get(&mut *conn, scope, id).await
}

fn code_taken(e: sqlx::Error, code: &str) -> Error {
    if is_unique_violation(&e, "integrations_code_unique") {
        Error::conflict(
            "integration_code_taken",
            Some("code"),
            format!("An integration with code `{code}` already exists."),
        )
    } else {
        e.into()
    }
}

/// Replaces the inbound secrets (`inbound/0` = the newest); none = all removed.
async fn store_inbound_secrets(
    conn: &mut PgConnection,
    w: &Writer<'_>,
    scope: Scope,
    id: Uuid,
    secrets: &[String],
) -> Result<()> {
    sqlx::query(
        "DELETE FROM integration_credentials WHERE integration_id = $1 AND name LIKE 'inbound/%'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let names: Vec<String> = (0..secrets.len())
        .map(|i| format!("{}{i}", crate::inbound::SECRET_PREFIX))
        .collect();
    let changes: Vec<(&str, Option<&str>)> = names
        .iter()
        .zip(secrets)
        .map(|(n, s)| (n.as_str(), Some(s.as_str())))
        .collect();
    store_credentials(conn, w, scope, id, &changes).await
}

/// Seals and stores (`Some`) or deletes (`None`) named credentials.
async fn store_credentials(
    conn: &mut PgConnection,
    w: &Writer<'_>,
    scope: Scope,
    id: Uuid,
    changes: &[(&str, Option<&str>)],
) -> Result<()> {
    let sealed: Vec<vault::SealedCredential> = changes
        .iter()
        .filter_map(|(name, value)| {
            value.map(|v| vault::seal(w.keyring, w.pepper, scope, id, name, v))
        })
        .collect();
    let deleted: Vec<&str> = changes
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !deleted.is_empty() {
        sqlx::query(
            "DELETE FROM integration_credentials WHERE integration_id = $1 AND name = ANY($2)",
        )
        .bind(id)
        .bind(&deleted)
        .execute(&mut *conn)
        .await?;
    }
    if sealed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO integration_credentials (integration_id, tenant_id, name, key_id, sealed,
                                              fingerprint, last4, updated_at)
         SELECT $1, $2, * , now()
           FROM UNNEST($3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[])
         ON CONFLICT (integration_id, name) DO UPDATE
            SET key_id = EXCLUDED.key_id, sealed = EXCLUDED.sealed,
                fingerprint = EXCLUDED.fingerprint, last4 = EXCLUDED.last4,
                updated_at = EXCLUDED.updated_at",
    )
    .bind(id)
    .bind(scope.tenant_id)
    .bind(sealed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>())
    .bind(sealed.iter().map(|s| s.key_id.as_str()).collect::<Vec<_>>())
    .bind(
        sealed
            .iter()
            .map(|s| s.sealed.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(
        sealed
            .iter()
            .map(|s| s.fingerprint.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        sealed
            .iter()
            .map(|s| s.last4.as_deref())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies a partial update on `conn` (the caller's transaction). `base_url`: `None` = leave
/// it, `Some(None)` = remove it, `Some(Some(url))` = the new (vetted) address.
pub async fn update(
    conn: &mut PgConnection,
    w: &Writer<'_>,
    scope: Scope,
    id: Uuid,
    base_url: Option<Option<Url>>,
    input: UpdateIntegration,
) -> Result<Integration> {
    let config = input.config.map(input::check_config).transpose()?;
    let credentials = input.credentials.unwrap_or_default();
    for name in credentials.keys() {
        input::credential_name(name)?;
    }
    let inbound = match input.inbound {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(i) => Some(Some(crate::inbound::check(conn, scope, i).await?)),
    };
    let code = input.code.as_ref().map(|c| c.as_str());
    let updated = sqlx::query_scalar::<_, Uuid>(
        "UPDATE integrations
            SET name = COALESCE($4, name), code = COALESCE($5, code), type = COALESCE($6, type),
                provider = COALESCE($7, provider), status = COALESCE($8, status),
                base_url = CASE WHEN $9 THEN $10 ELSE base_url END,
                config = COALESCE($11, config),
                health_interval_ms = CASE WHEN $11 IS NULL THEN health_interval_ms ELSE $12 END,
                next_health_check_at = CASE WHEN $11 IS NULL THEN next_health_check_at
                                            ELSE now() + make_interval(secs => $12 / 1000.0) END,
                inbound = CASE WHEN $13 THEN $14 ELSE inbound END,
                inbound_token = CASE WHEN NOT $13 THEN inbound_token
                                     WHEN $14 IS NULL THEN NULL
                                     ELSE COALESCE(inbound_token, $15) END,
                updated_at = now()
          WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL
         RETURNING id",
    )
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .bind(input.name.as_ref().map(|n| n.as_str()))
    .bind(code)
    .bind(input.kind)
    .bind(input.provider.as_ref().map(|p| p.as_str()))
    .bind(input.status)
    .bind(base_url.is_some())
    .bind(base_url.as_ref().and_then(|u| u.as_ref().map(Url::as_str)))
    .bind(&config)
    .bind(config.as_ref().and_then(health::interval_ms))
    .bind(inbound.is_some())
    .bind(
        inbound
            .as_ref()
            .and_then(|i| i.as_ref().map(|(stored, _)| Json(stored))),
    )
    .bind(crate::inbound::new_token())
    .fetch_optional(&mut *conn)
    .await;
    match updated {
        Ok(Some(_)) => {}
        Ok(None) => return Err(Error::not_found("integration")),
        Err(e) => return Err(code_taken(e, code.unwrap_or_default())),
    }
    let changes: Vec<(&str, Option<&str>)> = credentials
        .iter()
        .map(|(n, v)| (n.as_str(), v.0.as_ref().map(|s| s.as_str())))
        .collect();
    for name in changes.iter().map(|c| c.0) {
        if name.starts_with(crate::inbound::SECRET_PREFIX) {
            return Err(Error::invalid(
                "parameter_invalid",
                format!("credentials.{name}"),
                "Inbound secrets are set with `inbound.secret`.",
            ));
        }
    }
    store_credentials(conn, w, scope, id, &changes).await?;
    if let Some(i) = &inbound {
        let secrets = i.as_ref().map(|(_, s)| s.as_slice()).unwrap_or_default();
        store_inbound_secrets(conn, w, scope, id, secrets).await?;
    }
    let set: Vec<&str> = changes
        .iter()
        .filter(|c| c.1.is_some())
        .map(|c| c.0)
        .collect();
    let deleted: Vec<&str> = changes
        .iter()
        .filter(|c| c.1.is_none())
        .map(|c| c.0)
        .collect();
    audit::record(
        conn,
        w.actor,
        audit::Entry {
            tenant_id: Some(scope.tenant_id),
            mode: Some(scope.mode),
            action: "integration.updated",
            target_type: "integration",
            target_id: id,
            changes: serde_json::json!({
                "name": input.name.as_ref().map(|n| n.as_str()), "code": code,
                "type": input.kind, "provider": input.provider.as_ref().map(|p| p.as_str()),
                "status": input.status,
                "base_url": base_url.as_ref().map(|u| u.as_ref().map(Url::as_str)),
                "config_replaced": config.is_some(),
                "inbound": inbound.as_ref().map(|i| i.as_ref().map(|(s, _)| s.rules.scheme)),
                "credentials_set": set, "credentials_deleted": deleted,
            }),
        },
    )
    .await?;
    get(&mut *conn, scope, id).await
}

/// Deletes the integration on `conn` (the caller's transaction): its credentials go at once,
/// its row stays (marked deleted) for what refers to it.
pub async fn delete(conn: &mut PgConnection, actor: &Actor, scope: Scope, id: Uuid) -> Result<()> {
    // Not while something uses it: its sync configurations would fail every run (and go with
    // it, their runs and conflicts too, when the deleted row is purged), its endpoints every
    // delivery.
    let users: Vec<String> = sqlx::query_scalar(
        "(SELECT 'sync configuration ' || c.id FROM sync_configurations c
           WHERE c.tenant_id = $1 AND (c.integration_id = $2 OR c.target_integration_id = $2)
           ORDER BY c.id LIMIT 5)
         UNION ALL
         (SELECT 'endpoint ' || e.id FROM webhook_endpoints e
           WHERE e.tenant_id = $1 AND e.deleted_at IS NULL
             AND e.config->>'integration_id' = $2::text
           ORDER BY e.id LIMIT 5)",
    )
    .bind(scope.tenant_id)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    if !users.is_empty() {
        return Err(Error::conflict(
            "integration_in_use",
            None,
            format!(
                "The integration is in use ({}); delete or change those first.",
                users.join(", ")
            ),
        ));
    }
    let n = sqlx::query(
        "UPDATE integrations SET deleted_at = now(), updated_at = now()
          WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL",
    )
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::not_found("integration"));
    }
    sqlx::query("DELETE FROM integration_credentials WHERE integration_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    audit::record(
        conn,
        actor,
        audit::Entry {
            tenant_id: Some(scope.tenant_id),
            mode: Some(scope.mode),
            action: "integration.deleted",
            target_type: "integration",
            target_id: id,
            changes: serde_json::json!({}),
        },
    )
    .await
}

pub async fn get<'e>(db: impl PgExecutor<'e>, scope: Scope, id: Uuid) -> Result<Integration> {
    sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM integrations i
          WHERE i.tenant_id = $1 AND i.id = $2 AND i.mode = $3 AND i.deleted_at IS NULL"
    )))
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .fetch_optional(db)
    .await?
    .map(Integration::from)
    .ok_or_else(|| Error::not_found("integration"))
}

/// Integrations of the tenant and mode, newest first.
pub async fn list(
    pool: &PgPool,
    scope: Scope,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<Integration>> {
    Ok(
        sqlx::query_as::<_, IntegrationRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM integrations i
          WHERE i.tenant_id = $1 AND i.mode = $4 AND i.deleted_at IS NULL
            AND ($3::uuid IS NULL OR i.id < $3)
          ORDER BY i.id DESC LIMIT $2"
        )))
        .bind(scope.tenant_id)
        .bind(limit)
        .bind(starting_after)
        .bind(scope.mode.as_str())
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(Integration::from)
        .collect(),
    )
}
