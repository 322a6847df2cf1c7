//! Configuration shared by both binaries: flags with environment fallbacks.
//! A first local run needs none of it; production refuses to start without real secrets.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::{
    duration::parse_duration,
    net::Cidr,
    rate_limit::Limit,
    webhooks::retry_schedule::{self, RetrySchedule},
};

/// Settings every Switchyard process needs.
#[derive(Args, Clone, Debug)]
pub struct CommonConfig {
    /// Postgres URL; the database is created if missing and migrated at start.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/switchyard?sslmode=disable"
    )]
    pub database_url: String,

    /// Maximum Postgres connections held by this process.
    #[arg(long, env = "SWITCHYARD_DB_POOL_SIZE", default_value_t = 20)]
    pub db_pool_size: u32,

    /// Redis URL of the dispatch layer.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Namespace of every Redis key Switchyard writes.
    #[arg(long, env = "SWITCHYARD_REDIS_PREFIX", default_value = "switchyard")]
    pub redis_prefix: String,

    /// Token operators present as `Authorization: Bearer …` on the admin API.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Keyring for secrets at rest: `id:base64(32 bytes)[,id:base64…]`, first one encrypts.
    #[arg(long, env = "SWITCHYARD_MASTER_KEYS", hide_env_values = true)]
    pub master_keys: Option<String>,

    /// Server-side pepper for API key hashes (base64, at least 32 bytes).
    #[arg(long, env = "SWITCHYARD_API_KEY_PEPPER", hide_env_values = true)]
    pub api_key_pepper: Option<String>,

    /// Let webhooks reach loopback and private networks (tests, on-prem).
    #[arg(
        long,
        env = "SWITCHYARD_ALLOW_PRIVATE_TARGETS",
        default_value_t = false
    )]
    pub allow_private_targets: bool,

    /// Networks webhooks may reach even though they are not public (comma-separated CIDRs,
    /// e.g. `10.20.0.0/16,fd12::/64`): a narrower opening than allowing all private targets.
    #[arg(long, env = "SWITCHYARD_OUTBOUND_ALLOWLIST", value_delimiter = ',', value_parser = parse_cidr)]
    pub outbound_allowlist: Vec<Cidr>,

    /// Slack's Web API, where `slack` destinations with a bot token post (`chat.postMessage`).
    #[arg(
        long,
        env = "SWITCHYARD_SLACK_API_URL",
        default_value = "https://slack.com/api"
    )]
    pub slack_api_url: String,

    /// A PEM file of certificate authorities trusted, besides the public ones, by `email`
    /// destinations' SMTP TLS (relays with certificates of a private CA).
    #[arg(long, env = "SWITCHYARD_SMTP_CA_FILE", value_parser = read_pem)]
    pub smtp_ca_file: Option<PemFile>,

    /// A PEM file of certificate authorities trusted, besides the public ones, by `rabbitmq`
    /// (`amqps`) and `nats` (TLS) destinations (brokers with certificates of a private CA).
    #[arg(long, env = "SWITCHYARD_BROKER_CA_FILE", value_parser = read_pem)]
    pub broker_ca_file: Option<PemFile>,

    /// Refuse to start without real secrets (also `SWITCHYARD_ENV=production`).
    #[arg(long, default_value_t = false)]
    pub production: bool,

    /// Where development secrets are kept when none are configured.
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = ".switchyard")]
    pub data_dir: PathBuf,

    /// Log format: `json`, `pretty`, or `auto` (pretty on a terminal).
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", default_value = "auto")]
    pub log_format: String,

    /// An OpenTelemetry collector's OTLP/HTTP base URL (`http://otel-collector:4318`): spans
    /// of API requests and webhook attempts are exported to it. Unset: nothing is exported.
    #[arg(long, env = "SWITCHYARD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// The share of traces exported (0 to 1), decided by trace id so every process keeps the
    /// same traces whole.
    #[arg(long, env = "SWITCHYARD_OTLP_SAMPLE_RATIO", default_value_t = 1.0)]
    pub otlp_sample_ratio: f64,

    /// Ready tasks allowed in Redis per queue; the rest waits in Postgres.
    #[arg(long, env = "SWITCHYARD_HIGH_WATER_MARK", default_value_t = 1000)]
    pub high_water_mark: u32,

    /// Concurrent deliveries per webhook endpoint across all workers, unless the endpoint sets
    /// its own `max_concurrency`: one slow endpoint cannot take every worker slot.
    #[arg(long, env = "SWITCHYARD_ENDPOINT_CONCURRENCY", default_value_t = 16)]
    pub endpoint_concurrency: u32,

    /// How long `Idempotency-Key` records (and their responses) are kept: at least 24 h.
    #[arg(long, env = "SWITCHYARD_IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,

    #[command(flatten)]
    pub retention: crate::retention::RetentionConfig,
}

