//! An isolated Switchyard: API (and optionally the worker runtime) in this process, bound to
//! ephemeral ports, on a database and Redis prefix of its own.

use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use sqlx::PgPool;
use switchyard_api::Cli;
use switchyard_shared::{config::ApiConfig, queue::Queues, services::Services};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{ADMIN_TOKEN, MASTER_KEYS, PEPPER, db::TestDb, redis_url};

#[derive(Clone, Debug)]
pub struct TestOptions {
    pub with_worker: bool,
    pub retry_schedule: String,
    pub reconcile_after: String,
    pub lease: String,
    pub high_water_mark: u32,
    /// Default per-key and per-tenant limit (requests per minute and per hour); tests that are
    /// not about rate limits must not hit one.
    pub rate_limit: u32,
    /// `--allow-private-targets` (partner servers live on loopback).
    pub allow_private: bool,
    /// `--outbound-allowlist` (comma-separated CIDRs), empty for none.
    pub outbound_allowlist: String,
    /// `--webhook-throttle-delay` (60 s in production).
    pub throttle_delay: String,
    /// `--breaker-cooldown` (30 s in production).
    pub breaker_cooldown: String,
    /// `--breaker-min-attempts` (10 in production).
    pub breaker_min_attempts: u32,
    /// `--endpoint-concurrency` (16 in production).
    pub endpoint_concurrency: u32,
    /// `--delivery-concurrency`: worker slots for deliveries (64 in production).
    pub delivery_concurrency: u32,
    /// `--endpoint-disable-after-failures` (100 in production).
    pub disable_after_failures: u32,
    /// `--payload-retention` (30 days in production).
    pub payload_retention: String,
    /// `--janitor-interval` (10 s in production).
    pub janitor_interval: String,
    /// More flags for the in-process API and worker (`--job-retention=1s`, …).
    pub args: Vec<String>,
}

impl TestOptions {
    /// The API alone: no worker runtime in this process (tests that start workers themselves,
    /// or need nothing delivered).
    pub fn no_worker() -> Self {
        TestOptions {
            with_worker: false,
            ..TestOptions::default()
        }
    }
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            with_worker: true,
            retry_schedule: "1s,1s".into(),
            reconcile_after: "1s".into(),
            lease: "8s".into(),
            high_water_mark: 1000,
            rate_limit: 10_000_000,
            allow_private: true,
            outbound_allowlist: String::new(),
            throttle_delay: "1s".into(),
            breaker_cooldown: "30s".into(),
            breaker_min_attempts: 10,
            endpoint_concurrency: 16,
            delivery_concurrency: 64,
            disable_after_failures: 100,
            payload_retention: "30d".into(),
            janitor_interval: "1s".into(),
            args: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub queues: Queues,
    pub prefix: String,
    pub opts: TestOptions,
    pub services: Services,
    pub api_config: ApiConfig,
    api: CancellationToken,
    workers: Vec<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    // Declared last: dropped after everything that uses the database.
    pub db: TestDb,
}

