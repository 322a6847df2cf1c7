//! One delivery attempt: sign, POST, classify, log; then decide what the ledger does next.

use std::{
    sync::LazyLock,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use reqwest::Url;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{
    credentials::{Credentials, REDACTED, Sealed},
    signing, webhook_id,
};
use crate::{
    config::RetrySchedule,
    error::Result,
    jobs::{self, ClaimedJob, Outcome, finish_sql},
    net::{self, Egress, ResolveError},
};

/// Request timeout where neither the endpoint nor the caller sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Response bytes kept in the attempt log.
pub const RESPONSE_BODY_CAP: usize = 64 * 1024;
/// Largest response body read; a bigger one fails the attempt (`body_too_large`).
pub const RESPONSE_READ_LIMIT: usize = 1024 * 1024;
/// Response headers kept in the attempt log, and the longest value kept of each.
const RESPONSE_HEADERS_CAP: usize = 64;
const HEADER_VALUE_CAP: usize = 1024;
/// A connection failure this early gets one immediate second try within the same attempt
/// (a stale keep-alive connection or a restarting load balancer, not a down endpoint).
const RESET_RETRY_WINDOW: Duration = Duration::from_secs(1);

/// How attempts turn into retries: the deployment's defaults and the throttling rules.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Retry schedule of endpoints without their own.
    pub schedule: RetrySchedule,
    /// Request timeout of endpoints without their own.
    pub timeout: Duration,
    /// Least wait after a throttling answer (429, 502, 503, 504) or a timeout.
    pub throttle_delay: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_max: Duration,
}

/// Everything an attempt needs, read in one query.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Target {
    pub delivery_id: Uuid,
    pub delivery_status: String,
    pub tenant_id: Uuid,
    pub message_id: Uuid,
    /// `None` once the retention period removed it.
    pub payload: Option<String>,
    pub endpoint_id: Uuid,
    pub url: String,
    pub endpoint_active: bool,
    /// Secrets, keys and auth, still sealed.
    #[sqlx(flatten)]
    pub sealed: Sealed,
    pub retry_schedule_ms: Option<Vec<i32>>,
    pub timeout_ms: Option<i32>,
    /// The endpoint's circuit breaker (`closed`, `open`, `half_open`; `None` before its first
    /// dispatch), how long it pauses, and its probe.
    pub breaker: Option<String>,
    pub paused_until: Option<DateTime<Utc>>,
    pub probe_job: Option<Uuid>,
    /// Set while an earlier event of the same order to the same endpoint is still pending, or
    /// (FIFO endpoints) any earlier message to it: when that one is due next. This delivery
    /// waits for it.
    pub waiting_for: Option<DateTime<Utc>>,
}

impl Target {
    /// The endpoint's own schedule, or the default.
    pub fn schedule(&self, policy: &Policy) -> RetrySchedule {
        match &self.retry_schedule_ms {
            Some(ms) => RetrySchedule(
                ms.iter()
                    .map(|m| Duration::from_millis((*m).max(0) as u64))
                    .collect(),
            ),
            None => policy.schedule.clone(),
        }
    }

    pub fn timeout(&self, policy: &Policy) -> Duration {
        self.timeout_ms
            .map_or(policy.timeout, |ms| Duration::from_millis(ms.max(1) as u64))
    }
}

