//! Dispatch groups: jobs that share a group (a webhook endpoint's deliveries) are admitted under
//! the group's concurrency cap, rate limit (GCRA) and circuit breaker, cluster-wide: a pass
//! locks the rows of the groups it admits for, so dispatchers on other replicas count after it.
//!
//! A pass looks at groups, not at jobs: one index probe per group with pending work (a skip
//! scan over `jobs_group_due`) finds the groups whose oldest job is due, and only the jobs a
//! group may take now are read. A group at its cap, with an open breaker or a 100k backlog of
//! slow deliveries costs the pass one probe, not a walk over its backlog. Every time decision
//! (GCRA slots, breaker pauses and probes) is made on the database's clock.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{BATCH, Dispatcher, Local, Picked};
use crate::{
    error::Result,
    jobs::{ClaimedJob, Lease},
};

/// How long a half-open group waits for its probe before allowing another one: longer than
/// the longest request (30 s) plus claiming and recording.
pub const PROBE_WINDOW: TimeDelta = TimeDelta::seconds(40);
/// Most groups one pass looks at (the ones waiting longest first).
const GROUPS_PER_PASS: i64 = 1000;

/// A group with due work, as the skip scan found it.
pub(super) struct DueGroup {
    key: Uuid,
    queue: String,
    now: DateTime<Utc>,
}

/// What a pass may find to do: queues with due jobs outside groups, and groups with due jobs.
#[derive(Default)]
pub(super) struct DueWork {
    pub queues: Vec<String>,
    pub groups: Vec<DueGroup>,
}

/// A row of [`Dispatcher::due_work`]'s answer: a group (`key`) or, without one, a queue.
#[derive(sqlx::FromRow)]
struct DueRow {
    key: Option<Uuid>,
    queue: String,
    now: DateTime<Utc>,
}

/// A dispatch group's circuit breaker (`webhooks::breaker` trips and closes it; a pass lets
/// the one probe of a half-open group through).
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A group's limits and breaker, locked for one dispatch pass.
#[derive(sqlx::FromRow)]
struct Group {
    key: Uuid,
    max_concurrency: Option<i32>,
    rate_per_second: Option<i32>,
    tat: Option<DateTime<Utc>>,
    breaker: BreakerState,
    paused_until: Option<DateTime<Utc>>,
    probe_job: Option<Uuid>,
    #[sqlx(default)]
    inflight: i64,
}

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    group_key: Uuid,
}

/// A job a pass admitted: `queued` (to push) or `running` (born under the local lease).
#[derive(sqlx::FromRow)]
struct Admitted {
    #[sqlx(flatten)]
    job: ClaimedJob,
    state: String,
}

/// The statement of [`Dispatcher::due_work`] (public so a test can check its plan): `$1` groups
/// per pass, `$2` the queues. Paused queues (`queue_pauses`) have nothing due. Each queue's probe is its oldest pending job in `jobs_due` order
/// (`ORDER BY … LIMIT 1`, then compared to now): an `EXISTS … run_at <= now()` was once planned
/// as one walk over every queue's due jobs, 160 ms a pass behind a backlog of 70,000 fan-outs.
pub const DUE_WORK_SQL: &str = "WITH RECURSIVE g(key, run_at, queue) AS (
        (SELECT group_key, run_at, queue FROM jobs
          WHERE state = 'pending' AND group_key IS NOT NULL
          ORDER BY group_key, run_at LIMIT 1)
        UNION ALL
        SELECT n.group_key, n.run_at, n.queue
          FROM g CROSS JOIN LATERAL (
               SELECT group_key, run_at, queue FROM jobs
                WHERE state = 'pending' AND group_key IS NOT NULL AND group_key > g.key
                ORDER BY group_key, run_at LIMIT 1) n)
     (SELECT key, queue, now() AS now FROM g
       WHERE run_at <= now()
         AND NOT EXISTS (SELECT 1 FROM dispatch_groups d
                          WHERE d.key = g.key AND d.paused_until > now())
         AND NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = g.queue)
       ORDER BY run_at LIMIT $1)
     UNION ALL
     SELECT NULL, u.q, now() FROM UNNEST($2::text[]) AS u(q)
      CROSS JOIN LATERAL (SELECT run_at FROM jobs
                           WHERE queue = u.q AND state = 'pending' AND group_key IS NULL
                           ORDER BY run_at LIMIT 1) f
      WHERE f.run_at <= now()
        AND NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = u.q)";

