//! The T-SQL the `mssql` adapter sends, as pure functions of names and positions (so every
//! statement is tested to the character here; no SQL Server runs on our machines). Names are
//! `[bracket]`-quoted (`]` doubled) after the catalog check; every value is a parameter
//! (`@P1`, `@P2`, …). SQL Server has no row-value comparison, so keyset positions are written
//! out (`a > @P1 OR (a = @P1 AND b > @P2)`).
//!
//! - keyset reads on `(cursor, key)` below a watermark (`SYSDATETIME()` less the lag for
//!   times, the column's maximum for ids);
//! - `rowversion` reads between the cursor and `MIN_ACTIVE_ROWVERSION()` (no row of a
//!   transaction still open is skipped), versions carried as `bigint`;
//! - Change Tracking reads (`CHANGETABLE(CHANGES …)`) up to `CHANGE_TRACKING_CURRENT_VERSION()`,
//!   deletes included, after checking `CHANGE_TRACKING_MIN_VALID_VERSION`;
//! - conditional writes: `UPDATE … WHERE key AND version = @P`, inserts guarded by
//!   `NOT EXISTS … WITH (UPDLOCK, HOLDLOCK)`, each with `OUTPUT` of the row written.

/// A name in brackets.
pub fn quote(name: &str) -> String {
    format!("[{}]", name.replace(']', "]]"))
}

/// `[schema].[table]`, or `[table]`.
pub fn table(schema: Option<&str>, name: &str) -> String {
    match schema {
        Some(s) => format!("{}.{}", quote(s), quote(name)),
        None => quote(name),
    }
}

/// The catalog query describing a table: `(column, data type)` in column order.
pub const DESCRIBE: &str = "SELECT COLUMN_NAME, DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS \
     WHERE TABLE_SCHEMA = COALESCE(@P1, SCHEMA_NAME()) AND TABLE_NAME = @P2 \
     ORDER BY ORDINAL_POSITION";

/// Whether `(schema.)table` has a unique index on exactly the key columns (`@P1` the table,
/// `@P2` the sorted key columns joined by `,`).
pub const UNIQUE_KEY: &str = "SELECT COUNT(*) FROM sys.indexes i \
     WHERE i.object_id = OBJECT_ID(@P1) AND i.is_unique = 1 AND i.has_filter = 0 \
     AND (SELECT STRING_AGG(c.name, ',') WITHIN GROUP (ORDER BY c.name) \
            FROM sys.index_columns ic \
            JOIN sys.columns c ON c.object_id = ic.object_id AND c.column_id = ic.column_id \
           WHERE ic.object_id = i.object_id AND ic.index_id = i.index_id \
             AND ic.is_included_column = 0) = @P2";

/// The smallest version Change Tracking still has for the table (`@P1`, `[schema].[table]`).
pub const CT_MIN_VALID: &str =
    "SELECT CONVERT(varchar(20), CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1)))";

/// Whether a column's type is a `rowversion` (`timestamp` is its old name).
pub fn is_rowversion(data_type: &str) -> bool {
    matches!(data_type, "timestamp" | "rowversion")
}

fn is_temporal(data_type: &str) -> bool {
    matches!(
        data_type,
        "datetime2" | "datetime" | "smalldatetime" | "datetimeoffset" | "date"
    )
}

/// A parameter compared with (or assigned to) a column of `data_type`: rowversions from their
/// `bigint` text, times converted from ISO 8601 (style 127 takes a `Z`), others converted by
/// the server.
pub fn param_for(n: usize, data_type: &str) -> String {
    if is_rowversion(data_type) {
        format!("CONVERT(binary(8), CAST(@P{n} AS bigint))")
    } else if matches!(data_type, "datetime" | "smalldatetime") {
        // Through `datetime2`: a watermark has seven decimals, which these types refuse
        // (Msg 241); the conversion rounds to the type's nearest tick, and as no value of the
        // column lies between a time and its nearest tick, no row is skipped.
        format!("CONVERT({data_type}, CONVERT(datetime2, @P{n}, 127))")
    } else if is_temporal(data_type) {
        format!("CONVERT({data_type}, @P{n}, 127)")
    } else {
        format!("@P{n}")
    }
}

/// A column in a select list: rowversions as `bigint` (comparable, and JSON numbers).
pub fn select_column(name: &str, data_type: &str, alias: &str) -> String {
    if is_rowversion(data_type) {
        format!("CAST({alias}{} AS bigint) AS {}", quote(name), quote(name))
    } else {
        format!("{alias}{}", quote(name))
    }
}

/// A table's columns: names and data types, in order.
pub struct Columns<'a> {
    pub names: &'a [String],
    pub types: &'a [String],
}

