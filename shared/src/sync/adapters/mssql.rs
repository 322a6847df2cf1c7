//! The `mssql` adapter (SQL Server, Azure SQL) over tiberius, TLS through rustls. Statements
//! come from `tsql.rs` (keyset, `rowversion` below `MIN_ACTIVE_ROWVERSION()`, Change Tracking,
//! conditional writes with `OUTPUT`); values are converted by `mssql_types.rs`. Rows stream as
//! the server sends them. No SQL Server runs on our machines: the statements and conversions
//! are tested exactly, and live tests run where `MSSQL_TEST_URL` is set (tests/it/mssql.rs).

use futures::{StreamExt, TryStreamExt, future::BoxFuture, stream::BoxStream};
use serde_json::Value;
use tiberius::{ToSql, error::Error as TdsError};

use super::{
    SideInfo,
    mssql_types::{Param, to_json},
    tsql::{self, Columns, From, Watermark},
};
use crate::{
    integrations::sql::{MsSqlClient, SqlUrl},
    net::Egress,
    sync::{
        adapter::{
            Adapter, Described, Page, Position, Read, Row, SourceError, Write, WriteOp, Written,
            as_text, key_values,
        },
        config::CursorStrategy,
    },
};

/// Keys looked up per statement.
const FETCH_CHUNK: usize = 200;

pub struct MsSqlAdapter {
    client: MsSqlClient,
    /// `[schema].[table]`.
    table: String,
    described: Described,
    types: Vec<String>,
    info: SideInfo,
}

fn fail(e: TdsError) -> SourceError {
    match e {
        TdsError::Server(t) => format!("the server refused: {}", t.message()),
        other => other.to_string(),
    }
}

/// Connects (through the egress rules) and describes `table`.
pub async fn connect(
    url: &str,
    egress: &Egress,
    table: &str,
    info: SideInfo,
) -> Result<MsSqlAdapter, SourceError> {
    let url = SqlUrl::parse("mssql", url)?;
    let addr = url.vet(egress).await?;
    let mut client = url.mssql_connect(&addr).await?;
    let (schema, name) = match table.split_once('.') {
        Some((s, t)) => (Some(s.to_owned()), t.to_owned()),
        None => (None, table.to_owned()),
    };
    let rows = client
        .query(tsql::DESCRIBE, &[&schema, &name])
        .await
        .map_err(fail)?
        .into_first_result()
        .await
        .map_err(fail)?;
    let described: Vec<(String, String)> = rows
        .iter()
        .filter_map(|r| {
            let c: Option<&str> = r.get(0);
            let t: Option<&str> = r.get(1);
            Some((c?.to_owned(), t?.to_ascii_lowercase()))
        })
        .collect();
    if described.is_empty() {
        return Err(format!(
            "the table `{table}` does not exist (or is not visible)"
        ));
    }
    let (columns, types) = described.into_iter().unzip();
    Ok(MsSqlAdapter {
        client,
        table: tsql::table(schema.as_deref(), &name),
        described: Described {
            columns,
            schema_known: true,
        },
        types,
        info,
    })
}

/// A row from the server as JSON, by the declared column types.
fn row_json(row: &tiberius::Row, cols: &Columns) -> Row {
    row.cells()
        .map(|(c, data)| (c.name().to_owned(), to_json(data, cols.type_of(c.name()))))
        .collect()
}

