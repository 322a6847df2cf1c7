//! The adapter boundary: what the engine asks of a source. The engine does the cursor math,
//! mapping, checkpoints and statistics; an adapter only knows how to describe its table, read
//! its clock and stream its rows from a position (and count or read a page, for previews). A new kind of source is one implementation.

use futures::{future::BoxFuture, stream::BoxStream};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a read starts: at a value of the cursor column (inclusive, less a lookback in
/// seconds) or strictly after a keyset position (the last row of the previous batch).
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
}

/// One page to read.
pub struct Page<'a> {
    /// The cursor column (ordering first), if any; key columns order after it.
    pub cursor: Option<&'a str>,
    /// Whether the cursor column holds times (lookbacks subtract seconds) or ids.
    pub cursor_is_time: bool,
    pub key: &'a [String],
    pub position: &'a Position,
    /// Rows at or above this cursor value are left for the next run.
    pub watermark: Option<&'a str>,
    /// At most this many rows (`None`: all of them, for [`Source::stream`]).
    pub limit: Option<i64>,
}

/// A failure of the source (connection, query): the run is retried with backoff.
pub type SourceError = String;

pub trait Source: Send {
    /// The table's columns, in table order.
    fn columns(&self) -> &[String];

    /// The run's upper bound on the cursor column, read once on the source: its clock minus
    /// `lag_seconds` for a time column, its current maximum for an id column.
    fn watermark<'a>(
        &'a mut self,
        column: &'a str,
        is_time: bool,
        lag_seconds: i64,
    ) -> BoxFuture<'a, Result<Option<String>, SourceError>>;

    /// How many rows all pages from `page.position` up to the watermark hold.
    fn count<'a>(&'a mut self, page: &'a Page<'a>) -> BoxFuture<'a, Result<i64, SourceError>>;

    /// Every row from `page.position` on, in `(cursor, key)` order, as one statement read as
    /// it arrives (the source sorts once, however many batches the run commits).
    fn stream<'a>(
        &'a mut self,
        page: &'a Page<'a>,
    ) -> BoxStream<'a, Result<Map<String, Value>, SourceError>>;

    /// Up to `page.limit` rows in `(cursor, key)` order after `page.position`, each a JSON
    /// object of every column.
    fn read<'a>(
        &'a mut self,
        page: &'a Page<'a>,
    ) -> BoxFuture<'a, Result<Vec<Map<String, Value>>, SourceError>>;
}

/// A value as the text the adapters bind (keyset positions, cursor values).
pub fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}
