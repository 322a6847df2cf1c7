//! A tenant's logs (needs `logs:read`): its API requests, everything that failed, and where
//! the calling key stands on its rate limits.

use std::sync::Arc;
use switchyard_shared::input::Time;

use poem::{Request, web::Data};
use poem_openapi::{Object, OpenApi, param::Query};
use switchyard_shared::{
    api_keys::Scope,
    input::Text,
    logs::{
        errors::{self, ErrorLogEntry},
        requests::{self, RequestFilter, RequestLog, StatusClass, parse_request_id},
    },
    rate_limit::Decision,
};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState,
    auth::Partner,
    error::ApiError,
    json::Json,
    pagination::{self, list_type},
};

list_type!(RequestLogList, RequestLog);
list_type!(ErrorLogList, ErrorLogEntry);

/// Who a limit applies to.
#[derive(Clone, Copy, Debug, serde::Serialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum LimitSubject {
    /// The calling API key.
    ApiKey,
    /// Every key of the tenant together.
    Tenant,
}

/// One rate limit and where the caller stands on it.
#[derive(Object, serde::Serialize)]
pub struct RateLimitState {
    /// The policy name, as in the `RateLimit-Policy` header (`key-minute`, `key-hour`,
    /// `tenant-minute`).
    pub name: String,
    pub applies_to: LimitSubject,
    /// Requests allowed per window (a burst may use the whole window's quota at once).
    pub limit: u32,
    pub window_seconds: u32,
    /// Requests left right now (this request counted).
    pub remaining: u64,
    /// Seconds until the whole quota is available again.
    pub reset_seconds: u64,
}

/// Where the calling key and its tenant stand on every limit that applies to them.
#[derive(Object, serde::Serialize)]
pub struct RateLimits {
    pub api_key_id: Uuid,
    pub limits: Vec<RateLimitState>,
    /// True while the shared limiter (Redis) is unreachable and each API process limits on
    /// its own (so a cluster may admit up to one quota per process).
    pub degraded: bool,
}

pub struct LogsApi;

#[OpenApi(tag = "ApiTags::Logs")]
impl LogsApi {
    /// Your tenant's API requests in the key's mode, newest first, kept for
    /// `SWITCHYARD_REQUEST_LOG_RETENTION` (30 days by default). Entries appear within about
    /// a second. Never holds a request's body, query string or credentials.
    #[oai(
        path = "/v1/logs/requests",
        method = "get",
        operation_id = "listRequestLogs"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn requests(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Only responses of this class.
        status_class: Query<Option<StatusClass>>,
        /// Only requests whose path starts with this (`/v1/orders`).
        path: Query<Option<Text<1, 1024>>>,
        /// Only requests made with this API key.
        api_key_id: Query<Option<Uuid>>,
        /// Made at or after this time.
        #[oai(name = "created[gte]")]
        created_gte: Query<Option<Time>>,
        /// Made before this time.
        #[oai(name = "created[lt]")]
        created_lt: Query<Option<Time>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        /// The last `id` of the previous page (`req_…`).
        #[oai(validator(pattern = "^req_[0-9a-f]{32}$"))]
        starting_after: Query<Option<String>>,
    ) -> Result<Json<RequestLogList>, ApiError> {
        let p = auth.require(Scope::LogsRead)?;
        let limit = pagination::limit(limit.0)?;
        let starting_after = match starting_after.0 {
            None => None,
            Some(s) => Some(parse_request_id(&s).ok_or_else(|| {
                ApiError::from(switchyard_shared::Error::invalid(
                    "parameter_invalid",
                    "starting_after",
                    "`starting_after` must be a request id (`req_…`).",
                ))
            })?),
        };
        let filter = RequestFilter {
            status_class: status_class.0,
            path: path.0.map(Text::into_string),
            api_key_id: api_key_id.0,
            created_gte: created_gte.0.map(Time::get),
            created_lt: created_lt.0.map(Time::get),
        };
        let rows = requests::list(
            &state.services.pool,
            p.tenant_id,
            p.mode,
            &filter,
            limit + 1,
            starting_after,
        )
        .await?;
        Ok(Json(RequestLogList::from_rows(rows, limit)))
    }

    /// Everything that failed for your tenant in the key's mode, newest first: API requests
    /// answered 4xx/5xx, webhook deliveries given up on, inbound webhooks that failed or were
    /// rejected, sync runs that failed or partly failed — each with a severity, a stable
    /// `code` and where to read the object.
    #[oai(
        path = "/v1/logs/errors",
        method = "get",
        operation_id = "listErrorLogs"
    )]
    async fn errors(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        /// The last `id` of the previous page (an id no longer in the log pages on from the
        /// time the id was made).
        #[oai(validator(
            pattern = "^(req_[0-9a-f]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
        ))]
        starting_after: Query<Option<String>>,
    ) -> Result<Json<ErrorLogList>, ApiError> {
        let p = auth.require(Scope::LogsRead)?;
        let limit = pagination::limit(limit.0)?;
        let rows = errors::list(
            &state.services.pool,
            p.tenant_id,
            p.mode,
            limit + 1,
            starting_after.0.as_deref(),
        )
        .await?;
        Ok(Json(ErrorLogList::from_rows(rows, limit)))
    }

    /// Where the calling key and its tenant stand on every rate limit right now (this request
    /// counted) — the same figures as the `RateLimit` headers, for all limits at once.
    #[oai(
        path = "/v1/rate-limits",
        method = "get",
        operation_id = "getRateLimits"
    )]
    async fn rate_limits(
        &self,
        auth: Partner,
        req: &Request,
    ) -> Result<Json<RateLimits>, ApiError> {
        let p = auth.require(Scope::LogsRead)?;
        let decision = req
            .extensions()
            .get::<Decision>()
            .ok_or_else(ApiError::internal)?;
        let limits = decision
            .limits
            .iter()
            .map(|l| RateLimitState {
                name: l.name.to_owned(),
                applies_to: if l.name.starts_with("tenant") {
                    LimitSubject::Tenant
                } else {
                    LimitSubject::ApiKey
                },
                limit: l.quota,
                window_seconds: l.window_secs,
                remaining: l.remaining,
                reset_seconds: l.reset_secs,
            })
            .collect();
        Ok(Json(RateLimits {
            api_key_id: p.api_key_id,
            limits,
            degraded: decision.local,
        }))
    }
}