impl MsSqlAdapter {
    fn cols(&self) -> Columns<'_> {
        Columns {
            names: &self.described.columns,
            types: &self.types,
        }
    }

    /// Runs `sql` with `params` and returns every row as JSON.
    async fn rows(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>, SourceError> {
        let refs: Vec<&dyn ToSql> = params.iter().map(Param::as_sql).collect();
        let found = self
            .client
            .query(sql, &refs)
            .await
            .map_err(fail)?
            .into_first_result()
            .await
            .map_err(fail)?;
        let cols = Columns {
            names: &self.described.columns,
            types: &self.types,
        };
        Ok(found.iter().map(|r| row_json(r, &cols)).collect())
    }

    /// The statement reading `page` and its parameters.
    fn read_sql(
        &self,
        page: &Page,
        limit: Option<i64>,
    ) -> Result<(String, Vec<Param>), SourceError> {
        let key: Vec<&str> = page.key.iter().map(String::as_str).collect();
        let text = |s: &str| Param::Text(s.to_owned());
        if page.strategy == Some(CursorStrategy::ChangeTracking) {
            let w = page
                .watermark
                .ok_or("a Change Tracking read needs its watermark")?;
            return match page.position {
                Position::Since { value: Some(v), .. } => Ok((
                    tsql::changes(&self.table, &self.cols(), &key, false, limit),
                    vec![text(v), text(w)],
                )),
                Position::After {
                    value: Some(v),
                    key: k,
                } => {
                    let from = v
                        .parse::<i64>()
                        .map_err(|_| "a bad Change Tracking checkpoint")?
                        - 1;
                    let mut p = vec![text(&from.to_string()), text(w), text(v)];
                    p.extend(k.iter().map(|k| text(k)));
                    Ok((
                        tsql::changes(&self.table, &self.cols(), &key, true, limit),
                        p,
                    ))
                }
                // The first run reads the whole table; the next ones its changes since then.
                _ => Ok((
                    tsql::keyset(
                        &self.table,
                        &self.cols(),
                        &key,
                        None,
                        true,
                        &From::Start,
                        false,
                        limit,
                    ),
                    vec![],
                )),
            };
        }
        let mut params = Vec::new();
        let mut order: Vec<&str> = page.cursor.into_iter().collect();
        order.extend(key.iter().copied());
        let from = match page.position {
            Position::Since {
                value: Some(v),
                minus_seconds,
            } if page.cursor.is_some() => {
                params.push(text(v));
                if *minus_seconds > 0 && page.cursor_is_time() {
                    params.push(Param::Int(*minus_seconds));
                }
                From::Since {
                    minus_seconds: if page.cursor_is_time() {
                        *minus_seconds
                    } else {
                        0
                    },
                }
            }
            Position::After { value, key: k } => {
                params.extend(value.iter().map(|v| text(v)));
                params.extend(k.iter().map(|v| text(v)));
                if params.len() != order.len() {
                    return Err("the checkpoint does not match the key columns".into());
                }
                From::After {
                    order: order.clone(),
                }
            }
            _ => From::Start,
        };
        let bounded = page.cursor.is_some() && page.watermark.is_some();
        if let (true, Some(w)) = (bounded, page.watermark) {
            params.push(text(w));
        }
        // Times and rowversions end strictly below their watermark; ids at it.
        let exclusive = page.strategy != Some(CursorStrategy::Id);
        Ok((
            tsql::keyset(
                &self.table,
                &self.cols(),
                &key,
                page.cursor,
                exclusive,
                &from,
                bounded,
                limit,
            ),
            params,
        ))
    }

    /// How the tombstone is set and cleared (never a `rowversion`, which the server keeps).
    fn tombstone(&self) -> Result<Option<super::Tombstone>, SourceError> {
        let cols = self.cols();
        let type_of = |c: &str| Some(cols.type_of(c)).filter(|t| !tsql::is_rowversion(t));
        super::tombstone(&self.info, type_of, ("1", "0"), "SYSDATETIME()")
    }

    async fn write_one(&mut self, w: &Write) -> Result<Written, SourceError> {
        let tomb = self.tombstone()?;
        let key: Vec<&str> = self.info.key.iter().map(String::as_str).collect();
        let version = self.info.version.clone();
        let cols = self.cols();
        let keys = || w.key.iter().map(|k| Param::Text(k.clone()));
        let expected = || Param::Text(w.expected.clone().unwrap_or_default());
        let (sql, params): (String, Vec<Param>) = match &w.op {
            WriteOp::Upsert(row) => {
                let fields: Vec<&str> = row.keys().map(String::as_str).collect();
                let clear: Vec<(&str, &str)> = tomb
                    .iter()
                    .filter(|(c, ..)| !row.contains_key(c))
                    .map(|(c, _, clear)| (c.as_str(), *clear))
                    .collect();
                let mut p: Vec<Param> = row.values().map(Param::of).collect();
                p.extend(keys());
                if w.exists {
                    let v = version.as_deref().filter(|_| w.expected.is_some());
                    if v.is_some() {
                        p.push(expected());
                    }
                    (
                        tsql::update(&self.table, &cols, &fields, &clear, &key, v),
                        p,
                    )
                } else {
                    (tsql::insert(&self.table, &cols, &fields, &key, &clear), p)
                }
            }
            WriteOp::SoftDelete => {
                let (c, set, _) = tomb
                    .as_ref()
                    .ok_or("soft deletes need the tombstone column")?;
                let v = version.as_deref().filter(|_| w.expected.is_some());
                let mut p: Vec<Param> = keys().collect();
                if v.is_some() {
                    p.push(expected());
                }
                (
                    tsql::update(&self.table, &cols, &[], &[(c, set)], &key, v),
                    p,
                )
            }
            WriteOp::Delete => {
                let v = version.as_deref().filter(|_| w.expected.is_some());
                let mut p: Vec<Param> = keys().collect();
                if v.is_some() {
                    p.push(expected());
                }
                (tsql::delete(&self.table, &cols, &key, v), p)
            }
        };
        let refs: Vec<&dyn ToSql> = params.iter().map(Param::as_sql).collect();
        let found = match self.client.query(sql, &refs).await {
            Ok(stream) => stream.into_first_result().await,
            Err(e) => Err(e),
        };
        let rows = match found {
            Ok(rows) => rows,
            Err(e) => return judge(e),
        };
        Ok(match rows.first() {
            Some(row) => Written::Done {
                row: (!matches!(w.op, WriteOp::Delete)).then(|| row_json(row, &self.cols())),
            },
            None => Written::Changed,
        })
    }
}

