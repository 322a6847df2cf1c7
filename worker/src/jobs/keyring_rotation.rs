//! `keyring_rotation`: re-encrypts every sealed value still under an older master key with the
//! active one (shared::keyring). A crashed or failed run resumes where the values say it was.

use std::sync::Arc;

use switchyard_shared::{
    jobs::{self, Lease, Outcome},
    keyring, queue,
};

use super::{Attempts, Kind};
use crate::context::Ctx;

pub async fn run(ctx: &Arc<Ctx>, job: &Lease) -> switchyard_shared::Result<()> {
    keyring::rotate(&ctx.pool, &ctx.keyring, job.subject_id).await?;
    let mut conn = ctx.pool.acquire().await?;
    jobs::finish(&mut conn, job, &Outcome::Succeeded).await?;
    Ok(())
}

/// The queue's entry in the registry ([`super::KINDS`]): one rotation at a time per worker
/// (and one at all: `keyring_rotations_one_running`).
pub const KIND: Kind = Kind {
    queue: queue::KEYRING_ROTATION,
    attempts: Attempts::Fixed(keyring::ROTATION_MAX_ATTEMPTS),
    keep_finished: None,
    concurrency: |_| 1,
    run: |ctx, job, _| Box::pin(super::alone(run(ctx, job))),
    on_dead: |conn, job, error| super::closes(keyring::finish(conn, job.subject_id, Some(error))),
};
