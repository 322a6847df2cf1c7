//! Inbound webhooks: the URL partners' systems post to (no API key: the unguessable token and
//! the signature authenticate), and the partner API over what was received.

use std::sync::Arc;
use switchyard_shared::input::Time;

use poem::{Request, RequestBody, http::StatusCode, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::{ParsePayload, Payload},
    registry::{MetaSchema, MetaSchemaRef},
};
use serde::Serialize;
use switchyard_shared::{
    api_keys::Scope,
    inbound::{
        self,
        events::{self, InboundEvent, InboundStatus},
        receive::{self, Incoming, Receipt},
    },
    integrations::{self, Integration},
    queue::INBOUND_EVENTS,
    telemetry::metrics as m,
};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState,
    auth::Partner,
    error::ApiError,
    idempotency::Idempotency,
    json::{Json, MAX_BODY_BYTES},
    pagination::{self, list_type},
};

list_type!(InboundEventList, InboundEvent);

/// The raw request body: taken as sent (the signature covers the exact bytes), whatever its
/// `Content-Type` says; one that is not JSON is refused and recorded.
pub struct RawBody(pub Vec<u8>);

impl Payload for RawBody {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(_content_type: &str) -> bool {
        true
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("object")))
    }
}

impl ParsePayload for RawBody {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let bytes = body
            .take()?
            .into_bytes_limit(MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("The request body exceeds {MAX_BODY_BYTES} bytes."),
                )
            })?;
        Ok(RawBody(bytes.to_vec()))
    }
}

/// Unlike the stock payload extractor, a request without `Content-Type` is not refused here:
/// the domain records it as rejected, with the reason.
impl<'a> poem_openapi::ApiExtractor<'a> for RawBody {
    const TYPES: &'static [poem_openapi::ApiExtractorType] =
        &[poem_openapi::ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut poem_openapi::registry::Registry) {
        <Self as Payload>::register(registry);
    }

    fn request_meta() -> Option<poem_openapi::registry::MetaRequest> {
        Some(poem_openapi::registry::MetaRequest {
            description: None,
            content: vec![poem_openapi::registry::MetaMediaType {
                content_type: <Self as Payload>::CONTENT_TYPE,
                schema: <Self as Payload>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: poem_openapi::ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        <Self as ParsePayload>::from_request(request, body).await
    }
}

#[derive(Serialize, Object)]
pub struct InboundReceipt {
    /// The inbound event (`GET /v1/inbound-events/{id}`); for a duplicate, the first one's.
    pub id: Uuid,
    /// True when the sender's event id was received before: nothing was stored again.
    pub duplicate: bool,
}

#[derive(ApiResponse)]
pub enum InboundAnswer {
    /// Stored; it is processed in the background.
    #[oai(status = 202)]
    Accepted(Json<InboundReceipt>),
    /// A duplicate of a request already received.
    #[oai(status = 200)]
    Duplicate(Json<InboundReceipt>),
}

pub struct InboundApi;

#[OpenApi(tag = "ApiTags::Inbound")]
impl InboundApi {
    /// Receive a webhook for an integration. The request is verified by the integration's
    /// scheme and stored raw before the answer; a failed verification is `401` (recorded as
    /// rejected), a repeated event id `200` without processing it again.
    #[oai(
        path = "/inbound/:token",
        method = "post",
        operation_id = "receiveInboundWebhook"
    )]
    async fn receive(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        /// The token of the integration's `inbound_url` (`in_…`).
        token: Path<String>,
        body: RawBody,
    ) -> Result<InboundAnswer, ApiError> {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_ascii_lowercase(), v)
            })
            .collect();
        let s = &state.services;
        let incoming = Incoming {
            token: &token.0,
            headers,
            body: &body.0,
        };
        let received = receive::receive(&s.pool, &s.secrets.keyring, incoming)
            .await
            .map_err(ApiError::from);
        let outcome = match &received {
            Ok(Receipt::Accepted { .. }) => Some("accepted"),
            Ok(Receipt::Duplicate { .. }) => Some("duplicate"),
            // Refused as sent (signature, body, media type); not an unknown URL or our fault.
            Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
                Some("rejected")
            }
            Err(_) => None,
        };
        if let Some(outcome) = outcome {
            metrics::counter!(m::INBOUND_EVENTS, "outcome" => outcome).increment(1);
        }
        match received? {
            Receipt::Accepted { id, task } => {
                state.fast_path.push(INBOUND_EVENTS, vec![task]);
                Ok(InboundAnswer::Accepted(Json(InboundReceipt {
                    id,
                    duplicate: false,
                })))
            }
            Receipt::Duplicate { id } => Ok(InboundAnswer::Duplicate(Json(InboundReceipt {
                id,
                duplicate: true,
            }))),
        }
    }
}

pub struct InboundEventsApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Inbound")]
impl InboundEventsApi {
    /// Inbound events, newest first.
    #[oai(
        path = "/inbound-events",
        method = "get",
        operation_id = "listInboundEvents"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Only this integration's.
        integration_id: Query<Option<Uuid>>,
        /// Only events in this status.
        status: Query<Option<InboundStatus>>,
        /// Received at or after this time.
        since: Query<Option<Time>>,
        /// Received before this time.
        until: Query<Option<Time>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<InboundEventList>, ApiError> {
        let p = auth.require(Scope::IntegrationsRead)?;
        let limit = pagination::limit(limit.0)?;
        let filter = events::Filter {
            integration_id: integration_id.0,
            status: status.0,
            since: since.0.map(Time::get),
            until: until.0.map(Time::get),
        };
        let rows = events::list(
            &state.services.pool,
            p.scope(),
            filter,
            limit + 1,
            starting_after.0,
        )
        .await?;
        Ok(Json(InboundEventList::from_rows(rows, limit)))
    }

    /// An inbound event: headers (credentials redacted), the raw body, the verification
    /// result and the processing outcome.
    #[oai(
        path = "/inbound-events/:id",
        method = "get",
        operation_id = "getInboundEvent"
    )]
    async fn get(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<InboundEvent>, ApiError> {
        let p = auth.require(Scope::IntegrationsRead)?;
        Ok(Json(
            events::get(&state.services.pool, p.scope(), id.0).await?,
        ))
    }

    /// Process an inbound event again (a failed, ignored or completed one).
    #[oai(
        path = "/inbound-events/:id/retry",
        method = "post",
        operation_id = "retryInboundEvent"
    )]
    async fn retry(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<InboundEvent>, ApiError> {
        let p = auth.require(Scope::IntegrationsWrite)?;
        let op = idem.begin(p).await?;
        let s = &state.services;
        let mut tx = s.pool.begin().await?;
        let task = events::retry(&mut tx, p.scope(), id.0).await?;
        // Read in the transaction: the answer (and its stored replay) shows the retry.
        let event = events::get(&mut *tx, p.scope(), id.0).await?;
        let answer = op.commit(tx, Json(event)).await?;
        state.fast_path.push(INBOUND_EVENTS, vec![task]);
        Ok(answer)
    }

    /// Issue a new inbound URL for the integration; the old one stops working at once.
    #[oai(
        path = "/integrations/:id/inbound/rotate-url",
        method = "post",
        operation_id = "rotateIntegrationInboundUrl"
    )]
    async fn rotate_url(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<Integration>, ApiError> {
        let p = auth.require(Scope::IntegrationsWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        inbound::rotate_token(&mut tx, p.scope(), id.0).await?;
        let integration = integrations::get(&mut *tx, p.scope(), id.0).await?;
        op.commit(tx, Json(integration)).await
    }
}
