//! The Switchyard worker runtime: queue consumers (apalis-redis), the dispatcher and reconciler
//! that keep Redis in step with the ledger, the lease renewer and the janitor.
//! `switchyard-worker` runs it alone; `switchyard-api --with-worker` runs it beside the API.

mod batches;
mod context;
mod jobs;
mod wake;

/// Every queue, derived from the job-kind registry: what [`Services::connect`] takes.
pub use jobs::QUEUES;

use std::{future::Future, sync::Arc, time::Duration};

use apalis::prelude::{BackendExt, Monitor, ParallelizeExt, WorkerBuilder, WorkerBuilderExt};
use apalis_redis::RedisStorage;
use switchyard_shared::{
    config::WorkerConfig,
    dispatch::{Dispatcher, FastPath},
    jobs as ledger,
    queue::{self, JobTask},
    schedule::{self, CatchUp, Every, Schedule},
    services::Services,
    telemetry::metrics as m,
    workers,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{context::Ctx, wake::WakeHub};

/// A name unique to this process start: apalis worker names and ledger lease owners derive
/// from it, so no two processes (or restarts) ever share an identity (docs/architecture.md §7).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map_or_else(|| "host".into(), |h| h.trim().to_owned())
}

fn process_identity() -> String {
    let nonce = uuid::Uuid::now_v7().simple().to_string();
    format!("{}-{}-{}", hostname(), std::process::id(), &nonce[24..])
}

/// How this process reports itself to the worker registry.
fn identity(owner: &str, cfg: &WorkerConfig) -> workers::Identity {
    workers::Identity {
        id: owner.to_owned(),
        host: hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        queues: jobs::KINDS
            .iter()
            .map(|k| workers::QueueConsumer {
                queue: k.queue.to_owned(),
                concurrency: u32::try_from((k.concurrency)(cfg)).unwrap_or(u32::MAX),
            })
            .collect(),
    }
}

/// How long a fan-out waits when an earlier event of the same ordering key must go first.
pub const ORDERING_RETRY: Duration = Duration::from_millis(250);

/// Connections of the pool of statements planned once (`db::connect_for_batches`): four
/// batchers with two batches in flight each (`batches.rs`), fan-outs, and the dispatcher's
/// "what is due" probe.
const BATCH_POOL: u32 = 12;

/// How long a woken dispatcher waits for more wake-ups before its pass.
const WAKE_COALESCE: Duration = Duration::from_millis(5);

