//! The sync engine (docs/architecture.md §10): configurations that pull an integration's table
//! into Switchyard's record store, run by jobs on the `sync_runs` queue, batch by batch, each
//! batch committed with its checkpoint.
//!
//! - [`config`]: what a configuration is (the API's schema and the checks it cannot state).
//! - [`runs`]: starting, cancelling, retrying and reading runs, their logs and errors.
//! - [`schedule`]: scheduled runs, one per slot across replicas.
//! - [`engine`]: the run loop (cursor, watermark, lookback, checkpoints, thresholds).
//! - [`open`]: a configuration's source, opened with its credential and checked.
//! - [`preview`]: what the next run would read (`delta`), without running it.
//! - [`stats`]: runs, rows and durations over time windows.
//! - [`source`]: the adapter boundary; [`sql_source`]: the `postgres` and `mysql` adapters.
//! - [`mapping`]: source row → record (key, mapped fields, hash, tombstone).
//! - [`store`]: the record store (`GET /v1/sync/records`).

pub mod config;
pub mod engine;
pub mod mapping;
pub mod open;
pub mod preview;
pub mod runs;
pub mod schedule;
pub mod source;
pub mod sql_source;
pub mod stats;
pub mod store;
