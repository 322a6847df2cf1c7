//! What every job handler gets: stores, the HTTP client, settings, and this process's identity.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::PgPool;
use switchyard_destinations::Destinations;
use switchyard_shared::{
    config::WorkerConfig,
    crypto::Keyring,
    dispatch::{Dispatcher, FastPath},
    integrations::connection::Checker,
    jobs::ClaimedJob,
    net::Egress,
    retention::RetentionConfig,
    services::Services,
    webhooks::{
        breaker::BreakerPolicy,
        delivery::{HealthPolicy, Policy},
        messages::FanOutLimits,
        transport::{HttpTransport, Transport},
    },
};
use uuid::Uuid;

use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::batches::Batchers;

/// Deliveries a fan-out commits that this process runs at once itself, skipping the trip through
/// Redis (push, wake-up, fetch, acknowledgement) and the claim, as far as it has room: at most
/// `SWITCHYARD_DELIVERY_CONCURRENCY` at a time beside the queue's consumer. The fan-out reserves
/// a slot per delivery first and births that many jobs `running` under this process's lease
/// (docs/architecture.md §2.3): if this process dies, the lease expires and the reconciler
/// hands the job out again. Shutdown waits for these runs as it does for the consumers'.
pub struct RunHere {
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) runs: TaskTracker,
}

pub struct Ctx {
    pub pool: PgPool,
    /// Woken when work becomes due or a slot frees.
    pub dispatcher: Dispatcher,
    pub fast_path: FastPath,
    pub fan_out: FanOutLimits,
    /// Where attempts go out (docs/architecture.md §4).
    pub transport: Arc<dyn Transport>,
    pub keyring: Keyring,
    /// Integration connection checks go out through it (SSRF-guarded).
    pub checker: Checker,
    /// Where sync sources may be (the SSRF rules every outbound address passes).
    pub egress: Egress,
    pub policy: Policy,
    pub breaker: BreakerPolicy,
    /// Lease owner name of this process: unique per process start.
    pub owner: String,
    pub lease: Duration,
    /// Backoff of runs that end in an error: doubles from `retry_delay` up to `retry_max_delay`.
    pub retry_delay: Duration,
    pub retry_max_delay: Duration,
    /// What the janitor purges, and after how long.
    pub retention: RetentionConfig,
    pub idempotency_ttl: Duration,
    /// Claims, delivery targets and attempt records of concurrent runs, batched (on a pool of
    /// their own, `db::connect_for_batches`).
    pub batch: Batchers,
    /// That pool, whose statements are planned once per connection: also the fan-out's, which
    /// Postgres otherwise re-plans on every event (~0.8 ms, more than running it).
    pub planned_once: PgPool,
    pub run_here: RunHere,
    held: Mutex<HashSet<Uuid>>,
}

impl Ctx {
    /// `batch_pool` serves the batched statements (`db::connect_for_batches`); once `shutdown`
    /// fires, runs no longer take the endpoint slots they free (`record::Handoff`).
    pub fn new(
        services: &Services,
        cfg: &WorkerConfig,
        batch_pool: PgPool,
        fast_path: FastPath,
        owner: String,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let common = &services.config;
        let (pool, dispatcher) = (services.pool.clone(), services.dispatcher.clone());
        let keyring = services.secrets.keyring.clone();
        let health = HealthPolicy {
            disable_after_failures: cfg.endpoint_disable_after_failures.max(1),
            disable_after: cfg.endpoint_disable_after,
        };
        let group_concurrency = i64::from(common.endpoint_concurrency.max(1));
        let batch = Batchers::spawn(
            &batch_pool,
            &owner,
            cfg.lease,
            health,
            group_concurrency,
            shutdown,
        );
        Arc::new(Ctx {
            batch,
            planned_once: batch_pool,
            retention: common.retention.clone(),
            idempotency_ttl: common.idempotency_ttl,
            pool,
            dispatcher,
            fast_path,
            fan_out: FanOutLimits {
                default_max_attempts: cfg.retry_schedule.max_attempts(),
                fast_in_flight: i64::from((common.endpoint_concurrency / 2).max(1)),
                group_concurrency,
            },
            // Endpoints may ask for up to 30 s; each request sets its own timeout.
            transport: Arc::new(Destinations::new(
                HttpTransport::new(
                    common.egress(),
                    cfg.webhook_connect_timeout,
                    Duration::from_secs(30).max(cfg.webhook_timeout),
                ),
                services.pool.clone(),
                services.secrets.keyring.clone(),
                common,
            )),
            keyring,
            checker: Checker::new(common.egress()),
            egress: common.egress(),
            policy: Policy {
                schedule: cfg.retry_schedule.clone(),
                timeout: cfg.webhook_timeout,
                throttle_delay: cfg.webhook_throttle_delay,
                retry_after_max: cfg.webhook_retry_after_max,
            },
            breaker: BreakerPolicy {
                window: cfg.breaker_window,
                min_attempts: cfg.breaker_min_attempts.max(1),
                failure_ratio: cfg.breaker_failure_ratio.clamp(0.0, 1.0),
                cooldown: cfg.breaker_cooldown,
                max_cooldown: cfg.breaker_max_cooldown.max(cfg.breaker_cooldown),
            },
            owner,
            lease: cfg.lease,
            retry_delay: cfg.job_retry_delay,
            retry_max_delay: cfg.job_retry_max_delay.max(cfg.job_retry_delay),
            run_here: RunHere {
                permits: Arc::new(Semaphore::new(cfg.delivery_concurrency.max(1))),
                runs: TaskTracker::new(),
            },
            held: Mutex::new(HashSet::new()),
        })
    }

    /// Marks a claimed job as held until the guard drops (however the handler ends), so the
    /// lease renewer only extends leases of jobs that are really running here.
    pub fn hold(self: &Arc<Self>, job: &ClaimedJob) -> HeldJob {
        self.held.lock().expect("held lock").insert(job.id);
        HeldJob {
            ctx: self.clone(),
            id: job.id,
        }
    }

    pub fn held_ids(&self) -> Vec<Uuid> {
        self.held
            .lock()
            .expect("held lock")
            .iter()
            .copied()
            .collect()
    }
}

pub struct HeldJob {
    ctx: Arc<Ctx>,
    id: Uuid,
}

impl Drop for HeldJob {
    fn drop(&mut self) {
        if let Ok(mut held) = self.ctx.held.lock() {
            held.remove(&self.id);
        }
    }
}
