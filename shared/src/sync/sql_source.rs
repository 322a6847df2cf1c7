//! The `postgres` and `mysql` (MySQL, MariaDB) source adapters over sqlx. Table and column
//! names are checked against the live catalog before any query names them, and quoted; every
//! value is a bind parameter. Each page is one query whose rows the database itself turns into
//! JSON objects (`row_to_json`, `JSON_OBJECT`), `LIMIT`ed to the batch: memory is bounded by
//! the batch size, not the table.

use futures::{StreamExt, future::BoxFuture, stream::BoxStream};
use serde_json::{Map, Value};
use sqlx::{Connection, MySqlConnection, PgConnection};

use super::source::{Page, Position, Source, SourceError};
use crate::{
    integrations::sql::{Provider, SqlUrl},
    net::Egress,
};

enum Conn {
    Pg(PgConnection),
    My(MySqlConnection),
}

pub struct SqlSource {
    conn: Conn,
    /// The quoted table name.
    table: String,
    columns: Vec<String>,
    /// Per column: the type to cast bound text to (Postgres), or none (not usable as a key or
    /// cursor).
    casts: Vec<Option<&'static str>>,
}

/// Connects to the integration's database (`credentials.url`, through the egress rules) and
/// describes `table`.
pub async fn connect(
    provider: &str,
    url: &str,
    egress: &Egress,
    table: &str,
) -> Result<SqlSource, SourceError> {
    let url = SqlUrl::parse(provider, url)?;
    let host = url.vet(egress).await?;
    let (schema, name) = match table.split_once('.') {
        Some((s, t)) => (Some(s.to_owned()), t.to_owned()),
        None => (None, table.to_owned()),
    };
    let fail = |e: sqlx::Error| crate::integrations::connection::error_chain(&e);
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
        Provider::MsSql => return Err("the mssql adapter does not read tables yet".into()),
    };
    if described.is_empty() {
        return Err(format!(
            "the table `{table}` does not exist (or is not visible)"
        ));
    }
    let quote = |s: &str| match conn {
        Conn::Pg(_) => format!("\"{s}\""),
        Conn::My(_) => format!("`{s}`"),
    };
    let table = match &schema {
        Some(s) => format!("{}.{}", quote(s), quote(&name)),
        None => quote(&name),
    };
    let casts = described
        .iter()
        .map(|(_, t)| match conn {
            Conn::Pg(_) => pg_cast(t),
            // MySQL compares bound text with any column type itself.
            Conn::My(_) => Some(""),
        })
        .collect();
    Ok(SqlSource {
        conn,
        table,
        columns: described.into_iter().map(|(c, _)| c).collect(),
        casts,
    })
}

/// The Postgres types a key or cursor column may have, by `udt_name`.
fn pg_cast(udt: &str) -> Option<&'static str> {
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

impl SqlSource {
    fn quote(&self, s: &str) -> String {
        match self.conn {
            Conn::Pg(_) => format!("\"{s}\""),
            Conn::My(_) => format!("`{s}`"),
        }
    }

