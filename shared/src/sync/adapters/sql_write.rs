//! Writes and key lookups of the `postgres` and `mysql` adapters. A batch of writes is one
//! transaction on the integration's database; each write is keyed (a retried batch writes the
//! same rows again, never new ones) and conditional: an update or delete applies only while
//! the row's change column still holds the value read (`expected`), an insert only while no
//! row has the key. A write that finds the row changed is reported `Changed` and left for the
//! next read of the side's changes; a value the table refuses is `Refused` (a poison record)
//! and the rest of the batch goes on.
//!
//! Postgres: one statement per kind of write over `json_populate_recordset`, so the database
//! converts each JSON value to its column's type; rows refused fall back to one statement per
//! row under savepoints. MySQL: one statement per row in one transaction.

use serde_json::Value;
use sqlx::{Connection, MySqlConnection, PgConnection, mysql::MySqlArguments, query::Query};

use super::{
    Tombstone,
    sql::{Conn, SqlAdapter, fail, parse_row},
};
use crate::sync::adapter::{Row, SourceError, Write, WriteOp, Written, key_values};

/// Keys looked up per statement.
const FETCH_CHUNK: usize = 500;

/// The rows with these keys as they are now.
pub(super) async fn fetch(
    a: &mut SqlAdapter,
    keys: &[Vec<String>],
) -> Result<Vec<Row>, SourceError> {
    let key = a.info.key.clone();
    let keys: Vec<Vec<String>> = keys
        .iter()
        .filter(|k| {
            key.iter()
                .zip(k.iter())
                .all(|(c, v)| a.type_of(c).is_some_and(|t| super::key_fits(t, v)))
        })
        .cloned()
        .collect();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(FETCH_CHUNK) {
        let (sql, params) = fetch_sql(a, chunk)?;
        out.extend(a.json_rows(sql, &params).await?);
    }
    Ok(out)
}

fn fetch_sql(a: &SqlAdapter, keys: &[Vec<String>]) -> Result<(String, Vec<String>), SourceError> {
    let key = &a.info.key;
    let mut params = Vec::with_capacity(keys.len() * key.len());
    let mut tuples = Vec::with_capacity(keys.len());
    for k in keys {
        let mut ps = Vec::with_capacity(key.len());
        for (col, v) in key.iter().zip(k) {
            params.push(v.clone());
            ps.push(a.param(params.len(), col)?);
        }
        tuples.push(format!("({})", ps.join(", ")));
    }
    let cols: Vec<String> = key.iter().map(|c| a.quote(c)).collect();
    let inner = format!(
        "SELECT * FROM {} WHERE ({}) IN ({})",
        a.table,
        cols.join(", "),
        if tuples.is_empty() {
            "(NULL)".to_owned()
        } else {
            tuples.join(", ")
        }
    );
    Ok((a.as_json(&inner), params))
}

/// How the tombstone column is set and cleared.
fn tombstone_values(a: &SqlAdapter) -> Result<Option<Tombstone>, SourceError> {
    super::tombstone(
        &a.info,
        |c| a.type_of(c),
        ("TRUE", "FALSE"),
        "CURRENT_TIMESTAMP",
    )
}

/// Checks that writes can be keyed: the table has a unique key on exactly the key columns, and
/// every field the sync writes is a column.
pub async fn check_writable(a: &mut SqlAdapter, fields: &[String]) -> Result<(), SourceError> {
    if let Some(f) = fields.iter().find(|f| !a.described.columns.contains(f)) {
        return Err(format!("the table `{}` has no column `{f}`", a.name));
    }
    tombstone_values(a)?;
    let mut key = a.info.key.clone();
    key.sort();
    let unique: bool = match &mut a.conn {
        Conn::Pg(c) => sqlx::query_scalar(
            "SELECT EXISTS (
               SELECT 1 FROM pg_index i
                WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL
                  AND (SELECT array_agg(att.attname::text ORDER BY att.attname::text)
                         FROM pg_attribute att
                        WHERE att.attrelid = i.indrelid AND att.attnum = ANY(i.indkey)) = $2)",
        )
        .bind(&a.table)
        .bind(&key)
        .fetch_one(c)
        .await
        .map_err(fail)?,
        Conn::My(c) => {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (
                   SELECT index_name FROM information_schema.statistics
                    WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?
                      AND non_unique = 0
                    GROUP BY index_name
                   HAVING GROUP_CONCAT(column_name ORDER BY column_name SEPARATOR ',') = ?) u",
            )
            .bind(&a.schema)
            .bind(&a.name)
            .bind(key.join(","))
            .fetch_one(c)
            .await
            .map_err(fail)?;
            n > 0
        }
    };
    if unique {
        Ok(())
    } else {
        Err(format!(
            "the table `{}` has no unique key on ({}): writes could not be keyed",
            a.name,
            a.info.key.join(", ")
        ))
    }
}

