//! Partner API keys: `sy_live_<key id>_<secret><checksum>` (DESIGN §3).
//!
//! The key id is public and indexes the row; the 36-character base62 secret (≈214 bits) is
//! never stored: the row keeps HMAC-SHA256(pepper, key), compared in constant time. The last six
//! characters are a CRC32 of the rest, so mistyped or made-up keys are rejected before any
//! database work.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    crypto::{base62_fixed, constant_time_eq, hmac_sha256, random_base62},
    error::{Error, Result},
};

const KEY_ID_LEN: usize = 12;
const SECRET_LEN: usize = 36;
const CHECK_LEN: usize = 6;

/// Every scope a partner key can hold.
pub const ALL_SCOPES: &[&str] = &[
    "orders:read",
    "orders:write",
    "webhooks:read",
    "webhooks:write",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Live,
    Test,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "live" => Ok(Mode::Live),
            "test" => Ok(Mode::Test),
            _ => Err(Error::invalid(
                "parameter_invalid",
                "mode",
                "`mode` must be `live` or `test`.",
            )),
        }
    }
}

/// A key as parsed from a request, before any database lookup.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub mode: Mode,
    pub key_id: &'a str,
}

/// Checks the shape and checksum of a presented key.
pub fn parse(key: &str) -> Option<ParsedKey<'_>> {
    let (mode, rest) = if let Some(r) = key.strip_prefix("sy_live_") {
        (Mode::Live, r)
    } else if let Some(r) = key.strip_prefix("sy_test_") {
        (Mode::Test, r)
    } else {
        return None;
    };
    let (key_id, tail) = rest.split_once('_')?;
    if key_id.len() != KEY_ID_LEN
        || tail.len() != SECRET_LEN + CHECK_LEN
        || !key_id.bytes().all(|b| b.is_ascii_alphanumeric())
        || !tail.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let (body, check) = key.split_at(key.len() - CHECK_LEN);
    if checksum(body) != check {
        return None;
    }
    Some(ParsedKey { mode, key_id })
}

fn checksum(body: &str) -> String {
    base62_fixed(u64::from(crc32fast::hash(body.as_bytes())), CHECK_LEN)
}

/// Mints a new key: returns `(key_id, full key)`.
pub fn generate(mode: Mode) -> (String, String) {
    let key_id = random_base62(KEY_ID_LEN);
    let body = format!(
        "sy_{}_{}_{}",
        mode.as_str(),
        key_id,
        random_base62(SECRET_LEN)
    );
    let key = format!("{body}{}", checksum(&body));
    (key_id, key)
}

pub fn hash(pepper: &[u8], key: &str) -> [u8; 32] {
    hmac_sha256(pepper, &[key.as_bytes()])
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for, 1 to 200 characters.
    pub name: String,
    /// Scopes granted; default: all partner scopes.
    pub scopes: Option<Vec<String>>,
    /// `live` (default) or `test`.
    pub mode: Option<String>,
    /// The key stops working at this time.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Stored key metadata (never the secret).
#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Public identifier embedded in the key (safe to log).
    pub key_id: String,
    pub mode: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub last4: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, tenant_id, key_id, mode, name, scopes, last4, created_at, expires_at, revoked_at";

/// What a request authenticated with an API key may act as.
#[derive(Clone, Debug)]
pub struct Principal {
    pub tenant_id: Uuid,
    pub api_key_id: Uuid,
    pub mode: Mode,
    pub scopes: Vec<String>,
}

impl Principal {
    pub fn require(&self, scope: &str) -> Result<()> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(Error::forbidden(
                "insufficient_scope",
                format!("This API key lacks the `{scope}` scope."),
            ))
        }
    }
}

/// A key as created: the only time the full key is shown.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    #[oai(flatten)]
    pub api_key: ApiKey,
    /// The full key; shown only in this response. Send it as `Authorization: Bearer <key>`.
    pub key: String,
}

