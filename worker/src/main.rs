use clap::Parser;
use switchyard_shared::{
    config::{CommonConfig, WorkerConfig},
    services::Services,
    telemetry,
};

/// Switchyard worker: consumes the queues and keeps Redis in step with the Postgres ledger.
#[derive(Parser, Debug)]
#[command(name = "switchyard-worker", version)]
struct Cli {
    #[command(flatten)]
    common: CommonConfig,
    #[command(flatten)]
    worker: WorkerConfig,
    /// Serve /healthz and /metrics on this address (e.g. 0.0.0.0:9090).
    #[arg(long, env = "SWITCHYARD_WORKER_METRICS_LISTEN")]
    metrics_listen: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(&cli.common.log_format);
    if let Some(endpoint) = &cli.common.otlp_endpoint {
        telemetry::otlp::install(endpoint, "switchyard-worker", cli.common.otlp_sample_ratio);
    }
    let services = Services::connect(cli.common.clone(), &switchyard_worker::QUEUES).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(switchyard_worker::shutdown_on_signal(shutdown.clone()));
    if let Some(addr) = cli.metrics_listen {
        tokio::spawn(switchyard_worker::serve_metrics(addr, shutdown.clone()));
    }
    switchyard_worker::run(services, cli.worker, shutdown).await
}
