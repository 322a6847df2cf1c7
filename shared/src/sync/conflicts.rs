//! Conflicts of bidirectional syncs: a record both sides changed since they last agreed, which
//! the configuration's strategy leaves to a person (`manual`, or `field_merge` when the same
//! field changed on both). The record waits, the rest of the stream moves on. A person picks
//! a side or gives the merged record (`POST /v1/sync/conflicts/{id}/resolve`); the next run
//! (started at once) writes it to both sides and the record syncs again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use super::{adapter::Row, config::SyncSpec, mapping};
use crate::{
    error::{Error, Result},
    tenants::Scope,
};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ConflictStatus {
    /// Waiting for a person.
    Open,
    /// Decided; `applied_at` says when a run wrote the decision to both sides.
    Resolved,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ConflictReason {
    /// Both sides changed the record.
    BothChanged,
    /// One side deleted the record, the other changed it.
    DeletedAndChanged,
    /// Both changed the same fields (`field_merge` merges only different ones).
    SameFieldsChanged,
}

/// How a conflict was settled: a side's record, a merged one, or the sides became equal by
/// themselves (`converged`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Resolution {
    Source,
    Target,
    Merged,
    Converged,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, poem_openapi::Object)]
pub struct SyncConflict {
    pub id: Uuid,
    pub configuration_id: Uuid,
    /// The run that found it.
    #[oai(nullable)]
    pub run_id: Option<Uuid>,
    /// The record's key.
    pub key: String,
    pub status: ConflictStatus,
    pub reason: ConflictReason,
    /// The source's record (in the target's field names) as last seen; null: deleted.
    #[oai(nullable)]
    pub source_data: Option<Value>,
    /// The target's record as last seen; null: deleted.
    #[oai(nullable)]
    pub target_data: Option<Value>,
    /// What both sides last agreed on; null: never synced (or deleted on both).
    #[oai(nullable)]
    pub base: Option<Value>,
    /// The fields the two sides disagree on.
    pub fields: Vec<String>,
    #[oai(nullable)]
    pub resolution: Option<Resolution>,
    /// A `merged` resolution's record.
    #[oai(nullable)]
    pub resolved_data: Option<Value>,
    /// The API key (`key_…` id) or `sync` (converged) that resolved it.
    #[oai(nullable)]
    pub resolved_by: Option<String>,
    #[oai(nullable)]
    pub resolved_at: Option<DateTime<Utc>>,
    /// When a run wrote the resolution to both sides.
    #[oai(nullable)]
    pub applied_at: Option<DateTime<Utc>>,
    /// Why the last resolution could not be written (the conflict is open again: resolve it
    /// anew).
    #[oai(nullable)]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, configuration_id, run_id, key, status, reason, source_data, target_data,
    base, fields, resolution, resolved_data, resolved_by, resolved_at, applied_at, error,
    created_at, updated_at";

/// A person's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum Choice {
    /// The source's record, as it is when the resolution is written.
    Source,
    /// The target's record, as it is when the resolution is written.
    Target,
    /// `data`, over the source's record as last seen.
    Merged,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct Resolve {
    pub resolution: Choice,
    /// `merged`: the fields to write (the target's names); fields left out keep the source's
    /// value. Key fields cannot change.
    #[oai(nullable)]
    #[serde(default)]
    pub data: Option<std::collections::BTreeMap<String, Value>>,
}

/// A conflict found by a run.
pub struct Found<'a> {
    pub key: &'a str,
    pub reason: ConflictReason,
    pub source: Option<&'a Row>,
    pub target: Option<&'a Row>,
    pub base: Option<&'a Row>,
    pub fields: &'a [String],
}

fn json(r: Option<&Row>) -> Json<Value> {
    Json(r.cloned().map_or(Value::Null, Value::Object))
}