pub async fn load_target(pool: &PgPool, delivery_id: Uuid) -> Result<Option<Target>> {
    Ok(sqlx::query_as::<_, Target>(
        "SELECT d.id AS delivery_id, d.status AS delivery_status, d.tenant_id, d.message_id,
                m.payload, e.id AS endpoint_id, e.url,
                (e.status = 'enabled' AND e.deleted_at IS NULL) AS endpoint_active,
                e.secret_ciphertext, e.secret_key_id, e.previous_secrets, e.ed25519_ciphertext,
                e.ed25519_key_id, e.headers_ciphertext, e.headers_key_id, e.auth_ciphertext,
                e.auth_key_id, e.retry_schedule_ms, e.timeout_ms,
                g.breaker, g.paused_until, g.probe_job,
                LEAST(
                  (SELECT min(COALESCE(p.next_attempt_at, now())) FROM webhook_deliveries p
                    WHERE d.ordering_key IS NOT NULL AND p.endpoint_id = d.endpoint_id
                      AND p.ordering_key = d.ordering_key AND p.ordering_seq < d.ordering_seq
                      AND p.status = 'pending'),
                  (SELECT min(COALESCE(p.next_attempt_at, now())) FROM webhook_deliveries p
                    WHERE e.fifo AND p.endpoint_id = d.endpoint_id
                      AND p.message_id < d.message_id AND p.status = 'pending')) AS waiting_for
           FROM webhook_deliveries d
           JOIN webhook_messages m ON m.id = d.message_id
           JOIN webhook_endpoints e ON e.id = d.endpoint_id
           LEFT JOIN dispatch_groups g ON g.key = d.endpoint_id
          WHERE d.id = $1",
    )
    .bind(delivery_id)
    .fetch_optional(pool)
    .await?)
}

/// What happened on the wire.
#[derive(Clone, Debug, Default)]
pub struct AttemptResult {
    pub webhook_timestamp: i64,
    pub status_code: Option<u16>,
    /// `dns`, `connect`, `tls`, `timeout`, `http_status`, `blocked_address`, `circuit_open`
    /// or `body_too_large`; `None` on success.
    pub error_class: Option<&'static str>,
    pub error_message: Option<String>,
    pub duration: Duration,
    /// Time to the response headers.
    pub ttfb: Option<Duration>,
    /// Time to open a new connection (TCP + TLS); `None` when a pooled one was reused.
    pub connect: Option<Duration>,
    pub remote_ip: Option<String>,
    /// Request headers as sent, secrets redacted.
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub response_body: Option<String>,
    pub response_size: Option<i64>,
    /// The endpoint's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl AttemptResult {
    /// Only 2xx counts (Standard Webhooks); redirects are failures.
    pub fn succeeded(&self) -> bool {
        self.error_class.is_none() && self.status_code.is_some_and(|s| (200..300).contains(&s))
    }

    /// 429, 502, 503, 504 and timeouts mean "slow down", not "broken".
    pub fn throttled(&self) -> bool {
        matches!(self.status_code, Some(429 | 502 | 503 | 504))
            || self.error_class == Some("timeout")
    }

    fn failed(
        ts: i64,
        started: Instant,
        class: &'static str,
        message: String,
        request_headers: Vec<(String, String)>,
    ) -> Self {
        AttemptResult {
            webhook_timestamp: ts,
            error_class: Some(class),
            error_message: Some(message),
            duration: started.elapsed(),
            request_headers,
            ..Default::default()
        }
    }
}

