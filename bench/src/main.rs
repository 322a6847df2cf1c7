//! `switchyard-bench`: drives load against a running Switchyard and prints what it measured.
//!
//! It creates a tenant, a key and endpoints pointing at its own receiver, posts N orders at
//! concurrency C (or at a fixed rate), and waits for every webhook. It reports accepted
//! orders/s, API latency, deliveries/s, end-to-end latency (order accepted → webhook received),
//! lost, duplicate and badly signed deliveries. Baselines measured in the same run (raw
//! Postgres single-row inserts, raw apalis-redis no-op consumption) put the figures in context
//! on a shared, noisy machine.

mod backlog;
mod baseline;
mod brokers;
mod floor;
mod receiver;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::receiver::Receiver;

#[derive(Parser, Debug)]
#[command(name = "switchyard-bench", version, about)]
struct Args {
    /// Base URL of the running API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Admin token of that API.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN")]
    admin_token: String,
    /// Orders to post.
    #[arg(long, default_value_t = 10_000)]
    orders: usize,
    /// Requests in flight (closed loop). Ignored with --rate.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Post at this many orders per second (open loop) instead of as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Endpoints per order (fan-out).
    #[arg(long, default_value_t = 1)]
    endpoints: usize,
    /// Also subscribe an endpoint that never answers (the noisy neighbour); the figures cover
    /// the healthy endpoints only.
    #[arg(long, default_value_t = false)]
    dead_endpoint: bool,
    /// Post partner events (`POST /v1/events`, type `bench.event`) instead of orders; the
    /// endpoints subscribe to them.
    #[arg(long, default_value_t = false)]
    events: bool,
    /// Burn-down: endpoints start rate-limited to 1 request/s, so the deliveries pile up
    /// pending; once every event is fanned out the limits are lifted and the backlog drains.
    /// Reports the backlog, the drain rate and the largest Redis window seen while draining.
    #[arg(long, default_value_t = false)]
    backlog: bool,
    /// Make the endpoints strict FIFO (`fifo: true`): one delivery at a time each, in the order
    /// the events were accepted; the receiver checks that order.
    #[arg(long, default_value_t = false)]
    fifo: bool,
    /// Send an Idempotency-Key header with every order.
    #[arg(long, default_value_t = false)]
    idempotency_keys: bool,
    /// Address the local receiver listens on (the API's worker must be allowed to reach it).
    #[arg(long, default_value = "127.0.0.1:0")]
    receiver_listen: String,
    /// How long to wait for the last webhooks after the last order.
    #[arg(long, default_value = "120")]
    drain_timeout_secs: u64,
    /// Also measure the baselines (needs --database-url and --redis-url).
    #[arg(long, default_value_t = false)]
    baselines: bool,
    /// Postgres server for the insert baseline (a scratch database is created and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    database_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Queue floor: instead of orders, enqueue `--orders` no-op probe jobs straight into the
    /// ledger at this database (the running system's) and time them through the worker.
    #[arg(long)]
    queue_floor: Option<String>,
    /// Where deliveries go: `http` (signed webhooks to the local receiver), `rabbitmq` (a
    /// durable queue per endpoint at --amqp-url) or `nats` (a JetStream stream at --nats-url).
    #[arg(long, default_value = "http")]
    destination: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Only measure raw apalis-redis consuming `--orders` (at most 7,000) no-op tasks at
    /// `--concurrency`, then exit.
    #[arg(long, default_value_t = false)]
    apalis_noop: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchyard_shared::install_crypto_provider();
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(16))
        .build()?;

    if args.apalis_noop {
        let n = args.orders.min(7_000);
        let rate = baseline::apalis_noop(&args.redis_url, n, args.concurrency).await?;
        println!(
            "baseline  raw apalis-redis: {n} no-op tasks consumed, c={}: {rate:.0} tasks/s",
            args.concurrency
        );
        return Ok(());
    }
    if let Some(ledger) = &args.queue_floor {
        let timeout = Duration::from_secs(args.drain_timeout_secs);
        return floor::run(ledger, args.orders, timeout).await;
    }
    if args.baselines {
        let pg = baseline::postgres_inserts(&args.database_url, args.orders, args.concurrency)
            .await
            .context("postgres baseline")?;
        let rd = baseline::apalis_noop(&args.redis_url, args.orders.min(7_000), args.concurrency)
            .await
            .context("apalis baseline")?;
        println!(
            "baseline  raw Postgres single-row INSERT (autocommit), c={}: {:.0} rows/s",
            args.concurrency, pg
        );
        println!(
            "baseline  raw apalis-redis no-op tasks consumed, c={}:  {:.0} tasks/s",
            args.concurrency, rd
        );
    }

    let receiver = Receiver::start(&args.receiver_listen).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let broker = (args.destination != "http").then(|| brokers::Broker {
        url: if args.destination == "rabbitmq" {
            args.amqp_url.clone()
        } else {
            args.nats_url.clone()
        },
        kind: args.destination.clone(),
        run: run.clone(),
    });
    if let Some(b) = &broker {
        b.start(args.endpoints, &receiver).await?;
    }
    let (key, endpoints, secrets) = setup(&http, &args, &receiver.url, broker.as_ref()).await?;
    receiver.set_secrets(secrets);

    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut api_latency: Vec<Duration> = Vec::with_capacity(args.orders);
    let mut failures = 0usize;
    let started = Instant::now();
    let post = |i: usize| {
        let (http, key, accepted, run) = (http.clone(), key.clone(), accepted.clone(), run.clone());
        let url = format!(
            "{}/v1/{}",
            args.api,
            if args.events { "events" } else { "orders" }
        );
        let idem = args.idempotency_keys;
        let body = if args.events {
            json!({"type": "bench.event", "data": {"id": format!("{run}-{i}"), "n": i}})
        } else {
            order(&run, i)
        };
        async move {
            let mut req = http.post(url).header("x-api-key", &key).json(&body);
            if idem {
                req = req.header("idempotency-key", format!("{run}-{i}"));
            }
            let t0 = Instant::now();
            let resp = req.send().await;
            let took = t0.elapsed();
            match resp {
                Ok(r) if r.status() == 201 => {
                    let v: Value = r.json().await.unwrap_or_default();
                    // What the webhook carries as `data.id`: the order's id, or the event's own.
                    let id = if v["data"]["id"].is_string() {
                        &v["data"]["id"]
                    } else {
                        &v["id"]
                    };
                    if let Some(id) = id.as_str() {
                        accepted
                            .lock()
                            .unwrap()
                            .insert(id.to_owned(), Instant::now());
                    }
                    Ok(took)
                }
                Ok(r) => Err(format!(
                    "HTTP {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let results: Vec<Result<Duration, String>> = match args.rate {
        None => {
            futures::stream::iter(0..args.orders)
                .map(post)
                .buffer_unordered(args.concurrency)
                .collect()
                .await
        }
        Some(rate) => {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut tasks = Vec::with_capacity(args.orders);
            for i in 0..args.orders {
                tick.tick().await;
                tasks.push(tokio::spawn(post(i)));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await?);
            }
            out
        }
    };
    let ingest = started.elapsed();
    for r in results {
        match r {
            Ok(d) => api_latency.push(d),
            Err(e) => {
                if failures < 5 {
                    eprintln!("order failed: {e}");
                }
                failures += 1;
            }
        }
    }
    let accepted = Arc::try_unwrap(accepted).unwrap().into_inner().unwrap();
    let expected = accepted.len() * args.endpoints;

    let backlog = if args.backlog {
        Some(backlog::build_and_lift(&http, &args, &key, &endpoints, &receiver).await?)
    } else {
        None
    };
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout_secs);
    let mut window = backlog::Window::default();
    while receiver.unique_count() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if backlog.is_some() {
            window.sample(&http, &args).await;
        }
    }
    let drained = Instant::now();
    let report = receiver.report();
    let mut e2e: Vec<Duration> = Vec::new();
    let mut lost = 0;
    for (order_id, at) in &accepted {
        match report.first_seen.get(order_id) {
            Some(times) if times.len() == args.endpoints => {
                e2e.extend(times.iter().map(|t| t.saturating_duration_since(*at)));
            }
            Some(times) => lost += args.endpoints - times.len(),
            None => lost += args.endpoints,
        }
    }
    api_latency.sort();
    e2e.sort();
    let delivery_window = report
        .last_at
        .map(|l| l.duration_since(started))
        .unwrap_or_default();

    println!(
        "scenario  destination={} {}={} concurrency={} rate={} endpoints={} idempotency_keys={} dead_endpoint={} fifo={}",
        args.destination,
        if args.events { "events" } else { "orders" },
        args.orders,
        if args.rate.is_some() {
            0
        } else {
            args.concurrency
        },
        args.rate.map_or("max".into(), |r| format!("{r}/s")),
        args.endpoints,
        args.idempotency_keys,
        args.dead_endpoint,
        args.fifo
    );
    println!(
        "ingest    {} accepted, {} failed, {:.0} orders/s",
        accepted.len(),
        failures,
        accepted.len() as f64 / ingest.as_secs_f64()
    );
    println!(
        "api       p50 {}  p99 {}  max {}",
        ms(percentile(&api_latency, 0.5)),
        ms(percentile(&api_latency, 0.99)),
        ms(api_latency.last().copied().unwrap_or_default())
    );
    println!(
        "delivery  {} of {} delivered, {:.0} deliveries/s (first order → last webhook)",
        report.unique,
        expected,
        report.unique as f64 / delivery_window.as_secs_f64().max(1e-9)
    );
    println!(
        "e2e       p50 {}  p95 {}  p99 {}  max {}",
        ms(percentile(&e2e, 0.5)),
        ms(percentile(&e2e, 0.95)),
        ms(percentile(&e2e, 0.99)),
        ms(e2e.last().copied().unwrap_or_default())
    );
    println!(
        "integrity lost {}  duplicates {}  bad signatures {}",
        lost,
        report.total - report.unique,
        report.bad_signatures
    );
    if args.fifo {
        println!("fifo      {} messages out of order", report.out_of_order);
    }
    if let Some(b) = backlog {
        b.report(expected, report.unique, drained, &window);
    }
    if let Some(b) = &broker {
        b.clean_up(args.endpoints).await?;
    }
    if lost > 0 || report.bad_signatures > 0 || failures > 0 {
        bail!("the run lost work, failed requests or saw bad signatures");
    }
    Ok(())
}