/// Opens a conflict on the caller's transaction, or refreshes the record's pending one with
/// the sides as they are now. Returns its id and whether it is new.
pub async fn open(
    conn: &mut PgConnection,
    scope: Scope,
    configuration_id: Uuid,
    run_id: Uuid,
    c: &Found<'_>,
) -> Result<(Uuid, bool)> {
    let row: (Uuid, bool) = sqlx::query_as(
        "INSERT INTO sync_conflicts AS c (id, tenant_id, mode, configuration_id, run_id, key,
                                          status, reason, source_data, target_data, base, fields)
         VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, NULLIF($8, 'null'::jsonb),
                 NULLIF($9, 'null'::jsonb), NULLIF($10, 'null'::jsonb), $11)
         ON CONFLICT (configuration_id, key) WHERE applied_at IS NULL DO UPDATE
            SET source_data = excluded.source_data, target_data = excluded.target_data,
                fields = CASE WHEN c.status = 'open' THEN excluded.fields ELSE c.fields END,
                updated_at = now()
         RETURNING id, xmax = 0",
    )
    .bind(Uuid::now_v7())
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(configuration_id)
    .bind(run_id)
    .bind(c.key)
    .bind(c.reason)
    .bind(json(c.source))
    .bind(json(c.target))
    .bind(json(c.base))
    .bind(c.fields)
    .fetch_one(conn)
    .await?;
    Ok(row)
}

/// The sides became equal on their own: the conflict is settled as `converged`.
pub async fn converged(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE sync_conflicts
            SET status = 'resolved', resolution = COALESCE(resolution, 'converged'),
                resolved_by = COALESCE(resolved_by, 'sync'),
                resolved_at = COALESCE(resolved_at, now()), applied_at = now(), updated_at = now()
          WHERE id = $1 AND applied_at IS NULL",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A resolution a run is to write.
pub struct ToApply {
    pub id: Uuid,
    pub key: String,
    pub resolution: Resolution,
    pub data: Option<Row>,
}

/// Up to `limit` resolved conflicts of the configuration not yet written, after `after`, in
/// id order.
pub async fn to_apply(
    conn: &mut PgConnection,
    configuration_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ToApply>> {
    let rows: Vec<(Uuid, String, Resolution, Option<Json<Row>>)> = sqlx::query_as(
        "SELECT id, key, resolution, resolved_data FROM sync_conflicts
          WHERE configuration_id = $1 AND status = 'resolved' AND applied_at IS NULL
            AND ($3::uuid IS NULL OR id > $3)
          ORDER BY id LIMIT $2",
    )
    .bind(configuration_id)
    .bind(limit)
    .bind(after)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, key, resolution, data)| ToApply {
            id,
            key,
            resolution,
            data: data.map(|d| d.0),
        })
        .collect())
}

/// A resolution that cannot be written (a side refused it, or it cannot be mapped back): the
/// conflict is open again, with why, for a person to decide anew.
pub async fn reopen(conn: &mut PgConnection, id: Uuid, error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE sync_conflicts
            SET status = 'open', resolution = NULL, resolved_data = NULL, resolved_by = NULL,
                resolved_at = NULL, error = $2, updated_at = now()
          WHERE id = $1 AND applied_at IS NULL",
    )
    .bind(id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// The resolutions written to both sides.
pub async fn applied(conn: &mut PgConnection, ids: &[Uuid]) -> Result<()> {
    sqlx::query(
        "UPDATE sync_conflicts SET applied_at = now(), updated_at = now() WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// A conflicts filter.
pub struct ConflictFilter {
    pub configuration_id: Option<Uuid>,
    pub status: Option<ConflictStatus>,
    pub starting_after: Option<Uuid>,
    pub limit: i64,
}

/// Conflicts, newest first.
pub async fn list(pool: &PgPool, scope: Scope, f: &ConflictFilter) -> Result<Vec<SyncConflict>> {
    Ok(
        sqlx::query_as::<_, SyncConflict>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sync_conflicts
          WHERE tenant_id = $1 AND mode = $2 AND ($3::uuid IS NULL OR configuration_id = $3)
            AND ($4::text IS NULL OR status = $4) AND ($5::uuid IS NULL OR id < $5)
          ORDER BY id DESC LIMIT $6"
        )))
        .bind(scope.tenant_id)
        .bind(scope.mode.as_str())
        .bind(f.configuration_id)
        .bind(f.status)
        .bind(f.starting_after)
        .bind(f.limit)
        .fetch_all(pool)
        .await?,
    )
}

