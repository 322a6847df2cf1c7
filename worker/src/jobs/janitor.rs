//! `janitor`: one run per scheduled slot, cluster-wide (shared::schedule): finished task data
//! out of Redis (apalis keeps it forever otherwise) and every table's retention purge.

use switchyard_shared::{
    jobs::{self, Lease, Outcome},
    queue, retention,
};

use super::Kind;
use crate::context::Ctx;

/// A failed run is retried like any job; the next slot runs anyway.
pub const MAX_ATTEMPTS: i32 = 3;

pub async fn run(ctx: &Ctx, job: &Lease) -> switchyard_shared::Result<()> {
    for q in queue::ALL_QUEUES {
        ctx.dispatcher.queues().sweep_finished(q).await?;
    }
    let purged = retention::purge(&ctx.pool, &ctx.retention, ctx.idempotency_ttl).await?;
    if purged.total() > 0 {
        tracing::debug!(rows = purged.total(), "retention purge");
    }
    let mut conn = ctx.pool.acquire().await?;
    jobs::finish(&mut conn, job, &Outcome::Succeeded).await?;
    Ok(())
}

/// The queue's entry in the registry ([`super::KINDS`]): one run at a time per worker.
pub const KIND: Kind = Kind {
    queue: queue::JANITOR,
    concurrency: |_| 1,
    run: |ctx, job| Box::pin(run(ctx, job)),
    on_dead: |_, _, _| Box::pin(async { Ok(()) }),
};
