//! `order_events`: turn an order event into a webhook message and its deliveries.

use switchyard_shared::{
    jobs::{self, ClaimedJob, Outcome},
    orders,
    webhooks::messages,
};

use crate::context::Ctx;

pub async fn run(ctx: &Ctx, job: &ClaimedJob) -> switchyard_shared::Result<()> {
    let Some(event) = orders::get_event(&ctx.pool, job.subject_id).await? else {
        let mut tx = ctx.pool.begin().await?;
        let outcome = Outcome::Cancelled {
            reason: "order event no longer exists".into(),
        };
        jobs::finish(&mut tx, job, &ctx.owner, &outcome).await?;
        tx.commit().await?;
        return Ok(());
    };
    let subs = messages::subscriptions(&ctx.pool, event.tenant_id).await?;
    let mut tx = ctx.pool.begin().await?;
    let delivery_jobs =
        messages::fan_out(&mut tx, &event, &subs, ctx.schedule.max_attempts()).await?;
    if !jobs::finish(&mut tx, job, &ctx.owner, &Outcome::Succeeded).await? {
        // Our lease was taken over: the new holder does the fan-out.
        tx.rollback().await?;
        tracing::warn!(job_id = %job.id, "lease lost during fan-out; left to the new holder");
        return Ok(());
    }
    tx.commit().await?;
    metrics::counter!("switchyard_events_fanned_out_total").increment(1);
    ctx.fast_path.nudge(delivery_jobs);
    Ok(())
}
