//! Circuit breaker per endpoint. It trips when the failure rate over a recent window passes a
//! threshold; while open, the endpoint's deliveries are parked in the ledger (pending with
//! `run_at` at the end of the cool-down), so they hold no worker slot and no Redis space.
//! When the cool-down ends the dispatcher lets one probe through (half-open): success closes
//! the breaker, failure opens it again for twice as long.
//!
//! State lives in the endpoint's dispatch group (`dispatch_groups`), where the dispatcher
//! reads it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::delivery::Target;
use crate::{
    dispatch::BreakerState,
    error::Result,
    jobs::{self, ClaimedJob, Lease, defer_sql},
};

/// When to trip and how long to stay open.
#[derive(Clone, Debug)]
pub struct BreakerPolicy {
    /// Attempts looked at: those of the last `window`.
    pub window: Duration,
    /// Fewer attempts than this in the window never trip the breaker.
    pub min_attempts: i64,
    /// Failure share (0–1) in the window that trips it.
    pub failure_ratio: f64,
    /// First cool-down; doubled on each consecutive trip, up to `max_cooldown`.
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

/// Whether a claimed delivery must wait for the breaker: open (or half-open and this job is
/// not the probe) with the pause still running on the database's clock. Returns until when.
pub fn parked_until(target: &Target, job: &ClaimedJob) -> Option<DateTime<Utc>> {
    let until = target.paused_until.filter(|t| *t > target.db_now)?;
    match target.breaker {
        Some(BreakerState::Open) => Some(until),
        Some(BreakerState::HalfOpen) if target.probe_job != Some(job.id) => Some(until),
        _ => None,
    }
}

/// A delivery that reached a worker while its endpoint's breaker is open: in one statement,
/// put the job back to wait until the cool-down ends (no attempt is used up) and, only if that
/// matched, log a `circuit_open` attempt (nothing was sent) and show the delivery's next
/// attempt time. Returns whether this process still held the lease.
pub async fn park(
    pool: &PgPool,
    job: &Lease,
    target: &Target,
    until: DateTime<Utc>,
) -> Result<bool> {
    let query = sqlx::query(concat!(
        "WITH parked AS (",
        defer_sql!(),
        // Only while its group still exists: the endpoint's deletion removes it.
        " AND EXISTS (SELECT 1 FROM dispatch_groups g WHERE g.key = $9)
         RETURNING id),
         attempt AS (
            INSERT INTO webhook_attempts
                (id, tenant_id, delivery_id, endpoint_id, message_id, attempt, webhook_timestamp,
                 error_class, error_message, duration_ms)
            SELECT $6, $7, $8, $9, $10, $11, extract(epoch FROM now())::bigint, 'circuit_open',
                   $12, 0
             WHERE EXISTS (SELECT 1 FROM parked)),
         delivery AS (
            UPDATE webhook_deliveries SET next_attempt_at = $4, updated_at = now()
             WHERE id = $8 AND EXISTS (SELECT 1 FROM parked))
         SELECT EXISTS (SELECT 1 FROM parked)"
    ));
    let parked: bool = jobs::bind_defer(query, job, Some(until), Duration::ZERO)
        .bind(Uuid::now_v7())
        .bind(target.tenant_id)
        .bind(target.delivery_id)
        .bind(target.endpoint_id)
        .bind(target.message_id)
        .bind(job.attempt)
        .bind(format!(
            "not sent: the endpoint's circuit breaker is open until {}",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    Ok(parked)
}

/// What an attempt did to the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    Opened { until: DateTime<Utc> },
    Closed,
}

/// A success closes a breaker that was not closed.
pub async fn on_success(pool: &PgPool, target: &Target) -> Result<Transition> {
    if target.breaker.is_none_or(|b| b == BreakerState::Closed) {
        return Ok(Transition::None);
    }
    let n = sqlx::query(
        "UPDATE dispatch_groups
            SET breaker = 'closed', paused_until = NULL, probe_job = NULL, trips = 0,
                closed_at = now(), updated_at = now()
          WHERE key = $1 AND breaker <> 'closed'",
    )
    .bind(target.endpoint_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(if n > 0 {
        Transition::Closed
    } else {
        Transition::None
    })
}

/// A failure re-opens a half-open breaker, or trips a closed one whose window (since it last
/// closed) is failing.
pub async fn on_failure(
    pool: &PgPool,
    policy: &BreakerPolicy,
    target: &Target,
    job: &ClaimedJob,
) -> Result<Transition> {
    let probe_failed =
        target.breaker == Some(BreakerState::HalfOpen) && target.probe_job == Some(job.id);
    if !probe_failed {
        let (total, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE error_class IS NOT NULL)
               FROM (SELECT error_class FROM webhook_attempts
                      WHERE endpoint_id = $1 AND created_at > now() - make_interval(secs => $2)
                        AND error_class IS DISTINCT FROM 'circuit_open'
                        -- Not before the breaker last closed: the failures that opened it
                        -- were answered by the probe that closed it.
                        AND created_at > COALESCE((SELECT closed_at FROM dispatch_groups
                                                    WHERE key = $1), '-infinity')
                      ORDER BY id DESC LIMIT 200) recent",
        )
        .bind(target.endpoint_id)
        .bind(policy.window.as_secs_f64())
        .fetch_one(pool)
        .await?;
        if total < policy.min_attempts || (failed as f64) < policy.failure_ratio * total as f64 {
            return Ok(Transition::None);
        }
    }
    // Not for an endpoint deleted meanwhile (its group went with it): a probe in flight at
    // the deletion would bring the group back and park its own retry behind a new cool-down,
    // where the retry would otherwise find the endpoint gone and end at once.
    sqlx::query(
        "INSERT INTO dispatch_groups (key)
         SELECT id FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(target.endpoint_id)
    .execute(pool)
    .await?;
    // Open (again) unless another worker already did, then park what waits. The cool-down
    // doubles with each consecutive trip.
    let until: Option<DateTime<Utc>> = sqlx::query_scalar(
        "WITH g AS (
            UPDATE dispatch_groups
               SET breaker = 'open', probe_job = NULL, trips = trips + 1, updated_at = now(),
                   paused_until = now() + make_interval(secs => LEAST($3, $2 * power(2, LEAST(trips, 16))))
             WHERE key = $1 AND (breaker = 'half_open' OR (breaker = 'closed' AND NOT $4))
         RETURNING key, paused_until),
         -- SKIP LOCKED: a dispatcher pass holding some of these jobs also waits for the
         -- group row locked above; waiting for its jobs here would deadlock. Jobs it admits
         -- meet the open breaker in the worker and are parked there.
         waiting AS (
            SELECT j.id FROM jobs j, g
             WHERE j.group_key = g.key AND j.state = 'pending' AND j.run_at < g.paused_until
             FOR UPDATE OF j SKIP LOCKED),
         parked AS (
            UPDATE jobs j SET run_at = g.paused_until, updated_at = now()
              FROM g, waiting w
             WHERE j.id = w.id)
         SELECT paused_until FROM g",
    )
    .bind(target.endpoint_id)
    .bind(policy.cooldown.as_secs_f64())
    .bind(policy.max_cooldown.as_secs_f64())
    .bind(probe_failed)
    .fetch_optional(pool)
    .await?;
    Ok(match until {
        Some(until) => Transition::Opened { until },
        None => Transition::None,
    })
}

/// Endpoints (not deleted) by breaker state — `closed`, `open`, `half_open` — and those
/// disabled, for the `switchyard_endpoint_breakers` gauge. One scan of the endpoints (they
/// grow with customers, not traffic).
pub async fn census(pool: &PgPool) -> Result<Vec<(String, i64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.state, count(e.id)
           FROM UNNEST(ARRAY['closed', 'open', 'half_open', 'disabled']) AS s(state)
           LEFT JOIN (SELECT e.id, CASE WHEN e.status = 'disabled' THEN 'disabled'
                                        ELSE COALESCE(g.breaker, 'closed') END AS state
                        FROM webhook_endpoints e
                        LEFT JOIN dispatch_groups g ON g.key = e.id
                       WHERE e.deleted_at IS NULL) e ON e.state = s.state
          GROUP BY s.state",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
