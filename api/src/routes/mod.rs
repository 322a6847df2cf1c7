//! HTTP handlers, one module per resource; they authenticate, call `shared`, and shape output.

pub mod admin;
pub mod ops;
pub mod orders;
pub mod webhook_endpoints;

use poem_openapi::Tags;

#[derive(Tags)]
pub enum ApiTags {
    /// Partner orders.
    Orders,
    /// Where events are delivered, and the log of every delivery attempt.
    WebhookEndpoints,
    /// Operator API (admin token): tenants, API keys, queues.
    Admin,
    /// Liveness, readiness and metrics.
    Operations,
}
