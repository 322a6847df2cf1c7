//! Moves work from the ledger into Redis and repairs what goes missing (DESIGN §2).
//!
//! * New jobs are committed `queued` (see `jobs::NewJob`) and pushed right after the commit by
//!   the [`FastPath`]. Due `pending` jobs (retries, and whatever the fast path could not push)
//!   are moved by `dispatch_due`, the batched sweep every worker replica runs: it commits the
//!   rows as `queued` with a bumped `dispatch_seq`, then pushes. The push always comes after the
//!   commit: a worker's claim (`… WHERE dispatch_seq = $2 AND state = 'queued'`) sees only
//!   committed rows and would drop a task that overtook its commit as stale. Whatever Redis
//!   refuses (high-water mark) or fails to take goes straight back to `pending`.
//! * `reconcile` returns to `pending` the running jobs whose lease expired (SIGKILLed worker)
//!   and the queued jobs whose task Redis no longer has (flush, restart without persistence, a
//!   process that died between commit and push).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, mpsc};
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

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    group_key: Option<Uuid>,
}

/// A group's limits and breaker, locked for one dispatch pass.
#[derive(sqlx::FromRow)]
struct Group {
    key: Uuid,
    max_concurrency: Option<i32>,
    rate_per_second: Option<i32>,
    tat: Option<DateTime<Utc>>,
    breaker: String,
    paused_until: Option<DateTime<Utc>>,
    probe_job: Option<Uuid>,
    #[sqlx(default)]
    inflight: i64,
}

/// How long a half-open group waits for its probe before allowing another one: longer than
/// the longest request (30 s) plus claiming and recording.
const PROBE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(40);

/// What one reconciler pass repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repairs {
    pub expired_leases: u64,
    pub lost_tasks: u64,
}

