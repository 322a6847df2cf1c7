//! The API's one error type and its single mapping to HTTP: RFC 9457 `application/problem+json`
//! with a stable `code`, the offending `param` where there is one, and the `request_id`.
//! Every error on the way out, ours or the framework's, passes through [`ProblemMiddleware`].

use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response,
    http::{HeaderValue, StatusCode, header},
};
use poem_openapi::{
    ApiResponse, Object, OperationId,
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::Type,
};
use serde::Serialize;
use switchyard_shared::idempotency::StoredResponse;

use crate::request_id::RequestId;

pub const PROBLEM_JSON: &str = "application/problem+json";
const PROBLEM_TYPE_BASE: &str = "https://switchyard.dev/problems/";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, Object)]
pub struct Problem {
    /// URI identifying the problem type: `https://switchyard.dev/problems/<code>`.
    pub r#type: String,
    pub title: String,
    pub status: u16,
    /// Human-readable explanation of this occurrence.
    pub detail: String,
    /// Stable machine-readable error code.
    pub code: String,
    /// The request field at fault (`items[0].quantity`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[oai(nullable)]
    pub param: Option<String>,
    pub request_id: String,
}

/// The `code` of a problem response, kept on the response for the request log.
#[derive(Clone, Copy, Debug)]
pub struct ProblemCode(pub &'static str);

#[derive(Debug, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub param: Option<String>,
    pub retry_after: Option<u32>,
    /// Not an error: the stored first response of an idempotent request, answered instead of
    /// running the handler again (see `crate::idempotency`). It leaves the handler the way
    /// errors do, so a replay can only come after the route's authorization.
    pub replay: Option<Box<StoredResponse>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            param: None,
            retry_after: None,
            replay: None,
        }
    }

    /// Answers with `stored` (an idempotent replay).
    pub fn replay(stored: StoredResponse) -> Self {
        ApiError {
            replay: Some(Box::new(stored)),
            ..ApiError::new(StatusCode::OK, "replayed", "Replay of the first response.")
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side; it has been logged. Retrying is safe.",
        )
    }

    pub fn unavailable() -> Self {
        ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "A backing store is unreachable; nothing was changed. Retry shortly.",
            )
        }
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    pub fn into_problem_response(self, request_id: &str) -> Response {
        if let Some(stored) = &self.replay {
            return crate::idempotency::replay_response(stored);
        }
        let problem = Problem {
            r#type: format!("{PROBLEM_TYPE_BASE}{}", self.code),
            title: self.title().to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code.to_owned(),
            param: self.param,
            request_id: request_id.to_owned(),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = Response::builder()
            .status(self.status)
            .content_type(PROBLEM_JSON)
            .body(body);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.set_data(ProblemCode(self.code));
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchyard\""),
            );
        }
        resp
    }
}

impl From<switchyard_shared::Error> for ApiError {
    fn from(e: switchyard_shared::Error) -> Self {
        use switchyard_shared::Error as E;
        match e {
            E::Invalid {
                code,
                param,
                detail,
            } => ApiError {
                param,
                ..ApiError::new(StatusCode::BAD_REQUEST, code, detail)
            },
            E::NotFound { code, detail } => ApiError::new(StatusCode::NOT_FOUND, code, detail),
            E::Conflict {
                code,
                param,
                detail,
            } => ApiError {
                param,
                ..ApiError::new(StatusCode::CONFLICT, code, detail)
            },
            E::Unprocessable {
                code,
                param,
                detail,
            } => ApiError {
                param,
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
            },
            E::Unauthenticated { code, detail } => {
                ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
            }
            E::Forbidden { code, detail } => ApiError::new(StatusCode::FORBIDDEN, code, detail),
            E::UnsupportedMediaType { detail } => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                detail,
            ),
            ref infra if infra.is_unavailable() => {
                tracing::warn!(error = %infra, "store unavailable");
                ApiError::unavailable()
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        switchyard_shared::Error::from(e).into()
    }
}

impl From<ApiError> for poem::Error {
    fn from(e: ApiError) -> Self {
        let status = e.status;
        poem::Error::new(e, status)
    }
}

/// Documents every error a partner may see: all problem documents share one schema.
impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let described = [
            (
                400,
                "Invalid request: malformed JSON, missing or invalid field (`param` names it).",
            ),
            (401, "Missing, invalid, expired or revoked credentials."),
            (403, "The credentials lack a required scope."),
            (404, "No such resource for this tenant, or no such route."),
            (
                409,
                "Conflicts with the current state (duplicate `external_id`, illegal status \
                 transition, or a request with the same `Idempotency-Key` still running).",
            ),
            (413, "Request body too large."),
            (
                422,
                "Well-formed but not processable: the `Idempotency-Key` was used before with \
                 different parameters, or a template does not parse or render (`param` names \
                 it; the detail gives the line and column).",
            ),
            (
                429,
                "Rate limit exceeded: honour `Retry-After`; see the `RateLimit` header.",
            ),
            (415, "Content-Type must be application/json."),
            (
                503,
                "A backing store is unreachable; nothing was changed. Honour `Retry-After`.",
            ),
        ];
        MetaResponses {
            responses: described
                .into_iter()
                .map(|(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: PROBLEM_JSON,
                        schema: Problem::schema_ref(),
                    }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

/// The methods each documented path template allows (for the `Allow` header of a `405`).
#[derive(Debug, Default)]
pub struct RouteMethods(Vec<(Vec<String>, String)>);

impl RouteMethods {
    /// Reads them from the OpenAPI document the server serves.
    pub fn from_spec(spec: &str) -> Self {
        let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let mut routes = Vec::new();
        if let Some(paths) = spec["paths"].as_object() {
            for (path, ops) in paths {
                let mut methods: Vec<String> = ops
                    .as_object()
                    .map(|o| o.keys().map(|m| m.to_ascii_uppercase()).collect())
                    .unwrap_or_default();
                methods.sort();
                let segments = path.split('/').map(str::to_owned).collect();
                routes.push((segments, methods.join(", ")));
            }
        }
        RouteMethods(routes)
    }

    /// The `Allow` value of the documented route `path` falls under.
    fn allowed(&self, path: &str) -> Option<&str> {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        self.0.iter().find_map(|(segments, methods)| {
            let matches = segments.len() == parts.len()
                && segments
                    .iter()
                    .zip(&parts)
                    .all(|(s, p)| s == p || (s.starts_with('{') && !p.is_empty()));
            matches.then_some(methods.as_str())
        })
    }
}

/// Turns any error raised below it into a problem document carrying the request id (a `405`
/// also says which methods the route allows).
pub struct ProblemMiddleware(pub std::sync::Arc<RouteMethods>);

impl<E: Endpoint> Middleware<E> for ProblemMiddleware {
    type Output = ProblemEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        ProblemEndpoint(ep, self.0.clone())
    }
}

pub struct ProblemEndpoint<E>(E, std::sync::Arc<RouteMethods>);

impl<E: Endpoint> Endpoint for ProblemEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let path = req.uri().path().to_owned();
        match self.0.call(req).await {
            Ok(resp) => Ok(resp.into_response()),
            Err(err) => {
                // Keep the operation for metrics and usage counts.
                let operation = err.data::<OperationId>().cloned();
                let not_allowed = err.is::<poem::error::MethodNotAllowedError>();
                let mut resp = to_api_error(err).into_problem_response(&request_id);
                if let Some(op) = operation {
                    resp.set_data(op);
                }
                if let Some(allow) = self.1.allowed(&path).filter(|_| not_allowed)
                    && let Ok(v) = HeaderValue::from_str(allow)
                {
                    resp.headers_mut().insert(header::ALLOW, v);
                }
                Ok(resp)
            }
        }
    }
}

