//! The long-lived handles a process builds once at start and shares with every request and job.

use anyhow::Context;
use sqlx::PgPool;

use crate::{
    config::CommonConfig,
    db,
    dispatch::Dispatcher,
    queue::{self, Queues},
    secrets::Secrets,
};

#[derive(Clone)]
pub struct Services {
    pub config: CommonConfig,
    pub secrets: Secrets,
    pub pool: PgPool,
    pub queues: Queues,
    pub dispatcher: Dispatcher,
}

impl Services {
    /// Resolves secrets, connects to Postgres (creating and migrating the database) and sets up
    /// the Redis connection (lazily: Redis may be down at start; Postgres may not). `queues` is
    /// every queue of the worker's job-kind registry (`switchyard_worker::QUEUES`).
    pub async fn connect(
        config: CommonConfig,
        queues: &'static [&'static str],
    ) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        // Install the metrics recorder before anything records.
        crate::telemetry::prometheus();
        let secrets = Secrets::resolve(&config)?;
        let pool = db::connect_and_migrate(&config.database_url, config.db_pool_size).await?;
        // Attempts can only be recorded into an existing day partition.
        crate::retention::partitions::ensure(&pool)
            .await
            .context("creating attempt partitions")?;
        let conn = queue::connect(&config.redis_url).context("REDIS_URL")?;
        let queues = Queues::new(conn, &config.redis_prefix, config.high_water_mark, queues);
        let dispatcher = Dispatcher::new(pool.clone(), queues.clone(), config.endpoint_concurrency);
        Ok(Services {
            config,
            secrets,
            pool,
            queues,
            dispatcher,
        })
    }
}
