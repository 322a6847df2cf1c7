//! Partner API keys: `sy_live_<key id>_<secret><checksum>` (DESIGN §3).
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
pub mod usage;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    crypto::{base62_fixed, hmac_sha256, random_base62},
    error::{Error, Result},
    net::Cidr,
};

const KEY_ID_LEN: usize = 12;
const SECRET_LEN: usize = 36;
const CHECK_LEN: usize = 6;

/// Every scope a partner key can hold. A `…:write` scope includes the matching `…:read`.
pub const ALL_SCOPES: &[&str] = &[
    "audit:read",
    "integrations:read",
    "integrations:write",
    "keys:read",
    "keys:write",
    "orders:read",
    "orders:write",
    "sync:read",
    "sync:write",
    "webhooks:read",
    "webhooks:write",
];

/// Scopes of a key created without a `scopes` list: the partner data plane, not key management.
pub const DEFAULT_SCOPES: &[&str] = &[
    "orders:read",
    "orders:write",
    "webhooks:read",
    "webhooks:write",
];

/// Longest grace period of a rolled key.
pub const MAX_ROLL_GRACE_SECONDS: i64 = 7 * 24 * 3600;
/// Highest configurable per-key limit (requests per minute or per hour).
pub const MAX_RATE_LIMIT: i32 = 10_000_000;
const MAX_CIDRS: usize = 50;

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
    /// The key carries a CRC32 checksum from before keyed checksums: it is only valid if its
    /// key id is one of those legacy keys.
    pub legacy: bool,
}

/// Checks the shape and checksum of a presented key: the keyed checksum, or a legacy CRC32.
pub fn parse<'a>(pepper: &[u8], key: &'a str) -> Option<ParsedKey<'a>> {
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
    let legacy =
        if crate::crypto::constant_time_eq(checksum(pepper, body).as_bytes(), check.as_bytes()) {
            false
        } else if legacy_checksum(body) == check {
            true
        } else {
            return None;
        };
    Some(ParsedKey {
        mode,
        key_id,
        legacy,
    })
}

/// The keyed checksum: HMAC-SHA256 under a key derived from the pepper, truncated to six
/// base62 characters.
fn checksum(pepper: &[u8], body: &str) -> String {
    let key = hmac_sha256(pepper, &[b"switchyard api key checksum v2"]);
    let mac = hmac_sha256(&key, &[body.as_bytes()]);
    let n = u64::from_be_bytes(mac[..8].try_into().expect("8 bytes"));
    base62_fixed(n, CHECK_LEN)
}

/// The unkeyed CRC32 checksum of keys made before keyed checksums.
fn legacy_checksum(body: &str) -> String {
    base62_fixed(u64::from(crc32fast::hash(body.as_bytes())), CHECK_LEN)
}

/// Mints a new key: returns `(key_id, full key)`.
pub fn generate(pepper: &[u8], mode: Mode) -> (String, String) {
    let key_id = random_base62(KEY_ID_LEN);
    let body = format!(
        "sy_{}_{}_{}",
        mode.as_str(),
        key_id,
        random_base62(SECRET_LEN)
    );
    let key = format!("{body}{}", checksum(pepper, &body));
    (key_id, key)
}

pub fn hash(pepper: &[u8], key: &str) -> [u8; 32] {
    hmac_sha256(pepper, &[key.as_bytes()])
}

#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for, 1 to 200 characters.
    pub name: String,
    /// Scopes granted; default: `orders:read`, `orders:write`, `webhooks:read`, `webhooks:write`.
    /// A `…:write` scope includes the matching `…:read`.
    pub scopes: Option<Vec<String>>,
    /// `live` (default) or `test`. Test keys see only test data.
    pub mode: Option<String>,
    /// The key stops working at this time.
    pub expires_at: Option<DateTime<Utc>>,
    /// CIDR blocks (IPv4 or IPv6) the key may be used from; empty or absent = anywhere.
    pub allowed_cidrs: Option<Vec<String>>,
    /// Requests per minute for this key; default: the server's.
    pub rate_limit_per_minute: Option<i32>,
    /// Requests per hour for this key; default: the server's.
    pub rate_limit_per_hour: Option<i32>,
}

