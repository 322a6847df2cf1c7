//! One delivery attempt: sign, POST, classify, log; then decide what the ledger does next.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Url;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{signing, webhook_id};
use crate::{
    config::RetrySchedule,
    error::Result,
    jobs::{self, ClaimedJob, Outcome, finish_sql},
    net::{self, ResolveError},
};

/// Response bytes kept in the attempt log.
pub const RESPONSE_BODY_CAP: usize = 64 * 1024;
/// Bytes read past the cap only to learn the body's size; beyond this we stop reading.
const RESPONSE_READ_LIMIT: usize = 1024 * 1024;

/// Everything an attempt needs, read in one query.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Target {
    pub delivery_id: Uuid,
    pub delivery_status: String,
    pub tenant_id: Uuid,
    pub message_id: Uuid,
    pub payload: String,
    pub endpoint_id: Uuid,
    pub url: String,
    pub endpoint_active: bool,
    pub secret_ciphertext: Vec<u8>,
    pub secret_key_id: String,
    /// Set while an earlier event of the same order to the same endpoint is still pending:
    /// when that one is due next. This delivery waits for it.
    pub waiting_for: Option<DateTime<Utc>>,
}

pub async fn load_target(pool: &PgPool, delivery_id: Uuid) -> Result<Option<Target>> {
    Ok(sqlx::query_as::<_, Target>(
        "SELECT d.id AS delivery_id, d.status AS delivery_status, d.tenant_id, d.message_id,
                m.payload, e.id AS endpoint_id, e.url,
                (e.status = 'enabled' AND e.deleted_at IS NULL) AS endpoint_active,
                e.secret_ciphertext, e.secret_key_id,
                (SELECT min(COALESCE(p.next_attempt_at, now())) FROM webhook_deliveries p
                  WHERE d.ordering_key IS NOT NULL AND p.endpoint_id = d.endpoint_id
                    AND p.ordering_key = d.ordering_key AND p.ordering_seq < d.ordering_seq
                    AND p.status = 'pending') AS waiting_for
           FROM webhook_deliveries d
           JOIN webhook_messages m ON m.id = d.message_id
           JOIN webhook_endpoints e ON e.id = d.endpoint_id
          WHERE d.id = $1",
    )
    .bind(delivery_id)
    .fetch_optional(pool)
    .await?)
}

/// What happened on the wire.
#[derive(Clone, Debug)]
pub struct AttemptResult {
    pub webhook_timestamp: i64,
    pub status_code: Option<u16>,
    pub error_class: Option<&'static str>,
    pub error_message: Option<String>,
    pub duration: Duration,
    pub response_body: Option<String>,
    pub response_size: Option<i64>,
}

impl AttemptResult {
    /// Only 2xx counts (Standard Webhooks); redirects are failures.
    pub fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|s| (200..300).contains(&s))
    }

    fn failed(ts: i64, started: Instant, class: &'static str, message: String) -> Self {
        AttemptResult {
            webhook_timestamp: ts,
            status_code: None,
            error_class: Some(class),
            error_message: Some(message),
            duration: started.elapsed(),
            response_body: None,
            response_size: None,
        }
    }
}

/// Signs and POSTs the message to the endpoint. Never fails: every failure is a classified
/// outcome to log and retry.
pub async fn send(
    client: &reqwest::Client,
    target: &Target,
    key: &[u8],
    allow_private: bool,
) -> AttemptResult {
    let started = Instant::now();
    let ts = Utc::now().timestamp();
    let url = match Url::parse(&target.url) {
        Ok(u) => u,
        Err(e) => return AttemptResult::failed(ts, started, "invalid_url", e.to_string()),
    };
    if let Err(e) = net::check_url(&url, allow_private) {
        return AttemptResult::failed(ts, started, "blocked_address", e.to_string());
    }
    let msg_id = webhook_id(target.message_id);
    let signature = signing::sign(key, &msg_id, ts, target.payload.as_bytes());
    let request = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(target.payload.clone());
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let (class, message) = classify(&e);
            return AttemptResult::failed(ts, started, class, message);
        }
    };
    let status = response.status().as_u16();
    let declared = response.content_length();
    let mut body = Vec::new();
    let mut seen: usize = 0;
    // The status decides the outcome; a body that breaks off or never ends only shortens the log.
    while seen < RESPONSE_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = RESPONSE_BODY_CAP.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                seen += chunk.len();
            }
            Ok(None) | Err(_) => break,
        }
    }
    AttemptResult {
        webhook_timestamp: ts,
        status_code: Some(status),
        error_class: (!(200..300).contains(&status)).then_some("http_status"),
        error_message: (!(200..300).contains(&status)).then(|| format!("HTTP {status}")),
        duration: started.elapsed(),
        response_body: Some(String::from_utf8_lossy(&body).into_owned()),
        response_size: Some(declared.map_or(seen as i64, |d| d as i64)),
    }
}