impl TestApp {
    pub async fn spawn(opts: TestOptions) -> TestApp {
        switchyard_shared::install_crypto_provider();
        if std::env::var("SWITCHYARD_TEST_LOG").is_ok() {
            switchyard_shared::telemetry::init_logging("pretty");
        }
        let db = TestDb::create().await;
        let prefix = format!(
            "sytest:{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let cli = Cli::try_parse_from(cli_args(&db.url, &prefix, &opts)).expect("test CLI parses");
        let services = Services::connect(cli.common.clone(), &switchyard_worker::QUEUES)
            .await
            .expect("services start");
        let (base, api) = serve_api(services.clone(), cli.api.clone()).await;
        let mut app = TestApp {
            base,
            http: reqwest::Client::new(),
            pool: services.pool.clone(),
            queues: services.queues.clone(),
            prefix,
            opts: opts.clone(),
            services,
            api_config: cli.api,
            api,
            workers: Vec::new(),
            db,
        };
        if opts.with_worker {
            app.start_worker();
        }
        app
    }

    /// Starts a worker runtime in this process.
    pub fn start_worker(&mut self) {
        let cli = Cli::try_parse_from(cli_args(&self.db.url, &self.prefix, &self.opts)).unwrap();
        let token = CancellationToken::new();
        let handle = tokio::spawn(switchyard_worker::run(
            self.services.clone(),
            cli.worker,
            token.clone(),
        ));
        self.workers.push((token, handle));
    }

    /// A `switchyard-api --with-worker` process of this app, and its base URL (for what only a
    /// real process shows: its own `/metrics`).
    pub async fn api_with_worker(&self) -> (crate::process::Process, String) {
        let mut env = self.process_env();
        env.push(("SWITCHYARD_WITH_WORKER".into(), "true".into()));
        crate::process::Process::spawn_api(&env).await
    }

    /// Environment for a `switchyard-worker` / `switchyard-api` process equivalent to this app.
    pub fn process_env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.db.url.clone()),
            ("REDIS_URL".into(), redis_url()),
            ("SWITCHYARD_REDIS_PREFIX".into(), self.prefix.clone()),
            ("SWITCHYARD_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            ("SWITCHYARD_MASTER_KEYS".into(), MASTER_KEYS.into()),
            ("SWITCHYARD_API_KEY_PEPPER".into(), PEPPER.into()),
            (
                "SWITCHYARD_ALLOW_PRIVATE_TARGETS".into(),
                self.opts.allow_private.to_string(),
            ),
            (
                "SWITCHYARD_WEBHOOK_THROTTLE_DELAY".into(),
                self.opts.throttle_delay.clone(),
            ),
            (
                "SWITCHYARD_BREAKER_COOLDOWN".into(),
                self.opts.breaker_cooldown.clone(),
            ),
            (
                "SWITCHYARD_BREAKER_MIN_ATTEMPTS".into(),
                self.opts.breaker_min_attempts.to_string(),
            ),
            (
                "SWITCHYARD_ENDPOINT_CONCURRENCY".into(),
                self.opts.endpoint_concurrency.to_string(),
            ),
            (
                "SWITCHYARD_DELIVERY_CONCURRENCY".into(),
                self.opts.delivery_concurrency.to_string(),
            ),
            (
                "SWITCHYARD_ENDPOINT_DISABLE_AFTER_FAILURES".into(),
                self.opts.disable_after_failures.to_string(),
            ),
            (
                "SWITCHYARD_PAYLOAD_RETENTION".into(),
                self.opts.payload_retention.clone(),
            ),
            (
                "SWITCHYARD_RETRY_SCHEDULE".into(),
                self.opts.retry_schedule.clone(),
            ),
            (
                "SWITCHYARD_RECONCILE_AFTER".into(),
                self.opts.reconcile_after.clone(),
            ),
            ("SWITCHYARD_LEASE".into(), self.opts.lease.clone()),
            (
                "SWITCHYARD_HIGH_WATER_MARK".into(),
                self.opts.high_water_mark.to_string(),
            ),
            ("SWITCHYARD_LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "info".into()),
        ]
        .into_iter()
        .chain((!self.opts.outbound_allowlist.is_empty()).then(|| {
            (
                "SWITCHYARD_OUTBOUND_ALLOWLIST".into(),
                self.opts.outbound_allowlist.clone(),
            )
        }))
        .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// An operator GET: the status and the JSON body.
    pub async fn admin_get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// [`admin_post`](Self::admin_post): the status and the JSON body.
    pub async fn admin_post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.admin_post(path, body).await;
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The body of a GET to `url` (an absolute URL: this app or a process of it), as text.
    pub async fn get_text(&self, url: &str) -> String {
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn create_tenant(&self, name: &str) -> String {
        let r = self
            .admin_post("/admin/v1/tenants", json!({ "name": name }))
            .await;
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a key for `tenant`; returns `(key id, full key)`.
    pub async fn create_key(&self, tenant: &str, scopes: Option<&[&str]>) -> (String, String) {
        let mut body = json!({ "name": "test key" });
        if let Some(s) = scopes {
            body["scopes"] = json!(s);
        }
        let r = self
            .admin_post(&format!("/admin/v1/tenants/{tenant}/api-keys"), body)
            .await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates a key for `tenant` from a full request body; returns the response body.
    pub async fn create_key_with(&self, tenant: &str, body: Value) -> Value {
        let r = self
            .admin_post(&format!("/admin/v1/tenants/{tenant}/api-keys"), body)
            .await;
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    }

    /// Another API replica on this app's database and Redis prefix, with `config`; returns
    /// its base URL and the token that stops it.
    pub async fn replica(&self, config: ApiConfig) -> (String, CancellationToken) {
        serve_api(self.services.clone(), config).await
    }

    /// A tenant with an all-scopes key: `(tenant id, key)`.
    pub async fn partner_account(&self) -> (String, String) {
        let tenant = self.create_tenant("Partner").await;
        let (_, key) = self.create_key(&tenant, None).await;
        (tenant, key)
    }

    /// Creates an endpoint; returns `(endpoint id, whsec_ secret)`.
    pub async fn create_endpoint(&self, key: &str, url: &str, types: &[&str]) -> (String, String) {
        let v = self
            .create_endpoint_with(key, json!({ "url": url, "event_types": types }))
            .await;
        (
            v["id"].as_str().unwrap().to_owned(),
            v["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates an endpoint from a full request body; returns the response body.
    pub async fn create_endpoint_with(&self, key: &str, body: Value) -> Value {
        let r = self.partner_post(key, "/v1/webhook-endpoints", body).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    pub async fn partner_post(&self, key: &str, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn partner_patch(&self, key: &str, path: &str, body: Value) -> reqwest::Response {
        self.http
            .patch(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn partner_get(&self, key: &str, path: &str) -> Value {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    pub fn order_body(external_id: &str) -> Value {
        json!({
            "external_id": external_id,
            "currency": "EUR",
            "items": [
                { "sku": "PIZ-1", "name": "Margherita", "quantity": 2, "unit_price": 950 },
                { "sku": "DRK-7", "name": "Lemonade", "quantity": 1, "unit_price": 300 }
            ],
            "customer": { "name": "Grace Hopper", "email": "grace@example.com" },
            "delivery": { "address": "1 Navy Way", "instructions": "Ring twice" },
            "notes": "extra basil"
        })
    }

    pub async fn post_order(&self, key: &str, external_id: &str) -> reqwest::Response {
        self.post_order_at(&self.base, key, external_id).await
    }

    /// [`post_order`](Self::post_order) to the API at `base` (a process of this app).
    pub async fn post_order_at(
        &self,
        base: &str,
        key: &str,
        external_id: &str,
    ) -> reqwest::Response {
        self.http
            .post(format!("{base}/v1/orders"))
            .header("x-api-key", key)
            .json(&Self::order_body(external_id))
            .send()
            .await
            .unwrap()
    }

    /// Posts `n` orders with `concurrency` requests in flight; panics on any non-201.
    pub async fn post_orders(&self, key: &str, prefix: &str, n: usize, concurrency: usize) {
        use futures::StreamExt;
        futures::stream::iter(0..n)
            .map(|i| async move {
                let r = self.post_order(key, &format!("{prefix}-{i}")).await;
                assert_eq!(r.status(), 201, "order {i}: {}", r.text().await.unwrap());
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await;
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Stops the in-process workers and waits for them to drain.
    pub async fn stop_workers(&mut self) {
        for (token, handle) in self.workers.drain(..) {
            token.cancel();
            handle.await.unwrap().unwrap();
        }
    }
}

/// Serves the API over `services` on an ephemeral port; returns its base URL and stop token.
pub async fn serve_api(services: Services, config: ApiConfig) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token = CancellationToken::new();
    tokio::spawn(switchyard_api::serve(
        listener,
        services,
        config,
        token.clone(),
    ));
    (base, token)
}

/// The command line of an app on `db_url` and `prefix` (the test secrets, short timings).
pub fn cli_args(db_url: &str, prefix: &str, o: &TestOptions) -> Vec<String> {
    let dir = std::env::temp_dir().join("switchyard-tests");
    [
        "switchyard-api",
        "--database-url",
        db_url,
        "--redis-url",
        &redis_url(),
        "--redis-prefix",
        prefix,
        "--admin-token",
        ADMIN_TOKEN,
        "--master-keys",
        MASTER_KEYS,
        "--api-key-pepper",
        PEPPER,
        "--data-dir",
        dir.to_str().unwrap(),
        "--db-pool-size",
        "10",
        "--retry-schedule",
        &o.retry_schedule,
        "--reconcile-after",
        &o.reconcile_after,
        "--lease",
        &o.lease,
        "--high-water-mark",
        &o.high_water_mark.to_string(),
        "--shutdown-timeout",
        "5s",
        "--janitor-interval",
        &o.janitor_interval,
        "--rate-limit-per-minute",
        &o.rate_limit.to_string(),
        "--rate-limit-per-hour",
        &o.rate_limit.to_string(),
        "--tenant-rate-limit-per-minute",
        &o.rate_limit.to_string(),
        "--webhook-throttle-delay",
        &o.throttle_delay,
        "--breaker-cooldown",
        &o.breaker_cooldown,
        "--breaker-min-attempts",
        &o.breaker_min_attempts.to_string(),
        "--endpoint-concurrency",
        &o.endpoint_concurrency.to_string(),
        "--delivery-concurrency",
        &o.delivery_concurrency.to_string(),
        "--endpoint-disable-after-failures",
        &o.disable_after_failures.to_string(),
        "--payload-retention",
        &o.payload_retention,
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(
        o.allow_private
            .then(|| "--allow-private-targets".to_owned()),
    )
    .chain(
        (!o.outbound_allowlist.is_empty())
            .then(|| format!("--outbound-allowlist={}", o.outbound_allowlist)),
    )
    .chain(o.args.iter().cloned())
    .collect()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.api.cancel();
        for (t, _) in &self.workers {
            t.cancel();
        }
        let prefix = self.prefix.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(conn) = switchyard_shared::queue::connect(&redis_url()) {
                    let q = Queues::new(conn, &prefix, 0, &switchyard_worker::QUEUES);
                    let _ = tokio::time::timeout(Duration::from_secs(5), q.delete_all_keys()).await;
                }
            });
        })
        .join();
    }
}