/// Signs and POSTs the message to the endpoint. Never fails: every failure is a classified
/// outcome to log and retry.
pub async fn send(
    client: &reqwest::Client,
    target: &Target,
    credentials: &Credentials,
    egress: &Egress,
    timeout: Duration,
) -> AttemptResult {
    let started = Instant::now();
    let ts = Utc::now().timestamp();
    let msg_id = webhook_id(target.message_id);
    let payload = target.payload.as_deref().unwrap_or_default();
    let signature = signing::signature_header(
        &credentials.hmac_keys,
        credentials.ed25519.as_ref(),
        &msg_id,
        ts,
        payload.as_bytes(),
    );
    let mut sent_headers: Vec<(String, String)> = vec![
        ("content-type".into(), "application/json".into()),
        ("user-agent".into(), net::USER_AGENT.into()),
        ("webhook-id".into(), msg_id),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), signature),
    ];
    // What the attempt log shows: the same, with credential values redacted.
    let headers: Vec<(String, String)> = sent_headers
        .iter()
        .cloned()
        .chain(
            credentials
                .headers
                .iter()
                .map(|(k, _)| (k.clone(), REDACTED.to_owned())),
        )
        .collect();
    sent_headers.extend(credentials.headers.iter().cloned());
    let url = match Url::parse(&target.url) {
        Ok(u) => u,
        Err(e) => {
            let msg = format!("invalid URL: {e}");
            return AttemptResult::failed(ts, started, "blocked_address", msg, headers);
        }
    };
    if let Err(e) = net::check_url(&url, egress) {
        return AttemptResult::failed(ts, started, "blocked_address", e.to_string(), headers);
    }
    let build = || {
        let mut request = client.post(url.clone()).timeout(timeout);
        for (name, value) in &sent_headers {
            request = request.header(name, value);
        }
        request.body(payload.to_owned())
    };
    let (mut sent, mut connect) = net::timed(build().send()).await;
    let mut reset_note = None;
    if let Err(e) = &sent {
        let (class, message) = classify(e);
        if class == "connect" && started.elapsed() < RESET_RETRY_WINDOW {
            reset_note = Some(message);
            (sent, connect) = net::timed(build().send()).await;
        }
    }
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            let (class, mut message) = classify(&e);
            if let Some(first) = reset_note {
                message = format!("{message} (after an immediate retry of: {first})");
            }
            let mut r = AttemptResult::failed(ts, started, class, message, headers);
            r.connect = connect;
            return r;
        }
    };
    let ttfb = started.elapsed();
    let status = response.status().as_u16();
    let remote_ip = response.remote_addr().map(|a| a.ip().to_string());
    let response_headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .take(RESPONSE_HEADERS_CAP)
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes());
            let v: String = v.chars().take(HEADER_VALUE_CAP).collect();
            (k.as_str().to_owned(), v)
        })
        .collect();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, Utc::now()));
    let declared = response.content_length();
    let mut body = Vec::new();
    let mut seen: usize = 0;
    // The status decides the outcome; a body that breaks off only shortens the log.
    while seen <= RESPONSE_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = RESPONSE_BODY_CAP.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                seen += chunk.len();
            }
            Ok(None) | Err(_) => break,
        }
    }
    let too_large =
        seen > RESPONSE_READ_LIMIT || declared.is_some_and(|d| d > RESPONSE_READ_LIMIT as u64);
    let (error_class, error_message) = if too_large {
        (
            Some("body_too_large"),
            Some(format!(
                "HTTP {status} with a response body over {} bytes",
                RESPONSE_READ_LIMIT
            )),
        )
    } else if !(200..300).contains(&status) {
        (Some("http_status"), Some(format!("HTTP {status}")))
    } else {
        (None, None)
    };
    AttemptResult {
        webhook_timestamp: ts,
        status_code: Some(status),
        error_class,
        error_message,
        duration: started.elapsed(),
        ttfb: Some(ttfb),
        connect,
        remote_ip,
        request_headers: headers,
        response_headers,
        response_body: Some(String::from_utf8_lossy(&body).into_owned()),
        response_size: Some(declared.map_or(seen as i64, |d| d as i64)),
        retry_after,
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - now).to_std().ok()
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
    } else {
        // Refused, reset, closed before a response: the endpoint could not be talked to.
        ("connect", text)
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

/// What the ledger does after an attempt.
#[derive(Clone, Debug)]
pub struct Decision {
    pub outcome: Outcome,
    /// The delivery's new status: `succeeded`, `pending` or `failed`.
    pub status: &'static str,
    /// Disable the endpoint, for this reason (`gone`).
    pub disable: Option<&'static str>,
}

/// The ledger outcome after attempt number `attempt` under `schedule`.
pub fn decide(
    result: &AttemptResult,
    attempt: i32,
    schedule: &RetrySchedule,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Decision {
    if result.succeeded() {
        return Decision {
            outcome: Outcome::Succeeded,
            status: "succeeded",
            disable: None,
        };
    }
    let error = result
        .error_message
        .clone()
        .unwrap_or_else(|| "failed".to_owned());
    if result.status_code == Some(410) {
        // Standard Webhooks: 410 Gone means "stop sending"; the endpoint is disabled.
        return Decision {
            outcome: Outcome::Dead {
                error: format!("{error}: the endpoint is gone and has been disabled"),
            },
            status: "failed",
            disable: Some("gone"),
        };
    }
    let Some(base) = schedule.delay_after(attempt) else {
        return Decision {
            outcome: Outcome::Dead { error },
            status: "failed",
            disable: None,
        };
    };
    let mut delay = jitter(base);
    if result.throttled() {
        delay = delay.max(policy.throttle_delay);
    }
    if let Some(asked) = result.retry_after {
        delay = delay.max(asked.min(policy.retry_after_max));
    }
    let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
    Decision {
        outcome: Outcome::Retry { at, error },
        status: "pending",
        disable: None,
    }
}

/// ±20 % so that retries of a burst do not arrive as a burst.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.8..=1.2))
}

fn headers_json(h: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Array(h.iter().map(|(k, v)| serde_json::json!([k, v])).collect())
}

/// When an endpoint that only fails is disabled.
#[derive(Clone, Debug)]
pub struct HealthPolicy {
    /// Consecutive failed attempts.
    pub disable_after_failures: i32,
    /// Time since the first failure with no success in between.
    pub disable_after: Duration,
}

/// What recording an attempt did.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Recorded {
    /// False when the lease was lost meanwhile: the attempt is logged, the outcome is not.
    pub recorded: bool,
    /// The endpoint was disabled by this attempt, for this reason (`gone`, `failing`).
    pub disabled: Option<String>,
    /// Deliveries to this endpoint are due and waiting for a slot: the one just freed.
    pub group_waiting: bool,
}

