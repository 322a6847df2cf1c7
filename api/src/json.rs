//! `Json<T>`: the API's JSON payload, parsed and written with serde. Parsing goes through
//! `serde_path_to_error` so a bad field is reported by its path (`items[0].quantity`), and the
//! body is read with a size cap. The OpenAPI schema still comes from `T`'s `Object` derive.

use poem::{IntoResponse, Request, RequestBody, Response, http::StatusCode};
use poem_openapi::{
    ApiResponse,
    payload::{ParsePayload, Payload},
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry},
    types::Type,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct Json<T>(pub T);

impl<T: Type> Payload for Json<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        content_type
            .split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: DeserializeOwned + Send> ParsePayload for Json<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let _ = request;
        let body = body.take()?;
        let bytes = body
            .into_bytes_limit(MAX_BODY_BYTES)
            .await
            .map_err(|e| match e {
                poem::error::ReadBodyError::PayloadTooLarge => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("The request body exceeds {MAX_BODY_BYTES} bytes."),
                ),
                other => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    other.to_string(),
                ),
            })?;
        parse_json(&bytes).map(Json).map_err(Into::into)
    }
}

/// Deserialises `bytes`, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "The request body is empty; send a JSON object.",
        ));
    }
    // serde would also accept a struct written as an array; the API takes objects only.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request body must be a JSON object.",
        ));
    }
    if has_nul_escape(bytes) {
        // Postgres can store NUL in no text or JSON value: refuse it in any field (the typed
        // fields' schemas say so too).
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            "Strings must not contain NUL characters (`\\u0000`).",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("The request body is not valid JSON: {msg}."),
            ),
            Category::Data => {
                // serde reports a missing field at the enclosing object, an unknown one at itself.
                let field = |prefix: &str| {
                    msg.strip_prefix(prefix)
                        .and_then(|r| r.split('`').next())
                        .map(str::to_owned)
                };
                let join = |f: String| {
                    if path == "." {
                        f
                    } else {
                        format!("{path}.{f}")
                    }
                };
                if let Some(f) = field("missing field `") {
                    let param = join(f);
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "parameter_missing",
                        format!("`{param}` is required."),
                    )
                    .with_param(param)
                } else if let Some(f) = field("unknown field `") {
                    let param = if path == "." { f } else { path.clone() };
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "unknown_parameter",
                        format!("`{param}` is not a known field."),
                    )
                    .with_param(param)
                } else {
                    let param = if path == "." {
                        String::new()
                    } else {
                        path.clone()
                    };
                    let err = ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "parameter_invalid",
                        if param.is_empty() {
                            format!("The request body is invalid: {msg}.")
                        } else {
                            format!("`{param}` is invalid: {msg}.")
                        },
                    );
                    if param.is_empty() {
                        err
                    } else {
                        err.with_param(param)
                    }
                }
            }
        }
    })
}

/// True when a JSON text holds the escape `\u0000` (a NUL character) in a string.
fn has_nul_escape(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

impl<T: Serialize + Send> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Response::builder()
                .content_type("application/json")
                .body(body),
            Err(e) => {
                tracing::error!(error = %e, "response serialisation failed");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

impl<T: Serialize + Type + Send> ApiResponse for Json<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: <Self as Payload>::CONTENT_TYPE,
                    schema: <Self as Payload>::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

poem_openapi::impl_apirequest_for_payload!(Json<T>, T: Type + DeserializeOwned + Send);

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        sku: String,
        quantity: i64,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Item>,
    }

    fn err(body: &str) -> ApiError {
        parse_json::<Body>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(r#"{"items":[{"sku":"a","quantity":"2"}]}"#);
        assert_eq!(
            (e.code, e.param.as_deref()),
            ("parameter_invalid", Some("items[0].quantity"))
        );
        let e = err(r#"{"items":[{"sku":"a"}]}"#);
        assert_eq!(
            (e.code, e.param.as_deref()),
            ("parameter_missing", Some("items[0].quantity"))
        );
        let e = err(r#"{}"#);
        assert_eq!(
            (e.code, e.param.as_deref()),
            ("parameter_missing", Some("items"))
        );
        let e = err(r#"{"items":[],"extra":1}"#);
        assert_eq!(
            (e.code, e.param.as_deref()),
            ("unknown_parameter", Some("extra"))
        );
        let e = err(r#"{"items":[{"sku":"a","quantity":1}],}"#);
        assert_eq!(e.code, "invalid_json");
        let e = err(r#"{"items":["#);
        assert_eq!(e.code, "invalid_json");
        let e = err("");
        assert_eq!(e.code, "invalid_json");
        let e = err("[1]");
        assert_eq!((e.code, e.param), ("invalid_request", None));
        let e = err(r#"{"items":[],"x":"a\u0000b"}"#);
        assert_eq!(e.code, "parameter_invalid");
        assert!(
            !has_nul_escape(br#"{"x":"a\\u0000b"}"#),
            "an escaped backslash"
        );
    }
}
