//! `integration_health`: one run per scheduled slot, cluster-wide (shared::schedule): checks
//! the integrations whose `config.health_interval` is due, a few at a time, keeping their
//! `connection_status` current and telling operational endpoints when one breaks or recovers.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use switchyard_shared::{
    audit::{Actor, ActorKind},
    integrations::{health, vault::Purpose},
    jobs::{self, Lease, Outcome},
    queue,
};

use super::{Attempts, Kind};
use crate::context::Ctx;

pub const MAX_ATTEMPTS: i32 = 3;
/// One run per slot; a day of them shows the checks run, the integrations say the rest.
pub const KEEP_FINISHED: Duration = Duration::from_secs(86_400);
/// Integrations checked per run, and at once: a slow system holds one of the few slots, not
/// the run (each check gives up after `connection::CHECK_TIMEOUT`).
const PER_RUN: i64 = 200;
const AT_ONCE: usize = 8;

pub async fn run(ctx: &Arc<Ctx>, job: &Lease) -> switchyard_shared::Result<()> {
    let due = health::claim_due(&ctx.pool, PER_RUN).await?;
    let actor = Actor {
        kind: ActorKind::Job(job.id),
        request_id: None,
        ip: None,
    };
    let checks = futures::stream::iter(due)
        .map(|(id, scope)| {
            let actor = &actor;
            async move {
                let checked = health::check_now(
                    &ctx.pool,
                    &ctx.keyring,
                    &ctx.checker,
                    scope,
                    id,
                    actor,
                    Purpose::HealthCheck,
                )
                .await;
                (id, checked)
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    let mut notices = Vec::new();
    for (id, checked) in checks {
        match checked {
            Ok((_, Some(task))) => notices.push(task),
            Ok(_) => {}
            // Deleted meanwhile, or Postgres failed: the next slot tries again.
            Err(error) => tracing::warn!(integration_id = %id, %error, "health check not recorded"),
        }
    }
    if !notices.is_empty() {
        ctx.fast_path.push(queue::EVENT_FAN_OUT, notices);
    }
    let mut conn = ctx.pool.acquire().await?;
    jobs::finish(&mut conn, job, &Outcome::Succeeded).await?;
    Ok(())
}

/// The queue's entry in the registry ([`super::KINDS`]): one run at a time per worker.
pub const KIND: Kind = Kind {
    queue: queue::INTEGRATION_HEALTH,
    attempts: Attempts::Fixed(MAX_ATTEMPTS),
    keep_finished: Some(KEEP_FINISHED),
    concurrency: |_| 1,
    run: |ctx, job, _| Box::pin(super::alone(run(ctx, job))),
    on_dead: |_, _, _| Box::pin(async { Ok(super::Created::new()) }),
};