/// Columns of an attempt row, in the order [`bind_attempt`] binds them (18 values).
const ATTEMPT_COLUMNS: &str = "id, tenant_id, delivery_id, endpoint_id, message_id, attempt, \
    webhook_timestamp, status_code, error_class, error_message, duration_ms, response_body, \
    response_size, remote_ip, ttfb_ms, connect_ms, request_headers, response_headers";

/// `INSERT INTO webhook_attempts … VALUES ($first, …, $first+17)`.
fn insert_attempt_sql(first: usize) -> String {
    let values: Vec<String> = (first..first + 18).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS}) VALUES ({})",
        values.join(", ")
    )
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the 18 values of [`insert_attempt_sql`].
fn bind_attempt<'q>(
    query: PgQuery<'q>,
    target: &Target,
    attempt: i32,
    result: &'q AttemptResult,
) -> PgQuery<'q> {
    let ms = |d: Duration| d.as_millis().min(i32::MAX as u128) as i32;
    query
        .bind(Uuid::now_v7())
        .bind(target.tenant_id)
        .bind(target.delivery_id)
        .bind(target.endpoint_id)
        .bind(target.message_id)
        .bind(attempt)
        .bind(result.webhook_timestamp)
        .bind(result.status_code.map(i32::from))
        .bind(result.error_class)
        .bind(&result.error_message)
        .bind(ms(result.duration))
        .bind(&result.response_body)
        .bind(result.response_size)
        .bind(&result.remote_ip)
        .bind(result.ttfb.map(ms))
        .bind(result.connect.map(ms))
        .bind(headers_json(&result.request_headers))
        .bind(headers_json(&result.response_headers))
}

