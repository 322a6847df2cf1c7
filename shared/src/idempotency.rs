//! Idempotency keys with Stripe's semantics (and the IETF draft's status codes).
//!
//! A record belongs to the API key that made it: another key sending the same
//! `Idempotency-Key` makes a different request, so a response (which may hold a secret shown
//! once) is only ever replayed to its own principal, and only after the route's authorization
//! (the API claims the key inside the handler, after its scope check).
//!
//! A POST or PATCH with `Idempotency-Key` first *claims* the key (one insert). The route then
//! stores its response with [`finish`] in the transaction of its mutation, so a crash can
//! never leave a change without its record or a record without its change, and a retry with
//! the same key gets that response back. Same key with other parameters → 422; same key while
//! the first request runs → 409; validation failures and server errors store nothing, so they
//! can be retried.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    crypto::Keyring,
    error::{Error, Result},
    mode::Mode,
};

/// How long a claim blocks its key before another request may take it over.
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);
pub const MAX_KEY_LEN: usize = 255;

/// A key this request holds; routes record their response with it.
#[derive(Clone, Debug)]
pub struct Claim {
    pub tenant_id: Uuid,
    pub mode: Mode,
    /// The API key the record belongs to.
    pub api_key_id: Uuid,
    pub key: String,
    pub claim_id: Uuid,
}

impl Claim {
    /// What binds a stored response to this record (a sealed body moved elsewhere is useless).
    fn aad(&self) -> Vec<u8> {
        format!(
            "idempotency|{}|{}|{}|{}|{}",
            self.tenant_id,
            self.mode.as_str(),
            self.api_key_id,
            self.key,
            self.claim_id
        )
        .into_bytes()
    }

    /// Encrypts a response body for storage: `(key id, sealed bytes)`.
    pub fn seal(&self, keyring: &Keyring, body: &[u8]) -> (String, Vec<u8>) {
        keyring.seal(body, &self.aad())
    }
}

/// A first response (in clear; stored encrypted).
#[derive(Clone, Debug)]
pub struct StoredResponse {
    pub response_status: i32,
    pub response_content_type: Option<String>,
    pub response_body: Vec<u8>,
}

/// What claiming a key found.
#[derive(Debug)]
pub enum Outcome {
    /// This request owns the key and runs.
    Claimed(Claim),
    /// A finished first request: replay its response.
    Replay(StoredResponse),
}

/// Checks the header value: 1 to 255 printable ASCII characters.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(Error::invalid(
            "idempotency_key_invalid",
            "Idempotency-Key",
            format!("`Idempotency-Key` must be 1 to {MAX_KEY_LEN} printable ASCII characters."),
        ));
    }
    Ok(())
}

/// Fingerprint of a request: method, path and body, with JSON bodies canonicalised (key order
/// and whitespace do not matter).
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok());
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_deref().unwrap_or(body));
    h.finalize().to_vec()
}

#[derive(sqlx::FromRow)]
struct Existing {
    request_hash: Vec<u8>,
    state: String,
    claim_id: Uuid,
    response_status: Option<i32>,
    response_content_type: Option<String>,
    response_body: Option<Vec<u8>>,
    response_key_id: Option<String>,
}

/// Who makes the request: the record is theirs alone.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub tenant_id: Uuid,
    pub mode: Mode,
    pub api_key_id: Uuid,
}

/// The request a key is claimed for.
#[derive(Clone, Debug)]
pub struct Fingerprint<'a> {
    pub key: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub hash: &'a [u8],
}

/// Claims `key` for a request with fingerprint `hash`, or explains why it cannot run.
pub async fn claim(
    pool: &PgPool,
    keyring: &Keyring,
    owner: Owner,
    request: &Fingerprint<'_>,
    ttl: Duration,
) -> Result<Outcome> {
    let Owner {
        tenant_id,
        mode,
        api_key_id,
    } = owner;
    let Fingerprint {
        key,
        method,
        path,
        hash,
    } = *request;
    let claim_id = Uuid::now_v7();
    // A new key, an abandoned claim (its request died) or a record past its retention is ours.
    let claimed: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (tenant_id, mode, api_key_id, key, method, path,
                                       request_hash, state, claim_id, locked_until)
         VALUES ($1, $2, $10, $3, $4, $5, $6, 'started', $7, now() + make_interval(secs => $8))
         ON CONFLICT (api_key_id, key) DO UPDATE
            SET method = EXCLUDED.method, path = EXCLUDED.path,
                request_hash = EXCLUDED.request_hash, state = 'started',
                claim_id = EXCLUDED.claim_id, locked_until = EXCLUDED.locked_until,
                response_status = NULL, response_content_type = NULL, response_body = NULL,
                response_key_id = NULL, created_at = now()
          WHERE (idempotency_keys.state = 'started' AND idempotency_keys.locked_until < now())
             OR idempotency_keys.created_at < now() - make_interval(secs => $9)
         RETURNING claim_id",
    )
    .bind(tenant_id)
    .bind(mode.as_str())
    .bind(key)
    .bind(method)
    .bind(path)
    .bind(hash)
    .bind(claim_id)
    .bind(CLAIM_LEASE.as_secs_f64())
    .bind(ttl.as_secs_f64())
    .bind(api_key_id)
    .fetch_optional(pool)
    .await?;
    if claimed.is_some() {
        return Ok(Outcome::Claimed(Claim {
            tenant_id,
            mode,
            api_key_id,
            key: key.to_owned(),
            claim_id,
        }));
    }
    let existing = sqlx::query_as::<_, Existing>(
        "SELECT request_hash, state, claim_id, response_status, response_content_type,
                response_body, response_key_id
           FROM idempotency_keys WHERE api_key_id = $1 AND key = $2",
    )
    .bind(api_key_id)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    let Some(existing) = existing else {
        // Deleted between the two statements (its request failed): the client may retry.
        return Err(in_use());
    };
    if existing.request_hash != hash {
        return Err(Error::Unprocessable {
            code: "idempotency_key_reused",
            param: Some("Idempotency-Key".into()),
            detail: "This Idempotency-Key was used with a different request (method, path or \
                     parameters); use a new key for a new request."
                .into(),
        });
    }
    match (existing.state.as_str(), existing.response_status) {
        ("finished", Some(status)) => {
            let owner = Claim {
                tenant_id,
                mode,
                api_key_id,
                key: key.to_owned(),
                claim_id: existing.claim_id,
            };
            let body = keyring
                .open(
                    existing.response_key_id.as_deref().unwrap_or_default(),
                    existing.response_body.as_deref().unwrap_or_default(),
                    &owner.aad(),
                )
                .map_err(|e| Error::Internal(anyhow::anyhow!("idempotent response: {e}")))?;
            Ok(Outcome::Replay(StoredResponse {
                response_status: status,
                response_content_type: existing.response_content_type,
                response_body: body,
            }))
        }
        _ => Err(in_use()),
    }
}

