//! Day partitions of the biggest append-only tables ([`PARTITIONED`]: delivery attempts and
//! request logs), by id (ids are UUIDv7, so an id range is a time range). Partitions are
//! created a week ahead and dropped whole once their day has passed the retention: no
//! row-by-row delete, no bloat, space back at once.
//!
//! Names say what a partition holds: `webhook_attempts_p20261201` the attempts of that UTC
//! day; `webhook_attempts_upto_20261201` everything before that day (the rows from before
//! partitioning). There is no default partition: a row whose day has no partition would fail
//! to be written, so [`ensure`] runs at every process start and every janitor run, a week
//! ahead.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use sqlx::PgPool;

use crate::error::Result;

/// Days of partitions kept ready ahead of today.
const DAYS_AHEAD: u64 = 7;

/// Every table kept in day partitions.
pub const PARTITIONED: &[&str] = &["webhook_attempts", "request_logs"];

/// Creates the partitions of today and the next week that do not exist yet, of every table.
pub async fn ensure(pool: &PgPool) -> Result<()> {
    let today: String = sqlx::query_scalar("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')")
        .fetch_one(pool)
        .await?;
    let today = parse_day(&today).ok_or_else(|| anyhow::anyhow!("bad date `{today}`"))?;
    for table in PARTITIONED {
        ensure_table(pool, table, today).await?;
    }
    Ok(())
}

async fn ensure_table(pool: &PgPool, table: &str, today: NaiveDate) -> Result<()> {
    let existing = names(pool, table).await?;
    let upto = format!("{table}_upto_");
    for n in 0..=DAYS_AHEAD {
        let day = today + Days::new(n);
        let name = format!("{table}_p{}", day.format("%Y%m%d"));
        if existing.contains(&name) || covered_by_upto(&existing, &upto, day) {
            continue;
        }
        // Made apart and attached: `CREATE TABLE … PARTITION OF` takes the parent's ACCESS
        // EXCLUSIVE lock, so behind any long read of the table it waited, and every insert
        // (each delivery's attempt) queued behind it; ATTACH takes SHARE UPDATE EXCLUSIVE,
        // which neither reads nor inserts conflict with. Two replicas may race here; the
        // loser's transaction fails and the next run sees the partition.
        if let Err(e) = create(pool, table, &name, day).await {
            tracing::warn!(partition = %name, error = %e, "cannot create partition yet");
        }
    }
    Ok(())
}

/// Creates the partition `name` of `table` for `day` and attaches it, in one transaction.
async fn create(pool: &PgPool, table: &str, name: &str, day: NaiveDate) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    let sql = format!(
        "CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
         INCLUDING STORAGE)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await?;
    let sql = format!(
        "ALTER TABLE {table} ATTACH PARTITION {name}
           FOR VALUES FROM (uuid_v7_floor('{day}T00:00:00Z'))
                        TO (uuid_v7_floor('{next}T00:00:00Z'))",
        next = day + Days::new(1),
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Drops the partitions of `table` whose whole day is older than `retention`; returns how many.
pub async fn drop_expired(pool: &PgPool, table: &str, retention: Duration) -> Result<u64> {
    let cutoff: DateTime<Utc> = sqlx::query_scalar("SELECT now() - make_interval(secs => $1)")
        .bind(retention.as_secs_f64())
        .fetch_one(pool)
        .await?;
    let (prefix, upto) = (format!("{table}_p"), format!("{table}_upto_"));
    let mut dropped = 0;
    for name in names(pool, table).await? {
        // A partition's rows are all older than the day after its own (`p`), or than its
        // bound (`upto`).
        let end = if let Some(d) = name.strip_prefix(&prefix).and_then(parse_day) {
            d + Days::new(1)
        } else if let Some(d) = name.strip_prefix(&upto).and_then(parse_day) {
            d
        } else {
            continue;
        };
        if end
            .and_hms_opt(0, 0, 0)
            .is_some_and(|e| e.and_utc() <= cutoff)
        {
            // Never wait long for the parent's lock behind running statements: try again on
            // the next run instead.
            let mut tx = pool.begin().await?;
            sqlx::query("SET LOCAL lock_timeout = '2s'")
                .execute(&mut *tx)
                .await?;
            let sql = format!("DROP TABLE IF EXISTS {name}");
            match sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
            {
                Ok(_) => {
                    tx.commit().await?;
                    dropped += 1;
                    tracing::info!(partition = %name, "dropped expired partition");
                }
                Err(e) => {
                    tracing::warn!(partition = %name, error = %e, "cannot drop partition yet")
                }
            }
        }
    }
    Ok(dropped)
}

async fn names(pool: &PgPool, table: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
          WHERE p.relname = $1",
    )
    .bind(table)
    .fetch_all(pool)
    .await?)
}

fn parse_day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y%m%d").ok()
}

fn covered_by_upto(existing: &[String], upto_prefix: &str, day: NaiveDate) -> bool {
    existing
        .iter()
        .filter_map(|n| n.strip_prefix(upto_prefix).and_then(parse_day))
        .any(|upto| day < upto)
}
