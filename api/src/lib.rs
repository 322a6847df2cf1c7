//! The Switchyard HTTP API: partner API under `/v1`, operator API under `/admin/v1`, health,
//! metrics, the OpenAPI document and interactive docs. Handlers are thin: they authenticate,
//! call `switchyard_shared`, and shape the response; errors map to HTTP once, in [`error`].

pub mod auth;
pub mod dashboard;
pub mod error;
pub mod idempotency;
pub mod json;
pub mod pagination;
pub mod request_id;
pub mod responses;
pub mod routes;
pub mod spec;

use std::{sync::Arc, time::Duration};

use clap::Parser;
use poem::{Endpoint, EndpointExt, Route, listener::TcpAcceptor};
use poem_openapi::OpenApiService;
use switchyard_destinations::Destinations;
use switchyard_shared::{
    api_keys::{cache::KeyCache, usage::UsageRecorder},
    config::{ApiConfig, CommonConfig, WorkerConfig},
    dispatch::FastPath,
    integrations::connection::Checker,
    logs::requests::RequestLogger,
    rate_limit::{Lockouts, RateLimiter},
    services::Services,
    telemetry,
    webhooks::transport::HttpTransport,
};
use tokio_util::sync::CancellationToken;

use crate::routes::{
    admin::AdminApi,
    api_keys::ApiKeysApi,
    audit_events::AuditEventsApi,
    destination_kinds::DestinationKindsApi,
    event_types::EventTypesApi,
    events::EventsApi,
    inbound::{InboundApi, InboundEventsApi},
    integrations::IntegrationsApi,
    jobs::{JobActionsApi, JobsApi},
    keyring::KeyringApi,
    logs::LogsApi,
    operators::OperatorsApi,
    ops::OpsApi,
    orders::OrdersApi,
    queues::QueuesApi,
    sync::SyncApi,
    sync_conflicts::SyncConflictsApi,
    sync_records::SyncRecordsApi,
    webhook_deliveries::WebhookDeliveriesApi,
    webhook_endpoints::WebhookEndpointsApi,
    webhook_replays::WebhookReplaysApi,
    workers::WorkersApi,
};

impl AppState {
    /// What bounds endpoint settings in this deployment.
    pub fn endpoint_rules(&self) -> switchyard_shared::webhooks::endpoints::Rules {
        switchyard_shared::webhooks::endpoints::Rules {
            payload_retention: self.services.config.retention.payload,
        }
    }
}

/// Shared by every request.
pub struct AppState {
    pub services: Services,
    pub config: ApiConfig,
    pub fast_path: FastPath,
    pub keys: KeyCache,
    pub limiter: RateLimiter,
    /// Client addresses locked out after too many failed authentications.
    pub lockouts: Lockouts,
    pub usage: UsageRecorder,
    /// The partner request log, written in batches.
    pub request_log: RequestLogger,
    /// Test sends to partner endpoints go out through it (SSRF-guarded); its egress rules
    /// also vet endpoint URLs when they are saved.
    /// Test sends go out through it; its egress rules vet every address saved.
    pub transport: Destinations,
    /// Connection checks of integrations go out through it (SSRF-guarded).
    pub checker: Checker,
    /// The dashboard's live overview: one poll shared by every watching browser.
    pub live: dashboard::live::Live,
    /// Cancelled when the API begins to shut down: long-lived responses (the dashboard's
    /// event streams) end then instead of holding the drain.
    pub shutdown: CancellationToken,
}

type Apis = (
    OpsApi,
    AdminApi,
    ApiKeysApi,
    AuditEventsApi,
    WebhookEndpointsApi,
    WebhookDeliveriesApi,
    (WebhookReplaysApi, DestinationKindsApi),
    EventsApi,
    EventTypesApi,
    OrdersApi,
    IntegrationsApi,
    (SyncApi, SyncConflictsApi, SyncRecordsApi),
    KeyringApi,
    InboundApi,
    InboundEventsApi,
    (
        LogsApi,
        WorkersApi,
        JobsApi,
        QueuesApi,
        JobActionsApi,
        OperatorsApi,
    ),
);

pub fn openapi() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            OpsApi,
            AdminApi,
            ApiKeysApi,
            AuditEventsApi,
            WebhookEndpointsApi,
            WebhookDeliveriesApi,
            (WebhookReplaysApi, DestinationKindsApi),
            EventsApi,
            EventTypesApi,
            OrdersApi,
            IntegrationsApi,
            (SyncApi, SyncConflictsApi, SyncRecordsApi),
            KeyringApi,
            InboundApi,
            InboundEventsApi,
            (
                LogsApi,
                WorkersApi,
                JobsApi,
                QueuesApi,
                JobActionsApi,
                OperatorsApi,
            ),
        ),
        "Switchyard API",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Durable integration hub: partners post orders, every order change becomes an event, \
         and events are delivered to partner endpoints as signed Standard Webhooks.\n\n\
         **Authentication**: partner routes (`/v1`) take an API key as \
         `Authorization: Bearer <key>` or `X-API-Key: <key>`; keys carry scopes (a `…:write` \
         scope includes `…:read`), and `sy_test_` keys see only test-mode data. Operator \
         routes (`/admin/v1`) take the admin token.\n\n\
         **Idempotency**: every partner `POST` and `PATCH` accepts `Idempotency-Key` (1–255 \
         printable ASCII characters, kept 24 h per tenant and mode). A retry gets the first \
         response with `Idempotent-Replayed: true`; the same key with other parameters is a \
         `422 idempotency_key_reused`, and a retry while the first request still runs a \
         `409 idempotency_key_in_use`. Validation failures and server errors are not kept.\n\n\
         **Rate limits**: every partner response carries `RateLimit-Policy` and `RateLimit` \
         (draft-ietf-httpapi-ratelimit-headers); a `429 rate_limited` carries `Retry-After`.\n\n\
         **Errors** are RFC 9457 problem documents with a stable `code`, the offending `param` \
         and the `request_id` (also in the `Request-Id` header of every response).",
    )
}