    /// A bound parameter cast to `column`'s type.
    fn param(&self, n: usize, column: &str) -> Result<String, SourceError> {
        let i = self.columns.iter().position(|c| c == column);
        let cast = i.and_then(|i| self.casts[i]).ok_or_else(|| {
            format!("the column `{column}` has a type that cannot be a key or cursor")
        })?;
        Ok(match self.conn {
            Conn::Pg(_) => format!("CAST(${n} AS {cast})"),
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
                let lower = match (&self.conn, page.cursor_is_time && *minus_seconds > 0) {
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
        }
        if let (Some(c), Some(w)) = (page.cursor, page.watermark) {
            params.push(w.to_owned());
            let p = self.param(params.len(), c)?;
            let op = if page.cursor_is_time { "<" } else { "<=" };
            conds.push(format!("{} {op} {p}", self.quote(c)));
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        Ok((filter, params, order))
    }

    /// The statement counting the rows every page from `page` on would read.
    fn count_sql(&self, page: &Page) -> Result<(String, Vec<String>), SourceError> {
        let (filter, params, _) = self.filter_sql(page)?;
        let sql = format!("SELECT count(*) FROM {}{filter}", self.table);
        Ok((sql, params))
    }

    /// The page's statement and its parameters, in order.
    fn page_sql(&self, page: &Page) -> Result<(String, Vec<String>), SourceError> {
        let (filter, params, order) = self.filter_sql(page)?;
        let cols: Vec<String> = self.columns.iter().map(|c| self.quote(c)).collect();
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
        let sql = match self.conn {
            Conn::Pg(_) => format!("SELECT row_to_json(t)::text FROM ({inner}) t"),
            Conn::My(_) => {
                let pairs: Vec<String> = self
                    .columns
                    .iter()
                    .map(|c| format!("'{c}', t.{}", self.quote(c)))
                    .collect();
                format!(
                    "SELECT CAST(JSON_OBJECT({}) AS CHAR) FROM ({inner}) t",
                    pairs.join(", ")
                )
            }
        };
        Ok((sql, params))
    }
}

/// A row as the source's JSON function wrote it.
fn parse_row(text: &str) -> Result<Map<String, Value>, SourceError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err("the source returned a row that is not a JSON object".to_owned()),
    }
}

impl Source for SqlSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn watermark<'a>(
        &'a mut self,
        column: &'a str,
        is_time: bool,
        lag_seconds: i64,
    ) -> BoxFuture<'a, Result<Option<String>, SourceError>> {
        Box::pin(async move {
            let i = self.columns.iter().position(|c| c == column);
            let cast = i.and_then(|i| self.casts[i]).ok_or_else(|| {
                format!("the column `{column}` has a type that cannot be a cursor")
            })?;
            let col = self.quote(column);
            let fail = |e: sqlx::Error| crate::integrations::connection::error_chain(&e);
            let table = self.table.clone();
            match &mut self.conn {
                Conn::Pg(c) => {
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
            let (sql, params) = self.count_sql(page)?;
            let fail = |e: sqlx::Error| crate::integrations::connection::error_chain(&e);
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

    fn stream<'a>(
        &'a mut self,
        page: &'a Page<'a>,
    ) -> BoxStream<'a, Result<Map<String, Value>, SourceError>> {
        let (sql, params) = match self.page_sql(page) {
            Ok(statement) => statement,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        let fail = |e: sqlx::Error| crate::integrations::connection::error_chain(&e);
        // One statement, read as it arrives: the source sorts once, and memory holds what the
        // socket buffers (the engine takes a batch at a time).
        let rows: BoxStream<'a, Result<String, SourceError>> = match &mut self.conn {
            Conn::Pg(c) => {
                let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
                for p in params {
                    q = q.bind(p);
                }
                q.fetch(c).map(move |r| r.map_err(fail)).boxed()
            }
            Conn::My(c) => {
                let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
                for p in params {
                    q = q.bind(p);
                }
                q.fetch(c).map(move |r| r.map_err(fail)).boxed()
            }
        };
        rows.map(|r| r.and_then(|text| parse_row(&text))).boxed()
    }

    fn read<'a>(
        &'a mut self,
        page: &'a Page<'a>,
    ) -> BoxFuture<'a, Result<Vec<Map<String, Value>>, SourceError>> {
        Box::pin(async move {
            let (sql, params) = self.page_sql(page)?;
            let fail = |e: sqlx::Error| crate::integrations::connection::error_chain(&e);
            let rows: Vec<String> = match &mut self.conn {
                Conn::Pg(c) => {
                    let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
                    for p in &params {
                        q = q.bind(p);
                    }
                    q.fetch_all(c).await.map_err(fail)?
                }
                Conn::My(c) => {
                    let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
                    for p in &params {
                        q = q.bind(p);
                    }
                    q.fetch_all(c).await.map_err(fail)?
                }
            };
            rows.iter().map(|r| parse_row(r)).collect()
        })
    }
}
