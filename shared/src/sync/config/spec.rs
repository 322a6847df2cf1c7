//! What a sync configuration is, as partners send it (typed: the schema is what the server
//! accepts). The rules no schema can state are in [`super::checks`].

use std::collections::BTreeMap;

use poem_openapi::types::MaybeUndefined;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::super::schedule::ScheduleSpec;
use crate::input::{Int, Text, pattern_string};

pattern_string!(
    /// A column or field name as the side's catalog spells it.
    Identifier,
    "^[A-Za-z_][A-Za-z0-9_]{0,62}$",
    "a column name (letters, digits and `_`)"
);
pattern_string!(
    /// A table, optionally schema-qualified (`erp.equipment`).
    TableName,
    "^([A-Za-z_][A-Za-z0-9_]{0,62}[.])?[A-Za-z_][A-Za-z0-9_]{0,62}$",
    "a table name, optionally schema-qualified (`erp.equipment`)"
);
pattern_string!(
    /// What the rows are: `equipment`, `suppliers`, `orders`, … or any lowercase slug.
    EntityName,
    "^[a-z][a-z0-9_]{0,62}$",
    "a lowercase slug (`equipment`)"
);
pattern_string!(
    /// A collection's path under the integration's `base_url` (`/odata/Equipment`).
    ResourcePath,
    "^/[A-Za-z0-9_.~!$&'()*+,;=:@%/-]{0,199}$",
    "a path starting with `/` (`/odata/Equipment`)"
);
pattern_string!(
    /// A query parameter name (`$top`, `updated_since`).
    ParamName,
    "^[A-Za-z_$][A-Za-z0-9_.$-]{0,62}$",
    "a query parameter name (`updated_since`, `$top`)"
);
pattern_string!(
    /// A JSON pointer into a response body (`/value`, `/meta/next_cursor`); empty: the body.
    JsonPointer,
    "^(/[^/]{0,100}){0,8}$",
    "a JSON pointer (`/value`)"
);

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum)]
        #[serde(rename_all = "snake_case")]
        #[oai(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }
    };
}

text_enum!(
    /// Which way rows flow: `inbound` from an integration's table or resource into the record
    /// store; `outbound` from the record store to an integration; `bidirectional` both ways
    /// between an integration and the store (or another integration), with conflicts.
    Direction { Inbound, Outbound, Bidirectional }
);
text_enum!(
    /// `full` reads every row each run (and can find deletes by absence); `incremental` reads
    /// what changed since the last run, by `cursor`.
    SyncMode { Full, Incremental }
);
text_enum!(
    /// How changes are found: `timestamp` (a change-time column, read as a keyset on
    /// `(column, key)` below a watermark taken at the start of the run on the source's clock,
    /// minus a safety lag, re-reading a lookback window); `id` (an ever-growing column of an
    /// append-only table); `rowversion` (MSSQL: a `rowversion` column, read below
    /// `MIN_ACTIVE_ROWVERSION()`); `change_tracking` (MSSQL Change Tracking: `CHANGETABLE`,
    /// deletes included); `hash` (no change column: every row is read and compared by content,
    /// deletes found by absence).
    CursorStrategy { Timestamp, Id, Rowversion, ChangeTracking, Hash }
);
text_enum!(
    /// Bidirectional syncs: what happens when both sides changed a record since it was last
    /// synced. `source_wins`, `target_wins`; `newest_wins` (the later change time as each side
    /// wrote it; a tie goes to the source); `field_merge` (changes to different fields are
    /// merged, changes to the same field wait for a person); `manual` (the record waits for a
    /// person: `POST /v1/sync/conflicts/{id}/resolve`).
    ConflictStrategy { SourceWins, TargetWins, NewestWins, FieldMerge, Manual }
);
text_enum!(
    /// What a deleted row does to its counterpart: kept (`ignore`), marked deleted (`soft`,
    /// the default: the store's `deleted_at`, or the side's `tombstone` column) or removed
    /// (`hard`).
    DeletePolicy { Ignore, Soft, Hard }
);
text_enum!(
    /// Fields no mapping names: kept as they are (`pass`, the default of inbound syncs) or
    /// dropped (`drop`, the only choice for outbound and bidirectional ones, which write what
    /// the mappings list).
    Unmapped { Pass, Drop }
);
text_enum!(
    /// Switchyard's own record store (`GET /v1/sync/records`).
    StoreName { Switchyard }
);
text_enum!(
    /// What a mapping does to its value.
    TransformType {
        /// Strip leading and trailing whitespace.
        Trim,
        /// To `to`: `string`, `integer`, `number` or `boolean`.
        Cast,
        /// Always `value` (one way only).
        Constant,
        /// `value` where the source is null (one way only).
        Default,
        /// `table[value]`; a value missing from the table fails the record.
        Lookup,
    }
);
text_enum!(
    /// A JSON type a value is cast to.
    CastType { String, Integer, Number, Boolean }
);
text_enum!(
    /// How an HTTP resource's pages follow each other. `next_link` (default): the next page's
    /// URL from the body (`@odata.nextLink`, `odata.nextLink`, `__next`, or `next`) or the
    /// `Link: <…>; rel="next"` header; `cursor`: a token in the body (`next_cursor`) passed
    /// back as `cursor_param`; `page`: `page_param` = 1, 2, … until a short page; `offset`:
    /// `offset_param` = 0, n, 2n, … until a short page.
    Pagination { NextLink, Cursor, Page, Offset }
);
text_enum!(
    /// How an incremental HTTP read asks for changes since its cursor: `param`
    /// (`?<delta_param>=<value>`) or `odata` (`$filter=<column> ge <value>` and `$orderby`).
    DeltaStyle { Param, Odata }
);
text_enum!(
    /// The method that writes an item: creates go to the item's path (`put`) or the resource
    /// (`post`); updates `put` or `patch` the item's path.
    WriteMethod { Put, Post, Patch }
);

