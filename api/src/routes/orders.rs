//! Partner orders.

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::{OpenApi, param::Path};
use switchyard_shared::{orders, queue::ORDER_EVENTS};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState, auth::Partner, error::ApiError, idempotency::ClaimHandle, json::Json,
    responses::Created,
};

pub struct OrdersApi;

#[OpenApi(prefix_path = "/v1/orders", tag = "ApiTags::Orders")]
impl OrdersApi {
    /// Create an order. The order, its `order.created` event and the event's delivery work are
    /// stored atomically before the response; webhooks follow within moments.
    #[oai(path = "/", method = "post", operation_id = "createOrder")]
    async fn create(
        &self,
        auth: Partner,
        req: &Request,
        state: Data<&Arc<AppState>>,
        body: Json<orders::CreateOrder>,
    ) -> Result<Created<orders::Order>, ApiError> {
        let p = auth.require("orders:write")?;
        let claim = req.extensions().get::<ClaimHandle>();
        let (order, task) = orders::create(
            &state.services.pool,
            &state.services.secrets.keyring,
            p.tenant_id,
            body.0,
            claim.map(|c| &c.claim),
        )
        .await?;
        if let Some(c) = claim {
            c.mark_recorded();
        }
        state.fast_path.push(ORDER_EVENTS, vec![task]);
        Ok(Created(order))
    }

    /// Get an order.
    #[oai(path = "/:id", method = "get", operation_id = "getOrder")]
    async fn get(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<orders::Order>, ApiError> {
        let p = auth.require("orders:read")?;
        Ok(Json(
            orders::get(&state.services.pool, p.tenant_id, id.0).await?,
        ))
    }
}
