//! Conflicts of bidirectional syncs: list them, and resolve one (a run starts at once to write
//! the decision to both sides).

use std::sync::Arc;

use poem_openapi::{OpenApi, param::Path, param::Query};
use switchyard_shared::{
    api_keys::Scope,
    queue::SYNC_RUNS,
    sync::{
        conflicts::{self, ConflictFilter, ConflictStatus, Resolve, SyncConflict},
        runs::{self, Trigger, Triggered},
    },
};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState,
    auth::Partner,
    error::ApiError,
    idempotency::Idempotency,
    json::Json,
    pagination::{self, list_type},
};
use poem::web::Data;

list_type!(SyncConflictList, SyncConflict);

pub struct SyncConflictsApi;

#[OpenApi(prefix_path = "/v1/sync/conflicts", tag = "ApiTags::Sync")]
impl SyncConflictsApi {
    /// List conflicts of bidirectional syncs, newest first: records both sides changed that
    /// wait for a person (`open`), and how earlier ones were resolved.
    #[oai(path = "/", method = "get", operation_id = "listSyncConflicts")]
    async fn list(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        /// Only conflicts of this configuration.
        configuration_id: Query<Option<Uuid>>,
        status: Query<Option<ConflictStatus>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<SyncConflictList>, ApiError> {
        let p = auth.require(Scope::SyncRead)?;
        let limit = pagination::limit(limit.0)?;
        let filter = ConflictFilter {
            configuration_id: configuration_id.0,
            status: status.0,
            starting_after: starting_after.0,
            limit: limit + 1,
        };
        let rows = conflicts::list(&state.services.pool, p.scope(), &filter).await?;
        Ok(Json(SyncConflictList::from_rows(rows, limit)))
    }

    /// Get a conflict: both sides' records, what they last agreed on, the fields they
    /// disagree on, and its resolution.
    #[oai(path = "/:id", method = "get", operation_id = "getSyncConflict")]
    async fn get(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<SyncConflict>, ApiError> {
        let p = auth.require(Scope::SyncRead)?;
        Ok(Json(
            conflicts::get(&state.services.pool, p.scope(), id.0).await?,
        ))
    }

    /// Resolve an open conflict: keep the `source`'s record, the `target`'s, or a `merged`
    /// one (`data` over the source's record). A run of the configuration starts at once (or
    /// right after the active one) and writes the decision to both sides; the record then
    /// syncs again. `409 sync_conflict_resolved` when it was resolved already.
    #[oai(
        path = "/:id/resolve",
        method = "post",
        operation_id = "resolveSyncConflict"
    )]
    async fn resolve(
        &self,
        auth: Partner,
        #[oai(name = "Idempotency-Key")] idem: Idempotency,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        body: Json<Resolve>,
    ) -> Result<Json<SyncConflict>, ApiError> {
        let p = auth.require(Scope::SyncWrite)?;
        let op = idem.begin(p).await?;
        let mut tx = state.services.pool.begin().await?;
        let by = format!("api_key:{}", p.key_id);
        let resolved = conflicts::resolve(&mut tx, p.scope(), id.0, body.0, &by).await?;
        let triggered = runs::trigger(
            &mut tx,
            p.scope(),
            resolved.configuration_id,
            Trigger::Manual,
        )
        .await?;
        let resp = op.commit(tx, Json(resolved)).await?;
        if let Triggered::Started(_, task) = triggered {
            state.fast_path.push(SYNC_RUNS, vec![task]);
        }
        Ok(resp)
    }
}
