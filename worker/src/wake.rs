//! Instant pickup: every push publishes the queue's name on `{prefix}:wake`; one subscriber per
//! process wakes that queue's idle consumers, so a new task starts within a round trip instead
//! of a poll interval. The interval poll stays as the fallback (lost messages, Redis restarts).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::{PollSnapshot, PollStrategy};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Per-queue wake senders of this process's consumers.
#[derive(Clone, Default)]
pub struct WakeHub {
    senders: Arc<Mutex<HashMap<String, Vec<mpsc::Sender<()>>>>>,
}

impl WakeHub {
    /// A poll strategy for one consumer of `queue`: wakes on a push or every `interval`.
    pub fn strategy(&self, queue: &str, interval: Duration) -> WakeStrategy {
        let (tx, rx) = mpsc::channel(1);
        self.senders
            .lock()
            .expect("wake hub lock")
            .entry(queue.to_owned())
            .or_default()
            .push(tx);
        WakeStrategy {
            rx,
            interval,
            sleep: Box::pin(tokio::time::sleep(interval)),
        }
    }

    fn wake(&self, queue: &str) {
        if let Some(list) = self.senders.lock().expect("wake hub lock").get_mut(queue) {
            // Consumers that were restarted dropped their receiver: forget them.
            list.retain(|tx| !matches!(tx.try_send(()), Err(mpsc::error::TrySendError::Closed(_))));
        }
    }

    /// Subscribes to the wake channel until `shutdown`, reconnecting after errors.
    pub async fn listen(self, redis_url: String, channel: String, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let result: redis::RedisResult<()> = async {
                let client = redis::Client::open(redis_url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                let mut messages = pubsub.on_message();
                backoff = Duration::from_millis(200);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        msg = messages.next() => match msg {
                            Some(m) => {
                                if let Ok(queue) = m.get_payload::<String>() {
                                    self.wake(&queue);
                                }
                            }
                            None => return Ok(()),
                        },
                    }
                }
            }
            .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "wake subscription lost; consumers fall back to polling");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

pub struct WakeStrategy {
    rx: mpsc::Receiver<()>,
    interval: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl PollStrategy for WakeStrategy {
    // Only registers the worker's waker with both sources; PollWith fetches after any wake-up.
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut fired = false;
        while let Poll::Ready(Some(())) = self.rx.poll_recv(cx) {
            fired = true;
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + self.interval);
            let _ = self.sleep.as_mut().poll(cx);
            fired = true;
        }
        if fired {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}