pub async fn get<'e>(
    db: impl sqlx::PgExecutor<'e>,
    scope: Scope,
    id: Uuid,
) -> Result<SyncConflict> {
    sqlx::query_as::<_, SyncConflict>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sync_conflicts WHERE tenant_id = $1 AND mode = $2 AND id = $3"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| Error::not_found("sync conflict"))
}

/// Records a person's decision on an open conflict (on the caller's transaction). The caller
/// starts a run to write it.
pub async fn resolve(
    conn: &mut PgConnection,
    scope: Scope,
    id: Uuid,
    body: Resolve,
    by: &str,
) -> Result<SyncConflict> {
    let c = get(&mut *conn, scope, id).await?;
    if c.status != ConflictStatus::Open {
        return Err(resolved_already());
    }
    let invalid = |detail: String| Error::invalid("parameter_invalid", "data", detail);
    let data = match (body.resolution, body.data) {
        (Choice::Merged, None) => {
            return Err(invalid("A `merged` resolution needs `data`.".into()));
        }
        (Choice::Source | Choice::Target, Some(_)) => {
            return Err(invalid("`data` goes with a `merged` resolution.".into()));
        }
        (Choice::Merged, Some(data)) => {
            let spec: Json<SyncSpec> =
                sqlx::query_scalar("SELECT spec FROM sync_configurations WHERE id = $1")
                    .bind(c.configuration_id)
                    .fetch_one(&mut *conn)
                    .await?;
            let fields = mapping::canonical_fields(&spec.0);
            if let Some(f) = data.keys().find(|f| !fields.contains(f)) {
                return Err(invalid(format!(
                    "`{f}` is not a field this sync writes ({}).",
                    fields.join(", ")
                )));
            }
            let mut merged = match &c.source_data {
                Some(Value::Object(s)) => s.clone(),
                _ => c
                    .target_data
                    .as_ref()
                    .and_then(|t| t.as_object().cloned())
                    .unwrap_or_default(),
            };
            for k in mapping::canonical_key(&spec.0) {
                let given = data.get(&k);
                if given.is_some_and(|g| !merged.get(&k).is_some_and(|m| super::values::same(g, m)))
                {
                    return Err(invalid(format!("The key field `{k}` cannot change.")));
                }
            }
            merged.extend(data);
            Some(Json(Value::Object(merged)))
        }
        _ => None,
    };
    let resolution = match body.resolution {
        Choice::Source => Resolution::Source,
        Choice::Target => Resolution::Target,
        Choice::Merged => Resolution::Merged,
    };
    // Only while still open, checked on the row as the update takes it: of two people (or a
    // person and a run that finds the sides equal) at the same moment, the second is told.
    sqlx::query_as::<_, SyncConflict>(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_conflicts
            SET status = 'resolved', resolution = $2, resolved_data = $3, resolved_by = $4,
                resolved_at = now(), updated_at = now()
          WHERE id = $1 AND status = 'open' RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(resolution)
    .bind(data)
    .bind(by)
    .fetch_optional(conn)
    .await?
    .ok_or_else(resolved_already)
}

fn resolved_already() -> Error {
    Error::conflict(
        "sync_conflict_resolved",
        None,
        "The conflict is resolved already.",
    )
}

/// The conflicts not yet applied of these records: they hold their records.
pub async fn pending(
    conn: &mut PgConnection,
    configuration_id: Uuid,
    keys: &[String],
) -> Result<std::collections::HashMap<String, Uuid>> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT key, id FROM sync_conflicts
          WHERE configuration_id = $1 AND key = ANY($2) AND applied_at IS NULL",
    )
    .bind(configuration_id)
    .bind(keys)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}
