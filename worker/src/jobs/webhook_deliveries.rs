//! `webhook_deliveries`: one attempt of one message to one endpoint.

use chrono::Utc;
use serde_json::json;
use switchyard_shared::{
    jobs::{self, ClaimedJob, Outcome},
    webhooks::{
        breaker::{self, Transition},
        delivery, operational,
    },
};

use crate::{ORDERING_RETRY, context::Ctx};

pub async fn run(ctx: &Ctx, job: &ClaimedJob) -> switchyard_shared::Result<()> {
    let target = delivery::load_target(&ctx.pool, job.subject_id).await?;
    let Some(target) = target.filter(|t| t.delivery_status == "pending") else {
        // Already finished (a duplicate run) or gone: nothing to send.
        return finish_only(
            ctx,
            job,
            None,
            Outcome::Cancelled {
                reason: "delivery is no longer pending".into(),
            },
        )
        .await;
    };
    if !target.endpoint_active {
        return finish_only(
            ctx,
            job,
            Some((target.delivery_id, "cancelled")),
            Outcome::Cancelled {
                reason: "endpoint deleted or disabled".into(),
            },
        )
        .await;
    }
    if target.payload.is_none() {
        return finish_only(
            ctx,
            job,
            Some((target.delivery_id, "cancelled")),
            Outcome::Cancelled {
                reason: "the message payload has passed its retention period".into(),
            },
        )
        .await;
    }
    if let Some(until) = breaker::parked_until(&target, job, Utc::now()) {
        breaker::park(&ctx.pool, job, &ctx.owner, &target, until).await?;
        metrics::counter!("switchyard_webhook_attempts_total", "outcome" => "circuit_open")
            .increment(1);
        return Ok(());
    }
    if let Some(until) = target.waiting_for {
        // An earlier event of the same order to this endpoint is still pending: it goes first.
        let at = until.max(Utc::now()) + ORDERING_RETRY;
        jobs::defer(&ctx.pool, job, &ctx.owner, at).await?;
        metrics::counter!("switchyard_jobs_deferred_total", "queue" => "webhook_deliveries")
            .increment(1);
        return Ok(());
    }
    if job.attempt > job.max_attempts {
        // Only reachable when runs died without recording an attempt (e.g. repeated SIGKILLs).
        return finish_only(
            ctx,
            job,
            Some((target.delivery_id, "failed")),
            Outcome::Dead {
                error: "attempts exhausted by runs that never finished".into(),
            },
        )
        .await;
    }
    let credentials = target.sealed.open(&ctx.keyring, Utc::now())?;
    let result = delivery::send(
        &ctx.http,
        &target,
        &credentials,
        &ctx.egress,
        target.timeout(&ctx.policy),
    )
    .await;
    let schedule = target.schedule(&ctx.policy);
    let decision = delivery::decide(&result, job.attempt, &schedule, &ctx.policy, Utc::now());
    let recorded = delivery::record(
        &ctx.pool,
        job,
        &ctx.owner,
        &decision,
        &target,
        &result,
        &ctx.health,
    )
    .await?;
    let transition = if result.succeeded() {
        breaker::on_success(&ctx.pool, &target).await?
    } else {
        breaker::on_failure(&ctx.pool, &ctx.breaker, &target, job).await?
    };
    match transition {
        Transition::Opened { until } => {
            tracing::warn!(endpoint_id = %target.endpoint_id, %until, "circuit breaker opened");
            metrics::counter!("switchyard_breaker_transitions_total", "to" => "open").increment(1);
        }
        Transition::Closed => {
            tracing::info!(endpoint_id = %target.endpoint_id, "circuit breaker closed");
            metrics::counter!("switchyard_breaker_transitions_total", "to" => "closed")
                .increment(1);
            operational(ctx, &target, "endpoint.recovered", json!({})).await?;
        }
        Transition::None => {}
    }
    if let Some(reason) = &recorded.disabled {
        tracing::warn!(endpoint_id = %target.endpoint_id, reason, "endpoint disabled");
        metrics::counter!("switchyard_endpoints_disabled_total", "reason" => reason.clone())
            .increment(1);
        let data = json!({ "reason": reason, "last_error": result.error_message });
        operational(ctx, &target, "endpoint.disabled", data).await?;
    }
    if recorded.group_waiting {
        // Deliveries to this endpoint wait for a slot: this one just freed.
        ctx.dispatcher.wake();
    }
    if !recorded.recorded {
        tracing::warn!(job_id = %job.id, "lease lost during delivery; attempt logged, outcome left to the new holder");
    }
    let label = if result.succeeded() {
        "succeeded"
    } else {
        result.error_class.unwrap_or("failed")
    };
    metrics::counter!("switchyard_webhook_attempts_total", "outcome" => label).increment(1);
    metrics::histogram!("switchyard_webhook_attempt_seconds").record(result.duration.as_secs_f64());
    Ok(())
}

/// Tells the tenant's operational endpoints about this endpoint. Sent after the state change
/// committed: a crash in between loses the notice, not the state.
async fn operational(
    ctx: &Ctx,
    target: &delivery::Target,
    event_type: &str,
    data: serde_json::Value,
) -> switchyard_shared::Result<()> {
    let created = operational::emit(
        &ctx.pool,
        target.endpoint_id,
        event_type,
        data,
        ctx.policy.schedule.max_attempts(),
    )
    .await?;
    if created > 0 {
        ctx.dispatcher.wake();
    }
    Ok(())
}

async fn finish_only(
    ctx: &Ctx,
    job: &ClaimedJob,
    close: Option<(uuid::Uuid, &str)>,
    outcome: Outcome,
) -> switchyard_shared::Result<()> {
    let mut tx = ctx.pool.begin().await?;
    if let Some((delivery_id, status)) = close {
        delivery::close(&mut tx, delivery_id, status).await?;
    }
    jobs::finish(&mut tx, job, &ctx.owner, &outcome).await?;
    tx.commit().await?;
    Ok(())
}
