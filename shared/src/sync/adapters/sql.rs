//! The `postgres` and `mysql` (MySQL, MariaDB) adapters over sqlx. Table and column names are
//! checked against the live catalog before any statement names them, and quoted; every value
//! is a bind parameter. The database itself turns rows into JSON (`row_to_json`,
//! `JSON_OBJECT`). A run reads one statement as it arrives, so memory is bounded by the batch,
//! not the table. Writes are in `sql_write.rs`.

use futures::{StreamExt, future::BoxFuture, stream::BoxStream};
use sqlx::{Connection, Executor, MySqlConnection, PgConnection};

use super::{SideInfo, sql_write};
use crate::{
    integrations::{
        connection::error_chain,
        sql::{Provider, SqlUrl},
    },
    net::Egress,
    sync::{
        adapter::{Adapter, Described, Page, Position, Read, Row, SourceError, Write, Written},
        config::CursorStrategy,
    },
};

pub(super) enum Conn {
    Pg(PgConnection),
    My(MySqlConnection),
}

pub struct SqlAdapter {
    pub(super) conn: Conn,
    /// The quoted table name.
    pub(super) table: String,
    /// `(schema, name)` as given, for catalog queries.
    pub(super) schema: Option<String>,
    pub(super) name: String,
    pub(super) described: Described,
    /// Per column: its type as the catalog names it (`udt_name`, `data_type`).
    pub(super) types: Vec<String>,
    pub(super) info: SideInfo,
}

pub(super) fn fail(e: sqlx::Error) -> SourceError {
    error_chain(&e)
}

/// Connects to the integration's database (`credentials.url`, through the egress rules) and
/// describes `table`.
pub async fn connect(
    provider: &str,
    url: &str,
    egress: &Egress,
    table: &str,
    info: SideInfo,
) -> Result<SqlAdapter, SourceError> {
    let url = SqlUrl::parse(provider, url)?;
    let host = url.vet(egress).await?;
    let (schema, name) = match table.split_once('.') {
        Some((s, t)) => (Some(s.to_owned()), t.to_owned()),
        None => (None, table.to_owned()),
    };
    let (conn, described) = match url.provider {
        Provider::Postgres => {
            let mut c = PgConnection::connect_with(&url.postgres_options(&host))
                .await
                .map_err(fail)?;
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT column_name::text, udt_name::text FROM information_schema.columns
                  WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2
                  ORDER BY ordinal_position",
            )
            .bind(&schema)
            .bind(&name)
            .fetch_all(&mut c)
            .await
            .map_err(fail)?;
            (Conn::Pg(c), rows)
        }
        Provider::MySql => {
            let mut c = MySqlConnection::connect_with(&url.mysql_options(&host))
                .await
                .map_err(fail)?;
            // Times are read and written in UTC, whatever the server's zone.
            c.execute("SET time_zone = '+00:00'").await.map_err(fail)?;
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR)
                   FROM information_schema.columns
                  WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?
                  ORDER BY ordinal_position",
            )
            .bind(&schema)
            .bind(&name)
            .fetch_all(&mut c)
            .await
            .map_err(fail)?;
            (Conn::My(c), rows)
        }
        Provider::MsSql => return Err("mssql tables are read by the mssql adapter".into()),
    };
    if described.is_empty() {
        return Err(format!(
            "the table `{table}` does not exist (or is not visible)"
        ));
    }
    let quote = |s: &str| quote(&conn, s);
    let quoted = match &schema {
        Some(s) => format!("{}.{}", quote(s), quote(&name)),
        None => quote(&name),
    };
    let (columns, types) = described.into_iter().unzip();
    Ok(SqlAdapter {
        table: quoted,
        conn,
        schema,
        name,
        described: Described {
            columns,
            schema_known: true,
        },
        types,
        info,
    })
}

/// `s` as an identifier of the connection's dialect: quoted, its quote character doubled, so
/// a source's own names (a column `it's`, or one holding a quote) are names, never SQL.
pub(super) fn quote(conn: &Conn, s: &str) -> String {
    match conn {
        Conn::Pg(_) => format!("\"{}\"", s.replace('"', "\"\"")),
        Conn::My(_) => quote_my(s),
    }
}

/// `s` as a MySQL/MariaDB identifier (see [`quote`]).
pub(super) fn quote_my(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `s` as a MySQL/MariaDB string of any content, as a hex literal: no quote or backslash in it
/// can end it, whatever the server's `sql_mode`.
fn text_my(s: &str) -> String {
    let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
    format!("CONVERT(X'{hex}' USING utf8mb4)")
}

/// The Postgres types a key or cursor column may have, by `udt_name`.
pub(super) fn pg_cast(udt: &str) -> Option<&'static str> {
    Some(match udt {
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "numeric" => "numeric",
        "text" | "bpchar" => "text",
        "varchar" => "varchar",
        "uuid" => "uuid",
        "timestamp" => "timestamp",
        "timestamptz" => "timestamptz",
        "date" => "date",
        _ => return None,
    })
}

