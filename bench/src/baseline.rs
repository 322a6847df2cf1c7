//! Baselines measured in the same run as the scenario, on the same machine.

use std::time::{Duration, Instant};

use apalis::prelude::{
    BackendExt, BoxDynError, TaskSink, WorkerBuilder, WorkerBuilderExt, WorkerContext,
};
use apalis_redis::RedisStorage;
use futures::StreamExt;
use sqlx::{Connection, Executor, PgConnection, postgres::PgPoolOptions};

/// Single-row autocommit INSERTs of an order-sized row at `concurrency`: rows per second.
pub async fn postgres_inserts(
    server: &str,
    rows: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let db = format!(
        "switchyard_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .await?;
    let result = async {
        let pool = PgPoolOptions::new()
            .max_connections(concurrency as u32)
            .connect(&format!("{server}/{db}"))
            .await?;
        pool.execute("CREATE TABLE t (id uuid PRIMARY KEY, tenant uuid NOT NULL, body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())").await?;
        let body = serde_json::json!({"external_id": "x", "items": [{"sku": "PIZ-1", "quantity": 2}], "customer": {"name": "Load Test"}});
        let tenant = uuid::Uuid::now_v7();
        let started = Instant::now();
        futures::stream::iter(0..rows)
            .map(|_| {
                let (pool, body) = (pool.clone(), body.clone());
                async move {
                    sqlx::query("INSERT INTO t (id, tenant, body) VALUES ($1, $2, $3)")
                        .bind(uuid::Uuid::now_v7())
                        .bind(tenant)
                        .bind(sqlx::types::Json(body))
                        .execute(&pool)
                        .await
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let rate = rows as f64 / started.elapsed().as_secs_f64();
        pool.close().await;
        anyhow::Ok(rate)
    }
    .await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .await?;
    result
}

/// Pushes `tasks` no-op tasks with apalis-redis' own sink, then times one worker (concurrency
/// `concurrency`, 10 ms poll) consuming them all: tasks per second. Kept under apalis' ~8,000
/// due-task limit.
pub async fn apalis_noop(redis_url: &str, tasks: usize, concurrency: usize) -> anyhow::Result<f64> {
    let queue = format!("switchyard-bench-{}", uuid::Uuid::new_v4().simple());
    let conn = switchyard_shared::queue::connect(redis_url)?;
    let cfg = apalis_redis::Config::default()
        .queue(&queue)
        .batch_size(concurrency.clamp(1, 100))
        .heartbeat_interval(Duration::from_secs(3))
        .missed_heartbeats(3)
        .emit_events(false);
    let mut storage = RedisStorage::<u64>::new(conn.clone()).with_config(cfg.clone());
    let items: Vec<u64> = (0..tasks as u64).collect();
    for chunk in items.chunks(1000) {
        storage
            .push_bulk(chunk.to_vec())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let last = tasks as u64 - 1;
    let started = Instant::now();
    async fn noop(
        task: u64,
        last: apalis::prelude::Data<u64>,
        ctx: WorkerContext,
    ) -> Result<(), BoxDynError> {
        if task == *last {
            ctx.stop()?;
        }
        Ok(())
    }
    let worker = WorkerBuilder::new(format!("{queue}-w"))
        .backend(storage.poll_with_interval(Duration::from_millis(10)))
        .data(last)
        .concurrency(concurrency)
        .build(noop);
    worker.run().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let rate = tasks as f64 / started.elapsed().as_secs_f64();
    // Remove the scratch queue.
    let mut c = conn.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{queue}*"))
        .query_async(&mut c)
        .await?;
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut c).await?;
    }
    Ok(rate)
}
