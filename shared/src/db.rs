//! Postgres bootstrap: create the database if missing, connect, migrate.

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects to `url`, creating the database first if it does not exist, and applies migrations
/// (sqlx serialises concurrent migrators with an advisory lock, so replicas may start together).
pub async fn connect_and_migrate(url: &str, pool_size: u32) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = url.parse().context("DATABASE_URL is not a valid URL")?;
    create_database_if_missing(&opts).await?;
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts.clone().disable_statement_logging())
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    Ok(pool)
}

/// A pool for the worker's batched statements (`worker/src/batches.rs`: claims, delivery reads,
/// attempt records over arrays of any length). Postgres re-plans such a statement on every
/// execution (the array's length changes its estimates, so it never settles on a generic
/// plan), which at low load, one request per batch, cost more than running it. This pool plans
/// each once per connection (`force_generic_plan`). The statements are written so that their
/// only sensible plans are index probes (states compared to parameters, not literals, so no
/// state partial index can stand in for the primary key; index order named where one row is
/// wanted), and sequential scans and sorts are ruled out, so a plan made while the ledger was
/// young stays right as it grows (docs/architecture.md §8): without sorts, a "first earlier
/// pending row" probe can only walk the index in its `ORDER BY` order, never another index of
/// pending rows on the same leading column (which, when small tables make their costs tie,
/// the planner would pick and then filter an endpoint's whole backlog). Connections are
/// recycled every half hour.
pub async fn connect_for_batches(url: &str, pool_size: u32) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = url.parse().context("DATABASE_URL is not a valid URL")?;
    let opts = opts
        .options([
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
            ("enable_sort", "off"),
            ("enable_incremental_sort", "off"),
            // A ruled-out plan's cost is huge (~1e10); with JIT on, a statement that still
            // needs one (an ordered aggregate's sort) would be compiled by LLVM on every
            // execution, about a second each. These statements are small: JIT never pays.
            ("jit", "off"),
        ])
        .disable_statement_logging();
    PgPoolOptions::new()
        .max_connections(pool_size)
        .min_connections(1)
        .max_lifetime(Duration::from_secs(1800))
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))
}

async fn create_database_if_missing(opts: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(db) = opts.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let maintenance = opts.clone().database("postgres");
    let mut conn = PgConnection::connect_with(&maintenance)
        .await
        .context("connecting to the `postgres` maintenance database")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&db)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", db.replace('"', "\"\""));
        match sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %db, "created database"),
            // Another replica created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("creating database"),
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// Hides the password of a connection URL for logs.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
