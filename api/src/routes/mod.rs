//! HTTP handlers, one module per resource; they authenticate, call `shared`, and shape output.

pub mod admin;
pub mod api_keys;
pub mod audit_events;
pub mod destination_kinds;
pub mod event_types;
pub mod events;
pub mod inbound;
pub mod integrations;
pub mod jobs;
pub mod keyring;
pub mod logs;
pub mod operators;
pub mod ops;
pub mod orders;
pub mod queues;
pub mod sync;
pub mod sync_conflicts;
pub mod sync_records;
pub mod webhook_deliveries;
pub mod webhook_endpoints;
pub mod webhook_replays;
pub mod workers;

use poem_openapi::Tags;

#[derive(Tags)]
pub enum ApiTags {
    /// Partner orders.
    Orders,
    /// Where events are delivered, and the log of every delivery attempt.
    WebhookEndpoints,
    /// Deliveries of messages to endpoints: inspect and retry them.
    WebhookDeliveries,
    /// Your own events (`ncr.created`, `payment.completed`, …) and every event sent to
    /// your endpoints.
    Events,
    /// The event types endpoints can subscribe to: built in, and your own.
    EventTypes,
    /// External systems your tenant connects (ERP, MES, payment, …): settings, encrypted
    /// credentials, connection checks (needs `integrations:write` / `integrations:read`).
    Integrations,
    /// Webhooks your partners' systems send to an integration's `inbound_url`, as received,
    /// verified and processed.
    Inbound,
    /// Data syncs with ERP/MES databases: configurations, runs (with logs and per-record
    /// errors), and the record store of synced data (needs `sync:write` / `sync:read`).
    Sync,
    /// Your tenant's API keys: create, roll, revoke, usage (needs `keys:write` / `keys:read`).
    ApiKeys,
    /// Your tenant's audit log (needs `audit:read`).
    AuditEvents,
    /// Your API requests, everything that failed, and where your key stands on its rate
    /// limits (needs `logs:read`).
    Logs,
    /// Operator API (admin token): tenants, API keys, queues, the keyring.
    Admin,
    /// Liveness, readiness and metrics.
    Operations,
}
