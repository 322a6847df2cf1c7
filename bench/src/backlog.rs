//! Burn-down (`--backlog`): the deliveries pile up behind rate-limited endpoints, then the
//! limits are lifted and the backlog drains. What it shows: a large pending backlog drains
//! without errors, and Redis holds only the bounded window of ready work while it does.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::{Args, receiver::Receiver};

/// How often the queues are read: counting a backlog of a million jobs costs Postgres most
/// of a second, which would be part of what the run measures.
const POLL: Duration = Duration::from_secs(10);

/// The backlog as it stood when the limits were lifted.
pub struct Backlog {
    lifted_at: Instant,
    delivered_before: usize,
    waiting: i64,
}

/// What the drain looked like, sampled every [`POLL`].
#[derive(Default)]
pub struct Window {
    last: Option<Instant>,
    max_redis_ready: i64,
    high_water_mark: i64,
    samples: usize,
}

async fn queue(http: &reqwest::Client, args: &Args, name: &str) -> anyhow::Result<Value> {
    let list: Value = http
        .get(format!("{}/admin/v1/queues", args.api))
        .bearer_auth(&args.admin_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    list["data"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["queue"] == name))
        .cloned()
        .with_context(|| format!("queue {name} in GET /admin/v1/queues"))
}

fn unfinished(q: &Value) -> i64 {
    ["pending", "queued", "running"]
        .iter()
        .map(|k| q[k].as_i64().unwrap_or(0))
        .sum()
}

/// Waits until every event is fanned out (the deliveries wait behind their endpoints' limits),
/// then lifts the limits.
pub async fn build_and_lift(
    http: &reqwest::Client,
    args: &Args,
    key: &str,
    endpoints: &[String],
    receiver: &Receiver,
) -> anyhow::Result<Backlog> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.drain_timeout_secs);
    while unfinished(&queue(http, args, "event_fan_out").await?) > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fan-out did not finish in time"
        );
        tokio::time::sleep(POLL).await;
    }
    let waiting = unfinished(&queue(http, args, "webhook_deliveries").await?);
    println!(
        "backlog   {waiting} deliveries waiting, fanned out {:.0} s after the last order",
        started.elapsed().as_secs_f64()
    );
    let delivered_before = receiver.unique_count();
    let lifted_at = Instant::now();
    for id in endpoints {
        http.patch(format!("{}/v1/webhook-endpoints/{id}", args.api))
            .bearer_auth(key)
            .json(&json!({"rate_limit": null}))
            .send()
            .await?
            .error_for_status()
            .context("lifting the endpoint's rate limit")?;
    }
    Ok(Backlog {
        lifted_at,
        delivered_before,
        waiting,
    })
}

impl Window {
    /// Records the Redis window of the delivery queue, at most once per [`POLL`].
    pub async fn sample(&mut self, http: &reqwest::Client, args: &Args) {
        if self.last.is_some_and(|t| t.elapsed() < POLL) {
            return;
        }
        self.last = Some(Instant::now());
        if let Ok(q) = queue(http, args, "webhook_deliveries").await {
            self.max_redis_ready = self
                .max_redis_ready
                .max(q["redis_ready"].as_i64().unwrap_or(0));
            self.high_water_mark = q["high_water_mark"].as_i64().unwrap_or(0);
            self.samples += 1;
        }
    }
}

impl Backlog {
    pub fn report(&self, expected: usize, delivered: usize, drained: Instant, window: &Window) {
        let took = drained.duration_since(self.lifted_at).as_secs_f64();
        let drained_n = delivered.saturating_sub(self.delivered_before);
        println!(
            "burn-down {} of {} waiting delivered in {:.0} s after the limits were lifted: {:.0} deliveries/s; {} of {} delivered in all",
            drained_n,
            self.waiting,
            took,
            drained_n as f64 / took.max(1e-9),
            delivered,
            expected
        );
        println!(
            "window    largest Redis ready window while draining {} tasks (high-water mark {}, {} samples)",
            window.max_redis_ready, window.high_water_mark, window.samples
        );
    }
}