/// Runs until `shutdown` fires, then stops fetching, lets in-flight jobs finish within
/// `cfg.shutdown_timeout`, hands back whatever still runs, and returns.
pub async fn run(
    services: Services,
    cfg: WorkerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let owner = process_identity();
    tracing::info!(%owner, "worker starting");
    // Loops that must outlive the drain (lease renewal, fast path, wake-ups) stop on `after`.
    let after = CancellationToken::new();
    let batch_pool =
        switchyard_shared::db::connect_for_batches(&services.config.database_url, BATCH_POOL)
            .await?;
    let services = Services {
        dispatcher: services.dispatcher.planned_on(batch_pool.clone()),
        ..services
    };
    let (fast_path, fast_path_task) = FastPath::spawn(services.dispatcher.clone(), after.clone());
    let ctx = Ctx::new(
        &services,
        &cfg,
        batch_pool,
        fast_path,
        owner.clone(),
        shutdown.clone(),
    );
    let hub = WakeHub::default();
    let mut loops = JoinSet::new();
    loops.spawn(hub.clone().listen(
        services.config.redis_url.clone(),
        services.queues.wake_channel(),
        after.clone(),
    ));
    spawn_background(&mut loops, &services, &cfg, &ctx, &shutdown, &after);
    let identity = identity(&owner, &cfg);
    let (pool, reporter) = (services.pool.clone(), ctx.clone());
    every(
        &mut loops,
        "worker registry",
        workers::HEARTBEAT,
        &after,
        move || {
            let (pool, identity, busy) =
                (pool.clone(), identity.clone(), reporter.held_ids().len());
            async move { workers::report(&pool, &identity, busy).await }
        },
    );

    let mut monitor = Monitor::new();
    for kind in jobs::KINDS {
        let (queue, concurrency) = (kind.queue, (kind.concurrency)(&cfg));
        let apalis_cfg = services
            .queues
            .apalis_config(queue, concurrency.clamp(1, 32));
        let conn = services.queues.connection();
        let (hub, ctx, owner, poll) = (hub.clone(), ctx.clone(), owner.clone(), cfg.poll_interval);
        monitor = monitor.register(move |restarts| {
            // After a Redis error apalis workers die; restart them with a growing pause.
            let pause = Duration::from_millis(250 * u64::from(restarts.min(20) as u32));
            let backend = RedisStorage::<JobTask>::new(conn.clone())
                .with_config(apalis_cfg.clone())
                .poll_with_strategy(hub.strategy(queue, poll))
                .before_start(move |_| async move {
                    tokio::time::sleep(pause).await;
                    Ok(())
                });
            WorkerBuilder::new(format!("{queue}-{owner}-{restarts}"))
                .backend(backend)
                .data(ctx.clone())
                .concurrency(concurrency)
                // Each task on its own tokio task: otherwise a worker's tasks are all futures
                // of one task, sharing one core and stalling its heartbeat.
                .parallelize(tokio::spawn)
                .build(jobs::handle)
        });
    }
    let stop = shutdown.clone();
    let deadline = Arc::new(std::sync::OnceLock::new());
    let (set_deadline, grace) = (deadline.clone(), cfg.shutdown_timeout);
    monitor
        .should_restart(|worker, error| {
            tracing::warn!(worker = worker.name(), %error, "queue consumer stopped; restarting it");
            metrics::counter!(m::CONSUMER_RESTARTS).increment(1);
            true
        })
        .shutdown_timeout(cfg.shutdown_timeout)
        .run_with_signal(async move {
            stop.cancelled().await;
            let _ = set_deadline.set(tokio::time::Instant::now() + grace);
            Ok(())
        })
        .await?;

    // Deliveries a fan-out handed to this process directly share the consumers' deadline.
    ctx.run_here.runs.close();
    let deadline = deadline
        .get()
        .copied()
        .unwrap_or_else(|| tokio::time::Instant::now() + cfg.shutdown_timeout);
    if tokio::time::timeout_at(deadline, ctx.run_here.runs.wait())
        .await
        .is_err()
    {
        tracing::warn!("runs started here did not finish before the shutdown deadline");
    }
    // Whatever did not finish within the deadline runs again elsewhere, now.
    match ledger::release_leases(&services.pool, &owner).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(jobs = n, "handed back unfinished jobs at shutdown"),
        Err(e) => tracing::error!(error = %e, "could not hand back jobs; their leases will expire"),
    }
    after.cancel();
    let _ = fast_path_task.await;
    while loops.join_next().await.is_some() {}
    if let Err(e) = workers::stopped(&services.pool, &owner).await {
        tracing::warn!(error = %e, "cannot record this worker's stop in the registry");
    }
    tracing::info!(%owner, "worker stopped");
    Ok(())
}

