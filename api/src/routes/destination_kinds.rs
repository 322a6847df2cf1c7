//! The destination kinds endpoints can have, with the schema of each one's `config`.

use poem_openapi::OpenApi;
use switchyard_shared::{api_keys::Scope, destinations::catalogue};

use super::ApiTags;
use crate::{auth::Partner, error::ApiError, json::Json};

/// Every destination kind.
#[derive(poem_openapi::Object, serde::Serialize)]
pub struct DestinationKindList {
    pub data: Vec<catalogue::DestinationKindInfo>,
}

pub struct DestinationKindsApi;

#[OpenApi(
    prefix_path = "/v1/destination-kinds",
    tag = "ApiTags::WebhookEndpoints"
)]
impl DestinationKindsApi {
    /// List the destination kinds (`http`, `slack`, `discord`, `email`, `rabbitmq`, `nats`,
    /// `http_action`), each with the JSON Schema of its `config`, its secret fields and its
    /// template fields: enough to build a form.
    #[oai(path = "/", method = "get", operation_id = "listDestinationKinds")]
    async fn list(&self, auth: Partner) -> Result<Json<DestinationKindList>, ApiError> {
        auth.require(Scope::WebhooksRead)?;
        Ok(Json(DestinationKindList {
            data: catalogue::all(),
        }))
    }
}
