//! A tenant's own audit log: who created, rolled, revoked or changed its keys, and what the
//! operators did to it.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{OpenApi, param::Query};
use switchyard_shared::{api_keys::Scope, audit};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState,
    auth::Partner,
    error::ApiError,
    json::Json,
    pagination::{self, list_type},
};

list_type!(AuditEventList, audit::AuditEvent);

pub struct AuditEventsApi;

#[OpenApi(prefix_path = "/v1/audit-events", tag = "ApiTags::AuditEvents")]
impl AuditEventsApi {
    /// List your tenant's audit events, newest first (needs `audit:read`). A test key sees the
    /// events of test keys only; tenant-wide events belong to live mode.
    #[oai(path = "/", method = "get", operation_id = "listAuditEvents")]
    async fn list(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<AuditEventList>, ApiError> {
        let p = auth.require(Scope::AuditRead)?;
        let limit = pagination::limit(limit.0)?;
        let rows = audit::list(
            &state.services.pool,
            p.tenant_id,
            Some(p.mode),
            limit + 1,
            starting_after.0,
        )
        .await?;
        Ok(Json(AuditEventList::from_rows(rows, limit)))
    }
}