/// The statement of [`record`]: `$1..$6` finish the job, `$7..$24` are the attempt (`$9` the
/// delivery, `$10` the endpoint, `$12` the attempt number, `$14` the status code), then the
/// delivery's new status, next attempt, disable reason, success flag and health thresholds.
static RECORD_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH fin AS ({finish} RETURNING id),
         attempt AS ({attempt}),
         delivery AS (
            UPDATE webhook_deliveries
               SET status = $25, attempts = GREATEST(attempts, $12), last_status_code = $14,
                   next_attempt_at = $26, updated_at = now()
             WHERE id = $9),
         verdict AS (
            SELECT CASE WHEN status <> 'enabled' OR $28 THEN NULL
                        WHEN $27::text IS NOT NULL THEN $27::text
                        WHEN consecutive_failures + 1 >= $29
                          OR COALESCE(failing_since, now()) <= now() - make_interval(secs => $30)
                        THEN 'failing'
                   END AS reason
              FROM webhook_endpoints WHERE id = $10),
         endpoint AS (
            -- A success only writes the row when it ends a run of failures.
            UPDATE webhook_endpoints w
               SET consecutive_failures = CASE WHEN $28 THEN 0 ELSE w.consecutive_failures + 1 END,
                   failing_since = CASE WHEN $28 THEN NULL ELSE COALESCE(w.failing_since, now()) END,
                   status = CASE WHEN v.reason IS NULL THEN w.status ELSE 'disabled' END,
                   disabled_reason = COALESCE(v.reason, w.disabled_reason),
                   disabled_at = CASE WHEN v.reason IS NULL THEN w.disabled_at ELSE now() END,
                   updated_at = CASE WHEN v.reason IS NULL THEN w.updated_at ELSE now() END
              FROM verdict v
             WHERE w.id = $10
               AND (NOT $28 OR w.consecutive_failures > 0 OR w.failing_since IS NOT NULL)
         RETURNING v.reason)
         SELECT EXISTS (SELECT 1 FROM fin) AS recorded, (SELECT reason FROM endpoint) AS disabled,
                EXISTS (SELECT 1 FROM jobs w WHERE w.group_key = $10 AND w.state = 'pending'
                           AND w.run_at <= now()) AS group_waiting",
        finish = finish_sql!(),
        attempt = insert_attempt_sql(7),
    )
});

/// In one statement: logs the attempt, moves the delivery to its new status, records the job's
/// outcome, and keeps the endpoint's health (consecutive failures, failing since; disables it
/// on 410 or when it has only failed for too long). The attempt is logged even if the lease
/// was lost meanwhile (it happened).
pub async fn record(
    pool: &PgPool,
    job: &ClaimedJob,
    owner: &str,
    decision: &Decision,
    target: &Target,
    result: &AttemptResult,
    health: &HealthPolicy,
) -> Result<Recorded> {
    let next_attempt_at = match &decision.outcome {
        Outcome::Retry { at, .. } => Some(*at),
        _ => None,
    };
    let query = jobs::bind_finish(
        sqlx::query(sqlx::AssertSqlSafe(RECORD_SQL.as_str())),
        job,
        owner,
        &decision.outcome,
    );
    let row = bind_attempt(query, target, job.attempt, result)
        .bind(decision.status)
        .bind(next_attempt_at)
        .bind(decision.disable)
        .bind(result.succeeded())
        .bind(health.disable_after_failures)
        .bind(health.disable_after.as_secs_f64())
        .fetch_one(pool)
        .await?;
    Ok(<Recorded as sqlx::FromRow<_>>::from_row(&row)?)
}

/// Removes message payloads older than `retention`, in bounded batches; returns how many.
pub async fn purge_payloads(pool: &PgPool, retention: Duration) -> Result<u64> {
    let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
    let n = sqlx::query(
        "UPDATE webhook_messages SET payload = NULL, payload_removed_at = now()
          WHERE id IN (SELECT id FROM webhook_messages
                        WHERE payload IS NOT NULL AND id < $1 ORDER BY id LIMIT 5000)",
    )
    .bind(super::uuid_v7_floor(cutoff))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}

