//! Receiving an inbound webhook: find the integration by its URL token, check the content
//! type, verify, and store the raw request with its processing job in one statement before
//! the `2xx` — or, for a request that fails, store it `rejected` with the reason and refuse it.
//! A request whose sender event id was seen before is answered as a duplicate and not stored
//! again.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::Utc;
use sha2::Digest;
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use super::{SECRET_PREFIX, Stored, verify};
use crate::{
    crypto::Keyring,
    error::{Error, Result},
    jobs::{self, NewJob, insert_jobs_sql},
    mode::Mode,
    queue::{INBOUND_EVENTS, JobTask},
    tenants::Scope,
};

/// Attempts of a processing job (backoff doubling from the worker's job retry delay).
pub const PROCESS_MAX_ATTEMPTS: i32 = 10;

/// Headers whose values are never stored.
fn secret_header(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "cookie" | "proxy-authorization" | "x-api-key"
    )
}

/// A request as it arrived.
pub struct Incoming<'a> {
    pub token: &'a str,
    /// Names lower-cased.
    pub headers: verify::Headers,
    pub body: &'a [u8],
}

/// What became of an accepted request.
pub enum Receipt {
    /// Stored and queued: push `task`.
    Accepted { id: Uuid, task: JobTask },
    /// The sender's event id was seen before: the first request's id.
    Duplicate { id: Uuid },
}

struct Target {
    id: Uuid,
    scope: Scope,
    stored: Stored,
    /// The sealed inbound secrets `(name, key id, ciphertext)`, newest first.
    sealed: Vec<(String, String, Vec<u8>)>,
}

/// Receives one request (see the module documentation).
pub async fn receive(pool: &PgPool, keyring: &Keyring, req: Incoming<'_>) -> Result<Receipt> {
    let target = find(pool, req.token).await?;
    let content_type = req.headers.get("content-type").cloned();
    let is_json = content_type.as_deref().is_some_and(|c| {
        let mime = c
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    });
    if !is_json {
        let reason = "the body must be JSON (`Content-Type: application/json`)";
        store_rejected(pool, &target, &req, "rejected", reason).await?;
        return Err(Error::UnsupportedMediaType {
            detail: format!("Rejected: {reason}."),
        });
    }
    let secrets = open_secrets(keyring, &target);
    let verified = match verify::verify(
        &target.stored.rules,
        &secrets,
        &req.headers,
        req.body,
        Utc::now().timestamp(),
    ) {
        Ok(v) => v,
        Err(reason) => {
            store_rejected(pool, &target, &req, "rejected", &reason).await?;
            return Err(Error::unauthenticated(
                "signature_invalid",
                format!("Rejected: {reason}."),
            ));
        }
    };
    let parsed = serde_json::from_slice::<serde_json::Value>(req.body);
    if let Some(reason) = match &parsed {
        Err(_) => Some("the body is not valid JSON"),
        // Postgres' JSON cannot hold it: processing would fail on every attempt.
        Ok(v) if holds_nul(v) => Some("the body holds a `\\u0000` character"),
        Ok(_) => None,
    } {
        // Verified but unusable: recorded as a failure with its reason, never processed.
        store_rejected(pool, &target, &req, "verified", reason).await?;
        return Err(Error::invalid(
            "body_invalid",
            "body",
            format!("Rejected: {reason}."),
        ));
    }
    let dedupe_id = verified.event_id.as_deref().map(dedupe_key);
    let id = Uuid::now_v7();
    let job = NewJob::new(
        INBOUND_EVENTS,
        target.scope.tenant_id,
        id,
        PROCESS_MAX_ATTEMPTS,
    );
    let verification = if verified.signed {
        "verified"
    } else {
        "unverified"
    };
    let inserted = jobs::bind_insert(
        sqlx::query(concat!(
            "WITH e AS (
                INSERT INTO inbound_events (id, tenant_id, mode, integration_id, status, dedupe_id,
                                            verification, content_type, headers, body)
                VALUES ($6, $7, $8, $9, 'pending', $10, $11, $12, $13, $14)
                ON CONFLICT (integration_id, dedupe_id)
                   WHERE dedupe_id IS NOT NULL AND status <> 'rejected' DO NOTHING
                RETURNING id),
             j AS (",
            insert_jobs_sql!(),
            " WHERE EXISTS (SELECT 1 FROM e))
             SELECT id FROM e"
        )),
        std::slice::from_ref(&job),
    )
    .bind(id)
    .bind(target.scope.tenant_id)
    .bind(target.scope.mode.as_str())
    .bind(target.id)
    .bind(&dedupe_id)
    .bind(verification)
    .bind(&content_type)
    .bind(Json(stored_headers(&req.headers)))
    .bind(req.body)
    .fetch_optional(pool)
    .await?;
    if inserted.is_some() {
        // `e` returned the new row: it was stored with its job.
        return Ok(Receipt::Accepted {
            id,
            task: job.task(),
        });
    }
    let first: Uuid = sqlx::query_scalar(
        "SELECT id FROM inbound_events
          WHERE integration_id = $1 AND dedupe_id = $2 AND status <> 'rejected'",
    )
    .bind(target.id)
    .bind(&dedupe_id)
    .fetch_one(pool)
    .await?;
    Ok(Receipt::Duplicate { id: first })
}

