//! Retention: every growing table has one, and its purge keeps up with any rate the system can
//! ingest (docs/architecture.md §6). One list below declares them all; the janitor of every worker
//! replica runs [`purge`] every few seconds. Each purge deletes in batches that loop until the
//! table is caught up, and takes its rows `FOR UPDATE SKIP LOCKED`, so replicas share the work
//! instead of fighting over rows. Delivery attempts (the biggest rows: up to 64 KiB of partner
//! response each) and request logs (a row per API request) live in day partitions that are
//! dropped whole ([`partitions`]).
//!
//! Configuration tables (tenants, API keys, endpoints until deleted, event types, schedules) are
//! not purged: they grow with customers, not with traffic.

pub mod partitions;
pub mod vacuum;

use std::time::{Duration, Instant};

use clap::Args;
use sqlx::PgPool;

use crate::telemetry::metrics as m;
use crate::{duration::parse_duration, error::Result};

/// How long each kind of record is kept.
#[derive(Args, Clone, Debug)]
pub struct RetentionConfig {
    /// Succeeded and cancelled jobs are deleted from the ledger after this long.
    #[arg(long = "job-retention", env = "SWITCHYARD_JOB_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub jobs: Duration,

    /// Dead jobs (given up, with their last error) are kept this long for inspection.
    #[arg(long = "dead-job-retention", env = "SWITCHYARD_DEAD_JOB_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub dead_jobs: Duration,

    /// Webhook message payloads are removed after this long (the rest stays as metadata);
    /// no endpoint retry schedule may outlast it.
    #[arg(long = "payload-retention", env = "SWITCHYARD_PAYLOAD_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub payload: Duration,

    /// Events, webhook messages, deliveries, attempts (day partitions), finished replays and
    /// deleted endpoints are deleted after this long (at least the payload retention).
    #[arg(long = "webhook-retention", env = "SWITCHYARD_WEBHOOK_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub webhooks: Duration,

    /// Orders in a final status (completed, cancelled, rejected) are deleted with their event
    /// history this long after their last change. Open orders are never deleted.
    #[arg(long = "order-retention", env = "SWITCHYARD_ORDER_RETENTION", default_value = "365d", value_parser = parse_duration)]
    pub orders: Duration,

    /// Hourly API key usage counts are kept this long.
    #[arg(long = "usage-retention", env = "SWITCHYARD_USAGE_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub usage: Duration,

    /// Partner API request logs (`GET /v1/logs/requests`; day partitions) are kept this long.
    #[arg(long = "request-log-retention", env = "SWITCHYARD_REQUEST_LOG_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub request_logs: Duration,

    /// Audit events are kept this long (the log is append-only otherwise).
    #[arg(long = "audit-retention", env = "SWITCHYARD_AUDIT_RETENTION", default_value = "365d", value_parser = parse_duration)]
    pub audit: Duration,

    /// Integration call logs and finished inbound events are kept this long; deleted
    /// integrations' rows go with them.
    #[arg(long = "integration-log-retention", env = "SWITCHYARD_INTEGRATION_LOG_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub integration_logs: Duration,

    /// Finished sync runs (with their logs and per-record errors), records deleted at the
    /// source (`deleted_at`, soft deletes), conflicts once applied, and the links of records
    /// deleted on both sides are kept this long.
    #[arg(long = "sync-retention", env = "SWITCHYARD_SYNC_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub sync: Duration,
}

impl RetentionConfig {
    /// Webhook history is kept at least as long as the payloads it describes.
    pub fn webhook_history(&self) -> Duration {
        self.webhooks.max(self.payload)
    }
}

/// Rows per batch: big enough that a batch costs far less than its round trip, small enough
/// that a batch holds its locks for milliseconds.
const BATCH: i64 = 5000;
/// A table gets at most this long per janitor run, so one far-behind table cannot starve the
/// others; the next run goes on where this one stopped.
const TABLE_BUDGET: Duration = Duration::from_secs(20);

