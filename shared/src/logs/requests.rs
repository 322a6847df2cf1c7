//! Request logs: one row per authenticated partner API request (`GET /v1/logs/requests`).
//!
//! Entries are collected in memory and written every second (sooner from 1,000 waiting), in
//! one statement per flush: logging never adds a database write to a request. What is kept is
//! the request's shape, never its body, query string or credentials. Memory is bounded: past
//! [`MAX_PENDING`] waiting entries (a long Postgres outage) new ones are dropped and counted
//! (`switchyard_request_logs_dropped_total`).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::telemetry::metrics as m;
use crate::{error::Result, mode::Mode};

const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
const FLUSH_SIZE: usize = 1_000;
/// Entries waiting at most (about 300 bytes each).
pub const MAX_PENDING: usize = 100_000;
const MAX_PATH: usize = 1_024;
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// One request, as the middleware saw it.
#[derive(Clone, Debug)]
pub struct RequestEntry {
    /// The request id's UUIDv7 (`Request-Id: req_<simple uuid>`).
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub mode: Mode,
    pub api_key_id: Uuid,
    pub method: String,
    /// Without the query string.
    pub path: String,
    pub operation: &'static str,
    pub status: u16,
    pub duration_ms: f32,
    pub client_ip: Option<String>,
    pub idempotency_key: Option<String>,
    pub problem_code: Option<String>,
}

#[derive(Default)]
struct Inner {
    pending: Mutex<Vec<RequestEntry>>,
    full: Notify,
}

/// Collects request entries and writes them in batches ([`RequestLogger::run`]).
#[derive(Clone, Default)]
pub struct RequestLogger {
    inner: Arc<Inner>,
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl RequestLogger {
    pub fn record(&self, mut entry: RequestEntry) {
        entry.path = truncate(entry.path, MAX_PATH);
        entry.idempotency_key = entry
            .idempotency_key
            .map(|k| truncate(k, MAX_IDEMPOTENCY_KEY));
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            metrics::counter!(m::REQUEST_LOGS_DROPPED).increment(1);
            return;
        }
        pending.push(entry);
        if pending.len() == FLUSH_SIZE {
            self.inner.full.notify_one();
        }
    }

    /// Writes what was collected since the last flush. On failure the entries are kept for
    /// the next attempt (within [`MAX_PENDING`]).
    pub async fn flush(&self, pool: &PgPool) -> Result<()> {
        let taken =
            std::mem::take(&mut *self.inner.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return Ok(());
        }
        let result = write(pool, &taken).await;
        if result.is_err() {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            let room = MAX_PENDING.saturating_sub(pending.len());
            let kept = taken.len().min(room);
            metrics::counter!(m::REQUEST_LOGS_DROPPED).increment((taken.len() - kept) as u64);
            pending.splice(0..0, taken.into_iter().take(kept));
        }
        result
    }

    /// Flushes every second, or as soon as a batch is full, until `shutdown`; then once more.
    pub async fn run(self, pool: PgPool, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            let stop = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tick.tick() => false,
                _ = self.inner.full.notified() => false,
            };
            if let Err(e) = self.flush(&pool).await {
                tracing::warn!(error = %e, "cannot write request logs; keeping them for later");
                // A day without a partition (no janitor ran for a week) is mended here.
                let _ = crate::retention::partitions::ensure(&pool).await;
            }
            if stop {
                return;
            }
        }
    }
}

async fn write(pool: &PgPool, entries: &[RequestEntry]) -> Result<()> {
    let mut cols: (Vec<_>, Vec<_>, Vec<_>, Vec<_>, Vec<_>, Vec<_>) = Default::default();
    let mut more: (Vec<_>, Vec<_>, Vec<_>, Vec<_>, Vec<_>, Vec<_>) = Default::default();
    for e in entries {
        cols.0.push(e.id);
        cols.1.push(e.tenant_id);
        cols.2.push(e.mode.as_str());
        cols.3.push(e.api_key_id);
        cols.4.push(e.method.as_str());
        cols.5.push(e.path.as_str());
        more.0.push(e.operation);
        more.1.push(e.status as i16);
        more.2.push(e.duration_ms);
        more.3.push(e.client_ip.as_deref());
        more.4.push(e.idempotency_key.as_deref());
        more.5.push(e.problem_code.as_deref());
    }
    sqlx::query(
        "INSERT INTO request_logs (id, tenant_id, mode, api_key_id, method, path, operation,
                                   status, duration_ms, client_ip, idempotency_key, problem_code)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[],
                              $6::text[], $7::text[], $8::int2[], $9::float4[], $10::text[],
                              $11::text[], $12::text[])",
    )
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .bind(cols.4)
    .bind(cols.5)
    .bind(more.0)
    .bind(more.1)
    .bind(more.2)
    .bind(more.3)
    .bind(more.4)
    .bind(more.5)
    .execute(pool)
    .await?;
    Ok(())
}