/// `409 idempotency_key_in_use`: another request holds the key.
pub fn in_use() -> Error {
    Error::conflict(
        "idempotency_key_in_use",
        Some("Idempotency-Key"),
        "A request with this Idempotency-Key is still being processed; retry shortly.",
    )
}

/// Stores the response of a claimed request on `conn`: the transaction of the request's
/// mutation, so the two commit together. Returns false when the claim is no longer this
/// request's (it lapsed and another request took the key): the caller must then roll back.
pub async fn finish(
    conn: &mut PgConnection,
    keyring: &Keyring,
    claim: &Claim,
    resp: &StoredResponse,
) -> Result<bool> {
    let (key_id, sealed) = claim.seal(keyring, &resp.response_body);
    let n = sqlx::query(
        "UPDATE idempotency_keys
            SET state = 'finished', response_status = $4, response_content_type = $5,
                response_body = $6, response_key_id = $7
          WHERE api_key_id = $1 AND key = $2 AND claim_id = $3 AND state = 'started'",
    )
    .bind(claim.api_key_id)
    .bind(&claim.key)
    .bind(claim.claim_id)
    .bind(resp.response_status)
    .bind(&resp.response_content_type)
    .bind(sealed)
    .bind(key_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Forgets a claim whose request stored nothing (validation failure, server error).
pub async fn release(pool: &PgPool, claim: &Claim) -> Result<()> {
    sqlx::query(
        "DELETE FROM idempotency_keys
          WHERE api_key_id = $1 AND key = $2 AND claim_id = $3 AND state = 'started'",
    )
    .bind(claim.api_key_id)
    .bind(&claim.key)
    .bind(claim.claim_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Stored answers, for keyring rotation (`crate::keyring`).
pub const SEALED_RESPONSES: crate::keyring::SealedKind = crate::keyring::SealedKind {
    name: "idempotency.response",
    count_sql: "SELECT response_key_id, count(*) FROM idempotency_keys
                 WHERE response_key_id IS NOT NULL GROUP BY 1",
    rekey: |pool, keyring, after, limit| Box::pin(rekey(pool, keyring, after, limit)),
};

/// Moves up to `limit` stored answers after `after` (api key id, key) to the active key.
async fn rekey(
    pool: &sqlx::PgPool,
    keyring: &Keyring,
    after: crate::keyring::Cursor,
    limit: i64,
) -> Result<crate::keyring::Batch> {
    type Row = (Uuid, String, Uuid, String, Uuid, String, Vec<u8>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT api_key_id, key, tenant_id, mode, claim_id, response_key_id, response_body
           FROM idempotency_keys
          WHERE response_key_id IS NOT NULL AND response_key_id <> $1
            AND (api_key_id, key) > ($2, $3)
          ORDER BY api_key_id, key LIMIT $4",
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
    for (api_key_id, key, tenant_id, mode, claim_id, key_id, sealed) in rows {
        let claim = Claim {
            tenant_id,
            mode: Mode::parse(&mode)?,
            api_key_id,
            key,
            claim_id,
        };
        let Some((kid, ct)) = crate::keyring::reseal(keyring, &key_id, &sealed, &claim.aad())
        else {
            batch.unreadable += 1;
            continue;
        };
        batch.rotated += sqlx::query(
            "UPDATE idempotency_keys SET response_key_id = $3, response_body = $4
              WHERE api_key_id = $1 AND key = $2 AND claim_id = $5 AND response_key_id = $6",
        )
        .bind(claim.api_key_id)
        .bind(&claim.key)
        .bind(kid)
        .bind(ct)
        .bind(claim.claim_id)
        .bind(&key_id)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(batch)
}
