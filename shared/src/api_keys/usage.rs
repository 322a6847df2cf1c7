//! Usage per API key: requests and errors per hour and operation, and `last_used_at`.
//!
//! Requests are counted in memory and flushed every few seconds in two statements, whatever
//! the request rate: counting never adds a database write to a request.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{Error, Result};

pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Bucket {
    api_key_id: Uuid,
    tenant_id: Uuid,
    hour: DateTime<Utc>,
    operation: &'static str,
}

#[derive(Default)]
struct Pending {
    counts: HashMap<Bucket, (i64, i64)>,
    last_used: HashMap<Uuid, DateTime<Utc>>,
}

#[derive(Clone, Default)]
pub struct UsageRecorder {
    pending: Arc<Mutex<Pending>>,
}

impl UsageRecorder {
    /// Counts one request of `api_key_id` to `operation` (an OpenAPI operation id).
    pub fn record(&self, api_key_id: Uuid, tenant_id: Uuid, operation: &'static str, error: bool) {
        let now = Utc::now();
        let hour = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let c = p
            .counts
            .entry(Bucket {
                api_key_id,
                tenant_id,
                hour,
                operation,
            })
            .or_default();
        c.0 += 1;
        c.1 += i64::from(error);
        p.last_used.insert(api_key_id, now);
    }

    /// Writes what was counted since the last flush. On failure the counts are kept for the
    /// next attempt.
    pub async fn flush(&self, pool: &PgPool) -> Result<()> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.counts.is_empty() {
            return Ok(());
        }
        let result = write(pool, &taken).await;
        if result.is_err() {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (b, (r, e)) in taken.counts {
                let c = p.counts.entry(b).or_default();
                c.0 += r;
                c.1 += e;
            }
            for (k, t) in taken.last_used {
                let v = p.last_used.entry(k).or_insert(t);
                *v = (*v).max(t);
            }
        }
        result
    }

    /// Flushes every [`FLUSH_INTERVAL`] until `shutdown`, then once more.
    pub async fn run(self, pool: PgPool, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            let stop = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tick.tick() => false,
            };
            if let Err(e) = self.flush(&pool).await {
                tracing::warn!(error = %e, "cannot write API key usage; keeping it for later");
            }
            if stop {
                return;
            }
        }
    }
}

async fn write(pool: &PgPool, p: &Pending) -> Result<()> {
    let (mut keys, mut tenants, mut hours, mut ops, mut reqs, mut errs) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (b, (r, e)) in &p.counts {
        keys.push(b.api_key_id);
        tenants.push(b.tenant_id);
        hours.push(b.hour);
        ops.push(b.operation);
        reqs.push(*r);
        errs.push(*e);
    }
    let (used_keys, used_at): (Vec<Uuid>, Vec<DateTime<Utc>>) =
        p.last_used.iter().map(|(k, t)| (*k, *t)).unzip();
    sqlx::query(
        "WITH u AS (
            INSERT INTO api_key_usage (api_key_id, tenant_id, hour, operation, requests, errors)
            SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[],
                                 $5::bigint[], $6::bigint[])
            ON CONFLICT (api_key_id, hour, operation) DO UPDATE
               SET requests = api_key_usage.requests + EXCLUDED.requests,
                   errors = api_key_usage.errors + EXCLUDED.errors)
         UPDATE api_keys k SET last_used_at = GREATEST(k.last_used_at, t.at)
           FROM UNNEST($7::uuid[], $8::timestamptz[]) AS t(id, at)
          WHERE k.id = t.id",
    )
    .bind(keys)
    .bind(tenants)
    .bind(hours)
    .bind(ops)
    .bind(reqs)
    .bind(errs)
    .bind(used_keys)
    .bind(used_at)
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct OperationUsage {
    /// OpenAPI operation id (`createOrder`, …).
    pub operation: String,
    pub requests: i64,
    /// Responses with a 4xx or 5xx status.
    pub errors: i64,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct HourUsage {
    pub hour: DateTime<Utc>,
    pub requests: i64,
    pub errors: i64,
}

/// Usage of one key over a window (counts lag by up to a few seconds).
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct KeyUsage {
    pub api_key_id: Uuid,
    pub since: DateTime<Utc>,
    #[oai(nullable)]
    pub last_used_at: Option<DateTime<Utc>>,
    pub requests: i64,
    pub errors: i64,
    /// Per operation, busiest first.
    pub by_operation: Vec<OperationUsage>,
    /// Per hour, oldest first.
    pub by_hour: Vec<HourUsage>,
}

/// Usage of key `id` of `tenant_id` since `since` (hour resolution).
pub async fn get(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
    since: DateTime<Utc>,
) -> Result<KeyUsage> {
    let last_used_at: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let last_used_at = last_used_at.ok_or_else(|| Error::not_found("API key"))?;
    let since = since.duration_trunc(TimeDelta::hours(1)).unwrap_or(since);
    let by_operation = sqlx::query_as::<_, OperationUsage>(
        "SELECT operation, sum(requests)::bigint AS requests, sum(errors)::bigint AS errors
           FROM api_key_usage WHERE api_key_id = $1 AND hour >= $2
          GROUP BY operation ORDER BY requests DESC, operation",
    )
    .bind(id)
    .bind(since)
    .fetch_all(pool)
    .await?;
    let by_hour = sqlx::query_as::<_, HourUsage>(
        "SELECT hour, sum(requests)::bigint AS requests, sum(errors)::bigint AS errors
           FROM api_key_usage WHERE api_key_id = $1 AND hour >= $2
          GROUP BY hour ORDER BY hour",
    )
    .bind(id)
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(KeyUsage {
        api_key_id: id,
        since,
        last_used_at,
        requests: by_operation.iter().map(|o| o.requests).sum(),
        errors: by_operation.iter().map(|o| o.errors).sum(),
        by_operation,
        by_hour,
    })
}