/// A change to a key's settings; absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct UpdateApiKey {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// Replaces the allowlist; `[]` allows any address.
    pub allowed_cidrs: Option<Vec<String>>,
    /// `0` returns to the server default.
    pub rate_limit_per_minute: Option<i32>,
    /// `0` returns to the server default.
    pub rate_limit_per_hour: Option<i32>,
}

/// Rolling a key: a new key with the same settings; the old one keeps working for the grace
/// period.
#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct RollApiKey {
    /// Seconds the old key keeps working, 0 to 604800 (7 days); default 86400 (24 h).
    pub grace_period_seconds: Option<i64>,
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
    pub rate_limit_per_minute: Option<i32>,
    /// `null`: the server default.
    pub rate_limit_per_hour: Option<i32>,
    /// The key this one replaced, when it was made by a roll.
    pub rolled_from: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Updated every few seconds while the key is in use.
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
}

impl Principal {
    /// The data this key sees.
    pub fn scope(&self) -> crate::tenants::Scope {
        crate::tenants::Scope {
            tenant_id: self.tenant_id,
            mode: self.mode,
        }
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

    pub fn require(&self, scope: &str) -> Result<()> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(Error::forbidden(
                "insufficient_scope",
                format!("This API key lacks the `{scope}` scope."),
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

pub fn validate_scopes(scopes: Option<Vec<String>>) -> Result<Vec<String>> {
    let scopes = scopes.unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect());
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

fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::invalid(
            "parameter_invalid",
            "name",
            "`name` must be 1 to 200 characters.",
        ));
    }
    Ok(name.to_owned())
}

/// Parses and normalises an allowlist (`203.0.113.7/24` is stored as `203.0.113.0/24`).
pub fn validate_cidrs(cidrs: Vec<String>) -> Result<Vec<String>> {
    if cidrs.len() > MAX_CIDRS {
        return Err(Error::invalid(
            "parameter_invalid",
            "allowed_cidrs",
            format!("`allowed_cidrs` holds at most {MAX_CIDRS} blocks."),
        ));
    }
    let mut out = Vec::with_capacity(cidrs.len());
    for (i, c) in cidrs.iter().enumerate() {
        let cidr = Cidr::parse(c).ok_or_else(|| {
            Error::invalid(
                "parameter_invalid",
                format!("allowed_cidrs[{i}]"),
                format!("`{c}` is not an IPv4 or IPv6 address or CIDR block (`203.0.113.0/24`)."),
            )
        })?;
        out.push(cidr.to_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// `None` stays `None`; `Some(0)` means "server default" on updates.
fn validate_limit(param: &str, value: Option<i32>, zero_resets: bool) -> Result<Option<i32>> {
    match value {
        None => Ok(None),
        Some(0) if zero_resets => Ok(Some(0)),
        Some(n) if (1..=MAX_RATE_LIMIT).contains(&n) => Ok(Some(n)),
        Some(_) => Err(Error::invalid(
            "parameter_invalid",
            param,
            format!("`{param}` must be between 1 and {MAX_RATE_LIMIT}."),
        )),
    }
}

/// Who may create or change a key: operators anything; a partner key only keys of its own mode
/// whose every scope it holds itself (no escalation through `keys:write`: a key cannot create,
/// change, roll or revoke a key stronger than itself).
#[derive(Clone, Copy, Debug)]
pub enum Granter<'a> {
    Admin,
    Key(&'a Principal),
}

impl Granter<'_> {
    fn check(&self, mode: Mode, scopes: &[String]) -> Result<()> {
        let Granter::Key(p) = self else {
            return Ok(());
        };
        if p.mode != mode {
            return Err(Error::forbidden(
                "mode_mismatch",
                format!(
                    "A {} key can only manage {} keys.",
                    p.mode.as_str(),
                    p.mode.as_str()
                ),
            ));
        }
        if let Some(s) = scopes.iter().find(|s| !p.has(s)) {
            return Err(Error::forbidden(
                "insufficient_scope",
                format!("This API key cannot grant `{s}`, which it does not hold itself."),
            ));
        }
        Ok(())
    }
}

/// Creates a key for `tenant_id` on `conn` (the caller's transaction); the returned string is
/// the only time the key exists in clear.
pub async fn create(
    conn: &mut PgConnection,
    pepper: &[u8],
    granter: Granter<'_>,
    actor: &Actor,
    tenant_id: Uuid,
    new: CreateApiKey,
) -> Result<CreatedApiKey> {
    let mode = Mode::parse(new.mode.as_deref().unwrap_or("live"))?;
    let name = validate_name(&new.name)?;
    let scopes = validate_scopes(new.scopes)?;
    if new.expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(Error::invalid(
            "parameter_invalid",
            "expires_at",
            "`expires_at` must be in the future.",
        ));
    }
    let cidrs = validate_cidrs(new.allowed_cidrs.unwrap_or_default())?;
    let per_minute = validate_limit("rate_limit_per_minute", new.rate_limit_per_minute, false)?;
    let per_hour = validate_limit("rate_limit_per_hour", new.rate_limit_per_hour, false)?;
    granter.check(mode, &scopes)?;
    crate::tenants::get(&mut *conn, tenant_id).await?;
    let (key_id, key) = generate(pepper, mode);
    let row = sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, tenant_id, key_id, key_hash, mode, name, scopes, last4,
                               expires_at, allowed_cidrs, rate_limit_per_minute, rate_limit_per_hour)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {COLUMNS}"
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
    .bind(&cidrs)
    .bind(per_minute)
    .bind(per_hour)
    .fetch_one(&mut *conn)
    .await?;
    audit::record(
        conn,
        actor,
        audit::Entry {
            tenant_id: Some(tenant_id),
            mode: Some(mode),
            action: "api_key.created",
            target_type: "api_key",
            target_id: row.id,
            changes: serde_json::json!({
                "name": row.name, "mode": row.mode, "scopes": row.scopes,
                "expires_at": row.expires_at, "allowed_cidrs": row.allowed_cidrs,
                "rate_limit_per_minute": row.rate_limit_per_minute,
                "rate_limit_per_hour": row.rate_limit_per_hour,
            }),
        },
    )
    .await?;
    Ok(CreatedApiKey { api_key: row, key })
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

/// Locks a key of `tenant_id` for a change (`mode` as for [`list`]).
async fn lock(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    mode: Option<Mode>,
    id: Uuid,
) -> Result<ApiKey> {
    sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys
          WHERE tenant_id = $1 AND id = $2 AND ($3::text IS NULL OR mode = $3) FOR UPDATE"
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(mode.map(Mode::as_str))
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found("API key"))
}

fn mode_of(granter: Granter<'_>) -> Option<Mode> {
    match granter {
        Granter::Admin => None,
        Granter::Key(p) => Some(p.mode),
    }
}

/// Revokes a key of `tenant_id` (idempotent: revoking twice keeps the first time). Every API
/// replica stops accepting it within seconds (see [`cache`]).
pub async fn revoke(
    conn: &mut PgConnection,
    granter: Granter<'_>,
    actor: &Actor,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<ApiKey> {
    let old = lock(conn, tenant_id, mode_of(granter), id).await?;
    granter.check(Mode::parse(&old.mode)?, &old.scopes)?;
    if old.revoked_at.is_some() {
        return Ok(old);
    }
    let row = sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "UPDATE api_keys SET revoked_at = now(), updated_at = now()
          WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    audit::record(
        conn,
        actor,
        audit::Entry {
            tenant_id: Some(tenant_id),
            mode: Some(Mode::parse(&row.mode)?),
            action: "api_key.revoked",
            target_type: "api_key",
            target_id: id,
            changes: serde_json::json!({ "revoked_at": row.revoked_at }),
        },
    )
    .await?;
    Ok(row)
}

/// Changes a key's name, scopes, allowlist or limits.
pub async fn update(
    conn: &mut PgConnection,
    granter: Granter<'_>,
    actor: &Actor,
    tenant_id: Uuid,
    id: Uuid,
    change: UpdateApiKey,
) -> Result<ApiKey> {
    let name = change.name.as_deref().map(validate_name).transpose()?;
    let scopes = change
        .scopes
        .map(|s| validate_scopes(Some(s)))
        .transpose()?;
    let cidrs = change.allowed_cidrs.map(validate_cidrs).transpose()?;
    let per_minute = validate_limit("rate_limit_per_minute", change.rate_limit_per_minute, true)?;
    let per_hour = validate_limit("rate_limit_per_hour", change.rate_limit_per_hour, true)?;
    let old = lock(conn, tenant_id, mode_of(granter), id).await?;
    // Any change to a key (its allowlist and limits too) needs every scope the key holds, and
    // every scope it is given: a weak key must not loosen a strong one.
    let mode = Mode::parse(&old.mode)?;
    granter.check(mode, &old.scopes)?;
    if let Some(scopes) = &scopes {
        granter.check(mode, scopes)?;
    }
    if old.revoked_at.is_some() {
        return Err(Error::conflict(
            "api_key_revoked",
            None,
            "A revoked key cannot be changed.",
        ));
    }
    let row = sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "UPDATE api_keys
            SET name = COALESCE($2, name), scopes = COALESCE($3, scopes),
                allowed_cidrs = COALESCE($4, allowed_cidrs),
                rate_limit_per_minute = CASE WHEN $5::int IS NULL THEN rate_limit_per_minute
                                             ELSE NULLIF($5, 0) END,
                rate_limit_per_hour = CASE WHEN $6::int IS NULL THEN rate_limit_per_hour
                                           ELSE NULLIF($6, 0) END,
                updated_at = now()
          WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(&name)
    .bind(&scopes)
    .bind(&cidrs)
    .bind(per_minute)
    .bind(per_hour)
    .fetch_one(&mut *conn)
    .await?;
    let mut changes = serde_json::Map::new();
    if old.name != row.name {
        changes.insert("name".into(), serde_json::json!([old.name, row.name]));
    }
    if old.scopes != row.scopes {
        changes.insert("scopes".into(), serde_json::json!([old.scopes, row.scopes]));
    }
    if old.allowed_cidrs != row.allowed_cidrs {
        changes.insert(
            "allowed_cidrs".into(),
            serde_json::json!([old.allowed_cidrs, row.allowed_cidrs]),
        );
    }
    if old.rate_limit_per_minute != row.rate_limit_per_minute {
        changes.insert(
            "rate_limit_per_minute".into(),
            serde_json::json!([old.rate_limit_per_minute, row.rate_limit_per_minute]),
        );
    }
    if old.rate_limit_per_hour != row.rate_limit_per_hour {
        changes.insert(
            "rate_limit_per_hour".into(),
            serde_json::json!([old.rate_limit_per_hour, row.rate_limit_per_hour]),
        );
    }
    let action = if changes.contains_key("scopes") {
        "api_key.scopes_changed"
    } else {
        "api_key.updated"
    };
    audit::record(
        conn,
        actor,
        audit::Entry {
            tenant_id: Some(tenant_id),
            mode: Some(mode),
            action,
            target_type: "api_key",
            target_id: id,
            changes: serde_json::Value::Object(changes),
        },
    )
    .await?;
    Ok(row)
}

/// Replaces a key with a new one of the same settings; the old key expires after the grace
/// period (or at its own earlier expiry).
pub async fn roll(
    conn: &mut PgConnection,
    pepper: &[u8],
    granter: Granter<'_>,
    actor: &Actor,
    tenant_id: Uuid,
    id: Uuid,
    roll: RollApiKey,
) -> Result<CreatedApiKey> {
    let grace = roll.grace_period_seconds.unwrap_or(86_400);
    if !(0..=MAX_ROLL_GRACE_SECONDS).contains(&grace) {
        return Err(Error::invalid(
            "parameter_invalid",
            "grace_period_seconds",
            format!("`grace_period_seconds` must be between 0 and {MAX_ROLL_GRACE_SECONDS}."),
        ));
    }
    let old = lock(conn, tenant_id, mode_of(granter), id).await?;
    if old.revoked_at.is_some() || old.expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(Error::conflict(
            "api_key_inactive",
            None,
            "A revoked or expired key cannot be rolled; create a new key.",
        ));
    }
    let mode = Mode::parse(&old.mode)?;
    granter.check(mode, &old.scopes)?;
    let old_expires = sqlx::query_scalar::<_, DateTime<Utc>>(
        "UPDATE api_keys
            SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), now() + make_interval(secs => $2)),
                updated_at = now()
          WHERE id = $1 RETURNING expires_at",
    )
    .bind(id)
    .bind(grace as f64)
    .fetch_one(&mut *conn)
    .await?;
    let (key_id, key) = generate(pepper, mode);
    let row = sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, tenant_id, key_id, key_hash, mode, name, scopes, last4,
                               expires_at, allowed_cidrs, rate_limit_per_minute,
                               rate_limit_per_hour, rolled_from)
         SELECT $1, tenant_id, $2, $3, mode, name, scopes, $4, NULL, allowed_cidrs,
                rate_limit_per_minute, rate_limit_per_hour, id
           FROM api_keys WHERE id = $5
         RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(&key_id)
    .bind(&hash(pepper, &key)[..])
    .bind(&key[key.len() - 4..])
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    audit::record(
        conn,
        actor,
        audit::Entry {
            tenant_id: Some(tenant_id),
            mode: Some(mode),
            action: "api_key.rolled",
            target_type: "api_key",
            target_id: id,
            changes: serde_json::json!({ "new_key": row.id, "old_key_expires_at": old_expires }),
        },
    )
    .await?;
    Ok(CreatedApiKey { api_key: row, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEPPER: &[u8] = b"pepper-pepper-pepper-pepper-pepper";

    #[test]
    fn generated_keys_parse_and_carry_their_mode() {
        for mode in [Mode::Live, Mode::Test] {
            let (key_id, key) = generate(PEPPER, mode);
            let parsed = parse(PEPPER, &key).expect("valid key parses");
            assert_eq!(parsed.mode, mode);
            assert_eq!(parsed.key_id, key_id);
            assert!(!parsed.legacy);
            // id (12) + secret (36) + checksum (6) + "sy_live_" (8) + "_" (1)
            assert_eq!(key.len(), 63);
        }
    }

    #[test]
    fn mistyped_or_forged_keys_fail_the_keyed_checksum() {
        let (_, key) = generate(PEPPER, Mode::Live);
        // One character of the secret changed: the shape is fine, the checksum is not.
        let mut bytes = key.clone().into_bytes();
        let i = 30;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).unwrap();
        assert_eq!(parse(PEPPER, &typo), None);
        // A key minted with another pepper (anyone's forgery) does not parse here.
        let (_, forged) = generate(b"somebody-elses-pepper-0123456789", Mode::Live);
        assert_eq!(parse(PEPPER, &forged), None);
        assert_eq!(parse(PEPPER, "sy_live_short"), None);
        assert_eq!(parse(PEPPER, "sk_live_123"), None);
        assert_eq!(parse(PEPPER, ""), None);
    }

    #[test]
    fn legacy_crc_keys_parse_as_legacy() {
        let body = format!(
            "sy_live_{}_{}",
            "a".repeat(KEY_ID_LEN),
            "b".repeat(SECRET_LEN)
        );
        let key = format!("{body}{}", legacy_checksum(&body));
        assert!(parse(PEPPER, &key).unwrap().legacy);
    }

    #[test]
    fn hashes_are_hmac_sha256_under_the_pepper() {
        // RFC 4231 test case 2: HMAC-SHA256(key "Jefe", "what do ya want for nothing?").
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let got: String = hash(b"Jefe", "what do ya want for nothing?")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(hash(PEPPER, "k"), hash(PEPPER, "k"));
        assert_ne!(hash(b"pepper-one", "k"), hash(b"pepper-two", "k"));
    }

    #[test]
    fn scopes_are_checked_and_defaulted() {
        assert_eq!(validate_scopes(None).unwrap().len(), DEFAULT_SCOPES.len());
        assert!(validate_scopes(Some(vec![])).is_err());
        let err = validate_scopes(Some(vec!["orders:read".into(), "root".into()])).unwrap_err();
        assert!(matches!(err, Error::Invalid { param: Some(p), .. } if p == "scopes[1]"));
    }
}
