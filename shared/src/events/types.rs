//! Event types are dotted names (`order.created`); endpoint filters may end in a `*` segment
//! (`order.*`) or be `*` alone.

use crate::{
    error::{Error, Result},
    input::pattern_string,
};

pattern_string!(
    /// An event type: dotted segments of `[A-Za-z0-9_]` (`invoice.paid`), at most 200 characters.
    EventTypeName,
    "^[A-Za-z0-9_]{1,64}([.][A-Za-z0-9_]{1,64})*$",
    "an event type: dotted names like `invoice.paid`",
    200
);
pattern_string!(
    /// An event type or a pattern of them: `order.created`, `order.*`, or `*`.
    EventTypePattern,
    "^([A-Za-z0-9_]{1,64}[.])*([A-Za-z0-9_]{1,64}|[*])$",
    "an event type like `order.created`, optionally ending in `.*`",
    200
);

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Validates a filter pattern: segments of `[A-Za-z0-9_]`, optionally ending in `*`.
pub fn is_valid_pattern(p: &str) -> bool {
    if p.len() > 200 {
        return false;
    }
    let segs: Vec<&str> = p.split('.').collect();
    let (last, init) = segs.split_last().expect("split yields at least one item");
    init.iter().all(|s| valid_segment(s)) && (*last == "*" || valid_segment(last))
}

/// `order.*` matches `order.created` and `order.status.changed`; `*` matches everything.
pub fn matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix) && event_type.len() > prefix.len(),
        None => pattern == event_type,
    }
}

pub fn matches_any(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|p| matches(p, event_type))
}

/// Validates and normalises an endpoint's filter (default: everything).
pub fn validate_filter(patterns: Option<Vec<EventTypePattern>>) -> Result<Vec<String>> {
    let patterns: Vec<String> = patterns.map_or_else(
        || vec!["*".to_owned()],
        |p| p.into_iter().map(EventTypePattern::into_string).collect(),
    );
    if patterns.is_empty() || patterns.len() > 100 {
        return Err(Error::invalid(
            "parameter_invalid",
            "event_types",
            "`event_types` must list 1 to 100 event types or patterns.",
        ));
    }
    for (i, p) in patterns.iter().enumerate() {
        if !is_valid_pattern(p) {
            return Err(Error::invalid(
                "parameter_invalid",
                format!("event_types[{i}]"),
                format!(
                    "`{p}` is not an event type: use dotted names like `order.created`, optionally ending in `.*`."
                ),
            ));
        }
    }
    let mut patterns = patterns;
    patterns.sort();
    patterns.dedup();
    Ok(patterns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("*", "order.created"));
        assert!(matches("order.*", "order.created"));
        assert!(matches("order.*", "order.status.changed"));
        assert!(!matches("order.*", "orders.created"));
        assert!(!matches("order.*", "order."));
        assert!(matches("order.created", "order.created"));
        assert!(!matches("order.created", "order.cancelled"));
    }

    #[test]
    fn pattern_validation() {
        for ok in ["*", "order.*", "order.created", "a_b.c1"] {
            assert!(is_valid_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "order.",
            "order..x",
            "*.created",
            "order-created",
            "o.*.*",
        ] {
            assert!(!is_valid_pattern(bad), "{bad}");
        }
        assert!(validate_filter(Some(vec![])).is_err());
        assert_eq!(validate_filter(None).unwrap(), vec!["*"]);
    }
}