impl Adapter for MsSqlAdapter {
    fn describe(&self) -> &Described {
        &self.described
    }

    fn watermark<'a>(
        &'a mut self,
        column: Option<&'a str>,
        strategy: CursorStrategy,
        lag_seconds: i64,
    ) -> BoxFuture<'a, Result<Option<String>, SourceError>> {
        Box::pin(async move {
            let (kind, params) = match strategy {
                CursorStrategy::Timestamp => (Watermark::Time, vec![Param::Int(lag_seconds)]),
                CursorStrategy::Id => (Watermark::Max, vec![]),
                CursorStrategy::Rowversion => (Watermark::Rowversion, vec![]),
                CursorStrategy::ChangeTracking => (Watermark::ChangeTracking, vec![]),
                CursorStrategy::Hash => return Ok(None),
            };
            let column = column.unwrap_or_default();
            let sql = tsql::watermark(kind, column, self.cols().type_of(column), &self.table);
            let refs: Vec<&dyn ToSql> = params.iter().map(Param::as_sql).collect();
            let row = self
                .client
                .query(sql, &refs)
                .await
                .map_err(fail)?
                .into_row()
                .await
                .map_err(fail)?;
            Ok(row.and_then(|r| r.get::<&str, _>(0).map(str::to_owned)))
        })
    }

    fn count<'a>(&'a mut self, page: &'a Page<'a>) -> BoxFuture<'a, Result<i64, SourceError>> {
        Box::pin(async move {
            let (sql, params) = self.read_sql(page, None)?;
            let inner = sql
                .rsplit_once(" ORDER BY ")
                .map_or(sql.as_str(), |(s, _)| s);
            let counted = format!("SELECT CAST(COUNT(*) AS bigint) FROM ({inner}) AS q");
            let refs: Vec<&dyn ToSql> = params.iter().map(Param::as_sql).collect();
            let row = self
                .client
                .query(counted, &refs)
                .await
                .map_err(fail)?
                .into_row()
                .await
                .map_err(fail)?;
            Ok(row.and_then(|r| r.get::<i64, _>(0)).unwrap_or(0))
        })
    }

    fn stream<'a>(&'a mut self, page: &'a Page<'a>) -> BoxStream<'a, Result<Read, SourceError>> {
        let (sql, params) = match self.read_sql(page, None) {
            Ok(s) => s,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        let change_tracking = page.strategy == Some(CursorStrategy::ChangeTracking);
        let names = self.described.columns.clone();
        let types = self.types.clone();
        let key = self.info.key.clone();
        let table = self.table.clone();
        let client = &mut self.client;
        futures::stream::once(async move {
            if let (true, Position::Since { value: Some(v), .. }) = (change_tracking, page.position)
            {
                // History older than the table's retention is gone: the cursor must be in it.
                let row = client
                    .query(tsql::CT_MIN_VALID, &[&table])
                    .await
                    .map_err(fail)?
                    .into_row()
                    .await
                    .map_err(fail)?;
                let min: Option<i64> = row
                    .and_then(|r| r.get::<&str, _>(0).map(str::to_owned))
                    .and_then(|m| m.parse().ok());
                if min.is_none_or(|m| v.parse::<i64>().is_ok_and(|v| v < m)) {
                    return Err(format!(
                        "Change Tracking no longer has the changes after version {v} (or is not \
                         enabled on the table): a full run must read it again"
                    ));
                }
            }
            let refs: Vec<&dyn ToSql> = params.iter().map(Param::as_sql).collect();
            let rows = client.query(sql, &refs).await.map_err(fail)?;
            Ok(rows.into_row_stream().map_err(fail))
        })
        .try_flatten()
        .map(move |r| {
            r.map(|row| {
                let cols = Columns {
                    names: &names,
                    types: &types,
                };
                let json = row_json(&row, &cols);
                if change_tracking && json.contains_key("__ct_version") {
                    change(&key, json)
                } else {
                    Read::row(json)
                }
            })
        })
        .boxed()
    }

    fn read<'a>(&'a mut self, page: &'a Page<'a>) -> BoxFuture<'a, Result<Vec<Row>, SourceError>> {
        Box::pin(async move {
            let (sql, params) = self.read_sql(page, page.limit)?;
            let mut rows = self.rows(&sql, &params).await?;
            for r in &mut rows {
                r.remove("__ct_version");
                r.remove("__ct_operation");
            }
            Ok(rows)
        })
    }

    fn fetch<'a>(
        &'a mut self,
        keys: &'a [Vec<String>],
    ) -> BoxFuture<'a, Result<Vec<Row>, SourceError>> {
        Box::pin(async move {
            let key: Vec<String> = self.info.key.clone();
            let fits = |k: &&Vec<String>| {
                key.iter()
                    .zip(k.iter())
                    .all(|(c, v)| super::key_fits(self.cols().type_of(c), v))
            };
            let keys: Vec<Vec<String>> = keys.iter().filter(fits).cloned().collect();
            let key: Vec<&str> = key.iter().map(String::as_str).collect();
            let mut out = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(FETCH_CHUNK) {
                let sql = tsql::fetch(&self.table, &self.cols(), &key, chunk.len());
                let params: Vec<Param> = chunk
                    .iter()
                    .flatten()
                    .map(|v| Param::Text(v.clone()))
                    .collect();
                out.extend(self.rows(&sql, &params).await?);
            }
            Ok(out)
        })
    }

    fn write<'a>(
        &'a mut self,
        writes: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Written>, SourceError>> {
        Box::pin(async move {
            self.client
                .simple_query("BEGIN TRANSACTION")
                .await
                .map_err(fail)?
                .into_results()
                .await
                .map_err(fail)?;
            let mut out = Vec::with_capacity(writes.len());
            for w in writes {
                match self.write_one(w).await {
                    Ok(done) => out.push(done),
                    Err(e) => {
                        let _ = self
                            .client
                            .simple_query("IF @@TRANCOUNT > 0 ROLLBACK")
                            .await;
                        return Err(e);
                    }
                }
            }
            self.client
                .simple_query("COMMIT")
                .await
                .map_err(fail)?
                .into_results()
                .await
                .map_err(fail)?;
            Ok(out)
        })
    }

    fn version_of(&self, row: &Row) -> Option<String> {
        let c = self.info.version.as_deref()?;
        row.get(c).and_then(as_text)
    }

    fn check_writable<'a>(
        &'a mut self,
        fields: &'a [String],
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            if let Some(f) = fields.iter().find(|f| !self.described.columns.contains(f)) {
                return Err(format!("the table has no column `{f}`"));
            }
            self.tombstone()?;
            let mut key = self.info.key.clone();
            key.sort();
            let joined = key.join(",");
            let row = self
                .client
                .query(tsql::UNIQUE_KEY, &[&self.table.as_str(), &joined.as_str()])
                .await
                .map_err(fail)?
                .into_row()
                .await
                .map_err(fail)?;
            match row.and_then(|r| r.get::<i32, _>(0)) {
                Some(n) if n > 0 => Ok(()),
                _ => Err(format!(
                    "the table {} has no unique key on ({}): writes could not be keyed",
                    self.table,
                    self.info.key.join(", ")
                )),
            }
        })
    }
}

/// A Change Tracking row as a read: its operation (`D`: deleted, the row holds its key), and
/// where a read resumes after it.
fn change(key: &[String], mut row: Row) -> Read {
    let version = row.remove("__ct_version").as_ref().and_then(as_text);
    let op = row.remove("__ct_operation");
    let deleted = op.as_ref().and_then(Value::as_str) == Some("D");
    let key = key_values(&row, key).unwrap_or_default();
    Read {
        row,
        deleted,
        after: version.map(|v| Position::After {
            value: Some(v),
            key,
        }),
    }
}

/// What a server error means for one write: the key taken by another writer (`Changed`), the
/// record's values refused (a poison record), or a failure of the connection (`Err`).
fn judge(e: TdsError) -> Result<Written, SourceError> {
    match &e {
        TdsError::Server(t) => match t.code() {
            2627 | 2601 => Ok(Written::Changed),
            // NULL into NOT NULL, constraint, truncation, conversion and overflow errors.
            515 | 547 | 2628 | 8152 | 245 | 8114 | 241 | 242 | 8115 | 220 | 232 => Ok(
                Written::Refused(format!("the table refused it: {}", t.message())),
            ),
            _ => Err(fail(e)),
        },
        _ => Err(fail(e)),
    }
}
