//! End-to-end tests: real Postgres, real Redis, real HTTP, real processes.

mod api_errors;
mod api_key_guards;
mod api_keys;
mod backlog;
mod batching;
mod breaker;
mod cancellation;
mod dead_jobs;
mod delivery;
mod durability;
mod endpoint_limits;
mod event_types;
mod events;
mod idempotency;
mod idempotency_routes;
mod isolation;
mod leases;
mod ops;
mod orders;
mod rate_limits;
mod replays;
mod retention;
mod retries;
mod scheduler;
mod signing;
mod ssrf;
