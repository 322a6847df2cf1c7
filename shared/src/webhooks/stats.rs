//! Per-endpoint statistics over a recent window: success rate, latency percentiles, errors by
//! class, deliveries by status, and attempts over time. Ids are UUIDv7, so every query is a
//! primary-key range scan of the endpoint's rows in the window.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::uuid_v7_floor;
use crate::{error::Result, tenants::Scope};

#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct EndpointStats {
    /// `1h`, `24h` or `7d`.
    pub window: String,
    pub since: DateTime<Utc>,
    /// Attempts sent in the window (parked `circuit_open` entries are not attempts).
    pub attempts: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// `succeeded / attempts`; `null` without attempts.
    #[oai(nullable)]
    pub success_rate: Option<f64>,
    /// Attempt duration percentiles in milliseconds; `null` without attempts.
    #[oai(nullable)]
    pub latency_p50_ms: Option<f64>,
    #[oai(nullable)]
    pub latency_p95_ms: Option<f64>,
    #[oai(nullable)]
    pub latency_p99_ms: Option<f64>,
    pub errors: Vec<ErrorCount>,
    /// Deliveries created in the window, by their current status.
    pub deliveries: Vec<StatusCount>,
    /// Attempts per time bucket (5 min for `1h`, 1 h for `24h`, 1 day for `7d`), oldest first.
    pub buckets: Vec<Bucket>,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct ErrorCount {
    pub error_class: String,
    pub count: i64,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct StatusCount {
    pub status: String,
    pub count: i64,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub succeeded: i64,
    pub failed: i64,
}

#[derive(sqlx::FromRow)]
struct Totals {
    attempts: i64,
    succeeded: i64,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

/// `(window length, bucket length)` of a window name.
/// The span endpoint statistics cover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, poem_openapi::Enum)]
pub enum StatsWindow {
    #[oai(rename = "1h")]
    Hour,
    #[default]
    #[oai(rename = "24h")]
    Day,
    #[oai(rename = "7d")]
    Week,
}

impl StatsWindow {
    fn name(self) -> &'static str {
        match self {
            StatsWindow::Hour => "1h",
            StatsWindow::Day => "24h",
            StatsWindow::Week => "7d",
        }
    }

    /// Its length and the width of its buckets in seconds.
    fn span(self) -> (chrono::Duration, i64) {
        match self {
            StatsWindow::Hour => (chrono::Duration::hours(1), 300),
            StatsWindow::Day => (chrono::Duration::hours(24), 3600),
            StatsWindow::Week => (chrono::Duration::days(7), 86_400),
        }
    }
}

pub async fn for_endpoint(
    pool: &PgPool,
    scope: Scope,
    endpoint_id: Uuid,
    window: StatsWindow,
) -> Result<EndpointStats> {
    let (length, bucket_secs) = window.span();
    let since = Utc::now() - length;
    let floor = uuid_v7_floor(since);
    let sent = "a.tenant_id = $1 AND a.endpoint_id = $2 AND a.id >= $3
                AND a.error_class IS DISTINCT FROM 'circuit_open'";
    let totals = sqlx::query_as::<_, Totals>(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) AS attempts, count(*) FILTER (WHERE a.error_class IS NULL) AS succeeded,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms) AS p50,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms) AS p95,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY a.duration_ms) AS p99
           FROM webhook_attempts a WHERE {sent}"
    )))
    .bind(scope.tenant_id)
    .bind(endpoint_id)
    .bind(floor)
    .fetch_one(pool)
    .await?;
    let errors = sqlx::query_as::<_, ErrorCount>(sqlx::AssertSqlSafe(format!(
        "SELECT a.error_class, count(*) AS count FROM webhook_attempts a
          WHERE {sent} AND a.error_class IS NOT NULL
          GROUP BY a.error_class ORDER BY count DESC, a.error_class"
    )))
    .bind(scope.tenant_id)
    .bind(endpoint_id)
    .bind(floor)
    .fetch_all(pool)
    .await?;
    let buckets = sqlx::query_as::<_, Bucket>(sqlx::AssertSqlSafe(format!(
        "SELECT to_timestamp(floor(extract(epoch FROM a.created_at) / $4) * $4) AS start,
                count(*) FILTER (WHERE a.error_class IS NULL) AS succeeded,
                count(*) FILTER (WHERE a.error_class IS NOT NULL) AS failed
           FROM webhook_attempts a WHERE {sent}
          GROUP BY 1 ORDER BY 1"
    )))
    .bind(scope.tenant_id)
    .bind(endpoint_id)
    .bind(floor)
    .bind(bucket_secs as f64)
    .fetch_all(pool)
    .await?;
    let deliveries = sqlx::query_as::<_, StatusCount>(
        "SELECT status, count(*) AS count FROM webhook_deliveries
          WHERE tenant_id = $1 AND endpoint_id = $2 AND id >= $3
          GROUP BY status ORDER BY status",
    )
    .bind(scope.tenant_id)
    .bind(endpoint_id)
    .bind(floor)
    .fetch_all(pool)
    .await?;
    Ok(EndpointStats {
        window: window.name().to_owned(),
        since,
        attempts: totals.attempts,
        succeeded: totals.succeeded,
        failed: totals.attempts - totals.succeeded,
        success_rate: (totals.attempts > 0)
            .then(|| totals.succeeded as f64 / totals.attempts as f64),
        latency_p50_ms: totals.p50,
        latency_p95_ms: totals.p95,
        latency_p99_ms: totals.p99,
        errors,
        deliveries,
        buckets,
    })
}
