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
