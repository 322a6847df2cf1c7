//! Moves work from the ledger into Redis and repairs what goes missing (docs/architecture.md §2).
//!
//! * New jobs are committed `queued` (see `jobs::NewJob`) and pushed right after the commit by
//!   the [`FastPath`]. Due `pending` jobs (retries, and whatever the fast path could not push)
//!   are moved by [`Dispatcher::dispatch_due`], the batched sweep every worker replica runs: it
//!   commits the rows as `queued` with a bumped `dispatch_seq`, then pushes. The push always
//!   comes after the commit: a worker's claim (`… WHERE dispatch_seq = $2 AND state =
//!   'queued'`) sees only committed rows and would drop a task that overtook its commit as
//!   stale. Whatever Redis refuses (high-water mark) or fails to take goes straight back to
//!   `pending`.
//! * Jobs outside any dispatch group are taken oldest first per queue. Jobs in a group (a
//!   webhook endpoint) are taken group by group ([`groups`]) under each group's concurrency
//!   cap, rate limit and circuit breaker: a pass costs what it dispatches plus one index probe
//!   per group with pending work, never a walk over the backlog of a group that must wait.
//!   Of the admitted jobs, as many as the pass's own process has free slots for are committed
//!   `running` under its lease and run there instead of pushed ([`Local`]).
//! * [`Dispatcher::reconcile`] repairs leases and lost tasks ([`reconcile`]).

mod fast_path;
mod groups;
pub mod pauses;
mod reconcile;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use uuid::Uuid;

pub use self::{
    fast_path::FastPath,
    groups::{BreakerState, DUE_WORK_SQL, PROBE_WINDOW},
    reconcile::Repairs,
};
use crate::telemetry::metrics as m;
use crate::{
    error::Result,
    jobs::Lease,
    queue::{JobTask, Queues},
};

/// Largest number of jobs moved in one transaction.
const BATCH: i64 = 500;
/// A queued job older than this goes back to pending even if Redis still claims to hold it.
const QUEUED_HARD_LIMIT: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct Dispatcher {
    pool: PgPool,
    /// Where a pass's "what is due" statement runs: a pool that plans it once, with sequential
    /// scans, sorts and JIT ruled out (`db::connect_for_batches`, set by the worker with
    /// [`planned_on`](Self::planned_on)), so statistics that lag a fast-growing backlog cannot
    /// turn its probes into scans (docs/architecture.md §8).
    planned: PgPool,
    queues: Queues,
    /// Concurrency cap of groups without their own.
    group_concurrency: i64,
    wake: Arc<Notify>,
}

#[derive(sqlx::FromRow)]
struct Picked {
    id: Uuid,
    queue: String,
    dispatch_seq: i64,
}

/// A worker process's own room to run what its dispatcher admits (docs/architecture.md §2,
/// rule 2): a pass births up to that many admitted jobs of [`queue`](Self::queue) `running`
/// under the process's lease and hands them over after its commit, skipping Redis and the
/// claim. If the process dies, their leases expire and the reconciler hands them out again.
pub trait Local: Send + Sync {
    fn queue(&self) -> &'static str;
    /// The lease owner and length the jobs are born under.
    fn lease(&self) -> (&str, Duration);
    /// Run slots free now: what a pass may plan for.
    fn free(&self) -> usize;
    /// Reserves up to `n` run slots, as many as are free now.
    fn reserve(&self, n: usize) -> Vec<OwnedSemaphorePermit>;
    /// Runs `jobs` (committed `running` under [`lease`](Self::lease)), each in one of `slots`;
    /// slots left over are freed.
    fn run(&self, jobs: Vec<Lease>, slots: Vec<OwnedSemaphorePermit>);
}