fn order(run: &str, i: usize) -> Value {
    json!({
        "external_id": format!("bench-{run}-{i}"),
        "currency": "EUR",
        "items": [
            { "sku": "PIZ-1", "name": "Margherita", "quantity": 2, "unit_price": 950 },
            { "sku": "DRK-7", "name": "Lemonade", "quantity": 1, "unit_price": 300 }
        ],
        "customer": { "name": "Load Test", "email": "load@example.com" },
        "delivery": { "address": "1 Bench Street" }
    })
}

/// Creates a tenant, a key and `endpoints` endpoints to the receiver; returns the key, the
/// endpoint ids and their secrets.
async fn setup(
    http: &reqwest::Client,
    args: &Args,
    receiver_url: &str,
    broker: Option<&brokers::Broker>,
) -> anyhow::Result<(String, Vec<String>, Vec<String>)> {
    let admin = |path: &str, body: Value| {
        http.post(format!("{}{path}", args.api))
            .bearer_auth(&args.admin_token)
            .json(&body)
            .send()
    };
    // Limits high enough not to throttle the load (they are still checked on every request).
    let unlimited = 10_000_000;
    let tenant: Value = admin(
        "/admin/v1/tenants",
        json!({"name": "bench", "rate_limit_per_minute": unlimited}),
    )
    .await?
    .error_for_status()?
    .json()
    .await?;
    let tenant = tenant["id"].as_str().context("tenant id")?;
    let key: Value = admin(
        &format!("/admin/v1/tenants/{tenant}/api-keys"),
        json!({
            "name": "bench",
            "rate_limit_per_minute": unlimited,
            "rate_limit_per_hour": unlimited,
        }),
    )
    .await?
    .error_for_status()?
    .json()
    .await?;
    let key = key["key"].as_str().context("key")?.to_owned();
    let event_type = if args.events {
        http.post(format!("{}/v1/event-types", args.api))
            .bearer_auth(&key)
            .json(&json!({"name": "bench.event", "schema": {
                "type": "object", "required": ["id"],
                "properties": {"id": {"type": "string"}, "n": {"type": "integer"}}}}))
            .send()
            .await?
            .error_for_status()
            .context("creating the event type")?;
        "bench.event"
    } else {
        "order.created"
    };
    let (mut ids, mut secrets) = (Vec::new(), Vec::new());
    for i in 0..args.endpoints {
        let mut body = match broker {
            Some(b) => b.endpoint(i, event_type),
            None => json!({"url": format!("{receiver_url}/{i}"), "event_types": [event_type]}),
        };
        if args.backlog {
            body["rate_limit"] = json!(1);
        }
        if args.fifo {
            body["fifo"] = json!(true);
        }
        let ep: Value = http
            .post(format!("{}/v1/webhook-endpoints", args.api))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await?
            .error_for_status()
            .context("creating the endpoint (is SWITCHYARD_ALLOW_PRIVATE_TARGETS on?)")?
            .json()
            .await?;
        ids.push(ep["id"].as_str().context("endpoint id")?.to_owned());
        secrets.push(ep["secret"].as_str().context("secret")?.to_owned());
    }
    if args.dead_endpoint {
        http.post(format!("{}/v1/webhook-endpoints", args.api))
            .bearer_auth(&key)
            .json(&json!({"url": format!("{receiver_url}/dead"), "event_types": [event_type]}))
            .send()
            .await?
            .error_for_status()
            .context("creating the dead endpoint")?;
    }
    Ok((key, ids, secrets))
}
