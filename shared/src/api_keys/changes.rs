//! Creating, changing, rolling and revoking keys: each on the caller's transaction, with its
//! audit entry.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    ApiKey, COLUMNS, CreatedApiKey, Mode, Principal,
    input::{CreateApiKey, RollApiKey, UpdateApiKey, cidr_names, scope_names},
    key_format::{generate, hash},
};
use crate::{
    audit::{self, Actor},
    error::{Error, Result},
    input::Text,
    net::Cidr,
};

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

    /// Past its scopes, a key's reach is where it may be used from, how fast and how long: a
    /// partner key cannot make, change or roll (and so hold the secret of) a key that reaches
    /// further than itself. Revoking is not bound by it.
    fn bound(&self, key: &ApiKey) -> Result<()> {
        let Granter::Key(p) = self else {
            return Ok(());
        };
        let refuse = |what: &str| {
            Err(Error::forbidden(
                "api_key_too_strong",
                format!("This API key cannot manage a key {what}: it is restricted itself."),
            ))
        };
        if !p.allowed_cidrs.is_empty() {
            let inside = !key.allowed_cidrs.is_empty()
                && key.allowed_cidrs.iter().all(|c| {
                    Cidr::parse(c).is_some_and(|c| p.allowed_cidrs.iter().any(|g| g.covers(&c)))
                });
            if !inside {
                return refuse("usable from outside its own `allowed_cidrs`");
            }
        }
        let within = |own: Option<u32>, other: Option<i32>| {
            own.is_none_or(|own| other.is_some_and(|o| o > 0 && o as u32 <= own))
        };
        if !within(p.rate_limit_per_minute, key.rate_limit_per_minute) {
            return refuse("with a higher `rate_limit_per_minute`");
        }
        if !within(p.rate_limit_per_hour, key.rate_limit_per_hour) {
            return refuse("with a higher `rate_limit_per_hour`");
        }
        if p.expires_at
            .is_some_and(|own| key.expires_at.is_none_or(|t| t > own))
        {
            return refuse("that outlives it (`expires_at`)");
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
    let mode = new.mode.unwrap_or(Mode::Live);
    let name = new.name.into_string();
    let scopes = scope_names(new.scopes)?;
    if new.expires_at.is_some_and(|t| t.get() <= Utc::now()) {
        return Err(Error::invalid(
            "parameter_invalid",
            "expires_at",
            "`expires_at` must be in the future.",
        ));
    }
    let cidrs = cidr_names(new.allowed_cidrs.unwrap_or_default())?;
    let per_minute = new.rate_limit_per_minute.map(|n| n.get() as i32);
    let per_hour = new.rate_limit_per_hour.map(|n| n.get() as i32);
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
    .bind(new.expires_at.map(crate::input::Time::get))
    .bind(&cidrs)
    .bind(per_minute)
    .bind(per_hour)
    .fetch_one(&mut *conn)
    .await?;
    // Refused on the caller's transaction, which then writes nothing.
    granter.bound(&row)?;
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
    // Revoking narrows what exists, so a key's reach past its scopes does not limit it (a
    // key in its grace period may revoke the successor it was rolled to).
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
    let name = change.name.map(Text::into_string);
    let scopes = change.scopes.map(|s| scope_names(Some(s))).transpose()?;
    let cidrs = change.allowed_cidrs.map(cidr_names).transpose()?;
    let per_minute = change.rate_limit_per_minute.map(|n| n.get() as i32);
    let per_hour = change.rate_limit_per_hour.map(|n| n.get() as i32);
    let old = lock(conn, tenant_id, mode_of(granter), id).await?;
    // Any change to a key (its allowlist and limits too) needs every scope the key holds, and
    // every scope it is given: a weak key must not loosen a strong one.
    let mode = Mode::parse(&old.mode)?;
    granter.check(mode, &old.scopes)?;
    granter.bound(&old)?;
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
    granter.bound(&row)?;
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
    let grace = roll.grace_period_seconds.map_or(86_400, |g| g.get());
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
    granter.bound(&old)?;
    // A key rolled once lives on only for its grace period: a second roll would make a key
    // that dies with it (its expiry is the grace period's end) beside the first successor.
    let successor: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM api_keys WHERE tenant_id = $1 AND rolled_from = $2 LIMIT 1",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(next) = successor {
        return Err(Error::conflict(
            "api_key_rolled",
            None,
            format!("This key was rolled already, to key {next}: roll that one."),
        ));
    }
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
         SELECT $1, tenant_id, $2, $3, mode, name, scopes, $4, $6, allowed_cidrs,
                rate_limit_per_minute, rate_limit_per_hour, id
           FROM api_keys WHERE id = $5
         RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(&key_id)
    .bind(&hash(pepper, &key)[..])
    .bind(&key[key.len() - 4..])
    .bind(id)
    // The new key ends when the old one was to end: a roll renews the secret, not its life.
    .bind(old.expires_at)
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