/// Maps a transport error to an error class by walking its cause chain.
fn classify(e: &reqwest::Error) -> (&'static str, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<ResolveError>() {
            return match r {
                ResolveError::Blocked { .. } => ("blocked_address", r.to_string()),
                ResolveError::Lookup { .. } => ("dns", r.to_string()),
            };
        }
        let io_inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<rustls::Error>());
        if s.is::<rustls::Error>() || io_inner {
            return ("tls", error_chain(e));
        }
        source = s.source();
    }
    let text = error_chain(e);
    if e.is_timeout() {
        ("timeout", text)
    } else if e.is_connect() {
        ("connect", text)
    } else {
        ("request", text)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The ledger outcome and delivery status after an attempt.
pub fn decide(
    result: &AttemptResult,
    attempt: i32,
    schedule: &RetrySchedule,
    now: DateTime<Utc>,
) -> (Outcome, &'static str) {
    if result.succeeded() {
        return (Outcome::Succeeded, "succeeded");
    }
    let error = result
        .error_message
        .clone()
        .unwrap_or_else(|| "failed".to_owned());
    match schedule.delay_after(attempt) {
        Some(delay) => {
            let at = now + chrono::Duration::from_std(jitter(delay)).unwrap_or_default();
            (Outcome::Retry { at, error }, "pending")
        }
        None => (Outcome::Dead { error }, "failed"),
    }
}

/// ±20 % so that retries of a burst do not arrive as a burst.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.8..=1.2))
}

/// In one statement: logs the attempt, moves the delivery to `status` and records the job's
/// outcome. The attempt is logged even if the lease was lost meanwhile (it happened); the
/// return value says whether the outcome was recorded.
#[allow(clippy::too_many_arguments)]
pub async fn record(
    pool: &PgPool,
    job: &ClaimedJob,
    owner: &str,
    outcome: &Outcome,
    target: &Target,
    result: &AttemptResult,
    status: &str,
    next_attempt_at: Option<DateTime<Utc>>,
) -> Result<bool> {
    let done = jobs::bind_finish(
        sqlx::query(concat!(
            "WITH attempt AS (
                INSERT INTO webhook_attempts
                    (id, tenant_id, delivery_id, endpoint_id, message_id, attempt, webhook_timestamp,
                     status_code, error_class, error_message, duration_ms, response_body, response_size)
                VALUES ($7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)),
             delivery AS (
                UPDATE webhook_deliveries
                   SET status = $20, attempts = GREATEST(attempts, $12), last_status_code = $14,
                       next_attempt_at = $21, updated_at = now()
                 WHERE id = $9)
             ",
            finish_sql!()
        )),
        job,
        owner,
        outcome,
    )
    .bind(Uuid::now_v7())
    .bind(target.tenant_id)
    .bind(target.delivery_id)
    .bind(target.endpoint_id)
    .bind(target.message_id)
    .bind(job.attempt)
    .bind(result.webhook_timestamp)
    .bind(result.status_code.map(i32::from))
    .bind(result.error_class)
    .bind(&result.error_message)
    .bind(result.duration.as_millis().min(i32::MAX as u128) as i32)
    .bind(&result.response_body)
    .bind(result.response_size)
    .bind(status)
    .bind(next_attempt_at)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Ends a delivery without an attempt (endpoint deleted, attempts exhausted by crashes).
pub async fn close(conn: &mut PgConnection, delivery_id: Uuid, status: &str) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $2, next_attempt_at = NULL, updated_at = now()
          WHERE id = $1",
    )
    .bind(delivery_id)
    .bind(status)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: Option<u16>) -> AttemptResult {
        AttemptResult {
            webhook_timestamp: 0,
            status_code: status,
            error_class: None,
            error_message: None,
            duration: Duration::ZERO,
            response_body: None,
            response_size: None,
        }
    }

    #[test]
    fn only_2xx_succeeds_and_the_schedule_decides_the_rest() {
        let schedule = RetrySchedule(vec![Duration::from_secs(5), Duration::from_secs(300)]);
        let now = Utc::now();
        assert!(matches!(
            decide(&result(Some(204)), 1, &schedule, now).0,
            Outcome::Succeeded
        ));
        for status in [Some(301), Some(500), None] {
            let (o, s) = decide(&result(status), 1, &schedule, now);
            let Outcome::Retry { at, .. } = o else {
                panic!("expected retry")
            };
            let wait = (at - now).num_milliseconds();
            assert!((4000..=6000).contains(&wait), "5 s ± 20 %, got {wait} ms");
            assert_eq!(s, "pending");
        }
        let (o, s) = decide(&result(Some(500)), 3, &schedule, now);
        assert!(matches!(o, Outcome::Dead { .. }));
        assert_eq!(s, "failed");
    }
}
