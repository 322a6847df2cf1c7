//! The rules of a sync configuration that no schema can state, each a `400` naming its
//! parameter, and the defaults filled in once they hold (what a run reads is what the API
//! shows).

use std::collections::BTreeSet;

use serde_json::Value;
use sqlx::PgConnection;

use super::spec::*;
use crate::{
    error::{Error, Result},
    input::Int,
    tenants::Scope,
};

fn invalid(param: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::invalid("parameter_invalid", param, detail)
}

impl SyncSpec {
    /// The checks the types cannot make, then every default filled in.
    pub(super) fn checked(mut self) -> Result<Self> {
        let direction = self.direction();
        check_side_shape(&self.source, "source")?;
        check_side_shape(&self.target, "target")?;
        match (direction, self.source.is_store(), self.target.is_store()) {
            (Direction::Inbound, false, true)
            | (Direction::Outbound, true, false)
            | (Direction::Bidirectional, false, _) => {}
            (Direction::Inbound, ..) => {
                return Err(invalid(
                    "direction",
                    "An `inbound` sync reads an integration (`source`) into the record store \
                     (`target: {\"store\": \"switchyard\"}`).",
                ));
            }
            (Direction::Outbound, ..) => {
                return Err(invalid(
                    "direction",
                    "An `outbound` sync reads the record store (`source: {\"store\": \
                     \"switchyard\"}`) into an integration (`target`).",
                ));
            }
            (Direction::Bidirectional, ..) => {
                return Err(invalid(
                    "direction",
                    "A `bidirectional` sync's `source` is an integration; its `target` the \
                     record store or another integration.",
                ));
            }
        }
        if self.target.cursor.is_some()
            && (direction != Direction::Bidirectional || self.target.is_store())
        {
            return Err(invalid(
                "target.cursor",
                "Only a bidirectional sync's target integration takes a cursor of its own.",
            ));
        }
        check_cursors(&self)?;
        check_mappings(&self)?;
        self.fill_key()?;
        check_exchange(&self)?;
        if let Some(s) = &self.schedule {
            s.every()?;
        }
        // Defaults.
        self.direction = Some(direction);
        self.mappings.get_or_insert_with(Vec::new);
        let unmapped = if self.exchanges() {
            Unmapped::Drop
        } else {
            Unmapped::Pass
        };
        self.unmapped.get_or_insert(unmapped);
        if direction == Direction::Bidirectional {
            self.conflict_strategy
                .get_or_insert(ConflictStrategy::SourceWins);
        }
        self.delete_policy.get_or_insert(DeletePolicy::Soft);
        self.batch_size
            .get_or_insert(Int::new(500).expect("in range"));
        self.error_threshold
            .get_or_insert(Int::new(100).expect("in range"));
        self.max_delete_percent
            .get_or_insert(Int::new(50).expect("in range"));
        self.enabled.get_or_insert(true);
        for c in [self.cursor.as_mut(), self.target.cursor.as_mut()]
            .into_iter()
            .flatten()
        {
            if c.strategy == CursorStrategy::Timestamp {
                c.lag_seconds.get_or_insert(Int::new(30).expect("in range"));
                c.lookback_seconds
                    .get_or_insert(Int::new(300).expect("in range"));
            }
        }
        Ok(self)
    }