/// The OpenAPI document as served at `/openapi.json` (see [`spec`]).
pub fn spec_json() -> String {
    let mut spec: serde_json::Value =
        serde_json::from_str(&openapi().spec()).expect("poem-openapi writes JSON");
    spec::close_request_objects(&mut spec);
    spec::add_links(&mut spec);
    serde_json::to_string_pretty(&spec).expect("a JSON value serialises")
}

/// The whole HTTP application.
pub fn app(state: Arc<AppState>) -> impl Endpoint {
    let api = openapi();
    let document = spec_json();
    let routes = Arc::new(error::RouteMethods::from_spec(&document));
    let docs = api.swagger_ui();
    let spec = poem::endpoint::make_sync(move |_| {
        poem::Response::builder()
            .content_type("application/json; charset=utf-8")
            .body(document.clone())
    });
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/dashboard", dashboard::routes())
        .nest("/", api)
        .with(error::ProblemMiddleware(routes))
        .with(idempotency::IdempotencyMiddleware)
        .with(auth::PartnerMiddleware)
        .with(error::PanicMiddleware)
        .with(request_id::RequestIdMiddleware)
        .data(state)
}

/// Serves the API on `listener` until `shutdown`, then drains in-flight requests (20 s at
/// most) and stops its background tasks (fast-path pushes, key cache poller, usage and
/// request-log flushers) after the last request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    services: Services,
    config: ApiConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let background = CancellationToken::new();
    let (fast_path, fast_path_task) =
        FastPath::spawn(services.dispatcher.clone(), background.clone());
    let keys = KeyCache::new(
        services.pool.clone(),
        services.secrets.api_key_pepper.clone(),
        config.auth_cache_capacity,
    );
    if let Err(e) = keys.load_legacy().await {
        // Keys made before keyed checksums are refused until a restart can load them.
        tracing::error!(error = %e, "cannot load the legacy API key ids");
    }
    let usage = UsageRecorder::default();
    let request_log = RequestLogger::default();
    let tasks = [
        tokio::spawn(keys.clone().run_invalidation(background.clone())),
        tokio::spawn(usage.clone().run(services.pool.clone(), background.clone())),
        tokio::spawn(
            request_log
                .clone()
                .run(services.pool.clone(), background.clone()),
        ),
    ];
    let transport = Destinations::new(
        HttpTransport::new(
            services.config.egress(),
            Duration::from_secs(5),
            Duration::from_secs(30),
        ),
        services.pool.clone(),
        services.secrets.keyring.clone(),
        &services.config,
    );
    let checker = Checker::new(services.config.egress());
    let state = Arc::new(AppState {
        checker,
        limiter: RateLimiter::new(services.queues.connection(), services.queues.prefix()),
        lockouts: Lockouts::default(),
        transport,
        services,
        config,
        fast_path,
        keys,
        usage,
        request_log,
        live: dashboard::live::Live::default(),
        shutdown: shutdown.clone(),
    });
    let served = poem::Server::new_with_acceptor(TcpAcceptor::from_tokio(listener)?)
        .run_with_graceful_shutdown(
            app(state),
            shutdown.cancelled_owned(),
            Some(Duration::from_secs(20)),
        )
        .await;
    background.cancel();
    let _ = fast_path_task.await;
    for t in tasks {
        let _ = t.await;
    }
    served
}

/// Command line of `switchyard-api`.
#[derive(Parser, Debug)]
#[command(name = "switchyard-api", version, about = "Switchyard HTTP API")]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonConfig,
    /// Address to listen on.
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Also run the worker runtime in this process (one-machine mode).
    #[arg(long, env = "SWITCHYARD_WITH_WORKER", default_value_t = false)]
    pub with_worker: bool,
    #[command(flatten)]
    pub api: ApiConfig,
    #[command(flatten)]
    pub worker: WorkerConfig,
}

/// Runs the API (and the worker with `--with-worker`) until SIGTERM/Ctrl-C or `shutdown`.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let Some(endpoint) = &cli.common.otlp_endpoint {
        telemetry::otlp::install(endpoint, "switchyard-api", cli.common.otlp_sample_ratio);
    }
    let services = Services::connect(cli.common.clone(), &switchyard_worker::QUEUES).await?;
    let listener = tokio::net::TcpListener::bind(&cli.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, with_worker = cli.with_worker, "switchyard-api listening");
    let worker = cli.with_worker.then(|| {
        tokio::spawn(switchyard_worker::run(
            services.clone(),
            cli.worker.clone(),
            shutdown.clone(),
        ))
    });
    serve(listener, services, cli.api, shutdown.clone()).await?;
    if let Some(worker) = worker {
        worker.await??;
    }
    Ok(())
}

/// Entry point of the binary.
pub async fn main_entry() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(&cli.common.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(switchyard_worker::shutdown_on_signal(shutdown.clone()));
    run(cli, shutdown).await
}