/// Maps framework errors (routing, content type, parameters, bodies) to our codes.
fn to_api_error(err: poem::Error) -> ApiError {
    use poem_openapi::error::{
        AuthorizationError, ContentTypeError, ParseParamError, ParsePathError,
        ParseRequestPayloadError,
    };
    if err.is::<ApiError>() {
        return err.downcast::<ApiError>().expect("checked by is()");
    }
    if let Some(e) = err.downcast_ref::<ParseParamError>() {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            format!("Parameter `{}` is invalid: {}.", e.name, e.reason),
        )
        .with_param(e.name);
    }
    // A malformed id in the path cannot name an existing resource (poem-openapi also names
    // path parameters `param0`, … internally, so there is no field to point at).
    if err.is::<ParsePathError>() {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "No such resource: the id in the path is not a valid id.",
        );
    }
    if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.reason.clone());
    }
    if let Some(e) = err.downcast_ref::<ContentTypeError>() {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("{e}; send `Content-Type: application/json`."),
        );
    }
    if err.is::<AuthorizationError>() {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
        );
    }
    if err.is::<poem::error::NotFoundError>() {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "No such route; see /docs for the API reference.",
        );
    }
    if err.is::<poem::error::MethodNotAllowedError>() {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This route does not support that HTTP method.",
        );
    }
    let status = err.status();
    if status.is_server_error() {
        tracing::error!(error = %err, "unhandled server error");
        return ApiError::internal();
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::NOT_FOUND => "route_not_found",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        _ => "invalid_request",
    };
    ApiError::new(status, code, err.to_string())
}

/// Turns a panic anywhere below it into a logged `500` problem document, so a bug costs one
/// request a clean error instead of a reset connection.
pub struct PanicMiddleware;

impl<E: Endpoint> Middleware<E> for PanicMiddleware {
    type Output = PanicEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        PanicEndpoint(ep)
    }
}

pub struct PanicEndpoint<E>(E);

impl<E: Endpoint> Endpoint for PanicEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        use futures::FutureExt;
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let method = req.method().clone();
        let path = crate::request_id::path_for_logs(req.uri().path());
        match std::panic::AssertUnwindSafe(self.0.call(req))
            .catch_unwind()
            .await
        {
            Ok(result) => result.map(IntoResponse::into_response),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".to_owned());
                tracing::error!(%request_id, %method, %path, panic = %message, "handler panicked");
                Ok(ApiError::internal().into_problem_response(&request_id))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use poem::{EndpointExt, Route, handler, test::TestClient};

    use super::*;

    #[handler]
    fn boom() -> &'static str {
        panic!("a bug")
    }

    #[tokio::test]
    async fn a_panic_becomes_a_logged_500_problem() {
        let app = Route::new().at("/boom", boom).with(PanicMiddleware);
        let resp = TestClient::new(app).get("/boom").send().await;
        resp.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
        resp.assert_content_type(PROBLEM_JSON);
        let body = resp.json().await;
        body.value()
            .object()
            .get("code")
            .assert_string("internal_error");
    }
}
