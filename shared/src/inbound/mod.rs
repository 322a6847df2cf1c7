//! Inbound webhooks: what partners' systems send to an integration's inbound URL. So far the
//! verification of each supported scheme ([`verify`]); receiving, storing and processing come
//! next (docs/architecture.md §9).

pub mod verify;
