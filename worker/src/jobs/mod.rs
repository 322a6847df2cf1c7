//! Queue consumers. Every task goes through [`handle`]: claim the job in the ledger (a stale
//! duplicate is acknowledged and dropped), run the kind's handler, which records the outcome in
//! the same statement or transaction as its results.
//!
//! Error policy: a handler records business failures itself (a partner answering 500 is an
//! outcome, not an error). An `Err` means the run could not finish (Postgres unreachable, a
//! secret that cannot be opened, a poison event): [`handle`] records it as a retry after an
//! exponential backoff, and once the job's attempts are used up as `dead`, closing the kind's
//! domain row in the same transaction ([`on_dead`]). If even that cannot be written, the lease
//! expires and the reconciler hands the job out again; that run counts as an attempt too.

mod event_fan_out;
mod inbound_events;
pub mod integration_health;
pub mod janitor;
mod keyring_rotation;
mod queue_probes;
mod sync_runs;
mod webhook_deliveries;
mod webhook_replays;

use std::{sync::Arc, time::Duration};

use apalis::prelude::{BoxDynError, Data};
use futures::future::BoxFuture;
use switchyard_shared::{
    config::WorkerConfig,
    dispatch,
    jobs::{self, ClaimedJob, Lease, Outcome},
    queue::{JobTask, WEBHOOK_DELIVERIES},
    telemetry::metrics as m,
};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::context::Ctx;

/// A job kind: its queue, how many runs it gets, how long its finished jobs stay in the ledger,
/// how many of its jobs one worker runs at once, what a run does, and what its death does to
/// the row it owned. Declared next to its handler, one file per kind.
pub struct Kind {
    pub queue: &'static str,
    pub attempts: Attempts,
    /// Finished (succeeded, cancelled) slot jobs of this scheduled queue leave the ledger after
    /// this long instead of `SWITCHYARD_JOB_RETENTION`: for kinds whose runs are frequent and
    /// whose history says nothing the domain rows do not (one janitor run per slot).
    pub keep_finished: Option<Duration>,
    pub concurrency: fn(&WorkerConfig) -> usize,
    /// Runs the job; the `bool` says whether the run may hand its slot on ([`Next`]).
    pub run:
        for<'a> fn(&'a Arc<Ctx>, &'a Lease, bool) -> BoxFuture<'a, switchyard_shared::Result<Next>>,
    /// Closes the row the dead job owned, in the death's transaction; returns the work that
    /// created, pushed after the commit (as a run pushes its own).
    pub on_dead: for<'a> fn(
        &'a mut sqlx::PgConnection,
        &'a ClaimedJob,
        &'a str,
    ) -> BoxFuture<'a, switchyard_shared::Result<Created>>,
}

/// Jobs written in a transaction, by queue, to push to Redis once it commits.
pub type Created = Vec<(&'static str, Vec<JobTask>)>;

/// An `on_dead` that creates no work: `closes(f)` runs `f`.
fn closes<'a>(
    f: impl std::future::Future<Output = switchyard_shared::Result<()>> + Send + 'a,
) -> BoxFuture<'a, switchyard_shared::Result<Created>> {
    Box::pin(async move { f.await.map(|()| Created::new()) })
}

/// What a run hands on: a job this process now holds the lease of, to run next in the same
/// slot (a delivery's success passes its endpoint slot to the endpoint's next due delivery,
/// `record::Handoff`).
pub type Next = Option<Lease>;

/// Most jobs one slot runs in a row by hand-off. Then the endpoint's slot goes back to the
/// dispatcher, which serves the groups waiting longest first, and the process's slot to
/// whatever waits in Redis: a few endpoints with long backlogs cannot keep every slot.
pub const MAX_HANDOFFS: u32 = 32;

/// A handler whose runs hand nothing on.
async fn alone(
    run: impl Future<Output = switchyard_shared::Result<()>>,
) -> switchyard_shared::Result<Next> {
    run.await.map(|()| None)
}

/// How many runs a job of a kind gets before it is dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempts {
    /// The same cap for every job of the kind (its producers write it into the ledger).
    Fixed(i32),
    /// Each job carries its own cap (a delivery's comes from its endpoint's retry schedule).
    PerJob,
}

impl Attempts {
    fn cap(self, job: &ClaimedJob) -> i32 {
        match self {
            Attempts::Fixed(n) => n,
            Attempts::PerJob => job.max_attempts,
        }
    }
}