    /// A target integration's key: the source key's names as the mappings write them.
    fn fill_key(&mut self) -> Result<()> {
        if self.target.is_store() {
            return Ok(());
        }
        let derived = (!self.source.is_store()).then(|| self.mapped_source_key());
        match (&self.target.key, derived) {
            (None, None) => Err(invalid(
                "target.key",
                "The target's key columns are needed: the record's key is written to them.",
            )),
            (None, Some(d)) => {
                let key = d
                    .iter()
                    .map(|k| Identifier::new(k.clone()))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| invalid("target.key", format!("The mapped key {e}.")))?;
                self.target.key = Some(key);
                Ok(())
            }
            (Some(given), Some(d)) if given.iter().map(|k| k.to_string()).ne(d.iter().cloned()) => {
                Err(invalid(
                    "target.key",
                    format!(
                        "The target's key is the source key as the mappings name it: [{}].",
                        d.join(", ")
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

fn check_side_shape(side: &SideSpec, name: &str) -> Result<()> {
    let p = |field: &str| format!("{name}.{field}");
    if side.is_store() {
        let extra = [
            (side.integration_id.is_some(), "integration_id"),
            (side.table.is_some(), "table"),
            (side.resource.is_some(), "resource"),
            (side.key.is_some(), "key"),
            (side.tombstone.is_some(), "tombstone"),
            (side.cursor.is_some(), "cursor"),
            (side.http.is_some(), "http"),
        ]
        .into_iter()
        .find(|(given, _)| *given);
        if let Some((_, field)) = extra {
            return Err(invalid(
                p(field),
                "The record store side takes only `store`.",
            ));
        }
        return Ok(());
    }
    if side.integration_id.is_none() {
        return Err(invalid(
            p("integration_id"),
            "A side is the record store (`store`) or an integration (`integration_id`).",
        ));
    }
    match (&side.table, &side.resource) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(invalid(
                p("table"),
                "An integration side has a `table` (SQL integrations) or a `resource` (HTTP \
                 ones).",
            ));
        }
        (Some(_), None) if side.http.is_some() => {
            return Err(invalid(p("http"), "`http` goes with a `resource`."));
        }
        _ => {}
    }
    // The schema's item counts (the API parses with serde, which does not read them).
    if let Some(key) = &side.key {
        if !(1..=4).contains(&key.len()) {
            return Err(invalid(p("key"), "A key has 1 to 4 columns."));
        }
        let unique: BTreeSet<&str> = key.iter().map(|k| k.as_str()).collect();
        if unique.len() != key.len() {
            return Err(invalid(p("key"), "A key column is named twice."));
        }
    } else if name == "source" {
        return Err(invalid(
            p("key"),
            "The columns that identify a row are needed.",
        ));
    }
    Ok(())
}

fn check_cursor(c: &CursorSpec, param: &str) -> Result<()> {
    let needs_column = matches!(
        c.strategy,
        CursorStrategy::Timestamp | CursorStrategy::Id | CursorStrategy::Rowversion
    );
    match (needs_column, &c.column) {
        (true, None) => return Err(invalid(param, "This cursor strategy needs `column`.")),
        (false, Some(_)) => {
            return Err(invalid(
                param,
                "`change_tracking` and `hash` cursors take no `column`.",
            ));
        }
        _ => {}
    }
    if c.strategy != CursorStrategy::Timestamp
        && (c.lag_seconds.is_some() || c.lookback_seconds.is_some())
    {
        return Err(invalid(
            param,
            "`lag_seconds` and `lookback_seconds` are for `timestamp` cursors.",
        ));
    }
    Ok(())
}

fn check_cursors(s: &SyncSpec) -> Result<()> {
    match (s.mode, &s.cursor, s.source.is_store()) {
        (_, Some(_), true) => {
            return Err(invalid(
                "cursor",
                "The record store's changes are found by their update time: it takes no \
                 `cursor`.",
            ));
        }
        (SyncMode::Incremental, None, false) => {
            return Err(invalid("cursor", "An `incremental` sync needs `cursor`."));
        }
        (SyncMode::Full, Some(_), _) => {
            return Err(invalid(
                "cursor",
                "A `full` sync reads every row: it takes no `cursor`.",
            ));
        }
        _ => {}
    }
    if let Some(c) = &s.cursor {
        check_cursor(c, "cursor")?;
    }
    let target_needs_cursor = s.direction() == Direction::Bidirectional
        && !s.target.is_store()
        && s.mode == SyncMode::Incremental;
    match (&s.target.cursor, target_needs_cursor) {
        (None, true) => Err(invalid(
            "target.cursor",
            "An incremental bidirectional sync finds the target integration's changes by its \
             own cursor.",
        )),
        (Some(_), false) if s.mode == SyncMode::Full => Err(invalid(
            "target.cursor",
            "A `full` sync reads every row: it takes no cursor.",
        )),
        (Some(c), _) => check_cursor(c, "target.cursor"),
        _ => Ok(()),
    }
}

fn check_mappings(s: &SyncSpec) -> Result<()> {
    if s.mappings.as_ref().is_some_and(|m| m.len() > 200) {
        return Err(invalid("mappings", "At most 200 mappings."));
    }
    let mut targets = BTreeSet::new();
    for (i, m) in s.mappings().iter().enumerate() {
        let param = format!("mappings[{i}]");
        if !targets.insert(m.target.as_str()) {
            return Err(invalid(
                format!("{param}.target"),
                format!("`{}` is the target of two mappings.", m.target.as_str()),
            ));
        }
        let Some(t) = &m.transform else { continue };
        let param = format!("{param}.transform");
        if t.table.as_ref().is_some_and(|t| t.len() > 1000) {
            return Err(invalid(param, "A lookup table has at most 1000 entries."));
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
            return Err(invalid(param, detail));
        }
        if s.direction() != Direction::Bidirectional {
            continue;
        }
        // Values travel back through the mapping's inverse.
        match t.kind {
            TransformType::Constant | TransformType::Default => {
                return Err(invalid(
                    param,
                    "`constant` and `default` work one way: a bidirectional sync cannot write \
                     them back.",
                ));
            }
            TransformType::Lookup => {
                let values: Vec<&Value> = t.table.iter().flat_map(|t| t.values()).collect();
                let unique: BTreeSet<String> = values.iter().map(|v| v.to_string()).collect();
                if unique.len() != values.len()
                    || values
                        .iter()
                        .any(|v| v.is_null() || v.is_object() || v.is_array())
                {
                    return Err(invalid(
                        param,
                        "A bidirectional lookup is read both ways: its values must be distinct \
                         texts, numbers or booleans.",
                    ));
                }
            }
            TransformType::Trim | TransformType::Cast => {}
        }
    }
    Ok(())
}

/// The rules of outbound and bidirectional syncs, which write only what the mappings list.
fn check_exchange(s: &SyncSpec) -> Result<()> {
    let direction = s.direction();
    if s.conflict_strategy.is_some() && direction != Direction::Bidirectional {
        return Err(invalid(
            "conflict_strategy",
            "Conflicts exist only in bidirectional syncs: in one-way syncs the source decides.",
        ));
    }
    if !s.exchanges() {
        return Ok(());
    }
    if s.unmapped == Some(Unmapped::Pass) {
        return Err(invalid(
            "unmapped",
            "Outbound and bidirectional syncs write only the fields `mappings` lists.",
        ));
    }
    if s.mappings().is_empty() {
        return Err(invalid(
            "mappings",
            "Outbound and bidirectional syncs write only the fields `mappings` lists: list them \
             (`{\"source\": \"name\", \"target\": \"name\"}` keeps a name).",
        ));
    }
    let side_columns = [
        ("source", s.cursor_column(), &s.source),
        (
            "target",
            s.target.cursor.as_ref().and_then(cursor_column),
            &s.target,
        ),
    ];
    for (i, m) in s.mappings().iter().enumerate() {
        for (side, cursor, spec) in &side_columns {
            let field = if *side == "source" {
                m.source.as_str()
            } else {
                m.target.as_str()
            };
            if Some(field) == *cursor || spec.tombstone.as_deref() == Some(field) {
                return Err(invalid(
                    format!("mappings[{i}].{side}"),
                    format!(
                        "`{field}` is the {side}'s change or tombstone column, which the side \
                         keeps itself: it cannot be written."
                    ),
                ));
            }
        }
    }
    if s.delete_policy() == DeletePolicy::Soft {
        let needs = |spec: &SideSpec| !spec.is_store() && spec.tombstone.is_none();
        let side = if needs(&s.target) {
            Some("target")
        } else if direction == Direction::Bidirectional && needs(&s.source) {
            Some("source")
        } else {
            None
        };
        if let Some(side) = side {
            return Err(invalid(
                "delete_policy",
                format!(
                    "A soft delete written to the {side} integration sets its `tombstone` column: \
                     name it (`{side}.tombstone`), or choose `hard` or `ignore`."
                ),
            ));
        }
    }
    if s.conflict_strategy() == ConflictStrategy::NewestWins {
        let timed = |c: Option<&CursorSpec>, store: bool| {
            store || c.is_some_and(|c| c.strategy == CursorStrategy::Timestamp)
        };
        if !timed(s.cursor.as_ref(), false) || !timed(s.target.cursor.as_ref(), s.target.is_store())
        {
            return Err(invalid(
                "conflict_strategy",
                "`newest_wins` compares the change times each side wrote: both sides need a \
                 `timestamp` cursor (the record store has its own).",
            ));
        }
    }
    Ok(())
}

/// What kind of integration a side is, by its provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideKind {
    Postgres,
    MySql,
    MsSql,
    Http,
}

impl SideKind {
    pub fn of(provider: &str) -> SideKind {
        match provider {
            "postgres" => SideKind::Postgres,
            "mysql" => SideKind::MySql,
            "mssql" => SideKind::MsSql,
            _ => SideKind::Http,
        }
    }

    pub fn is_sql(self) -> bool {
        self != SideKind::Http
    }
}

/// Each integration side must be the tenant's, in this mode, and fit its provider: a `table`
/// of a SQL integration or a `resource` of an HTTP one (with a `base_url`), read by a cursor
/// its provider has.
pub(super) async fn check_integrations(
    conn: &mut PgConnection,
    scope: Scope,
    spec: &SyncSpec,
) -> Result<()> {
    for (name, side, cursor) in [
        ("source", &spec.source, spec.cursor.as_ref()),
        ("target", &spec.target, spec.target.cursor.as_ref()),
    ] {
        let Some(id) = side.integration_id else {
            continue;
        };
        let found: Option<(String, bool)> = sqlx::query_as(
            "SELECT provider, base_url IS NOT NULL FROM integrations
              WHERE tenant_id = $1 AND mode = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(scope.tenant_id)
        .bind(scope.mode.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        let param = format!("{name}.integration_id");
        let Some((provider, has_base_url)) = found else {
            return Err(invalid(param, "No such integration."));
        };
        let kind = SideKind::of(&provider);
        if kind.is_sql() && side.table.is_none() {
            return Err(invalid(
                format!("{name}.table"),
                format!("A `{provider}` integration is read by `table`."),
            ));
        }
        if !kind.is_sql() && side.resource.is_none() {
            return Err(invalid(
                format!("{name}.resource"),
                format!(
                    "A `{provider}` integration is an HTTP API: name the `resource` to read \
                     (tables are read from `postgres`, `mysql` and `mssql` integrations)."
                ),
            ));
        }
        if !kind.is_sql() && !has_base_url {
            return Err(invalid(
                param,
                "The HTTP integration has no `base_url` to read resources from.",
            ));
        }
        let strategy = cursor.map(|c| c.strategy);
        let mssql_only = matches!(
            strategy,
            Some(CursorStrategy::Rowversion | CursorStrategy::ChangeTracking)
        );
        if mssql_only && kind != SideKind::MsSql {
            let p = if name == "source" {
                "cursor".to_owned()
            } else {
                "target.cursor".to_owned()
            };
            return Err(invalid(
                p,
                format!(
                    "`rowversion` and `change_tracking` are SQL Server's: this integration is \
                     `{provider}`."
                ),
            ));
        }
    }
    Ok(())
}
