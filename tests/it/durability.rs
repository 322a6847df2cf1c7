//! Nothing is lost: worker SIGKILL, Redis losing everything, a backlog far beyond what Redis
//! holds, and a graceful shutdown mid-flight.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use switchyard_tests::{
    Behaviour, PartnerServer, TestApp, TestOptions, eventually, process::WorkerProcess,
};
use switchyard_worker::QUEUES;

async fn succeeded(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'")
        .await
}

fn env_with(app: &TestApp, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = app.process_env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

#[tokio::test]
async fn deliveries_survive_a_worker_sigkill() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let partner = PartnerServer::start(Behaviour::Slow(Duration::from_secs(1))).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;
    // Few delivery slots, so at the kill some deliveries are mid-request, some prefetched by
    // the worker, some waiting in Redis and some still in the ledger.
    let env = env_with(&app, &[("SWITCHYARD_DELIVERY_CONCURRENCY", "4")]);
    let mut first = WorkerProcess::spawn(&env);
    const N: usize = 24;
    app.post_orders(&key, "kill", N, 8).await;
    eventually(
        Duration::from_secs(20),
        "deliveries to be under way",
        || async { (partner.count() >= 6).then_some(()) },
    )
    .await;

    let killed_at = Instant::now();
    first.kill9();
    let done_before_kill = succeeded(&app).await;
    let seen_before_kill: HashSet<String> = partner.unique_ids();
    // What had already succeeded must never be sent again.
    let succeeded_before_kill: HashSet<String> = sqlx::query_scalar(
        "SELECT 'msg_' || replace(message_id::text, '-', '') FROM webhook_deliveries
          WHERE status = 'succeeded'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let _second = WorkerProcess::spawn(&env);

    eventually(
        Duration::from_secs(60),
        "every delivery to succeed",
        || async { (succeeded(&app).await == N as i64).then_some(()) },
    )
    .await;
    let all_done = killed_at.elapsed();

    // Every message arrived; the ones cut off by the kill arrived again.
    let received = partner.received();
    let ids = partner.unique_ids();
    assert_eq!(ids.len(), N, "every order's webhook arrived");
    let mut per_id: HashMap<String, Vec<Instant>> = HashMap::new();
    for r in &received {
        per_id
            .entry(r.header("webhook-id").to_owned())
            .or_default()
            .push(r.at);
    }
    let redelivered_ids: HashSet<String> = per_id
        .iter()
        .filter(|(_, times)| times.len() > 1)
        .map(|(id, _)| id.clone())
        .collect();
    let redelivered: Vec<Duration> = per_id
        .values()
        .filter(|times| times.len() > 1)
        .map(|times| *times.iter().max().unwrap() - killed_at)
        .collect();
    assert!(
        !redelivered.is_empty(),
        "the kill interrupted deliveries (1 s each, 4 in flight)"
    );
    let recovery = redelivered.iter().max().copied().unwrap_or_default();
    println!(
        "SIGKILL: {done_before_kill} of {N} done before the kill, {} requests in flight or sent, \
         {} redelivered; interrupted work re-sent within {recovery:?}; all done {all_done:?} after the kill",
        seen_before_kill.len(),
        redelivered.len()
    );
    // Lease (8 s) + a reconciler pass (1 s) + a request (1 s) + margin.
    assert!(
        recovery <= Duration::from_secs(12),
        "interrupted deliveries took {recovery:?} to resume (README: ~8 s)"
    );
    // Duplicates are only ever deliveries in flight at the kill: sent, not yet recorded.
    let in_flight: HashSet<String> = seen_before_kill
        .difference(&succeeded_before_kill)
        .cloned()
        .collect();
    assert!(
        redelivered_ids.is_subset(&in_flight),
        "re-sent {redelivered_ids:?}, in flight were {in_flight:?}"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM jobs WHERE state NOT IN ('succeeded') AND queue <> 'janitor'"
        )
        .await,
        0
    );
}

