//! The error log (`GET /v1/logs/errors`): everything that failed for a tenant, in one list,
//! newest first: failed API requests, webhook deliveries given up on, inbound events that
//! failed or were rejected, and sync runs that failed or partly failed.
//!
//! Nothing is copied for it: each kind is read from its own table through a partial index of
//! its failures (migration `logs`), newest first by the time it failed, and the pages are
//! merged here. Pages are keyset pages on `(occurred_at, id)`: `starting_after` names the last
//! entry seen, whose time is looked up.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::requests::{parse_request_id, request_id};
use crate::{
    error::{Error, Result},
    mode::Mode,
    queue,
};

/// The partner API path of the row a `queue`'s jobs work on.
fn path(queue: &str, id: Uuid) -> Option<String> {
    queue::subject_path(queue, id).map(|(_, path)| path)
}

/// What failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, poem_openapi::Enum, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ErrorKind {
    /// An API request answered with a 4xx or 5xx status.
    Request,
    /// A webhook delivery given up on (retries exhausted, or its endpoint disabled).
    WebhookDelivery,
    /// An inbound webhook that failed processing, or was rejected (bad signature, malformed).
    InboundEvent,
    /// A sync run that failed, or finished with failed rows (`partial`).
    SyncRun,
}

/// How bad it is: `error` needs someone to act; `warning` is a refusal or a partial success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Error,
}

/// One failure.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct ErrorLogEntry {
    /// The failed object's id: a request id (`req_…`) or the delivery's, inbound event's or
    /// sync run's id.
    pub id: String,
    pub kind: ErrorKind,
    pub severity: Severity,
    /// When it failed.
    pub occurred_at: DateTime<Utc>,
    /// Stable: the problem `code` of a request; `delivery_failed`, `inbound_failed`,
    /// `inbound_rejected`, `sync_run_failed` or `sync_run_partial`.
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// Where to read the object (`GET` with the same key); `null` for requests, which are
    /// found by their id in `GET /v1/logs/requests`.
    #[oai(nullable)]
    pub url: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    occurred_at: DateTime<Utc>,
    kind: ErrorKind,
    severe: bool,
    code: String,
    message: String,
}

/// Each kind's failures after the cursor (`$3`, `$4`; both NULL for the first page), newest
/// first, `$5` at most. The request branch bounds its id range with the index before the
/// exact comparison on the time it computes; a delivery's last attempt is looked up only in
/// the attempt partitions between its creation and its failure. Endpoint URLs lose their query
/// string (it may hold a token).
const ERRORS_SQL: &str = "
    (SELECT id, uuid_v7_time(id) AS occurred_at, 'request'::text AS kind, status >= 500 AS severe,
            COALESCE(problem_code, 'http_' || status) AS code,
            method || ' ' || path || ' answered ' || status AS message
       FROM request_logs
      WHERE tenant_id = $1 AND mode = $2 AND status >= 400
        AND ($3::timestamptz IS NULL
             OR (id < uuid_v7_floor($3 + interval '1 millisecond')
                 AND (uuid_v7_time(id), id) < ($3, $4::uuid)))
      ORDER BY id DESC LIMIT $5)
    UNION ALL
    (SELECT d.id, d.updated_at, 'webhook_delivery', true, 'delivery_failed',
            'Delivery to ' || split_part(e.url, '?', 1) || ' given up after ' || d.attempts || ' attempt(s)'
              || COALESCE(', last status ' || d.last_status_code,
                          ', last error: ' || a.error_class
                            || COALESCE(' (' || a.error_message || ')', ''), '')
       FROM webhook_deliveries d
       JOIN webhook_endpoints e ON e.id = d.endpoint_id
       LEFT JOIN LATERAL (SELECT error_class, left(error_message, 200) AS error_message
                            FROM webhook_attempts x
                           WHERE x.delivery_id = d.id
                             AND x.id >= uuid_v7_floor(uuid_v7_time(d.id))
                             AND x.id < uuid_v7_floor(d.updated_at + interval '1 second')
                           ORDER BY x.id DESC LIMIT 1) a ON true
      WHERE d.tenant_id = $1 AND d.status = 'failed' AND e.mode = $2
        AND ($3::timestamptz IS NULL OR (d.updated_at, d.id) < ($3, $4::uuid))
      ORDER BY d.updated_at DESC, d.id DESC LIMIT $5)
    UNION ALL
    (SELECT id, COALESCE(processed_at, received_at), 'inbound_event', status = 'failed',
            'inbound_' || status,
            CASE WHEN status = 'failed'
                 THEN 'Processing failed after ' || attempts || ' attempt(s): '
                      || COALESCE(left(last_error, 200), 'unknown error')
                 ELSE 'Rejected: ' || COALESCE(reason, 'unknown reason') END
       FROM inbound_events
      WHERE tenant_id = $1 AND mode = $2 AND status IN ('failed', 'rejected')
        AND ($3::timestamptz IS NULL
             OR (COALESCE(processed_at, received_at), id) < ($3, $4::uuid))
      ORDER BY COALESCE(processed_at, received_at) DESC, id DESC LIMIT $5)
    UNION ALL
    (SELECT r.id, r.finished_at, 'sync_run', r.status = 'failed', 'sync_run_' || r.status,
            CASE WHEN r.status = 'failed'
                 THEN 'Sync run failed: ' || COALESCE(left(r.error, 200), 'unknown error')
                 ELSE 'Sync run finished with ' || r.rows_failed || ' failed row(s)' END
       FROM sync_runs r
      WHERE r.tenant_id = $1 AND r.mode = $2 AND r.status IN ('failed', 'partial')
        AND ($3::timestamptz IS NULL OR (r.finished_at, r.id) < ($3, $4::uuid))
      ORDER BY r.finished_at DESC, r.id DESC LIMIT $5)";