impl Columns<'_> {
    pub fn type_of(&self, name: &str) -> &str {
        self.names
            .iter()
            .position(|n| n == name)
            .map_or("nvarchar", |i| self.types[i].as_str())
    }

    fn select(&self, alias: &str) -> String {
        self.names
            .iter()
            .zip(self.types)
            .map(|(n, t)| select_column(n, t, alias))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `(c1, c2, …) > (@Pn, @Pn+1, …)`, written out.
pub fn tuple_after(cols: &Columns, order: &[&str], first: usize, prefix: &str) -> String {
    let (head, rest) = order.split_first().expect("an order has columns");
    let p = param_for(first, cols.type_of(head));
    let c = format!("{prefix}{}", quote(head));
    if rest.is_empty() {
        format!("{c} > {p}")
    } else {
        format!(
            "({c} > {p} OR ({c} = {p} AND {}))",
            tuple_after(cols, rest, first + 1, prefix)
        )
    }
}

/// The watermark query of a cursor: `@P1` is the lag in seconds for times.
pub fn watermark(strategy: Watermark, column: &str, data_type: &str, table: &str) -> String {
    match strategy {
        Watermark::Time if data_type == "datetimeoffset" => {
            "SELECT CONVERT(varchar(40), DATEADD(second, -@P1, SYSDATETIMEOFFSET()), 127)".into()
        }
        Watermark::Time => {
            "SELECT CONVERT(varchar(40), DATEADD(second, -@P1, SYSDATETIME()), 126)".into()
        }
        Watermark::Max => format!(
            "SELECT CONVERT(varchar(40), MAX({})) FROM {table}",
            quote(column)
        ),
        Watermark::Rowversion => {
            "SELECT CONVERT(varchar(20), CAST(MIN_ACTIVE_ROWVERSION() AS bigint))".into()
        }
        Watermark::ChangeTracking => {
            "SELECT CONVERT(varchar(20), CHANGE_TRACKING_CURRENT_VERSION())".into()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watermark {
    /// The server's clock less the lag.
    Time,
    /// The column's current maximum.
    Max,
    /// `MIN_ACTIVE_ROWVERSION()`: below it, every version is committed.
    Rowversion,
    /// `CHANGE_TRACKING_CURRENT_VERSION()`.
    ChangeTracking,
}

/// Where a keyset read starts.
pub enum From<'a> {
    Start,
    /// At the cursor's value (inclusive), less `minus_seconds` for times.
    Since {
        minus_seconds: i64,
    },
    /// After `(cursor, key…)`.
    After {
        order: Vec<&'a str>,
    },
}

/// A keyset read of `table` in `(cursor, key)` order. Parameters in order: the start (value,
/// then the lookback seconds; or the position's values), then the watermark.
#[allow(clippy::too_many_arguments)]
pub fn keyset(
    table: &str,
    cols: &Columns,
    key: &[&str],
    cursor: Option<&str>,
    exclusive_watermark: bool,
    from: &From,
    watermark: bool,
    limit: Option<i64>,
) -> String {
    let mut conds = Vec::new();
    let mut n = 1;
    match (from, cursor) {
        (From::Since { minus_seconds }, Some(c)) => {
            let t = cols.type_of(c);
            let value = param_for(n, t);
            n += 1;
            let lower = if *minus_seconds > 0 && is_temporal(t) {
                let l = format!("DATEADD(second, -@P{n}, {value})");
                n += 1;
                l
            } else {
                value
            };
            // Inclusive for every kind: times and ids re-read the cursor's value (ties); a
            // rowversion cursor is the last run's `MIN_ACTIVE_ROWVERSION()`, read below it
            // exclusively, so a row holding exactly that version is read from it now (it is
            // the next version the database gives, or one not yet committed then).
            conds.push(format!("{} >= {lower}", quote(c)));
        }
        (From::After { order }, _) => {
            conds.push(tuple_after(cols, order, n, ""));
            n += order.len();
        }
        _ => {}
    }
    if let (Some(c), true) = (cursor, watermark) {
        let op = if exclusive_watermark { "<" } else { "<=" };
        conds.push(format!(
            "{} {op} {}",
            quote(c),
            param_for(n, cols.type_of(c))
        ));
    }
    let top = limit.map(|l| format!("TOP ({l}) ")).unwrap_or_default();
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    let order: Vec<String> = cursor
        .into_iter()
        .chain(key.iter().copied())
        .map(quote)
        .collect();
    format!(
        "SELECT {top}{} FROM {table}{filter} ORDER BY {}",
        cols.select(""),
        order.join(", ")
    )
}

/// A Change Tracking read: net changes after version `@P1`, up to `@P2` (the run's
/// watermark), in `(version, key)` order; with `after`, strictly after `(@P3, key @P4…)`.
/// Each row carries `__ct_version` and `__ct_operation` (`I`, `U`, `D`), and for deletes only
/// its key.
pub fn changes(
    table: &str,
    cols: &Columns,
    key: &[&str],
    after: bool,
    limit: Option<i64>,
) -> String {
    let top = limit.map(|l| format!("TOP ({l}) ")).unwrap_or_default();
    let others: Vec<String> = cols
        .names
        .iter()
        .zip(cols.types)
        .filter(|(n, _)| !key.contains(&n.as_str()))
        .map(|(n, t)| select_column(n, t, "t."))
        .collect();
    let keys: Vec<String> = key.iter().map(|k| format!("ct.{}", quote(k))).collect();
    let join: Vec<String> = key
        .iter()
        .map(|k| format!("t.{0} = ct.{0}", quote(k)))
        .collect();
    let mut filter = "ct.SYS_CHANGE_VERSION <= CAST(@P2 AS bigint)".to_owned();
    if after {
        filter.push_str(&format!(" AND {}", changes_after(cols, key, 3)));
    }
    let mut select = vec![
        "ct.SYS_CHANGE_VERSION AS [__ct_version]".to_owned(),
        "ct.SYS_CHANGE_OPERATION AS [__ct_operation]".to_owned(),
    ];
    select.extend(keys.iter().cloned());
    select.extend(others);
    format!(
        "SELECT {top}{} FROM CHANGETABLE(CHANGES {table}, CAST(@P1 AS bigint)) AS ct \
         LEFT JOIN {table} AS t ON {} WHERE {filter} ORDER BY ct.SYS_CHANGE_VERSION, {}",
        select.join(", "),
        join.join(" AND "),
        keys.join(", ")
    )
}

/// `(ct.SYS_CHANGE_VERSION, ct.key…) > (@Pn, @Pn+1, …)`, written out.
fn changes_after(cols: &Columns, key: &[&str], first: usize) -> String {
    let v = format!("CAST(@P{first} AS bigint)");
    format!(
        "(ct.SYS_CHANGE_VERSION > {v} OR (ct.SYS_CHANGE_VERSION = {v} AND {}))",
        tuple_after(cols, key, first + 1, "ct.")
    )
}

/// The rows with `n` keys (`@P1…`, key columns in order per row).
pub fn fetch(table: &str, cols: &Columns, key: &[&str], n: usize) -> String {
    let mut p = 0;
    let rows: Vec<String> = (0..n)
        .map(|_| {
            let conds: Vec<String> = key
                .iter()
                .map(|k| {
                    p += 1;
                    format!("{} = {}", quote(k), param_for(p, cols.type_of(k)))
                })
                .collect();
            format!("({})", conds.join(" AND "))
        })
        .collect();
    format!(
        "SELECT {} FROM {table} WHERE {}",
        cols.select(""),
        rows.join(" OR ")
    )
}

/// `key = @Pn AND …` from parameter `first` on, and the version check after them.
fn where_key(cols: &Columns, key: &[&str], first: usize, version: Option<&str>) -> String {
    let mut conds: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{} = {}", quote(k), param_for(first + i, cols.type_of(k))))
        .collect();
    if let Some(v) = version {
        let p = param_for(first + key.len(), cols.type_of(v));
        conds.push(format!("{} = {p}", quote(v)));
    }
    conds.join(" AND ")
}

/// Inserts `fields` (`@P1…`) unless a row has the key (`@Pn…` after them), returning the row.
pub fn insert(
    table: &str,
    cols: &Columns,
    fields: &[&str],
    key: &[&str],
    extra: &[(&str, &str)],
) -> String {
    let mut names: Vec<String> = fields.iter().map(|f| quote(f)).collect();
    let mut values: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| param_for(i + 1, cols.type_of(f)))
        .collect();
    for (c, v) in extra {
        names.push(quote(c));
        values.push((*v).to_owned());
    }
    format!(
        "INSERT INTO {table} ({}) OUTPUT {} SELECT {} WHERE NOT EXISTS \
         (SELECT 1 FROM {table} WITH (UPDLOCK, HOLDLOCK) WHERE {})",
        names.join(", "),
        cols.select("INSERTED."),
        values.join(", "),
        where_key(cols, key, fields.len() + 1, None)
    )
}

/// Updates `fields` (`@P1…`, then `extra` assignments) where the key (`@Pn…`) and, given, the
/// version (the last parameter) still match, returning the row.
pub fn update(
    table: &str,
    cols: &Columns,
    fields: &[&str],
    extra: &[(&str, &str)],
    key: &[&str],
    version: Option<&str>,
) -> String {
    let mut sets: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| format!("{} = {}", quote(f), param_for(i + 1, cols.type_of(f))))
        .collect();
    sets.extend(extra.iter().map(|(c, v)| format!("{} = {v}", quote(c))));
    format!(
        "UPDATE {table} SET {} OUTPUT {} WHERE {}",
        sets.join(", "),
        cols.select("INSERTED."),
        where_key(cols, key, fields.len() + 1, version)
    )
}

/// Deletes the row with the key (`@P1…`) and, given, the version.
pub fn delete(table: &str, cols: &Columns, key: &[&str], version: Option<&str>) -> String {
    let out: Vec<String> = key
        .iter()
        .map(|k| format!("DELETED.{}", quote(k)))
        .collect();
    format!(
        "DELETE FROM {table} OUTPUT {} WHERE {}",
        out.join(", "),
        where_key(cols, key, 1, version)
    )
}

#[cfg(test)]
#[path = "tsql_tests.rs"]
mod tests;
