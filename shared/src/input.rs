//! Request values whose OpenAPI schema and server-side check are one definition, so the
//! document says exactly what the server accepts: a value is parsed into one of these types
//! (serde) or refused with the rule it broke, and the same rule is what the schema states.
//!
//! * [`Text<MIN, MAX>`]: a string of `MIN` to `MAX` characters (Unicode code points, as JSON
//!   Schema counts them) without NUL (which Postgres cannot store), taken as sent.
//! * [`Int<MIN, MAX>`]: an integer within `MIN..=MAX`.
//! * [`Time`]: a point in time in the years 1 to 9999.
//! * [`pattern_string!`]: a string type matching one anchored pattern (written with explicit
//!   character classes, which mean the same in Rust and in ECMA-262).

use std::{borrow::Cow, fmt};

use chrono::{DateTime, Datelike, Utc};
use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use serde_json::Value;

/// A string of `MIN` to `MAX` characters, as sent.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text<const MIN: usize, const MAX: usize>(String);

impl<const MIN: usize, const MAX: usize> Text<MIN, MAX> {
    pub fn new(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        let n = s.chars().count();
        if !(MIN..=MAX).contains(&n) {
            Err(format!("must be {MIN} to {MAX} characters, not {n}"))
        } else if s.contains('\0') {
            // Postgres cannot store it in text.
            Err("must not contain NUL characters".to_owned())
        } else {
            Ok(Text(s))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<const MIN: usize, const MAX: usize> fmt::Debug for Text<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<const MIN: usize, const MAX: usize> std::ops::Deref for Text<MIN, MAX> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de, const MIN: usize, const MAX: usize> Deserialize<'de> for Text<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Text::new(String::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl<const MIN: usize, const MAX: usize> Serialize for Text<MIN, MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<const MIN: usize, const MAX: usize> Type for Text<MIN, MAX> {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        format!("string_{MIN}_{MAX}").into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            min_length: Some(MIN),
            max_length: Some(MAX),
            pattern: Some("^[^\\x00]*$".to_owned()),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl<const MIN: usize, const MAX: usize> ParseFromJSON for Text<MIN, MAX> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let s = String::parse_from_json(value).map_err(ParseError::propagate)?;
        Text::new(s).map_err(ParseError::custom)
    }
}

impl<const MIN: usize, const MAX: usize> poem_openapi::types::ParseFromParameter
    for Text<MIN, MAX>
{
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Text::new(value).map_err(ParseError::custom)
    }
}

impl<const MIN: usize, const MAX: usize> ToJSON for Text<MIN, MAX> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// An integer within `MIN..=MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Int<const MIN: i64, const MAX: i64>(i64);

impl<const MIN: i64, const MAX: i64> Int<MIN, MAX> {
    pub fn new(n: i64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&n) {
            Ok(Int(n))
        } else {
            Err(format!("must be between {MIN} and {MAX}, not {n}"))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Int<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Int::new(i64::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl<const MIN: i64, const MAX: i64> Serialize for Int<MIN, MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<const MIN: i64, const MAX: i64> Type for Int<MIN, MAX> {
    const IS_REQUIRED: bool = true;
    type RawValueType = i64;
    type RawElementValueType = i64;

    fn name() -> Cow<'static, str> {
        format!("integer_{MIN}_{MAX}").into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some("int64"),
            minimum: Some(MIN as f64),
            maximum: Some(MAX as f64),
            ..MetaSchema::new("integer")
        }))
    }

    fn as_raw_value(&self) -> Option<&i64> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a i64> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl<const MIN: i64, const MAX: i64> ParseFromJSON for Int<MIN, MAX> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let n = i64::parse_from_json(value).map_err(ParseError::propagate)?;
        Int::new(n).map_err(ParseError::custom)
    }
}

impl<const MIN: i64, const MAX: i64> ToJSON for Int<MIN, MAX> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::from(self.0))
    }
}

/// A point in time (RFC 3339) in the years 1 to 9999 (UTC): what Postgres, JSON clients and
/// every time library hold alike. Beyond them a time was refused by Postgres as a 500.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Time(DateTime<Utc>);

