//! Queue consumers. Every task goes through [`handle`]: claim the job in the ledger (a stale
//! duplicate is acknowledged and dropped), run the kind's handler, which records the outcome in
//! the same transaction as its results.

mod order_events;
mod webhook_deliveries;
mod webhook_replays;

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use switchyard_shared::{
    jobs,
    queue::{JobTask, ORDER_EVENTS, WEBHOOK_DELIVERIES, WEBHOOK_REPLAYS},
};

use crate::context::Ctx;

/// apalis entry point for every queue. Returns an error only when the claim itself could not
/// be made (Postgres unreachable): apalis then retries the task shortly. After the claim, every
/// failure is the ledger's business: a handler that fails stops renewing its lease and the
/// reconciler hands the job out again.
pub async fn handle(task: JobTask, ctx: Data<Arc<Ctx>>) -> Result<(), BoxDynError> {
    let ctx: Arc<Ctx> = (*ctx).clone();
    let Some(job) = jobs::claim(&ctx.pool, task, &ctx.owner, ctx.lease).await? else {
        metrics::counter!("switchyard_stale_tasks_total").increment(1);
        return Ok(());
    };
    let _held = ctx.hold(&job);
    let started = std::time::Instant::now();
    let result = match job.queue.as_str() {
        ORDER_EVENTS => order_events::run(&ctx, &job).await,
        WEBHOOK_DELIVERIES => webhook_deliveries::run(&ctx, &job).await,
        WEBHOOK_REPLAYS => webhook_replays::run(&ctx, &job).await,
        other => Err(anyhow::anyhow!("no handler for queue `{other}`").into()),
    };
    metrics::histogram!("switchyard_job_duration_seconds", "queue" => job.queue.clone())
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = result {
        metrics::counter!("switchyard_job_errors_total", "queue" => job.queue.clone()).increment(1);
        tracing::warn!(job_id = %job.id, queue = %job.queue, error = %e,
            "job failed before recording an outcome; it runs again when its lease expires");
    }
    Ok(())
}
