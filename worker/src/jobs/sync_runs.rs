//! `sync_runs`: one job per sync run (shared::sync::engine). A run that fails to reach its
//! source retries from its checkpoint with backoff; when its attempts are used up, its run is
//! failed. A killed worker's run resumes elsewhere from the last committed batch.

use std::sync::Arc;

use switchyard_shared::{
    jobs::Lease,
    queue::{self, JobTask},
    sync::{
        engine::{self, Ended, Engine},
        runs,
    },
};

use super::{Attempts, Created, Kind};
use crate::context::Ctx;

pub async fn run(ctx: &Arc<Ctx>, job: &Lease) -> switchyard_shared::Result<()> {
    let engine = Engine {
        pool: &ctx.pool,
        keyring: &ctx.keyring,
        egress: &ctx.egress,
    };
    match engine.run(job).await? {
        Ended::Finished { events, follow_up } => {
            for (queue, tasks) in created(events, follow_up) {
                if !tasks.is_empty() {
                    ctx.fast_path.push(queue, tasks);
                }
            }
        }
        Ended::LostLease => {
            tracing::warn!(job_id = %job.id, "sync run lost its lease; another worker goes on")
        }
    }
    Ok(())
}

/// What a run's end wrote: its events' fan-outs and the follow-up run, by queue.
fn created(events: Vec<JobTask>, follow_up: Option<JobTask>) -> Created {
    vec![
        (queue::EVENT_FAN_OUT, events),
        (queue::SYNC_RUNS, follow_up.into_iter().collect()),
    ]
}

/// The queue's entry in the registry ([`super::KINDS`]): a few runs at once per worker (each
/// holds a source connection and a Postgres connection per batch).
pub const KIND: Kind = Kind {
    queue: queue::SYNC_RUNS,
    attempts: Attempts::Fixed(runs::MAX_ATTEMPTS),
    keep_finished: None,
    concurrency: |_| 2,
    run: |ctx, job, _| Box::pin(super::alone(run(ctx, job))),
    on_dead: |conn, job, error| {
        Box::pin(async move {
            let (events, follow_up) = engine::fail_dead(conn, job.subject_id, error).await?;
            Ok(created(events, follow_up))
        })
    },
};
