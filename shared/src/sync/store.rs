//! Switchyard's record store (`sync_records`): the synced rows, one per tenant, mode, entity
//! and key, written by runs in batches and read by partners (`GET /v1/sync/records`).
//!
//! A batch is one upsert that counts every row once as inserted, updated or unchanged from
//! what it wrote; unchanged rows are not rewritten (except by full runs, which mark every row
//! they see, to find deletes by absence).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{config::DeletePolicy, mapping::Record};
use crate::{error::Result, tenants::Scope};

/// Where a run writes.
pub struct Target {
    pub scope: Scope,
    pub entity: String,
    pub configuration_id: Uuid,
    pub run_id: Uuid,
    pub delete_policy: DeletePolicy,
    /// Full runs mark every row seen (deletes by absence sweep the others at the end).
    pub full: bool,
}

/// What a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deleted: i64,
}

/// Writes `records` on the caller's transaction. A key seen twice in one batch keeps its last
/// row (a source whose key is not unique cannot hold two rows under one record).
pub async fn apply(conn: &mut PgConnection, t: &Target, records: &[Record]) -> Result<Applied> {
    let mut last: std::collections::HashMap<&str, &Record> = Default::default();
    for r in records {
        last.insert(r.key.as_str(), r);
    }
    let (gone, live): (Vec<&Record>, Vec<&Record>) = last.into_values().partition(|r| r.deleted);
    let mut applied = Applied::default();
    if !live.is_empty() {
        let (i, u, n): (i64, i64, i64) = sqlx::query_as(
            // One statement, no lookup of the old rows (a lookup's plan depends on statistics
            // a table filling up has not got yet): an inserted row has no `xmax`; a changed
            // row gets `updated_at = now()` (this transaction's time); a row written with equal
            // content (full runs rewrite every row they see) keeps its `updated_at`, and one
            // the `WHERE` skips is not returned. Both count as unchanged.
            "WITH w AS (INSERT INTO sync_records AS r (tenant_id, mode, entity, key, data, hash,
                                                       configuration_id, seen_run_id)
                        SELECT $1, $2, $3, i.key, i.data, i.hash, $4, $8
                          FROM UNNEST($5::text[], $6::jsonb[], $7::bytea[]) AS i(key, data, hash)
                        ON CONFLICT (tenant_id, mode, entity, key) DO UPDATE
                           SET data = excluded.data, hash = excluded.hash,
                               configuration_id = excluded.configuration_id,
                               seen_run_id = excluded.seen_run_id, deleted_at = NULL,
                               updated_at = CASE WHEN r.hash = excluded.hash AND r.deleted_at IS NULL
                                                 THEN r.updated_at ELSE now() END
                         WHERE $9 OR r.hash <> excluded.hash OR r.deleted_at IS NOT NULL
                        RETURNING r.xmax = 0 AS inserted, r.updated_at = now() AS changed)
             SELECT count(*) FILTER (WHERE inserted),
                    count(*) FILTER (WHERE NOT inserted AND changed),
                    $10::bigint - count(*) FILTER (WHERE inserted OR changed)
               FROM w",
        )
        .bind(t.scope.tenant_id)
        .bind(t.scope.mode.as_str())
        .bind(&t.entity)
        .bind(t.configuration_id)
        .bind(live.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
        .bind(
            live.iter()
                .map(|r| sqlx::types::Json(&r.data))
                .collect::<Vec<_>>(),
        )
        .bind(live.iter().map(|r| r.hash.as_slice()).collect::<Vec<_>>())
        .bind(t.run_id)
        .bind(t.full)
        .bind(live.len() as i64)
        .fetch_one(&mut *conn)
        .await?;
        applied.inserted = i;
        applied.updated = u;
        applied.unchanged = n;
    }
    if !gone.is_empty() {
        let keys: Vec<&str> = gone.iter().map(|r| r.key.as_str()).collect();
        let deleted = match t.delete_policy {
            DeletePolicy::Ignore => 0,
            DeletePolicy::Soft => sqlx::query(
                "UPDATE sync_records SET deleted_at = now(), updated_at = now(), seen_run_id = $5
                  WHERE tenant_id = $1 AND mode = $2 AND entity = $3 AND key = ANY($4)
                    AND deleted_at IS NULL",
            )
            .bind(t.scope.tenant_id)
            .bind(t.scope.mode.as_str())
            .bind(&t.entity)
            .bind(&keys)
            .bind(t.run_id)
            .execute(&mut *conn)
            .await?
            .rows_affected() as i64,
            DeletePolicy::Hard => sqlx::query(
                "DELETE FROM sync_records
                  WHERE tenant_id = $1 AND mode = $2 AND entity = $3 AND key = ANY($4)",
            )
            .bind(t.scope.tenant_id)
            .bind(t.scope.mode.as_str())
            .bind(&t.entity)
            .bind(&keys)
            .execute(&mut *conn)
            .await?
            .rows_affected() as i64,
        };
        applied.deleted = deleted;
        applied.unchanged += gone.len() as i64 - deleted;
    }
    Ok(applied)
}

