//! What an attempt means for the ledger: the target it is made to (read in one query), and the
//! decision after it (succeeded, retry when, give up, disable the endpoint). The wire is in
//! [`super::send`], the recording in [`super::record`].

use std::{sync::LazyLock, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{credentials::Sealed, send::AttemptResult};
use super::{deliveries::DeliveryStatus, retry_schedule::RetrySchedule};
use crate::{destinations::DestinationKind, dispatch::BreakerState, error::Result, jobs::Outcome};

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
    pub delivery_status: DeliveryStatus,
    pub tenant_id: Uuid,
    pub message_id: Uuid,
    /// `None` once the retention period removed it.
    pub payload: Option<String>,
    /// The W3C trace context the message's event was written under, if any.
    pub traceparent: Option<String>,
    pub endpoint_id: Uuid,
    pub url: String,
    /// How the delivery leaves, and its settings without the secrets (`crate::destinations`).
    pub kind: DestinationKind,
    pub config: Option<sqlx::types::Json<serde_json::Value>>,
    pub description: Option<String>,
    pub endpoint_active: bool,
    /// Secrets, keys and auth, still sealed.
    #[sqlx(flatten)]
    pub sealed: Sealed,
    pub retry_schedule_ms: Option<Vec<i32>>,
    pub timeout_ms: Option<i32>,
    /// The endpoint's circuit breaker (`None` before its first dispatch), how long it pauses,
    /// and its probe.
    pub breaker: Option<BreakerState>,
    pub paused_until: Option<DateTime<Utc>>,
    pub probe_job: Option<Uuid>,
    /// Set while an earlier event of the same order to the same endpoint is still pending, or
    /// (FIFO endpoints) any earlier message to it, or an earlier event of the tenant not yet
    /// fanned out: when the first of those is due next (it goes before the others). This
    /// delivery waits for it. Each is one probe of the index
    /// whose order the subquery names (`webhook_deliveries_ordering`, `_fifo`); the batch pool
    /// rules out sorts (`db::connect_for_batches`), so when a young table's costs tie, the
    /// ordering probe still cannot take the FIFO index, sort, and walk an endpoint's whole
    /// pending backlog.
    pub waiting_for: Option<DateTime<Utc>>,
    /// The database's clock when the target was read: every time decision (breaker pause,
    /// secret expiry) compares against it, never against this host's clock.
    pub db_now: DateTime<Utc>,
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

    /// The endpoint's own request timeout, or the deployment's.
    pub fn timeout(&self, policy: &Policy) -> Duration {
        self.timeout_or(policy.timeout)
    }

    /// The endpoint's own request timeout, or `default` (test sends, which have no policy).
    pub fn timeout_or(&self, default: Duration) -> Duration {
        self.timeout_ms
            .map_or(default, |ms| Duration::from_millis(ms.max(1) as u64))
    }
}

/// The endpoint's columns of a [`Target`] (prefix `e.`; `g.` its dispatch group).
const ENDPOINT_COLUMNS: &str = "e.id AS endpoint_id, e.url, e.kind, e.config, e.description,
    (e.status = 'enabled' AND e.deleted_at IS NULL) AS endpoint_active,
    e.secret_ciphertext, e.secret_key_id, e.previous_secrets, e.ed25519_ciphertext,
    e.ed25519_key_id, e.headers_ciphertext, e.headers_key_id, e.auth_ciphertext,
    e.auth_key_id, e.config_ciphertext, e.config_key_id, e.retry_schedule_ms, e.timeout_ms, g.breaker, g.paused_until, g.probe_job,
    now() AS db_now";

