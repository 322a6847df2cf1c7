//! Partner webhook endpoints and their attempt logs.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{OpenApi, param::Path, param::Query};
use switchyard_shared::{
    api_keys::Scope,
    destinations,
    queue::WEBHOOK_REPLAYS,
    webhooks::{attempts, credentials, deliveries, destination, endpoints, replays, stats},
};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState,
    auth::Partner,
    error::ApiError,
    idempotency::Idempotency,
    json::Json,
    pagination::{self, list_type},
    responses::{Created, NoContent},
};

list_type!(EndpointList, endpoints::Endpoint);
list_type!(AttemptList, attempts::Attempt);
list_type!(DeliveryList, deliveries::Delivery);

pub struct WebhookEndpointsApi;

#[OpenApi(
    prefix_path = "/v1/webhook-endpoints",
    tag = "ApiTags::WebhookEndpoints"
)]
impl WebhookEndpointsApi {
    /// Create an endpoint. The `whsec_` signing secret is in this response only.
    #[oai(path = "/", method = "post", operation_id = "createWebhookEndpoint")]
    async fn create(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        body: Json<endpoints::CreateEndpoint>,
    ) -> Result<Created<endpoints::CreatedEndpoint>, ApiError> {
        let p = auth.require(Scope::WebhooksWrite)?;
        let op = idem.begin(p).await?;
        let s = &state.services;
        let input = &body.0;
        let destination = destinations::prepare(
            &s.pool,
            p.scope(),
            state.transport.egress(),
            input.kind.unwrap_or_default(),
            input.url.as_deref(),
            input.config.clone(),
        )
        .await?;
        let mut tx = s.pool.begin().await?;
        let created = endpoints::create(
            &mut tx,
            &s.secrets.keyring,
            state.endpoint_rules(),
            p.scope(),
            destination,
            body.0,
        )
        .await?;
        op.commit(tx, Created(created)).await
    }

    /// List endpoints, newest first.
    #[oai(path = "/", method = "get", operation_id = "listWebhookEndpoints")]
    async fn list(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<EndpointList>, ApiError> {
        let p = auth.require(Scope::WebhooksRead)?;
        let limit = pagination::limit(limit.0)?;
        let rows =
            endpoints::list(&state.services.pool, p.scope(), limit + 1, starting_after.0).await?;
        Ok(Json(EndpointList::from_rows(rows, limit)))
    }

    /// Get an endpoint (without its secret).
    #[oai(path = "/:id", method = "get", operation_id = "getWebhookEndpoint")]
    async fn get(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<endpoints::Endpoint>, ApiError> {
        let p = auth.require(Scope::WebhooksRead)?;
        Ok(Json(
            endpoints::get(&state.services.pool, p.scope(), id.0).await?,
        ))
    }

    /// Update an endpoint: URL, filter, description, retry schedule, timeout, or status
    /// (`enabled` / `disabled`). Fields left out stay as they are.
    #[oai(
        path = "/:id",
        method = "patch",
        operation_id = "updateWebhookEndpoint"
    )]
    async fn update(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<endpoints::UpdateEndpoint>,
    ) -> Result<Json<endpoints::Endpoint>, ApiError> {
        let p = auth.require(Scope::WebhooksWrite)?;
        let op = idem.begin(p).await?;
        let s = &state.services;
        let destination = destination::prepare_change(
            &s.pool,
            p.scope(),
            state.transport.egress(),
            id.0,
            body.0.url.as_deref(),
            body.0.config.clone(),
        )
        .await?;
        let mut tx = s.pool.begin().await?;
        let endpoint = endpoints::update(
            &mut tx,
            &s.secrets.keyring,
            state.endpoint_rules(),
            p.scope(),
            id.0,
            destination,
            body.0,
        )
        .await?;
        op.commit(tx, Json(endpoint)).await
    }

