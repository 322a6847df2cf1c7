//! Comparing values as they come from different systems. Two databases render the same time
//! or number differently (`2026-12-06T10:00:00.1` vs `2026-12-06 10:00:00.100000`, `true` vs
//! `1`); a bidirectional sync that compared texts would see a change on every read and write
//! the record back and forth forever. Values are compared by what they mean.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value;

use super::adapter::Row;

/// Whether two values mean the same: equal JSON, equal numbers (`12.50` and `12.5`, `"12"` and
/// `12`), the same instant (naive times read as UTC), or a boolean and its `0`/`1`.
pub fn same(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Bool(x), Value::Number(n)) | (Value::Number(n), Value::Bool(x)) => {
            n.as_f64() == Some(if *x { 1.0 } else { 0.0 })
        }
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            s.trim().parse::<f64>().ok() == n.as_f64()
        }
        (Value::String(x), Value::String(y)) => match (instant(x), instant(y)) {
            (Some(p), Some(q)) => p == q,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => same_fields(x, y),
        _ => false,
    }
}

/// Whether two rows hold the same fields with the same meaning (a field missing on one side
/// is `null`).
pub fn same_fields(a: &Row, b: &Row) -> bool {
    let null = Value::Null;
    a.iter().all(|(k, v)| same(v, b.get(k).unwrap_or(&null)))
        && b.iter().all(|(k, v)| a.contains_key(k) || v.is_null())
}

/// The fields whose values differ, in name order.
pub fn differing(a: &Row, b: &Row) -> Vec<String> {
    let null = Value::Null;
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|k| !same(a.get(*k).unwrap_or(&null), b.get(*k).unwrap_or(&null)))
        .cloned()
        .collect()
}

/// A time as text read as an instant: RFC 3339, or a naive date-time (`T` or space between
/// date and time) or date taken as UTC.
pub fn instant(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    // Cheap rejection: times start with a four-digit year and a dash.
    if s.len() < 10 || !s.as_bytes()[..4].iter().all(u8::is_ascii_digit) || s.as_bytes()[4] != b'-'
    {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// A time as MySQL takes it (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC); other text as it is.
pub fn mysql_time(s: &str) -> String {
    match instant(s) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_compare_by_meaning() {
        assert!(same(
            &json!("2026-12-06T10:00:00.1"),
            &json!("2026-12-06 10:00:00.100000")
        ));
        assert!(same(
            &json!("2026-12-06T11:00:00+01:00"),
            &json!("2026-12-06 10:00:00")
        ));
        assert!(!same(
            &json!("2026-12-06T10:00:01"),
            &json!("2026-12-06 10:00:00")
        ));
        assert!(same(&json!(12.50), &json!(12.5)));
        assert!(same(&json!("12.50"), &json!(12.5)));
        assert!(same(&json!(true), &json!(1)));
        assert!(!same(&json!(false), &json!(1)));
        assert!(!same(&json!("ab"), &json!("AB")));
        assert!(!same(&json!(null), &json!(0)));
        let a = json!({"a": 1, "b": null}).as_object().unwrap().clone();
        let b = json!({"a": 1.0}).as_object().unwrap().clone();
        assert!(same_fields(&a, &b));
        let c = json!({"a": 2, "c": "x"}).as_object().unwrap().clone();
        assert_eq!(differing(&a, &c), vec!["a", "c"]);
    }

    #[test]
    fn times_are_written_in_mysql_form() {
        assert_eq!(
            mysql_time("2026-12-06T10:00:00.5+00:00"),
            "2026-12-06 10:00:00.500000"
        );
        assert_eq!(mysql_time("2026-12-06"), "2026-12-06 00:00:00.000000");
        assert_eq!(mysql_time("not a time"), "not a time");
    }
}
