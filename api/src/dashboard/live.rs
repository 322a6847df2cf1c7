//! The live overview: one poll of the queues a second per API replica, shared by every browser
//! watching (server-sent events). The poller starts with the first watcher and stops
//! [`GRACE`] after the last one leaves (so moving between pages finds it running), so an idle
//! dashboard costs nothing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_shared::{
    dispatch::pauses, jobs, jobs_admin, services::Services, telemetry::metrics as m,
};
use tokio::sync::watch;

/// How often the overview is read while anyone watches.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long the poller outlives its last watcher.
pub const GRACE: Duration = Duration::from_secs(5);
/// How often the hour and day totals are re-read (they move slowly and cost more).
const SLOW_INTERVAL: Duration = Duration::from_secs(30);

/// One queue as the overview shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueRow {
    pub queue: String,
    pub pending: i64,
    pub due: i64,
    pub queued: i64,
    pub running: i64,
    /// Pending jobs not due yet: retry backoffs, throttled endpoints, schedules.
    pub waiting: i64,
    pub dead: i64,
    /// Dispatcher lag: how long the oldest due job has waited to be handed to Redis.
    pub oldest_due_age_seconds: f64,
    /// Latency: how long the oldest ready job (due, or in Redis unclaimed) has waited.
    pub latency_seconds: f64,
    pub redis_ready: u64,
    pub paused: bool,
    pub done_minute: i64,
    pub failed_minute: i64,
    pub done_hour: i64,
    pub failed_hour: i64,
    pub done_day: i64,
    pub failed_day: i64,
}

/// The whole overview at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overview {
    pub at: Option<DateTime<Utc>>,
    pub queues: Vec<QueueRow>,
}

/// The running poller's channel, if one runs.
type Running = Arc<Mutex<Option<watch::Sender<Arc<Overview>>>>>;

/// The shared poller (one per API replica).
#[derive(Default)]
pub struct Live {
    sender: Running,
}

impl Live {
    /// A receiver of the overview, starting the poller if nobody watched.
    pub fn watch(&self, services: &Services) -> watch::Receiver<Arc<Overview>> {
        let mut sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = sender.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Arc::new(Overview::default()));
        *sender = Some(tx.clone());
        tokio::spawn(poll(services.clone(), tx, self.sender.clone()));
        rx
    }
}

/// The hour and day totals as of their last read (`at`), per queue: done and failed in the
/// hour, done and failed in the day. Between reads, what finished since `at` is added, so the
/// totals stay coherent with the minute's (at most [`SLOW_INTERVAL`] of old jobs are counted
/// after they left the window).
#[derive(Default)]
struct Slow {
    at: Option<DateTime<Utc>>,
    totals: HashMap<String, (i64, i64, i64, i64)>,
}

/// Reads the overview every [`INTERVAL`] until nobody has watched for [`GRACE`].
async fn poll(services: Services, tx: watch::Sender<Arc<Overview>>, running: Running) {
    let mut slow = Slow::default();
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        if tx.receiver_count() > 0 {
            idle_since = None;
        } else if idle_since
            .get_or_insert_with(std::time::Instant::now)
            .elapsed()
            >= GRACE
        {
            // Under the lock nobody can subscribe meanwhile: the next watcher starts a poller.
            let mut current = running.lock().unwrap_or_else(|e| e.into_inner());
            if tx.receiver_count() == 0 {
                *current = None;
                return;
            }
        }
        match read(&services, &slow).await {
            Ok(o) => {
                metrics::counter!(m::DASHBOARD_POLLS).increment(1);
                let _ = tx.send(Arc::new(o));
            }
            Err(e) => tracing::warn!(error = %e, "dashboard overview read failed"),
        }
        // After publishing, so no watcher waits for it.
        if let Err(e) = slow.refresh(&services.pool).await {
            tracing::warn!(error = %e, "dashboard totals read failed");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

impl Slow {
    /// Reads the hour and day totals again if they are [`SLOW_INTERVAL`] old. They cost what
    /// a day of finished jobs costs to count (about 250 ms at a million a day), once per
    /// interval, while someone watches.
    async fn refresh(&mut self, pool: &sqlx::PgPool) -> switchyard_shared::Result<()> {
        let now = Utc::now();
        let fresh = chrono::Duration::from_std(SLOW_INTERVAL).unwrap_or_default();
        if self.at.is_some_and(|t| now - t < fresh) {
            return Ok(());
        }
        let hour = jobs_admin::finished_since(pool, now - chrono::Duration::hours(1)).await?;
        let day = jobs_admin::finished_since(pool, now - chrono::Duration::days(1)).await?;
        self.totals.clear();
        for f in hour {
            let e = self.totals.entry(f.queue).or_default();
            e.0 = f.succeeded;
            e.1 = f.failed;
        }
        for f in day {
            let e = self.totals.entry(f.queue).or_default();
            e.2 = f.succeeded;
            e.3 = f.failed;
        }
        self.at = Some(now);
        Ok(())
    }
}

/// One read: the ledger's unfinished work, Redis' ready window, pauses, and what finished in
/// the last minute and since the totals were read (before their first read: the minute's).
async fn read(s: &Services, slow: &Slow) -> switchyard_shared::Result<Overview> {
    let pool = &s.pool;
    let names = s.queues.names();
    let stats = jobs::queue_stats(pool, names).await?;
    let paused = pauses::paused(pool).await?;
    let queued_age: HashMap<String, f64> = jobs_admin::oldest_queued_age(pool)
        .await?
        .into_iter()
        .collect();
    let by_queue = |rows: Vec<jobs_admin::Finished>| -> HashMap<String, jobs_admin::Finished> {
        rows.into_iter().map(|f| (f.queue.clone(), f)).collect()
    };
    let now = Utc::now();
    let minute =
        by_queue(jobs_admin::finished_since(pool, now - chrono::Duration::seconds(60)).await?);
    let since = match slow.at {
        Some(at) => by_queue(jobs_admin::finished_since(pool, at).await?),
        None => minute.clone(),
    };
    let mut queues = Vec::with_capacity(stats.len());
    for q in stats {
        let redis_ready = s.queues.depth(&q.queue).await.unwrap_or(0);
        let m = minute.get(&q.queue).cloned().unwrap_or_default();
        let new = since.get(&q.queue).cloned().unwrap_or_default();
        let (h, hf, d, df) = slow.totals.get(&q.queue).copied().unwrap_or_default();
        let (done_hour, failed_hour) = (h + new.succeeded, hf + new.failed);
        let (done_day, failed_day) = (d + new.succeeded, df + new.failed);
        queues.push(QueueRow {
            waiting: q.pending - q.due,
            paused: paused.iter().any(|p| p.0 == q.queue),
            redis_ready,
            done_minute: m.succeeded,
            failed_minute: m.failed,
            done_hour,
            failed_hour,
            done_day,
            failed_day,
            pending: q.pending,
            due: q.due,
            queued: q.queued,
            running: q.running,
            dead: q.dead,
            latency_seconds: q
                .oldest_due_age_seconds
                .max(queued_age.get(&q.queue).copied().unwrap_or(0.0)),
            oldest_due_age_seconds: q.oldest_due_age_seconds,
            queue: q.queue,
        });
    }
    Ok(Overview {
        at: Some(Utc::now()),
        queues,
    })
}