/// One purge: a statement that removes (or, for payloads, clears) up to `$2` rows older than
/// `$1` seconds and returns how many it touched.
struct Purge {
    table: &'static str,
    sql: &'static str,
    /// Runs with `switchyard.retention_purge` set, which the append-only audit log requires.
    audit: bool,
}

/// Every purge, in an order that respects references: deliveries before their messages,
/// messages before their events, order history with its orders.
const PURGES: &[Purge] = &[
    Purge {
        table: "jobs",
        sql: "DELETE FROM jobs WHERE id IN (
                SELECT id FROM jobs
                 WHERE state IN ('succeeded', 'cancelled')
                   AND finished_at < now() - make_interval(secs => $1)
                 ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "jobs (dead)",
        sql: "DELETE FROM jobs WHERE id IN (
                SELECT id FROM jobs
                 WHERE state = 'dead' AND finished_at < now() - make_interval(secs => $1)
                 ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "webhook_messages (payloads)",
        sql: "UPDATE webhook_messages SET payload = NULL, payload_removed_at = now()
               WHERE id IN (
                SELECT m.id FROM webhook_messages m
                 WHERE m.payload IS NOT NULL
                   AND m.id < uuid_v7_floor(now() - make_interval(secs => $1))
                   -- A delivery still waiting (behind an earlier change of its order, a FIFO
                   -- head, a cap, a paused queue) needs it: kept until that one ends.
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                    WHERE d.message_id = m.id AND d.status = 'pending')
                 ORDER BY m.id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "webhook_deliveries",
        sql: "DELETE FROM webhook_deliveries WHERE id IN (
                SELECT id FROM webhook_deliveries
                 WHERE id < uuid_v7_floor(now() - make_interval(secs => $1))
                   AND status <> 'pending'
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "webhook_messages",
        sql: "DELETE FROM webhook_messages WHERE id IN (
                SELECT m.id FROM webhook_messages m
                 WHERE m.id < uuid_v7_floor(now() - make_interval(secs => $1))
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.message_id = m.id)
                 ORDER BY m.id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "events",
        sql: "DELETE FROM events WHERE id IN (
                SELECT e.id FROM events e
                 WHERE e.id < uuid_v7_floor(now() - make_interval(secs => $1))
                   AND NOT EXISTS (SELECT 1 FROM webhook_messages m WHERE m.event_id = e.id)
                   -- Kept while its fan-out has yet to run (waiting, retrying, its queue
                   -- paused), runs, or is dead and may be retried: the fan-out reads only
                   -- the outbox. Waiting ones by their own index, the few others at once.
                   AND NOT EXISTS (SELECT 1 FROM jobs j
                                    WHERE j.queue = 'event_fan_out'
                                      AND j.state IN ('pending', 'queued')
                                      AND j.tenant_id = e.tenant_id AND j.subject_id = e.id)
                   AND e.id NOT IN (SELECT j.subject_id FROM jobs j
                                     WHERE j.queue = 'event_fan_out' AND j.state = 'running'
                                    UNION ALL
                                    SELECT j.subject_id FROM jobs j
                                     WHERE j.queue = 'event_fan_out' AND j.state = 'dead')
                 ORDER BY e.id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "webhook_replays",
        sql: "DELETE FROM webhook_replays WHERE id IN (
                SELECT id FROM webhook_replays
                 WHERE id < uuid_v7_floor(now() - make_interval(secs => $1))
                   AND state <> 'running'
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "webhook_endpoints (deleted)",
        sql: "DELETE FROM webhook_endpoints WHERE id IN (
                SELECT e.id FROM webhook_endpoints e
                 WHERE e.deleted_at < now() - make_interval(secs => $1)
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "orders",
        sql: "WITH o AS (
                SELECT id FROM orders
                 WHERE status IN ('completed', 'cancelled', 'rejected')
                   AND updated_at < now() - make_interval(secs => $1)
                 ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED),
              e AS (DELETE FROM order_events WHERE order_id IN (SELECT id FROM o))
              DELETE FROM orders WHERE id IN (SELECT id FROM o)",
        audit: false,
    },
    Purge {
        table: "api_key_usage",
        sql: "DELETE FROM api_key_usage WHERE ctid IN (
                SELECT ctid FROM api_key_usage
                 WHERE hour < now() - make_interval(secs => $1)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "audit_events",
        sql: "DELETE FROM audit_events WHERE id IN (
                SELECT id FROM audit_events
                 WHERE id < uuid_v7_floor(now() - make_interval(secs => $1))
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: true,
    },
    Purge {
        table: "keyring_rotations",
        sql: "DELETE FROM keyring_rotations WHERE id IN (
                SELECT id FROM keyring_rotations
                 WHERE state <> 'running' AND started_at < now() - make_interval(secs => $1)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "integration_logs",
        sql: "DELETE FROM integration_logs WHERE id IN (
                SELECT id FROM integration_logs
                 WHERE id < uuid_v7_floor(now() - make_interval(secs => $1))
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "inbound_events",
        sql: "DELETE FROM inbound_events WHERE id IN (
                SELECT id FROM inbound_events
                 WHERE id < uuid_v7_floor(now() - make_interval(secs => $1))
                   AND status NOT IN ('pending', 'processing')
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "integrations (deleted)",
        sql: "DELETE FROM integrations WHERE id IN (
                SELECT id FROM integrations
                 WHERE deleted_at < now() - make_interval(secs => $1)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "sync_runs",
        sql: "DELETE FROM sync_runs WHERE id IN (
                SELECT id FROM sync_runs
                 WHERE status NOT IN ('pending', 'running')
                   AND finished_at < now() - make_interval(secs => $1)
                 ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "sync_records (deleted)",
        sql: "DELETE FROM sync_records WHERE (tenant_id, mode, entity, key) IN (
                SELECT tenant_id, mode, entity, key FROM sync_records
                 WHERE deleted_at < now() - make_interval(secs => $1)
                 ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "sync_conflicts (applied)",
        sql: "DELETE FROM sync_conflicts WHERE id IN (
                SELECT id FROM sync_conflicts
                 WHERE applied_at < now() - make_interval(secs => $1)
                 ORDER BY applied_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "sync_links (deleted)",
        sql: "DELETE FROM sync_links WHERE (configuration_id, key) IN (
                SELECT configuration_id, key FROM sync_links
                 WHERE base IS NULL AND synced_at < now() - make_interval(secs => $1)
                 ORDER BY synced_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "workers",
        sql: "DELETE FROM workers WHERE id IN (
                SELECT id FROM workers
                 WHERE last_seen_at < now() - make_interval(secs => $1)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "dashboard_sessions",
        sql: "DELETE FROM dashboard_sessions WHERE token_hash IN (
                SELECT token_hash FROM dashboard_sessions
                 WHERE expires_at < now() - make_interval(secs => $1)
                 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
    Purge {
        table: "idempotency_keys",
        sql: "DELETE FROM idempotency_keys WHERE (api_key_id, key) IN (
                SELECT api_key_id, key FROM idempotency_keys
                 WHERE created_at < now() - make_interval(secs => $1)
                 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        audit: false,
    },
];

