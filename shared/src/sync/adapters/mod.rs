//! The adapters behind [`Adapter`](super::adapter::Adapter), one per kind of integration:
//! [`sql`] (`postgres`, `mysql`, over sqlx; writes in `sql_write.rs`) and [`http`] (REST and
//! OData APIs; paging in `http_pages.rs`) and [`mssql`] (SQL Server over tiberius; T-SQL in
//! [`tsql`], types in `mssql_types.rs`).

pub mod http;
mod http_pages;
pub mod mssql;
mod mssql_types;
pub mod sql;
mod sql_write;
pub mod tsql;

use super::adapter::{Adapter, SourceError};
use super::config::{CursorSpec, CursorStrategy, SideKind, SideSpec};
use crate::net::Egress;

/// What a column holds, by its type as the catalogs of Postgres, MySQL and SQL Server name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Integer,
    Number,
    Uuid,
    /// A date or a point in time.
    Time,
    Bool,
    Other,
}

pub fn kind_of(data_type: &str) -> ColumnKind {
    match data_type.to_ascii_lowercase().as_str() {
        "int2" | "int4" | "int8" | "smallint" | "integer" | "int" | "bigint" | "tinyint"
        | "mediumint" => ColumnKind::Integer,
        "numeric" | "decimal" | "float4" | "float8" | "real" | "double" | "float"
        | "double precision" | "money" | "smallmoney" => ColumnKind::Number,
        "uuid" | "uniqueidentifier" => ColumnKind::Uuid,
        "timestamp" | "timestamptz" | "date" | "datetime" | "datetime2" | "datetimeoffset"
        | "smalldatetime" => ColumnKind::Time,
        "bool" | "boolean" | "bit" => ColumnKind::Bool,
        _ => ColumnKind::Other,
    }
}

/// Whether `value` can be a value of a key column of `data_type`. A record key that cannot is
/// not looked up: it would fail the whole lookup (Postgres, SQL Server) or match another row
/// (MySQL compares `'abc'` equal to `0`); the record is then absent there, and writing it
/// fails alone, as a poison record.
pub fn key_fits(data_type: &str, value: &str) -> bool {
    let v = value.trim();
    match kind_of(data_type) {
        ColumnKind::Integer => v.parse::<i64>().is_ok(),
        ColumnKind::Number => v.parse::<f64>().is_ok(),
        ColumnKind::Uuid => uuid::Uuid::parse_str(v).is_ok(),
        ColumnKind::Time => super::values::instant(v).is_some(),
        ColumnKind::Bool => {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "true" | "false" | "t" | "f" | "1" | "0"
            )
        }
        ColumnKind::Other => !value.contains('\0'),
    }
}

/// A tombstone column with the SQL that sets it (a soft delete) and clears it (a write).
pub type Tombstone = (String, &'static str, &'static str);

/// The side's tombstone column, set and cleared by its type: a flag with the dialect's
/// `truth` literals, a number with `1`/`0`, a time with the database's `now` and null.
pub fn tombstone<'a>(
    info: &SideInfo,
    type_of: impl Fn(&str) -> Option<&'a str>,
    truth: (&'static str, &'static str),
    now: &'static str,
) -> Result<Option<Tombstone>, SourceError> {
    let Some(col) = info.tombstone.clone() else {
        return Ok(None);
    };
    let t = type_of(&col).ok_or_else(|| format!("the table has no usable column `{col}`"))?;
    let (set, clear) = match kind_of(t) {
        ColumnKind::Bool => truth,
        ColumnKind::Integer => ("1", "0"),
        ColumnKind::Time => (now, "NULL"),
        _ => {
            return Err(format!(
                "the tombstone column `{col}` is `{t}`: soft deletes write booleans, numbers or \
                 times"
            ));
        }
    };
    Ok(Some((col, set, clear)))
}

/// What an adapter needs to know of its side beyond the connection.
#[derive(Clone, Debug, Default)]
pub struct SideInfo {
    /// The key columns, in order.
    pub key: Vec<String>,
    /// The column whose value is a row's version (a `timestamp` or `rowversion` cursor's):
    /// conditional writes compare it.
    pub version: Option<String>,
    /// The column marking deleted rows.
    pub tombstone: Option<String>,
}

impl SideInfo {
    pub fn of(side: &SideSpec, cursor: Option<&CursorSpec>) -> SideInfo {
        let version = cursor
            .filter(|c| {
                matches!(
                    c.strategy,
                    CursorStrategy::Timestamp | CursorStrategy::Rowversion
                )
            })
            .and_then(|c| c.column.as_ref())
            .map(|c| c.to_string());
        SideInfo {
            key: side.key_names(),
            version,
            tombstone: side.tombstone.as_ref().map(|t| t.to_string()),
        }
    }
}

/// An integration as an adapter needs it.
pub struct Target<'a> {
    pub provider: &'a str,
    /// The connection URL (SQL) from the credentials.
    pub url: Option<&'a str>,
    /// HTTP integrations: where resources are, settings (`api_key_header`), credentials.
    pub base_url: Option<&'a str>,
    pub config: &'a serde_json::Value,
    pub credentials: &'a crate::integrations::vault::Opened,
}

/// Connects to `side` of integration `target`.
pub async fn connect(
    target: &Target<'_>,
    side: &SideSpec,
    info: SideInfo,
    egress: &Egress,
) -> Result<Box<dyn Adapter>, SourceError> {
    match SideKind::of(target.provider) {
        SideKind::Postgres | SideKind::MySql => {
            let url = target
                .url
                .ok_or("the integration has no `url` credential")?;
            let table = side.table.as_ref().ok_or("a SQL side needs a table")?;
            Ok(Box::new(
                sql::connect(target.provider, url, egress, table.as_str(), info).await?,
            ))
        }
        SideKind::MsSql => {
            let url = target
                .url
                .ok_or("the integration has no `url` credential")?;
            let table = side.table.as_ref().ok_or("a SQL side needs a table")?;
            Ok(Box::new(
                mssql::connect(url, egress, table.as_str(), info).await?,
            ))
        }
        SideKind::Http => Ok(Box::new(http::connect(target, side, info, egress)?)),
    }
}
