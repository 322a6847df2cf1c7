//! The tenant's event type catalog.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{OpenApi, param::Path};
use switchyard_shared::{api_keys::Scope, events::catalog};

use super::ApiTags;
use crate::{
    AppState, auth::Partner, error::ApiError, idempotency::Idempotency, json::Json,
    responses::Created,
};

/// Every event type: the built-in ones, then yours.
#[derive(poem_openapi::Object, serde::Serialize)]
pub struct EventTypeList {
    pub data: Vec<catalog::EventType>,
}

pub struct EventTypesApi;

#[OpenApi(prefix_path = "/v1/event-types", tag = "ApiTags::EventTypes")]
impl EventTypesApi {
    /// List the event types endpoints can subscribe to.
    #[oai(path = "/", method = "get", operation_id = "listEventTypes")]
    async fn list(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
    ) -> Result<Json<EventTypeList>, ApiError> {
        let p = auth.require(Scope::WebhooksRead)?;
        Ok(Json(EventTypeList {
            data: catalog::list(&state.services.pool, p.scope()).await?,
        }))
    }

    /// Add an event type of your own (description, optional JSON Schema of `data`).
    #[oai(path = "/", method = "post", operation_id = "createEventType")]
    async fn create(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        body: Json<catalog::CreateEventType>,
    ) -> Result<Created<catalog::EventType>, ApiError> {
        let p = auth.require(Scope::WebhooksWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let created = catalog::create(&mut tx, p.scope(), body.0).await?;
        op.commit(tx, Created(created)).await
    }

    /// Change your event type's description, schema or deprecated flag.
    #[oai(path = "/:name", method = "patch", operation_id = "updateEventType")]
    async fn update(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        name: Path<switchyard_shared::events::types::EventTypeName>,
        body: Json<catalog::UpdateEventType>,
    ) -> Result<Json<catalog::EventType>, ApiError> {
        let p = auth.require(Scope::WebhooksWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let updated = catalog::update(&mut tx, p.scope(), &name.0, body.0).await?;
        op.commit(tx, Json(updated)).await
    }
}
