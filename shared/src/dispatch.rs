//! Moves work from the ledger into Redis and repairs what goes missing (DESIGN §2).
//!
//! * `dispatch_ids` is the fast path right after a commit; `dispatch_due` is the batched sweep
//!   of due `pending` jobs every worker replica runs. Both first commit the rows as `queued`
//!   with a bumped `dispatch_seq`, then push. The push must come after the commit: a worker's
//!   claim (`… WHERE dispatch_seq = $2 AND state = 'queued'`) is evaluated against the last
//!   committed row and would drop a task that overtook its commit as stale. If the push fails
//!   or the high-water mark refuses it, the rows go straight back to `pending`; if the process
//!   dies in between, the reconciler finds them missing from Redis.
//! * `reconcile` returns to `pending` the running jobs whose lease expired (SIGKILLed worker)
//!   and the queued jobs whose task Redis no longer has (flush, restart without persistence).

use std::{collections::BTreeMap, time::Duration};

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    error::Result,
    queue::{ALL_QUEUES, JobTask, Queues},
};

/// Largest number of jobs moved in one transaction.
const BATCH: i64 = 500;
/// A queued job older than this goes back to pending even if Redis still claims to hold it.
const QUEUED_HARD_LIMIT: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct Dispatcher {
    pool: PgPool,
    queues: Queues,
}

#[derive(sqlx::FromRow)]
struct Picked {
    id: Uuid,
    queue: String,
    dispatch_seq: i64,
}

/// What one reconciler pass repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repairs {
    pub expired_leases: u64,
    pub lost_tasks: u64,
}