/// An app with no worker yet (two delivery slots once one starts), an endpoint taking every
/// event, and `n` orders accepted and pushed to Redis by the fast path.
async fn orders_pushed_without_a_worker(
    prefix: &str,
    n: usize,
) -> (TestApp, PartnerServer, String) {
    let app = TestApp::spawn(TestOptions {
        with_worker: false,
        delivery_concurrency: 2,
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;
    app.post_orders(&key, prefix, n, n.min(8)).await;
    eventually(Duration::from_secs(5), "the fast path to push", || async {
        let q = app
            .count("SELECT count(*) FROM jobs WHERE state = 'queued' AND queue <> 'janitor'")
            .await;
        (q == n as i64).then_some(())
    })
    .await;
    (app, partner, key)
}

#[tokio::test]
async fn webhooks_are_delivered_after_redis_loses_everything() {
    // Accepted, pushed to Redis by the fast path, then Redis forgets all of it.
    let (mut app, partner, key) = orders_pushed_without_a_worker("flush", 40).await;
    let deleted = app.queues.delete_all_keys().await.unwrap();
    assert!(deleted > 0);
    app.start_worker();
    // A queued job missing from Redis is repaired after `reconcile_after` (1 s here).
    eventually(
        Duration::from_secs(8),
        "40 webhooks after the flush",
        || async { (partner.unique_ids().len() == 40).then_some(()) },
    )
    .await;

    // Again while the worker runs and delivery tasks wait in Redis (the partner is slow and the
    // worker has two delivery slots): the flush takes them, the reconciler repairs it.
    partner.set_behaviour(Behaviour::Slow(Duration::from_millis(200)));
    app.post_orders(&key, "flush-live", 40, 8).await;
    let waiting = eventually(
        Duration::from_secs(10),
        "delivery tasks waiting in Redis",
        || async {
            let d = app.queues.depth("webhook_deliveries").await.unwrap();
            (d > 0).then_some(d)
        },
    )
    .await;
    let flushed_at = Instant::now();
    let deleted = app.queues.delete_all_keys().await.unwrap();
    assert!(deleted > 0 && waiting > 0);
    // 40 deliveries of 200 ms on two slots are 4 s of work; the repair adds about a second
    // (measured 4.4 s in all), more when the machine is loaded by the other tests.
    eventually(
        Duration::from_secs(20),
        "80 webhooks after the second flush",
        || async { (partner.unique_ids().len() == 80).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "every delivery recorded",
        || async { (succeeded(&app).await == 80).then_some(()) },
    )
    .await;
    println!(
        "Redis flush: {waiting} delivery tasks waiting were flushed; 80 of 80 delivered \
         {:?} after the flush, {} requests in all",
        flushed_at.elapsed(),
        partner.count()
    );
}

/// A flush that races a push, or an eviction, can take the list and the data of a task and
/// leave its status key behind ("Pending"): the task is gone all the same, and the reconciler
/// must see that instead of trusting the status for the five-minute hard limit.
#[tokio::test]
async fn a_task_left_with_only_its_status_in_redis_is_dispatched_again() {
    let (mut app, partner, key) = orders_pushed_without_a_worker("evicted", 3).await;
    let cfg = app.queues.apalis_config(QUEUES[0], 1);
    let mut conn = app.queues.connection();
    let removed: i64 = redis::pipe()
        .del(cfg.active_jobs_list())
        .del(cfg.job_data_hash())
        .query_async::<Vec<i64>>(&mut conn)
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!(removed, 2, "the list and the data hash were there");
    let meta = format!("{}:*", cfg.job_meta_hash());
    let statuses: Vec<String> = redis::cmd("KEYS")
        .arg(&meta)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(statuses.len(), 3, "each task's status key is left behind");

    app.start_worker();
    // `reconcile_after` is 1 s here; trusting the status would wait 300 s.
    eventually(Duration::from_secs(10), "3 webhooks", || async {
        (partner.unique_ids().len() == 3).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "every delivery recorded",
        || async { (succeeded(&app).await == 3).then_some(()) },
    )
    .await;

    // And no false alarm: tasks waiting in the list (two slots, 1.5 s replies) longer than
    // `reconcile_after` are found where they are, so no job is dispatched a second time.
    partner.set_behaviour(Behaviour::Slow(Duration::from_millis(1500)));
    app.post_orders(&key, "slow", 12, 4).await;
    eventually(Duration::from_secs(30), "15 webhooks", || async {
        (succeeded(&app).await == 15).then_some(())
    })
    .await;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM jobs WHERE dispatch_seq > 1 AND queue = 'webhook_deliveries'"
        )
        .await,
        0,
        "a delivery task that was still in Redis was taken for lost"
    );
}

/// Samples the ready tasks of every queue until stopped; returns the maximum seen and how
/// many samples failed.
fn sample_redis_depth(app: &TestApp, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, u64)> {
    let queues = app.queues.clone();
    tokio::spawn(async move {
        let (mut max, mut errors) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            for q in QUEUES {
                match queues.depth(q).await {
                    Ok(d) => max = max.max(d),
                    Err(_) => errors += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (max, errors)
    })
}

#[tokio::test]
async fn a_backlog_of_20000_orders_drains_with_redis_bounded_by_the_high_water_mark() {
    const N: usize = 20_000;
    let app = TestApp::spawn(TestOptions {
        with_worker: false,
        high_water_mark: 1000,
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_redis_depth(&app, stop.clone());
    let started = Instant::now();
    app.post_orders(&key, "backlog", N, 32).await;
    let accepted_in = started.elapsed();
    // Redis holds exactly its window; the rest of the backlog waits in Postgres.
    eventually(Duration::from_secs(5), "the window to settle", || async {
        let queued = app
            .count("SELECT count(*) FROM jobs WHERE state = 'queued' AND queue <> 'janitor'")
            .await;
        let pending = app
            .count("SELECT count(*) FROM jobs WHERE state = 'pending' AND queue <> 'janitor'")
            .await;
        (queued == 1000 && pending == (N - 1000) as i64).then_some(())
    })
    .await;

    let started = Instant::now();
    let mut worker = WorkerProcess::spawn(&app.process_env());
    eventually(Duration::from_secs(600), "20,000 webhooks", || async {
        (partner.unique_ids().len() == N).then_some(())
    })
    .await;
    let drained_in = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (max_depth, sample_errors) = sampler.await.unwrap();
    assert_eq!(sample_errors, 0, "every depth sample was read");
    println!(
        "backlog: {N} orders accepted in {accepted_in:?} without a worker; delivered in {drained_in:?} \
         ({:.0}/s); {} requests; max ready tasks in Redis {max_depth}",
        N as f64 / drained_in.as_secs_f64(),
        partner.count()
    );
    // The window was full (the sampler saw it) and never more than full.
    assert_eq!(
        max_depth, 1000,
        "Redis held at most {max_depth} ready tasks; the high-water mark is 1000"
    );
    let rate = N as f64 / drained_in.as_secs_f64();
    assert!(rate > 50.0, "drained at {rate:.0} deliveries/s");
    assert!(worker.is_running(), "the worker must not crash");
    let log = worker.log_text();
    assert!(!log.contains("restarting it"), "a consumer crashed:\n{log}");
    eventually(
        Duration::from_secs(10),
        "every delivery recorded",
        || async { (succeeded(&app).await == N as i64).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn sigterm_lets_in_flight_deliveries_finish_and_hands_back_the_rest() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let partner = PartnerServer::start(Behaviour::Slow(Duration::from_millis(1500))).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;
    let env = env_with(&app, &[("SWITCHYARD_DELIVERY_CONCURRENCY", "4")]);
    let mut first = WorkerProcess::spawn(&env);
    const N: usize = 16;
    app.post_orders(&key, "term", N, 8).await;
    eventually(
        Duration::from_secs(20),
        "4 deliveries in flight",
        || async { (partner.count() >= 4).then_some(()) },
    )
    .await;
    let in_flight = partner.unique_ids();

    let term_at = Instant::now();
    let status = first.terminate(Duration::from_secs(15)).await;
    let log = first.log_text();
    assert!(status.success(), "clean exit, got {status:?}:\n{log}");
    println!(
        "SIGTERM: worker exited {:?} after the signal",
        term_at.elapsed()
    );
    // What was in flight completed during the drain: each of those deliveries succeeded.
    let done: HashSet<String> = sqlx::query_scalar(
        "SELECT 'msg_' || replace(message_id::text, '-', '') FROM webhook_deliveries
          WHERE status = 'succeeded'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(
        in_flight.is_subset(&done),
        "in flight {in_flight:?}, succeeded {done:?}:\n{log}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE state = 'running' AND queue <> 'janitor'")
            .await,
        0,
        "nothing left claimed by the stopped worker"
    );

    let restarted = Instant::now();
    let _second = WorkerProcess::spawn(&env);
    // Handed back at shutdown, so no lease has to expire: the rest (12 × 1.5 s on 4 slots,
    // plus the new worker's start) goes at once.
    eventually(
        Duration::from_secs(12),
        "the rest to be delivered",
        || async { (succeeded(&app).await == N as i64).then_some(()) },
    )
    .await;
    println!(
        "SIGTERM: rest delivered {:?} after restart",
        restarted.elapsed()
    );
    assert_eq!(
        partner.count(),
        N,
        "a graceful shutdown causes no duplicates"
    );
}

#[tokio::test]
async fn every_accepted_order_survives_an_api_sigkill() {
    use switchyard_tests::process::Process;

    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;

    // A real API process in front of the same database and Redis as the in-process worker.
    let (mut api, base) = Process::spawn_api(&app.process_env()).await;

    // Post continuously from several clients; kill the API mid-stream.
    let accepted = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (http, key, url) = (app.http.clone(), key.clone(), format!("{base}/v1/orders"));
        let (accepted, failed, stop) = (accepted.clone(), failed.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = TestApp::order_body(&format!("apikill-{c}-{i}"));
                match http
                    .post(&url)
                    .header("x-api-key", &key)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 201 => {
                        let v: serde_json::Value = r.json().await.unwrap();
                        accepted
                            .lock()
                            .unwrap()
                            .push(v["id"].as_str().unwrap().to_owned());
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    eventually(Duration::from_secs(20), "200 accepted orders", || async {
        (accepted.lock().unwrap().len() >= 200).then_some(())
    })
    .await;
    api.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Back on the same address (clients keep posting there); the OS gave the first process
    // that port, so only this restart binds a known one.
    let env = env_with(
        &app,
        &[("SWITCHYARD_LISTEN", base.trim_start_matches("http://"))],
    );
    let _restarted = Process::spawn_binary("switchyard-api", &env);
    eventually(
        Duration::from_secs(20),
        "the restarted API to accept orders",
        || async {
            let n = accepted.lock().unwrap().len();
            tokio::time::sleep(Duration::from_millis(200)).await;
            (accepted.lock().unwrap().len() > n).then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let accepted = accepted.lock().unwrap().clone();
    eventually(
        Duration::from_secs(30),
        "a webhook for every accepted order",
        || async {
            let delivered: HashSet<String> = partner
                .received()
                .iter()
                .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
                .collect();
            accepted
                .iter()
                .all(|id| delivered.contains(id))
                .then_some(())
        },
    )
    .await;
    println!(
        "API SIGKILL: {} orders accepted, {} requests failed around the kill, all accepted orders delivered",
        accepted.len(),
        failed.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn finished_work_leaves_redis() {
    let app = TestApp::spawn(TestOptions {
        janitor_interval: "1h".into(),
        ..Default::default()
    })
    .await;
    // The janitor's first run (its slot at start) sweeps Redis too: let it pass before the
    // work whose traces this test looks for (the next is an hour away).
    let janitor_ran = "SELECT count(*) FROM jobs WHERE queue = 'janitor' AND state = 'succeeded'";
    eventually(
        Duration::from_secs(20),
        "the janitor's first run",
        || async { (app.count(janitor_ran).await >= 1).then_some(()) },
    )
    .await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;
    app.post_orders(&key, "janitor", 30, 8).await;
    eventually(Duration::from_secs(10), "30 deliveries", || async {
        (succeeded(&app).await == 30).then_some(())
    })
    .await;
    // apalis leaves every finished task behind: its data, metadata and done set.
    let mut conn = app.queues.connection();
    let task_keys = || {
        let mut conn = conn.clone();
        let prefix = app.prefix.clone();
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.into_iter()
                .filter(|k| {
                    k.ends_with(":data")
                        || k.contains(":meta:")
                        || k.ends_with(":done")
                        || k.ends_with(":dead")
                        || k.ends_with(":failed")
                        || k.contains(":inflight")
                        || k.contains(":idempotency")
                })
                .collect::<Vec<String>>()
        }
    };
    // apalis acknowledges a task after its handler returns, so the last fan-outs' traces may
    // land a moment after their deliveries (which mostly skip Redis: born running, or handed
    // a slot) succeeded.
    eventually(
        Duration::from_secs(5),
        "finished tasks left in Redis",
        || async {
            let before = task_keys().await;
            (before.iter().any(|k| k.ends_with(":done"))
                && before.iter().any(|k| k.contains(":meta:")))
            .then_some(())
        },
    )
    .await;
    // The janitor's sweep (here called directly; the janitor runs it every interval) removes
    // them all: only the queues' bookkeeping remains.
    eventually(
        Duration::from_secs(5),
        "the sweep to leave nothing",
        || async {
            // The last tasks may still be acknowledged while we look.
            for q in QUEUES {
                app.queues.sweep_finished(q).await.unwrap();
            }
            task_keys().await.is_empty().then_some(())
        },
    )
    .await;
    let active: i64 = redis::cmd("EXISTS")
        .arg(format!("{}:webhook_deliveries:active", app.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(active, 0);
}