/// The registry: every job kind the worker runs, in the order the dispatcher serves them. The
/// consumers (`crate::run`), [`QUEUES`] (and from it the dispatcher's passes, the janitor's
/// Redis sweep and the queue stats), dispatching a task to its handler, the attempt caps, the
/// ledger's per-queue retention and a dead job's clean-up all come from here: adding a queue
/// is its file and its line here (docs/architecture.md §3).
pub const KINDS: &[Kind] = &[
    event_fan_out::KIND,
    webhook_deliveries::KIND,
    webhook_replays::KIND,
    inbound_events::KIND,
    janitor::KIND,
    integration_health::KIND,
    keyring_rotation::KIND,
    sync_runs::KIND,
    queue_probes::KIND,
];

/// Every queue's name, derived from [`KINDS`].
pub const QUEUES: [&str; KINDS.len()] = {
    let mut names = [""; KINDS.len()];
    let mut i = 0;
    while i < KINDS.len() {
        names[i] = KINDS[i].queue;
        i += 1;
    }
    names
};

/// The queues whose finished jobs leave the ledger sooner than the default, and when.
pub fn short_retentions() -> Vec<(&'static str, Duration)> {
    KINDS
        .iter()
        .filter_map(|k| k.keep_finished.map(|d| (k.queue, d)))
        .collect()
}

fn kind(queue: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.queue == queue)
}

/// apalis entry point for every queue. Returns an error only when the claim itself could not
/// be made (Postgres unreachable): apalis then retries the task shortly.
pub async fn handle(task: JobTask, ctx: Data<Arc<Ctx>>) -> Result<(), BoxDynError> {
    run_task((*ctx).clone(), task).await
}

/// Up to `n` of this process's run-here slots ([`RunHere`](crate::context::RunHere)), as many
/// as are free now: one per job the caller may have born running under this process's lease.
pub fn reserve_run_here(ctx: &Ctx, n: usize) -> Vec<OwnedSemaphorePermit> {
    std::iter::from_fn(|| ctx.run_here.permits.clone().try_acquire_owned().ok())
        .take(n)
        .collect()
}

/// Runs `jobs` (just committed `running` under this process's lease, [`Lease::born`]) here, each
/// in one of `slots` (reserved by [`reserve_run_here`]; those left over are freed).
pub fn run_here(ctx: &Arc<Ctx>, jobs: Vec<Lease>, slots: Vec<OwnedSemaphorePermit>) {
    for (job, slot) in jobs.into_iter().zip(slots) {
        metrics::counter!(m::TASKS_RUN_HERE).increment(1);
        let run_ctx = ctx.clone();
        ctx.run_here.runs.spawn(async move {
            let _slot = slot;
            run_claimed(run_ctx, job).await;
        });
    }
}

/// This process's run-here slots as the dispatcher sees them ([`dispatch::Local`]): deliveries
/// it admits while this process has room are born running here, like a fan-out's.
pub struct LocalDeliveries(pub Arc<Ctx>);

impl dispatch::Local for LocalDeliveries {
    fn queue(&self) -> &'static str {
        WEBHOOK_DELIVERIES
    }

    fn lease(&self) -> (&str, Duration) {
        (&self.0.owner, self.0.lease)
    }

    fn free(&self) -> usize {
        self.0.run_here.permits.available_permits()
    }

    fn reserve(&self, n: usize) -> Vec<OwnedSemaphorePermit> {
        reserve_run_here(&self.0, n)
    }

    fn run(&self, jobs: Vec<Lease>, slots: Vec<OwnedSemaphorePermit>) {
        run_here(&self.0, jobs, slots);
    }
}

/// Claims the job of `task`, runs its kind's handler and records what came of it.
async fn run_task(ctx: Arc<Ctx>, task: JobTask) -> Result<(), BoxDynError> {
    let Some(job) = ctx.batch.claims.call(task).await? else {
        metrics::counter!(m::STALE_TASKS).increment(1);
        return Ok(());
    };
    run_claimed(ctx, job).await;
    Ok(())
}

/// Runs a job this process holds the lease of through its kind's handler and records what came
/// of it; then, in the same slot, whatever job the run handed on ([`Next`]), and so on.
async fn run_claimed(ctx: Arc<Ctx>, job: Lease) {
    let (mut next, mut handed) = (Some(job), 0);
    while let Some(job) = next {
        next = run_one(&ctx, job, handed < MAX_HANDOFFS).await;
        handed += 1;
    }
}

