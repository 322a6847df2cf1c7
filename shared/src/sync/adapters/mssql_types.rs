//! SQL Server values as JSON, and JSON values as SQL Server parameters. Every type an ERP
//! table holds has one rendering, tested here value by value: `rowversion` as the number its
//! eight big-endian bytes make, `datetime2`/`datetime` as ISO 8601 without a zone,
//! `datetimeoffset` with its offset, `decimal` as a JSON number while it fits one exactly (else
//! its exact text), `uniqueidentifier` as the usual lowercase text (tiberius reads SQL
//! Server's mixed-endian bytes), `nvarchar` as text, `bit` as a boolean, binary as base64.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{Number, Value};
use tiberius::{ColumnData, FromSql, ToSql};

/// A column's value as JSON; `data_type` is the column's declared type (`rowversion` columns
/// arrive as binary).
pub fn to_json(data: &ColumnData<'static>, data_type: &str) -> Value {
    match data {
        ColumnData::U8(v) => v.map_or(Value::Null, Value::from),
        ColumnData::I16(v) => v.map_or(Value::Null, Value::from),
        ColumnData::I32(v) => v.map_or(Value::Null, Value::from),
        ColumnData::I64(v) => v.map_or(Value::Null, Value::from),
        ColumnData::F32(v) => v.map_or(Value::Null, |f| float(f as f64)),
        ColumnData::F64(v) => v.map_or(Value::Null, float),
        ColumnData::Bit(v) => v.map_or(Value::Null, Value::Bool),
        ColumnData::String(v) => v
            .as_ref()
            .map_or(Value::Null, |s| Value::String(s.to_string())),
        ColumnData::Guid(v) => v.map_or(Value::Null, |g| Value::String(g.to_string())),
        ColumnData::Binary(v) => match v {
            None => Value::Null,
            Some(b) if super::tsql::is_rowversion(data_type) && b.len() == 8 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                Value::from(u64::from_be_bytes(be))
            }
            Some(b) => Value::String(STANDARD.encode(b)),
        },
        ColumnData::Numeric(v) => match v {
            None => Value::Null,
            Some(n) => {
                let text = n.to_string();
                let digits = text.chars().filter(char::is_ascii_digit).count();
                match text.parse::<f64>() {
                    Ok(f) if digits <= 15 => float(f),
                    _ => Value::String(text),
                }
            }
        },
        ColumnData::Xml(v) => v
            .as_ref()
            .map_or(Value::Null, |x| Value::String(x.to_string())),
        // Fractions at the server's own precision: 100 ns for `datetime2` (7 digits), 1/300 s
        // for `datetime` (rounded to 3 digits, as SQL Server shows it), none for
        // `smalldatetime`. More digits would not convert back (`CONVERT(datetime2, …, 127)`
        // takes at most 7), and conditional writes and checkpoints compare these texts.
        ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            let digits = match data {
                ColumnData::DateTime(_) => 3,
                ColumnData::SmallDateTime(_) => 0,
                _ => 7,
            };
            match NaiveDateTime::from_sql(data) {
                Ok(Some(t)) => Value::String(time_text(t, digits)),
                _ => Value::Null,
            }
        }
        ColumnData::Date(_) => match NaiveDate::from_sql(data) {
            Ok(Some(d)) => Value::String(d.format("%Y-%m-%d").to_string()),
            _ => Value::Null,
        },
        ColumnData::Time(_) => match NaiveTime::from_sql(data) {
            Ok(Some(t)) => Value::String(t.format("%H:%M:%S%.f").to_string()),
            _ => Value::Null,
        },
        ColumnData::DateTimeOffset(_) => match DateTime::<FixedOffset>::from_sql(data) {
            Ok(Some(t)) => Value::String(format!(
                "{}{}",
                time_text(t.naive_local(), 7),
                t.format("%:z")
            )),
            _ => Value::Null,
        },
    }
}