/// Of the configuration's live records, how many the run did not see, and how many there are.
pub async fn unseen(conn: &mut PgConnection, t: &Target) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE seen_run_id IS DISTINCT FROM $2), count(*)
           FROM sync_records
          WHERE tenant_id = $3 AND mode = $4 AND entity = $5
            AND configuration_id = $1 AND deleted_at IS NULL",
    )
    .bind(t.configuration_id)
    .bind(t.run_id)
    .bind(t.scope.tenant_id)
    .bind(t.scope.mode.as_str())
    .bind(&t.entity)
    .fetch_one(conn)
    .await?)
}

/// The end of a full run: the configuration's records the run did not see are gone from the
/// source. Returns how many were deleted (soft or hard, by policy).
pub async fn sweep_unseen(conn: &mut PgConnection, t: &Target) -> Result<i64> {
    let sql = match t.delete_policy {
        DeletePolicy::Ignore => return Ok(0),
        DeletePolicy::Soft => {
            "UPDATE sync_records SET deleted_at = now(), updated_at = now()
              WHERE tenant_id = $3 AND mode = $4 AND entity = $5
                AND configuration_id = $1 AND deleted_at IS NULL
                AND seen_run_id IS DISTINCT FROM $2"
        }
        DeletePolicy::Hard => {
            "DELETE FROM sync_records
              WHERE tenant_id = $3 AND mode = $4 AND entity = $5
                AND configuration_id = $1 AND deleted_at IS NULL
                AND seen_run_id IS DISTINCT FROM $2"
        }
    };
    let n = sqlx::query(sql)
        .bind(t.configuration_id)
        .bind(t.run_id)
        .bind(t.scope.tenant_id)
        .bind(t.scope.mode.as_str())
        .bind(&t.entity)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n as i64)
}

/// A synced record as partners read it.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow, poem_openapi::Object)]
pub struct SyncRecord {
    pub entity: String,
    /// The source key's value as text (several key columns: a JSON array of texts).
    pub key: String,
    /// The mapped row.
    pub data: Value,
    /// The configuration that last wrote it (null once that configuration is deleted).
    #[oai(nullable)]
    pub configuration_id: Option<Uuid>,
    /// Set when the source deleted the row (`delete_policy: soft`).
    #[oai(nullable)]
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When the data last changed (a re-read equal row leaves it alone).
    pub updated_at: DateTime<Utc>,
}

/// A page of records filter.
pub struct RecordFilter {
    pub entity: String,
    pub key: Option<String>,
    pub updated_gte: Option<DateTime<Utc>>,
    pub starting_after: Option<String>,
    pub limit: i64,
}

