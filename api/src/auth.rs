//! Who is calling. Partners authenticate with an API key (`Authorization: Bearer <key>` or
//! `X-API-Key: <key>`), checked once per request by [`PartnerMiddleware`]; operators with the
//! admin token. Both are poem-openapi extractors, so the OpenAPI document lists the security
//! schemes of every operation.

use std::sync::Arc;

use std::net::IpAddr;

use poem::{
    Endpoint, IntoResponse, Middleware, Request, RequestBody, Response,
    http::{HeaderValue, StatusCode},
};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions, OperationId, SecurityScheme,
    auth::{ApiKey, Bearer},
    registry::Registry,
};
use switchyard_shared::{
    api_keys::{Principal, Scope},
    audit::{Actor, ActorKind},
    crypto::constant_time_eq,
    logs::requests::{RequestEntry, parse_request_id},
    net::Cidr,
    telemetry::metrics as m,
};

use crate::{
    AppState,
    error::{ApiError, ProblemCode},
    request_id::RequestId,
};

/// Partner key sent as a bearer token.
#[derive(SecurityScheme)]
#[oai(rename = "BearerAuth", ty = "bearer", bearer_format = "sy_live_…")]
#[allow(dead_code)]
struct BearerScheme(Bearer);

/// Partner key sent in the `X-API-Key` header.
#[derive(SecurityScheme)]
#[oai(
    rename = "ApiKeyAuth",
    ty = "api_key",
    key_name = "X-API-Key",
    key_in = "header"
)]
#[allow(dead_code)]
struct ApiKeyScheme(ApiKey);

/// Operator token (`SWITCHYARD_ADMIN_TOKEN`) sent as a bearer token.
#[derive(SecurityScheme)]
#[oai(rename = "AdminToken", ty = "bearer")]
#[allow(dead_code)]
struct AdminScheme(Bearer);

fn state(req: &Request) -> poem::Result<&Arc<AppState>> {
    req.data::<Arc<AppState>>()
        .ok_or_else(|| ApiError::internal().into())
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The partner key a request presents, if any.
fn presented_key(req: &Request) -> Option<&str> {
    bearer(req)
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not one. Every line of the header counts, in order (a
/// proxy may add its own line after the client's), and the walk stops at the first entry that
/// is not an address (the last address read stands: a client cannot blank itself out).
pub fn client_ip(req: &Request, trusted_proxies: &[Cidr]) -> Option<IpAddr> {
    let peer = req
        .remote_addr()
        .as_socket_addr()
        .map(|a| a.ip().to_canonical())?;
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|c| c.contains(ip));
    let mut client = peer;
    if !trusted(client) {
        return Some(client);
    }
    let lines = req.headers().get_all("x-forwarded-for").iter().rev();
    for hop in lines.flat_map(|line| line.as_bytes().rsplit(|b| *b == b',')) {
        let Some(ip) = std::str::from_utf8(hop)
            .ok()
            .and_then(|h| h.trim().parse::<IpAddr>().ok())
        else {
            break;
        };
        client = ip.to_canonical();
        if !trusted(client) {
            break;
        }
    }
    Some(client)
}

/// The audit actor of a request made by `kind`.
pub fn actor(req: &Request, kind: ActorKind) -> Actor {
    let trusted = state(req)
        .map(|s| s.config.trusted_proxies.as_slice())
        .unwrap_or_default();
    Actor {
        kind,
        request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
        ip: client_ip(req, trusted).map(|ip| ip.to_string()),
    }
}

/// An authenticated partner request (authenticated by [`PartnerMiddleware`]).
pub struct Partner(pub Principal);

impl Partner {
    pub fn require(&self, scope: Scope) -> Result<&Principal, ApiError> {
        self.0.require(scope)?;
        Ok(&self.0)
    }
}

impl<'a> ApiExtractor<'a> for Partner {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <BearerScheme as ApiExtractor>::register(registry);
        <ApiKeyScheme as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        vec!["BearerAuth", "ApiKeyAuth"]
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        match req.extensions().get::<Principal>() {
            Some(p) => Ok(Partner(p.clone())),
            None => Err(missing_key().into()),
        }
    }
}

fn missing_key() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing_api_key",
        "Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
    )
}

/// Authenticates partner requests (`/v1/…`) once, before routing: resolves the key through the
/// cache, enforces its allowlist and rate limits, counts usage, logs the request (the
/// tenant's request log), and adds the `RateLimit` headers to every response, errors
/// included. The rate-limit decision stays on the request for `GET /v1/rate-limits`.
pub struct PartnerMiddleware;

impl<E: Endpoint> Middleware<E> for PartnerMiddleware {
    type Output = PartnerEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        PartnerEndpoint(ep)
    }
}

pub struct PartnerEndpoint<E>(E);

