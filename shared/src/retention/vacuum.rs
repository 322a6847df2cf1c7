//! Vacuuming the tables whose rows change state many times (the ledger first: a job is
//! written three or four times) when autovacuum has not: it may be off, as on some CI and
//! managed setups, or behind. Without it the hot partial indexes fill with entries of rows that
//! moved on, and every claim, dispatch pass and attempt record walks them: in a burn-down of a
//! million deliveries with autovacuum off, the attempt record went from ~1.8 ms to 6 ms a batch
//! (docs/benchmarks.md). With autovacuum on and keeping up (the hot tables' thresholds are 2 %,
//! migration `hot_table_autovacuum`), no table reaches the threshold here and this does nothing.

use sqlx::PgPool;

use crate::error::Result;

/// A table is vacuumed once its dead rows exceed this many plus [`DEAD_SHARE`] of its live ones.
const MIN_DEAD: i64 = 5_000;
const DEAD_SHARE: f64 = 0.05;

/// Vacuums and analyses the tables of this schema past the threshold, most dead rows first;
/// returns their names. `SKIP_LOCKED`: a table autovacuum (or another replica's janitor) is
/// vacuuming right now is left to it. A vacuum of the million-row ledger takes about a second.
pub async fn run(pool: &PgPool) -> Result<Vec<String>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT relid::regclass::text FROM pg_stat_user_tables
          WHERE schemaname = current_schema() AND n_dead_tup > $1 + $2 * n_live_tup
          ORDER BY n_dead_tup DESC",
    )
    .bind(MIN_DEAD)
    .bind(DEAD_SHARE)
    .fetch_all(pool)
    .await?;
    for table in &tables {
        // VACUUM cannot run in a transaction block: the simple protocol, one statement. The
        // name is Postgres' own quoting of a table of ours (`regclass`).
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "VACUUM (SKIP_LOCKED, ANALYZE) {table}"
        )))
        .execute(pool)
        .await?;
    }
    Ok(tables)
}
