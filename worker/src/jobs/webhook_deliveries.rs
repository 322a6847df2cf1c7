//! `webhook_deliveries`: one attempt of one message to one endpoint.

use std::sync::Arc;

use serde_json::json;
use switchyard_shared::{
    jobs::{self, ClaimedJob, Lease, Outcome},
    queue::{EVENT_FAN_OUT, WEBHOOK_DELIVERIES},
    telemetry::{metrics as m, trace::TraceParent},
    webhooks::{
        breaker::{self, Transition},
        deliveries::DeliveryStatus,
        delivery, operational, ordering, record,
    },
};

use super::{Attempts, Kind, Next};
use crate::{ORDERING_RETRY, context::Ctx};

/// Sends the delivery once and records the attempt; a success hands its endpoint slot to the
/// endpoint's next due delivery, which this run's slot runs next ([`Next`]), if `may_hand_on`.
pub async fn run(ctx: &Ctx, job: &Lease, may_hand_on: bool) -> switchyard_shared::Result<Next> {
    let target = ctx.batch.targets.call(job.subject_id).await?;
    let Some(target) = target.filter(|t| t.delivery_status == DeliveryStatus::Pending) else {
        // Already finished (a duplicate run) or gone: nothing to send.
        let reason = "delivery is no longer pending";
        return end(ctx, job, None, reason).await;
    };
    let trace = target.traceparent.as_deref().and_then(TraceParent::parse);
    let trace = trace.unwrap_or_else(|| TraceParent::of_message(target.message_id));
    tracing::Span::current().record("trace_id", tracing::field::display(trace.trace_id_hex()));
    if !target.endpoint_active {
        let close = Some((target.delivery_id, DeliveryStatus::Cancelled));
        return end(ctx, job, close, "endpoint deleted or disabled").await;
    }
    if target.payload.is_none() {
        let close = Some((target.delivery_id, DeliveryStatus::Cancelled));
        let reason = "the message payload has passed its retention period";
        return end(ctx, job, close, reason).await;
    }
    if let Some(until) = breaker::parked_until(&target, job) {
        if !breaker::park(&ctx.pool, job, &target, until).await? {
            // Its group is gone (the endpoint was deleted after the target was read): look
            // again shortly, when the run finds the endpoint gone, instead of after the
            // cool-down. (No match at all means the lease was lost: this changes nothing.)
            let mut conn = ctx.pool.acquire().await?;
            jobs::defer(&mut conn, job, None, ORDERING_RETRY).await?;
            return Ok(None);
        }
        metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => "circuit_open",
            "status_class" => m::status_class(None))
        .increment(1);
        return Ok(None);
    }
    if let Some(until) = target.waiting_for {
        // An earlier event of the same order to this endpoint (or, FIFO, any earlier message
        // to it) is still pending: it goes first, in this slot if it is due.
        metrics::counter!(m::JOBS_DEFERRED, "queue" => "webhook_deliveries").increment(1);
        let first =
            ordering::run_first_instead(&ctx.pool, job, &target, until, ORDERING_RETRY, ctx.lease)
                .await?;
        return Ok(first);
    }
    let credentials = target.sealed.open(&ctx.keyring, target.db_now)?;
    let timeout = target.timeout(&ctx.policy);
    let result = ctx.transport.send(&target, &credentials, timeout).await;
    let schedule = target.schedule(&ctx.policy);
    let decision = delivery::decide(&result, job.attempt, &schedule, &ctx.policy);
    let attempt = Arc::new(record::AttemptRecord {
        job: job.clone(),
        decision,
        target,
        result,
        may_hand_on,
    });
    let recorded = ctx.batch.records.call(attempt.clone()).await?;
    if let Err(e) = after_recorded(ctx, job, &attempt, &recorded).await {
        // The outcome is recorded, so there is nothing to retry: only the follow-ups failed.
        metrics::counter!(m::JOB_ERRORS, "queue" => WEBHOOK_DELIVERIES).increment(1);
        tracing::warn!(job_id = %job.id, error = %e, "attempt recorded; its follow-ups failed");
    }
    if recorded.next.is_some() {
        metrics::counter!(m::SLOT_HANDOFFS).increment(1);
    }
    Ok(recorded.next)
}

