//! What the next run would read, without running it (`GET /v1/sync/configurations/{id}/delta`):
//! the source opened as a run opens it, the watermark a run starting now would take, the rows
//! from the stored cursor up to it counted, and a sample mapped and compared with the store.
//! Nothing is written but the credential's audit entry.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{
    adapter::{Page, Position, as_text},
    config::{SyncSpec, Which},
    links, mapping,
    open::{Connection, Opener},
    store_side, values,
};
use crate::{
    audit::Actor,
    error::{Error, Result},
    integrations::{connection::redact, vault::Purpose},
    tenants::Scope,
};

/// What a sampled row would do to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum Change {
    Insert,
    Update,
    /// Read again with equal content: not rewritten.
    Unchanged,
    /// The source marks it deleted (tombstone).
    Delete,
    /// It cannot be mapped: the run would skip it and list it under the run's errors.
    Invalid,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct DeltaRow {
    #[oai(nullable)]
    pub key: Option<String>,
    pub change: Change,
    /// The record as the run would store it (the row as read, for `invalid`).
    pub data: Value,
    #[oai(nullable)]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct Delta {
    /// Rows the next run would read if it started now (null when the source could not be
    /// read: see `error`). A `full` run reads every row.
    #[oai(nullable)]
    pub rows: Option<i64>,
    /// Where the next run starts: the configuration's cursor (`{"value": …}`; null for a full
    /// or first run). A `timestamp` run re-reads `lookback_seconds` before it.
    #[oai(nullable)]
    pub cursor: Option<Value>,
    /// The upper bound a run starting now would take on the source.
    #[oai(nullable)]
    pub watermark: Option<String>,
    /// The first rows the run would read, in its order.
    pub sample: Vec<DeltaRow>,
    /// Why the source could not be read (credentials redacted).
    #[oai(nullable)]
    pub error: Option<String>,
    pub checked_at: DateTime<Utc>,
}

impl Delta {
    fn failed(cursor: Option<Value>, error: String) -> Self {
        Delta {
            rows: None,
            cursor,
            watermark: None,
            sample: vec![],
            error: Some(error),
            checked_at: Utc::now(),
        }
    }
}

const PREVIEW: Purpose = Purpose::SyncPreview;

/// How long a preview waits to connect to the source (an API request is not a run).
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long it waits for the count and the sample.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Previews configuration `id`'s next run with a sample of `limit` rows.
pub async fn delta(
    opener: &Opener<'_>,
    scope: Scope,
    id: Uuid,
    actor: &Actor,
    limit: i64,
) -> Result<Delta> {
    let row: Option<(Json<SyncSpec>, Option<Value>)> = sqlx::query_as(
        "SELECT spec, cursor FROM sync_configurations
          WHERE tenant_id = $1 AND mode = $2 AND id = $3",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(opener.pool)
    .await?;
    let Some((Json(spec), cursor)) = row else {
        return Err(Error::not_found("sync configuration"));
    };
    let value = cursor
        .as_ref()
        .and_then(|c| c.get("value"))
        .and_then(as_text);
    let (rows, watermark, sample) = if spec.source.is_store() {
        let mut conn = opener.pool.acquire().await?;
        let watermark = store_side::watermark(&mut conn).await?;
        let position = match (&value, spec.reads_all(Which::Source)) {
            (Some(v), false) => Position::Since {
                value: Some(v.clone()),
                minus_seconds: store_side::LOOKBACK_SECONDS,
            },
            _ => Position::Since {
                value: None,
                minus_seconds: 0,
            },
        };
        let entity = spec.entity.as_str();
        let w = Some(watermark.as_str());
        let rows = store_side::count(&mut conn, scope, entity, &position, w).await?;
        let sample = store_side::page(&mut conn, scope, entity, &position, w, limit)
            .await?
            .into_iter()
            .map(|r| {
                let deleted = r.deleted;
                mapping::map_keyed(&spec, r.key, r.data).map(|mut rec| {
                    rec.deleted |= deleted;
                    rec
                })
            })
            .collect();
        (rows, Some(watermark), sample)
    } else {
        match read_source(opener, scope, &spec, value, actor, limit).await? {
            Ok(read) => read,
            Err(e) => return Ok(Delta::failed(cursor, e)),
        }
    };
    let sample = compare(opener.pool, scope, id, &spec, sample).await?;
    Ok(Delta {
        rows: Some(rows),
        cursor,
        watermark,
        sample,
        error: None,
        checked_at: Utc::now(),
    })
}

type Sample = Vec<std::result::Result<mapping::Record, mapping::Rejected>>;

/// Counts and samples an integration source as a run would read it; `Err` holds why it could
/// not be read (written to the integration's log).
async fn read_source(
    opener: &Opener<'_>,
    scope: Scope,
    spec: &SyncSpec,
    value: Option<String>,
    actor: &Actor,
    limit: i64,
) -> Result<std::result::Result<(i64, Option<String>, Sample), String>> {
    let started = std::time::Instant::now();
    let mut side = match opener
        .open(scope, spec, Which::Source, actor, PREVIEW)
        .await?
    {
        Connection::Ready(side) => side,
        Connection::Refused(e) | Connection::Unreachable(e) => return Ok(Err(e)),
    };
    let column = spec.cursor_column();
    let integration = side.integration_id;
    let target = side.target.clone();
    let watermark = match spec.strategy() {
        Some(strategy) => match side
            .adapter
            .watermark(column, strategy, spec.lag_seconds())
            .await
        {
            Ok(w) => w,
            Err(e) => {
                let e = redact(&e, &side.credentials);
                let ms = started.elapsed().as_millis() as i64;
                opener
                    .log(
                        scope,
                        integration,
                        PREVIEW,
                        target.as_deref(),
                        Err(&e),
                        ms,
                        None,
                    )
                    .await?;
                return Ok(Err(e));
            }
        },
        None => None,
    };
    let position = Position::Since {
        value: value.filter(|_| !spec.reads_all(Which::Source)),
        minus_seconds: if spec.cursor_is_time() {
            spec.lookback_seconds()
        } else {
            0
        },
    };
    let key = spec.source.key_names();
    let page = Page {
        cursor: column,
        strategy: spec.strategy(),
        key: &key,
        position: &position,
        watermark: watermark.as_deref(),
        limit: Some(limit),
    };
    let read = async {
        let rows = side.adapter.count(&page).await?;
        let sample = side.adapter.read(&page).await?;
        Ok::<_, String>((rows, sample))
    };
    let read = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(read)) => Ok(read),
        Ok(Err(e)) => Err(redact(&e, &side.credentials)),
        Err(_) => Err("reading timed out".to_owned()),
    };
    let ms = started.elapsed().as_millis() as i64;
    let target = target.as_deref();
    match read {
        Ok((rows, sample)) => {
            let summary = format!("{rows} rows to read; a sample of {}", sample.len());
            opener
                .log(
                    scope,
                    integration,
                    PREVIEW,
                    target,
                    Ok(()),
                    ms,
                    Some(&summary),
                )
                .await?;
            let sample = sample
                .into_iter()
                .map(|r| mapping::map_row(spec, r))
                .collect();
            Ok(Ok((rows, watermark, sample)))
        }
        Err(e) => {
            opener
                .log(scope, integration, PREVIEW, target, Err(&e), ms, None)
                .await?;
            Ok(Err(e))
        }
    }
}

