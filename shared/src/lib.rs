//! Switchyard's shared library: configuration, the job ledger and dispatch layer, and the
//! domains (tenants, API keys, orders, webhooks). The `api` and `worker` crates are thin
//! layers over it.

pub mod api_keys;
pub mod audit;
pub mod batch;
pub mod config;
pub mod crypto;
pub mod db;
pub mod destinations;
pub mod dispatch;
pub mod duration;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod inbound;
pub mod input;
pub mod integrations;
pub mod job_actions;
pub mod jobs;
pub mod jobs_admin;
pub mod keyring;
pub mod logs;
pub mod mode;
pub mod net;
pub mod operators;
pub mod orders;
pub mod probes;
pub mod queue;
pub mod rate_limit;
pub mod retention;
pub mod schedule;
pub mod secrets;
pub mod services;
pub mod sync;
pub mod telemetry;
pub mod tenants;
pub mod webhooks;
pub mod workers;

pub use error::{Error, Result};

/// Installs the ring crypto provider for rustls (reqwest is built without one). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