fn spawn_background(
    loops: &mut JoinSet<()>,
    services: &Services,
    cfg: &WorkerConfig,
    ctx: &Arc<Ctx>,
    shutdown: &CancellationToken,
    after: &CancellationToken,
) {
    // The dispatcher runs every `dispatch_interval`, and at once when woken (new deliveries,
    // a freed slot); wake-ups coalesce.
    // Deliveries it admits while this process has room run here (`jobs::LocalDeliveries`).
    let dispatcher = services.dispatcher.clone();
    let local = Arc::new(jobs::LocalDeliveries(ctx.clone()));
    every_or_woken(
        loops,
        "dispatcher",
        cfg.dispatch_interval,
        shutdown,
        Some(services.dispatcher.clone()),
        move || {
            let (d, local) = (dispatcher.clone(), local.clone());
            async move { d.dispatch_due(Some(&*local)).await.map(|_| ()) }
        },
    );
    let dispatcher = services.dispatcher.clone();
    let lost_after = cfg.reconcile_after;
    every(
        loops,
        "reconciler",
        Duration::from_secs(1),
        shutdown,
        move || {
            let d = dispatcher.clone();
            async move { d.reconcile(lost_after).await.map(|_| ()) }
        },
    );
    let (renew_ctx, lease) = (ctx.clone(), cfg.lease);
    every(loops, "lease renewer", lease / 3, after, move || {
        let ctx = renew_ctx.clone();
        async move {
            let held = ctx.held_ids();
            if held.is_empty() {
                return Ok(());
            }
            ledger::renew_leases(&ctx.pool, &ctx.owner, &held, ctx.lease)
                .await
                .map(|_| ())
        }
    });
    // Periodic jobs: each slot enqueued once cluster-wide, whichever replicas run.
    let schedules = vec![
        Schedule {
            id: "janitor".into(),
            queue: queue::JANITOR,
            every: Every::Interval(cfg.janitor_interval),
            catch_up: CatchUp::SkipOlderThan(cfg.janitor_interval * 3),
            max_attempts: jobs::janitor::MAX_ATTEMPTS,
        },
        Schedule {
            id: "integration_health".into(),
            queue: queue::INTEGRATION_HEALTH,
            every: Every::Interval(cfg.integration_health_interval),
            catch_up: CatchUp::SkipOlderThan(cfg.integration_health_interval * 3),
            max_attempts: jobs::integration_health::MAX_ATTEMPTS,
        },
    ];
    loops.spawn(scheduler(ctx.clone(), schedules, shutdown.clone()));
    // Configurations' own schedules: due rows taken with SKIP LOCKED, one run per slot.
    let sync_ctx = ctx.clone();
    every(
        loops,
        "sync scheduler",
        Duration::from_millis(500),
        shutdown,
        move || {
            let ctx = sync_ctx.clone();
            async move {
                let tasks = switchyard_shared::sync::schedule::start_due(&ctx.pool).await?;
                if !tasks.is_empty() {
                    ctx.fast_path.push(queue::SYNC_RUNS, tasks);
                }
                Ok(())
            }
        },
    );
    let queues = services.queues.clone();
    // SCANs the keyspace, so it runs far less often than the janitor.
    every(
        loops,
        "worker metadata janitor",
        Duration::from_secs(300),
        shutdown,
        move || {
            let queues = queues.clone();
            async move {
                for q in queues.names() {
                    queues.sweep_worker_metadata(q).await?;
                }
                Ok(())
            }
        },
    );
    let (queues, pool) = (services.queues.clone(), services.pool.clone());
    // Counting follows the unfinished work (half a second per count behind a million pending
    // deliveries), so a costly count waits longer for its next turn: at most ~2 % of the time.
    let next_count = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    every(
        loops,
        "queue metrics",
        Duration::from_secs(5),
        shutdown,
        move || {
            let (queues, pool, next_count) = (queues.clone(), pool.clone(), next_count.clone());
            async move {
                let started = std::time::Instant::now();
                if started < *next_count.lock().expect("next count lock") {
                    return Ok(());
                }
                let stats = ledger::queue_stats(&pool, queues.names()).await?;
                *next_count.lock().expect("next count lock") = started + started.elapsed() * 50;
                for s in stats {
                    let q = s.queue.clone();
                    metrics::gauge!(m::JOBS, "queue" => q.clone(), "state" => "pending")
                        .set(s.pending as f64);
                    metrics::gauge!(m::JOBS, "queue" => q.clone(), "state" => "queued")
                        .set(s.queued as f64);
                    metrics::gauge!(m::JOBS, "queue" => q.clone(), "state" => "running")
                        .set(s.running as f64);
                    metrics::gauge!(m::JOBS, "queue" => q.clone(), "state" => "dead")
                        .set(s.dead as f64);
                    metrics::gauge!(m::JOBS_DUE, "queue" => q.clone()).set(s.due as f64);
                    metrics::gauge!(m::OLDEST_DUE_JOB_AGE, "queue" => q.clone())
                        .set(s.oldest_due_age_seconds);
                    let depth = queues.depth(&q).await?;
                    metrics::gauge!(m::REDIS_READY_TASKS, "queue" => q).set(depth as f64);
                }
                for (state, n) in switchyard_shared::webhooks::breaker::census(&pool).await? {
                    metrics::gauge!(m::ENDPOINT_BREAKERS, "state" => state).set(n as f64);
                }
                Ok(())
            }
        },
    );
}

