//! The record store as a side of outbound and bidirectional syncs: its changes read by update
//! time (a keyset on `(updated_at, key)` below a watermark on Postgres' clock, re-reading a
//! lookback window), records fetched by key, and conditional writes on the run's batch
//! transaction (so a store write commits with its checkpoint). A record's version is its
//! `updated_at`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use super::{
    adapter::{Position, Row, WriteOp, Written},
    mapping,
};
use crate::{error::Result, tenants::Scope};

/// How long the store's changes wait before a run reads them: its writers are short
/// transactions (a record committed later than this after its `updated_at` is still read by
/// the next run's lookback).
pub const LAG_SECONDS: i64 = 1;
/// How far back each run re-reads the store's changes (re-read records are recognised by
/// their links and skipped).
pub const LOOKBACK_SECONDS: i64 = 60;

/// A record as a side's row.
#[derive(Clone, Debug)]
pub struct StoreRow {
    pub key: String,
    pub data: Row,
    pub deleted: bool,
    /// `updated_at`, exactly (microseconds, UTC): the version conditional writes compare.
    pub version: String,
}

fn version(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

type Raw = (String, Json<Row>, bool, DateTime<Utc>);

fn row((key, data, deleted, updated_at): Raw) -> StoreRow {
    StoreRow {
        key,
        data: data.0,
        deleted,
        version: version(updated_at),
    }
}

/// A version or watermark (RFC 3339) as a time.
fn time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The lower bound on `updated_at` of a read starting at `position` (a cursor less its
/// lookback); `None` from the beginning or after a keyset position.
fn since(position: &Position) -> Option<DateTime<Utc>> {
    match position {
        Position::Since {
            value: Some(v),
            minus_seconds,
        } => time(v).map(|t| t - chrono::Duration::seconds(*minus_seconds)),
        _ => None,
    }
}

/// Where the store is: its clock less the lag (the run's upper bound on `updated_at`).
pub async fn watermark(conn: &mut PgConnection) -> Result<String> {
    let t: DateTime<Utc> = sqlx::query_scalar("SELECT now() - make_interval(secs => $1)")
        .bind(LAG_SECONDS as f64)
        .fetch_one(conn)
        .await?;
    Ok(version(t))
}

/// Up to `limit` records of `entity` changed after `position`, below `watermark` (all of them,
/// for `None`), in `(updated_at, key)` order.
pub async fn page(
    conn: &mut PgConnection,
    scope: Scope,
    entity: &str,
    position: &Position,
    watermark: Option<&str>,
    limit: i64,
) -> Result<Vec<StoreRow>> {
    let (after_time, after_key) = match position {
        Position::After { value, key } => (value.as_deref().and_then(time), key.first().cloned()),
        _ => (None, None),
    };
    let rows: Vec<Raw> = sqlx::query_as(
        "SELECT key, data, deleted_at IS NOT NULL, updated_at FROM sync_records
          WHERE tenant_id = $1 AND mode = $2 AND entity = $3
            AND ($4::timestamptz IS NULL OR updated_at >= $4)
            AND ($5::timestamptz IS NULL OR (updated_at, key) > ($5, $6))
            AND ($7::timestamptz IS NULL OR updated_at < $7)
          ORDER BY updated_at, key LIMIT $8",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(entity)
    .bind(since(position))
    .bind(after_time)
    .bind(after_key)
    .bind(watermark.and_then(time))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(row).collect())
}

/// The records with these keys (deleted ones too).
pub async fn fetch(
    conn: &mut PgConnection,
    scope: Scope,
    entity: &str,
    keys: &[String],
) -> Result<Vec<StoreRow>> {
    let rows: Vec<Raw> = sqlx::query_as(
        "SELECT key, data, deleted_at IS NOT NULL, updated_at FROM sync_records
          WHERE tenant_id = $1 AND mode = $2 AND entity = $3 AND key = ANY($4)",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(entity)
    .bind(keys)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(row).collect())
}

/// One store write of a batch.
pub struct StoreWrite<'a> {
    pub key: &'a str,
    pub op: &'a WriteOp,
    /// The record's `updated_at` when it was read (`None`: it did not exist).
    pub expected: Option<&'a str>,
}

/// Where writes go.
pub struct StoreTarget<'a> {
    pub scope: Scope,
    pub entity: &'a str,
    pub configuration_id: Uuid,
    pub run_id: Uuid,
}