/// How an HTTP (REST or OData) resource is read and written. Every field has a default.
#[derive(Clone, Debug, Default, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct HttpSpec {
    /// Where a page's rows are (default: the body when it is an array, else the first of
    /// `/value`, `/data`, `/items`, `/results`, `/d/results`).
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<JsonPointer>,
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    /// Rows asked for per page (sent as `page_size_param` when given).
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<Int<1, 10_000>>,
    /// The parameter carrying `page_size` (`$top`, `limit`, `per_page`; default `limit`).
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size_param: Option<ParamName>,
    /// `cursor` pagination: where the next token is (default `/next_cursor`; absent or null
    /// ends the read) and the parameter taking it (default `cursor`).
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<JsonPointer>,
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_param: Option<ParamName>,
    /// `page` and `offset` pagination: the parameter (default `page`, or `offset`).
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_param: Option<ParamName>,
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaStyle>,
    /// `param` deltas: the parameter (default `updated_since`).
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_param: Option<ParamName>,
    /// An item's path for writes: `{key}` is replaced by the key (URL-encoded), `{resource}`
    /// by the resource. Default `{resource}/{key}`; OData: `{resource}({key})`.
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_path: Option<Text<1, 300>>,
    /// How new items are created (default `put` to the item path, with `If-None-Match: *`).
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<WriteMethod>,
    /// How items are updated (default `put`, with `If-Match` when the item has an ETag).
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<WriteMethod>,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CursorSpec {
    pub strategy: CursorStrategy,
    /// The change column (`timestamp`, `id`, `rowversion`); not used by `change_tracking`
    /// and `hash`.
    #[oai(nullable)]
    #[serde(default)]
    pub column: Option<Identifier>,
    /// `timestamp`: rows changed in the last this many seconds wait for the next run, so a
    /// transaction still open at the source is not skipped (default 30).
    #[oai(nullable)]
    #[serde(default)]
    pub lag_seconds: Option<Int<0, 86_400>>,
    /// `timestamp`: each run re-reads this many seconds before the last change it saw
    /// (default 300); re-read rows that did not change count as unchanged.
    #[oai(nullable)]
    #[serde(default)]
    pub lookback_seconds: Option<Int<0, 604_800>>,
}

/// One side of a sync: Switchyard's record store (`{"store": "switchyard"}`), or a table of a
/// SQL integration (`integration_id`, `table`, `key`), or a resource of an HTTP one
/// (`integration_id`, `resource`, `key`, `http`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct SideSpec {
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreName>,
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<Uuid>,
    /// SQL integrations (`postgres`, `mysql`, `mssql`): the table.
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableName>,
    /// HTTP integrations: the collection's path under `base_url`.
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourcePath>,
    /// The columns that identify a row (1 to 4). For a target integration, the mapped names
    /// of the source's key (the default).
    #[oai(nullable, validator(min_items = 1, max_items = 4))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<Identifier>>,
    /// A column that marks deleted rows (non-null and not `false` = deleted); soft deletes
    /// written to this side set it.
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<Identifier>,
    /// A bidirectional target integration's own change cursor (the source's is `cursor`).
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorSpec>,
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSpec>,
}

