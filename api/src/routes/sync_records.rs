//! The record store: synced data partners read (and write, for outbound and bidirectional
//! syncs to carry to their integrations).

use std::sync::Arc;
use switchyard_shared::input::Time;

use poem::web::Data;
use poem_openapi::{OpenApi, param::Path, param::Query};
use switchyard_shared::{
    api_keys::Scope,
    input::Text,
    sync::{
        config::EntityName,
        store::{self, PutRecord, RecordFilter, SyncRecord},
    },
};

use super::ApiTags;
use crate::{
    AppState, auth::Partner, error::ApiError, json::Json, pagination, responses::NoContent,
};

/// A page of records; pass the last `key` as `starting_after`.
#[derive(serde::Serialize, poem_openapi::Object)]
pub struct SyncRecordList {
    pub data: Vec<SyncRecord>,
    /// True when more records follow; pass the last `key` as `starting_after`.
    pub has_more: bool,
}

pub struct SyncRecordsApi;

#[OpenApi(prefix_path = "/v1/sync/records", tag = "ApiTags::Sync")]
impl SyncRecordsApi {
    /// Synced records of an entity in key order, deleted ones with `deleted_at`.
    #[oai(path = "/", method = "get", operation_id = "listSyncRecords")]
    #[allow(clippy::too_many_arguments)]
    async fn records(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        entity: Query<EntityName>,
        /// Only the record with this key.
        key: Query<Option<Text<1, 1000>>>,
        /// Changed at or after this time.
        #[oai(name = "updated[gte]")]
        updated_gte: Query<Option<Time>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        /// The last `key` of the previous page.
        starting_after: Query<Option<Text<1, 1000>>>,
    ) -> Result<Json<SyncRecordList>, ApiError> {
        let p = auth.require(Scope::SyncRead)?;
        let limit = pagination::limit(limit.0)?;
        let filter = RecordFilter {
            entity: entity.0.into_string(),
            key: key.0.map(Text::into_string),
            updated_gte: updated_gte.0.map(Time::get),
            starting_after: starting_after.0.map(Text::into_string),
            limit: limit + 1,
        };
        let rows = store::list(&state.services.pool, p.scope(), &filter).await?;
        let (data, has_more) = pagination::page(rows, limit);
        Ok(Json(SyncRecordList { data, has_more }))
    }

    /// Write a record: inserted, or replaced (and undeleted). Outbound and bidirectional syncs
    /// of the entity carry it to their integrations on their next run.
    #[oai(path = "/:entity/:key", method = "put", operation_id = "putSyncRecord")]
    async fn put(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        entity: Path<EntityName>,
        /// The record's key (several key columns: a JSON array of texts).
        key: Path<Text<1, 1000>>,
        body: Json<PutRecord>,
    ) -> Result<Json<SyncRecord>, ApiError> {
        let p = auth.require(Scope::SyncWrite)?;
        let mut tx = state.services.pool.begin().await?;
        let record = store::put(
            &mut tx,
            p.scope(),
            entity.0.as_str(),
            key.0.as_str(),
            body.0,
        )
        .await?;
        tx.commit().await?;
        Ok(Json(record))
    }

    /// Delete a record: it stays as a tombstone (`deleted_at`) until the sync retention ends,
    /// so outbound and bidirectional syncs carry the delete.
    #[oai(
        path = "/:entity/:key",
        method = "delete",
        operation_id = "deleteSyncRecord"
    )]
    async fn delete(
        &self,
        auth: Partner,
        state: Data<&Arc<AppState>>,
        entity: Path<EntityName>,
        /// The record's key, as for `PUT`.
        key: Path<Text<1, 1000>>,
    ) -> Result<NoContent, ApiError> {
        let p = auth.require(Scope::SyncWrite)?;
        let mut tx = state.services.pool.begin().await?;
        store::delete(&mut tx, p.scope(), entity.0.as_str(), key.0.as_str()).await?;
        tx.commit().await?;
        Ok(NoContent)
    }
}