/// A class of HTTP status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, poem_openapi::Enum)]
pub enum StatusClass {
    #[oai(rename = "2xx")]
    Success,
    #[oai(rename = "3xx")]
    Redirect,
    #[oai(rename = "4xx")]
    ClientError,
    #[oai(rename = "5xx")]
    ServerError,
}

impl StatusClass {
    fn floor(self) -> i16 {
        match self {
            StatusClass::Success => 200,
            StatusClass::Redirect => 300,
            StatusClass::ClientError => 400,
            StatusClass::ServerError => 500,
        }
    }
}

/// What `GET /v1/logs/requests` filters by; every field is optional.
#[derive(Clone, Debug, Default)]
pub struct RequestFilter {
    pub status_class: Option<StatusClass>,
    /// Requests whose path starts with this.
    pub path: Option<String>,
    pub api_key_id: Option<Uuid>,
    pub created_gte: Option<DateTime<Utc>>,
    pub created_lt: Option<DateTime<Utc>>,
}

/// One logged request.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct RequestLog {
    /// The request id (`req_…`), as in the response's `Request-Id` header and in problem
    /// documents.
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The OpenAPI operation id (`createOrder`, …); `other` when no operation matched.
    pub operation: String,
    pub status: u16,
    /// Time spent in Switchyard, from authentication to the response.
    pub duration_ms: f32,
    pub api_key_id: Uuid,
    #[oai(nullable)]
    pub client_ip: Option<String>,
    #[oai(nullable)]
    pub idempotency_key: Option<String>,
    /// The problem document's `code`, for error responses.
    #[oai(nullable)]
    pub problem_code: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    method: String,
    path: String,
    operation: String,
    status: i16,
    duration_ms: f32,
    api_key_id: Uuid,
    client_ip: Option<String>,
    idempotency_key: Option<String>,
    problem_code: Option<String>,
}

/// The `req_…` form of a request id.
pub fn request_id(id: Uuid) -> String {
    format!("req_{}", id.simple())
}

/// The id inside a `req_…` request id.
pub fn parse_request_id(s: &str) -> Option<Uuid> {
    let hex = s.strip_prefix("req_")?;
    (hex.len() == 32)
        .then(|| Uuid::try_parse(hex).ok())
        .flatten()
}

/// When a UUIDv7 was made (millisecond precision).
pub fn uuid_time(id: Uuid) -> DateTime<Utc> {
    id.get_timestamp()
        .and_then(|t| {
            let (secs, nanos) = t.to_unix();
            DateTime::from_timestamp(secs as i64, nanos)
        })
        .unwrap_or_default()
}

/// A tenant's requests in `mode`, newest first, `limit` at most, before `starting_after`.
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    mode: Mode,
    filter: &RequestFilter,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<RequestLog>> {
    // Built per filter, so each shape gets its own plan (and the key filter its index).
    let mut q = QueryBuilder::<Postgres>::new(
        "SELECT id, method, path, operation, status, duration_ms, api_key_id, client_ip,
                idempotency_key, problem_code
           FROM request_logs WHERE tenant_id = ",
    );
    q.push_bind(tenant_id)
        .push(" AND mode = ")
        .push_bind(mode.as_str());
    if let Some(after) = starting_after {
        q.push(" AND id < ").push_bind(after);
    }
    if let Some(class) = filter.status_class {
        q.push(" AND status >= ")
            .push_bind(class.floor())
            .push(" AND status < ")
            .push_bind(class.floor() + 100);
    }
    if let Some(path) = &filter.path {
        q.push(" AND starts_with(path, ").push_bind(path).push(")");
    }
    if let Some(key) = filter.api_key_id {
        q.push(" AND api_key_id = ").push_bind(key);
    }
    if let Some(t) = filter.created_gte {
        q.push(" AND id >= uuid_v7_floor(").push_bind(t).push(")");
    }
    if let Some(t) = filter.created_lt {
        q.push(" AND id < uuid_v7_floor(").push_bind(t).push(")");
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    let rows: Vec<Row> = q.build_query_as().fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|r| RequestLog {
            id: request_id(r.id),
            created_at: uuid_time(r.id),
            method: r.method,
            path: r.path,
            operation: r.operation,
            status: r.status as u16,
            duration_ms: r.duration_ms,
            api_key_id: r.api_key_id,
            client_ip: r.client_ip,
            idempotency_key: r.idempotency_key,
            problem_code: r.problem_code,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_round_trip_and_carry_their_time() {
        let id = Uuid::now_v7();
        assert_eq!(parse_request_id(&request_id(id)), Some(id));
        assert_eq!(parse_request_id("req_xyz"), None);
        assert_eq!(parse_request_id(&id.to_string()), None);
        let age = Utc::now() - uuid_time(id);
        assert!(age.num_seconds().abs() < 5, "{age}");
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let s = "é".repeat(600);
        let t = truncate(s, MAX_PATH);
        assert!(t.len() <= MAX_PATH && t.chars().all(|c| c == 'é'));
    }
}
