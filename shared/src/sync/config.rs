//! Sync configurations: what partners send (typed: the schema is what the server accepts), the
//! checks no schema can state, and their storage. The whole configuration is kept as one JSON
//! `spec` with every default filled in, so what a run reads is what the API shows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use poem_openapi::types::MaybeUndefined;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use super::schedule::{self, ScheduleSpec};
use crate::{
    error::{Error, Result},
    input::{Int, Text, pattern_string},
    tenants::Scope,
};

pattern_string!(
    /// A column name as the source's catalog spells it.
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
    /// Which way rows flow. `inbound`: from the integration's table into the record store.
    Direction { Inbound }
);
text_enum!(
    /// `full` reads every row each run (and can find deletes by absence); `incremental` reads
    /// what changed since the last run, by `cursor`.
    SyncMode { Full, Incremental }
);
text_enum!(
    /// How changes are found: `timestamp` (a change-time column, read as a keyset on
    /// `(column, key)` below a watermark taken at the start of the run on the source's clock,
    /// minus a safety lag, re-reading a lookback window), or `id` (an ever-growing column of an
    /// append-only table).
    CursorStrategy { Timestamp, Id }
);
text_enum!(
    /// What a deleted source row does to its record: kept (`ignore`), marked deleted (`soft`,
    /// the default: `deleted_at` is set) or removed (`hard`).
    DeletePolicy { Ignore, Soft, Hard }
);
text_enum!(
    /// Source columns no mapping names: kept as they are (`pass`, the default) or dropped.
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
        /// Always `value`.
        Constant,
        /// `value` where the source is null.
        Default,
        /// `table[value]`; a value missing from the table fails the record.
        Lookup,
    }
);
text_enum!(
    /// A JSON type a value is cast to.
    CastType { String, Integer, Number, Boolean }
);