/// Enqueues the schedules' due slots, then sleeps until the next one is due (at most 5 s, so
/// a replica that lost a race or a transaction still looks again soon).
async fn scheduler(ctx: Arc<Ctx>, schedules: Vec<Schedule>, token: CancellationToken) {
    let mut last_log: Option<std::time::Instant> = None;
    loop {
        let mut sleep = Duration::from_secs(5);
        for s in &schedules {
            match schedule::enqueue_due(&ctx.pool, s).await {
                Ok(e) => {
                    if !e.tasks.is_empty() {
                        ctx.fast_path.push(s.queue, e.tasks);
                    }
                    if let Some(next) = e.next_in {
                        sleep = sleep.min(next);
                    }
                }
                Err(e) if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) => {
                    tracing::warn!(schedule = %s.id, error = %e, "scheduler failed; retrying");
                    last_log = Some(std::time::Instant::now());
                }
                Err(_) => {}
            }
        }
        // A few milliseconds past the slot, so the database clock has reached it.
        let sleep = sleep + Duration::from_millis(5);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Runs `f` every `period` until `token` fires; errors are logged at most every 10 s per loop.
fn every<F, Fut>(
    loops: &mut JoinSet<()>,
    name: &'static str,
    period: Duration,
    token: &CancellationToken,
    f: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = switchyard_shared::Result<()>> + Send,
{
    every_or_woken(loops, name, period, token, None, f);
}

/// [`every`], and also soon after `wake`'s dispatcher is woken: wake-ups come per finished
/// delivery under load, so a short pause gathers them and one pass admits many jobs.
fn every_or_woken<F, Fut>(
    loops: &mut JoinSet<()>,
    name: &'static str,
    period: Duration,
    token: &CancellationToken,
    wake: Option<Dispatcher>,
    f: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = switchyard_shared::Result<()>> + Send,
{
    let token = token.clone();
    loops.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_log: Option<std::time::Instant> = None;
        loop {
            let woken = async {
                match &wake {
                    Some(d) => d.woken().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tick.tick() => {}
                _ = woken => tokio::time::sleep(WAKE_COALESCE).await,
            }
            if let Err(e) = f().await
                && last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10))
            {
                tracing::warn!(task = name, error = %e, "background task failed; retrying");
                last_log = Some(std::time::Instant::now());
            }
        }
    });
}

/// Cancels `token` on SIGTERM or Ctrl-C.
pub async fn shutdown_on_signal(token: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
    token.cancel();
}

/// A tiny side server for a standalone worker: liveness and Prometheus metrics.
pub async fn serve_metrics(addr: String, shutdown: CancellationToken) {
    use poem::{EndpointExt, Route, get, handler, listener::TcpListener};
    #[handler]
    fn healthz() -> &'static str {
        "ok"
    }
    #[handler]
    fn metrics() -> String {
        switchyard_shared::telemetry::prometheus().render()
    }
    let app = Route::new()
        .at("/healthz", get(healthz))
        .at("/metrics", get(metrics))
        .map_to_response();
    let server = poem::Server::new(TcpListener::bind(addr.clone()));
    if let Err(e) = server
        .run_with_graceful_shutdown(app, async move { shutdown.cancelled().await }, None)
        .await
    {
        tracing::error!(%addr, error = %e, "worker metrics server failed");
    }
}
