//! What partners send to create and change integrations: typed values whose schema is what the
//! server accepts (see `crate::input`), and the checks no schema can state (credential names,
//! the config keys Switchyard itself reads, the size of `config`).

use std::{borrow::Cow, collections::BTreeMap};

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{MaybeUndefined, ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    input::{Text, pattern_string},
};

/// Most named credentials on one integration.
pub const MAX_CREDENTIALS: usize = 20;
/// Most bytes of `config`, as JSON.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024;
/// Longest credential value, in characters.
pub const MAX_SECRET_CHARS: usize = 8192;

/// What kind of system the integration connects.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum IntegrationType {
    PaymentGateway,
    Erp,
    Mes,
    Crm,
    Accounting,
    Email,
    Sms,
    Shipping,
    Inventory,
    Api,
    Webhook,
    Database,
}

/// Whether the integration is in use (`error` is set by people, not by health checks, which
/// keep `connection_status`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum IntegrationStatus {
    Active,
    Inactive,
    Error,
    Testing,
}

/// What the last connection check found.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ConnectionStatus {
    Connected,
    Error,
    Unknown,
}

pattern_string!(
    /// A slug: lower-case letters, digits, `_` and `-`, starting with a letter or digit, at
    /// most 64 characters.
    Slug,
    "^[a-z0-9][a-z0-9_-]{0,63}$",
    "a slug (lower-case letters, digits, `_`, `-`; at most 64 characters)"
);

pattern_string!(
    /// A credential name: lower-case letters, digits and `_`, starting with a letter, at most
    /// 64 characters (`bearer_token`, `password`, `url`).
    CredentialName,
    "^[a-z][a-z0-9_]{0,63}$",
    "a credential name (lower-case letters, digits, `_`; starting with a letter)"
);

/// A credential value: 1 to 8192 characters; write-only.
pub type SecretValue = Text<1, MAX_SECRET_CHARS>;

/// Named credentials as sent: name → value.
pub type Credentials = BTreeMap<String, SecretValue>;

/// Free-form settings; the keys Switchyard reads itself are checked (see [`check_config`]).
pub type Config = BTreeMap<String, Value>;

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CreateIntegration {
    /// A human name, 1 to 200 characters.
    pub name: Text<1, 200>,
    /// Your handle for it, unique per tenant and mode (a slug).
    pub code: Slug,
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub kind: IntegrationType,
    /// How Switchyard talks to it: `http`, `postgres`, `mysql`, `mssql`, `stripe`, or any slug
    /// (treated as HTTP).
    pub provider: Slug,
    /// Default `active`.
    #[oai(nullable)]
    pub status: Option<IntegrationStatus>,
    /// The system's HTTP(S) address, at most 2048 characters; it must not point at a
    /// non-public address.
    #[oai(nullable)]
    pub base_url: Option<Text<1, 2048>>,
    /// Settings, at most 16 KiB as JSON. Switchyard reads `health_path` (default `/`),
    /// `api_key_header` (default `X-API-Key`) and `health_interval` (default `5m`, `0` = off).
    #[oai(nullable, validator(max_properties = 50))]
    pub config: Option<Config>,
    /// Named secrets (at most 20; names like `bearer_token`, `username`, `password`,
    /// `api_key`, `url`). Stored encrypted; never shown again.
    #[oai(nullable, validator(max_properties = 20))]
    pub credentials: Option<Credentials>,
    /// Receive webhooks from this system at the integration's `inbound_url`: how they are
    /// verified and what becomes of them.
    #[oai(nullable)]
    pub inbound: Option<crate::inbound::InboundInput>,
}

/// A partial update: absent fields stay as they are.
#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct UpdateIntegration {
    #[oai(nullable)]
    pub name: Option<Text<1, 200>>,
    #[oai(nullable)]
    pub code: Option<Slug>,
    #[serde(rename = "type")]
    #[oai(rename = "type", nullable)]
    pub kind: Option<IntegrationType>,
    #[oai(nullable)]
    pub provider: Option<Slug>,
    #[oai(nullable)]
    pub status: Option<IntegrationStatus>,
    /// `null` removes it.
    #[serde(default)]
    #[oai(nullable)]
    pub base_url: MaybeUndefined<Text<1, 2048>>,
    /// Replaces the whole config.
    #[oai(nullable, validator(max_properties = 50))]
    pub config: Option<Config>,
    /// Replaces the named credentials one by one; a `null` value deletes that credential.
    /// Credentials not named stay as they are.
    #[oai(nullable, validator(max_properties = 20))]
    pub credentials: Option<BTreeMap<String, CredentialChange>>,
    /// Replaces the inbound settings (and all inbound secrets); `null` turns inbound off.
    #[serde(default)]
    #[oai(nullable)]
    pub inbound: MaybeUndefined<crate::inbound::InboundInput>,
}