impl Dispatcher {
    pub fn new(pool: PgPool, queues: Queues, group_concurrency: u32) -> Self {
        Dispatcher {
            pool,
            queues,
            group_concurrency: i64::from(group_concurrency.max(1)),
            wake: Arc::new(Notify::new()),
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
                let (picked, found) = self.pick(queue, limit).await?;
                let tasks: Vec<JobTask> = picked
                    .iter()
                    .map(|p| JobTask {
                        job: p.id,
                        seq: p.dispatch_seq,
                    })
                    .collect();
                let pushed = self.push(queue, &tasks).await?;
                total += pushed;
                if found < limit || picked.is_empty() || pushed < picked.len() {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// One transaction: picks up to `limit` due jobs of `queue`, applies the limits of their
    /// groups (concurrency cap, rate, breaker), and commits the admitted ones as `queued`.
    /// Returns them and how many due jobs were looked at. Jobs over a concurrency cap stay
    /// pending untouched (and their group is skipped by the next pass until a slot frees);
    /// jobs over a rate limit move to their exact slot.
    async fn pick(&self, queue: &str, limit: i64) -> Result<(Vec<Picked>, i64)> {
        let mut tx = self.pool.begin().await?;
        // Groups that may not take more now: open breakers and full concurrency caps.
        let blocked: Vec<Uuid> = sqlx::query_scalar(
            "SELECT key FROM dispatch_groups WHERE paused_until > now()
             UNION
             SELECT j.group_key FROM jobs j LEFT JOIN dispatch_groups g ON g.key = j.group_key
              WHERE j.state IN ('queued', 'running') AND j.group_key IS NOT NULL
              GROUP BY j.group_key, g.max_concurrency
             HAVING count(*) >= COALESCE(g.max_concurrency, $1)",
        )
        .bind(self.group_concurrency)
        .fetch_all(&mut *tx)
        .await?;
        let due = sqlx::query_as::<_, Due>(
            "SELECT id, group_key FROM jobs
              WHERE queue = $1 AND state = 'pending' AND run_at <= now()
                AND (group_key IS NULL OR group_key <> ALL($3))
              ORDER BY run_at
              LIMIT $2
              FOR UPDATE SKIP LOCKED",
        )
        .bind(queue)
        .bind(limit)
        .bind(&blocked)
        .fetch_all(&mut *tx)
        .await?;
        let found = due.len() as i64;
        let mut keys: Vec<Uuid> = due.iter().filter_map(|d| d.group_key).collect();
        keys.sort();
        keys.dedup();
        let mut groups: BTreeMap<Uuid, Group> = BTreeMap::new();
        if !keys.is_empty() {
            // Every group gets a row to lock, so dispatchers on other replicas wait for this
            // pass before counting: the caps hold cluster-wide.
            sqlx::query(
                "INSERT INTO dispatch_groups (key) SELECT UNNEST($1::uuid[])
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(&keys)
            .execute(&mut *tx)
            .await?;
            let rows = sqlx::query_as::<_, Group>(
                "SELECT key, max_concurrency, rate_per_second, tat, breaker, paused_until, probe_job
                   FROM dispatch_groups WHERE key = ANY($1) ORDER BY key FOR UPDATE",
            )
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?;
            let counts: Vec<(Uuid, i64)> = sqlx::query_as(
                "SELECT group_key, count(*) FROM jobs
                  WHERE group_key = ANY($1) AND state IN ('queued', 'running')
                  GROUP BY group_key",
            )
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?;
            groups = rows.into_iter().map(|g| (g.key, g)).collect();
            for (key, n) in counts {
                if let Some(g) = groups.get_mut(&key) {
                    g.inflight = n;
                }
            }
        }
        let now = Utc::now();
        let mut admitted = Vec::new();
        let mut deferred: Vec<(Uuid, DateTime<Utc>)> = Vec::new();
        let mut touched: BTreeSet<Uuid> = BTreeSet::new();
        let mut waiting_for_rate: BTreeMap<Uuid, i32> = BTreeMap::new();
        for job in due {
            let Some(g) = job.group_key.and_then(|k| groups.get_mut(&k)) else {
                admitted.push(job.id);
                continue;
            };
            if g.paused_until.is_some_and(|t| t > now) {
                continue; // Paused since the first query: leave it.
            }
            if g.breaker != "closed" {
                // Cool-down over: this job is the one probe; the rest wait for its outcome.
                g.breaker = "half_open".into();
                g.paused_until = Some(now + PROBE_WINDOW);
                g.probe_job = Some(job.id);
                touched.insert(g.key);
                admitted.push(job.id);
                continue;
            }
            let cap = g.max_concurrency.map_or(self.group_concurrency, i64::from);
            if g.inflight >= cap {
                continue;
            }
            if let Some(rate) = g.rate_per_second {
                // GCRA: `tat` only moves when a job is admitted; the rest wait for the next
                // free slots, one interval apart, and are looked at again then.
                let interval = chrono::TimeDelta::microseconds(1_000_000 / i64::from(rate));
                let slot = g.tat.map_or(now, |t| t.max(now));
                if slot > now {
                    let waiting = waiting_for_rate.entry(g.key).or_insert(0);
                    deferred.push((job.id, slot + interval * *waiting));
                    *waiting += 1;
                    continue;
                }
                g.tat = Some(slot + interval);
                touched.insert(g.key);
            }
            g.inflight += 1;
            admitted.push(job.id);
        }
        let changed: Vec<&Group> = touched.iter().filter_map(|k| groups.get(k)).collect();
        if !changed.is_empty() {
            sqlx::query(
                "UPDATE dispatch_groups g
                    SET tat = t.tat, breaker = t.breaker, paused_until = t.paused_until,
                        probe_job = t.probe_job, updated_at = now()
                   FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::timestamptz[],
                               $5::uuid[])
                        AS t(key, tat, breaker, paused_until, probe_job)
                  WHERE g.key = t.key",
            )
            .bind(changed.iter().map(|g| g.key).collect::<Vec<_>>())
            .bind(changed.iter().map(|g| g.tat).collect::<Vec<_>>())
            .bind(
                changed
                    .iter()
                    .map(|g| g.breaker.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(changed.iter().map(|g| g.paused_until).collect::<Vec<_>>())
            .bind(changed.iter().map(|g| g.probe_job).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if !deferred.is_empty() {
            sqlx::query(
                "UPDATE jobs j SET run_at = t.run_at, updated_at = now()
                   FROM UNNEST($1::uuid[], $2::timestamptz[]) AS t(id, run_at)
                  WHERE j.id = t.id",
            )
            .bind(deferred.iter().map(|d| d.0).collect::<Vec<_>>())
            .bind(deferred.iter().map(|d| d.1).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        let picked = sqlx::query_as::<_, Picked>(
            "UPDATE jobs SET state = 'queued', dispatch_seq = dispatch_seq + 1,
                    queued_at = now(), updated_at = now()
              WHERE id = ANY($1)
          RETURNING id, queue, dispatch_seq",
        )
        .bind(&admitted)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((picked, found))
    }

    /// Pushes tasks of jobs already committed as `queued`; whatever Redis refused (high-water
    /// mark) or could not take (error) goes back to `pending` at once. Returns how many went in.
    pub async fn push(&self, queue: &str, tasks: &[JobTask]) -> Result<usize> {
        match self.queues.push(queue, tasks).await {
            Ok(accepted) => {
                metrics::counter!("switchyard_dispatched_total", "queue" => queue.to_owned())
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

/// Pushes freshly committed jobs right after their commit. Callers never wait on Redis: tasks go
/// through a bounded channel to a task that batches them per queue and pushes a few batches at
/// a time. If the channel is full or Redis fails, the jobs go back to `pending` and the
/// dispatcher's sweep pushes them a moment later.
#[derive(Clone)]
pub struct FastPath {
    tx: mpsc::Sender<(&'static str, Vec<JobTask>)>,
    dispatcher: Dispatcher,
}

/// Batches pushed concurrently by the fast path.
const FAST_PATH_CONCURRENCY: usize = 4;

impl FastPath {
    pub fn spawn(
        dispatcher: Dispatcher,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(&'static str, Vec<JobTask>)>(4096);
        let d = dispatcher.clone();
        let handle = tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(FAST_PATH_CONCURRENCY));
            let last_error_log = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
            loop {
                // On shutdown, stop accepting but push what is already in the channel.
                let got = tokio::select! {
                    biased;
                    got = rx.recv() => got,
                    _ = shutdown.cancelled(), if !rx.is_closed() => {
                        rx.close();
                        continue;
                    }
                };
                let Some(first) = got else { break };
                let mut batches: BTreeMap<&'static str, Vec<JobTask>> = BTreeMap::new();
                let mut n = first.1.len();
                batches.entry(first.0).or_default().extend(first.1);
                while n < BATCH as usize {
                    match rx.try_recv() {
                        Ok((queue, tasks)) => {
                            n += tasks.len();
                            batches.entry(queue).or_default().extend(tasks);
                        }
                        Err(_) => break,
                    }
                }
                for (queue, tasks) in batches {
                    let permit = permits.clone().acquire_owned().await.expect("never closed");
                    let (d, last_error_log) = (d.clone(), last_error_log.clone());
                    tokio::spawn(async move {
                        if let Err(e) = d.push(queue, &tasks).await {
                            // At most every 10 s: during a Redis outage every request lands here.
                            let mut last = last_error_log.lock().expect("log lock");
                            if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                                tracing::warn!(error = %e, "fast-path push failed; the dispatcher will retry");
                                *last = Some(std::time::Instant::now());
                            }
                        }
                        drop(permit);
                    });
                }
            }
            // Let in-flight pushes finish before reporting the fast path stopped.
            let _ = permits.acquire_many(FAST_PATH_CONCURRENCY as u32).await;
        });
        (FastPath { tx, dispatcher }, handle)
    }

    /// Pushes these tasks of jobs just committed as `queued` (`jobs::NewJob`).
    pub fn push(&self, queue: &'static str, tasks: Vec<JobTask>) {
        if tasks.is_empty() {
            return;
        }
        if let Err(
            mpsc::error::TrySendError::Full((queue, tasks))
            | mpsc::error::TrySendError::Closed((queue, tasks)),
        ) = self.tx.try_send((queue, tasks))
        {
            metrics::counter!("switchyard_fast_path_overflow_total", "queue" => queue).increment(1);
            // Overloaded: hand the jobs to the dispatcher instead of leaving them to the reconciler.
            let d = self.dispatcher.clone();
            tokio::spawn(async move {
                if let Err(e) = d.revert(&tasks).await {
                    tracing::warn!(error = %e, "could not hand jobs back; the reconciler will");
                }
            });
        }
    }
}
