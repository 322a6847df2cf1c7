//! Sync: configurations, their runs (started here, run by workers), run logs and errors, and
//! the record store partners read synced data from.

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::{OpenApi, param::Path, param::Query};
use switchyard_shared::{
    api_keys::Scope,
    audit::ActorKind,
    queue::SYNC_RUNS,
    sync::{
        config::{self, SyncConfiguration, SyncSpec, SyncSpecChange},
        open::Opener,
        preview::{self, Delta},
        runs::{self, SyncRecordError, SyncRun, SyncRunLog, Trigger},
        stats::{self, SyncStats},
    },
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
    responses::{Accepted, Created, NoContent},
};

list_type!(SyncConfigurationList, SyncConfiguration);
list_type!(SyncRunList, SyncRun);
list_type!(SyncRunLogList, SyncRunLog);
list_type!(SyncRecordErrorList, SyncRecordError);

pub struct SyncApi;

#[OpenApi(prefix_path = "/v1/sync", tag = "ApiTags::Sync")]
impl SyncApi {
    /// Create a sync configuration: which table of which integration, how changes are found
    /// (`mode`, `cursor`), how rows map to records, and what deletes do.
    #[oai(
        path = "/configurations",
        method = "post",
        operation_id = "createSyncConfiguration"
    )]
    async fn create(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        body: Json<SyncSpec>,
    ) -> Result<Created<SyncConfiguration>, ApiError> {
        let p = auth.require(Scope::SyncWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let created = config::create(&mut tx, p.scope(), body.0).await?;
        op.commit(tx, Created(created)).await
    }

    /// List sync configurations, newest first.
    #[oai(
        path = "/configurations",
        method = "get",
        operation_id = "listSyncConfigurations"
    )]
    async fn list(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<SyncConfigurationList>, ApiError> {
        let p = auth.require(Scope::SyncRead)?;
        let limit = pagination::limit(limit.0)?;
        let rows =
            config::list(&state.services.pool, p.scope(), limit + 1, starting_after.0).await?;
        Ok(Json(SyncConfigurationList::from_rows(rows, limit)))
    }

    /// Get a sync configuration, with its committed cursor (`state`).
    #[oai(
        path = "/configurations/:id",
        method = "get",
        operation_id = "getSyncConfiguration"
    )]
    async fn get(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<SyncConfiguration>, ApiError> {
        let p = auth.require(Scope::SyncRead)?;
        Ok(Json(
            config::get(&state.services.pool, p.scope(), id.0).await?,
        ))
    }

    /// Change a sync configuration: the fields given replace the stored ones, and the result
    /// is checked as a whole. Runs started afterwards use it.
    #[oai(
        path = "/configurations/:id",
        method = "patch",
        operation_id = "updateSyncConfiguration"
    )]
    async fn update(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<SyncSpecChange>,
    ) -> Result<Json<SyncConfiguration>, ApiError> {
        let p = auth.require(Scope::SyncWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let updated = config::update(&mut tx, p.scope(), id.0, body.0).await?;
        op.commit(tx, Json(updated)).await
    }

    /// Delete a sync configuration with its runs (an active run stops at its next batch);
    /// its records stay in the store.
    #[oai(
        path = "/configurations/:id",
        method = "delete",
        operation_id = "deleteSyncConfiguration"
    )]
    async fn delete(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let p = auth.require(Scope::SyncWrite)?;
        let mut tx = state.services.pool.begin().await?;
        config::delete(&mut tx, p.scope(), id.0).await?;
        tx.commit().await?;
        Ok(NoContent)
    }

    /// What the next run would read if it started now, without running it: the row count
    /// from the configuration's cursor up to the watermark a run would take, and the first
    /// rows mapped, each with what it would do to the store. An unreachable source is an
    /// answer with `error`, not a failure.
    #[oai(
        path = "/configurations/:id/delta",
        method = "get",
        operation_id = "previewSyncDelta"
    )]
    async fn delta(
        &self,
        req: &Request,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        /// Sample size, 0 to 50 (default 10).
        #[oai(validator(minimum(value = "0"), maximum(value = "50")))]
        limit: Query<Option<i64>>,
    ) -> Result<Json<Delta>, ApiError> {
        let p = auth.require(Scope::SyncRead)?;
        let s = &state.services;
        let opener = Opener {
            pool: &s.pool,
            keyring: &s.secrets.keyring,
            egress: state.transport.egress(),
            timeout: preview::CONNECT_TIMEOUT,
        };
        let actor = actor(req, ActorKind::ApiKey(p.api_key_id));
        let limit = limit.0.unwrap_or(10).clamp(0, 50);
        Ok(Json(
            preview::delta(&opener, p.scope(), id.0, &actor, limit).await?,
        ))
    }

    /// Runs, rows and durations of the configuration over the last hour, day, week and 30
    /// days, with its last success and failure.
    #[oai(
        path = "/configurations/:id/stats",
        method = "get",
        operation_id = "getSyncStats"
    )]
    async fn stats(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<SyncStats>, ApiError> {
        let p = auth.require(Scope::SyncRead)?;
        Ok(Json(
            stats::stats(&state.services.pool, p.scope(), id.0).await?,
        ))
    }

    /// Start a run now. One run of a configuration is active at a time: another is a
    /// `409 sync_run_active` naming it. Follow it at `/v1/sync/runs/{id}`.
    #[oai(
        path = "/configurations/:id/runs",
        method = "post",
        operation_id = "startSyncRun"
    )]
    async fn start(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        /// Apply deletes by absence even beyond the configuration's `max_delete_percent`.
        confirm_deletes: Query<Option<bool>>,
    ) -> Result<Accepted<SyncRun>, ApiError> {
        let p = auth.require(Scope::SyncWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let confirm = confirm_deletes.0.unwrap_or(false);
        let (run, task) = runs::start(&mut tx, p.scope(), id.0, Trigger::Manual, confirm).await?;
        let resp = op.commit(tx, Accepted(run)).await?;
        state.fast_path.push(SYNC_RUNS, vec![task]);
        Ok(resp)
    }

    /// List runs, newest first, of one configuration or all.
    #[oai(path = "/runs", method = "get", operation_id = "listSyncRuns")]
    async fn runs(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Only runs of this configuration.
        configuration_id: Query<Option<Uuid>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<SyncRunList>, ApiError> {
        let p = auth.require(Scope::SyncRead)?;
        let limit = pagination::limit(limit.0)?;
        let rows = runs::list(
            &state.services.pool,
            p.scope(),
            configuration_id.0,
            limit + 1,
            starting_after.0,
        )
        .await?;
        Ok(Json(SyncRunList::from_rows(rows, limit)))
    }

    /// Get a run: its status and counters, live while it runs.
    #[oai(path = "/runs/:id", method = "get", operation_id = "getSyncRun")]
    async fn run(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<SyncRun>, ApiError> {
        let p = auth.require(Scope::SyncRead)?;
        Ok(Json(
            runs::get(&state.services.pool, p.scope(), id.0).await?,
        ))
    }

    /// Stop a run: one still waiting is cancelled at once, a running one after its current
    /// batch (what it committed stays).
    #[oai(
        path = "/runs/:id/cancel",
        method = "post",
        operation_id = "cancelSyncRun"
    )]
    async fn cancel(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<SyncRun>, ApiError> {
        let p = auth.require(Scope::SyncWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let run = runs::cancel(&mut tx, p.scope(), id.0).await?;
        op.commit(tx, Json(run)).await
    }

    /// Run a failed, partial or cancelled run's configuration again (a new run, `trigger:
    /// retry`, from the configuration's committed cursor).
    #[oai(
        path = "/runs/:id/retry",
        method = "post",
        operation_id = "retrySyncRun"
    )]
    async fn retry(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Accepted<SyncRun>, ApiError> {
        let p = auth.require(Scope::SyncWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let (run, task) = runs::retry(&mut tx, p.scope(), id.0).await?;
        let resp = op.commit(tx, Accepted(run)).await?;
        state.fast_path.push(SYNC_RUNS, vec![task]);
        Ok(resp)
    }

    /// A run's log, oldest first: start, resumes, warnings, and its end with its statistics.
    #[oai(
        path = "/runs/:id/logs",
        method = "get",
        operation_id = "listSyncRunLogs"
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
    ) -> Result<Json<SyncRunLogList>, ApiError> {
        let p = auth.require(Scope::SyncRead)?;
        let limit = pagination::limit(limit.0)?;
        let s = &state.services;
        let rows = runs::logs(&s.pool, p.scope(), id.0, limit + 1, starting_after.0).await?;
        Ok(Json(SyncRunLogList::from_rows(rows, limit)))
    }

    /// The records a run skipped (could not map or store), with why and the row as read.
    #[oai(
        path = "/runs/:id/errors",
        method = "get",
        operation_id = "listSyncRunErrors"
    )]
    async fn errors(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<SyncRecordErrorList>, ApiError> {
        let p = auth.require(Scope::SyncRead)?;
        let limit = pagination::limit(limit.0)?;
        let s = &state.services;
        let rows = runs::errors(&s.pool, p.scope(), id.0, limit + 1, starting_after.0).await?;
        Ok(Json(SyncRecordErrorList::from_rows(rows, limit)))
    }
}
