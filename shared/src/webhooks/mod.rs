//! Outbound webhooks: endpoints, messages (one per event), deliveries (message × endpoint, one
//! job each) and attempts (every HTTP try, logged).

pub mod attempts;
pub mod breaker;
pub mod credentials;
pub mod dashboard;
pub mod deliveries;
pub mod delivery;
pub mod destination;
pub mod endpoint_backlog;
pub mod endpoint_input;
pub mod endpoints;
pub mod messages;
pub mod operational;
pub mod ordering;
pub mod record;
pub mod rekey;
pub mod replays;
pub mod retry_schedule;
pub mod scrub;
pub mod send;
pub mod signing;
pub mod stats;
pub mod transport;

/// The `webhook-id` of a message: stable across retries, so receivers can deduplicate.
pub fn webhook_id(message_id: uuid::Uuid) -> String {
    format!("msg_{}", message_id.simple())
}

/// The smallest UUIDv7 of `t`'s millisecond: ids at or above it were minted at `t` or later
/// (ids are UUIDv7, so an id range is a time range served by the primary key).
pub fn uuid_v7_floor(t: chrono::DateTime<chrono::Utc>) -> uuid::Uuid {
    let ms = t.timestamp_millis().max(0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    uuid::Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn v7_floor_orders_with_real_ids() {
        let now = chrono::Utc::now();
        let floor = super::uuid_v7_floor(now - chrono::Duration::milliseconds(5));
        assert!(uuid::Uuid::now_v7() > floor);
        assert!(super::uuid_v7_floor(now + chrono::Duration::seconds(5)) > uuid::Uuid::now_v7());
    }
}
