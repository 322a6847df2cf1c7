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

/// `201 Created` with the new resource.
pub struct Created<T>(pub T);

impl<T: Serialize + Send> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        let mut resp = Json(self.0).into_response();
        resp.set_status(StatusCode::CREATED);
        resp
    }
}

impl<T: Serialize + Type + Send> ApiResponse for Created<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "Created.",
                status: Some(201),
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