impl CommonConfig {
    /// Where outbound requests may go.
    pub fn egress(&self) -> crate::net::Egress {
        crate::net::Egress::new(self.allow_private_targets, self.outbound_allowlist.clone())
    }

    pub fn is_production(&self) -> bool {
        self.production
            || std::env::var("SWITCHYARD_ENV").is_ok_and(|v| v.eq_ignore_ascii_case("production"))
    }
}

/// Settings of the HTTP API.
#[derive(Args, Clone, Debug)]
pub struct ApiConfig {
    /// Requests per minute per API key, unless the key sets its own.
    #[arg(long, env = "SWITCHYARD_RATE_LIMIT_PER_MINUTE", default_value_t = 6000)]
    pub rate_limit_per_minute: u32,

    /// Requests per hour per API key, unless the key sets its own.
    #[arg(
        long,
        env = "SWITCHYARD_RATE_LIMIT_PER_HOUR",
        default_value_t = 180_000
    )]
    pub rate_limit_per_hour: u32,

    /// Requests per minute over all keys of a tenant, unless the tenant sets its own.
    #[arg(
        long,
        env = "SWITCHYARD_TENANT_RATE_LIMIT_PER_MINUTE",
        default_value_t = 30_000
    )]
    pub tenant_rate_limit_per_minute: u32,

    /// Comma-separated CIDR blocks of reverse proxies whose `X-Forwarded-For` is believed
    /// (for key allowlists and audit records). Empty: the TCP peer is the client.
    #[arg(long, env = "SWITCHYARD_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<Cidr>,

    /// Failed authentications a client address may make per minute; beyond that it is
    /// answered `429` until the limit refills.
    #[arg(
        long,
        env = "SWITCHYARD_AUTH_FAILURES_PER_MINUTE",
        default_value_t = 60
    )]
    pub auth_failures_per_minute: u32,

    /// API keys each replica keeps in its authentication cache.
    #[arg(
        long,
        env = "SWITCHYARD_AUTH_CACHE_CAPACITY",
        default_value_t = 100_000
    )]
    pub auth_cache_capacity: usize,

    /// How long a dashboard sign-in lasts (absolute; then the dashboard asks again).
    #[arg(long, env = "SWITCHYARD_DASHBOARD_SESSION_TTL", default_value = "8h", value_parser = parse_duration)]
    pub dashboard_session_ttl: Duration,
}

impl ApiConfig {
    /// The limit failed authentications from `ip` are charged against.
    pub fn auth_failure_limit(&self, ip: std::net::IpAddr) -> Limit {
        Limit {
            name: "auth-failures-minute",
            subject: format!("ip:{ip}"),
            quota: self.auth_failures_per_minute.max(1),
            window_secs: 60,
        }
    }
}

/// The contents of a PEM file of certificates, read at start.
#[derive(Clone, Debug)]
pub struct PemFile(pub Vec<u8>);

fn read_pem(path: &str) -> Result<PemFile, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("`{path}` holds no PEM certificate"));
    }
    Ok(PemFile(bytes))
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    Cidr::parse(s).ok_or_else(|| format!("`{s}` is not an IP address or CIDR block"))
}

/// Settings of the worker runtime (queue consumers, dispatcher, reconciler, janitor).
#[derive(Args, Clone, Debug)]
pub struct WorkerConfig {
    /// Concurrent webhook deliveries per worker process.
    #[arg(long, env = "SWITCHYARD_DELIVERY_CONCURRENCY", default_value_t = 64)]
    pub delivery_concurrency: usize,

    /// Concurrent order-event fan-outs per worker process.
    #[arg(long, env = "SWITCHYARD_EVENT_CONCURRENCY", default_value_t = 16)]
    pub event_concurrency: usize,

    /// Fallback poll interval of the queue consumers (pushes also wake them at once).
    #[arg(long, env = "SWITCHYARD_POLL_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// How often the dispatcher looks for due jobs in the ledger.
    #[arg(long, env = "SWITCHYARD_DISPATCH_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub dispatch_interval: Duration,

