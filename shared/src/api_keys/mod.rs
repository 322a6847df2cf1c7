//! Partner API keys: `sy_live_<key id>_<secret><checksum>` (docs/architecture.md).
//!
//! The key id is public and indexes the row; the 36-character base62 secret (≈214 bits) is
//! never stored: the row keeps HMAC-SHA256(pepper, key), compared in constant time. The last six
//! characters are a checksum keyed with the server's pepper (a truncated HMAC, ≈36 bits), so a
//! mistyped or made-up key is rejected before any database work: nobody without the pepper can
//! mint a key that costs a lookup. Keys made before keyed checksums carry a CRC32 instead and are
//! accepted only for the key ids known to be that old ([`cache::KeyCache`] loads them once).
//! Authentication goes through [`cache::KeyCache`] (no database round trip once a key has been
//! seen); request counts through [`usage::UsageRecorder`].

pub mod cache;
pub mod changes;
pub mod dashboard;
pub mod input;
pub mod key_format;
pub mod usage;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

pub use self::{
    changes::{Granter, create, revoke, roll, update},
    input::{CreateApiKey, RollApiKey, UpdateApiKey},
    key_format::{ParsedKey, generate, hash, parse},
};
pub use crate::mode::Mode;
use crate::{
    audit::{self, Actor},
    error::{Error, Result},
    net::Cidr,
    rate_limit::Limit,
};

/// Every scope a partner key can hold. A `…:write` scope includes the matching `…:read`.
pub const ALL_SCOPES: &[&str] = &[
    "audit:read",
    "events:read",
    "events:write",
    "integrations:read",
    "integrations:write",
    "keys:read",
    "keys:write",
    "logs:read",
    "orders:read",
    "orders:write",
    "sync:read",
    "sync:write",
    "webhooks:read",
    "webhooks:write",
];

/// Scopes of a key created without a `scopes` list: the partner data plane, not key management.
pub const DEFAULT_SCOPES: &[&str] = &[
    "events:read",
    "events:write",
    "orders:read",
    "orders:write",
    "webhooks:read",
    "webhooks:write",
];

const MAX_CIDRS: usize = 50;
/// A scope as requests name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, poem_openapi::Enum)]
pub enum Scope {
    #[serde(rename = "audit:read")]
    #[oai(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "events:read")]
    #[oai(rename = "events:read")]
    EventsRead,
    #[serde(rename = "events:write")]
    #[oai(rename = "events:write")]
    EventsWrite,
    #[serde(rename = "integrations:read")]
    #[oai(rename = "integrations:read")]
    IntegrationsRead,
    #[serde(rename = "integrations:write")]
    #[oai(rename = "integrations:write")]
    IntegrationsWrite,
    #[serde(rename = "keys:read")]
    #[oai(rename = "keys:read")]
    KeysRead,
    #[serde(rename = "keys:write")]
    #[oai(rename = "keys:write")]
    KeysWrite,
    /// Request and error logs, and the key's rate-limit standing.
    #[serde(rename = "logs:read")]
    #[oai(rename = "logs:read")]
    LogsRead,
    #[serde(rename = "orders:read")]
    #[oai(rename = "orders:read")]
    OrdersRead,
    #[serde(rename = "orders:write")]
    #[oai(rename = "orders:write")]
    OrdersWrite,
    #[serde(rename = "sync:read")]
    #[oai(rename = "sync:read")]
    SyncRead,
    #[serde(rename = "sync:write")]
    #[oai(rename = "sync:write")]
    SyncWrite,
    #[serde(rename = "webhooks:read")]
    #[oai(rename = "webhooks:read")]
    WebhooksRead,
    #[serde(rename = "webhooks:write")]
    #[oai(rename = "webhooks:write")]
    WebhooksWrite,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::AuditRead => "audit:read",
            Scope::EventsRead => "events:read",
            Scope::EventsWrite => "events:write",
            Scope::IntegrationsRead => "integrations:read",
            Scope::IntegrationsWrite => "integrations:write",
            Scope::KeysRead => "keys:read",
            Scope::KeysWrite => "keys:write",
            Scope::LogsRead => "logs:read",
            Scope::OrdersRead => "orders:read",
            Scope::OrdersWrite => "orders:write",
            Scope::SyncRead => "sync:read",
            Scope::SyncWrite => "sync:write",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
        }
    }
}

