//! Operator API: the master keys at rest, and their rotation.

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::OpenApi;
use switchyard_shared::{
    audit::{self, ActorKind},
    keyring,
    queue::KEYRING_ROTATION,
};

use super::ApiTags;
use crate::{
    AppState,
    auth::{Admin, actor},
    error::ApiError,
    json::Json,
    responses::Created,
};

pub struct KeyringApi;

#[OpenApi(prefix_path = "/admin/v1/keyring", tag = "ApiTags::Admin")]
impl KeyringApi {
    /// Which master key seals how many values of each kind (endpoint secrets, headers and
    /// auth, stored idempotent answers, integration credentials), which keys can be retired,
    /// and the latest rotation's progress.
    #[oai(path = "/", method = "get", operation_id = "getKeyring")]
    async fn status(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
    ) -> Result<Json<keyring::KeyringStatus>, ApiError> {
        let s = &state.services;
        Ok(Json(keyring::status(&s.pool, &s.secrets.keyring).await?))
    }

    /// Start re-encrypting every sealed value still under an older key with the active key
    /// (the first of `SWITCHYARD_MASTER_KEYS`), in the background. One rotation runs at a
    /// time; follow it with `GET /admin/v1/keyring`.
    #[oai(path = "/rotate", method = "post", operation_id = "rotateKeyring")]
    async fn rotate(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
    ) -> Result<Created<keyring::Rotation>, ApiError> {
        let s = &state.services;
        let mut tx = s.pool.begin().await?;
        let (rotation, task) = keyring::start_rotation(&mut tx, &s.secrets.keyring).await?;
        audit::record(
            &mut tx,
            &actor(req, ActorKind::Admin),
            audit::Entry {
                tenant_id: None,
                mode: None,
                action: "keyring.rotation_started",
                target_type: "keyring_rotation",
                target_id: rotation.id,
                changes: serde_json::json!({ "key_id": rotation.key_id }),
            },
        )
        .await?;
        tx.commit().await?;
        state.fast_path.push(KEYRING_ROTATION, vec![task]);
        Ok(Created(rotation))
    }
}