/// What follows a recorded attempt: metrics, the breaker, notices of an endpoint's disabling
/// or recovery, and a dispatch pass if the freed slot went to no one.
async fn after_recorded(
    ctx: &Ctx,
    job: &Lease,
    attempt: &record::AttemptRecord,
    recorded: &record::Recorded,
) -> switchyard_shared::Result<()> {
    let (target, result) = (&attempt.target, &attempt.result);
    let label = if result.succeeded() {
        "succeeded"
    } else {
        result.error_class.unwrap_or("failed")
    };
    metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => label,
        "status_class" => m::status_class(result.status_code))
    .increment(1);
    metrics::histogram!(m::WEBHOOK_ATTEMPT_DURATION).record(result.duration.as_secs_f64());
    if !recorded.recorded {
        // Another run holds the job now: its outcome, not ours, moves the delivery, the
        // endpoint's health and its breaker.
        tracing::warn!(job_id = %job.id, "lease lost during delivery; attempt logged, nothing else changed");
        return Ok(());
    }
    let transition = if result.succeeded() {
        breaker::on_success(&ctx.pool, target).await?
    } else {
        breaker::on_failure(&ctx.pool, &ctx.breaker, target, job).await?
    };
    match transition {
        Transition::Opened { until } => {
            tracing::warn!(endpoint_id = %target.endpoint_id, %until, "circuit breaker opened");
            metrics::counter!(m::BREAKER_TRANSITIONS, "to" => "open").increment(1);
        }
        Transition::Closed => {
            tracing::info!(endpoint_id = %target.endpoint_id, "circuit breaker closed");
            metrics::counter!(m::BREAKER_TRANSITIONS, "to" => "closed").increment(1);
            operational(ctx, target, "endpoint.recovered", json!({})).await?;
        }
        Transition::None => {}
    }
    if let Some(reason) = &recorded.disabled {
        tracing::warn!(endpoint_id = %target.endpoint_id, reason, "endpoint disabled");
        metrics::counter!(m::ENDPOINTS_DISABLED, "reason" => reason.clone()).increment(1);
        let data = json!({ "reason": reason, "last_error": result.error_message });
        operational(ctx, target, "endpoint.disabled", data).await?;
    }
    if recorded.group_waiting && recorded.next.is_none() {
        // Deliveries to this endpoint wait for a slot: this one just freed.
        ctx.dispatcher.wake();
    }
    Ok(())
}

/// A dead delivery job fails its delivery, so nothing waits on it (FIFO, per-order ordering)
/// and it can be retried by hand.
pub async fn on_dead(
    conn: &mut sqlx::PgConnection,
    job: &ClaimedJob,
) -> switchyard_shared::Result<()> {
    record::fail_delivery(conn, job.subject_id).await
}

/// Tells the tenant's operational endpoints about this endpoint. Sent after the state change
/// committed: a crash in between loses the notice, not the state.
async fn operational(
    ctx: &Ctx,
    target: &delivery::Target,
    event_type: &str,
    data: serde_json::Value,
) -> switchyard_shared::Result<()> {
    if let Some(task) = operational::emit(&ctx.pool, target.endpoint_id, event_type, data).await? {
        ctx.fast_path.push(EVENT_FAN_OUT, vec![task]);
    }
    Ok(())
}

/// Cancels the job without an attempt, closing its delivery only if the job's transition matched.
async fn end(
    ctx: &Ctx,
    job: &Lease,
    close: Option<(uuid::Uuid, DeliveryStatus)>,
    reason: &str,
) -> switchyard_shared::Result<Next> {
    let mut conn = ctx.pool.acquire().await?;
    let outcome = Outcome::Cancelled {
        reason: reason.to_owned(),
    };
    record::end_without_attempt(&mut conn, job, &outcome, close).await?;
    Ok(None)
}

/// The queue's entry in the registry ([`super::KINDS`]).
pub const KIND: Kind = Kind {
    queue: WEBHOOK_DELIVERIES,
    attempts: Attempts::PerJob,
    keep_finished: None,
    concurrency: |cfg| cfg.delivery_concurrency,
    run: |ctx, job, may_hand_on| Box::pin(run(ctx, job, may_hand_on)),
    on_dead: |conn, job, _| super::closes(on_dead(conn, job)),
};
