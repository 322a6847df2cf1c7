//! Bulk replays: progress and cancellation (they are started on an endpoint).

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{OpenApi, param::Path};
use switchyard_shared::{api_keys::Scope, webhooks::replays};
use uuid::Uuid;

use super::ApiTags;
use crate::{AppState, auth::Partner, error::ApiError, idempotency::Idempotency, json::Json};

pub struct WebhookReplaysApi;

#[OpenApi(
    prefix_path = "/v1/webhook-replays",
    tag = "ApiTags::WebhookDeliveries"
)]
impl WebhookReplaysApi {
    /// A replay's progress: `total` matching messages, `processed`, `scheduled`, `state`.
    #[oai(path = "/:id", method = "get", operation_id = "getWebhookReplay")]
    async fn get(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<replays::Replay>, ApiError> {
        let p = auth.require(Scope::WebhooksRead)?;
        Ok(Json(
            replays::get(&state.services.pool, p.scope(), id.0).await?,
        ))
    }

    /// Stop a running replay after its current batch; what was scheduled stays scheduled.
    #[oai(
        path = "/:id/cancel",
        method = "post",
        operation_id = "cancelWebhookReplay"
    )]
    async fn cancel(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<replays::Replay>, ApiError> {
        let p = auth.require(Scope::WebhooksWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let replay = replays::cancel(&mut tx, p.scope(), id.0).await?;
        op.commit(tx, Json(replay)).await
    }
}