impl SqlAdapter {
    pub(super) fn quote(&self, s: &str) -> String {
        quote(&self.conn, s)
    }

    pub(super) fn type_of(&self, column: &str) -> Option<&str> {
        let i = self.described.columns.iter().position(|c| c == column)?;
        Some(self.types[i].as_str())
    }

    /// A bound parameter (the `n`th) cast to `column`'s type.
    pub(super) fn param(&self, n: usize, column: &str) -> Result<String, SourceError> {
        let t = self
            .type_of(column)
            .ok_or_else(|| format!("the table has no column `{column}`"))?;
        Ok(match self.conn {
            Conn::Pg(_) => {
                let cast = pg_cast(t).ok_or_else(|| {
                    format!("the column `{column}` has a type that cannot be a key or cursor")
                })?;
                format!("CAST(${n} AS {cast})")
            }
            // MySQL compares bound text with any column type itself.
            Conn::My(_) => "?".to_owned(),
        })
    }

    /// The page's `WHERE` clause (empty for none), its parameters in order, and the order
    /// columns.
    fn filter_sql<'p>(
        &self,
        page: &'p Page,
    ) -> Result<(String, Vec<String>, Vec<&'p str>), SourceError> {
        let mut params: Vec<String> = Vec::new();
        let mut conds: Vec<String> = Vec::new();
        let mut order: Vec<&str> = page.cursor.into_iter().collect();
        order.extend(page.key.iter().map(String::as_str));
        match page.position {
            Position::Since {
                value: Some(v),
                minus_seconds,
            } => {
                let c = page.cursor.ok_or("a start value needs a cursor column")?;
                params.push(v.clone());
                let p = self.param(params.len(), c)?;
                let lower = match (&self.conn, page.cursor_is_time() && *minus_seconds > 0) {
                    (_, false) => p,
                    (Conn::Pg(_), true) => {
                        params.push(minus_seconds.to_string());
                        format!(
                            "{p} - make_interval(secs => CAST(${} AS float8))",
                            params.len()
                        )
                    }
                    (Conn::My(_), true) => {
                        params.push(minus_seconds.to_string());
                        "? - INTERVAL ? SECOND".to_owned()
                    }
                };
                // Inclusive: rows sharing the cursor's value are read again (and count as
                // unchanged), never skipped.
                conds.push(format!("{} >= {lower}", self.quote(c)));
            }
            Position::Since { value: None, .. } => {}
            Position::After { value, key } => {
                let mut values: Vec<&String> = value.iter().collect();
                values.extend(key.iter());
                if values.len() != order.len() {
                    return Err("the checkpoint does not match the key columns".into());
                }
                let mut placeholders = Vec::new();
                for (col, v) in order.iter().zip(values) {
                    params.push(v.clone());
                    placeholders.push(self.param(params.len(), col)?);
                }
                let cols: Vec<String> = order.iter().map(|c| self.quote(c)).collect();
                conds.push(format!(
                    "({}) > ({})",
                    cols.join(", "),
                    placeholders.join(", ")
                ));
            }
            Position::Page { .. } => return Err("a table is not read by pages".into()),
        }
        if let (Some(c), Some(w)) = (page.cursor, page.watermark) {
            params.push(w.to_owned());
            let p = self.param(params.len(), c)?;
            let op = if page.cursor_is_time() { "<" } else { "<=" };
            conds.push(format!("{} {op} {p}", self.quote(c)));
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        Ok((filter, params, order))
    }

    /// `SELECT <row as JSON text> FROM (<inner>) t`.
    pub(super) fn as_json(&self, inner: &str) -> String {
        match self.conn {
            Conn::Pg(_) => format!("SELECT row_to_json(t)::text FROM ({inner}) t"),
            Conn::My(_) => {
                let pairs: Vec<String> = self
                    .described
                    .columns
                    .iter()
                    .map(|c| format!("{}, t.{}", text_my(c), self.quote(c)))
                    .collect();
                format!(
                    "SELECT CAST(JSON_OBJECT({}) AS CHAR) FROM ({inner}) t",
                    pairs.join(", ")
                )
            }
        }
    }

    /// The page's statement and its parameters, in order.
    fn page_sql(&self, page: &Page) -> Result<(String, Vec<String>), SourceError> {
        let (filter, params, order) = self.filter_sql(page)?;
        let cols: Vec<String> = self
            .described
            .columns
            .iter()
            .map(|c| self.quote(c))
            .collect();
        let order: Vec<String> = order.iter().map(|c| self.quote(c)).collect();
        let limit = page
            .limit
            .map(|n| format!(" LIMIT {n}"))
            .unwrap_or_default();
        let inner = format!(
            "SELECT {} FROM {}{filter} ORDER BY {}{limit}",
            cols.join(", "),
            self.table,
            order.join(", "),
        );
        Ok((self.as_json(&inner), params))
    }

    /// Runs `sql` with text `params`, each row one JSON text.
    pub(super) async fn json_rows(
        &mut self,
        sql: String,
        params: &[String],
    ) -> Result<Vec<Row>, SourceError> {
        let rows: Vec<String> = match &mut self.conn {
            Conn::Pg(c) => {
                let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
                for p in params {
                    q = q.bind(p);
                }
                q.fetch_all(c).await.map_err(fail)?
            }
            Conn::My(c) => {
                let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
                for p in params {
                    q = q.bind(p);
                }
                q.fetch_all(c).await.map_err(fail)?
            }
        };
        rows.iter().map(|r| parse_row(r)).collect()
    }
}