/// What one janitor run removed, per table.
#[derive(Clone, Debug, Default)]
pub struct Purged(pub Vec<(&'static str, u64)>);

impl Purged {
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

/// Finished slot jobs of one scheduled queue that keeps them shorter than the ledger's default
/// (the job-kind registry declares which: `keep_finished`; index `jobs_slot_finished`). `$3`
/// is the queue.
const SHORT_LIVED_JOBS: Purge = Purge {
    table: "jobs (short-lived queues)",
    sql: "DELETE FROM jobs WHERE id IN (
            SELECT id FROM jobs
             WHERE state IN ('succeeded', 'cancelled') AND queue = $3 AND unique_key IS NOT NULL
               AND finished_at < now() - make_interval(secs => $1)
             ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    audit: false,
};

/// One janitor run: every purge, caught up (or out of its budget), and the day partitions
/// kept ahead and dropped behind. `short_lived` lists the queues whose finished jobs go sooner
/// than `cfg.jobs`, with how long they stay.
pub async fn purge(
    pool: &PgPool,
    cfg: &RetentionConfig,
    idempotency_ttl: Duration,
    short_lived: &[(&'static str, Duration)],
) -> Result<Purged> {
    let mut done = Purged::default();
    let mut n = 0;
    for &(queue, keep) in short_lived {
        n += purge_one(pool, &SHORT_LIVED_JOBS, keep.min(cfg.jobs), Some(queue)).await?;
    }
    record(&mut done, SHORT_LIVED_JOBS.table, n);
    for p in PURGES {
        let keep = match p.table {
            "jobs" | "workers" => cfg.jobs,
            "jobs (dead)" => cfg.dead_jobs,
            "webhook_messages (payloads)" => cfg.payload,
            "orders" => cfg.orders,
            "api_key_usage" => cfg.usage,
            "audit_events" | "keyring_rotations" => cfg.audit,
            "integration_logs" | "inbound_events" | "integrations (deleted)" => {
                cfg.integration_logs
            }
            "sync_runs"
            | "sync_records (deleted)"
            | "sync_conflicts (applied)"
            | "sync_links (deleted)" => cfg.sync,
            "idempotency_keys" => idempotency_ttl,
            // Expired sessions open nothing; they go at once.
            "dashboard_sessions" => Duration::ZERO,
            _ => cfg.webhook_history(),
        };
        let n = purge_one(pool, p, keep, None).await?;
        record(&mut done, p.table, n);
    }
    partitions::ensure(pool).await?;
    let dropped = partitions::drop_expired(pool, "webhook_attempts", cfg.webhook_history()).await?;
    done.0
        .push(("webhook_attempts (partitions dropped)", dropped));
    let dropped = partitions::drop_expired(pool, "request_logs", cfg.request_logs).await?;
    done.0.push(("request_logs (partitions dropped)", dropped));
    let groups = purge_orphan_groups(pool).await?;
    done.0.push(("dispatch_groups", groups));
    Ok(done)
}

fn record(done: &mut Purged, table: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(m::PURGED_ROWS, "table" => table).increment(n);
    }
    done.0.push((table, n));
}

/// Batches of `p` until one comes back short (caught up) or the table's budget is spent.
/// `queue`, when given, is the statement's `$3`.
async fn purge_one(pool: &PgPool, p: &Purge, keep: Duration, queue: Option<&str>) -> Result<u64> {
    let started = Instant::now();
    let mut total = 0;
    let batch = || {
        let q = sqlx::query(p.sql).bind(keep.as_secs_f64()).bind(BATCH);
        match queue {
            Some(queue) => q.bind(queue),
            None => q,
        }
    };
    loop {
        let n = if p.audit {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT set_config('switchyard.retention_purge', 'on', true)")
                .execute(&mut *tx)
                .await?;
            let n = batch().execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            n
        } else {
            batch().execute(pool).await?.rows_affected()
        };
        total += n;
        if n < BATCH as u64 || started.elapsed() > TABLE_BUDGET {
            return Ok(total);
        }
    }
}

/// Dispatch groups whose endpoint is gone and that hold no live work (a group row can come
/// back after an endpoint's deletion when a delivery that was running then records a retry).
/// Each condition is a scalar probe per group (`LIMIT 1` on its partial index): written as
/// `NOT EXISTS`, the planner made the live-work check one hash of every unfinished job, half
/// a second a run behind a backlog of 750,000 deliveries.
pub const ORPHAN_GROUPS_SQL: &str = "DELETE FROM dispatch_groups g
      WHERE (SELECT e.id FROM webhook_endpoints e
              WHERE e.id = g.key AND e.deleted_at IS NULL) IS NULL
        AND (SELECT j.id FROM jobs j
              WHERE j.group_key = g.key AND j.state = 'pending' AND j.group_key IS NOT NULL
              LIMIT 1) IS NULL
        AND (SELECT j.id FROM jobs j
              WHERE j.group_key = g.key AND j.state IN ('queued', 'running')
                AND j.group_key IS NOT NULL
              LIMIT 1) IS NULL";

async fn purge_orphan_groups(pool: &PgPool) -> Result<u64> {
    Ok(sqlx::query(ORPHAN_GROUPS_SQL)
        .execute(pool)
        .await?
        .rows_affected())
}