/// Stored key metadata (never the secret).
#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Public identifier embedded in the key (safe to log).
    pub key_id: String,
    /// `live` or `test`.
    pub mode: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// Last four characters of the key, to tell keys apart.
    pub last4: String,
    pub allowed_cidrs: Vec<String>,
    /// `null`: the server default.
    #[oai(nullable)]
    pub rate_limit_per_minute: Option<i32>,
    /// `null`: the server default.
    #[oai(nullable)]
    pub rate_limit_per_hour: Option<i32>,
    /// The key this one replaced, when it was made by a roll.
    #[oai(nullable)]
    pub rolled_from: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub expires_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Updated every few seconds while the key is in use.
    #[oai(nullable)]
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, tenant_id, key_id, mode, name, scopes, last4, allowed_cidrs, \
    rate_limit_per_minute, rate_limit_per_hour, rolled_from, created_at, expires_at, revoked_at, \
    last_used_at";

/// What a request authenticated with an API key may act as.
#[derive(Clone, Debug)]
pub struct Principal {
    pub tenant_id: Uuid,
    pub api_key_id: Uuid,
    /// Public key id, for logs.
    pub key_id: String,
    pub mode: Mode,
    pub scopes: Vec<String>,
    pub allowed_cidrs: Vec<Cidr>,
    pub rate_limit_per_minute: Option<u32>,
    pub rate_limit_per_hour: Option<u32>,
    pub tenant_rate_limit_per_minute: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// The data this key sees.
    pub fn scope(&self) -> crate::tenants::Scope {
        crate::tenants::Scope {
            tenant_id: self.tenant_id,
            mode: self.mode,
        }
    }

    /// The rate limits a request with this key is charged against: the key's own, else the
    /// server's defaults.
    pub fn limits(&self, defaults: &crate::config::ApiConfig) -> Vec<Limit> {
        let quota = |own: Option<u32>, default: u32| own.unwrap_or(default).max(1);
        vec![
            Limit {
                name: "key-minute",
                subject: format!("key:{}", self.api_key_id),
                quota: quota(self.rate_limit_per_minute, defaults.rate_limit_per_minute),
                window_secs: 60,
            },
            Limit {
                name: "key-hour",
                subject: format!("key:{}", self.api_key_id),
                quota: quota(self.rate_limit_per_hour, defaults.rate_limit_per_hour),
                window_secs: 3600,
            },
            Limit {
                name: "tenant-minute",
                subject: format!("tenant:{}", self.tenant_id),
                quota: quota(
                    self.tenant_rate_limit_per_minute,
                    defaults.tenant_rate_limit_per_minute,
                ),
                window_secs: 60,
            },
        ]
    }

    /// True when the key holds `scope`, or the `…:write` scope that includes a `…:read` one.
    pub fn has(&self, scope: &str) -> bool {
        let write = scope
            .strip_suffix(":read")
            .map(|resource| format!("{resource}:write"));
        self.scopes
            .iter()
            .any(|s| s == scope || write.as_deref() == Some(s.as_str()))
    }

    /// Typed, so a misspelt scope is a compile error rather than a permanent 403.
    pub fn require(&self, scope: Scope) -> Result<()> {
        if self.has(scope.as_str()) {
            Ok(())
        } else {
            Err(Error::forbidden(
                "insufficient_scope",
                format!("This API key lacks the `{}` scope.", scope.as_str()),
            ))
        }
    }

    /// The audit actor for changes made with this key.
    pub fn actor(&self, request_id: Option<String>, ip: Option<String>) -> Actor {
        Actor {
            kind: audit::ActorKind::ApiKey(self.api_key_id),
            request_id,
            ip,
        }
    }
}

/// A key as created or rolled: the only time the full key is shown.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    #[oai(flatten)]
    pub api_key: ApiKey,
    /// The full key; shown only in this response. Send it as `Authorization: Bearer <key>`.
    pub key: String,
}

pub async fn get(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<ApiKey> {
    sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::not_found("API key"))
}

/// A tenant's keys, newest first; `mode` limits them to one mode (partner calls see their own).
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    mode: Option<Mode>,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<ApiKey>> {
    Ok(sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys
          WHERE tenant_id = $1 AND ($3::uuid IS NULL OR id < $3) AND ($4::text IS NULL OR mode = $4)
          ORDER BY id DESC LIMIT $2"
    )))
    .bind(tenant_id)
    .bind(limit)
    .bind(starting_after)
    .bind(mode.map(Mode::as_str))
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_named_as_the_list_says() {
        for s in ALL_SCOPES {
            let scope: Scope = serde_json::from_value(serde_json::json!(s)).unwrap();
            assert_eq!(scope.as_str(), *s);
        }
        assert_eq!(
            input::scope_names(None).unwrap().len(),
            DEFAULT_SCOPES.len()
        );
        assert!(input::scope_names(Some(vec![])).is_err());
    }
}