    /// Rotate the signing secret. The new `whsec_` secret is in this response only; the old one
    /// keeps signing next to it (space-separated `v1,` tokens) for the grace period.
    #[oai(
        path = "/:id/secret/rotate",
        method = "post",
        operation_id = "rotateWebhookEndpointSecret"
    )]
    async fn rotate_secret(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<credentials::RotateSecret>,
    ) -> Result<Json<credentials::RotatedSecret>, ApiError> {
        let p = auth.require(Scope::WebhooksWrite)?;
        let op = idem.begin(p).await?;
        let s = &state.services;
        let mut tx = s.pool.begin().await?;
        let rotated =
            endpoints::rotate_secret(&mut tx, &s.secrets.keyring, p.scope(), id.0, body.0).await?;
        op.commit(tx, Json(rotated)).await
    }

    /// Render what the endpoint would send for an event — a sample `order.created` (send
    /// `{}`), or the `event_type` and `data` given — without sending anything: the webhook body, the Slack or
    /// Discord message, the email, the broker message or the API call, from the endpoint's
    /// templates. A template that fails on this event is a `422 template_render_failed`.
    #[oai(
        path = "/:id/preview",
        method = "post",
        operation_id = "previewWebhookEndpoint"
    )]
    async fn preview(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<destination::PreviewInput>,
    ) -> Result<Json<destination::Preview>, ApiError> {
        let p = auth.require(Scope::WebhooksRead)?;
        let op = idem.begin(p).await?;
        let pool = &state.services.pool;
        let shown = destination::preview(pool, p.scope(), id.0, body.0).await?;
        op.commit(pool.begin().await?, Json(shown)).await
    }

    /// Send a signed test message to the endpoint now and return the attempt (status, timings,
    /// response). Recorded in the attempt log; never retried. Uses the endpoint's timeout
    /// (15 s by default).
    #[oai(
        path = "/:id/test",
        method = "post",
        operation_id = "testWebhookEndpoint"
    )]
    async fn test(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<deliveries::TestSend>,
    ) -> Result<Json<attempts::Attempt>, ApiError> {
        let p = auth.require(Scope::WebhooksWrite)?;
        let op = idem.begin(p).await?;
        let s = &state.services;
        let sent = deliveries::send_test(
            &s.pool,
            &state.transport,
            &s.secrets.keyring,
            p.scope(),
            id.0,
            body.0,
        )
        .await?;
        let mut tx = s.pool.begin().await?;
        let attempt = deliveries::record_test(&mut tx, p.scope(), &sent).await?;
        op.commit(tx, Json(attempt)).await
    }

    /// Deliveries to this endpoint, newest first; `status` filters (`pending`, `succeeded`,
    /// `failed`, `cancelled`).
    #[oai(
        path = "/:id/deliveries",
        method = "get",
        operation_id = "listWebhookEndpointDeliveries"
    )]
    async fn deliveries(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        /// Only deliveries in this status.
        status: Query<Option<deliveries::DeliveryStatus>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<DeliveryList>, ApiError> {
        let p = auth.require(Scope::WebhooksRead)?;
        let limit = pagination::limit(limit.0)?;
        let pool = &state.services.pool;
        endpoints::get(pool, p.scope(), id.0).await?;
        let rows = deliveries::list_for_endpoint(
            pool,
            p.scope(),
            id.0,
            status.0,
            limit + 1,
            starting_after.0,
        )
        .await?;
        Ok(Json(DeliveryList::from_rows(rows, limit)))
    }

    /// Statistics of the last `1h`, `24h` (default) or `7d`: success rate, latency
    /// percentiles, errors by class, deliveries by status, attempts over time.
    #[oai(
        path = "/:id/stats",
        method = "get",
        operation_id = "getWebhookEndpointStats"
    )]
    async fn stats(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        /// The span covered (default `24h`).
        window: Query<Option<stats::StatsWindow>>,
    ) -> Result<Json<stats::EndpointStats>, ApiError> {
        let p = auth.require(Scope::WebhooksRead)?;
        let pool = &state.services.pool;
        endpoints::get(pool, p.scope(), id.0).await?;
        let window = window.0.unwrap_or_default();
        Ok(Json(
            stats::for_endpoint(pool, p.scope(), id.0, window).await?,
        ))
    }

    /// Replay the messages of a time range to this endpoint: those whose delivery ended with
    /// one of `statuses` (default `failed`), and with `include_missing` those it never had
    /// (e.g. it was added later). Counted at once (`dry_run` stops there), then run in the
    /// background at `rate_per_second`; follow it at `/v1/webhook-replays/{id}`.
    #[oai(
        path = "/:id/replays",
        method = "post",
        operation_id = "createWebhookReplay"
    )]
    async fn replay(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<replays::CreateReplay>,
    ) -> Result<Created<replays::Replay>, ApiError> {
        let p = auth.require(Scope::WebhooksWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let (replay, task) = replays::create(&mut tx, p.scope(), id.0, body.0).await?;
        let resp = op.commit(tx, Created(replay)).await?;
        if let Some(task) = task {
            state.fast_path.push(WEBHOOK_REPLAYS, vec![task]);
        }
        Ok(resp)
    }

    /// Delete an endpoint; deliveries still waiting for it are cancelled.
    #[oai(
        path = "/:id",
        method = "delete",
        operation_id = "deleteWebhookEndpoint"
    )]
    async fn delete(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let p = auth.require(Scope::WebhooksWrite)?;
        let mut tx = state.services.pool.begin().await?;
        endpoints::delete(&mut tx, p.scope(), id.0).await?;
        tx.commit().await?;
        Ok(NoContent)
    }

    /// Delivery attempts to this endpoint, newest first.
    #[oai(
        path = "/:id/attempts",
        method = "get",
        operation_id = "listWebhookAttempts"
    )]
    async fn attempts(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<AttemptList>, ApiError> {
        let p = auth.require(Scope::WebhooksRead)?;
        let limit = pagination::limit(limit.0)?;
        let pool = &state.services.pool;
        endpoints::get(pool, p.scope(), id.0).await?;
        let rows =
            attempts::list_for_endpoint(pool, p.tenant_id, id.0, limit + 1, starting_after.0)
                .await?;
        Ok(Json(AttemptList::from_rows(rows, limit)))
    }
}
