//! Partner events: post your own (`ncr.created`, `payment.completed`, …), list the outbox, and
//! see where one event went.

use std::sync::Arc;
use switchyard_shared::input::Time;

use poem::web::Data;
use poem_openapi::{OpenApi, param::Path, param::Query};
use switchyard_shared::{
    api_keys::Scope,
    events::{self, EventId, types::EventTypeName},
    queue::EVENT_FAN_OUT,
    webhooks::deliveries::{self, Delivery},
};

use super::ApiTags;
use crate::{
    AppState,
    auth::Partner,
    error::ApiError,
    idempotency::Idempotency,
    json::Json,
    pagination::{self, list_type},
    responses::Created,
};

list_type!(EventList, events::Event);

/// Most deliveries shown with one event.
const DELIVERIES_SHOWN: i64 = 500;

/// An event and where it went: one delivery per endpoint that receives it.
#[derive(serde::Serialize, poem_openapi::Object)]
pub struct EventDetail {
    #[oai(flatten)]
    #[serde(flatten)]
    pub event: events::Event,
    /// Its deliveries, one per endpoint, oldest first (empty until the event is fanned out,
    /// which takes moments).
    pub deliveries: Vec<Delivery>,
    /// More than 500 endpoints receive it: the list shows the first 500.
    pub has_more_deliveries: bool,
}

pub struct EventsApi;

#[OpenApi(prefix_path = "/v1/events", tag = "ApiTags::Events")]
impl EventsApi {
    /// Post an event of your own (needs `events:write`). Its `type` must be in your catalog
    /// (`POST /v1/event-types`), and its `data` must match the type's JSON Schema if it has
    /// one. The event and its fan-out are stored before the response; every endpoint whose
    /// filter matches receives it signed, with retries, like order events. Send an
    /// `Idempotency-Key` to retry safely.
    #[oai(path = "/", method = "post", operation_id = "createEvent")]
    async fn create(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        body: Json<events::CreateEvent>,
    ) -> Result<Created<events::Event>, ApiError> {
        let p = auth.require(Scope::EventsWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let (event, task) = events::publish(&mut tx, p.scope(), body.0).await?;
        let resp = op.commit(tx, Created(event)).await?;
        state.fast_path.push(EVENT_FAN_OUT, vec![task]);
        Ok(resp)
    }

    /// List events, newest first (needs `events:read`): yours, order events, operational
    /// notices and test sends.
    #[oai(path = "/", method = "get", operation_id = "listEvents")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        /// An event id: continue after it.
        starting_after: Query<Option<EventId>>,
        /// Only events of this type.
        #[oai(name = "type")]
        event_type: Query<Option<EventTypeName>>,
        /// Created at or after this time.
        #[oai(name = "created[gte]")]
        created_gte: Query<Option<Time>>,
        /// Created at or before this time.
        #[oai(name = "created[lte]")]
        created_lte: Query<Option<Time>>,
    ) -> Result<Json<EventList>, ApiError> {
        let p = auth.require(Scope::EventsRead)?;
        let limit = pagination::limit(limit.0)?;
        let filter = events::EventFilter {
            event_type: event_type.0.map(EventTypeName::into_string),
            created_gte: created_gte.0.map(Time::get),
            created_lte: created_lte.0.map(Time::get),
        };
        let rows = events::list(
            &state.services.pool,
            p.scope(),
            &filter,
            limit + 1,
            starting_after.0.map(|id| id.uuid()),
        )
        .await?;
        Ok(Json(EventList::from_rows(rows, limit)))
    }

    /// Get an event and its deliveries, one per endpoint (needs `events:read`).
    #[oai(path = "/:id", method = "get", operation_id = "getEvent")]
    async fn get(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<EventId>,
    ) -> Result<Json<EventDetail>, ApiError> {
        let p = auth.require(Scope::EventsRead)?;
        let pool = &state.services.pool;
        let event = events::get(pool, p.scope(), id.0.uuid()).await?;
        let rows =
            deliveries::list_for_event(pool, p.scope(), id.0.uuid(), DELIVERIES_SHOWN + 1).await?;
        let (deliveries, has_more_deliveries) = pagination::page(rows, DELIVERIES_SHOWN);
        Ok(Json(EventDetail {
            event,
            deliveries,
            has_more_deliveries,
        }))
    }
}