/// Where rows come from: a table of a `postgres` or `mysql` integration.
#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct SourceSpec {
    pub integration_id: Uuid,
    pub table: TableName,
    /// The columns that identify a row (1 to 4).
    #[oai(validator(min_items = 1, max_items = 4))]
    pub key: Vec<Identifier>,
    /// A column that marks deleted rows (non-null and not `false` = deleted).
    #[oai(nullable)]
    #[serde(default)]
    pub tombstone: Option<Identifier>,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct TargetSpec {
    pub store: StoreName,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CursorSpec {
    pub strategy: CursorStrategy,
    pub column: Identifier,
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
    pub source: SourceSpec,
    pub target: TargetSpec,
    /// Required for `incremental`, refused for `full`.
    #[oai(nullable)]
    #[serde(default)]
    pub cursor: Option<CursorSpec>,
    /// Up to 200 field mappings.
    #[oai(nullable, validator(max_items = 200))]
    #[serde(default)]
    pub mappings: Option<Vec<FieldMapping>>,
    #[oai(nullable)]
    #[serde(default)]
    pub unmapped: Option<Unmapped>,
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
/// entity and mode are fixed: create another configuration to change them).
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
    pub delete_policy: Option<DeletePolicy>,
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<Int<1, 10_000>>,
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_threshold: Option<Int<0, 1_000_000>>,
    /// A new schedule; `null` removes it.
    #[oai(nullable)]
    #[serde(default, skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub schedule: MaybeUndefined<ScheduleSpec>,
    #[oai(nullable)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl SyncSpec {
    pub fn batch_size(&self) -> i64 {
        self.batch_size.map_or(500, |b| b.get())
    }

    pub fn error_threshold(&self) -> i64 {
        self.error_threshold.map_or(100, |t| t.get())
    }

    pub fn delete_policy(&self) -> DeletePolicy {
        self.delete_policy.unwrap_or(DeletePolicy::Soft)
    }

    /// Whether the cursor column holds times (lag and lookback apply) rather than ids.
    pub fn cursor_is_time(&self) -> bool {
        self.cursor
            .as_ref()
            .is_some_and(|c| c.strategy == CursorStrategy::Timestamp)
    }

    pub fn lag_seconds(&self) -> i64 {
        self.cursor
            .as_ref()
            .and_then(|c| c.lag_seconds)
            .map_or(30, |l| l.get())
    }

    pub fn lookback_seconds(&self) -> i64 {
        self.cursor
            .as_ref()
            .and_then(|c| c.lookback_seconds)
            .map_or(300, |l| l.get())
    }

    /// The checks the types cannot make, then every default filled in.
    fn checked(mut self) -> Result<Self> {
        let invalid =
            |param: &str, detail: &str| Error::invalid("parameter_invalid", param, detail);
        match (self.mode, &self.cursor) {
            (SyncMode::Incremental, None) => {
                return Err(invalid("cursor", "An `incremental` sync needs `cursor`."));
            }
            (SyncMode::Full, Some(_)) => {
                return Err(invalid(
                    "cursor",
                    "A `full` sync reads every row: it takes no `cursor`.",
                ));
            }
            _ => {}
        }
        // The schema's item counts (the API parses with serde, which does not read them).
        if !(1..=4).contains(&self.source.key.len()) {
            return Err(invalid("source.key", "A key has 1 to 4 columns."));
        }
        if self.mappings.as_ref().is_some_and(|m| m.len() > 200) {
            return Err(invalid("mappings", "At most 200 mappings."));
        }
        let keys: BTreeSet<&str> = self.source.key.iter().map(|k| k.as_str()).collect();
        if keys.len() != self.source.key.len() {
            return Err(invalid("source.key", "A key column is named twice."));
        }
        let mut targets = BTreeSet::new();
        for (i, m) in self.mappings.iter().flatten().enumerate() {
            if !targets.insert(m.target.as_str()) {
                return Err(Error::invalid(
                    "parameter_invalid",
                    format!("mappings[{i}].target"),
                    format!("`{}` is the target of two mappings.", m.target.as_str()),
                ));
            }
            let Some(t) = &m.transform else { continue };
            if t.table.as_ref().is_some_and(|t| t.len() > 1000) {
                return Err(Error::invalid(
                    "parameter_invalid",
                    format!("mappings[{i}].transform"),
                    "A lookup table has at most 1000 entries.",
                ));
            }
            let missing = match t.kind {
                TransformType::Cast => t.to.is_none().then_some("`cast` needs `to`."),
                TransformType::Constant | TransformType::Default => {
                    t.value.is_none().then_some("This transform needs `value`.")
                }
                TransformType::Lookup => t.table.is_none().then_some("`lookup` needs `table`."),
                TransformType::Trim => None,
            };
            if let Some(detail) = missing {
                return Err(Error::invalid(
                    "parameter_invalid",
                    format!("mappings[{i}].transform"),
                    detail,
                ));
            }
        }
        self.direction.get_or_insert(Direction::Inbound);
        self.mappings.get_or_insert_with(Vec::new);
        self.unmapped.get_or_insert(Unmapped::Pass);
        self.delete_policy.get_or_insert(DeletePolicy::Soft);
        self.batch_size
            .get_or_insert(Int::new(500).expect("in range"));
        self.error_threshold
            .get_or_insert(Int::new(100).expect("in range"));
        self.enabled.get_or_insert(true);
        if let Some(s) = &self.schedule {
            s.every()?;
        }
        if let Some(c) = &mut self.cursor {
            if c.strategy == CursorStrategy::Timestamp {
                c.lag_seconds.get_or_insert(Int::new(30).expect("in range"));
                c.lookback_seconds
                    .get_or_insert(Int::new(300).expect("in range"));
            } else if c.lag_seconds.is_some() || c.lookback_seconds.is_some() {
                return Err(invalid(
                    "cursor",
                    "`lag_seconds` and `lookback_seconds` are for `timestamp` cursors.",
                ));
            }
        }
        Ok(self)
    }
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct SyncConfiguration {
    pub id: Uuid,
    #[oai(flatten)]
    #[serde(flatten)]
    pub spec: SyncSpec,
    /// The stream's committed position after the last finished run.
    #[oai(nullable)]
    pub state: Option<Value>,
    /// When the schedule next starts a run (null: no schedule, or disabled).
    #[oai(nullable)]
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

type Row = (
    Uuid,
    Json<SyncSpec>,
    Option<Value>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn view((id, spec, state, next_run_at, created_at, updated_at): Row) -> SyncConfiguration {
    SyncConfiguration {
        id,
        spec: spec.0,
        state,
        next_run_at,
        created_at,
        updated_at,
    }
}

const COLUMNS: &str = "id, spec, cursor, next_run_at, created_at, updated_at";

/// The source integration must be the tenant's, in this mode, and speak SQL.
async fn check_source(conn: &mut PgConnection, scope: Scope, spec: &SyncSpec) -> Result<()> {
    let provider: Option<String> = sqlx::query_scalar(
        "SELECT provider FROM integrations
          WHERE tenant_id = $1 AND mode = $2 AND id = $3 AND deleted_at IS NULL",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(spec.source.integration_id)
    .fetch_optional(conn)
    .await?;
    match provider.as_deref() {
        None => Err(Error::invalid(
            "parameter_invalid",
            "source.integration_id",
            "No such integration.",
        )),
        Some("postgres" | "mysql") => Ok(()),
        Some(other) => Err(Error::invalid(
            "parameter_invalid",
            "source.integration_id",
            format!(
                "Tables are read from `postgres` and `mysql` integrations; this one is `{other}`."
            ),
        )),
    }
}

pub async fn create(
    conn: &mut PgConnection,
    scope: Scope,
    spec: SyncSpec,
) -> Result<SyncConfiguration> {
    let spec = spec.checked()?;
    check_source(conn, scope, &spec).await?;
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO sync_configurations (id, tenant_id, mode, name, entity, integration_id, spec,
                                          enabled, next_run_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(spec.name.as_str())
    .bind(spec.entity.as_str())
    .bind(spec.source.integration_id)
    .bind(Json(&spec))
    .bind(spec.enabled.unwrap_or(true))
    .bind(schedule::next_run_at(&spec, Utc::now())?)
    .fetch_one(conn)
    .await?;
    Ok(view(row))
}

/// Whether the tenant has configuration `id` in this mode.
pub async fn exists<'e>(db: impl sqlx::PgExecutor<'e>, scope: Scope, id: Uuid) -> Result<bool> {
    let found: Option<bool> = sqlx::query_scalar(
        "SELECT true FROM sync_configurations WHERE tenant_id = $1 AND mode = $2 AND id = $3",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(found.is_some())
}

pub async fn get(pool: &PgPool, scope: Scope, id: Uuid) -> Result<SyncConfiguration> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sync_configurations WHERE tenant_id = $1 AND mode = $2 AND id = $3"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(view)
        .ok_or_else(|| Error::not_found("sync configuration"))
}

pub async fn list(
    pool: &PgPool,
    scope: Scope,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<SyncConfiguration>> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sync_configurations
          WHERE tenant_id = $1 AND mode = $2 AND ($3::uuid IS NULL OR id < $3)
          ORDER BY id DESC LIMIT $4"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(starting_after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(view).collect())
}

/// Applies `change` over the stored configuration and checks the result as a whole.
pub async fn update(
    conn: &mut PgConnection,
    scope: Scope,
    id: Uuid,
    change: SyncSpecChange,
) -> Result<SyncConfiguration> {
    let stored: Option<Json<Value>> = sqlx::query_scalar(
        "SELECT spec FROM sync_configurations
          WHERE tenant_id = $1 AND mode = $2 AND id = $3 FOR UPDATE",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(Json(mut spec)) = stored else {
        return Err(Error::not_found("sync configuration"));
    };
    let changes = serde_json::to_value(&change).map_err(|e| Error::Internal(e.into()))?;
    if let (Some(spec), Value::Object(changes)) = (spec.as_object_mut(), changes) {
        spec.extend(changes);
    }
    let spec: SyncSpec = serde_json::from_value(spec).map_err(|e| Error::Internal(e.into()))?;
    let spec = spec.checked()?;
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_configurations
            SET spec = $2, name = $3, enabled = $4, next_run_at = $5, updated_at = now()
          WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(Json(&spec))
    .bind(spec.name.as_str())
    .bind(spec.enabled.unwrap_or(true))
    .bind(schedule::next_run_at(&spec, Utc::now())?)
    .fetch_one(conn)
    .await?;
    Ok(view(row))
}

/// Deletes the configuration with its runs; its records stay (unowned) in the store.
pub async fn delete(conn: &mut PgConnection, scope: Scope, id: Uuid) -> Result<()> {
    let n = sqlx::query(
        "DELETE FROM sync_configurations WHERE tenant_id = $1 AND mode = $2 AND id = $3",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::not_found("sync configuration"));
    }
    Ok(())
}