pub(super) async fn write(
    a: &mut SqlAdapter,
    writes: &[Write],
) -> Result<Vec<Written>, SourceError> {
    let tomb = tombstone_values(a)?;
    let mut out = vec![Written::Changed; writes.len()];
    match &mut a.conn {
        Conn::Pg(_) => pg::write(a, writes, tomb.as_ref(), &mut out).await?,
        Conn::My(_) => {
            my_write(a, writes, tomb.as_ref(), &mut out).await?;
            // MySQL returns no rows from writes: read the written ones back.
            let done: Vec<Vec<String>> = writes
                .iter()
                .zip(&out)
                .filter(|(w, o)| {
                    matches!(o, Written::Done { .. }) && matches!(w.op, WriteOp::Upsert(_))
                })
                .map(|(w, _)| w.key.clone())
                .collect();
            let rows = fetch(a, &done).await?;
            attach(a, writes, &mut out, rows);
        }
    }
    Ok(out)
}

/// Puts each row read back on the write with its key.
fn attach(a: &SqlAdapter, writes: &[Write], out: &mut [Written], rows: Vec<Row>) {
    for row in rows {
        let Some(k) = key_values(&row, &a.info.key) else {
            continue;
        };
        if let Some(i) = writes.iter().position(|w| w.key == k)
            && let Written::Done { row: slot } = &mut out[i]
        {
            *slot = Some(row);
        }
    }
}

/// A MySQL statement's outcome: refused values are the record's fault, anything else the
/// connection's.
enum MyOutcome {
    Rows(u64),
    Duplicate,
    Refused(String),
}

async fn my_exec(
    c: &mut MySqlConnection,
    q: Query<'_, sqlx::MySql, MySqlArguments>,
) -> Result<MyOutcome, SourceError> {
    match q.execute(c).await {
        Ok(r) => Ok(MyOutcome::Rows(r.rows_affected())),
        Err(sqlx::Error::Database(d)) => {
            let code = d.code().unwrap_or_default().to_string();
            let number = d
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number());
            // 1062: a row with the key appeared; SQLSTATE 22 (data) and 23 (integrity): the
            // values are refused.
            if number == Some(1062) {
                Ok(MyOutcome::Duplicate)
            } else if code.starts_with("22") || code.starts_with("23") {
                Ok(MyOutcome::Refused(format!(
                    "the table refused it: {}",
                    d.message()
                )))
            } else {
                Err(format!("the database failed: {}", d.message()))
            }
        }
        Err(e) => Err(fail(e)),
    }
}

/// A JSON value bound as MySQL takes it; times in the ISO form are given MySQL's.
fn my_bind<'q>(
    q: Query<'q, sqlx::MySql, MySqlArguments>,
    v: &Value,
    temporal: bool,
) -> Query<'q, sqlx::MySql, MySqlArguments> {
    match v {
        Value::Null => q.bind(None::<String>),
        Value::Bool(b) => q.bind(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => q.bind(i),
            (None, Some(u)) => q.bind(u),
            _ => q.bind(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) if temporal => q.bind(crate::sync::values::mysql_time(s)),
        Value::String(s) => q.bind(s.clone()),
        other => q.bind(other.to_string()),
    }
}

