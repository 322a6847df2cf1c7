//! A delivery that must wait for an earlier one — a FIFO endpoint's older message, or an
//! earlier event of the same order to the same endpoint — and finds it due in the ledger runs
//! that one in its place.
//!
//! The dispatcher and the hand-off admit an endpoint's due deliveries by due time, which is not
//! message order: fan-outs run concurrently, and after a breaker trip every parked delivery is
//! due at the same moment. Before, an admitted delivery that had to wait only went back to the
//! ledger, and the next pick could be another one that had to wait: behind a FIFO endpoint's
//! cap of one, each message waited for about one pass over the backlog (60 messages took about
//! a minute, docs/benchmarks.md), and a half-open breaker's probe that had to wait held the
//! endpoint for the whole probe window. Now the slot goes at once to the delivery that is next.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

use super::delivery::Target;
use crate::{
    error::Result,
    jobs::{self, ClaimedJob, Lease, defer_sql, start_next_sql},
};

/// One statement: this job waits until `until` plus `after`, as any delivery that must wait;
/// and, only if this run still held it, the first delivery it waits for — if its job waits in
/// the ledger and is due (never one whose retry time has not come) — is committed `running`
/// under this process's lease (`lease`), in the slot this job leaves: the endpoint's in-flight
/// count, and so its cap, stay as they were. If this job was the endpoint's half-open probe,
/// the other takes over the probe for a new probe window. Returns the job to run next, if any;
/// `None` when there is none (the earlier delivery is running, queued, or not due yet: this job
/// then just waits) or this run lost its lease.
pub async fn run_first_instead(
    pool: &PgPool,
    job: &Lease,
    target: &Target,
    until: DateTime<Utc>,
    after: Duration,
    lease: Duration,
) -> Result<Option<Lease>> {
    let query = sqlx::query(concat!(
        "WITH waits AS (",
        defer_sql!(),
        " RETURNING id),
         me AS (
            SELECT d.endpoint_id, d.message_id, d.ordering_key, d.ordering_seq, e.fifo
              FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
             WHERE d.id = $6),
         first AS (
            SELECT COALESCE(
                (SELECT p.job_id FROM webhook_deliveries p, me
                  WHERE me.fifo AND p.endpoint_id = me.endpoint_id AND p.status = 'pending'
                    AND p.message_id < me.message_id
                  ORDER BY p.endpoint_id, p.message_id LIMIT 1),
                (SELECT p.job_id FROM webhook_deliveries p, me
                  WHERE p.endpoint_id = me.endpoint_id AND p.ordering_key = me.ordering_key
                    AND p.ordering_seq < me.ordering_seq AND p.status = 'pending'
                  ORDER BY p.endpoint_id, p.ordering_key, p.ordering_seq LIMIT 1)) AS job_id),
         next AS (
            SELECT j.id FROM jobs j, first f
             WHERE j.id = f.job_id AND j.group_key = $7 AND j.state = 'pending'
               AND j.run_at <= now() AND EXISTS (SELECT 1 FROM waits)
               FOR UPDATE OF j SKIP LOCKED),
         started AS (",
        start_next_sql!("$3", "$8"),
        "),
         probe AS (
            UPDATE dispatch_groups g
               SET probe_job = s.id, paused_until = now() + make_interval(secs => $9),
                   updated_at = now()
              FROM started s WHERE g.key = $7 AND g.probe_job = $1)
         SELECT s.id, s.queue, s.tenant_id, s.subject_id, s.attempt, s.max_attempts,
                s.dispatch_seq, s.last_error, s.run_at
           FROM started s"
    ));
    let window = crate::dispatch::PROBE_WINDOW.as_seconds_f64();
    let row = jobs::bind_defer(query, job, Some(until), after)
        .bind(target.delivery_id)
        .bind(target.endpoint_id)
        .bind(lease.as_secs_f64())
        .bind(window)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(Lease {
        job: ClaimedJob::from_row(&row)?,
        owner: job.owner.clone(),
    }))
}
