//! A tenant's own API keys, managed with a key that holds `keys:write` (operators use the
//! `/admin/v1/tenants/{tenant_id}/api-keys` routes). A key only sees and manages keys of its own
//! mode, and cannot grant scopes it does not hold.

use std::sync::Arc;
use switchyard_shared::input::Time;

use chrono::{DateTime, Duration, Utc};
use poem::{Request, web::Data};
use poem_openapi::{OpenApi, param::Path, param::Query};
use switchyard_shared::{
    api_keys::{self, Granter, Scope, usage},
    audit::ActorKind,
};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState,
    auth::{Partner, actor},
    error::ApiError,
    idempotency::Idempotency,
    json::Json,
    pagination::{self, list_type},
    responses::Created,
};

list_type!(ApiKeyList, api_keys::ApiKey);

/// Default window of usage reports.
pub const USAGE_DEFAULT_DAYS: i64 = 7;
/// Usage is kept and reported for at most this many days back.
pub const USAGE_MAX_DAYS: i64 = 90;

/// `since` of a usage report: default 7 days back; usage is kept 90 days, so an earlier
/// `since` reads as 90 days back.
pub fn usage_since(since: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let now = Utc::now();
    since
        .unwrap_or(now - Duration::days(USAGE_DEFAULT_DAYS))
        .max(now - Duration::days(USAGE_MAX_DAYS))
}

pub struct ApiKeysApi;

#[OpenApi(prefix_path = "/v1/api-keys", tag = "ApiTags::ApiKeys")]
impl ApiKeysApi {
    /// Create an API key for your tenant (needs `keys:write`). The full key is in this
    /// response only.
    #[oai(path = "/", method = "post", operation_id = "createOwnApiKey")]
    async fn create(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        req: &Request,
        state: Data<&Arc<AppState>>,
        body: Json<api_keys::CreateApiKey>,
    ) -> Result<Created<api_keys::CreatedApiKey>, ApiError> {
        let p = auth.require(Scope::KeysWrite)?;
        let op = idem.begin(p).await?;
        let s = &state.services;
        let mut tx = s.pool.begin().await?;
        let created = api_keys::create(
            &mut tx,
            &s.secrets.api_key_pepper,
            Granter::Key(p),
            &actor(req, ActorKind::ApiKey(p.api_key_id)),
            p.tenant_id,
            body.0,
        )
        .await?;
        op.commit(tx, Created(created)).await
    }

    /// List your tenant's keys of the calling key's mode, newest first (needs `keys:read`).
    #[oai(path = "/", method = "get", operation_id = "listOwnApiKeys")]
    async fn list(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<ApiKeyList>, ApiError> {
        let p = auth.require(Scope::KeysRead)?;
        let limit = pagination::limit(limit.0)?;
        let rows = api_keys::list(
            &state.services.pool,
            p.tenant_id,
            Some(p.mode),
            limit + 1,
            starting_after.0,
        )
        .await?;
        Ok(Json(ApiKeyList::from_rows(rows, limit)))
    }

    /// Get one of your keys (needs `keys:read`).
    #[oai(path = "/:id", method = "get", operation_id = "getOwnApiKey")]
    async fn get(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<api_keys::ApiKey>, ApiError> {
        let p = auth.require(Scope::KeysRead)?;
        let key = api_keys::get(&state.services.pool, p.tenant_id, id.0).await?;
        if key.mode != p.mode.as_str() {
            return Err(switchyard_shared::Error::not_found("API key").into());
        }
        Ok(Json(key))
    }

    /// Change a key's name, scopes, allowlist or rate limits (needs `keys:write`).
    #[oai(path = "/:id", method = "patch", operation_id = "updateOwnApiKey")]
    async fn update(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        req: &Request,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<api_keys::UpdateApiKey>,
    ) -> Result<Json<api_keys::ApiKey>, ApiError> {
        let p = auth.require(Scope::KeysWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let key = api_keys::update(
            &mut tx,
            Granter::Key(p),
            &actor(req, ActorKind::ApiKey(p.api_key_id)),
            p.tenant_id,
            id.0,
            body.0,
        )
        .await?;
        let resp = op.commit(tx, Json(key)).await?;
        state.keys.forget(&resp.0.key_id);
        Ok(resp)
    }

    /// Revoke a key (needs `keys:write`): every API replica refuses it within seconds. The key
    /// stays readable (with `revoked_at`, and its usage) for audits, which is why this is an
    /// action and not a `DELETE`.
    #[oai(
        path = "/:id/revoke",
        method = "post",
        operation_id = "revokeOwnApiKey"
    )]
    async fn revoke(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        req: &Request,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<api_keys::ApiKey>, ApiError> {
        let p = auth.require(Scope::KeysWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let key = api_keys::revoke(
            &mut tx,
            Granter::Key(p),
            &actor(req, ActorKind::ApiKey(p.api_key_id)),
            p.tenant_id,
            id.0,
        )
        .await?;
        let resp = op.commit(tx, Json(key)).await?;
        state.keys.forget(&resp.0.key_id);
        Ok(resp)
    }

    /// Roll a key (needs `keys:write`): returns a new key with the same settings (shown once);
    /// the old key keeps working for the grace period (default 24 h, at most 7 days).
    #[oai(path = "/:id/roll", method = "post", operation_id = "rollOwnApiKey")]
    async fn roll(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        req: &Request,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<api_keys::RollApiKey>,
    ) -> Result<Created<api_keys::CreatedApiKey>, ApiError> {
        let p = auth.require(Scope::KeysWrite)?;
        let op = idem.begin(p).await?;
        let s = &state.services;
        let mut tx = s.pool.begin().await?;
        let rolled = api_keys::roll(
            &mut tx,
            &s.secrets.api_key_pepper,
            Granter::Key(p),
            &actor(req, ActorKind::ApiKey(p.api_key_id)),
            p.tenant_id,
            id.0,
            body.0,
        )
        .await?;
        let resp = op.commit(tx, Created(rolled)).await?;
        if let Some(old) = resp.0.api_key.rolled_from {
            state.keys.forget_id(old);
        }
        Ok(resp)
    }

    /// Requests and errors of a key per operation and per hour (needs `keys:read`); counts lag
    /// by a few seconds.
    #[oai(
        path = "/:id/usage",
        method = "get",
        operation_id = "getOwnApiKeyUsage"
    )]
    async fn usage(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        /// Start of the report (default: 7 days ago; usage is kept 90 days, so an earlier value reads
        /// as 90 days ago).
        since: Query<Option<Time>>,
    ) -> Result<Json<usage::KeyUsage>, ApiError> {
        let p = auth.require(Scope::KeysRead)?;
        let since = usage_since(since.0.map(Time::get));
        let pool = &state.services.pool;
        let key = api_keys::get(pool, p.tenant_id, id.0).await?;
        if key.mode != p.mode.as_str() {
            return Err(switchyard_shared::Error::not_found("API key").into());
        }
        Ok(Json(usage::get(pool, p.tenant_id, id.0, since).await?))
    }
}
