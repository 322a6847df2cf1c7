//! Operator API: tenants, their API keys, and the state of the queues.

use std::sync::Arc;
use switchyard_shared::input::Time;

use poem::{Request, web::Data};
use poem_openapi::{OpenApi, param::Path, param::Query};
use switchyard_shared::{
    api_keys::{self, Granter, usage},
    audit::{self, ActorKind},
    tenants,
};
use uuid::Uuid;

use super::{
    ApiTags,
    api_keys::{ApiKeyList, usage_since},
    audit_events::AuditEventList,
};
use crate::{
    AppState,
    auth::{Admin, actor},
    error::ApiError,
    json::Json,
    pagination::{self, list_type},
    responses::Created,
};

list_type!(TenantList, tenants::Tenant);

pub struct AdminApi;

#[OpenApi(prefix_path = "/admin/v1", tag = "ApiTags::Admin")]
impl AdminApi {
    /// Create a tenant.
    #[oai(path = "/tenants", method = "post", operation_id = "createTenant")]
    async fn create_tenant(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        body: Json<tenants::CreateTenant>,
    ) -> Result<Created<tenants::Tenant>, ApiError> {
        let actor = actor(req, ActorKind::Admin);
        Ok(Created(
            tenants::create(&state.services.pool, &actor, body.0).await?,
        ))
    }

