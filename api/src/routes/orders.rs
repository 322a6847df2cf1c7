//! Partner orders: create, read, list, change status, cancel, update, history.

use std::sync::Arc;
use switchyard_shared::input::Time;

use poem::web::Data;
use poem_openapi::{OpenApi, param::Path, param::Query};
use switchyard_shared::{api_keys::Scope, orders, queue::EVENT_FAN_OUT};
use uuid::Uuid;

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

list_type!(OrderList, orders::Order);
list_type!(OrderHistory, orders::OrderHistoryEntry);

pub struct OrdersApi;

#[OpenApi(prefix_path = "/v1/orders", tag = "ApiTags::Orders")]
impl OrdersApi {
    /// Create an order (needs `orders:write`). The order, its `order.created` event and the
    /// event's delivery work are stored atomically before the response; webhooks follow within
    /// moments. Send an `Idempotency-Key` to retry safely.
    #[oai(path = "/", method = "post", operation_id = "createOrder")]
    async fn create(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        body: Json<orders::CreateOrder>,
    ) -> Result<Created<orders::Order>, ApiError> {
        let p = auth.require(Scope::OrdersWrite)?;
        let op = idem.begin(p).await?;
        // One statement writes the order, its event, the event's job and the idempotent answer.
        let (order, task) = orders::create(
            &state.services.pool,
            p.scope(),
            body.0,
            op.claim().map(|c| (c, &state.services.secrets.keyring)),
        )
        .await?;
        op.recorded();
        state.fast_path.push(EVENT_FAN_OUT, vec![task]);
        Ok(Created(order))
    }

    /// List orders, newest first (needs `orders:read`).
    #[oai(path = "/", method = "get", operation_id = "listOrders")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
        /// Only orders in this status.
        status: Query<Option<orders::OrderStatus>>,
        /// Only orders from this provider.
        provider: Query<Option<orders::input::ProviderSlug>>,
        /// Created at or after this time.
        #[oai(name = "created[gte]")]
        created_gte: Query<Option<Time>>,
        /// Created at or before this time.
        #[oai(name = "created[lte]")]
        created_lte: Query<Option<Time>>,
        /// Changed at or after this time (for incremental sync).
        #[oai(name = "updated[gte]")]
        updated_gte: Query<Option<Time>>,
    ) -> Result<Json<OrderList>, ApiError> {
        let p = auth.require(Scope::OrdersRead)?;
        let limit = pagination::limit(limit.0)?;
        let filter = orders::ListFilter {
            status: status.0,
            provider: provider.0.map(|p| p.into_string()),
            created_gte: created_gte.0.map(Time::get),
            created_lte: created_lte.0.map(Time::get),
            updated_gte: updated_gte.0.map(Time::get),
        };
        let rows = orders::list(
            &state.services.pool,
            p.scope(),
            &filter,
            limit + 1,
            starting_after.0,
        )
        .await?;
        Ok(Json(OrderList::from_rows(rows, limit)))
    }

    /// Get an order (needs `orders:read`).
    #[oai(path = "/:id", method = "get", operation_id = "getOrder")]
    async fn get(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<orders::Order>, ApiError> {
        let p = auth.require(Scope::OrdersRead)?;
        Ok(Json(
            orders::get(&state.services.pool, p.scope(), id.0).await?,
        ))
    }

    /// Change an open order's notes, delivery details or metadata (needs `orders:write`);
    /// emits `order.updated` (a change of nothing returns the order and emits nothing).
    #[oai(path = "/:id", method = "patch", operation_id = "updateOrder")]
    async fn update(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<orders::UpdateOrder>,
    ) -> Result<Json<orders::Order>, ApiError> {
        let p = auth.require(Scope::OrdersWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let (order, task) = orders::update(&mut tx, p.scope(), id.0, body.0).await?;
        let resp = op.commit(tx, Json(order)).await?;
        state
            .fast_path
            .push(EVENT_FAN_OUT, task.into_iter().collect());
        Ok(resp)
    }

    /// Move an order to a new status (needs `orders:write`); emits `order.<status>`. An
    /// illegal transition is a `409 invalid_transition` naming both statuses.
    #[oai(
        path = "/:id/status",
        method = "post",
        operation_id = "changeOrderStatus"
    )]
    async fn change_status(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<orders::ChangeStatus>,
    ) -> Result<Json<orders::Order>, ApiError> {
        let p = auth.require(Scope::OrdersWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let (order, task) = orders::change_status(&mut tx, p.scope(), id.0, body.0).await?;
        let resp = op.commit(tx, Json(order)).await?;
        state.fast_path.push(EVENT_FAN_OUT, vec![task]);
        Ok(resp)
    }

    /// Cancel an order that is not yet ready (needs `orders:write`); emits `order.cancelled`.
    #[oai(path = "/:id/cancel", method = "post", operation_id = "cancelOrder")]
    async fn cancel(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        /// `{}` or `{"reason": "…"}`.
        body: Json<orders::CancelOrder>,
    ) -> Result<Json<orders::Order>, ApiError> {
        let p = auth.require(Scope::OrdersWrite)?;
        let op = idem.begin(p).await?;
        let change = orders::ChangeStatus {
            status: orders::OrderStatus::Cancelled,
            reason: body.0.reason,
        };
        let mut tx = state.services.pool.begin().await?;
        let (order, task) = orders::change_status(&mut tx, p.scope(), id.0, change).await?;
        let resp = op.commit(tx, Json(order)).await?;
        state.fast_path.push(EVENT_FAN_OUT, vec![task]);
        Ok(resp)
    }

    /// The order's history: every event, oldest first (needs `orders:read`).
    #[oai(path = "/:id/events", method = "get", operation_id = "listOrderEvents")]
    async fn events(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        /// An event id: continue after it.
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<OrderHistory>, ApiError> {
        let p = auth.require(Scope::OrdersRead)?;
        let limit = pagination::limit(limit.0)?;
        let rows = orders::history(
            &state.services.pool,
            p.scope(),
            id.0,
            limit + 1,
            starting_after.0,
        )
        .await?;
        Ok(Json(OrderHistory::from_rows(rows, limit)))
    }
}