impl<E: Endpoint> Endpoint for PartnerEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let started = std::time::Instant::now();
        let key = req
            .uri()
            .path()
            .starts_with("/v1/")
            .then(|| presented_key(&req).map(str::to_owned))
            .flatten();
        let (Some(key), Ok(state)) = (key, state(&req).cloned()) else {
            return self.0.call(req).await.map(IntoResponse::into_response);
        };
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let peer = client_ip(&req, &state.config.trusted_proxies);
        if let Some(secs) = lockout_left(&state, peer) {
            return Ok(locked_out(secs).into_problem_response(&request_id));
        }
        let principal = match state.keys.authenticate(&key, peer).await {
            Ok(p) => p,
            Err(e) => {
                let refused = matches!(
                    e,
                    switchyard_shared::Error::Unauthenticated { .. }
                        | switchyard_shared::Error::Forbidden { .. }
                );
                if refused && let Some(secs) = failed_authentication(&state, peer).await {
                    return Ok(locked_out(secs).into_problem_response(&request_id));
                }
                return Ok(ApiError::from(e).into_problem_response(&request_id));
            }
        };
        tracing::Span::current().record("tenant_id", tracing::field::display(principal.tenant_id));
        let decision = state.limiter.check(&principal.limits(&state.config)).await;
        let logged = RequestEntry {
            id: parse_request_id(&request_id).unwrap_or_else(uuid::Uuid::now_v7),
            tenant_id: principal.tenant_id,
            mode: principal.mode,
            api_key_id: principal.api_key_id,
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            operation: "other",
            status: 0,
            duration_ms: 0.0,
            client_ip: peer.map(|ip| ip.to_string()),
            idempotency_key: req
                .headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            problem_code: None,
        };
        let mut resp = if decision.allowed {
            req.extensions_mut().insert(principal.clone());
            req.extensions_mut().insert(decision.clone());
            match self.0.call(req).await {
                Ok(r) => r.into_response(),
                Err(e) => e.into_response(),
            }
        } else {
            let refused_by = decision
                .limits
                .iter()
                .find(|l| l.remaining == 0)
                .map_or("unknown", |l| l.name);
            metrics::counter!(m::RATE_LIMITED, "limit" => refused_by).increment(1);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "Too many requests for this API key; retry in {} s.",
                    decision.retry_after_secs
                ),
            );
            e.retry_after = u32::try_from(decision.retry_after_secs).ok();
            e.into_problem_response(&request_id)
        };
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&decision.policy_header()) {
            headers.insert("ratelimit-policy", v);
        }
        if let Some(v) = decision
            .state_header()
            .and_then(|h| HeaderValue::from_str(&h).ok())
        {
            headers.insert("ratelimit", v);
        }
        let operation = resp.data::<OperationId>().map_or("other", |o| o.0);
        let status = resp.status().as_u16();
        state.usage.record(
            principal.api_key_id,
            principal.tenant_id,
            operation,
            status >= 400,
        );
        state.request_log.record(RequestEntry {
            operation,
            status,
            duration_ms: started.elapsed().as_secs_f32() * 1000.0,
            problem_code: resp.data::<ProblemCode>().map(|c| c.0.to_owned()),
            ..logged
        });
        Ok(resp)
    }
}

/// How long `ip` is still locked out for too many failed authentications (API keys, admin
/// tokens and dashboard sign-ins count alike), if it is.
pub fn lockout_left(state: &AppState, ip: Option<IpAddr>) -> Option<u64> {
    let secs = ip.and_then(|ip| state.lockouts.locked(ip))?;
    metrics::counter!(m::RATE_LIMITED, "limit" => "auth_failures").increment(1);
    Some(secs)
}

/// Counts a failed authentication from `ip`: the seconds of the lockout it starts, if it was
/// one too many (answered as that lockout).
pub async fn failed_authentication(state: &AppState, ip: Option<IpAddr>) -> Option<u64> {
    let ip = ip?;
    let limit = state.config.auth_failure_limit(ip);
    let secs = state.lockouts.failed(&state.limiter, ip, limit).await?;
    metrics::counter!(m::RATE_LIMITED, "limit" => "auth_failures").increment(1);
    tracing::warn!(%ip, "too many failed authentications; locked out");
    Some(secs)
}

/// `429` for a client address with too many failed authentications.
fn locked_out(secs: u64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("Too many failed authentications from this address; retry in {secs} s."),
    );
    e.retry_after = u32::try_from(secs).ok();
    e
}

/// An authenticated operator request.
pub struct Admin;

impl<'a> ApiExtractor<'a> for Admin {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <AdminScheme as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        vec!["AdminToken"]
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = state(req)?;
        let token = bearer(req).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_admin_token",
                "Send the admin token as `Authorization: Bearer <token>`.",
            )
        })?;
        // Wrong admin tokens count towards the address's lockout, as wrong API keys and
        // dashboard sign-ins do: the admin API is no side door for guessing the token.
        let ip = client_ip(req, &state.config.trusted_proxies);
        if let Some(secs) = lockout_left(state, ip) {
            return Err(locked_out(secs).into());
        }
        if !constant_time_eq(
            token.as_bytes(),
            state.services.secrets.admin_token.as_bytes(),
        ) {
            if let Some(secs) = failed_authentication(state, ip).await {
                return Err(locked_out(secs).into());
            }
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_admin_token",
                "The admin token is not valid.",
            )
            .into());
        }
        Ok(Admin)
    }
}
