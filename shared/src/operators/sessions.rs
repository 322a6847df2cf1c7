//! Dashboard sessions. The browser holds a random 256-bit token in an HttpOnly,
//! SameSite=Strict cookie; the database holds its SHA-256 only, so a leaked table opens no
//! session. Sessions end when they expire (absolute lifetime, `SWITCHYARD_DASHBOARD_SESSION_TTL`)
//! or on sign-out; the janitor purges the expired ones. A session opened with the admin token
//! holds a mark of that token (an HMAC under the server's pepper, useless without it) and ends
//! when the deployment's admin token changes.
//!
//! Every form and script call carries a CSRF token derived from the session token with the
//! server's pepper (HMAC), so it needs no storage and changes with every session.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::Role;
use crate::{
    crypto::{constant_time_eq, hmac_sha256, random_base62},
    error::Result,
};

/// A signed-in browser.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Session {
    /// The account, or `None` for the admin token.
    pub operator_id: Option<Uuid>,
    /// Who, for the page header and the audit log: the account's email or "admin token".
    pub who: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The mark of the deployment's admin token that its sessions hold (see the module's doc).
pub fn admin_token_mark(pepper: &[u8], admin_token: &str) -> Vec<u8> {
    hmac_sha256(pepper, &[b"dashboard-admin-token:", admin_token.as_bytes()]).to_vec()
}

/// Starts a session of `operator_id`, or (`None`) of the admin token whose mark is
/// `admin_mark`; returns its token (for the cookie) and when it ends.
pub async fn start(
    pool: &PgPool,
    operator_id: Option<Uuid>,
    role: Role,
    ttl: Duration,
    admin_mark: &[u8],
) -> Result<(String, DateTime<Utc>)> {
    let token = random_base62(43);
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO dashboard_sessions (token_hash, operator_id, role, expires_at, admin_token_mark)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4),
                 CASE WHEN $2::uuid IS NULL THEN $5::bytea END)
         RETURNING expires_at",
    )
    .bind(token_hash(&token))
    .bind(operator_id)
    .bind(role)
    .bind(ttl.as_secs_f64())
    .bind(admin_mark)
    .fetch_one(pool)
    .await?;
    Ok((token, expires_at))
}

/// The live session `token` names; `None` when unknown, expired, or opened with an admin
/// token other than the one whose mark is `admin_mark`.
pub async fn find(pool: &PgPool, token: &str, admin_mark: &[u8]) -> Result<Option<Session>> {
    Ok(sqlx::query_as::<_, Session>(
        "SELECT s.operator_id, COALESCE(o.email, 'admin token') AS who, s.role, s.expires_at
           FROM dashboard_sessions s LEFT JOIN operators o ON o.id = s.operator_id
          WHERE s.token_hash = $1 AND s.expires_at > now()
            AND (s.operator_id IS NOT NULL OR s.admin_token_mark = $2)",
    )
    .bind(token_hash(token))
    .bind(admin_mark)
    .fetch_optional(pool)
    .await?)
}

/// Ends the session `token` names.
pub async fn end(pool: &PgPool, token: &str) -> Result<()> {
    sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = $1")
        .bind(token_hash(token))
        .execute(pool)
        .await?;
    Ok(())
}

/// The CSRF token of the session `token` names.
pub fn csrf_token(pepper: &[u8], token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(hmac_sha256(pepper, &[b"dashboard-csrf:", token.as_bytes()]))
}

/// Whether `presented` is the CSRF token of the session `token` names (constant time).
pub fn csrf_ok(pepper: &[u8], token: &str, presented: &str) -> bool {
    constant_time_eq(csrf_token(pepper, token).as_bytes(), presented.as_bytes())
}
