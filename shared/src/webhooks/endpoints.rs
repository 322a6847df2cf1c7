//! Webhook endpoints: where a tenant wants its events delivered.

use chrono::{DateTime, Utc};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::{event_types, signing};
use crate::{
    crypto::Keyring,
    error::{Error, Result},
    net,
    tenants::Scope,
};

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// HTTPS (or HTTP) URL that receives POSTed events.
    pub url: String,
    /// Event types to deliver; `order.*` style wildcards allowed. Default: `["*"]`.
    pub event_types: Option<Vec<String>>,
    /// Free text for operators.
    pub description: Option<String>,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    /// `live` or `test`: receives only events of orders of the same mode.
    pub mode: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An endpoint as created: the only time its signing secret is shown.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    #[oai(flatten)]
    pub endpoint: Endpoint,
    /// Standard Webhooks signing secret (`whsec_…`); shown only in this response.
    pub secret: String,
}

const COLUMNS: &str = "id, mode, url, description, event_types, status, created_at, updated_at";

/// AAD binding an endpoint's encrypted secret to its row and tenant.
fn secret_aad(tenant_id: Uuid, endpoint_id: Uuid) -> Vec<u8> {
    format!("webhook_endpoint|secret|{endpoint_id}|{tenant_id}|v1").into_bytes()
}

/// Parses and vets an endpoint URL (scheme, credentials, literal addresses, length).
pub fn validate_url(raw: &str, allow_private: bool) -> Result<Url> {
    let invalid = |detail: String| Error::invalid("parameter_invalid", "url", detail);
    if raw.len() > 2048 {
        return Err(invalid("`url` must be at most 2048 characters.".into()));
    }
    let url =
        Url::parse(raw.trim()).map_err(|e| invalid(format!("`url` is not a valid URL: {e}.")))?;
    net::check_url(&url, allow_private).map_err(|e| match e {
        net::BlockedTarget::NonPublic(_) => Error::invalid(
            "url_not_allowed",
            "url",
            format!("`url` is not allowed: {e}."),
        ),
        _ => invalid(format!("`url` is not allowed: {e}.")),
    })?;
    Ok(url)
}

pub async fn create(
    pool: &PgPool,
    keyring: &Keyring,
    allow_private: bool,
    scope: Scope,
    input: CreateEndpoint,
) -> Result<CreatedEndpoint> {
    let tenant_id = scope.tenant_id;
    let url = validate_url(&input.url, allow_private)?;
    let event_types = event_types::validate_filter(input.event_types)?;
    let description = input.description.map(|d| d.trim().to_owned());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1000)
    {
        return Err(Error::invalid(
            "parameter_invalid",
            "description",
            "`description` must be at most 1000 characters.",
        ));
    }
    let id = Uuid::now_v7();
    let secret = signing::generate_secret();
    let (key_id, sealed) = keyring.seal(secret.as_bytes(), &secret_aad(tenant_id, id));
    let endpoint = sqlx::query_as::<_, Endpoint>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_endpoints
            (id, tenant_id, mode, url, description, event_types, secret_ciphertext, secret_key_id)
         VALUES ($1, $2, $8, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(tenant_id)
    .bind(url.as_str())
    .bind(description)
    .bind(&event_types)
    .bind(sealed)
    .bind(key_id)
    .bind(scope.mode.as_str())
    .fetch_one(pool)
    .await?;
    Ok(CreatedEndpoint { endpoint, secret })
}

pub async fn get(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Endpoint> {
    sqlx::query_as::<_, Endpoint>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints
          WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL"
    )))
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::not_found("webhook endpoint"))
}

pub async fn list(
    pool: &PgPool,
    scope: Scope,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<Endpoint>> {
    Ok(sqlx::query_as::<_, Endpoint>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints
          WHERE tenant_id = $1 AND mode = $4 AND deleted_at IS NULL
            AND ($3::uuid IS NULL OR id < $3)
          ORDER BY id DESC LIMIT $2"
    )))
    .bind(scope.tenant_id)
    .bind(limit)
    .bind(starting_after)
    .bind(scope.mode.as_str())
    .fetch_all(pool)
    .await?)
}

/// Soft-deletes the endpoint; deliveries still waiting for it are cancelled when they come up.
pub async fn delete(pool: &PgPool, scope: Scope, id: Uuid) -> Result<()> {
    let n = sqlx::query(
        "UPDATE webhook_endpoints SET deleted_at = now(), updated_at = now()
          WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL",
    )
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .execute(pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::not_found("webhook endpoint"));
    }
    Ok(())
}

/// Decrypts an endpoint's signing key (the raw bytes behind `whsec_`).
pub fn decrypt_secret_key(
    keyring: &Keyring,
    tenant_id: Uuid,
    endpoint_id: Uuid,
    key_id: &str,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let plain = keyring
        .open(key_id, sealed, &secret_aad(tenant_id, endpoint_id))
        .map_err(|e| anyhow::anyhow!("endpoint {endpoint_id} secret: {e}"))?;
    let secret = String::from_utf8(plain).map_err(|_| anyhow::anyhow!("secret is not UTF-8"))?;
    signing::secret_key(&secret)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("stored secret is not whsec_ base64")))
}
