//! The reconciler: returns to `pending` the running jobs whose lease expired (SIGKILLed or
//! frozen worker) and the queued jobs whose task Redis no longer has (flush, restart without
//! persistence, a process that died between commit and push).

use std::{collections::BTreeMap, time::Duration};

use uuid::Uuid;

use super::{Dispatcher, Picked, QUEUED_HARD_LIMIT};
use crate::telemetry::metrics as m;
use crate::{error::Result, queue::JobTask};

/// What one reconciler pass repaired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repairs {
    pub expired_leases: u64,
    pub lost_tasks: u64,
}

impl Dispatcher {
    /// One reconciler pass. `lost_after` is how long a queued job may be missing from Redis.
    pub async fn reconcile(&self, lost_after: Duration) -> Result<Repairs> {
        // A locked row is being recorded or renewed by its worker: skipped, never waited for
        // (after the wait, the update would overwrite that outcome). The outer condition
        // is checked again on the row as it is when the update takes it.
        let expired_leases = sqlx::query(
            "UPDATE jobs
                SET state = 'pending', run_at = now(), lease_owner = NULL, lease_until = NULL,
                    last_error = 'lease expired: worker lost', updated_at = now()
              WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_until < now()
                            LIMIT 5000 FOR UPDATE SKIP LOCKED)
                AND state = 'running' AND lease_until < now()",
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
                let present = self.queues.tasks_present(queue, &tasks).await?;
                for (task, in_redis) in tasks.iter().zip(present) {
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
        }
        // Counted even when zero, so the series exist (and rates read 0) from the first pass.
        metrics::counter!(m::RECONCILED, "reason" => "expired_lease").increment(expired_leases);
        metrics::counter!(m::RECONCILED, "reason" => "lost_task").increment(lost_tasks);
        Ok(Repairs {
            expired_leases,
            lost_tasks,
        })
    }
}
