//! `inbound_events`: processes one stored inbound webhook with its integration's action, the
//! outcome recorded in the job's transaction (shared::inbound::events). An action that cannot
//! succeed with its input is `failed` at once; an error (Postgres) is retried with backoff.

use std::sync::Arc;

use switchyard_shared::{
    inbound::{events, receive::PROCESS_MAX_ATTEMPTS},
    jobs::{self, Lease, Outcome},
    queue,
    telemetry::metrics as m,
};

use super::{Attempts, Kind};
use crate::context::Ctx;

pub async fn run(ctx: &Arc<Ctx>, job: &Lease) -> switchyard_shared::Result<()> {
    let mut tx = ctx.pool.begin().await?;
    let processed = events::process(&mut tx, job.subject_id).await?;
    let finished = jobs::finish(&mut tx, job, &Outcome::Succeeded).await?;
    tx.commit().await?;
    if finished {
        let outcome = match processed {
            events::Processed::Failed => "failed",
            _ => "completed",
        };
        metrics::counter!(m::INBOUND_EVENTS, "outcome" => outcome).increment(1);
    }
    match processed {
        events::Processed::Done(tasks) if !tasks.is_empty() => {
            ctx.fast_path.push(queue::EVENT_FAN_OUT, tasks)
        }
        events::Processed::StartedSyncRun(task) => ctx.fast_path.push(queue::SYNC_RUNS, vec![task]),
        _ => {}
    }
    Ok(())
}

/// The queue's entry in the registry ([`super::KINDS`]).
pub const KIND: Kind = Kind {
    queue: queue::INBOUND_EVENTS,
    attempts: Attempts::Fixed(PROCESS_MAX_ATTEMPTS),
    keep_finished: None,
    concurrency: |cfg| cfg.event_concurrency,
    run: |ctx, job, _| Box::pin(super::alone(run(ctx, job))),
    on_dead: |conn, job, error| {
        metrics::counter!(m::INBOUND_EVENTS, "outcome" => "failed").increment(1);
        super::closes(events::record_attempt(conn, job.subject_id, error, true))
    },
};