impl Time {
    pub fn new(t: DateTime<Utc>) -> Result<Self, String> {
        if (1..=9999).contains(&t.year()) {
            Ok(Time(t))
        } else {
            Err(format!("must be in the years 1 to 9999, not {}", t.year()))
        }
    }

    pub fn get(self) -> DateTime<Utc> {
        self.0
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Time::new(DateTime::<Utc>::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Type for Time {
    const IS_REQUIRED: bool = true;
    type RawValueType = DateTime<Utc>;
    type RawElementValueType = DateTime<Utc>;

    fn name() -> Cow<'static, str> {
        "string_date-time".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        <DateTime<Utc> as Type>::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&DateTime<Utc>> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a DateTime<Utc>> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for Time {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let t = DateTime::<Utc>::parse_from_json(value).map_err(ParseError::propagate)?;
        Time::new(t).map_err(ParseError::custom)
    }
}

impl poem_openapi::types::ParseFromParameter for Time {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        let t =
            <DateTime<Utc> as poem_openapi::types::ParseFromParameter>::parse_from_parameter(value)
                .map_err(ParseError::propagate)?;
        Time::new(t).map_err(ParseError::custom)
    }
}

impl ToJSON for Time {
    fn to_json(&self) -> Option<Value> {
        self.0.to_json()
    }
}

/// Declares a string type that must match one anchored pattern: the same regular expression is
/// the server's check and the schema's `pattern`.
macro_rules! pattern_string {
    ($(#[$meta:meta])* $name:ident, $pattern:expr, $what:expr) => {
        $crate::input::pattern_string!($(#[$meta])* $name, $pattern, $what, usize::MAX);
    };
    ($(#[$meta:meta])* $name:ident, $pattern:expr, $what:expr, $max:expr) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The anchored pattern values must match.
            pub fn pattern() -> &'static str {
                static PATTERN: std::sync::LazyLock<String> =
                    std::sync::LazyLock::new(|| String::from($pattern));
                &PATTERN
            }

            pub fn new(s: impl Into<String>) -> Result<Self, String> {
                static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
                    regex::Regex::new($name::pattern()).expect("valid pattern")
                });
                let s = s.into();
                if s.chars().count() > $max {
                    Err(format!("must be at most {} characters", $max))
                } else if RE.is_match(&s) {
                    Ok($name(s))
                } else {
                    Err(format!("`{s}` is not {}", $what))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error as _;
                $name::new(String::deserialize(d)?).map_err(D::Error::custom)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl poem_openapi::types::Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = String;
            type RawElementValueType = String;

            fn name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
                poem_openapi::registry::MetaSchemaRef::Inline(Box::new(
                    poem_openapi::registry::MetaSchema {
                        pattern: Some($name::pattern().to_owned()),
                        max_length: ($max != usize::MAX).then_some($max),
                        ..poem_openapi::registry::MetaSchema::new("string")
                    },
                ))
            }

            fn as_raw_value(&self) -> Option<&String> {
                Some(&self.0)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a String> + 'a> {
                Box::new(std::iter::once(&self.0))
            }
        }

        impl poem_openapi::types::ParseFromJSON for $name {
            fn parse_from_json(
                value: Option<serde_json::Value>,
            ) -> poem_openapi::types::ParseResult<Self> {
                use poem_openapi::types::ParseError;
                let s = String::parse_from_json(value).map_err(ParseError::propagate)?;
                $name::new(s).map_err(ParseError::custom)
            }
        }

        impl poem_openapi::types::ParseFromParameter for $name {
            fn parse_from_parameter(value: &str) -> poem_openapi::types::ParseResult<Self> {
                $name::new(value).map_err(poem_openapi::types::ParseError::custom)
            }
        }

        impl poem_openapi::types::ToJSON for $name {
            fn to_json(&self) -> Option<serde_json::Value> {
                Some(serde_json::Value::String(self.0.clone()))
            }
        }
    };
}
pub(crate) use pattern_string;

pattern_string!(
    /// A duration: a whole number and a unit, `ms`, `s` (the default), `m`, `h` or `d`
    /// (`500ms`, `5s`, `30m`, `2h`, `7d`).
    DurationText,
    "^[0-9]{1,15}(ms|s|m|h|d)?$",
    "a duration like `500ms`, `5s`, `30m`, `2h` or `7d`"
);

impl DurationText {
    /// The duration, or why it is too long to represent.
    pub fn duration(&self) -> Result<std::time::Duration, String> {
        crate::duration::parse_duration(&self.0)
    }
}

pattern_string!(
    /// An email address: a local part, `@`, a domain; no spaces (254 characters at most).
    EmailText,
    "^[^@\\s]{1,64}@[^@\\s]{1,189}$",
    "an email address like `pat@example.com`",
    254
);

pattern_string!(
    /// 1 to 1024 printable ASCII characters (what an HTTP header value may hold).
    PrintableText,
    "^[ -~]{1,1024}$",
    "1 to 1024 printable ASCII characters"
);

pattern_string!(
    /// An IPv4 or IPv6 address or CIDR block (`203.0.113.0/24`, `2001:db8::/32`).
    CidrText,
    cidr_pattern(),
    "an IPv4 or IPv6 address or CIDR block (`203.0.113.0/24`)"
);

/// An IPv4 octet: 0 to 255, no leading zeros (as Rust's address parser reads them).
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";

/// A dotted IPv4 address.
fn ipv4() -> String {
    format!("{OCTET}(\\.{OCTET}){{3}}")
}

/// An IPv6 address in any of its textual forms (RFC 4291 §2.2, with an embedded IPv4 tail).
fn ipv6() -> String {
    let h = "[0-9A-Fa-f]{1,4}";
    let v4 = ipv4();
    let tail = format!("({h}:{h}|{v4})");
    [
        format!("({h}:){{6}}{tail}"),
        format!("::({h}:){{5}}{tail}"),
        format!("({h})?::({h}:){{4}}{tail}"),
        format!("(({h}:){{0,1}}{h})?::({h}:){{3}}{tail}"),
        format!("(({h}:){{0,2}}{h})?::({h}:){{2}}{tail}"),
        format!("(({h}:){{0,3}}{h})?::{h}:{tail}"),
        format!("(({h}:){{0,4}}{h})?::{tail}"),
        format!("(({h}:){{0,5}}{h})?::{h}"),
        format!("(({h}:){{0,6}}{h})?::"),
    ]
    .map(|alt| format!("({alt})"))
    .join("|")
}

/// The pattern of an IPv4 or IPv6 address or CIDR block (`203.0.113.0/24`, `2001:db8::/32`).
pub fn cidr_pattern() -> String {
    let v4_prefix = "(3[0-2]|[12]?[0-9])";
    let v6_prefix = "(12[0-8]|1[01][0-9]|[1-9]?[0-9])";
    format!(
        "^(({})(/{v4_prefix})?|({})(/{v6_prefix})?)$",
        ipv4(),
        ipv6()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_counts_characters_not_bytes() {
        assert!(Text::<1, 3>::new("äöü").is_ok());
        assert!(Text::<1, 3>::new("").is_err());
        assert!(Text::<1, 3>::new("abcd").is_err());
        assert!(Int::<1, 5>::new(5).is_ok() && Int::<1, 5>::new(6).is_err());
    }

    #[test]
    fn the_cidr_pattern_matches_what_the_address_parser_reads() {
        let re = regex::Regex::new(&cidr_pattern()).unwrap();
        for ok in [
            "203.0.113.7",
            "10.0.0.0/8",
            "0.0.0.0/0",
            "::1",
            "::",
            "2001:db8::/32",
            "fe80::1:2:3:4",
            "::ffff:192.0.2.1/128",
            "1:2:3:4:5:6:7:8",
            "1::8",
        ] {
            assert!(re.is_match(ok), "{ok}");
            assert!(crate::net::Cidr::parse(ok).is_some(), "{ok} parses");
        }
        for bad in [
            "256.0.0.1",
            "01.2.3.4",
            "10.0.0.0/33",
            "1:2:3:4:5:6:7:8:9",
            "::/129",
            "10.0.0.0/+8",
            " 10.0.0.1",
            "fe80::1%eth0",
        ] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }
}
