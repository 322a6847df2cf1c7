//! Integrations: external systems, their settings and their (write-only) credentials.

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::{OpenApi, param::Path, param::Query};
use switchyard_shared::{
    api_keys::Scope,
    audit::ActorKind,
    integrations::{
        self, Integration, Writer, connection::CheckResult, health, logs, smtp, vault::Purpose,
    },
    net,
    queue::EVENT_FAN_OUT,
};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState,
    auth::{Partner, actor},
    error::ApiError,
    idempotency::Idempotency,
    json::Json,
    pagination::{self, list_type},
    responses::{Created, NoContent},
};

list_type!(IntegrationList, Integration);
list_type!(IntegrationLogList, logs::IntegrationLog);

pub struct IntegrationsApi;

#[OpenApi(prefix_path = "/v1/integrations", tag = "ApiTags::Integrations")]
impl IntegrationsApi {
    /// Create an integration. Credentials are stored encrypted and never shown again: responses
    /// carry each one's fingerprint and last four characters.
    #[oai(path = "/", method = "post", operation_id = "createIntegration")]
    async fn create(
        &self,
        req: &Request,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        body: Json<integrations::CreateIntegration>,
    ) -> Result<Created<Integration>, ApiError> {
        let p = auth.require(Scope::IntegrationsWrite)?;
        let op = idem.begin(p).await?;
        let s = &state.services;
        let base_url = match &body.0.base_url {
            Some(u) => Some(net::vet_url(u, state.transport.egress(), "base_url").await?),
            None => None,
        };
        if body.0.provider.as_str() == "smtp" {
            let url = body.0.credentials.as_ref().and_then(|c| c.get("url"));
            smtp::vet(url.map(|u| u.as_str()), state.transport.egress()).await?;
        }
        let actor = actor(req, ActorKind::ApiKey(p.api_key_id));
        let w = Writer {
            keyring: &s.secrets.keyring,
            pepper: &s.secrets.api_key_pepper,
            actor: &actor,
        };
        let mut tx = s.pool.begin().await?;
        let created = integrations::create(&mut tx, &w, p.scope(), base_url, body.0).await?;
        op.commit(tx, Created(created)).await
    }

    /// List integrations, newest first.
    #[oai(path = "/", method = "get", operation_id = "listIntegrations")]
    async fn list(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<IntegrationList>, ApiError> {
        let p = auth.require(Scope::IntegrationsRead)?;
        let limit = pagination::limit(limit.0)?;
        let rows = integrations::list(&state.services.pool, p.scope(), limit + 1, starting_after.0)
            .await?;
        Ok(Json(IntegrationList::from_rows(rows, limit)))
    }

    /// Get an integration (credential fingerprints, never values).
    #[oai(path = "/:id", method = "get", operation_id = "getIntegration")]
    async fn get(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<Integration>, ApiError> {
        let p = auth.require(Scope::IntegrationsRead)?;
        Ok(Json(
            integrations::get(&state.services.pool, p.scope(), id.0).await?,
        ))
    }

    /// Update an integration. Fields left out stay as they are; `credentials` replaces the
    /// named ones only (`null` deletes one).
    #[oai(path = "/:id", method = "patch", operation_id = "updateIntegration")]
    async fn update(
        &self,
        req: &Request,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<integrations::UpdateIntegration>,
    ) -> Result<Json<Integration>, ApiError> {
        let p = auth.require(Scope::IntegrationsWrite)?;
        let op = idem.begin(p).await?;
        let s = &state.services;
        let base_url = match &body.0.base_url {
            poem_openapi::types::MaybeUndefined::Undefined => None,
            poem_openapi::types::MaybeUndefined::Null => Some(None),
            poem_openapi::types::MaybeUndefined::Value(u) => Some(Some(
                net::vet_url(u, state.transport.egress(), "base_url").await?,
            )),
        };
        // A new server URL of an SMTP integration: one the email destination can use.
        let url = body.0.credentials.as_ref().and_then(|c| c.get("url"));
        if let Some(url) = url.and_then(|c| c.0.as_ref()) {
            let provider = match &body.0.provider {
                Some(p) => p.as_str().to_owned(),
                None => integrations::get(&s.pool, p.scope(), id.0).await?.provider,
            };
            if provider == "smtp" {
                smtp::vet(Some(url.as_str()), state.transport.egress()).await?;
            }
        }
        let actor = actor(req, ActorKind::ApiKey(p.api_key_id));
        let w = Writer {
            keyring: &s.secrets.keyring,
            pepper: &s.secrets.api_key_pepper,
            actor: &actor,
        };
        let mut tx = s.pool.begin().await?;
        let updated = integrations::update(&mut tx, &w, p.scope(), id.0, base_url, body.0).await?;
        op.commit(tx, Json(updated)).await
    }

    /// Delete an integration; its credentials are erased at once.
    #[oai(path = "/:id", method = "delete", operation_id = "deleteIntegration")]
    async fn delete(
        &self,
        req: &Request,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let p = auth.require(Scope::IntegrationsWrite)?;
        let actor = actor(req, ActorKind::ApiKey(p.api_key_id));
        let mut tx = state.services.pool.begin().await?;
        integrations::delete(&mut tx, &actor, p.scope(), id.0).await?;
        tx.commit().await?;
        Ok(NoContent)
    }

    /// Check the connection now with the stored credentials: HTTP providers `GET` their
    /// `base_url` + `config.health_path` (2xx = ok), SQL providers connect with
    /// `credentials.url` and run `SELECT 1`, SMTP relays connect and must greet with `220`.
    /// The result is logged and updates
    /// `connection_status`.
    #[oai(path = "/:id/test", method = "post", operation_id = "testIntegration")]
    async fn test(
        &self,
        req: &Request,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<CheckResult>, ApiError> {
        let p = auth.require(Scope::IntegrationsWrite)?;
        let op = idem.begin(p).await?;
        let s = &state.services;
        let actor = actor(req, ActorKind::ApiKey(p.api_key_id));
        let (result, task) = health::check_now(
            &s.pool,
            &s.secrets.keyring,
            &state.checker,
            p.scope(),
            id.0,
            &actor,
            Purpose::ConnectionTest,
        )
        .await?;
        if let Some(task) = task {
            state.fast_path.push(EVENT_FAN_OUT, vec![task]);
        }
        // The check is recorded already; a retry with the key gets this answer, not a new check.
        op.commit(s.pool.begin().await?, Json(result)).await
    }

    /// Calls made on the integration's behalf (connection tests, health checks, sync requests)
    /// and inbound requests, newest first; credential values are redacted.
    #[oai(
        path = "/:id/logs",
        method = "get",
        operation_id = "listIntegrationLogs"
    )]
    async fn logs(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<IntegrationLogList>, ApiError> {
        let p = auth.require(Scope::IntegrationsRead)?;
        let limit = pagination::limit(limit.0)?;
        let rows = logs::list(
            &state.services.pool,
            p.scope(),
            id.0,
            limit + 1,
            starting_after.0,
        )
        .await?
        .ok_or_else(|| switchyard_shared::Error::not_found("integration"))?;
        Ok(Json(IntegrationLogList::from_rows(rows, limit)))
    }
}