/// The statement of [`load_targets`] (public so a test can check its plan).
pub static LOAD_TARGETS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT d.id AS delivery_id, d.status AS delivery_status, d.tenant_id, d.message_id,
            m.payload, m.traceparent, {ENDPOINT_COLUMNS},
            LEAST(
              (SELECT COALESCE(p.next_attempt_at, now()) FROM webhook_deliveries p
                WHERE d.ordering_key IS NOT NULL AND p.endpoint_id = d.endpoint_id
                  AND p.ordering_key = d.ordering_key AND p.ordering_seq < d.ordering_seq
                  AND p.status = 'pending'
                ORDER BY p.endpoint_id, p.ordering_key, p.ordering_seq LIMIT 1),
              (SELECT COALESCE(p.next_attempt_at, now()) FROM webhook_deliveries p
                WHERE e.fifo AND p.endpoint_id = d.endpoint_id
                  AND p.message_id < d.message_id AND p.status = 'pending'
                ORDER BY p.endpoint_id, p.message_id LIMIT 1),
              -- FIFO: an earlier event of the tenant (a message's id is its event's) whose
              -- fan-out has not run yet may still make a delivery to this endpoint, which
              -- goes first (in either mode: a job has no mode). Waiting or queued fan-outs by
              -- their own index (`jobs_fan_outs_waiting`), running ones among the few jobs
              -- running.
              (SELECT f.t FROM (
                 SELECT CASE WHEN j.state = 'pending' THEN GREATEST(j.run_at, now())
                             ELSE now() END AS t
                   FROM jobs j
                  WHERE j.queue = 'event_fan_out' AND j.state IN ('pending', 'queued')
                    AND j.tenant_id = d.tenant_id AND j.subject_id < d.message_id
                 UNION ALL
                 SELECT now() FROM jobs j
                  WHERE j.state = 'running' AND j.queue = 'event_fan_out'
                    AND j.tenant_id = d.tenant_id AND j.subject_id < d.message_id) f
                WHERE e.fifo LIMIT 1)) AS waiting_for
       FROM webhook_deliveries d
       JOIN webhook_messages m ON m.id = d.message_id
       JOIN webhook_endpoints e ON e.id = d.endpoint_id
       LEFT JOIN dispatch_groups g ON g.key = d.endpoint_id
      WHERE d.id = ANY($1)"
    )
});

/// The targets of delivery jobs, with what each must wait for, in one query (the worker
/// batches concurrent reads, `batch::Batcher`): per id its target, or `None` if it is gone.
pub async fn load_targets(pool: &PgPool, delivery_ids: &[Uuid]) -> Result<Vec<Option<Target>>> {
    let rows = sqlx::query_as::<_, Target>(sqlx::AssertSqlSafe(LOAD_TARGETS_SQL.as_str()))
        .bind(delivery_ids)
        .fetch_all(pool)
        .await?;
    let by_id: std::collections::HashMap<Uuid, Target> =
        rows.into_iter().map(|t| (t.delivery_id, t)).collect();
    Ok(delivery_ids
        .iter()
        .map(|id| by_id.get(id).cloned())
        .collect())
}

/// The target of a test send: an endpoint of this tenant and mode, and a message and delivery
/// that exist only in memory until the attempt is recorded (so an interrupted test send leaves
/// nothing behind that could hold up real deliveries).
pub async fn load_test_target(
    pool: &PgPool,
    scope: crate::tenants::Scope,
    endpoint_id: Uuid,
    message_id: Uuid,
    delivery_id: Uuid,
    payload: &str,
) -> Result<Option<Target>> {
    Ok(sqlx::query_as::<_, Target>(sqlx::AssertSqlSafe(format!(
        "SELECT $4::uuid AS delivery_id, 'pending' AS delivery_status, e.tenant_id,
                $5::uuid AS message_id, $6::text AS payload, NULL::text AS traceparent,
                {ENDPOINT_COLUMNS},
                NULL::timestamptz AS waiting_for
           FROM webhook_endpoints e LEFT JOIN dispatch_groups g ON g.key = e.id
          WHERE e.tenant_id = $1 AND e.id = $2 AND e.mode = $3 AND e.deleted_at IS NULL"
    )))
    .bind(scope.tenant_id)
    .bind(endpoint_id)
    .bind(scope.mode.as_str())
    .bind(delivery_id)
    .bind(message_id)
    .bind(payload)
    .fetch_optional(pool)
    .await?)
}

/// What the ledger does after an attempt.
#[derive(Clone, Debug)]
pub struct Decision {
    pub outcome: Outcome,
    /// The delivery's new status: succeeded, pending (a retry) or failed.
    pub status: DeliveryStatus,
    /// Disable the endpoint, for this reason (`gone`).
    pub disable: Option<&'static str>,
}