/// A credential's new value, or `null` to delete it.
#[derive(Clone, Debug)]
pub struct CredentialChange(pub Option<SecretValue>);

impl<'de> Deserialize<'de> for CredentialChange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Option::<SecretValue>::deserialize(d).map(CredentialChange)
    }
}

impl Type for CredentialChange {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "CredentialChange".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            min_length: Some(1),
            max_length: Some(MAX_SECRET_CHARS),
            pattern: Some("^[^\\x00]*$".to_owned()),
            nullable: true,
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ParseFromJSON for CredentialChange {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            None | Some(Value::Null) => Ok(CredentialChange(None)),
            Some(v) => SecretValue::parse_from_json(Some(v))
                .map(|s| CredentialChange(Some(s)))
                .map_err(ParseError::propagate),
        }
    }
}

impl ToJSON for CredentialChange {
    fn to_json(&self) -> Option<Value> {
        Some(match &self.0 {
            Some(s) => Value::String(s.as_str().to_owned()),
            None => Value::Null,
        })
    }
}

/// Checks a credential name (map keys carry no schema of their own).
pub fn credential_name(name: &str) -> Result<CredentialName> {
    CredentialName::new(name).map_err(|why| {
        Error::invalid(
            "parameter_invalid",
            format!("credentials.{name}"),
            format!("Credential name {why}."),
        )
    })
}

/// Checks `config`: its size, no NUL characters (Postgres stores none), and the keys
/// Switchyard reads itself.
pub fn check_config(config: Config) -> Result<Value> {
    let value = Value::Object(config.into_iter().collect());
    let text = value.to_string();
    if text.len() > MAX_CONFIG_BYTES {
        return Err(Error::invalid(
            "parameter_invalid",
            "config",
            format!(
                "`config` must be at most {} KiB as JSON.",
                MAX_CONFIG_BYTES / 1024
            ),
        ));
    }
    if text.contains("\\u0000") {
        return Err(Error::invalid(
            "parameter_invalid",
            "config",
            "`config` must not contain NUL characters.",
        ));
    }
    let string = |key: &str| -> Result<Option<&str>> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::invalid(
                "parameter_invalid",
                format!("config.{key}"),
                format!("`config.{key}` must be a string."),
            )),
        }
    };
    if let Some(path) = string("health_path")? {
        let ok = path.starts_with('/')
            && path.len() <= 1024
            && path.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(Error::invalid(
                "parameter_invalid",
                "config.health_path",
                "`config.health_path` must be a path starting with `/` (printable ASCII, no \
                 spaces, at most 1024 characters).",
            ));
        }
    }
    if let Some(header) = string("api_key_header")? {
        let ok = !header.is_empty()
            && header.len() <= 100
            && header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !ok {
            return Err(Error::invalid(
                "parameter_invalid",
                "config.api_key_header",
                "`config.api_key_header` must be an HTTP header name.",
            ));
        }
        // A key may go in `Authorization`, not in a header that frames or routes the request
        // or that Switchyard sets itself (`Content-Length`, `Host`, `Webhook-*`, …).
        let lower = header.to_ascii_lowercase();
        if (crate::net::reserved_header(&lower) && lower != "authorization")
            || lower == "idempotency-key"
        {
            return Err(Error::invalid(
                "parameter_invalid",
                "config.api_key_header",
                format!(
                    "`{header}` is set by Switchyard or frames the request; choose another header."
                ),
            ));
        }
    }
    if let Some(interval) = string("health_interval")? {
        super::health_interval(Some(interval)).map_err(|why| {
            Error::invalid(
                "parameter_invalid",
                "config.health_interval",
                format!("`config.health_interval` {why}."),
            )
        })?;
    }
    Ok(value)
}