fn is_temporal(t: Option<&str>) -> bool {
    t.is_some_and(|t| super::kind_of(t) == super::ColumnKind::Time)
}

async fn my_write(
    a: &mut SqlAdapter,
    writes: &[Write],
    tomb: Option<&Tombstone>,
    out: &mut [Written],
) -> Result<(), SourceError> {
    let key_cond: Vec<String> = a
        .info
        .key
        .iter()
        .map(|k| format!("{} = ?", a.quote(k)))
        .collect();
    let key_cond = key_cond.join(" AND ");
    let version = a.info.version.clone();
    let ver_cond = version
        .as_ref()
        .map(|v| format!(" AND {} <=> ?", a.quote(v)))
        .unwrap_or_default();
    let types: Vec<(String, Option<String>)> = a
        .described
        .columns
        .iter()
        .map(|c| (c.clone(), a.type_of(c).map(str::to_owned)))
        .collect();
    let type_of = |c: &str| {
        types
            .iter()
            .find(|(n, _)| n == c)
            .and_then(|(_, t)| t.as_deref())
    };
    let quoted: Vec<(String, String)> =
        types.iter().map(|(c, _)| (c.clone(), a.quote(c))).collect();
    let q = |c: &str| {
        quoted
            .iter()
            .find(|(n, _)| n == c)
            .map_or_else(|| super::sql::quote_my(c), |(_, q)| q.clone())
    };
    let table = a.table.clone();
    let key_cols = a.info.key.clone();
    let Conn::My(conn) = &mut a.conn else {
        unreachable!("MySQL writes on a MySQL connection")
    };
    let mut tx = conn.begin().await.map_err(fail)?;
    for (i, w) in writes.iter().enumerate() {
        let outcome = match &w.op {
            WriteOp::Upsert(row) if !w.exists => {
                let mut cols: Vec<&String> = row.keys().collect();
                let clear = tomb.filter(|(c, ..)| !row.contains_key(c));
                let mut sql_cols: Vec<String> = cols.iter().map(|c| q(c)).collect();
                let mut values: Vec<String> = vec!["?".into(); cols.len()];
                if let Some((c, _, clear)) = clear {
                    sql_cols.push(q(c));
                    values.push((*clear).to_owned());
                }
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    sql_cols.join(", "),
                    values.join(", ")
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for c in cols.drain(..) {
                    query = my_bind(query, &row[c], is_temporal(type_of(c)));
                }
                my_exec(&mut tx, query).await?
            }
            op => {
                let (verb, sets, row) = match op {
                    WriteOp::Upsert(row) => {
                        let mut sets: Vec<String> =
                            row.keys().map(|c| format!("{} = ?", q(c))).collect();
                        if let Some((c, _, clear)) = tomb.filter(|(c, ..)| !row.contains_key(c)) {
                            sets.push(format!("{} = {clear}", q(c)));
                        }
                        ("UPDATE", sets, Some(row))
                    }
                    WriteOp::SoftDelete => {
                        let (c, set, _) =
                            tomb.ok_or("soft deletes need the side's tombstone column")?;
                        ("UPDATE", vec![format!("{} = {set}", q(c))], None)
                    }
                    WriteOp::Delete => ("DELETE", vec![], None),
                };
                let sql = if verb == "DELETE" {
                    format!("DELETE FROM {table} WHERE {key_cond}{ver_cond}")
                } else {
                    format!(
                        "UPDATE {table} SET {} WHERE {key_cond}{ver_cond}",
                        sets.join(", ")
                    )
                };
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (c, v) in row.into_iter().flatten() {
                    query = my_bind(query, v, is_temporal(type_of(c)));
                }
                for (c, v) in key_cols.iter().zip(&w.key) {
                    query = my_bind(query, &Value::String(v.clone()), is_temporal(type_of(c)));
                }
                if version.is_some() {
                    let expected = w.expected.clone().map_or(Value::Null, Value::String);
                    query = my_bind(query, &expected, false);
                }
                my_exec(&mut tx, query).await?
            }
        };
        out[i] = match outcome {
            MyOutcome::Rows(0) | MyOutcome::Duplicate => Written::Changed,
            MyOutcome::Rows(_) => Written::Done { row: None },
            MyOutcome::Refused(e) => Written::Refused(e),
        };
    }
    tx.commit().await.map_err(fail)?;
    Ok(())
}