/// `YYYY-MM-DDTHH:MM:SS` with at most `digits` fractional digits (rounded; trailing zeros
/// dropped).
fn time_text(t: NaiveDateTime, digits: u32) -> String {
    let unit = 10u32.pow(9 - digits);
    let nanos = t.and_utc().timestamp_subsec_nanos();
    let rounded = (nanos + unit / 2) / unit * unit;
    let t = t - chrono::Duration::nanoseconds(nanos as i64)
        + chrono::Duration::nanoseconds(rounded as i64);
    let whole = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let frac = t.and_utc().timestamp_subsec_nanos() / unit;
    if digits == 0 || frac == 0 {
        return whole;
    }
    let text = format!("{frac:0width$}", width = digits as usize);
    format!("{whole}.{}", text.trim_end_matches('0'))
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A JSON value as a parameter: booleans, integers and floats as themselves, text as
/// `nvarchar` (the statement converts it to the column's type), objects and arrays as their
/// JSON text.
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Param {
    pub fn of(v: &Value) -> Param {
        match v {
            Value::Null => Param::Null,
            Value::Bool(b) => Param::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Param::Int(i),
                None => Param::Float(n.as_f64().unwrap_or_default()),
            },
            Value::String(s) => Param::Text(s.clone()),
            other => Param::Text(other.to_string()),
        }
    }

    pub fn as_sql(&self) -> &dyn ToSql {
        const NULL: Option<&str> = None;
        match self {
            Param::Null => &NULL,
            Param::Bool(b) => b,
            Param::Int(i) => i,
            Param::Float(f) => f,
            Param::Text(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::json;
    use tiberius::{
        numeric::Numeric,
        time::{Date, DateTime2, DateTimeOffset, Time},
    };
    use uuid::Uuid;

    use super::*;

    /// 2026-12-06 as days since 0001-01-01.
    fn day() -> Date {
        let days = NaiveDate::from_ymd_opt(2026, 12, 6)
            .unwrap()
            .signed_duration_since(NaiveDate::from_ymd_opt(1, 1, 1).unwrap())
            .num_days();
        Date::new(days as u32)
    }

    #[test]
    fn every_erp_type_has_one_json_form() {
        // rowversion: eight big-endian bytes.
        let rv = ColumnData::Binary(Some(Cow::Owned(vec![0, 0, 0, 0, 0, 0, 0x30, 0x39])));
        assert_eq!(to_json(&rv, "timestamp"), json!(12345));
        assert_eq!(to_json(&rv, "rowversion"), json!(12345));
        assert_eq!(to_json(&rv, "varbinary"), json!("AAAAAAAAMDk="));
        // datetime2(7): 10:00:00.1234567.
        let t = Time::new(10 * 3600 * 10_000_000 + 1_234_567, 7);
        let dt2 = ColumnData::DateTime2(Some(DateTime2::new(day(), t)));
        assert_eq!(
            to_json(&dt2, "datetime2"),
            json!("2026-12-06T10:00:00.1234567")
        );
        // datetime: 1/300 s ticks, shown (and converted back) with 3 digits.
        let dt = ColumnData::DateTime(Some(tiberius::time::DateTime::new(46_000, 1)));
        assert_eq!(to_json(&dt, "datetime"), json!("2025-12-11T00:00:00.003"));
        let whole = ColumnData::DateTime2(Some(DateTime2::new(day(), Time::new(0, 7))));
        assert_eq!(to_json(&whole, "datetime2"), json!("2026-12-06T00:00:00"));
        // datetimeoffset: the same local time at +01:00.
        let dto = ColumnData::DateTimeOffset(Some(DateTimeOffset::new(
            DateTime2::new(day(), Time::new(9 * 3600 * 10_000_000, 7)),
            60,
        )));
        assert_eq!(
            to_json(&dto, "datetimeoffset"),
            json!("2026-12-06T10:00:00+01:00")
        );
        let dto = ColumnData::DateTimeOffset(Some(DateTimeOffset::new(
            DateTime2::new(day(), Time::new(9 * 3600 * 10_000_000 + 5, 7)),
            -90,
        )));
        assert_eq!(
            to_json(&dto, "datetimeoffset"),
            json!("2026-12-06T07:30:00.0000005-01:30")
        );
        assert_eq!(
            to_json(&ColumnData::Date(Some(day())), "date"),
            json!("2026-12-06")
        );
        // decimal(10,2) and one too long for a double.
        let d = ColumnData::Numeric(Some(Numeric::new_with_scale(1250, 2)));
        assert_eq!(to_json(&d, "decimal"), json!(12.5));
        let big = ColumnData::Numeric(Some(Numeric::new_with_scale(12345678901234567890, 4)));
        assert_eq!(to_json(&big, "decimal"), json!("1234567890123456.7890"));
        let g = Uuid::parse_str("6f9619ff-8b86-d011-b42d-00c04fc964ff").unwrap();
        assert_eq!(
            to_json(&ColumnData::Guid(Some(g)), "uniqueidentifier"),
            json!("6f9619ff-8b86-d011-b42d-00c04fc964ff")
        );
        assert_eq!(
            to_json(
                &ColumnData::String(Some(Cow::Borrowed("Grüße"))),
                "nvarchar"
            ),
            json!("Grüße")
        );
        assert_eq!(to_json(&ColumnData::Bit(Some(true)), "bit"), json!(true));
        assert_eq!(to_json(&ColumnData::I32(None), "int"), Value::Null);
        assert_eq!(to_json(&ColumnData::I64(Some(-7)), "bigint"), json!(-7));
    }

    #[test]
    fn json_values_become_typed_parameters() {
        let data = |v: Value| format!("{:?}", Param::of(&v).as_sql().to_sql());
        assert_eq!(data(json!(true)), "Bit(Some(true))");
        assert_eq!(data(json!(42)), "I64(Some(42))");
        assert_eq!(data(json!(1.5)), "F64(Some(1.5))");
        assert_eq!(data(json!("A-1")), "String(Some(\"A-1\"))");
        assert_eq!(data(Value::Null), "String(None)");
        assert_eq!(data(json!({"a": 1})), "String(Some(\"{\\\"a\\\":1}\"))");
    }
}
