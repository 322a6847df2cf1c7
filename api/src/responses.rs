//! Success responses other than a plain 200 JSON body.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{
    ApiResponse,
    payload::Payload,
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::Type,
};
use serde::Serialize;

use crate::json::Json;

/// A JSON response with a status other than 200: its type, its status and what it means.
macro_rules! status_json {
    ($(#[$meta:meta])* $name:ident, $status:literal, $code:ident, $description:literal) => {
        $(#[$meta])*
        pub struct $name<T>(pub T);

        impl<T: Serialize + Send> IntoResponse for $name<T> {
            fn into_response(self) -> Response {
                let mut resp = Json(self.0).into_response();
                resp.set_status(StatusCode::$code);
                resp
            }
        }

        impl<T: Serialize + Type + Send> ApiResponse for $name<T> {
            fn meta() -> MetaResponses {
                MetaResponses {
                    responses: vec![MetaResponse {
                        description: $description,
                        status: Some($status),
                        status_range: None,
                        content: vec![MetaMediaType {
                            content_type: <Json<T> as Payload>::CONTENT_TYPE,
                            schema: <Json<T> as Payload>::schema_ref(),
                        }],
                        headers: vec![],
                    }],
                }
            }

            fn register(registry: &mut Registry) {
                T::register(registry);
            }
        }

        impl<T: Serialize> crate::idempotency::Recordable for $name<T> {
            fn status(&self) -> u16 {
                $status
            }

            fn body(&self) -> serde_json::Result<Vec<u8>> {
                serde_json::to_vec(&self.0)
            }
        }
    };
}

status_json!(
    /// `201 Created` with the new resource.
    Created,
    201,
    CREATED,
    "Created."
);
status_json!(
    /// `202 Accepted`: the work was accepted and runs in the background.
    Accepted,
    202,
    ACCEPTED,
    "Accepted; it runs in the background."
);

/// `204 No Content`.
pub struct NoContent;

impl IntoResponse for NoContent {
    fn into_response(self) -> Response {
        StatusCode::NO_CONTENT.into_response()
    }
}

impl ApiResponse for NoContent {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "Done; no content.",
                status: Some(204),
                status_range: None,
                content: vec![],
                headers: vec![],
            }],
        }
    }

    fn register(_: &mut Registry) {}
}