mod pg {
    //! Postgres: a statement per kind of write for the whole batch.

    use super::*;

    /// One kind of write over the rows `rows` (JSON objects; with `expected` versions for
    /// updates and deletes), returning the rows it wrote as JSON text.
    fn statement(
        a: &SqlAdapter,
        kind: &WriteOp,
        fields: &[&str],
        tomb: Option<&Tombstone>,
    ) -> String {
        let q = |c: &str| a.quote(c);
        let all: Vec<String> = a.described.columns.iter().map(|c| q(c)).collect();
        let input = format!(
            "(SELECT r.*, e.sy_expected FROM json_populate_recordset(NULL::{t}, $1::json)
                    WITH ORDINALITY AS r({cols}, sy_n)
               JOIN unnest($2::text[]) WITH ORDINALITY AS e(sy_expected, sy_n) USING (sy_n)) AS i",
            t = a.table,
            cols = all.join(", ")
        );
        let keys: Vec<String> = a
            .info
            .key
            .iter()
            .map(|k| format!("t.{0} = i.{0}", q(k)))
            .collect();
        let mut cond = keys.join(" AND ");
        if let Some(v) = &a.info.version {
            let cast = a
                .type_of(v)
                .and_then(super::super::sql::pg_cast)
                .unwrap_or("text");
            cond.push_str(&format!(
                " AND t.{0} IS NOT DISTINCT FROM CAST(i.sy_expected AS {cast})",
                q(v)
            ));
        }
        match kind {
            WriteOp::Upsert(_) => {
                let mut sets: Vec<String> = fields
                    .iter()
                    .map(|c| format!("{0} = i.{0}", q(c)))
                    .collect();
                if let Some((c, _, clear)) = tomb.filter(|(c, ..)| !fields.contains(&c.as_str())) {
                    sets.push(format!("{} = {clear}", q(c)));
                }
                format!(
                    "UPDATE {} AS t SET {} FROM {input} WHERE {cond} RETURNING row_to_json(t)::text",
                    a.table,
                    sets.join(", ")
                )
            }
            WriteOp::SoftDelete => {
                let (c, set, _) = tomb.expect("checked before");
                format!(
                    "UPDATE {} AS t SET {} = {set} FROM {input} WHERE {cond} RETURNING row_to_json(t)::text",
                    a.table,
                    q(c)
                )
            }
            WriteOp::Delete => format!(
                "DELETE FROM {} AS t USING {input} WHERE {cond} RETURNING row_to_json(t)::text",
                a.table
            ),
        }
    }

    fn insert(a: &SqlAdapter, fields: &[&str], tomb: Option<&Tombstone>) -> String {
        let q = |c: &str| a.quote(c);
        let mut cols: Vec<String> = fields.iter().map(|c| q(c)).collect();
        let mut values = cols.clone();
        if let Some((c, _, clear)) = tomb.filter(|(c, ..)| !fields.contains(&c.as_str())) {
            cols.push(q(c));
            values.push((*clear).to_owned());
        }
        format!(
            "INSERT INTO {t} AS t ({cols}) SELECT {values} FROM json_populate_recordset(NULL::{t}, $1::json)
             WHERE $2::text[] IS NOT NULL
             ON CONFLICT DO NOTHING RETURNING row_to_json(t)::text",
            t = a.table,
            cols = cols.join(", "),
            values = values.join(", ")
        )
    }

    /// The group a write belongs to: same statement, same fields.
    fn group_of(w: &Write) -> (u8, Vec<String>) {
        match &w.op {
            WriteOp::Upsert(row) => (if w.exists { 1 } else { 0 }, row.keys().cloned().collect()),
            WriteOp::SoftDelete => (2, vec![]),
            WriteOp::Delete => (3, vec![]),
        }
    }

    async fn run(
        c: &mut PgConnection,
        sql: &str,
        rows: &[Value],
        expected: &[Option<String>],
    ) -> Result<Result<Vec<Row>, String>, SourceError> {
        let mut sp = c.begin().await.map_err(fail)?;
        let r: Result<Vec<String>, sqlx::Error> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .bind(Value::Array(rows.to_vec()))
                .bind(expected)
                .fetch_all(&mut *sp)
                .await;
        match r {
            Ok(texts) => {
                sp.commit().await.map_err(fail)?;
                Ok(Ok(texts
                    .iter()
                    .map(|t| parse_row(t))
                    .collect::<Result<_, _>>()?))
            }
            Err(sqlx::Error::Database(d))
                if d.code()
                    .is_some_and(|c| c.starts_with("22") || c.starts_with("23")) =>
            {
                sp.rollback().await.map_err(fail)?;
                Ok(Err(format!("the table refused it: {}", d.message())))
            }
            Err(e) => Err(fail(e)),
        }
    }

    pub(super) async fn write(
        a: &mut SqlAdapter,
        writes: &[Write],
        tomb: Option<&Tombstone>,
        out: &mut [Written],
    ) -> Result<(), SourceError> {
        if writes.iter().any(|w| matches!(w.op, WriteOp::SoftDelete)) && tomb.is_none() {
            return Err("soft deletes need the side's tombstone column".into());
        }
        // Writes of one kind with the same fields share a statement.
        type Group = (u8, Vec<String>);
        let mut groups: Vec<(Group, Vec<usize>)> = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            let g = group_of(w);
            match groups.iter_mut().find(|(k, _)| *k == g) {
                Some((_, members)) => members.push(i),
                None => groups.push((g, vec![i])),
            }
        }
        let statements: Vec<(String, Vec<usize>)> = groups
            .into_iter()
            .map(|((kind, fields), members)| {
                let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
                let sql = match kind {
                    0 => insert(a, &fields, tomb),
                    _ => statement(a, &writes[members[0]].op, &fields, tomb),
                };
                (sql, members)
            })
            .collect();
        let key = a.info.key.clone();
        let Conn::Pg(conn) = &mut a.conn else {
            unreachable!("Postgres writes on a Postgres connection")
        };
        let mut tx = conn.begin().await.map_err(fail)?;
        for (sql, members) in statements {
            let payload = |i: usize| -> Value {
                match &writes[i].op {
                    WriteOp::Upsert(row) => Value::Object(row.clone()),
                    _ => {
                        let mut m = Row::new();
                        for (k, v) in key.iter().zip(&writes[i].key) {
                            m.insert(k.clone(), Value::String(v.clone()));
                        }
                        Value::Object(m)
                    }
                }
            };
            let rows: Vec<Value> = members.iter().map(|&i| payload(i)).collect();
            let expected: Vec<Option<String>> = members
                .iter()
                .map(|&i| writes[i].expected.clone())
                .collect();
            let written = match run(&mut tx, &sql, &rows, &expected).await? {
                Ok(written) => written,
                Err(_) => {
                    // One row the table refuses: find it, write the others.
                    let mut written = Vec::new();
                    for (j, &i) in members.iter().enumerate() {
                        match run(&mut tx, &sql, &rows[j..=j], &expected[j..=j]).await? {
                            Ok(w) => written.extend(w),
                            Err(e) => out[i] = Written::Refused(e),
                        }
                    }
                    written
                }
            };
            for row in written {
                let Some(k) = key_values(&row, &key) else {
                    continue;
                };
                if let Some(&i) = members.iter().find(|&&i| writes[i].key == k) {
                    let deleted = matches!(writes[i].op, WriteOp::Delete);
                    out[i] = Written::Done {
                        row: (!deleted).then_some(row),
                    };
                }
            }
        }
        tx.commit().await.map_err(fail)?;
        Ok(())
    }
}