/// Records of an entity in key order (deleted ones too, with `deleted_at`).
pub async fn list(pool: &PgPool, scope: Scope, f: &RecordFilter) -> Result<Vec<SyncRecord>> {
    let rows = sqlx::query_as::<_, SyncRecord>(
        "SELECT entity, key, data,
                (SELECT c.id FROM sync_configurations c WHERE c.id = r.configuration_id)
                    AS configuration_id,
                deleted_at, created_at, updated_at
           FROM sync_records r
          WHERE tenant_id = $1 AND mode = $2 AND entity = $3
            AND ($4::text IS NULL OR key = $4)
            AND ($5::timestamptz IS NULL OR updated_at >= $5)
            AND ($6::text IS NULL OR key > $6)
          ORDER BY key LIMIT $7",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(&f.entity)
    .bind(&f.key)
    .bind(f.updated_gte)
    .bind(&f.starting_after)
    .bind(f.limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// A rejected row as `jsonb` can keep it: text with NUL characters (which `jsonb` refuses,
/// and which is why such a row was rejected) is kept with them escaped.
pub(crate) fn storable(row: &Value) -> Value {
    match row {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\\u0000")),
        Value::Array(a) => Value::Array(a.iter().map(storable).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), storable(v))).collect())
        }
        other => other.clone(),
    }
}

/// A record as a partner writes it.
#[derive(Clone, Debug, serde::Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct PutRecord {
    /// The record's fields (at most 256 KiB as JSON). Outbound and bidirectional syncs of the
    /// entity carry the change to their integrations.
    pub data: std::collections::BTreeMap<String, Value>,
}

/// Largest record a partner may write.
const MAX_RECORD_BYTES: usize = 256 * 1024;

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Writes record `key` of `entity` for a partner (inserted, or replaced and undeleted).
pub async fn put(
    conn: &mut PgConnection,
    scope: Scope,
    entity: &str,
    key: &str,
    record: PutRecord,
) -> Result<SyncRecord> {
    let data: serde_json::Map<String, Value> = record.data.into_iter().collect();
    let value = Value::Object(data);
    if has_nul(&value) {
        return Err(crate::error::Error::invalid(
            "parameter_invalid",
            "data",
            "Text in a record cannot hold NUL characters.",
        ));
    }
    if value.to_string().len() > MAX_RECORD_BYTES {
        return Err(crate::error::Error::invalid(
            "parameter_invalid",
            "data",
            format!("A record is at most {MAX_RECORD_BYTES} bytes of JSON."),
        ));
    }
    let Value::Object(data) = value else {
        unreachable!("built as an object")
    };
    let hash = super::mapping::hash(&data);
    Ok(sqlx::query_as::<_, SyncRecord>(
        "INSERT INTO sync_records AS r (tenant_id, mode, entity, key, data, hash, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp())
         ON CONFLICT (tenant_id, mode, entity, key) DO UPDATE
            SET data = excluded.data, hash = excluded.hash, configuration_id = NULL,
                deleted_at = NULL, updated_at = clock_timestamp()
         RETURNING entity, key, data, configuration_id, deleted_at, created_at, updated_at",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(entity)
    .bind(key)
    .bind(sqlx::types::Json(&data))
    .bind(&hash)
    .fetch_one(conn)
    .await?)
}

/// Marks record `key` of `entity` deleted (kept as a tombstone, so syncs carry the delete).
pub async fn delete(conn: &mut PgConnection, scope: Scope, entity: &str, key: &str) -> Result<()> {
    let found: Option<bool> = sqlx::query_scalar(
        "UPDATE sync_records
            SET deleted_at = COALESCE(deleted_at, clock_timestamp()),
                updated_at = CASE WHEN deleted_at IS NULL THEN clock_timestamp() ELSE updated_at END
          WHERE tenant_id = $1 AND mode = $2 AND entity = $3 AND key = $4
         RETURNING true",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(entity)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    found
        .map(|_| ())
        .ok_or_else(|| crate::error::Error::not_found("sync record"))
}