/// The ledger outcome after attempt number `attempt` under `schedule`. A retry's delay counts
/// from the database's clock when the outcome is recorded.
pub fn decide(
    result: &AttemptResult,
    attempt: i32,
    schedule: &RetrySchedule,
    policy: &Policy,
) -> Decision {
    if result.succeeded() {
        return Decision {
            outcome: Outcome::Succeeded,
            status: DeliveryStatus::Succeeded,
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
            status: DeliveryStatus::Failed,
            disable: Some("gone"),
        };
    }
    if result.permanent {
        return Decision {
            outcome: Outcome::Dead { error },
            status: DeliveryStatus::Failed,
            disable: None,
        };
    }
    let Some(base) = schedule.delay_after(attempt) else {
        return Decision {
            outcome: Outcome::Dead { error },
            status: DeliveryStatus::Failed,
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
    Decision {
        outcome: Outcome::Retry {
            after: delay,
            error,
        },
        status: DeliveryStatus::Pending,
        disable: None,
    }
}

/// ±20 % so that retries of a burst do not arrive as a burst.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.8..=1.2))
}

/// When an endpoint that only fails is disabled.
#[derive(Clone, Debug)]
pub struct HealthPolicy {
    /// Consecutive failed attempts.
    pub disable_after_failures: i32,
    /// Time since the first failure with no success in between.
    pub disable_after: Duration,
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

    fn wait(d: &Decision) -> u128 {
        match &d.outcome {
            Outcome::Retry { after, .. } => after.as_millis(),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn only_2xx_succeeds_and_the_schedule_decides_the_rest() {
        let schedule = RetrySchedule(vec![Duration::from_secs(5), Duration::from_secs(300)]);
        let p = policy();
        assert!(matches!(
            decide(&result(Some(204)), 1, &schedule, &p).outcome,
            Outcome::Succeeded
        ));
        for status in [Some(301), Some(500), None] {
            let d = decide(&result(status), 1, &schedule, &p);
            let w = wait(&d);
            assert!((4000..=6000).contains(&w), "5 s ± 20 %, got {w} ms");
            assert_eq!(d.status, DeliveryStatus::Pending);
        }
        let d = decide(&result(Some(500)), 3, &schedule, &p);
        assert!(matches!(d.outcome, Outcome::Dead { .. }));
        assert_eq!(d.status, DeliveryStatus::Failed);
        assert_eq!(d.disable, None);
    }

    #[test]
    fn throttling_waits_at_least_the_penalty_and_retry_after_is_honoured_up_to_a_cap() {
        let schedule = RetrySchedule(vec![Duration::from_secs(5); 3]);
        let p = policy();
        for status in [429, 502, 503, 504] {
            let w = wait(&decide(&result(Some(status)), 1, &schedule, &p));
            assert!(w >= 60_000, "{status} waits ≥ 60 s, got {w} ms");
        }
        let timeout = AttemptResult {
            error_class: Some("timeout"),
            ..Default::default()
        };
        assert!(wait(&decide(&timeout, 1, &schedule, &p)) >= 60_000);
        let mut asked = result(Some(500));
        asked.retry_after = Some(Duration::from_secs(120));
        assert_eq!(wait(&decide(&asked, 1, &schedule, &p)), 120_000);
        asked.retry_after = Some(Duration::from_secs(86_400 * 30));
        assert_eq!(
            wait(&decide(&asked, 1, &schedule, &p)),
            3_600_000,
            "clamped"
        );
        // A Retry-After shorter than the schedule does not hurry the retry.
        asked.retry_after = Some(Duration::from_secs(1));
        assert!(wait(&decide(&asked, 1, &schedule, &p)) >= 4000);
    }

    #[test]
    fn gone_disables_the_endpoint_and_stops() {
        let schedule = RetrySchedule(vec![Duration::from_secs(5); 3]);
        let d = decide(&result(Some(410)), 1, &schedule, &policy());
        assert!(matches!(d.outcome, Outcome::Dead { .. }));
        assert_eq!(d.disable, Some("gone"));
    }
}