    /// A queued job whose task is missing from Redis for this long goes back to pending.
    #[arg(long, env = "SWITCHYARD_RECONCILE_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub reconcile_after: Duration,

    /// First wait before a job whose run ended in an error runs again; doubles per attempt.
    #[arg(long, env = "SWITCHYARD_JOB_RETRY_DELAY", default_value = "1s", value_parser = parse_duration)]
    pub job_retry_delay: Duration,

    /// Longest wait before a failed job runs again.
    #[arg(long, env = "SWITCHYARD_JOB_RETRY_MAX_DELAY", default_value = "5m", value_parser = parse_duration)]
    pub job_retry_max_delay: Duration,

    /// Lease of a running job; renewed while the job runs, reclaimed when it expires.
    #[arg(long, env = "SWITCHYARD_LEASE", default_value = "8s", value_parser = parse_duration)]
    pub lease: Duration,

    /// Delays between webhook attempts (Standard Webhooks schedule by default).
    #[arg(
        long,
        env = "SWITCHYARD_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,14h,20h,24h",
        value_parser = retry_schedule::parse
    )]
    pub retry_schedule: RetrySchedule,

    /// Connect timeout of webhook requests.
    #[arg(long, env = "SWITCHYARD_WEBHOOK_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub webhook_connect_timeout: Duration,

    /// Total timeout of webhook requests (endpoints may set their own, up to 30 s).
    #[arg(long, env = "SWITCHYARD_WEBHOOK_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// Least wait before retrying an endpoint that throttled (429, 502, 503, 504) or timed out.
    #[arg(long, env = "SWITCHYARD_WEBHOOK_THROTTLE_DELAY", default_value = "60s", value_parser = parse_duration)]
    pub webhook_throttle_delay: Duration,

    /// Longest `Retry-After` an endpoint can ask for; longer requests are cut to this.
    #[arg(long, env = "SWITCHYARD_WEBHOOK_RETRY_AFTER_MAX", default_value = "1h", value_parser = parse_duration)]
    pub webhook_retry_after_max: Duration,

    /// Circuit breaker: the window of recent attempts it looks at.
    #[arg(long, env = "SWITCHYARD_BREAKER_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub breaker_window: Duration,

    /// Circuit breaker: fewer attempts than this in the window never trip it.
    #[arg(long, env = "SWITCHYARD_BREAKER_MIN_ATTEMPTS", default_value_t = 10)]
    pub breaker_min_attempts: i64,

    /// Circuit breaker: the failure share (0–1) in the window that trips it.
    #[arg(long, env = "SWITCHYARD_BREAKER_FAILURE_RATIO", default_value_t = 0.7)]
    pub breaker_failure_ratio: f64,

    /// Circuit breaker: first cool-down; doubles with each consecutive trip.
    #[arg(long, env = "SWITCHYARD_BREAKER_COOLDOWN", default_value = "30s", value_parser = parse_duration)]
    pub breaker_cooldown: Duration,

    /// Circuit breaker: longest cool-down.
    #[arg(long, env = "SWITCHYARD_BREAKER_MAX_COOLDOWN", default_value = "10m", value_parser = parse_duration)]
    pub breaker_max_cooldown: Duration,

    /// An endpoint is disabled after this many consecutive failed attempts.
    #[arg(
        long,
        env = "SWITCHYARD_ENDPOINT_DISABLE_AFTER_FAILURES",
        default_value_t = 100
    )]
    pub endpoint_disable_after_failures: i32,

    /// An endpoint is disabled after failing for this long without a single success.
    #[arg(long, env = "SWITCHYARD_ENDPOINT_DISABLE_AFTER", default_value = "5d", value_parser = parse_duration)]
    pub endpoint_disable_after: Duration,

    /// How long in-flight jobs may run after SIGTERM before they are handed back.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// How often the janitor runs: finished task data out of Redis (apalis keeps it forever
    /// otherwise) and every table's retention purge.
    #[arg(long, env = "SWITCHYARD_JANITOR_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub janitor_interval: Duration,

    /// How often the scheduler looks for integrations whose health check is due (each
    /// integration's own `config.health_interval` says when it is).
    #[arg(long, env = "SWITCHYARD_INTEGRATION_HEALTH_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub integration_health_interval: Duration,
}