/// Logs a test send (no job, no retries) and finishes its delivery; returns the attempt id.
pub async fn record_test(pool: &PgPool, target: &Target, result: &AttemptResult) -> Result<Uuid> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH attempt AS ({} RETURNING id),
             delivery AS (
                UPDATE webhook_deliveries
                   SET status = CASE WHEN $19 THEN 'succeeded' ELSE 'failed' END, attempts = 1,
                       last_status_code = $8, updated_at = now()
                 WHERE id = $3)
             SELECT id FROM attempt",
            insert_attempt_sql(1)
        )
    });
    let id: Uuid = bind_attempt(
        sqlx::query(sqlx::AssertSqlSafe(SQL.as_str())),
        target,
        1,
        result,
    )
    .bind(result.succeeded())
    .fetch_one(pool)
    .await?
    .try_get("id")?;
    Ok(id)
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
            status_code: status,
            error_class: match status {
                Some(200..300) => None,
                Some(_) => Some("http_status"),
                None => Some("connect"),
            },
            ..Default::default()
        }
    }

    fn policy() -> Policy {
        Policy {
            schedule: RetrySchedule(vec![]),
            timeout: Duration::from_secs(15),
            throttle_delay: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(3600),
        }
    }

    fn wait(d: &Decision, now: DateTime<Utc>) -> i64 {
        match &d.outcome {
            Outcome::Retry { at, .. } => (*at - now).num_milliseconds(),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn only_2xx_succeeds_and_the_schedule_decides_the_rest() {
        let schedule = RetrySchedule(vec![Duration::from_secs(5), Duration::from_secs(300)]);
        let now = Utc::now();
        let p = policy();
        assert!(matches!(
            decide(&result(Some(204)), 1, &schedule, &p, now).outcome,
            Outcome::Succeeded
        ));
        for status in [Some(301), Some(500), None] {
            let d = decide(&result(status), 1, &schedule, &p, now);
            let w = wait(&d, now);
            assert!((4000..=6000).contains(&w), "5 s ± 20 %, got {w} ms");
            assert_eq!(d.status, "pending");
        }
        let d = decide(&result(Some(500)), 3, &schedule, &p, now);
        assert!(matches!(d.outcome, Outcome::Dead { .. }));
        assert_eq!(d.status, "failed");
        assert_eq!(d.disable, None);
    }

    #[test]
    fn throttling_waits_at_least_the_penalty_and_retry_after_is_honoured_up_to_a_cap() {
        let schedule = RetrySchedule(vec![Duration::from_secs(5); 3]);
        let now = Utc::now();
        let p = policy();
        for status in [429, 502, 503, 504] {
            let w = wait(&decide(&result(Some(status)), 1, &schedule, &p, now), now);
            assert!(w >= 60_000, "{status} waits ≥ 60 s, got {w} ms");
        }
        let timeout = AttemptResult {
            error_class: Some("timeout"),
            ..Default::default()
        };
        assert!(wait(&decide(&timeout, 1, &schedule, &p, now), now) >= 60_000);
        let mut asked = result(Some(500));
        asked.retry_after = Some(Duration::from_secs(120));
        assert_eq!(wait(&decide(&asked, 1, &schedule, &p, now), now), 120_000);
        asked.retry_after = Some(Duration::from_secs(86_400 * 30));
        assert_eq!(
            wait(&decide(&asked, 1, &schedule, &p, now), now),
            3_600_000,
            "clamped"
        );
        // A Retry-After shorter than the schedule does not hurry the retry.
        asked.retry_after = Some(Duration::from_secs(1));
        assert!(wait(&decide(&asked, 1, &schedule, &p, now), now) >= 4000);
    }

    #[test]
    fn gone_disables_the_endpoint_and_stops() {
        let schedule = RetrySchedule(vec![Duration::from_secs(5); 3]);
        let d = decide(&result(Some(410)), 1, &schedule, &policy(), Utc::now());
        assert!(matches!(d.outcome, Outcome::Dead { .. }));
        assert_eq!(d.disable, Some("gone"));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            None
        );
    }
}
