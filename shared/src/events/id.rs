//! Event ids as partners see them: `evt_` and the UUID's 32 hex digits, like `msg_…` for
//! messages, so an id says what it names.

use uuid::Uuid;

use crate::input::pattern_string;

pattern_string!(
    /// An event id: `evt_` followed by 32 lowercase hex digits.
    EventId,
    "^evt_[0-9a-f]{32}$",
    "an event id like `evt_0193…`",
    36
);

impl EventId {
    pub fn uuid(&self) -> Uuid {
        // The pattern guarantees 32 hex digits after the prefix.
        Uuid::parse_str(&self.as_str()[4..]).unwrap_or_default()
    }
}

/// The public id of an event.
pub fn event_id(id: Uuid) -> String {
    format!("evt_{}", id.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = Uuid::now_v7();
        let text = event_id(id);
        assert_eq!(EventId::new(text).unwrap().uuid(), id);
        assert!(EventId::new(format!("msg_{}", id.simple())).is_err());
        assert!(EventId::new(id.to_string()).is_err());
    }
}
