//! The adapter boundary: what the engine asks of an integration's table or resource. The
//! engine does the cursor math, mapping, classification, conflicts, checkpoints and
//! statistics; an adapter only knows how to describe its object, read its clock, stream its
//! rows from a position, fetch rows by key, and write a batch idempotently and conditionally.
//! A new kind of integration is one implementation (`adapters/`).

use futures::{future::BoxFuture, stream::BoxStream};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::CursorStrategy;

/// A row as a JSON object of its fields.
pub type Row = Map<String, Value>;

/// Where a read starts: at a value of the cursor column (inclusive, less a lookback in
/// seconds), strictly after a keyset position (the last row of the previous batch), or at a
/// page of an HTTP resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    /// From the beginning (`value` absent) or from `value − minus_seconds`.
    Since {
        value: Option<String>,
        minus_seconds: i64,
    },
    /// After `(value, key…)` in `(cursor column, key columns)` order (`value` absent when
    /// there is no cursor column: a full read in key order).
    After {
        value: Option<String>,
        key: Vec<String>,
    },
    /// At the page `url` of an HTTP resource, after its first `skip` rows.
    Page { url: String, skip: u64 },
}

/// One read.
pub struct Page<'a> {
    /// The change column (ordering first), if any; key columns order after it.
    pub cursor: Option<&'a str>,
    /// How the change column is read (`None`: every row, in key order).
    pub strategy: Option<CursorStrategy>,
    pub key: &'a [String],
    pub position: &'a Position,
    /// Rows at (times) or above (ids, versions) this cursor value are left for the next run.
    pub watermark: Option<&'a str>,
    /// At most this many rows (`None`: all of them, for [`Adapter::stream`]).
    pub limit: Option<i64>,
}

impl Page<'_> {
    pub fn cursor_is_time(&self) -> bool {
        self.strategy == Some(CursorStrategy::Timestamp)
    }
}

/// A row read, with what the adapter knows about it beyond its fields.
#[derive(Clone, Debug)]
pub struct Read {
    pub row: Row,
    /// The source reports the row deleted (Change Tracking's `D`): `row` holds its key.
    pub deleted: bool,
    /// Where a read resumes after this row, when the adapter cannot tell it from the row
    /// itself (HTTP pages); `None`: after the row's `(cursor, key)`.
    pub after: Option<Position>,
}

impl Read {
    pub fn row(row: Row) -> Read {
        Read {
            row,
            deleted: false,
            after: None,
        }
    }
}

/// A failure of the integration (connection, query, HTTP status): the run retries later.
pub type SourceError = String;

/// One write of a batch, addressed by key.
#[derive(Clone, Debug)]
pub struct Write {
    /// The key's values as text, in the side's key order.
    pub key: Vec<String>,
    pub op: WriteOp,
    /// The row's version when it was read (its change column's value, its ETag); the write
    /// applies only while the row still has it. `None` with an upsert: the row did not exist.
    pub expected: Option<String>,
    /// Whether the row existed when it was read.
    pub exists: bool,
}

#[derive(Clone, Debug)]
pub enum WriteOp {
    /// Insert (the row did not exist) or update these fields (it did; fields not given keep
    /// their values). A side with a tombstone column clears it.
    Upsert(Row),
    /// Mark the row deleted in the side's tombstone column.
    SoftDelete,
    /// Remove the row.
    Delete,
}

/// What became of one write.
#[derive(Clone, Debug, PartialEq)]
pub enum Written {
    /// Applied. `row` is the row as the side now holds it, when it says (`None` for deletes).
    Done { row: Option<Row> },
    /// The row changed (or appeared) since it was read: not written; the next read of the
    /// side's changes sees it and decides again.
    Changed,
    /// The side refused the values (a constraint, a type): a poison record.
    Refused(String),
}

/// What a side is, for messages and logs.
#[derive(Clone, Debug, Default)]
pub struct Described {
    /// Every column (SQL) or the fields seen so far (HTTP: may be empty before a read).
    pub columns: Vec<String>,
    /// Whether `columns` is the whole schema (SQL), so a missing column is an error.
    pub schema_known: bool,
}

pub trait Adapter: Send + Sync {
    fn describe(&self) -> &Described;

    /// The run's upper bound on the cursor, read once on the integration: its clock minus
    /// `lag_seconds` for a time column, its current maximum for an id column, the lowest
    /// active version for rowversions and Change Tracking.
    fn watermark<'a>(
        &'a mut self,
        column: Option<&'a str>,
        strategy: CursorStrategy,
        lag_seconds: i64,
    ) -> BoxFuture<'a, Result<Option<String>, SourceError>>;

    /// How many rows all pages from `page.position` up to the watermark hold.
    fn count<'a>(&'a mut self, page: &'a Page<'a>) -> BoxFuture<'a, Result<i64, SourceError>>;

    /// Every row from `page.position` on, in `(cursor, key)` order (or the resource's own),
    /// read as it arrives: memory holds what one batch needs, however large the object.
    fn stream<'a>(&'a mut self, page: &'a Page<'a>) -> BoxStream<'a, Result<Read, SourceError>>;

    /// Up to `page.limit` rows after `page.position` (previews).
    fn read<'a>(&'a mut self, page: &'a Page<'a>) -> BoxFuture<'a, Result<Vec<Row>, SourceError>>;

    /// The rows with these keys as they are now (absent keys are left out).
    fn fetch<'a>(
        &'a mut self,
        keys: &'a [Vec<String>],
    ) -> BoxFuture<'a, Result<Vec<Row>, SourceError>>;

    /// Applies `writes`, each idempotent (keyed) and conditional on its `expected` version;
    /// one outcome per write, in order. `Err`: the side could not be reached (nothing is known
    /// of what was applied; the run retries, and re-reading finds the sides equal).
    fn write<'a>(
        &'a mut self,
        writes: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Written>, SourceError>>;

    /// The version of a row read from this side (its change column's value, or its ETag).
    fn version_of(&self, row: &Row) -> Option<String>;

    /// Whether this side can take keyed writes of `fields` (SQL: a unique key on the key
    /// columns, and a column per field); checked before a run writes anything.
    fn check_writable<'a>(
        &'a mut self,
        fields: &'a [String],
    ) -> BoxFuture<'a, Result<(), SourceError>>;
}

/// A value as the text the adapters bind (keyset positions, cursor values, keys).
pub fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The key values of `row` as text, in `key` order (`None` when one is missing or null).
pub fn key_values(row: &Row, key: &[String]) -> Option<Vec<String>> {
    key.iter().map(|k| row.get(k).and_then(as_text)).collect()
}

/// The record key of key values: one value as it is, several as a JSON array of texts.
pub fn key_text(parts: &[String]) -> String {
    match parts {
        [one] => one.clone(),
        many => Value::from(many.to_vec()).to_string(),
    }
}

/// The key values of a record key (the inverse of [`key_text`] for `n` columns).
pub fn key_parts(text: &str, n: usize) -> Option<Vec<String>> {
    if n == 1 {
        return Some(vec![text.to_owned()]);
    }
    let parts: Vec<String> = serde_json::from_str(text).ok()?;
    (parts.len() == n).then_some(parts)
}
