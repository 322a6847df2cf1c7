//! `janitor`: one run per scheduled slot, cluster-wide (shared::schedule): finished task data
//! out of Redis (apalis keeps it forever otherwise), every table's retention purge, and a
//! vacuum of the tables autovacuum left behind.

use std::time::Duration;

use switchyard_shared::{
    jobs::{self, Lease, Outcome},
    queue, retention,
};

use super::{Attempts, Kind};
use crate::context::Ctx;

/// A failed run is retried like any job; the next slot runs anyway.
pub const MAX_ATTEMPTS: i32 = 3;
/// One run per slot piles up fast (8,640 a day at the default 10 s) and each says only
/// "purged": a day of them is enough to see that the janitor runs.
pub const KEEP_FINISHED: Duration = Duration::from_secs(86_400);

pub async fn run(ctx: &Ctx, job: &Lease) -> switchyard_shared::Result<()> {
    // Redis and Postgres are cleaned apart: a Redis that fails (a timeout, a key of the wrong
    // type) must not stop every table's retention with it. Its error fails the run afterwards.
    let queues = ctx.dispatcher.queues();
    let mut swept = Ok(());
    for q in queues.names() {
        if let Err(e) = queues.sweep_finished(q).await {
            tracing::warn!(queue = q, error = %e, "could not trim finished tasks from Redis");
            swept = Err(e);
        }
    }
    let short = super::short_retentions();
    let purged = retention::purge(&ctx.pool, &ctx.retention, ctx.idempotency_ttl, &short).await?;
    if purged.total() > 0 {
        tracing::debug!(rows = purged.total(), "retention purge");
    }
    let vacuumed = retention::vacuum::run(&ctx.pool).await?;
    if !vacuumed.is_empty() {
        tracing::info!(tables = ?vacuumed, "vacuumed tables autovacuum left behind");
    }
    swept?;
    let mut conn = ctx.pool.acquire().await?;
    jobs::finish(&mut conn, job, &Outcome::Succeeded).await?;
    Ok(())
}

/// The queue's entry in the registry ([`super::KINDS`]): one run at a time per worker.
pub const KIND: Kind = Kind {
    queue: queue::JANITOR,
    attempts: Attempts::Fixed(MAX_ATTEMPTS),
    keep_finished: Some(KEEP_FINISHED),
    concurrency: |_| 1,
    run: |ctx, job, _| Box::pin(super::alone(run(ctx, job))),
    on_dead: |_, _, _| Box::pin(async { Ok(super::Created::new()) }),
};
