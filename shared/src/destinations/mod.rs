//! Destinations: how a delivery leaves. Every endpoint has a `kind` — signed HTTP webhooks
//! (`http`, the default), Slack, Discord, email, RabbitMQ, NATS, or a templated call to an
//! HTTP integration — and, beyond `http`, a `config` whose secret fields are sealed. The
//! delivery engine (ledger, retries, caps, breaker, attempts, replay, FIFO) is the same for
//! all; a kind is its settings here ([`config`]), what it renders ([`render`]), and its
//! transport in the `switchyard-destinations` crate (README, "Destinations").

pub mod catalogue;
pub mod config;
mod prepare;
pub mod render;
pub mod template;

pub use prepare::{Prepared, prepare};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use self::config::{
    DiscordConfig, EmailConfig, HttpActionConfig, NatsConfig, RabbitMqConfig, SlackConfig,
    check_address, check_json_template, check_template, check_text,
};
use crate::error::{Error, Result};

/// How an endpoint's deliveries leave.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    poem_openapi::Enum,
    sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DestinationKind {
    /// Signed Standard Webhooks POSTed to `url`.
    #[default]
    Http,
    Slack,
    Discord,
    Email,
    Rabbitmq,
    Nats,
    HttpAction,
}

impl DestinationKind {
    pub const ALL: [DestinationKind; 7] = [
        DestinationKind::Http,
        DestinationKind::Slack,
        DestinationKind::Discord,
        DestinationKind::Email,
        DestinationKind::Rabbitmq,
        DestinationKind::Nats,
        DestinationKind::HttpAction,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Http => "http",
            DestinationKind::Slack => "slack",
            DestinationKind::Discord => "discord",
            DestinationKind::Email => "email",
            DestinationKind::Rabbitmq => "rabbitmq",
            DestinationKind::Nats => "nats",
            DestinationKind::HttpAction => "http_action",
        }
    }

    /// The `config` fields that are secrets: sealed, write-only, redacted in attempt logs.
    pub fn secret_fields(self) -> &'static [&'static str] {
        match self {
            DestinationKind::Http | DestinationKind::Email | DestinationKind::HttpAction => &[],
            DestinationKind::Slack => &["webhook_url", "bot_token"],
            DestinationKind::Discord => &["webhook_url"],
            DestinationKind::Rabbitmq | DestinationKind::Nats => &["url"],
        }
    }
}

/// A destination's settings, typed by kind.
#[derive(Clone, Debug)]
pub enum Settings {
    Http,
    Slack(SlackConfig),
    Discord(DiscordConfig),
    Email(EmailConfig),
    Rabbitmq(RabbitMqConfig),
    Nats(NatsConfig),
    HttpAction(HttpActionConfig),
}

/// Most bytes of a `config`, as JSON.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

impl Settings {
    /// Reads `config` as `kind`'s settings (`config.<field>` names a bad field).
    pub fn parse(kind: DestinationKind, config: Value) -> Result<Settings> {
        fn typed<T: serde::de::DeserializeOwned>(config: Value) -> Result<T> {
            serde_path_to_error::deserialize(config).map_err(|e| {
                let path = e.path().to_string();
                let param = if path == "." {
                    "config".to_owned()
                } else {
                    format!("config.{path}")
                };
                Error::invalid(
                    "parameter_invalid",
                    param,
                    format!("`config` is not valid: {}.", e.inner()),
                )
            })
        }
        Ok(match kind {
            DestinationKind::Http => Settings::Http,
            DestinationKind::Slack => Settings::Slack(typed(config)?),
            DestinationKind::Discord => Settings::Discord(typed(config)?),
            DestinationKind::Email => Settings::Email(typed(config)?),
            DestinationKind::Rabbitmq => Settings::Rabbitmq(typed(config)?),
            DestinationKind::Nats => Settings::Nats(typed(config)?),
            DestinationKind::HttpAction => Settings::HttpAction(typed(config)?),
        })
    }

