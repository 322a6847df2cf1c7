//! Receiving an inbound webhook: find the integration by its URL token, check the content
//! type, verify, and store the raw request with its processing job in one statement before
//! the `2xx` — or, for a request that fails, store it `rejected` with the reason and refuse it.
//! A request whose sender event id was seen before is answered as a duplicate and not stored
//! again.

use chrono::Utc;
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
    let secrets = open_secrets(pool, keyring, &target).await?;
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
    if serde_json::from_slice::<serde_json::Value>(req.body).is_err() {
        // Verified but not JSON: recorded as a failure with its reason, never processed.
        let reason = "the body is not valid JSON";
        store_rejected(pool, &target, &req, "verified", reason).await?;
        return Err(Error::invalid(
            "body_invalid",
            "body",
            format!("Rejected: {reason}."),
        ));
    }
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
    .bind(&verified.event_id)
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
    .bind(&verified.event_id)
    .fetch_one(pool)
    .await?;
    Ok(Receipt::Duplicate { id: first })
}

async fn find(pool: &PgPool, token: &str) -> Result<Target> {
    let row: Option<(Uuid, Uuid, String, Json<Stored>)> = sqlx::query_as(
        "SELECT id, tenant_id, mode, inbound FROM integrations
          WHERE inbound_token = $1 AND deleted_at IS NULL AND inbound IS NOT NULL
            AND status <> 'inactive'",
    )
    .bind(token)
    .fetch_optional(pool)
    .await?;
    let (id, tenant_id, mode, stored) = row.ok_or_else(|| Error::not_found("inbound URL"))?;
    Ok(Target {
        id,
        scope: Scope {
            tenant_id,
            mode: Mode::parse(&mode)?,
        },
        stored: stored.0,
    })
}

/// The inbound secrets, newest first. They are opened for every request without an audit
/// entry of their own (one per webhook would double the write load); every change to them is
/// audited with the integration. A secret that does not open is left out: the request then
/// fails verification (fail closed).
async fn open_secrets(pool: &PgPool, keyring: &Keyring, target: &Target) -> Result<Vec<String>> {
    let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT name, key_id, sealed FROM integration_credentials
          WHERE integration_id = $1 AND name LIKE 'inbound/%' ORDER BY name",
    )
    .bind(target.id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(name, _, _)| name.starts_with(SECRET_PREFIX))
        .filter_map(|(name, key_id, sealed)| {
            let aad = crate::integrations::vault::aad(target.scope.tenant_id, target.id, &name);
            match keyring.open(&key_id, &sealed, &aad) {
                Ok(plain) => String::from_utf8(plain).ok(),
                Err(e) => {
                    tracing::error!(integration_id = %target.id, credential = %name, error = %e, "inbound secret cannot be opened");
                    None
                }
            }
        })
        .collect())
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
