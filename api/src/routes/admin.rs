//! Operator API: tenants, their API keys, and the state of the queues.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Path, param::Query};
use serde::Serialize;
use switchyard_shared::{api_keys, jobs, queue, tenants};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState,
    auth::Admin,
    error::ApiError,
    json::Json,
    pagination::{self, list_type},
    responses::Created,
};

list_type!(TenantList, tenants::Tenant);
list_type!(ApiKeyList, api_keys::ApiKey);

#[derive(Serialize, Object)]
pub struct QueueState {
    pub queue: String,
    /// Jobs waiting in the ledger (due now or later).
    pub pending: i64,
    /// Pending jobs whose time has come.
    pub due: i64,
    /// Jobs pushed to Redis, not yet claimed.
    pub queued: i64,
    pub running: i64,
    pub oldest_due_age_seconds: f64,
    /// Ready tasks in Redis (bounded by the high-water mark).
    pub redis_ready: u64,
    pub high_water_mark: u32,
}

#[derive(Serialize, Object)]
pub struct QueueList {
    pub data: Vec<QueueState>,
}

pub struct AdminApi;

#[OpenApi(prefix_path = "/admin/v1", tag = "ApiTags::Admin")]
impl AdminApi {
    /// Create a tenant.
    #[oai(path = "/tenants", method = "post", operation_id = "createTenant")]
    async fn create_tenant(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
        body: Json<tenants::CreateTenant>,
    ) -> Result<Created<tenants::Tenant>, ApiError> {
        Ok(Created(
            tenants::create(&state.services.pool, &body.0.name).await?,
        ))
    }

    /// List tenants, newest first.
    #[oai(path = "/tenants", method = "get", operation_id = "listTenants")]
    async fn list_tenants(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
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
        state: Data<&Arc<AppState>>,
        tenant_id: Path<Uuid>,
        body: Json<api_keys::CreateApiKey>,
    ) -> Result<Created<api_keys::CreatedApiKey>, ApiError> {
        let s = &state.services;
        Ok(Created(
            api_keys::create(&s.pool, &s.secrets.api_key_pepper, tenant_id.0, body.0).await?,
        ))
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
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<ApiKeyList>, ApiError> {
        let limit = pagination::limit(limit.0)?;
        let pool = &state.services.pool;
        tenants::get(pool, tenant_id.0).await?;
        let rows = api_keys::list(pool, tenant_id.0, limit + 1, starting_after.0).await?;
        Ok(Json(ApiKeyList::from_rows(rows, limit)))
    }

    /// Revoke an API key: it stops working at once.
    #[oai(
        path = "/tenants/:tenant_id/api-keys/:key_id",
        method = "delete",
        operation_id = "revokeApiKey"
    )]
    async fn revoke_key(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
        tenant_id: Path<Uuid>,
        key_id: Path<Uuid>,
    ) -> Result<Json<api_keys::ApiKey>, ApiError> {
        Ok(Json(
            api_keys::revoke(&state.services.pool, tenant_id.0, key_id.0).await?,
        ))
    }

    /// Work per queue: the ledger's unfinished jobs and Redis' ready window.
    #[oai(path = "/queues", method = "get", operation_id = "listQueues")]
    async fn queues(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
    ) -> Result<Json<QueueList>, ApiError> {
        let s = &state.services;
        let mut data = Vec::new();
        for q in jobs::queue_stats(&s.pool).await? {
            let redis_ready = s
                .queues
                .depth(&q.queue)
                .await
                .map_err(switchyard_shared::Error::from)?;
            data.push(QueueState {
                queue: q.queue,
                pending: q.pending,
                due: q.due,
                queued: q.queued,
                running: q.running,
                oldest_due_age_seconds: q.oldest_due_age_seconds,
                redis_ready,
                high_water_mark: s.queues.high_water_mark(),
            });
        }
        debug_assert_eq!(data.len(), queue::ALL_QUEUES.len());
        Ok(Json(QueueList { data }))
    }
}
