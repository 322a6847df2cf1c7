//! The credential vault: each named credential of an integration is sealed on its own with
//! AES-256-GCM, its AAD binding tenant, integration and name, so a ciphertext moved to another
//! row or name fails to open. Values are opened only at the point of use, and every such open
//! is written to the audit log (who or which job, which credentials — never the values).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    crypto::{Keyring, hmac_sha256},
    error::{Error, Result},
    tenants::Scope,
};

/// What identifies where a credential is stored (AAD).
pub(crate) fn aad(tenant_id: Uuid, integration_id: Uuid, name: &str) -> Vec<u8> {
    format!("integration_credential|{integration_id}|{name}|{tenant_id}|v1").into_bytes()
}

/// A credential as sealed for storage.
pub struct SealedCredential {
    pub name: String,
    pub key_id: String,
    pub sealed: Vec<u8>,
    pub fingerprint: String,
    pub last4: Option<String>,
}

/// Seals `value` for `name` on the integration.
pub fn seal(
    keyring: &Keyring,
    pepper: &[u8],
    scope: Scope,
    integration_id: Uuid,
    name: &str,
    value: &str,
) -> SealedCredential {
    let (key_id, sealed) = keyring.seal(
        value.as_bytes(),
        &aad(scope.tenant_id, integration_id, name),
    );
    SealedCredential {
        name: name.to_owned(),
        key_id,
        sealed,
        fingerprint: fingerprint(pepper, value),
        last4: last4(value),
    }
}

/// A keyed digest that tells values apart: a plain hash of a short password could be
/// reversed by guessing, one keyed with the server's pepper cannot.
pub fn fingerprint(pepper: &[u8], value: &str) -> String {
    let mac = hmac_sha256(pepper, &[b"integration-credential|", value.as_bytes()]);
    let hex: String = mac[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("fp_{hex}")
}

/// The last four characters, only for values long enough (12+) that they give little away.
pub fn last4(value: &str) -> Option<String> {
    let chars: Vec<char> = value.chars().collect();
    (chars.len() >= 12).then(|| chars[chars.len() - 4..].iter().collect())
}

/// What responses show of a credential.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct CredentialInfo {
    /// A keyed digest of the value (`fp_…`): equal values have equal fingerprints.
    pub fingerprint: String,
    /// The value's last four characters, for values of 12 characters or more.
    #[oai(nullable)]
    pub last4: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Why credentials are opened, for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    ConnectionTest,
    HealthCheck,
    /// A sync run reading the integration's data.
    SyncRun,
    /// A preview of a sync configuration's next run (`delta`).
    SyncPreview,
    /// Deliveries of an email or HTTP-action destination (opened once a minute at most per
    /// endpoint and worker).
    Delivery,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::ConnectionTest => "connection_test",
            Purpose::HealthCheck => "health_check",
            Purpose::SyncRun => "sync_run",
            Purpose::SyncPreview => "sync_preview",
            Purpose::Delivery => "delivery",
        }
    }
}

/// Credentials opened for one use. `Debug` never shows values.
#[derive(Default)]
pub struct Opened(BTreeMap<String, String>);

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Opened {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every value, to redact them from what is logged.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }
}

/// A credential that is stored but cannot be opened: tampered with, copied from another row,
/// or sealed with a key no longer in the keyring. It is never used.
#[derive(Debug, thiserror::Error)]
#[error("credential `{name}` cannot be opened ({reason}); set it again")]
pub struct Unreadable {
    pub name: String,
    pub reason: String,
}

/// Opens every credential of the integration for `purpose`, writing the audit entry first.
/// A credential that fails to open fails the whole use (fail closed).
pub async fn open_for_use(
    pool: &PgPool,
    keyring: &Keyring,
    scope: Scope,
    integration_id: Uuid,
    actor: &Actor,
    purpose: Purpose,
) -> Result<std::result::Result<Opened, Unreadable>> {
    let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT name, key_id, sealed FROM integration_credentials
          WHERE integration_id = $1 AND tenant_id = $2 ORDER BY name",
    )
    .bind(integration_id)
    .bind(scope.tenant_id)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(Ok(Opened::default()));
    }
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let mut conn = pool.acquire().await?;
    audit::record(
        &mut conn,
        actor,
        audit::Entry {
            tenant_id: Some(scope.tenant_id),
            mode: Some(scope.mode),
            action: "integration.credentials_opened",
            target_type: "integration",
            target_id: integration_id,
            changes: serde_json::json!({ "credentials": names, "purpose": purpose.as_str() }),
        },
    )
    .await?;
    let mut opened = BTreeMap::new();
    for (name, key_id, sealed) in rows {
        let plain = match keyring.open(
            &key_id,
            &sealed,
            &aad(scope.tenant_id, integration_id, &name),
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(%integration_id, credential = %name, error = %e, "credential cannot be opened");
                return Ok(Err(Unreadable {
                    name,
                    reason: e.to_string(),
                }));
            }
        };
        let value = String::from_utf8(plain)
            .map_err(|_| Error::Internal(anyhow::anyhow!("credential `{name}` is not UTF-8")))?;
        opened.insert(name, value);
    }
    Ok(Ok(Opened(opened)))
}

