//! Group commit in the application: the same statement asked for by many concurrent runs (claim
//! a job, read a delivery's target, record an attempt) goes to Postgres once for all of them.
//!
//! There is no collection window: a request that finds a free slot goes at once, alone, and
//! requests that arrive while every slot is busy wait for the next batch. At low load nothing
//! waits; under load batches grow with it, and each batch is one round trip and one commit
//! instead of one per request (docs/architecture.md §8).

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    error::{Error, Result},
    telemetry::metrics as m,
};

/// A statement that can serve many requests at once.
pub trait Batch: Send + Sync + 'static {
    type Req: Send + Sync + 'static;
    type Resp: Send + 'static;
    /// Serves `reqs`, returning one response per request, in order.
    fn run<'a>(&'a self, reqs: &'a [Self::Req]) -> BoxFuture<'a, Result<Vec<Self::Resp>>>;
}

type Item<B> = (
    <B as Batch>::Req,
    oneshot::Sender<Result<<B as Batch>::Resp>>,
);

/// A handle to a batching task; cheap to clone.
pub struct Batcher<B: Batch> {
    tx: mpsc::Sender<Item<B>>,
}

impl<B: Batch> Clone for Batcher<B> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<B: Batch> Batcher<B> {
    /// Starts the task: at most `in_flight` batches at once, each of at most `max` requests.
    /// It stops when the last handle is dropped. `name` labels the batch-size metric.
    pub fn spawn(name: &'static str, batch: B, max: usize, in_flight: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Item<B>>(max.max(1) * 8);
        let batch = Arc::new(batch);
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        tokio::spawn(async move {
            loop {
                let slot = slots.clone().acquire_owned().await.expect("never closed");
                let Some(first) = rx.recv().await else { break };
                let mut items = vec![first];
                while items.len() < max {
                    match rx.try_recv() {
                        Ok(item) => items.push(item),
                        Err(_) => break,
                    }
                }
                metrics::histogram!(m::BATCH_SIZE, "batch" => name).record(items.len() as f64);
                let batch = batch.clone();
                tokio::spawn(async move {
                    serve(&*batch, items).await;
                    drop(slot);
                });
            }
        });
        Batcher { tx }
    }

    /// Serves one request in the next batch.
    pub async fn call(&self, req: B::Req) -> Result<B::Resp> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((req, tx))
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("the batching task has stopped")))?;
        rx.await
            .map_err(|_| Error::Internal(anyhow::anyhow!("the batch was dropped unanswered")))?
    }
}

/// Runs one batch. If it fails as a whole, each request runs alone, so one bad request (or a
/// deadlock between two batches) fails only itself.
async fn serve<B: Batch>(batch: &B, items: Vec<Item<B>>) {
    let (reqs, replies): (Vec<B::Req>, Vec<_>) = items.into_iter().unzip();
    let out = batch.run(&reqs).await.and_then(|out| {
        if out.len() == reqs.len() {
            Ok(out)
        } else {
            Err(Error::Internal(anyhow::anyhow!(
                "a batch of {} requests returned {} responses",
                reqs.len(),
                out.len()
            )))
        }
    });
    match out {
        Ok(out) => {
            for (reply, resp) in replies.into_iter().zip(out) {
                let _ = reply.send(Ok(resp));
            }
        }
        Err(e) if reqs.len() == 1 => {
            let _ = replies.into_iter().next().expect("one").send(Err(e));
        }
        Err(e) => {
            tracing::debug!(error = %e, n = reqs.len(), "batch failed; running its requests alone");
            for (req, reply) in reqs.iter().zip(replies) {
                let one = batch
                    .run(std::slice::from_ref(req))
                    .await
                    .and_then(|mut v| {
                        v.pop()
                            .ok_or_else(|| Error::Internal(anyhow::anyhow!("empty batch answer")))
                    });
                let _ = reply.send(one);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Doubles numbers, refuses 13, and remembers the size of every batch it served.
    struct Doubler(Mutex<Vec<usize>>);

    impl Batch for Arc<Doubler> {
        type Req = u32;
        type Resp = u32;
        fn run<'a>(&'a self, reqs: &'a [u32]) -> BoxFuture<'a, Result<Vec<u32>>> {
            Box::pin(async move {
                self.0.lock().unwrap().push(reqs.len());
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                if reqs.contains(&13) {
                    return Err(Error::Internal(anyhow::anyhow!("unlucky")));
                }
                Ok(reqs.iter().map(|r| r * 2).collect())
            })
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_a_bad_one_fails_alone() {
        let d = Arc::new(Doubler(Mutex::new(vec![])));
        let b = Batcher::spawn("test", d.clone(), 64, 1);
        // One alone goes at once, in a batch of its own.
        assert_eq!(b.call(1).await.unwrap(), 2);
        let calls: Vec<_> = (0..40u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.call(i).await) })
            })
            .collect();
        for c in calls {
            let (i, r) = c.await.unwrap();
            match i {
                13 => assert!(r.is_err()),
                _ => assert_eq!(r.unwrap(), i * 2),
            }
        }
        let sizes = d.0.lock().unwrap().clone();
        assert_eq!(sizes[0], 1);
        // 40 requests in far fewer round trips than 40, plus the failed batch's 1-by-1 reruns.
        let batched: Vec<_> = sizes.iter().filter(|s| **s > 1).collect();
        assert!(
            !batched.is_empty(),
            "some requests shared a batch: {sizes:?}"
        );
        assert!(sizes.iter().all(|s| *s <= 64));
    }
}