/// A row as the database's JSON function wrote it.
pub(super) fn parse_row(text: &str) -> Result<Row, SourceError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err("the database returned a row that is not a JSON object".to_owned()),
    }
}

impl Adapter for SqlAdapter {
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
            let Some(column) = column else {
                return Ok(None);
            };
            let is_time = strategy == CursorStrategy::Timestamp;
            let t = self
                .type_of(column)
                .ok_or_else(|| format!("the table has no column `{column}`"))?
                .to_owned();
            let col = self.quote(column);
            let table = self.table.clone();
            match &mut self.conn {
                Conn::Pg(c) => {
                    let cast = pg_cast(&t).ok_or_else(|| {
                        format!("the column `{column}` has a type that cannot be a cursor")
                    })?;
                    let sql = if is_time {
                        format!("SELECT CAST(now() - make_interval(secs => $1) AS {cast})::text")
                    } else {
                        format!("SELECT max({col})::text FROM {table} WHERE $1::float8 IS NOT NULL")
                    };
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(lag_seconds as f64)
                        .fetch_one(c)
                        .await
                        .map_err(fail)
                }
                Conn::My(c) => {
                    let sql = if is_time {
                        "SELECT CAST(NOW(6) - INTERVAL ? SECOND AS CHAR)".to_owned()
                    } else {
                        format!("SELECT CAST(max({col}) AS CHAR) FROM {table} WHERE ? IS NOT NULL")
                    };
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(lag_seconds)
                        .fetch_one(c)
                        .await
                        .map_err(fail)
                }
            }
        })
    }

    fn count<'a>(&'a mut self, page: &'a Page<'a>) -> BoxFuture<'a, Result<i64, SourceError>> {
        Box::pin(async move {
            let (filter, params, _) = self.filter_sql(page)?;
            let sql = format!("SELECT count(*) FROM {}{filter}", self.table);
            match &mut self.conn {
                Conn::Pg(c) => {
                    let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
                    for p in &params {
                        q = q.bind(p);
                    }
                    q.fetch_one(c).await.map_err(fail)
                }
                Conn::My(c) => {
                    let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
                    for p in &params {
                        q = q.bind(p);
                    }
                    q.fetch_one(c).await.map_err(fail)
                }
            }
        })
    }

    fn stream<'a>(&'a mut self, page: &'a Page<'a>) -> BoxStream<'a, Result<Read, SourceError>> {
        let (sql, params) = match self.page_sql(page) {
            Ok(statement) => statement,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        // One statement, read as it arrives: the database sorts once, and memory holds what
        // the socket buffers (the engine takes a batch at a time).
        let rows: BoxStream<'a, Result<String, SourceError>> = match &mut self.conn {
            Conn::Pg(c) => {
                let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
                for p in params {
                    q = q.bind(p);
                }
                q.fetch(c).map(|r| r.map_err(fail)).boxed()
            }
            Conn::My(c) => {
                let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
                for p in params {
                    q = q.bind(p);
                }
                q.fetch(c).map(|r| r.map_err(fail)).boxed()
            }
        };
        rows.map(|r| r.and_then(|text| parse_row(&text)).map(Read::row))
            .boxed()
    }

    fn read<'a>(&'a mut self, page: &'a Page<'a>) -> BoxFuture<'a, Result<Vec<Row>, SourceError>> {
        Box::pin(async move {
            let (sql, params) = self.page_sql(page)?;
            self.json_rows(sql, &params).await
        })
    }

    fn fetch<'a>(
        &'a mut self,
        keys: &'a [Vec<String>],
    ) -> BoxFuture<'a, Result<Vec<Row>, SourceError>> {
        Box::pin(sql_write::fetch(self, keys))
    }

    fn write<'a>(
        &'a mut self,
        writes: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Written>, SourceError>> {
        Box::pin(sql_write::write(self, writes))
    }

    fn version_of(&self, row: &Row) -> Option<String> {
        let c = self.info.version.as_deref()?;
        row.get(c).and_then(crate::sync::adapter::as_text)
    }

    fn check_writable<'a>(
        &'a mut self,
        fields: &'a [String],
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(sql_write::check_writable(self, fields))
    }
}
