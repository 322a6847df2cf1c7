//! `Idempotency-Key` on every partner POST and PATCH (semantics in
//! `switchyard_shared::idempotency`).
//!
//! Two halves. [`IdempotencyMiddleware`] validates the header and fingerprints the request
//! (method, path, canonical body) before the handler consumes the body. The handler then, after
//! its own authorization, calls [`Idempotency::begin`]: that claims the key for this API key or
//! answers with the stored response (a replay), so no replay ever skips a route's scope check,
//! and no key ever sees another key's response. The handler records its response with
//! [`Op::commit`] in the transaction of its mutation. What the handler did not record — a
//! `404` or `409` it answered, anything it failed with — the middleware settles afterwards:
//! kept (404/409, decided by the state of things) or released (everything else).

use std::sync::{Arc, Mutex};

use poem::{
    Body, Endpoint, IntoResponse, Middleware, Request, RequestBody, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    registry::{MetaParamIn, MetaSchema, MetaSchemaRef},
};
use serde::Serialize;
use sqlx::{PgConnection, Postgres, Transaction};
use switchyard_shared::{
    api_keys::Principal,
    idempotency::{self, Claim, Fingerprint, Outcome, Owner, StoredResponse},
};

use crate::{AppState, error::ApiError, json::Json, json::MAX_BODY_BYTES, request_id::RequestId};

/// What the middleware learnt of a request carrying `Idempotency-Key`, and what the handler
/// did with it.
#[derive(Clone, Debug)]
struct Keyed {
    key: String,
    method: String,
    path: String,
    hash: Vec<u8>,
    slot: Arc<Mutex<Slot>>,
}

#[derive(Clone, Debug)]
enum Slot {
    /// The handler has not claimed the key (yet).
    Open,
    /// The handler holds this claim and has not recorded a response.
    Claimed(Claim),
    /// Settled by the handler: recorded with its mutation, replayed, or given up.
    Settled,
}

impl Keyed {
    fn set(&self, slot: Slot) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = slot;
    }

    fn take(&self) -> Slot {
        std::mem::replace(
            &mut *self.slot.lock().unwrap_or_else(|e| e.into_inner()),
            Slot::Settled,
        )
    }
}

/// A response a route records as its idempotent answer.
pub trait Recordable {
    fn status(&self) -> u16;
    fn body(&self) -> serde_json::Result<Vec<u8>>;
}

impl<T: Serialize> Recordable for Json<T> {
    fn status(&self) -> u16 {
        200
    }

    fn body(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&self.0)
    }
}

/// The `Idempotency-Key` header of a mutating partner route (documented in the OpenAPI
/// document as an optional header parameter). Declare it as
/// `#[oai(name = "Idempotency-Key")] idem: Idempotency`.
pub struct Idempotency {
    keyed: Option<Keyed>,
    state: Arc<AppState>,
}

impl Idempotency {
    /// Claims the key for `principal`, after the route's authorization. With no key, or a key
    /// now claimed, returns the [`Op`] that records the outcome; a finished earlier request
    /// with this key is answered here (`Err` carrying the replay), as are a request still
    /// running (`409`) and a key reused with other parameters (`422`).
    pub async fn begin(self, principal: &Principal) -> Result<Op, ApiError> {
        let Some(keyed) = self.keyed else {
            return Ok(Op {
                claim: None,
                state: self.state,
            });
        };
        let owner = Owner {
            tenant_id: principal.tenant_id,
            mode: principal.mode,
            api_key_id: principal.api_key_id,
        };
        let request = Fingerprint {
            key: &keyed.key,
            method: &keyed.method,
            path: &keyed.path,
            hash: &keyed.hash,
        };
        let s = &self.state.services;
        let outcome = idempotency::claim(
            &s.pool,
            &s.secrets.keyring,
            owner,
            &request,
            s.config.idempotency_ttl,
        )
        .await;
        match outcome {
            Ok(Outcome::Claimed(claim)) => {
                keyed.set(Slot::Claimed(claim.clone()));
                Ok(Op {
                    claim: Some((claim, keyed)),
                    state: self.state,
                })
            }
            Ok(Outcome::Replay(stored)) => {
                // Answered: the stored response goes back as it was.
                keyed.set(Slot::Settled);
                Err(ApiError::replay(stored))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl<'a> ApiExtractor<'a> for Idempotency {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
    const PARAM_IS_REQUIRED: bool = false;
    type ParamType = String;
    type ParamRawType = String;

    fn param_in() -> Option<MetaParamIn> {
        Some(MetaParamIn::Header)
    }

    fn param_schema_ref() -> Option<MetaSchemaRef> {
        Some(MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some(
                "Makes a retry safe: the first response is kept 24 h for this API key and \
                 replayed (`Idempotent-Replayed: true`) to retries with the same key.",
            ),
            min_length: Some(1),
            max_length: Some(idempotency::MAX_KEY_LEN),
            pattern: Some("^[\\x20-\\x7E]+$".into()),
            ..MetaSchema::new("string")
        })))
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = req
            .data::<Arc<AppState>>()
            .cloned()
            .ok_or_else(ApiError::internal)?;
        Ok(Idempotency {
            keyed: req.extensions().get::<Keyed>().cloned(),
            state,
        })
    }
}

/// A mutating request under way: commits its transaction together with its idempotent answer.
pub struct Op {
    claim: Option<(Claim, Keyed)>,
    state: Arc<AppState>,
}

impl Op {
    /// The claim, for a route that writes its record in its own statement (order creation);
    /// it then calls [`Op::recorded`].
    pub fn claim(&self) -> Option<&Claim> {
        self.claim.as_ref().map(|(c, _)| c)
    }

