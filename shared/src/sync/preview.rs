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
    config::SyncSpec,
    mapping,
    open::{Connection, Opener},
    source::{Page, Position, as_text},
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
    let row: Option<(Json<SyncSpec>, Option<Value>, String)> = sqlx::query_as(
        "SELECT c.spec, c.cursor, i.provider FROM sync_configurations c
           JOIN integrations i ON i.id = c.integration_id AND i.deleted_at IS NULL
          WHERE c.tenant_id = $1 AND c.mode = $2 AND c.id = $3",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(opener.pool)
    .await?;
    let Some((Json(spec), cursor, provider)) = row else {
        return Err(Error::not_found("sync configuration"));
    };
    let started = std::time::Instant::now();
    let (mut source, credentials, target) =
        match opener.open(scope, &spec, &provider, actor, PREVIEW).await? {
            Connection::Ready {
                source,
                credentials,
                target,
            } => (source, credentials, target),
            Connection::Refused(e) | Connection::Unreachable(e) => {
                return Ok(Delta::failed(cursor, e));
            }
        };
    let column = spec.cursor.as_ref().map(|c| c.column.as_str());
    let is_time = spec.cursor_is_time();
    let watermark = match column {
        Some(c) => match source.watermark(c, is_time, spec.lag_seconds()).await {
            Ok(w) => w,
            Err(e) => {
                let e = redact(&e, &credentials);
                let ms = started.elapsed().as_millis() as i64;
                let target = target.as_deref();
                opener
                    .log(scope, &spec, PREVIEW, target, Err(&e), ms, None)
                    .await?;
                return Ok(Delta::failed(cursor, e));
            }
        },
        None => None,
    };
    let position = Position::Since {
        value: cursor
            .as_ref()
            .and_then(|c| c.get("value"))
            .and_then(as_text),
        minus_seconds: if is_time { spec.lookback_seconds() } else { 0 },
    };
    let key: Vec<String> = spec.source.key.iter().map(|k| k.to_string()).collect();
    let page = Page {
        cursor: column,
        cursor_is_time: is_time,
        key: &key,
        position: &position,
        watermark: watermark.as_deref(),
        limit: Some(limit),
    };
    let read = async {
        let rows = source.count(&page).await?;
        let sample = source.read(&page).await?;
        Ok::<_, String>((rows, sample))
    };
    let read = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(read)) => Ok(read),
        Ok(Err(e)) => Err(redact(&e, &credentials)),
        Err(_) => Err("reading timed out".to_owned()),
    };
    let ms = started.elapsed().as_millis() as i64;
    let (rows, sample) = match read {
        Ok((rows, sample)) => {
            let summary = format!("{rows} rows to read; a sample of {}", sample.len());
            let target = target.as_deref();
            opener
                .log(scope, &spec, PREVIEW, target, Ok(()), ms, Some(&summary))
                .await?;
            (rows, sample)
        }
        Err(e) => {
            let target = target.as_deref();
            opener
                .log(scope, &spec, PREVIEW, target, Err(&e), ms, None)
                .await?;
            return Ok(Delta::failed(cursor, e));
        }
    };
    let mapped: Vec<_> = sample
        .into_iter()
        .map(|r| mapping::map_row(&spec, r))
        .collect();
    let keys: Vec<&str> = mapped
        .iter()
        .filter_map(|m| m.as_ref().ok().map(|r| r.key.as_str()))
        .collect();
    let stored: Vec<(String, Vec<u8>, bool)> = sqlx::query_as(
        "SELECT key, hash, deleted_at IS NOT NULL FROM sync_records
          WHERE tenant_id = $1 AND mode = $2 AND entity = $3 AND key = ANY($4)",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(spec.entity.as_str())
    .bind(&keys)
    .fetch_all(opener.pool)
    .await?;
    let sample = mapped
        .into_iter()
        .map(|m| match m {
            Ok(r) => {
                let old = stored.iter().find(|(k, _, _)| *k == r.key);
                let change = match old {
                    _ if r.deleted => Change::Delete,
                    None | Some((_, _, true)) => Change::Insert,
                    Some((_, hash, false)) if *hash == r.hash => Change::Unchanged,
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
        .collect();
    Ok(Delta {
        rows: Some(rows),
        cursor,
        watermark,
        sample,
        error: None,
        checked_at: Utc::now(),
    })
}
