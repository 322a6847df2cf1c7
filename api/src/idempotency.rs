//! `Idempotency-Key` on every partner POST and PATCH (semantics in
//! `switchyard_shared::idempotency`). Runs after authentication, so keys are scoped to the
//! caller's tenant and mode.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use poem::{
    Body, Endpoint, IntoResponse, Middleware, Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use switchyard_shared::{
    api_keys::Principal,
    idempotency::{self, Claim, Outcome, StoredResponse},
};

use crate::{AppState, error::ApiError, json::MAX_BODY_BYTES, request_id::RequestId};

/// The claim a request holds. A handler that records its own response in its own transaction
/// (order creation) sets `recorded`, and the middleware leaves the record alone.
#[derive(Clone, Debug)]
pub struct ClaimHandle {
    pub claim: Claim,
    pub recorded: Arc<AtomicBool>,
}

impl ClaimHandle {
    pub fn mark_recorded(&self) {
        self.recorded.store(true, Ordering::Release);
    }
}

/// Responses worth replaying: successes and outcomes decided by the state of things. Input,
/// authentication and rate-limit errors and server errors store nothing.
fn keeps(status: StatusCode) -> bool {
    status.is_success() || status == StatusCode::NOT_FOUND || status == StatusCode::CONFLICT
}

pub struct IdempotencyMiddleware;

impl<E: Endpoint> Middleware<E> for IdempotencyMiddleware {
    type Output = IdempotencyEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        IdempotencyEndpoint(ep)
    }
}

pub struct IdempotencyEndpoint<E>(E);

impl<E: Endpoint> Endpoint for IdempotencyEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let applies = matches!(*req.method(), Method::POST | Method::PATCH)
            && req.headers().contains_key("idempotency-key");
        let principal = req.extensions().get::<Principal>().cloned();
        let state = req.data::<Arc<AppState>>().cloned();
        let (true, Some(principal), Some(state)) = (applies, principal, state) else {
            return self.0.call(req).await.map(IntoResponse::into_response);
        };
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let problem = |e: ApiError| Ok(e.into_problem_response(&request_id));
        let key = match req.headers()["idempotency-key"].to_str() {
            Ok(k) => k.to_owned(),
            Err(_) => String::new(),
        };
        if let Err(e) = idempotency::validate_key(&key) {
            return problem(e.into());
        }
        let body = match req.take_body().into_bytes_limit(MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(poem::error::ReadBodyError::PayloadTooLarge) => {
                return problem(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("The request body exceeds {MAX_BODY_BYTES} bytes."),
                ));
            }
            Err(e) => {
                return problem(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    e.to_string(),
                ));
            }
        };
        let method = req.method().as_str().to_owned();
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        let hash = idempotency::request_hash(&method, &path, &body);
        req.set_body(Body::from_bytes(body));
        let pool = &state.services.pool;
        let keyring = &state.services.secrets.keyring;
        let outcome = idempotency::claim(
            pool,
            keyring,
            principal.tenant_id,
            principal.mode,
            &key,
            &method,
            &path,
            &hash,
            state.services.config.idempotency_ttl,
        )
        .await;
        let claim = match outcome {
            Err(e) => return problem(e.into()),
            Ok(Outcome::Replay(stored)) => return Ok(replay(stored)),
            Ok(Outcome::Claimed(c)) => c,
        };
        let handle = ClaimHandle {
            claim: claim.clone(),
            recorded: Arc::new(AtomicBool::new(false)),
        };
        req.extensions_mut().insert(handle.clone());
        let mut resp = match self.0.call(req).await {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        };
        if handle.recorded.load(Ordering::Acquire) {
            return Ok(resp);
        }
        let status = resp.status();
        let result = if keeps(status) {
            let bytes = resp.take_body().into_vec().await.unwrap_or_default();
            let stored = StoredResponse {
                response_status: i32::from(status.as_u16()),
                response_content_type: resp
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                response_body: bytes.clone(),
            };
            resp.set_body(bytes);
            idempotency::finish(pool, keyring, &claim, &stored).await
        } else {
            idempotency::release(pool, &claim).await
        };
        if let Err(e) = result {
            // The response stands; a retry with this key may run again once the claim lapses.
            tracing::warn!(error = %e, "cannot record the idempotent response");
        }
        Ok(resp)
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = u16::try_from(stored.response_status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = Response::builder()
        .status(status)
        .body(stored.response_body);
    if let Some(ct) = stored
        .response_content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}
