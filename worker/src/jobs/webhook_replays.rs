//! `webhook_replays`: one batch of a bulk replay per run, then wait a second for the next.

use switchyard_shared::{
    jobs::{ClaimedJob, Lease},
    queue::WEBHOOK_REPLAYS,
    telemetry::metrics as m,
    webhooks::replays::{self, Step},
};

use super::{Attempts, Kind};
use crate::context::Ctx;

pub async fn run(ctx: &Ctx, job: &Lease) -> switchyard_shared::Result<()> {
    let step = replays::run_batch(&ctx.pool, job).await?;
    // The batch's deliveries are pending in their endpoint's group.
    ctx.dispatcher.wake();
    if step == Step::Again {
        metrics::counter!(m::JOBS_DEFERRED, "queue" => "webhook_replays").increment(1);
    }
    Ok(())
}

/// A replay whose job died stops as `failed`, with the reason.
pub async fn on_dead(
    conn: &mut sqlx::PgConnection,
    job: &ClaimedJob,
    error: &str,
) -> switchyard_shared::Result<()> {
    replays::mark_failed(conn, job.subject_id, error).await
}

/// The queue's entry in the registry ([`super::KINDS`]): replays are paced, two at a time
/// per worker are plenty.
pub const KIND: Kind = Kind {
    queue: WEBHOOK_REPLAYS,
    attempts: Attempts::Fixed(replays::REPLAY_MAX_ATTEMPTS),
    keep_finished: None,
    concurrency: |_| 2,
    run: |ctx, job, _| Box::pin(super::alone(run(ctx, job))),
    on_dead: |conn, job, error| super::closes(on_dead(conn, job, error)),
};