/// Integration credentials, for keyring rotation (`crate::keyring`).
pub const SEALED_CREDENTIALS: crate::keyring::SealedKind = crate::keyring::SealedKind {
    name: "integration.credential",
    count_sql: "SELECT key_id, count(*) FROM integration_credentials GROUP BY 1",
    rekey: |pool, keyring, after, limit| Box::pin(rekey(pool, keyring, after, limit)),
};

/// Moves up to `limit` credentials after `after` (integration id, name) to the active key;
/// each changes only if it still holds what was read.
async fn rekey(
    pool: &PgPool,
    keyring: &Keyring,
    after: crate::keyring::Cursor,
    limit: i64,
) -> Result<crate::keyring::Batch> {
    let rows: Vec<(Uuid, String, Uuid, String, Vec<u8>)> = sqlx::query_as(
        "SELECT integration_id, name, tenant_id, key_id, sealed FROM integration_credentials
          WHERE key_id <> $1 AND (integration_id, name) > ($2, $3)
          ORDER BY integration_id, name LIMIT $4",
    )
    .bind(keyring.active_key_id())
    .bind(after.0)
    .bind(&after.1)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut batch = crate::keyring::Batch {
        next: (rows.len() as i64 == limit).then(|| {
            let last = &rows[rows.len() - 1];
            (last.0, last.1.clone())
        }),
        ..Default::default()
    };
    let (mut ids, mut names, mut kids, mut cts, mut old) = (vec![], vec![], vec![], vec![], vec![]);
    for (integration_id, name, tenant_id, key_id, sealed) in rows {
        let aad = aad(tenant_id, integration_id, &name);
        match crate::keyring::reseal(keyring, &key_id, &sealed, &aad) {
            Some((kid, ct)) => {
                ids.push(integration_id);
                names.push(name);
                kids.push(kid);
                cts.push(ct);
                old.push(sealed);
            }
            None => batch.unreadable += 1,
        }
    }
    if !ids.is_empty() {
        batch.rotated = sqlx::query(
            "UPDATE integration_credentials c SET key_id = u.kid, sealed = u.ct
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::bytea[])
                    AS u(id, name, kid, ct, old)
              WHERE c.integration_id = u.id AND c.name = u.name AND c.sealed = u.old",
        )
        .bind(&ids)
        .bind(&names)
        .bind(&kids)
        .bind(&cts)
        .bind(&old)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::Mode;

    fn scope() -> Scope {
        Scope {
            tenant_id: Uuid::now_v7(),
            mode: Mode::Live,
        }
    }

    #[test]
    fn sealed_credentials_open_only_where_they_were_sealed() {
        let ring = Keyring::parse(&Keyring::generate_spec()).unwrap();
        let s = scope();
        let id = Uuid::now_v7();
        let c = seal(&ring, b"pepper", s, id, "password", "hunter2-is-long");
        assert_eq!(
            ring.open(&c.key_id, &c.sealed, &aad(s.tenant_id, id, "password"))
                .unwrap(),
            b"hunter2-is-long"
        );
        // Another name, another integration, another tenant: each is a different AAD.
        assert!(
            ring.open(&c.key_id, &c.sealed, &aad(s.tenant_id, id, "api_key"))
                .is_err()
        );
        assert!(
            ring.open(
                &c.key_id,
                &c.sealed,
                &aad(s.tenant_id, Uuid::now_v7(), "password")
            )
            .is_err()
        );
        assert!(
            ring.open(&c.key_id, &c.sealed, &aad(Uuid::now_v7(), id, "password"))
                .is_err()
        );
        // One flipped bit anywhere fails authentication.
        let mut tampered = c.sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(
            ring.open(&c.key_id, &tampered, &aad(s.tenant_id, id, "password"))
                .is_err()
        );
    }

    #[test]
    fn fingerprints_are_keyed_and_last4_is_shown_only_for_long_values() {
        assert_eq!(fingerprint(b"a", "x"), fingerprint(b"a", "x"));
        assert_ne!(fingerprint(b"a", "x"), fingerprint(b"b", "x"));
        assert!(fingerprint(b"a", "x").starts_with("fp_"));
        assert_eq!(last4("short"), None);
        assert_eq!(last4("sk_live_abcdefgh1234").as_deref(), Some("1234"));
    }
}
