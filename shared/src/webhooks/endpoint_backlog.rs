//! What an endpoint's state does to its deliveries: disabling or deleting it cancels what
//! waits for it, at once; enabling it again with `replay_missed` schedules what it missed.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::endpoints::{Endpoint, MANUAL_MAX_ATTEMPTS};
use crate::{
    error::Result, events::types as event_types, jobs::insert_jobs_from_sql, tenants::Scope,
};

/// Most messages one `replay_missed` schedules.
const REPLAY_LIMIT: i64 = 10_000;

/// Schedules what an endpoint missed while disabled: messages of its tenant and mode created
/// since `since` that match its filter, and its deliveries cancelled since then. Returns how
/// many deliveries were scheduled.
pub(super) async fn replay_since(
    conn: &mut PgConnection,
    scope: Scope,
    endpoint: &Endpoint,
    since: DateTime<Utc>,
) -> Result<i64> {
    let candidates: Vec<(Uuid, String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT m.id, m.event_type, m.ordering_key, m.ordering_seq
           FROM webhook_messages m JOIN events ev ON ev.id = m.event_id
          WHERE m.tenant_id = $1 AND ev.mode = $2 AND ev.audience = 'endpoints' AND m.id >= $3
            AND m.created_at >= $4 AND m.payload IS NOT NULL
         UNION
         SELECT m.id, m.event_type, m.ordering_key, m.ordering_seq
           FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
          WHERE d.endpoint_id = $5 AND d.status = 'cancelled' AND d.updated_at >= $4
            AND m.payload IS NOT NULL
          ORDER BY 1 LIMIT $6",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(super::uuid_v7_floor(since))
    .bind(since)
    .bind(endpoint.id)
    .bind(REPLAY_LIMIT)
    .fetch_all(&mut *conn)
    .await?;
    let wanted: Vec<_> = candidates
        .into_iter()
        .filter(|(_, t, _, _)| event_types::matches_any(&endpoint.event_types, t))
        .collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    let max_attempts = endpoint
        .retry_schedule
        .as_ref()
        .map_or(MANUAL_MAX_ATTEMPTS, |s| s.len() as i32 + 1);
    let n = sqlx::query(concat!(
        "WITH d AS (
            INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id, ordering_key,
                                            ordering_seq, job_id)
            SELECT t.id, $1, t.m, $2, t.ok, t.os, gen_random_uuid()
              FROM UNNEST($3::uuid[], $4::uuid[], $5::text[], $6::bigint[]) AS t(id, m, ok, os)
            ON CONFLICT (message_id, endpoint_id) DO UPDATE
               SET status = 'pending', next_attempt_at = now(), updated_at = now(),
                   job_id = EXCLUDED.job_id
             WHERE webhook_deliveries.status = 'cancelled'
            RETURNING id, job_id)",
        insert_jobs_from_sql!(
            "SELECT d.job_id, $7, $1, d.id, $8, $2, now(), 'pending', 0, NULL, NULL
                   FROM d"
        )
    ))
    .bind(scope.tenant_id)
    .bind(endpoint.id)
    .bind(wanted.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(wanted.iter().map(|w| w.0).collect::<Vec<_>>())
    .bind(wanted.iter().map(|w| w.2.clone()).collect::<Vec<_>>())
    .bind(wanted.iter().map(|w| w.3).collect::<Vec<_>>())
    .bind(crate::queue::WEBHOOK_DELIVERIES)
    .bind(max_attempts)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n as i64)
}

/// Cancels every delivery of the endpoint that waits (pending, parked by the breaker, queued
/// in Redis) with its job, in one statement. Deliveries whose job runs right now are left to
/// that run: it records its attempt, and its next run finds the endpoint gone. Returns how
/// many deliveries were cancelled.
pub async fn cancel_pending(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    reason: &str,
) -> Result<u64> {
    let n = sqlx::query(
        "WITH pending AS (
            UPDATE jobs SET state = 'cancelled', last_error = $2, finished_at = now(),
                   updated_at = now()
             WHERE group_key = $1 AND state = 'pending'),
         -- (The IN clause lets the planner use the in-flight index.)
         queued AS (
            UPDATE jobs SET state = 'cancelled', last_error = $2, queued_at = NULL,
                   finished_at = now(), updated_at = now()
             WHERE group_key = $1 AND state IN ('queued', 'running') AND state = 'queued')
         UPDATE webhook_deliveries
            SET status = 'cancelled', next_attempt_at = NULL, updated_at = now()
          WHERE endpoint_id = $1 AND status = 'pending'
            AND id NOT IN (SELECT subject_id FROM jobs WHERE group_key = $1 AND state = 'running')",
    )
    .bind(endpoint_id)
    .bind(reason)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n)
}