/// Where the entry `id` sits in the log, for a page after it: when it failed, or, for a
/// request or an object no longer there, when its id was made.
const CURSOR_SQL: &str = "
    SELECT COALESCE((
        SELECT t FROM (
            SELECT d.updated_at AS t FROM webhook_deliveries d
             WHERE d.id = $1 AND d.tenant_id = $2 AND NOT $4
            UNION ALL
            SELECT COALESCE(processed_at, received_at) FROM inbound_events
             WHERE id = $1 AND tenant_id = $2 AND mode = $3 AND NOT $4
            UNION ALL
            SELECT finished_at FROM sync_runs
             WHERE id = $1 AND tenant_id = $2 AND mode = $3 AND NOT $4) c
         WHERE t IS NOT NULL LIMIT 1), uuid_v7_time($1))";

/// A tenant's failures in `mode`, newest first, `limit` at most, after the entry
/// `starting_after` (an entry's `id`).
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    mode: Mode,
    limit: i64,
    starting_after: Option<&str>,
) -> Result<Vec<ErrorLogEntry>> {
    let cursor = match starting_after {
        None => None,
        Some(s) => Some(cursor(pool, tenant_id, mode, s).await?),
    };
    let mut rows: Vec<Row> = sqlx::query_as(ERRORS_SQL)
        .bind(tenant_id)
        .bind(mode.as_str())
        .bind(cursor.map(|c| c.0))
        .bind(cursor.map(|c| c.1))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.sort_by_key(|r| std::cmp::Reverse((r.occurred_at, r.id)));
    rows.truncate(limit.max(0) as usize);
    Ok(rows.into_iter().map(entry).collect())
}

async fn cursor(
    pool: &PgPool,
    tenant_id: Uuid,
    mode: Mode,
    starting_after: &str,
) -> Result<(DateTime<Utc>, Uuid)> {
    let invalid = || {
        Error::invalid(
            "parameter_invalid",
            "starting_after",
            "`starting_after` must be the `id` of an entry of this log.",
        )
    };
    let (id, is_request) = match parse_request_id(starting_after) {
        Some(id) => (id, true),
        None => (
            Uuid::try_parse(starting_after).map_err(|_| invalid())?,
            false,
        ),
    };
    let at: DateTime<Utc> = sqlx::query_scalar(CURSOR_SQL)
        .bind(id)
        .bind(tenant_id)
        .bind(mode.as_str())
        .bind(is_request)
        .fetch_one(pool)
        .await?;
    Ok((at, id))
}

fn entry(r: Row) -> ErrorLogEntry {
    let (id, url) = match r.kind {
        ErrorKind::Request => (request_id(r.id), None),
        ErrorKind::WebhookDelivery => (r.id.to_string(), path(queue::WEBHOOK_DELIVERIES, r.id)),
        ErrorKind::InboundEvent => (r.id.to_string(), path(queue::INBOUND_EVENTS, r.id)),
        ErrorKind::SyncRun => (r.id.to_string(), path(queue::SYNC_RUNS, r.id)),
    };
    ErrorLogEntry {
        id,
        kind: r.kind,
        severity: if r.severe {
            Severity::Error
        } else {
            Severity::Warning
        },
        occurred_at: r.occurred_at,
        code: r.code,
        message: r.message,
        url,
    }
}
