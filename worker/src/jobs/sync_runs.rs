//! `sync_runs`: one job per sync run (shared::sync::engine). A run that fails to reach its
//! source retries from its checkpoint with backoff; when its attempts are used up, its run is
//! failed. A killed worker's run resumes elsewhere from the last committed batch.

use std::sync::Arc;

use switchyard_shared::{
    jobs::Lease,
    queue,
    sync::{
        engine::{self, Ended, Engine},
        runs,
    },
};

use super::{Attempts, Kind};
use crate::context::Ctx;

pub async fn run(ctx: &Arc<Ctx>, job: &Lease) -> switchyard_shared::Result<()> {
    let engine = Engine {
        pool: &ctx.pool,
        keyring: &ctx.keyring,
        egress: &ctx.egress,
    };
    match engine.run(job).await? {
        Ended::Finished { events, follow_up } => {
            if !events.is_empty() {
                ctx.fast_path.push(queue::EVENT_FAN_OUT, events);
            }
            if let Some(task) = follow_up {
                ctx.fast_path.push(queue::SYNC_RUNS, vec![task]);
            }
        }
        Ended::LostLease => {
            tracing::warn!(job_id = %job.id, "sync run lost its lease; another worker goes on")
        }
    }
    Ok(())
}

/// The queue's entry in the registry ([`super::KINDS`]): a few runs at once per worker (each
/// holds a source connection and a Postgres connection per batch).
pub const KIND: Kind = Kind {
    queue: queue::SYNC_RUNS,
    attempts: Attempts::Fixed(runs::MAX_ATTEMPTS),
    keep_finished: None,
    concurrency: |_| 2,
    run: |ctx, job, _| Box::pin(super::alone(run(ctx, job))),
    on_dead: |conn, job, error| Box::pin(engine::fail_dead(conn, job.subject_id, error)),
};