pub fn validate_scopes(scopes: Option<Vec<String>>) -> Result<Vec<String>> {
    let scopes = scopes.unwrap_or_else(|| ALL_SCOPES.iter().map(|s| s.to_string()).collect());
    if scopes.is_empty() {
        return Err(Error::invalid(
            "parameter_invalid",
            "scopes",
            "`scopes` must name at least one scope.",
        ));
    }
    for (i, s) in scopes.iter().enumerate() {
        if !ALL_SCOPES.contains(&s.as_str()) {
            return Err(Error::invalid(
                "parameter_invalid",
                format!("scopes[{i}]"),
                format!(
                    "Unknown scope `{s}`; known scopes: {}.",
                    ALL_SCOPES.join(", ")
                ),
            ));
        }
    }
    let mut scopes = scopes;
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// Creates a key for `tenant_id`; the returned string is the only time the key exists in clear.
pub async fn create(
    pool: &PgPool,
    pepper: &[u8],
    tenant_id: Uuid,
    new: CreateApiKey,
) -> Result<CreatedApiKey> {
    let mode = Mode::parse(new.mode.as_deref().unwrap_or("live"))?;
    let name = new.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::invalid(
            "parameter_invalid",
            "name",
            "`name` must be 1 to 200 characters.",
        ));
    }
    let scopes = validate_scopes(new.scopes)?;
    if new.expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(Error::invalid(
            "parameter_invalid",
            "expires_at",
            "`expires_at` must be in the future.",
        ));
    }
    crate::tenants::get(pool, tenant_id).await?;
    let (key_id, key) = generate(mode);
    let row = sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, tenant_id, key_id, key_hash, mode, name, scopes, last4, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(&key_id)
    .bind(&hash(pepper, &key)[..])
    .bind(mode.as_str())
    .bind(name)
    .bind(&scopes)
    .bind(&key[key.len() - 4..])
    .bind(new.expires_at)
    .fetch_one(pool)
    .await?;
    Ok(CreatedApiKey { api_key: row, key })
}

#[derive(sqlx::FromRow)]
struct AuthRow {
    id: Uuid,
    tenant_id: Uuid,
    key_hash: Vec<u8>,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Resolves a presented key to its principal, or says precisely why not.
pub async fn authenticate(pool: &PgPool, pepper: &[u8], presented: &str) -> Result<Principal> {
    let parsed = parse(presented).ok_or_else(|| {
        Error::unauthenticated("invalid_api_key", "The API key is malformed or mistyped.")
    })?;
    let row = sqlx::query_as::<_, AuthRow>(
        "SELECT id, tenant_id, key_hash, scopes, expires_at, revoked_at FROM api_keys WHERE key_id = $1",
    )
    .bind(parsed.key_id)
    .fetch_optional(pool)
    .await?;
    let unknown = || Error::unauthenticated("invalid_api_key", "The API key is not valid.");
    let row = row.ok_or_else(unknown)?;
    if !constant_time_eq(&row.key_hash, &hash(pepper, presented)) {
        return Err(unknown());
    }
    if row.revoked_at.is_some() {
        return Err(Error::unauthenticated(
            "api_key_revoked",
            "The API key has been revoked.",
        ));
    }
    if row.expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(Error::unauthenticated(
            "api_key_expired",
            "The API key has expired.",
        ));
    }
    Ok(Principal {
        tenant_id: row.tenant_id,
        api_key_id: row.id,
        mode: parsed.mode,
        scopes: row.scopes,
    })
}

pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<ApiKey>> {
    Ok(sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND ($3::uuid IS NULL OR id < $3)
          ORDER BY id DESC LIMIT $2"
    )))
    .bind(tenant_id)
    .bind(limit)
    .bind(starting_after)
    .fetch_all(pool)
    .await?)
}

/// Revokes a key of `tenant_id` (idempotent: revoking twice keeps the first time).
pub async fn revoke(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<ApiKey> {
    sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
          WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::not_found("API key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_carry_their_mode() {
        for mode in [Mode::Live, Mode::Test] {
            let (key_id, key) = generate(mode);
            let parsed = parse(&key).expect("valid key parses");
            assert_eq!(parsed.mode, mode);
            assert_eq!(parsed.key_id, key_id);
            // id (12) + secret (36) + checksum (6) + "sy_live_" (8) + "_" (1)
            assert_eq!(key.len(), 63);
        }
    }

    #[test]
    fn mistyped_keys_fail_the_checksum() {
        let (_, key) = generate(Mode::Live);
        let mut bytes = key.into_bytes();
        let i = 20;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).unwrap();
        assert_eq!(parse(&typo), None);
        assert_eq!(parse("sy_live_short"), None);
        assert_eq!(parse("sk_live_123"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn hashes_depend_on_the_pepper() {
        assert_ne!(hash(b"pepper-one", "k"), hash(b"pepper-two", "k"));
    }

    #[test]
    fn scopes_are_checked_and_defaulted() {
        assert_eq!(validate_scopes(None).unwrap().len(), ALL_SCOPES.len());
        assert!(validate_scopes(Some(vec![])).is_err());
        let err = validate_scopes(Some(vec!["orders:read".into(), "root".into()])).unwrap_err();
        assert!(matches!(err, Error::Invalid { param: Some(p), .. } if p == "scopes[1]"));
    }
}