    /// The settings as stored: the public part and the sealed secrets, put back together.
    pub fn from_stored(
        kind: DestinationKind,
        public: Option<&Value>,
        secrets: &BTreeMap<String, String>,
    ) -> Result<Settings> {
        let mut map = match public {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        for (k, v) in secrets {
            map.insert(k.clone(), Value::String(v.clone()));
        }
        Settings::parse(kind, Value::Object(map))
    }

    pub fn kind(&self) -> DestinationKind {
        match self {
            Settings::Http => DestinationKind::Http,
            Settings::Slack(_) => DestinationKind::Slack,
            Settings::Discord(_) => DestinationKind::Discord,
            Settings::Email(_) => DestinationKind::Email,
            Settings::Rabbitmq(_) => DestinationKind::Rabbitmq,
            Settings::Nats(_) => DestinationKind::Nats,
            Settings::HttpAction(_) => DestinationKind::HttpAction,
        }
    }

    /// The integration the destination uses, if any.
    pub fn integration_id(&self) -> Option<Uuid> {
        match self {
            Settings::Email(c) => Some(c.integration_id),
            Settings::HttpAction(c) => Some(c.integration_id),
            _ => None,
        }
    }

    /// Splits into what is shown (`config` in responses) and the secrets (sealed).
    fn split(&self) -> (Value, BTreeMap<String, String>) {
        let value = match self {
            Settings::Http => Ok(Value::Null),
            Settings::Slack(c) => serde_json::to_value(c),
            Settings::Discord(c) => serde_json::to_value(c),
            Settings::Email(c) => serde_json::to_value(c),
            Settings::Rabbitmq(c) => serde_json::to_value(c),
            Settings::Nats(c) => serde_json::to_value(c),
            Settings::HttpAction(c) => serde_json::to_value(c),
        }
        .unwrap_or(Value::Null);
        let mut public = match value {
            Value::Object(m) => m,
            _ => return (Value::Null, BTreeMap::new()),
        };
        let mut secrets = BTreeMap::new();
        for field in self.kind().secret_fields() {
            if let Some(Value::String(s)) = public.remove(*field) {
                secrets.insert((*field).to_owned(), s);
            }
        }
        (Value::Object(public), secrets)
    }

    /// The checks no type states: templates, addresses, one-of fields.
    fn check(&self) -> Result<()> {
        let sample = render::sample_context(None, None);
        match self {
            Settings::Http => {}
            Settings::Slack(c) => {
                match (&c.webhook_url, &c.bot_token, &c.channel) {
                    (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                    _ => {
                        return Err(Error::invalid(
                            "parameter_invalid",
                            "config",
                            "A Slack destination takes `webhook_url`, or `bot_token` and \
                             `channel`.",
                        ));
                    }
                }
                if let Some(t) = &c.bot_token {
                    check_text("bot_token", t, 512)?;
                }
                if let Some(ch) = &c.channel {
                    check_text("channel", ch, 80)?;
                }
                check_template("text", &c.text)?;
                if let Some(b) = &c.blocks {
                    check_json_template("blocks", b, &sample)?;
                }
            }
            Settings::Discord(c) => {
                if c.content.is_none() && c.embeds.is_none() {
                    return Err(Error::invalid(
                        "parameter_invalid",
                        "config.content",
                        "A Discord destination needs `content`, `embeds` or both.",
                    ));
                }
                if let Some(t) = &c.content {
                    check_template("content", t)?;
                }
                if let Some(e) = &c.embeds {
                    check_json_template("embeds", e, &sample)?;
                }
                if let Some(u) = &c.username {
                    check_text("username", u, 80)?;
                }
            }
            Settings::Email(c) => {
                check_address("from", &c.from)?;
                if c.to.is_empty() || c.to.len() > 50 {
                    return Err(Error::invalid(
                        "parameter_invalid",
                        "config.to",
                        "`config.to` lists 1 to 50 recipients.",
                    ));
                }
                for (i, a) in c.to.iter().enumerate() {
                    check_address(&format!("to[{i}]"), a)?;
                }
                if let Some(r) = &c.reply_to {
                    check_address("reply_to", r)?;
                }
                check_template("subject", &c.subject)?;
                if c.text.is_none() && c.html.is_none() {
                    return Err(Error::invalid(
                        "parameter_invalid",
                        "config.text",
                        "An email destination needs a `text` or an `html` template.",
                    ));
                }
                for (f, t) in [("text", &c.text), ("html", &c.html)] {
                    if let Some(t) = t {
                        check_template(f, t)?;
                    }
                }
                if c.templates.len() > 100 {
                    return Err(Error::invalid(
                        "parameter_invalid",
                        "config.templates",
                        "`config.templates` names at most 100 event types.",
                    ));
                }
                for (ty, t) in &c.templates {
                    crate::events::types::EventTypeName::new(ty.clone()).map_err(|_| {
                        Error::invalid(
                            "parameter_invalid",
                            format!("config.templates.{ty}"),
                            format!("`{ty}` is not an event type name."),
                        )
                    })?;
                    for (f, s) in [
                        ("subject", &t.subject),
                        ("text", &t.text),
                        ("html", &t.html),
                    ] {
                        if let Some(s) = s {
                            check_template(&format!("templates.{ty}.{f}"), s)?;
                        }
                    }
                }
            }
            Settings::Rabbitmq(c) => {
                if c.exchange.len() > 255 || c.exchange.chars().any(char::is_control) {
                    return Err(Error::invalid(
                        "parameter_invalid",
                        "config.exchange",
                        "`config.exchange` is at most 255 printable characters.",
                    ));
                }
                check_template("routing_key", &c.routing_key)?;
            }
            Settings::Nats(c) => check_template("subject", &c.subject)?,
            Settings::HttpAction(c) => {
                if !c.path.starts_with('/') || c.path.starts_with("//") {
                    return Err(Error::invalid(
                        "parameter_invalid",
                        "config.path",
                        "`config.path` starts with one `/`: it goes after the integration's \
                         base URL.",
                    ));
                }
                check_template("path", &c.path)?;
                if c.headers.len() > 20 {
                    return Err(Error::invalid(
                        "parameter_invalid",
                        "config.headers",
                        "`config.headers` names at most 20 headers.",
                    ));
                }
                for (name, value) in &c.headers {
                    let lower = name.to_ascii_lowercase();
                    let token = !name.is_empty()
                        && name.len() <= 100
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                    if !token || crate::net::reserved_header(&lower) || lower == "idempotency-key" {
                        return Err(Error::invalid(
                            "parameter_invalid",
                            format!("config.headers.{name}"),
                            format!("`{name}` is not a header name an action may set."),
                        ));
                    }
                    check_template(&format!("headers.{name}"), value)?;
                }
                match (&c.body, &c.form) {
                    (Some(_), Some(_)) => {
                        return Err(Error::invalid(
                            "parameter_invalid",
                            "config.form",
                            "An action sends a JSON `body` or a `form`, not both.",
                        ));
                    }
                    (Some(b), None) => check_json_template("body", b, &sample)?,
                    (None, Some(f)) => {
                        if f.len() > 100 {
                            return Err(Error::invalid(
                                "parameter_invalid",
                                "config.form",
                                "`config.form` has at most 100 fields.",
                            ));
                        }
                        for (name, t) in f {
                            check_text(&format!("form.{name}"), name, 200)?;
                            check_template(&format!("form.{name}"), t)?;
                        }
                    }
                    (None, None) => {}
                }
            }
        }
        Ok(())
    }
}
