//! `queue_probes`: a job that does nothing but finish, so its cost is the queue path alone
//! (shared::probes; the queue floor in docs/benchmarks.md).

use std::{sync::Arc, time::Duration};

use switchyard_shared::{
    jobs::{Lease, Outcome},
    probes,
    queue::QUEUE_PROBES,
};

use super::{Attempts, Kind};
use crate::context::Ctx;

/// Probes say nothing once measured: their finished jobs leave the ledger after an hour.
pub const KEEP_FINISHED: Duration = Duration::from_secs(3_600);

/// Finishes, in a statement shared with concurrent finishes (as a delivery's outcome shares its
/// attempt record's).
pub async fn run(ctx: &Arc<Ctx>, job: &Lease) -> switchyard_shared::Result<()> {
    ctx.batch
        .finishes
        .call((job.clone(), Outcome::Succeeded))
        .await?;
    Ok(())
}

/// The queue's entry in the registry ([`super::KINDS`]): as many at once as deliveries.
pub const KIND: Kind = Kind {
    queue: QUEUE_PROBES,
    attempts: Attempts::Fixed(probes::MAX_ATTEMPTS),
    keep_finished: Some(KEEP_FINISHED),
    concurrency: |cfg| cfg.delivery_concurrency,
    run: |ctx, job, _| Box::pin(super::alone(run(ctx, job))),
    on_dead: |_, _, _| Box::pin(async { Ok(super::Created::new()) }),
};