impl Dispatcher {
    /// What is due now, in one statement (an idle pass costs just this): the queues with due
    /// jobs outside any group (one index probe per queue), and the groups whose oldest pending
    /// job is due, by a skip scan — the first entry of each group in `(group_key, run_at)`
    /// order is its oldest pending job. Groups paused by their breaker (open, or half-open
    /// with the probe out) are left out, as [`allowance`](Self::allowance) would give them
    /// nothing: a parked backlog costs a pass nothing more.
    pub(super) async fn due_work(&self) -> Result<DueWork> {
        let rows = sqlx::query_as::<_, DueRow>(DUE_WORK_SQL)
            .bind(GROUPS_PER_PASS)
            .bind(self.queues.names())
            .fetch_all(&self.planned)
            .await?;
        let mut due = DueWork::default();
        for r in rows {
            match r.key {
                Some(key) => due.groups.push(DueGroup {
                    key,
                    queue: r.queue,
                    now: r.now,
                }),
                None => due.queues.push(r.queue),
            }
        }
        Ok(due)
    }

    /// One transaction: works out what each of the `due` groups may take now, takes it (at
    /// most the Redis `room` of each queue, plus the free slots of `local`), and commits the
    /// admitted jobs as `queued`, or `running` under `local`'s lease as far as it has slots.
    /// Jobs over a rate limit move to their exact slot; jobs over a cap or behind an open
    /// breaker stay untouched. Returns the jobs to push, and how many were handed to `local`
    /// (after the commit).
    pub(super) async fn pick_grouped(
        &self,
        due: &[DueGroup],
        room: &BTreeMap<&'static str, i64>,
        local: Option<&dyn Local>,
    ) -> Result<(Vec<Picked>, usize)> {
        let Some(now) = due.first().map(|d| d.now) else {
            return Ok((Vec::new(), 0));
        };
        let mut tx = self.pool.begin().await?;
        let queue_of: BTreeMap<Uuid, String> =
            due.iter().map(|d| (d.key, d.queue.clone())).collect();
        let mut keys: Vec<Uuid> = queue_of.keys().copied().collect();
        keys.sort();
        // Every group gets a row to lock, so dispatchers on other replicas wait for this pass
        // before counting: the caps hold cluster-wide.
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
        let mut groups: BTreeMap<Uuid, Group> = rows.into_iter().map(|g| (g.key, g)).collect();
        for (key, n) in counts {
            if let Some(g) = groups.get_mut(&key) {
                g.inflight = n;
            }
        }
        // What each group may take now, oldest due group first, within each queue's room.
        let mut left: BTreeMap<&str, i64> = room
            .iter()
            .map(|(q, r)| {
                let here = local.filter(|l| l.queue() == *q).map_or(0, |l| l.free());
                (*q, ((*r).max(0) + here as i64).min(BATCH))
            })
            .collect();
        let (mut take_keys, mut take_limits) = (Vec::new(), Vec::new());
        for d in due {
            let Some(g) = groups.get(&d.key) else {
                continue;
            };
            let Some(left) = left.get_mut(d.queue.as_str()).filter(|l| **l > 0) else {
                continue;
            };
            let n = self.allowance(g, now).min(*left);
            if n > 0 {
                take_keys.push(d.key);
                take_limits.push(n as i32);
                *left -= n;
            }
        }
        if take_keys.is_empty() {
            tx.commit().await?;
            return Ok((Vec::new(), 0));
        }
        let candidates = sqlx::query_as::<_, Due>(
            "SELECT j.id, j.group_key
               FROM UNNEST($1::uuid[], $2::int[]) AS g(key, n)
              CROSS JOIN LATERAL (
                    SELECT id, group_key FROM jobs
                     WHERE group_key = g.key AND state = 'pending' AND run_at <= $3
                     ORDER BY run_at LIMIT g.n
                     FOR UPDATE SKIP LOCKED) j",
        )
        .bind(&take_keys)
        .bind(&take_limits)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let group_of: BTreeMap<Uuid, Uuid> =
            candidates.iter().map(|c| (c.id, c.group_key)).collect();
        let mut admitted = Vec::new();
        let mut deferred: Vec<(Uuid, DateTime<Utc>)> = Vec::new();
        let mut touched: BTreeSet<Uuid> = BTreeSet::new();
        let mut waiting_for_rate: BTreeMap<Uuid, i32> = BTreeMap::new();
        for job in candidates {
            let Some(g) = groups.get_mut(&job.group_key) else {
                continue;
            };
            if g.breaker != BreakerState::Closed {
                // Cool-down over: this job is the one probe; the rest wait for its outcome.
                g.breaker = BreakerState::HalfOpen;
                g.paused_until = Some(now + PROBE_WINDOW);
                g.probe_job = Some(job.id);
                touched.insert(g.key);
                admitted.push(job.id);
                continue;
            }
            if let Some(rate) = g.rate_per_second {
                // GCRA: `tat` only moves when a job is admitted; the rest wait for the next
                // free slots, one interval apart, and are looked at again then.
                let interval = TimeDelta::microseconds(1_000_000 / i64::from(rate.max(1)));
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
                    .map(|g| g.breaker.as_str())
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
        // Admitted jobs of `local`'s queue are born running, one per slot it can reserve now
        // (reserved only for this transaction's last statement, so fan-outs meanwhile keep
        // theirs); any it cannot take go to Redis.
        let mut here: Vec<Uuid> = match local {
            Some(l) => admitted
                .iter()
                .filter(|id| {
                    let queue = group_of.get(*id).and_then(|g| queue_of.get(g));
                    queue.is_some_and(|q| q == l.queue())
                })
                .copied()
                .collect(),
            None => Vec::new(),
        };
        let slots = local.map_or_else(Vec::new, |l| l.reserve(here.len()));
        here.truncate(slots.len());
        let (owner, lease) = local.map_or(("", std::time::Duration::ZERO), |l| l.lease());
        let rows = sqlx::query_as::<_, Admitted>(
            "UPDATE jobs
                SET state = CASE WHEN id = ANY($2) THEN 'running' ELSE 'queued' END,
                    dispatch_seq = dispatch_seq + 1, queued_at = now(), updated_at = now(),
                    attempt = attempt + CASE WHEN id = ANY($2) THEN 1 ELSE 0 END,
                    lease_owner = CASE WHEN id = ANY($2) THEN $3 END,
                    lease_until = CASE WHEN id = ANY($2)
                                       THEN now() + make_interval(secs => $4) END
              WHERE id = ANY($1)
          RETURNING id, queue, tenant_id, subject_id, attempt, max_attempts, dispatch_seq,
                    last_error, run_at, state",
        )
        .bind(&admitted)
        .bind(&here)
        .bind(owner)
        .bind(lease.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let (mut picked, mut leases) = (Vec::new(), Vec::new());
        for row in rows {
            if row.state == "running" {
                leases.push(Lease {
                    job: row.job,
                    owner: owner.to_owned(),
                });
            } else {
                picked.push(Picked {
                    id: row.job.id,
                    queue: row.job.queue,
                    dispatch_seq: row.job.dispatch_seq,
                });
            }
        }
        let n = leases.len();
        if let Some(l) = local {
            l.run(leases, slots);
        }
        Ok((picked, n))
    }

    /// How many jobs `g` may be handed now: none while its breaker pauses it, one probe once
    /// the pause is over, else its free slots (a rate-limited group's extra candidates are
    /// moved to their slots by the caller).
    fn allowance(&self, g: &Group, now: DateTime<Utc>) -> i64 {
        if g.paused_until.is_some_and(|t| t > now) {
            return 0;
        }
        if g.breaker != BreakerState::Closed {
            return 1;
        }
        let cap = g.max_concurrency.map_or(self.group_concurrency, i64::from);
        (cap - g.inflight).max(0)
    }
}
