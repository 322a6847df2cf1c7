//! Who is calling. Partners authenticate with an API key (`Authorization: Bearer <key>` or
//! `X-API-Key: <key>`); operators with the admin token. Both are poem-openapi extractors, so
//! the OpenAPI document lists the security schemes of every operation.

use std::sync::Arc;

use poem::{Request, RequestBody, http::StatusCode};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions, SecurityScheme,
    auth::{ApiKey, Bearer},
    registry::Registry,
};
use switchyard_shared::{api_keys, api_keys::Principal, crypto::constant_time_eq};

use crate::{AppState, error::ApiError};

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

/// An authenticated partner request.
pub struct Partner(pub Principal);

impl Partner {
    pub fn require(&self, scope: &str) -> Result<&Principal, ApiError> {
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
        let state = state(req)?;
        let key = bearer(req)
            .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing_api_key",
                    "Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
                )
            })?;
        let principal = api_keys::authenticate(
            &state.services.pool,
            &state.services.secrets.api_key_pepper,
            key,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(Partner(principal))
    }
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
        if !constant_time_eq(
            token.as_bytes(),
            state.services.secrets.admin_token.as_bytes(),
        ) {
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
