//! Destinations: how a delivery leaves. Every endpoint has a `kind` — signed HTTP webhooks
//! (`http`, the default), Slack, Discord, email, RabbitMQ, NATS, or a templated call to an
//! HTTP integration — and, beyond `http`, a `config` whose secret fields are sealed. The
//! delivery engine (ledger, retries, caps, breaker, attempts, replay, FIFO) is the same for
//! all; a kind is its settings here ([`config`]), what it renders ([`render`]), and its
//! transport in the `switchyard-destinations` crate (README, "Destinations").

pub mod catalogue;
pub mod config;
pub mod preview;
pub mod render;
pub mod template;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use self::config::{
    DiscordConfig, EmailConfig, HttpActionConfig, NatsConfig, RabbitMqConfig, SlackConfig,
    check_address, check_json_template, check_template, check_text, display, vet_broker, vet_http,
};
use crate::{
    error::{Error, Result},
    net::Egress,
    tenants::Scope,
};

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
                    if !token
                        || [
                            "authorization",
                            "content-type",
                            "content-length",
                            "host",
                            "idempotency-key",
                        ]
                        .contains(&lower.as_str())
                    {
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

/// An endpoint's destination, checked and ready to store: what the `url` column shows, the
/// public config and the secrets to seal.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub kind: DestinationKind,
    /// For `http`, the vetted URL; otherwise where deliveries go, without secrets
    /// (`amqp://host:5672`, `mailto:ops@example.com`).
    pub url: String,
    pub public: Option<Value>,
    pub secrets: BTreeMap<String, String>,
}

/// Checks a destination before it is saved (outside the caller's transaction: it may wait
/// on DNS): `url` is only for `http`, `config` is for every other kind; URLs pass the egress
/// rules; an integration it names is the tenant's, in the same mode, of the right provider.
pub async fn prepare(
    pool: &PgPool,
    scope: Scope,
    egress: &Egress,
    kind: DestinationKind,
    url: Option<&str>,
    config: Option<BTreeMap<String, Value>>,
) -> Result<Prepared> {
    if kind == DestinationKind::Http {
        if config.is_some() {
            return Err(Error::invalid(
                "parameter_invalid",
                "config",
                "`config` is for destinations other than `http`; an `http` endpoint has a `url`.",
            ));
        }
        let Some(url) = url else {
            return Err(Error::invalid(
                "parameter_missing",
                "url",
                "An `http` endpoint needs a `url`.",
            ));
        };
        let vetted = crate::net::vet_url(url, egress, "url").await?;
        return Ok(Prepared {
            kind,
            url: vetted.to_string(),
            public: None,
            secrets: BTreeMap::new(),
        });
    }
    if url.is_some() {
        return Err(Error::invalid(
            "parameter_invalid",
            "url",
            format!(
                "A `{}` endpoint takes its address in `config`, not `url`.",
                kind.as_str()
            ),
        ));
    }
    let Some(config) = config else {
        return Err(Error::invalid(
            "parameter_missing",
            "config",
            format!("A `{}` endpoint needs a `config`.", kind.as_str()),
        ));
    };
    if config.len() > 50 {
        return Err(Error::invalid(
            "parameter_invalid",
            "config",
            "`config` has at most 50 fields.",
        ));
    }
    let config = Value::Object(config.into_iter().collect());
    if config.to_string().len() > MAX_CONFIG_BYTES {
        return Err(Error::invalid(
            "parameter_invalid",
            "config",
            format!("`config` is larger than {MAX_CONFIG_BYTES} bytes."),
        ));
    }
    let settings = Settings::parse(kind, config)?;
    settings.check()?;
    let url = match &settings {
        Settings::Http => unreachable!("handled above"),
        Settings::Slack(c) => match &c.webhook_url {
            Some(u) => display(&vet_http("webhook_url", u, egress).await?) + "/…",
            None => format!("slack:{}", c.channel.as_deref().unwrap_or_default()),
        },
        Settings::Discord(c) => {
            display(&vet_http("webhook_url", &c.webhook_url, egress).await?) + "/…"
        }
        Settings::Email(c) => {
            integration(pool, scope, "email", c.integration_id, &["smtp"]).await?;
            format!("mailto:{}", c.to.join(","))
        }
        Settings::Rabbitmq(c) => {
            display(&vet_broker("url", &c.url, &["amqp", "amqps"], 5672, egress).await?)
        }
        Settings::Nats(c) => {
            display(&vet_broker("url", &c.url, &["nats", "tls"], 4222, egress).await?)
        }
        Settings::HttpAction(c) => {
            let base = integration(pool, scope, "http_action", c.integration_id, &[]).await?;
            let Some(base) = base else {
                return Err(Error::invalid(
                    "parameter_invalid",
                    "config.integration_id",
                    "The integration has no `base_url` to call.",
                ));
            };
            format!(
                "{} {}{}",
                c.method.as_str(),
                base.trim_end_matches('/'),
                c.path
            )
        }
    };
    let (public, secrets) = settings.split();
    Ok(Prepared {
        kind,
        url,
        public: Some(public),
        secrets,
    })
}

/// Checks that the integration exists for the scope and speaks one of `providers` (any HTTP
/// provider when empty); returns its `base_url`.
async fn integration(
    pool: &PgPool,
    scope: Scope,
    kind: &str,
    id: Uuid,
    providers: &[&str],
) -> Result<Option<String>> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT provider, base_url FROM integrations
          WHERE tenant_id = $1 AND mode = $2 AND id = $3 AND deleted_at IS NULL",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let param = "config.integration_id";
    let Some((provider, base_url)) = row else {
        return Err(Error::invalid(
            "parameter_invalid",
            param,
            "No such integration in this mode.",
        ));
    };
    let sql = ["postgres", "mysql", "mssql", "smtp"];
    let fits = if providers.is_empty() {
        !sql.contains(&provider.as_str())
    } else {
        providers.contains(&provider.as_str())
    };
    if !fits {
        return Err(Error::invalid(
            "parameter_invalid",
            param,
            format!("A `{kind}` destination cannot use a `{provider}` integration."),
        ));
    }
    Ok(base_url)
}

/// Checks the new `url` or `config` of an update against the endpoint's kind (kinds do not
/// change); `None` when the update has neither.
pub async fn prepare_change(
    pool: &PgPool,
    scope: Scope,
    egress: &Egress,
    endpoint_id: Uuid,
    url: Option<&str>,
    config: Option<BTreeMap<String, Value>>,
) -> Result<Option<Prepared>> {
    if url.is_none() && config.is_none() {
        return Ok(None);
    }
    let kind: Option<DestinationKind> = sqlx::query_scalar(
        "SELECT kind FROM webhook_endpoints
          WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL",
    )
    .bind(scope.tenant_id)
    .bind(endpoint_id)
    .bind(scope.mode.as_str())
    .fetch_optional(pool)
    .await?;
    let kind = kind.ok_or_else(|| Error::not_found("webhook endpoint"))?;
    prepare(pool, scope, egress, kind, url, config)
        .await
        .map(Some)
}
