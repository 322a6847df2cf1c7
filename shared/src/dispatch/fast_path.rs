//! The fast path: jobs committed `queued` are pushed to Redis right after their commit.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{BATCH, Dispatcher};
use crate::{queue::JobTask, telemetry::metrics as m};

/// Pushes freshly committed jobs right after their commit. Callers never wait on Redis: tasks go
/// through a bounded channel to a task that batches them per queue and pushes a few batches at
/// a time. If the channel is full or Redis fails, the jobs go back to `pending` and the
/// dispatcher's sweep pushes them a moment later.
#[derive(Clone)]
pub struct FastPath {
    tx: mpsc::Sender<(&'static str, Vec<JobTask>)>,
    dispatcher: Dispatcher,
}

/// Batches pushed concurrently by the fast path.
const FAST_PATH_CONCURRENCY: usize = 4;

impl FastPath {
    pub fn spawn(
        dispatcher: Dispatcher,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(&'static str, Vec<JobTask>)>(4096);
        let d = dispatcher.clone();
        let handle = tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(FAST_PATH_CONCURRENCY));
            let last_error_log = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
            loop {
                // On shutdown, stop accepting but push what is already in the channel.
                let got = tokio::select! {
                    biased;
                    got = rx.recv() => got,
                    _ = shutdown.cancelled(), if !rx.is_closed() => {
                        rx.close();
                        continue;
                    }
                };
                let Some(first) = got else { break };
                let mut batches: BTreeMap<&'static str, Vec<JobTask>> = BTreeMap::new();
                let mut n = first.1.len();
                batches.entry(first.0).or_default().extend(first.1);
                while n < BATCH as usize {
                    match rx.try_recv() {
                        Ok((queue, tasks)) => {
                            n += tasks.len();
                            batches.entry(queue).or_default().extend(tasks);
                        }
                        Err(_) => break,
                    }
                }
                for (queue, tasks) in batches {
                    let permit = permits.clone().acquire_owned().await.expect("never closed");
                    let (d, last_error_log) = (d.clone(), last_error_log.clone());
                    tokio::spawn(async move {
                        if let Err(e) = d.push(queue, &tasks).await {
                            // At most every 10 s: during a Redis outage every request lands here.
                            let mut last = last_error_log.lock().expect("log lock");
                            if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                                tracing::warn!(error = %e, "fast-path push failed; the dispatcher will retry");
                                *last = Some(std::time::Instant::now());
                            }
                        }
                        drop(permit);
                    });
                }
            }
            // Let in-flight pushes finish before reporting the fast path stopped.
            let _ = permits.acquire_many(FAST_PATH_CONCURRENCY as u32).await;
        });
        (FastPath { tx, dispatcher }, handle)
    }

    /// Pushes these tasks of jobs just committed as `queued` (`jobs::NewJob`).
    pub fn push(&self, queue: &'static str, tasks: Vec<JobTask>) {
        if tasks.is_empty() {
            return;
        }
        if let Err(
            mpsc::error::TrySendError::Full((queue, tasks))
            | mpsc::error::TrySendError::Closed((queue, tasks)),
        ) = self.tx.try_send((queue, tasks))
        {
            metrics::counter!(m::FAST_PATH_OVERFLOW, "queue" => queue).increment(1);
            // Overloaded: hand the jobs to the dispatcher instead of leaving them to the reconciler.
            let d = self.dispatcher.clone();
            tokio::spawn(async move {
                if let Err(e) = d.revert(&tasks).await {
                    tracing::warn!(error = %e, "could not hand jobs back; the reconciler will");
                }
            });
        }
    }
}
