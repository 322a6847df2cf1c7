//! Operator accounts for the dashboard (admin token): create one (its access secret is shown
//! once), list them, delete one (its sessions end at once).

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::{Object, OpenApi, param::Path};
use serde::Serialize;
use switchyard_shared::{
    audit::ActorKind,
    operators::{self, NewOperator, Operator},
};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState,
    auth::{Admin, actor},
    error::ApiError,
    json::Json,
    responses::{Created, NoContent},
};

#[derive(Object, Serialize)]
pub struct OperatorList {
    /// By email.
    pub data: Vec<Operator>,
}

/// A new account and its access secret.
#[derive(Object, Serialize)]
pub struct CreatedOperator {
    #[oai(flatten)]
    #[serde(flatten)]
    pub operator: Operator,
    /// Signs in to the dashboard with the email. Shown only here: it is kept as a keyed hash.
    pub secret: String,
}

pub struct OperatorsApi;

#[OpenApi(prefix_path = "/admin/v1/operators", tag = "ApiTags::Admin")]
impl OperatorsApi {
    /// Create a dashboard account: `viewer` reads every page, `operator` also acts (retry,
    /// cancel, discard, pause, resolve). The response holds its access secret, once. Audited.
    #[oai(path = "/", method = "post", operation_id = "createOperator")]
    async fn create(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        body: Json<NewOperator>,
    ) -> Result<Created<CreatedOperator>, ApiError> {
        let who = actor(req, ActorKind::Admin);
        let pepper = &state.services.secrets.api_key_pepper;
        let (operator, secret) =
            operators::create(&state.services.pool, &who, pepper, &body.0).await?;
        Ok(Created(CreatedOperator { operator, secret }))
    }

    /// Dashboard accounts, by email.
    #[oai(path = "/", method = "get", operation_id = "listOperators")]
    async fn list(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
    ) -> Result<Json<OperatorList>, ApiError> {
        let data = operators::list(&state.services.pool).await?;
        Ok(Json(OperatorList { data }))
    }

    /// Delete a dashboard account; its sessions end at once. Audited.
    #[oai(path = "/:id", method = "delete", operation_id = "deleteOperator")]
    async fn delete(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let who = actor(req, ActorKind::Admin);
        operators::delete(&state.services.pool, &who, id.0).await?;
        Ok(NoContent)
    }
}