/// The sender's event id as the dedupe column keeps it: as sent, or — longer than 200 bytes,
/// or holding a NUL, which the column and its unique index cannot take — `sha256:` and its
/// digest, the same for every copy of the event.
fn dedupe_key(event_id: &str) -> String {
    if event_id.len() <= 200 && !event_id.contains('\0') {
        return event_id.to_owned();
    }
    format!(
        "sha256:{}",
        crate::telemetry::trace::hex(&sha2::Sha256::digest(event_id.as_bytes()))
    )
}

/// Whether a string or key anywhere in `v` holds a NUL character.
pub(super) fn holds_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(holds_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// The integration of `token` with its sealed inbound secrets, in one round trip.
async fn find(pool: &PgPool, token: &str) -> Result<Target> {
    // Tokens are `in_` and base62: anything else names no URL (and a NUL, which the path may
    // carry percent-encoded, could not even be compared in Postgres).
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(Error::not_found("inbound URL"));
    }
    type Row = (
        Uuid,
        Uuid,
        String,
        Json<Stored>,
        Json<Vec<(String, String, String)>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT i.id, i.tenant_id, i.mode, i.inbound,
                COALESCE((SELECT json_agg(json_build_array(c.name, c.key_id, encode(c.sealed, 'base64'))
                                          ORDER BY c.name)
                            FROM integration_credentials c
                           WHERE c.integration_id = i.id AND c.name LIKE 'inbound/%'), '[]')
           FROM integrations i
          WHERE i.inbound_token = $1 AND i.deleted_at IS NULL AND i.inbound IS NOT NULL
            AND i.status <> 'inactive'",
    )
    .bind(token)
    .fetch_optional(pool)
    .await?;
    let (id, tenant_id, mode, stored, sealed) =
        row.ok_or_else(|| Error::not_found("inbound URL"))?;
    let sealed = sealed
        .0
        .into_iter()
        .map(|(name, key_id, b64)| {
            // Postgres' base64 wraps lines at 76 characters.
            let b64: String = b64.split_whitespace().collect();
            let ct = STANDARD
                .decode(b64)
                .map_err(|e| Error::Internal(anyhow::anyhow!("inbound secret encoding: {e}")))?;
            Ok((name, key_id, ct))
        })
        .collect::<Result<_>>()?;
    Ok(Target {
        id,
        scope: Scope {
            tenant_id,
            mode: Mode::parse(&mode)?,
        },
        stored: stored.0,
        sealed,
    })
}

/// The inbound secrets, opened. They are opened for every request without an audit entry of
/// their own (one per webhook would double the write load); every change to them is audited
/// with the integration. A secret that does not open is left out: the request then fails
/// verification (fail closed).
fn open_secrets(keyring: &Keyring, target: &Target) -> Vec<String> {
    target
        .sealed
        .iter()
        .filter(|(name, _, _)| name.starts_with(SECRET_PREFIX))
        .filter_map(|(name, key_id, sealed)| {
            let aad = crate::integrations::vault::aad(target.scope.tenant_id, target.id, name);
            match keyring.open(key_id, sealed, &aad) {
                Ok(plain) => String::from_utf8(plain).ok(),
                Err(e) => {
                    tracing::error!(integration_id = %target.id, credential = %name, error = %e, "inbound secret cannot be opened");
                    None
                }
            }
        })
        .collect()
}

fn stored_headers(headers: &verify::Headers) -> verify::Headers {
    headers
        .iter()
        .map(|(k, v)| {
            let v = if secret_header(k) {
                crate::webhooks::credentials::REDACTED.to_owned()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// Records a refused request (`verification` = `rejected`, or `verified` for a verified body
/// that is not JSON) with its reason; it is never processed.
async fn store_rejected(
    pool: &PgPool,
    target: &Target,
    req: &Incoming<'_>,
    verification: &str,
    reason: &str,
) -> Result<()> {
    let status = if verification == "rejected" {
        "rejected"
    } else {
        "failed"
    };
    sqlx::query(
        "INSERT INTO inbound_events (id, tenant_id, mode, integration_id, status, verification,
                                     reason, content_type, headers, body, processed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())",
    )
    .bind(Uuid::now_v7())
    .bind(target.scope.tenant_id)
    .bind(target.scope.mode.as_str())
    .bind(target.id)
    .bind(status)
    .bind(verification)
    .bind(reason)
    .bind(req.headers.get("content-type"))
    .bind(Json(stored_headers(&req.headers)))
    .bind(req.body)
    .execute(pool)
    .await?;
    Ok(())
}