impl SideSpec {
    pub fn is_store(&self) -> bool {
        self.store.is_some()
    }

    pub fn key(&self) -> &[Identifier] {
        self.key.as_deref().unwrap_or_default()
    }

    pub fn key_names(&self) -> Vec<String> {
        self.key().iter().map(|k| k.to_string()).collect()
    }

    /// The table or resource, for logs and messages.
    pub fn object(&self) -> &str {
        match (&self.table, &self.resource) {
            (Some(t), _) => t.as_str(),
            (None, Some(r)) => r.as_str(),
            _ => "the record store",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct Transform {
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub kind: TransformType,
    /// `cast`: the type.
    #[oai(nullable)]
    #[serde(default)]
    pub to: Option<CastType>,
    /// `constant`, `default`: the value.
    #[oai(nullable)]
    #[serde(default)]
    pub value: Option<Value>,
    /// `lookup`: source values (as text) → values.
    #[oai(nullable, validator(max_properties = 1000))]
    #[serde(default)]
    pub table: Option<BTreeMap<String, Value>>,
}

/// One field of the record: from a source column, under a new name, transformed.
#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct FieldMapping {
    pub source: Identifier,
    pub target: Text<1, 100>,
    #[oai(nullable)]
    #[serde(default)]
    pub transform: Option<Transform>,
}

/// A sync configuration as requests give it and as responses show it (with every default).
#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct SyncSpec {
    pub name: Text<1, 200>,
    pub entity: EntityName,
    /// Default `inbound`.
    #[oai(nullable)]
    #[serde(default)]
    pub direction: Option<Direction>,
    pub mode: SyncMode,
    pub source: SideSpec,
    pub target: SideSpec,
    /// How the source's changes are found: required for `incremental` from an integration,
    /// refused for `full` and for the record store (whose changes are found by update time).
    #[oai(nullable)]
    #[serde(default)]
    pub cursor: Option<CursorSpec>,
    /// Up to 200 field mappings: `source` names the source's field, `target` the target's.
    #[oai(nullable, validator(max_items = 200))]
    #[serde(default)]
    pub mappings: Option<Vec<FieldMapping>>,
    #[oai(nullable)]
    #[serde(default)]
    pub unmapped: Option<Unmapped>,
    /// Bidirectional syncs only (default `source_wins`).
    #[oai(nullable)]
    #[serde(default)]
    pub conflict_strategy: Option<ConflictStrategy>,
    #[oai(nullable)]
    #[serde(default)]
    pub delete_policy: Option<DeletePolicy>,
    /// Rows per batch (each batch is one read and one commit with its checkpoint), default 500.
    #[oai(nullable)]
    #[serde(default)]
    pub batch_size: Option<Int<1, 10_000>>,
    /// More failed records than this fail the run (default 100); fewer make it `partial`.
    #[oai(nullable)]
    #[serde(default)]
    pub error_threshold: Option<Int<0, 1_000_000>>,
    /// Deletes by absence (full and `hash` runs) of more than this share of the records, and
    /// more than 10 of them, are applied only by a run started with `confirm_deletes`
    /// (default 50; 100 turns the guard off).
    #[oai(nullable)]
    #[serde(default)]
    pub max_delete_percent: Option<Int<1, 100>>,
    /// Runs on its own on these slots (besides manual runs); none by default.
    #[oai(nullable)]
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
    /// Default true; a disabled configuration runs only when asked.
    #[oai(nullable)]
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A change to a configuration: the fields given replace the stored ones (source, target,
/// entity, direction and mode are fixed: create another configuration to change them).
#[derive(Clone, Debug, Default, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct SyncSpecChange {
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Text<1, 200>>,
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorSpec>,
    #[oai(nullable, validator(max_items = 200))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mappings: Option<Vec<FieldMapping>>,
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmapped: Option<Unmapped>,
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict_strategy: Option<ConflictStrategy>,
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_policy: Option<DeletePolicy>,
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<Int<1, 10_000>>,
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_threshold: Option<Int<0, 1_000_000>>,
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_delete_percent: Option<Int<1, 100>>,
    /// A new schedule; `null` removes it.
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub schedule: MaybeUndefined<ScheduleSpec>,
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl SyncSpec {
    pub fn direction(&self) -> Direction {
        self.direction.unwrap_or(Direction::Inbound)
    }

    pub fn batch_size(&self) -> i64 {
        self.batch_size.map_or(500, |b| b.get())
    }

    pub fn error_threshold(&self) -> i64 {
        self.error_threshold.map_or(100, |t| t.get())
    }

    pub fn max_delete_percent(&self) -> i64 {
        self.max_delete_percent.map_or(50, |p| p.get())
    }

    pub fn delete_policy(&self) -> DeletePolicy {
        self.delete_policy.unwrap_or(DeletePolicy::Soft)
    }

    pub fn conflict_strategy(&self) -> ConflictStrategy {
        self.conflict_strategy
            .unwrap_or(ConflictStrategy::SourceWins)
    }

    pub fn mappings(&self) -> &[FieldMapping] {
        self.mappings.as_deref().unwrap_or_default()
    }

    /// The source's cursor strategy (`None`: every row is read).
    pub fn strategy(&self) -> Option<CursorStrategy> {
        self.cursor.as_ref().map(|c| c.strategy)
    }

    /// The source's change column, if its cursor has one.
    pub fn cursor_column(&self) -> Option<&str> {
        self.cursor.as_ref().and_then(cursor_column)
    }

    /// Whether the cursor column holds times (lag and lookback apply) rather than ids.
    pub fn cursor_is_time(&self) -> bool {
        self.strategy() == Some(CursorStrategy::Timestamp)
    }

    /// Whether runs read `which` side whole from the beginning (`full` syncs, and `hash`
    /// cursors), and so find deletes there by absence. The record store's changes are read by
    /// update time in incremental syncs.
    pub fn reads_all(&self, which: Which) -> bool {
        self.mode == SyncMode::Full
            || which
                .cursor(self)
                .is_some_and(|c| c.strategy == CursorStrategy::Hash)
    }

    pub fn lag_seconds(&self) -> i64 {
        self.cursor.as_ref().map_or(30, lag_seconds)
    }

    pub fn lookback_seconds(&self) -> i64 {
        self.cursor.as_ref().map_or(300, lookback_seconds)
    }

    /// The source's key columns under the names the mappings give them (the key as the
    /// target sees it).
    pub fn mapped_source_key(&self) -> Vec<String> {
        self.source
            .key()
            .iter()
            .map(|k| {
                self.mappings()
                    .iter()
                    .find(|m| m.source.as_str() == k.as_str())
                    .map_or(k.to_string(), |m| m.target.to_string())
            })
            .collect()
    }

    /// Whether runs compare and write both ways through sync links (outbound and
    /// bidirectional) rather than upsert into the store (inbound).
    pub fn exchanges(&self) -> bool {
        self.direction() != Direction::Inbound
    }
}

/// A cursor's change column (`change_tracking` and `hash` have none).
pub fn cursor_column(c: &CursorSpec) -> Option<&str> {
    match c.strategy {
        CursorStrategy::ChangeTracking | CursorStrategy::Hash => None,
        _ => c.column.as_ref().map(|c| c.as_str()),
    }
}

pub fn lag_seconds(c: &CursorSpec) -> i64 {
    c.lag_seconds.map_or(30, |l| l.get())
}

pub fn lookback_seconds(c: &CursorSpec) -> i64 {
    c.lookback_seconds.map_or(300, |l| l.get())
}

/// Which side of a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Source,
    Target,
}

impl Which {
    pub fn other(self) -> Which {
        match self {
            Which::Source => Which::Target,
            Which::Target => Which::Source,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Which::Source => "source",
            Which::Target => "target",
        }
    }

    pub fn spec(self, spec: &SyncSpec) -> &SideSpec {
        match self {
            Which::Source => &spec.source,
            Which::Target => &spec.target,
        }
    }

    /// The side's cursor: the configuration's for the source, the target's own otherwise.
    pub fn cursor(self, spec: &SyncSpec) -> Option<&CursorSpec> {
        match self {
            Which::Source => spec.cursor.as_ref(),
            Which::Target => spec.target.cursor.as_ref(),
        }
    }
}
