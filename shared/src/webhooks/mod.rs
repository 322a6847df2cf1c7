//! Outbound webhooks: endpoints, messages (one per event), deliveries (message × endpoint, one
//! job each) and attempts (every HTTP try, logged).

pub mod attempts;
pub mod breaker;
pub mod credentials;
pub mod deliveries;
pub mod delivery;
pub mod endpoints;
pub mod event_types;
pub mod messages;
pub mod operational;
pub mod signing;

/// The `webhook-id` of a message: stable across retries, so receivers can deduplicate.
pub fn webhook_id(message_id: uuid::Uuid) -> String {
    format!("msg_{}", message_id.simple())
}
