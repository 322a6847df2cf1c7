//! `webhook_replays`: one batch of a bulk replay per run, then wait a second for the next.

use switchyard_shared::{
    jobs::{self, ClaimedJob},
    webhooks::replays::{self, Step},
};

use crate::context::Ctx;

pub async fn run(ctx: &Ctx, job: &ClaimedJob) -> switchyard_shared::Result<()> {
    match replays::run_batch(&ctx.pool, job, &ctx.owner).await? {
        // Not a failed attempt: the job simply is not finished; it runs again at `at`.
        Step::Again(at) => {
            jobs::defer(&ctx.pool, job, &ctx.owner, at).await?;
        }
        Step::Done => {}
    }
    // The batch's deliveries are pending in their endpoint's group.
    ctx.dispatcher.wake();
    Ok(())
}
