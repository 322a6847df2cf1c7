//! End-to-end tests: real Postgres, real Redis, real HTTP, real processes.

mod api_errors;
mod delivery;
mod durability;
mod ops;
mod signing;