impl Dispatcher {
    pub fn new(pool: PgPool, queues: Queues, group_concurrency: u32) -> Self {
        Dispatcher {
            planned: pool.clone(),
            pool,
            queues,
            group_concurrency: i64::from(group_concurrency.max(1)),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The same dispatcher, its "what is due" statement on `pool` (see the field `planned`).
    pub fn planned_on(self, pool: PgPool) -> Self {
        Dispatcher {
            planned: pool,
            ..self
        }
    }

    /// Asks for a dispatch pass now (new work, or a slot freed); passes coalesce.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`wake`](Self::wake) was called since the last time.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Pushes due pending jobs until each queue reaches its high-water mark or runs out of due
    /// work: first the jobs outside groups, queue by queue, then the groups' jobs, of which
    /// those `local` has room for run in its process instead ([`Local`]). Returns how many
    /// were pushed or handed over.
    pub async fn dispatch_due(&self, local: Option<&dyn Local>) -> Result<usize> {
        let mut total = 0;
        let mut room: BTreeMap<&'static str, i64> = BTreeMap::new();
        let mut due = self.due_work().await?;
        for &queue in self.queues.names() {
            let mut left = self.room(queue).await?;
            while left > 0 && due.queues.iter().any(|q| q == queue) {
                let limit = left.min(BATCH);
                let picked = self.pick_ungrouped(queue, limit).await?;
                let pushed = self.push_picked(&picked).await?;
                total += pushed;
                left -= pushed as i64;
                if (picked.len() as i64) < limit || pushed < picked.len() {
                    break;
                }
            }
            room.insert(queue, left);
        }
        loop {
            if room.values().all(|r| *r <= 0) {
                break;
            }
            let (picked, here) = self.pick_grouped(&due.groups, &room, local).await?;
            if picked.is_empty() && here == 0 {
                break;
            }
            let pushed = self.push_picked(&picked).await?;
            total += pushed + here;
            for p in &picked {
                if let Some(r) = room.get_mut(p.queue.as_str()) {
                    *r -= 1;
                }
            }
            if pushed < picked.len() || ((picked.len() + here) as i64) < BATCH {
                break;
            }
            due = self.due_work().await?;
        }
        Ok(total)
    }

    /// Ready tasks `queue` may still take in Redis.
    async fn room(&self, queue: &str) -> Result<i64> {
        let depth = self.queues.depth(queue).await?;
        Ok(i64::from(self.queues.high_water_mark()) - depth as i64)
    }

    /// One statement: up to `limit` due jobs of `queue` outside any group, oldest first,
    /// committed as `queued` with a bumped `dispatch_seq`.
    async fn pick_ungrouped(&self, queue: &str, limit: i64) -> Result<Vec<Picked>> {
        Ok(sqlx::query_as::<_, Picked>(
            "UPDATE jobs SET state = 'queued', dispatch_seq = dispatch_seq + 1,
                    queued_at = now(), updated_at = now()
              WHERE id IN (
                SELECT id FROM jobs
                 WHERE queue = $1 AND state = 'pending' AND group_key IS NULL
                   AND run_at <= now()
                 ORDER BY run_at LIMIT $2
                 FOR UPDATE SKIP LOCKED)
          RETURNING id, queue, dispatch_seq",
        )
        .bind(queue)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Pushes picked jobs queue by queue; returns how many went in.
    async fn push_picked(&self, picked: &[Picked]) -> Result<usize> {
        let mut by_queue: BTreeMap<&str, Vec<JobTask>> = BTreeMap::new();
        for p in picked {
            by_queue.entry(&p.queue).or_default().push(JobTask {
                job: p.id,
                seq: p.dispatch_seq,
            });
        }
        let mut pushed = 0;
        for (queue, tasks) in by_queue {
            pushed += self.push(queue, &tasks).await?;
        }
        Ok(pushed)
    }

    /// Pushes tasks of jobs already committed as `queued`; whatever Redis refused (high-water
    /// mark) or could not take (error) goes back to `pending` at once. Returns how many went in.
    pub async fn push(&self, queue: &str, tasks: &[JobTask]) -> Result<usize> {
        match self.queues.push(queue, tasks).await {
            Ok(accepted) => {
                metrics::counter!(m::DISPATCHED, "queue" => queue.to_owned())
                    .increment(accepted as u64);
                self.revert(&tasks[accepted..]).await?;
                Ok(accepted)
            }
            Err(e) => {
                self.revert(tasks).await?;
                Err(e.into())
            }
        }
    }

    /// Hands queued jobs that never reached Redis back to the dispatcher.
    pub async fn revert(&self, tasks: &[JobTask]) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE jobs j SET state = 'pending', queued_at = NULL, updated_at = now()
               FROM UNNEST($1::uuid[], $2::bigint[]) AS t(id, seq)
              WHERE j.id = t.id AND j.dispatch_seq = t.seq AND j.state = 'queued'",
        )
        .bind(tasks.iter().map(|t| t.job).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.seq).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
