//! Single deliveries: inspect and retry.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{OpenApi, param::Path};
use switchyard_shared::{
    api_keys::Scope,
    webhooks::{deliveries, endpoints},
};
use uuid::Uuid;

use super::ApiTags;
use crate::{AppState, auth::Partner, error::ApiError, idempotency::Idempotency, json::Json};

pub struct WebhookDeliveriesApi;

#[OpenApi(
    prefix_path = "/v1/webhook-deliveries",
    tag = "ApiTags::WebhookDeliveries"
)]
impl WebhookDeliveriesApi {
    /// Get a delivery.
    #[oai(path = "/:id", method = "get", operation_id = "getWebhookDelivery")]
    async fn get(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<deliveries::Delivery>, ApiError> {
        let p = auth.require(Scope::WebhooksRead)?;
        Ok(Json(
            deliveries::get(&state.services.pool, p.scope(), id.0).await?,
        ))
    }

    /// Send a finished delivery again (same `webhook-id`, the endpoint's full retry schedule).
    /// A pending delivery is already scheduled (`409 delivery_pending`); a disabled endpoint
    /// must be enabled first (`409 endpoint_disabled`).
    #[oai(
        path = "/:id/retry",
        method = "post",
        operation_id = "retryWebhookDelivery"
    )]
    async fn retry(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<deliveries::Delivery>, ApiError> {
        let p = auth.require(Scope::WebhooksWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let max_attempts = endpoints::MANUAL_MAX_ATTEMPTS;
        let delivery = deliveries::retry(&mut tx, p.scope(), id.0, max_attempts).await?;
        op.commit(tx, Json(delivery)).await
    }
}
