//! `event_fan_out`: turn an event of the outbox into a webhook message and its deliveries.

use std::sync::Arc;

use switchyard_shared::{
    events,
    jobs::{self, ClaimedJob, Lease, Outcome},
    queue::{EVENT_FAN_OUT, WEBHOOK_DELIVERIES},
    telemetry::metrics as m,
    webhooks::messages,
};

use super::{Attempts, Kind};
use crate::{ORDERING_RETRY, context::Ctx};

pub async fn run(ctx: &Arc<Ctx>, job: &Lease) -> switchyard_shared::Result<()> {
    let Some(loaded) = messages::load(&ctx.pool, job.subject_id).await? else {
        let mut conn = ctx.pool.acquire().await?;
        let outcome = Outcome::Cancelled {
            reason: "event no longer exists".into(),
        };
        jobs::finish(&mut conn, job, &outcome).await?;
        return Ok(());
    };
    if loaded.waiting {
        // An earlier event of its ordering key goes first; try again shortly.
        let mut conn = ctx.pool.acquire().await?;
        jobs::defer(&mut conn, job, None, ORDERING_RETRY).await?;
        metrics::counter!(m::JOBS_DEFERRED, "queue" => EVENT_FAN_OUT).increment(1);
        return Ok(());
    }
    let subscribed = messages::subscribed(&loaded.event, &loaded.subscriptions);
    // Deliveries that can go straight out are born running here while this process has room
    // (no claim, no trip through Redis); the others are born queued and pushed to Redis.
    let slots = super::reserve_run_here(ctx, subscribed.len());
    let here = messages::RunHere {
        owner: &ctx.owner,
        lease: ctx.lease,
        count: slots.len(),
    };
    let fan_out = messages::fan_out(
        &ctx.planned_once,
        job,
        &loaded.event,
        &subscribed,
        &ctx.fan_out,
        &here,
    )
    .await?;
    if !fan_out.finished {
        tracing::warn!(job_id = %job.id, "lease lost before the fan-out; left to the new holder");
        return Ok(());
    }
    metrics::counter!(m::EVENTS_FANNED_OUT).increment(1);
    super::run_here(ctx, fan_out.running, slots);
    ctx.fast_path.push(WEBHOOK_DELIVERIES, fan_out.tasks);
    if fan_out.pending > 0 {
        ctx.dispatcher.wake();
    }
    Ok(())
}

/// A fan-out that can never succeed (a poison event) is marked failed, so the later events of
/// its ordering key stop waiting for it; the dead job keeps the reason.
pub async fn on_dead(
    conn: &mut sqlx::PgConnection,
    job: &ClaimedJob,
    error: &str,
) -> switchyard_shared::Result<()> {
    messages::mark_fan_out_failed(conn, job.subject_id, error).await
}

/// The queue's entry in the registry ([`super::KINDS`]).
pub const KIND: Kind = Kind {
    queue: EVENT_FAN_OUT,
    attempts: Attempts::Fixed(events::FAN_OUT_MAX_ATTEMPTS),
    keep_finished: None,
    concurrency: |cfg| cfg.event_concurrency,
    run: |ctx, job, _| Box::pin(super::alone(run(ctx, job))),
    on_dead: |conn, job, error| super::closes(on_dead(conn, job, error)),
};