/// What each sampled record would do: compared with the store (inbound) or with what both
/// sides last agreed on (outbound, bidirectional).
async fn compare(
    pool: &sqlx::PgPool,
    scope: Scope,
    id: Uuid,
    spec: &SyncSpec,
    sample: Sample,
) -> Result<Vec<DeltaRow>> {
    let keys: Vec<String> = sample
        .iter()
        .filter_map(|m| m.as_ref().ok().map(|r| r.key.clone()))
        .collect();
    // Per key: the stored content's hash, or the link's base; and whether it is deleted.
    type Known = (String, Option<Vec<u8>>, Option<Value>, bool);
    let known: Vec<Known> = if spec.exchanges() {
        let mut conn = pool.acquire().await?;
        links::load(&mut conn, id, &keys)
            .await?
            .into_iter()
            .map(|(k, l)| {
                let gone = l.base.is_none();
                (k, None, l.base.map(Value::Object), gone)
            })
            .collect()
    } else {
        sqlx::query_as(
            "SELECT key, hash, NULL::jsonb, deleted_at IS NOT NULL FROM sync_records
              WHERE tenant_id = $1 AND mode = $2 AND entity = $3 AND key = ANY($4)",
        )
        .bind(scope.tenant_id)
        .bind(scope.mode.as_str())
        .bind(spec.entity.as_str())
        .bind(&keys)
        .fetch_all(pool)
        .await?
    };
    Ok(sample
        .into_iter()
        .map(|m| match m {
            Ok(r) => {
                let old = known.iter().find(|(k, ..)| *k == r.key);
                let change = match old {
                    _ if r.deleted => Change::Delete,
                    None | Some((_, _, _, true)) => Change::Insert,
                    Some((_, Some(hash), _, false)) if *hash == r.hash => Change::Unchanged,
                    Some((_, None, Some(Value::Object(base)), false))
                        if values::same_fields(base, &r.data) =>
                    {
                        Change::Unchanged
                    }
                    Some(_) => Change::Update,
                };
                DeltaRow {
                    key: Some(r.key),
                    change,
                    data: Value::Object(r.data),
                    error: None,
                }
            }
            Err(e) => DeltaRow {
                key: e.key,
                change: Change::Invalid,
                data: e.row,
                error: Some(e.error),
            },
        })
        .collect())
}