    /// The route recorded its response itself, in the statement of its mutation.
    pub fn recorded(self) {
        if let Some((_, keyed)) = self.claim {
            keyed.set(Slot::Settled);
        }
    }

    /// Stores `resp` as the key's answer on `conn` (inside the mutation's transaction) when
    /// the request holds a claim. Fails with `409` when the claim lapsed meanwhile and another
    /// request took the key: the caller's transaction must then roll back (it does, by `?`).
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        resp: &impl Recordable,
    ) -> Result<(), ApiError> {
        let Some((claim, keyed)) = &self.claim else {
            return Ok(());
        };
        let body = resp
            .body()
            .map_err(|e| switchyard_shared::Error::Internal(e.into()))?;
        let stored = StoredResponse {
            response_status: i32::from(resp.status()),
            response_content_type: Some("application/json".into()),
            response_body: body,
        };
        let keyring = &self.state.services.secrets.keyring;
        if !idempotency::finish(conn, keyring, claim, &stored).await? {
            keyed.set(Slot::Settled);
            return Err(switchyard_shared::idempotency::in_use().into());
        }
        Ok(())
    }

    /// Records `resp` in `tx` and commits: the mutation and its idempotent answer together.
    pub async fn commit<R: Recordable>(
        self,
        mut tx: Transaction<'static, Postgres>,
        resp: R,
    ) -> Result<R, ApiError> {
        self.record(&mut tx, &resp).await?;
        tx.commit().await?;
        self.recorded();
        Ok(resp)
    }
}

/// Responses worth replaying that a handler did not record with a mutation: outcomes decided
/// by the state of things. Input, authentication and rate-limit errors and server errors store
/// nothing.
fn keeps(status: StatusCode) -> bool {
    status == StatusCode::NOT_FOUND || status == StatusCode::CONFLICT
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
            && req.headers().contains_key("idempotency-key")
            && req.extensions().get::<Principal>().is_some();
        let state = req.data::<Arc<AppState>>().cloned();
        let (true, Some(state)) = (applies, state) else {
            return self.0.call(req).await.map(IntoResponse::into_response);
        };
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let problem = |e: ApiError| Ok(e.into_problem_response(&request_id));
        let key = req.headers()["idempotency-key"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
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
        let keyed = Keyed {
            hash: idempotency::request_hash(&method, &path, &body),
            key,
            method,
            path,
            slot: Arc::new(Mutex::new(Slot::Open)),
        };
        req.set_body(Body::from_bytes(body));
        req.extensions_mut().insert(keyed.clone());
        let mut resp = match self.0.call(req).await {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        };
        let claim = match keyed.take() {
            Slot::Claimed(claim) => claim,
            Slot::Open => {
                if resp.status().is_success() {
                    // Every mutating route claims its key; one that did not is a bug.
                    tracing::error!(path = %keyed.path, "route ignored its Idempotency-Key");
                }
                return Ok(resp);
            }
            Slot::Settled => return Ok(resp),
        };
        let pool = &state.services.pool;
        let status = resp.status();
        let result = if keeps(status) || status.is_success() {
            if status.is_success() {
                // Every mutating route records its answer with its mutation; this one did not
                // (a bug): keep the answer anyway, outside the mutation's transaction.
                tracing::error!(path = %keyed.path, "route did not record its idempotent response");
            }
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
            match pool.acquire().await {
                Ok(mut conn) => {
                    let keyring = &state.services.secrets.keyring;
                    idempotency::finish(&mut conn, keyring, &claim, &stored)
                        .await
                        .map(|_| ())
                }
                Err(e) => Err(e.into()),
            }
        } else {
            idempotency::release(pool, &claim).await
        };
        if let Err(e) = result {
            // The response stands; a retry with this key may run again once the claim lapses.
            tracing::warn!(error = %e, "cannot settle the idempotency record");
        }
        Ok(resp)
    }
}

/// The stored first response, marked as a replay.
pub fn replay_response(stored: &StoredResponse) -> Response {
    let status = u16::try_from(stored.response_status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = Response::builder()
        .status(status)
        .body(stored.response_body.clone());
    if let Some(ct) = stored
        .response_content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}
