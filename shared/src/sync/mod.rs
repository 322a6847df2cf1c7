//! The sync engine (docs/architecture.md §10): configurations between an integration's table
//! or resource and Switchyard's record store (or another integration), run by jobs on the
//! `sync_runs` queue, batch by batch, each batch committed with its checkpoint.
//!
//! - [`config`]: what a configuration is (the API's schema and the checks it cannot state).
//! - [`runs`]: starting, cancelling, retrying and reading runs, their logs and errors.
//! - [`schedule`]: scheduled runs, one per slot across replicas.
//! - [`engine`]: the run loop (cursor, watermark, lookback, checkpoints, thresholds).
//! - [`classify`]: what a changed record means for the other side (echo, change, conflict).
//! - [`links`], [`conflicts`]: what both sides last agreed on, and the records people decide.
//! - [`open`]: a configuration's integration side, opened with its credentials and checked.
//! - [`preview`]: what the next run would read (`delta`), without running it.
//! - [`stats`]: runs, rows and durations over time windows.
//! - [`adapter`]: the adapter boundary; [`adapters`]: `postgres`, `mysql`, `mssql`, `http`.
//! - [`mapping`], [`values`]: rows to records and back; values compared by meaning.
//! - [`store`], [`store_side`]: the record store (`GET /v1/sync/records`), and as a side.

pub mod adapter;
pub mod adapters;
pub mod classify;
pub mod config;
pub mod conflicts;
pub mod dashboard;
pub mod engine;
pub mod links;
pub mod mapping;
pub mod open;
pub mod preview;
pub mod runs;
pub mod schedule;
pub mod stats;
pub mod store;
pub mod store_side;
pub mod values;