impl Dispatcher {
    pub fn new(pool: PgPool, queues: Queues) -> Self {
        Dispatcher { pool, queues }
    }

    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Pushes these jobs now if they are still pending and due. Returns how many were pushed.
    pub async fn dispatch_ids(&self, ids: &[Uuid]) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let picked = sqlx::query_as::<_, Picked>(
            "WITH picked AS (
                SELECT id FROM jobs
                 WHERE id = ANY($1) AND state = 'pending' AND run_at <= now()
                 FOR UPDATE SKIP LOCKED)
             UPDATE jobs j
                SET state = 'queued', dispatch_seq = j.dispatch_seq + 1, queued_at = now(),
                    updated_at = now()
               FROM picked WHERE j.id = picked.id
          RETURNING j.id, j.queue, j.dispatch_seq",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        self.push(picked).await
    }

    /// Pushes due pending jobs of every queue until each queue reaches its high-water mark or
    /// runs out of due work. Returns how many were pushed.
    pub async fn dispatch_due(&self) -> Result<usize> {
        let mut total = 0;
        for queue in ALL_QUEUES {
            loop {
                let depth = self.queues.depth(queue).await?;
                let room = i64::from(self.queues.high_water_mark()) - depth as i64;
                if room <= 0 {
                    break;
                }
                let limit = room.min(BATCH);
                let picked = sqlx::query_as::<_, Picked>(
                    "WITH picked AS (
                        SELECT id FROM jobs
                         WHERE queue = $1 AND state = 'pending' AND run_at <= now()
                         ORDER BY run_at
                         LIMIT $2
                         FOR UPDATE SKIP LOCKED)
                     UPDATE jobs j
                        SET state = 'queued', dispatch_seq = j.dispatch_seq + 1,
                            queued_at = now(), updated_at = now()
                       FROM picked WHERE j.id = picked.id
                  RETURNING j.id, j.queue, j.dispatch_seq",
                )
                .bind(queue)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let found = picked.len() as i64;
                let pushed = self.push(picked).await?;
                total += pushed;
                if found < limit || (pushed as i64) < found {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Pushes rows already committed as `queued`, queue by queue; whatever Redis refused (high
    /// -water mark) or could not take (error) goes back to `pending` at once.
    async fn push(&self, picked: Vec<Picked>) -> Result<usize> {
        let mut by_queue: BTreeMap<String, Vec<JobTask>> = BTreeMap::new();
        for p in picked {
            by_queue.entry(p.queue).or_default().push(JobTask {
                job: p.id,
                seq: p.dispatch_seq,
            });
        }
        let mut pushed = 0;
        let mut refused: Vec<JobTask> = Vec::new();
        let mut failure = None;
        for (queue, tasks) in &by_queue {
            match self.queues.push(queue, tasks).await {
                Ok(accepted) => {
                    pushed += accepted;
                    refused.extend_from_slice(&tasks[accepted..]);
                    metrics::counter!("switchyard_dispatched_total", "queue" => queue.clone())
                        .increment(accepted as u64);
                }
                Err(e) => {
                    refused.extend_from_slice(tasks);
                    failure = Some(e);
                }
            }
        }
        if !refused.is_empty() {
            sqlx::query(
                "UPDATE jobs j SET state = 'pending', queued_at = NULL, updated_at = now()
                   FROM UNNEST($1::uuid[], $2::bigint[]) AS t(id, seq)
                  WHERE j.id = t.id AND j.dispatch_seq = t.seq AND j.state = 'queued'",
            )
            .bind(refused.iter().map(|t| t.job).collect::<Vec<_>>())
            .bind(refused.iter().map(|t| t.seq).collect::<Vec<_>>())
            .execute(&self.pool)
            .await?;
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(pushed),
        }
    }

    /// One reconciler pass. `lost_after` is how long a queued job may be missing from Redis.
    pub async fn reconcile(&self, lost_after: Duration) -> Result<Repairs> {
        let expired_leases = sqlx::query(
            "UPDATE jobs
                SET state = 'pending', run_at = now(), lease_owner = NULL, lease_until = NULL,
                    last_error = 'lease expired: worker lost', updated_at = now()
              WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_until < now()
                            LIMIT 5000)",
        )
        .execute(&self.pool)
        .await?
        .rows_affected();

        let stale = sqlx::query_as::<_, Picked>(
            "SELECT id, queue, dispatch_seq FROM jobs
              WHERE state = 'queued' AND queued_at < now() - make_interval(secs => $1)
              ORDER BY queued_at LIMIT 2000",
        )
        .bind(lost_after.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let mut lost_ids = Vec::new();
        let mut lost_seqs = Vec::new();
        if !stale.is_empty() {
            let hard: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE id = ANY($1) AND state = 'queued'
                    AND queued_at < now() - make_interval(secs => $2)",
            )
            .bind(stale.iter().map(|p| p.id).collect::<Vec<_>>())
            .bind(QUEUED_HARD_LIMIT.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
            let mut by_queue: BTreeMap<&str, Vec<JobTask>> = BTreeMap::new();
            for p in &stale {
                by_queue.entry(&p.queue).or_default().push(JobTask {
                    job: p.id,
                    seq: p.dispatch_seq,
                });
            }
            for (queue, tasks) in by_queue {
                let statuses = self.queues.task_statuses(queue, &tasks).await?;
                for (task, status) in tasks.iter().zip(statuses) {
                    // Pending/Failed/Running: still in a list, a retry set or a worker's hands.
                    let in_redis = matches!(
                        status.as_deref(),
                        Some("Pending" | "Queued" | "Running" | "Failed")
                    );
                    if !in_redis || hard.contains(&task.job) {
                        lost_ids.push(task.job);
                        lost_seqs.push(task.seq);
                    }
                }
            }
        }
        let lost_tasks = if lost_ids.is_empty() {
            0
        } else {
            sqlx::query(
                "UPDATE jobs j SET state = 'pending', queued_at = NULL, updated_at = now()
                   FROM UNNEST($1::uuid[], $2::bigint[]) AS t(id, seq)
                  WHERE j.id = t.id AND j.dispatch_seq = t.seq AND j.state = 'queued'",
            )
            .bind(&lost_ids)
            .bind(&lost_seqs)
            .execute(&self.pool)
            .await?
            .rows_affected()
        };
        if expired_leases > 0 || lost_tasks > 0 {
            tracing::warn!(
                expired_leases,
                lost_tasks,
                "reconciler returned jobs to pending"
            );
            metrics::counter!("switchyard_reconciled_total", "reason" => "expired_lease")
                .increment(expired_leases);
            metrics::counter!("switchyard_reconciled_total", "reason" => "lost_task")
                .increment(lost_tasks);
        }
        Ok(Repairs {
            expired_leases,
            lost_tasks,
        })
    }
}

/// After-commit nudges for the fast path. Callers never wait on Redis: ids go through a bounded
/// channel to one task that batches them. A full channel or a failed push only means the
/// dispatcher's sweep picks the jobs up a moment later.
#[derive(Clone)]
pub struct FastPath {
    tx: mpsc::Sender<Vec<Uuid>>,
}

impl FastPath {
    pub fn spawn(
        dispatcher: Dispatcher,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Vec<Uuid>>(4096);
        let handle = tokio::spawn(async move {
            let mut last_error_log = None::<std::time::Instant>;
            loop {
                let first = tokio::select! {
                    biased;
                    got = rx.recv() => match got { Some(ids) => ids, None => break },
                    _ = shutdown.cancelled() => break,
                };
                let mut ids = first;
                while ids.len() < BATCH as usize {
                    match rx.try_recv() {
                        Ok(more) => ids.extend(more),
                        Err(_) => break,
                    }
                }
                if let Err(e) = dispatcher.dispatch_ids(&ids).await {
                    // Logged at most every 10 s: during a Redis outage every request lands here.
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "fast-path dispatch failed; the dispatcher will retry");
                        last_error_log = Some(std::time::Instant::now());
                    }
                }
            }
        });
        (FastPath { tx }, handle)
    }

    /// Asks for these freshly committed jobs to be pushed now.
    pub fn nudge(&self, ids: Vec<Uuid>) {
        if !ids.is_empty() && self.tx.try_send(ids).is_err() {
            metrics::counter!("switchyard_fast_path_skipped_total").increment(1);
        }
    }
}
