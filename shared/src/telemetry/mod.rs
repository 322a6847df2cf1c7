//! Structured logs and the Prometheus recorder, set up once per process; the metric catalogue
//! ([`metrics`]); W3C trace context carried from requests to webhooks ([`trace`]), and its
//! spans exported to an OpenTelemetry collector when one is configured ([`otlp`]).

pub mod metrics;
pub mod otlp;
pub mod trace;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global tracing subscriber. `format` is `json`, `pretty` or `auto`.
/// Safe to call more than once (tests start several apps in one process).
pub fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,apalis=warn,apalis_core=warn,apalis_redis=warn,poem=warn")
    });
    let json = match format {
        "json" => true,
        "pretty" => false,
        _ => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    let _ = result;
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus handle (installs the recorder on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
            .expect("static buckets are valid")
            .install_recorder()
            .unwrap_or_else(|_| {
                // Another recorder is installed (embedding): render an empty registry.
                PrometheusBuilder::new().build_recorder().handle()
            });
        metrics::describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .ok();
        handle
    })
}