/// Applies `writes` on the caller's transaction, each only while the record is as it was read
/// (`Changed` otherwise). Returns one outcome per write, in order, with the record's new
/// version for applied upserts.
pub async fn write(
    conn: &mut PgConnection,
    t: &StoreTarget<'_>,
    writes: &[StoreWrite<'_>],
) -> Result<Vec<(Written, Option<String>)>> {
    let mut out: Vec<(Written, Option<String>)> = vec![(Written::Changed, None); writes.len()];
    let (mut keys, mut data, mut hashes, mut expected, mut kinds) =
        (vec![], vec![], vec![], vec![], vec![]);
    for w in writes {
        keys.push(w.key);
        let (kind, d) = match w.op {
            WriteOp::Upsert(row) => ("upsert", Some(row)),
            WriteOp::SoftDelete => ("soft", None),
            WriteOp::Delete => ("hard", None),
        };
        kinds.push(kind);
        hashes.push(d.map(mapping::hash).unwrap_or_default());
        data.push(Json(d.cloned().map_or(Value::Null, Value::Object)));
        expected.push(w.expected.and_then(time));
    }
    // Inserts where no record was; updates and deletes where the record still has the
    // version read. Each returns the keys it wrote.
    let done: Vec<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "WITH i AS (SELECT * FROM UNNEST($4::text[], $5::jsonb[], $6::bytea[], $7::timestamptz[],
                                         $8::text[]) AS i(key, data, hash, expected, kind)),
              ins AS (INSERT INTO sync_records AS r (tenant_id, mode, entity, key, data, hash,
                                                     configuration_id, seen_run_id)
                      SELECT $1, $2, $3, i.key, i.data, i.hash, $9, $10 FROM i
                       WHERE i.kind = 'upsert' AND i.expected IS NULL
                      ON CONFLICT DO NOTHING RETURNING r.key, r.updated_at),
              upd AS (UPDATE sync_records AS r
                         SET data = i.data, hash = i.hash, configuration_id = $9, seen_run_id = $10,
                             deleted_at = NULL, updated_at = clock_timestamp()
                        FROM i
                       WHERE i.kind = 'upsert' AND r.tenant_id = $1 AND r.mode = $2
                         AND r.entity = $3 AND r.key = i.key AND r.updated_at = i.expected
                      RETURNING r.key, r.updated_at),
              soft AS (UPDATE sync_records AS r
                          SET deleted_at = clock_timestamp(), updated_at = clock_timestamp(),
                              seen_run_id = $10
                         FROM i
                        WHERE i.kind = 'soft' AND r.tenant_id = $1 AND r.mode = $2
                          AND r.entity = $3 AND r.key = i.key AND r.updated_at = i.expected
                       RETURNING r.key, NULL::timestamptz),
              hard AS (DELETE FROM sync_records AS r USING i
                        WHERE i.kind = 'hard' AND r.tenant_id = $1 AND r.mode = $2
                          AND r.entity = $3 AND r.key = i.key AND r.updated_at = i.expected
                       RETURNING r.key, NULL::timestamptz)
         SELECT * FROM ins UNION ALL SELECT * FROM upd
         UNION ALL SELECT * FROM soft UNION ALL SELECT * FROM hard",
    )
    .bind(t.scope.tenant_id)
    .bind(t.scope.mode.as_str())
    .bind(t.entity)
    .bind(&keys)
    .bind(&data)
    .bind(&hashes)
    .bind(&expected)
    .bind(&kinds)
    .bind(t.configuration_id)
    .bind(t.run_id)
    .fetch_all(conn)
    .await?;
    for (key, updated_at) in done {
        if let Some(i) = keys.iter().position(|k| *k == key) {
            let row = match writes[i].op {
                WriteOp::Upsert(r) => Some(r.clone()),
                _ => None,
            };
            out[i] = (Written::Done { row }, updated_at.map(version));
        }
    }
    Ok(out)
}

/// How many records of `entity` changed after `position`, below `watermark` (previews).
pub async fn count(
    conn: &mut PgConnection,
    scope: Scope,
    entity: &str,
    position: &Position,
    watermark: Option<&str>,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM sync_records
          WHERE tenant_id = $1 AND mode = $2 AND entity = $3
            AND ($4::timestamptz IS NULL OR updated_at >= $4)
            AND ($5::timestamptz IS NULL OR updated_at < $5)",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(entity)
    .bind(since(position))
    .bind(watermark.and_then(time))
    .fetch_one(conn)
    .await?)
}