async fn run_one(ctx: &Arc<Ctx>, job: Lease, may_hand_on: bool) -> Next {
    let _held = ctx.hold(&job);
    let started = std::time::Instant::now();
    let waited = job.run_at.map_or(0.0, |due| {
        (chrono::Utc::now() - due)
            .num_microseconds()
            .unwrap_or(0)
            .max(0) as f64
            / 1e6
    });
    metrics::histogram!(m::JOB_START_DELAY, "queue" => job.queue.clone()).record(waited);
    let Some(k) = kind(&job.queue) else {
        let error = format!("no job kind runs queue `{}`", job.queue);
        tracing::error!(job_id = %job.id, %error, "job is dead");
        if let Err(e) = bury(ctx, &job, error).await {
            tracing::warn!(job_id = %job.id, error = %e,
                "cannot record the death; the job runs again when its lease expires");
        }
        return None;
    };
    let cap = k.attempts.cap(&job);
    let result = if job.attempt > cap {
        // Earlier runs died without an outcome (SIGKILLs, handler errors): stop here.
        let error = format!(
            "gave up after {cap} attempts: {}",
            job.last_error.as_deref().unwrap_or("runs never finished")
        );
        bury(ctx, &job, error).await.map(|()| None)
    } else {
        // Every log line of the run carries the job, its tenant and (deliveries) its trace.
        let span = tracing::info_span!("job", job_id = %job.id, queue = %job.queue,
            tenant_id = %job.tenant_id, attempt = job.attempt, trace_id = tracing::field::Empty);
        (k.run)(ctx, &job, may_hand_on).instrument(span).await
    };
    metrics::histogram!(m::JOB_DURATION, "queue" => job.queue.clone())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(next) => next,
        Err(e) => {
            metrics::counter!(m::JOB_ERRORS, "queue" => job.queue.clone()).increment(1);
            tracing::warn!(job_id = %job.id, queue = %job.queue, attempt = job.attempt,
                error = %e, "job failed before recording an outcome");
            if let Err(e2) = fail(ctx, &job, cap, e.to_string()).await {
                tracing::warn!(job_id = %job.id, error = %e2,
                    "cannot record the failure; the job runs again when its lease expires");
            }
            None
        }
    }
}

/// Records a run that ended in an error: a retry after a backoff, or, on the last attempt,
/// the job's death.
async fn fail(ctx: &Ctx, job: &Lease, cap: i32, error: String) -> switchyard_shared::Result<()> {
    if job.attempt >= cap {
        return bury(
            ctx,
            job,
            format!("gave up after {} attempts: {error}", job.attempt),
        )
        .await;
    }
    let after = backoff(job.attempt, ctx.retry_delay, ctx.retry_max_delay);
    let mut conn = ctx.pool.acquire().await?;
    jobs::finish(&mut conn, job, &Outcome::Retry { after, error }).await?;
    Ok(())
}

/// Ends a job for good and closes the domain row it works on, in one transaction.
async fn bury(ctx: &Ctx, job: &Lease, error: String) -> switchyard_shared::Result<()> {
    let mut tx = ctx.pool.begin().await?;
    let outcome = Outcome::Dead {
        error: error.clone(),
    };
    let mut created = Created::new();
    if jobs::finish(&mut tx, job, &outcome).await? {
        created = on_dead(&mut tx, job, &error).await?;
        metrics::counter!(m::JOBS_DEAD, "queue" => job.queue.clone()).increment(1);
        tracing::error!(job_id = %job.id, queue = %job.queue, %error, "job is dead");
    }
    tx.commit().await?;
    for (queue, tasks) in created.into_iter().filter(|(_, t)| !t.is_empty()) {
        ctx.fast_path.push(queue, tasks);
    }
    Ok(())
}

/// What a dead job does to the row it owned, so nothing waits for it forever.
async fn on_dead(
    conn: &mut sqlx::PgConnection,
    job: &ClaimedJob,
    error: &str,
) -> switchyard_shared::Result<Created> {
    match kind(&job.queue) {
        Some(k) => (k.on_dead)(conn, job, error).await,
        None => Ok(Created::new()),
    }
}

/// `base · 2^(attempt-1)`, at most `max`, ±20 %.
fn backoff(attempt: i32, base: Duration, max: Duration) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    base.saturating_mul(1 << exp)
        .min(max)
        .mul_f64(rand::random_range(0.8..=1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue name is registered once, and the derived list follows the registry.
    #[test]
    fn every_queue_is_registered_once() {
        let mut names = QUEUES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        assert!(QUEUES.iter().zip(KINDS).all(|(q, k)| *q == k.queue));
        assert_eq!(
            short_retentions(),
            vec![
                (janitor::KIND.queue, janitor::KEEP_FINISHED),
                (
                    integration_health::KIND.queue,
                    integration_health::KEEP_FINISHED
                ),
                (queue_probes::KIND.queue, queue_probes::KEEP_FINISHED),
            ]
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(300));
        let ms = |a| backoff(a, base, max).as_millis();
        assert!((800..=1200).contains(&ms(1)));
        assert!((3200..=4800).contains(&ms(3)));
        assert!((240_000..=360_000).contains(&ms(30)));
        assert!((240_000..=360_000).contains(&ms(i32::MAX)));
    }
}