    /// Change a tenant's name or rate limit.
    #[oai(
        path = "/tenants/:tenant_id",
        method = "patch",
        operation_id = "updateTenant"
    )]
    async fn update_tenant(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        tenant_id: Path<Uuid>,
        body: Json<tenants::UpdateTenant>,
    ) -> Result<Json<tenants::Tenant>, ApiError> {
        let actor = actor(req, ActorKind::Admin);
        let tenant = tenants::update(&state.services.pool, &actor, tenant_id.0, body.0).await?;
        state.keys.clear();
        Ok(Json(tenant))
    }

    /// A tenant's audit events, newest first.
    #[oai(
        path = "/tenants/:tenant_id/audit-events",
        method = "get",
        operation_id = "listTenantAuditEvents"
    )]
    async fn list_audit(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
        tenant_id: Path<Uuid>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<AuditEventList>, ApiError> {
        let limit = pagination::limit(limit.0)?;
        let pool = &state.services.pool;
        tenants::get(pool, tenant_id.0).await?;
        let rows = audit::list(pool, tenant_id.0, None, limit + 1, starting_after.0).await?;
        Ok(Json(AuditEventList::from_rows(rows, limit)))
    }

    /// List tenants, newest first.
    #[oai(path = "/tenants", method = "get", operation_id = "listTenants")]
    async fn list_tenants(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<TenantList>, ApiError> {
        let limit = pagination::limit(limit.0)?;
        let rows = tenants::list(&state.services.pool, limit + 1, starting_after.0).await?;
        Ok(Json(TenantList::from_rows(rows, limit)))
    }

    /// Get a tenant.
    #[oai(
        path = "/tenants/:tenant_id",
        method = "get",
        operation_id = "getTenant"
    )]
    async fn get_tenant(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
        tenant_id: Path<Uuid>,
    ) -> Result<Json<tenants::Tenant>, ApiError> {
        Ok(Json(tenants::get(&state.services.pool, tenant_id.0).await?))
    }

    /// Create an API key for a tenant. The full key is in this response only.
    #[oai(
        path = "/tenants/:tenant_id/api-keys",
        method = "post",
        operation_id = "createApiKey"
    )]
    async fn create_key(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        tenant_id: Path<Uuid>,
        body: Json<api_keys::CreateApiKey>,
    ) -> Result<Created<api_keys::CreatedApiKey>, ApiError> {
        let s = &state.services;
        let mut tx = s.pool.begin().await?;
        let created = api_keys::create(
            &mut tx,
            &s.secrets.api_key_pepper,
            Granter::Admin,
            &actor(req, ActorKind::Admin),
            tenant_id.0,
            body.0,
        )
        .await?;
        tx.commit().await?;
        Ok(Created(created))
    }

    /// List a tenant's API keys (never their secrets).
    #[oai(
        path = "/tenants/:tenant_id/api-keys",
        method = "get",
        operation_id = "listApiKeys"
    )]
    async fn list_keys(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
        tenant_id: Path<Uuid>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<ApiKeyList>, ApiError> {
        let limit = pagination::limit(limit.0)?;
        let pool = &state.services.pool;
        tenants::get(pool, tenant_id.0).await?;
        let rows = api_keys::list(pool, tenant_id.0, None, limit + 1, starting_after.0).await?;
        Ok(Json(ApiKeyList::from_rows(rows, limit)))
    }

    /// Revoke an API key: every API replica refuses it within seconds; it stays readable.
    #[oai(
        path = "/tenants/:tenant_id/api-keys/:id/revoke",
        method = "post",
        operation_id = "revokeApiKey"
    )]
    async fn revoke_key(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        tenant_id: Path<Uuid>,
        id: Path<Uuid>,
    ) -> Result<Json<api_keys::ApiKey>, ApiError> {
        let mut tx = state.services.pool.begin().await?;
        let key = api_keys::revoke(
            &mut tx,
            Granter::Admin,
            &actor(req, ActorKind::Admin),
            tenant_id.0,
            id.0,
        )
        .await?;
        tx.commit().await?;
        state.keys.forget(&key.key_id);
        Ok(Json(key))
    }

    /// Change a key's name, scopes, allowlist or rate limits.
    #[oai(
        path = "/tenants/:tenant_id/api-keys/:id",
        method = "patch",
        operation_id = "updateApiKey"
    )]
    async fn update_key(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        tenant_id: Path<Uuid>,
        id: Path<Uuid>,
        body: Json<api_keys::UpdateApiKey>,
    ) -> Result<Json<api_keys::ApiKey>, ApiError> {
        let mut tx = state.services.pool.begin().await?;
        let key = api_keys::update(
            &mut tx,
            Granter::Admin,
            &actor(req, ActorKind::Admin),
            tenant_id.0,
            id.0,
            body.0,
        )
        .await?;
        tx.commit().await?;
        state.keys.forget(&key.key_id);
        Ok(Json(key))
    }

    /// Roll a key: a new key with the same settings (shown once); the old one keeps working
    /// for the grace period.
    #[oai(
        path = "/tenants/:tenant_id/api-keys/:id/roll",
        method = "post",
        operation_id = "rollApiKey"
    )]
    async fn roll_key(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        tenant_id: Path<Uuid>,
        id: Path<Uuid>,
        body: Json<api_keys::RollApiKey>,
    ) -> Result<Created<api_keys::CreatedApiKey>, ApiError> {
        let s = &state.services;
        let mut tx = s.pool.begin().await?;
        let rolled = api_keys::roll(
            &mut tx,
            &s.secrets.api_key_pepper,
            Granter::Admin,
            &actor(req, ActorKind::Admin),
            tenant_id.0,
            id.0,
            body.0,
        )
        .await?;
        tx.commit().await?;
        if let Some(old) = rolled.api_key.rolled_from {
            state.keys.forget_id(old);
        }
        Ok(Created(rolled))
    }

    /// A key's requests and errors per operation and per hour.
    #[oai(
        path = "/tenants/:tenant_id/api-keys/:id/usage",
        method = "get",
        operation_id = "getApiKeyUsage"
    )]
    async fn key_usage(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
        tenant_id: Path<Uuid>,
        id: Path<Uuid>,
        /// Start of the report (default: 7 days ago; at most 90 days ago).
        since: Query<Option<Time>>,
    ) -> Result<Json<usage::KeyUsage>, ApiError> {
        let since = usage_since(since.0.map(Time::get));
        Ok(Json(
            usage::get(&state.services.pool, tenant_id.0, id.0, since).await?,
        ))
    }
}
