//! Each destination kind's `config`: the typed settings, which of them are secrets (sealed,
//! write-only, never shown again), and the checks made when an endpoint is saved. The
//! transports (crate `switchyard-destinations`) read the same types back at send time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::template;
use crate::{
    error::{Error, Result},
    net::{self, Egress},
};

/// Settings of a Slack destination: an incoming-webhook URL, or a bot token and a channel
/// (`chat.postMessage`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Secret. `https://hooks.slack.com/services/…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Secret. A bot token (`xoxb-…`) with `chat:write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_token: Option<String>,
    /// With `bot_token`: the channel id or `#name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Template of the message text (also the notification text when `blocks` is set).
    pub text: String,
    /// Template rendering a JSON array of Block Kit blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<String>,
}

/// Settings of a Discord destination (an execute-webhook URL).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// Secret. `https://discord.com/api/webhooks/{id}/{token}`.
    pub webhook_url: String,
    /// Template of the message text (at most 2000 characters once rendered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Template rendering a JSON array of embeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeds: Option<String>,
    /// Overrides the webhook's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// Subject and bodies of an email, as templates.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailTemplates {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// Settings of an email destination: SMTP through an integration (`provider: smtp`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// An integration with `provider: smtp` whose credential `url` is the server
    /// (`smtp://user:pass@host:587`, STARTTLS required; `smtps://…:465`, implicit TLS;
    /// `?tls=none` for a relay on a trusted network).
    pub integration_id: Uuid,
    pub from: String,
    /// 1 to 50 recipients.
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Templates of every event type.
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Per event type (exact name): templates that replace the defaults above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub templates: BTreeMap<String, EmailTemplates>,
}

/// Settings of a RabbitMQ destination (AMQP 0.9.1).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqConfig {
    /// Secret. `amqp://user:pass@host:5672/vhost` or `amqps://…`.
    pub url: String,
    /// `""` is the default exchange (the routing key names the queue).
    #[serde(default)]
    pub exchange: String,
    /// Template of the routing key, e.g. `orders.{{ type }}`.
    pub routing_key: String,
}

/// Settings of a NATS destination.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Secret. `nats://user:pass@host:4222` or `tls://…`.
    pub url: String,
    /// Template of the subject, e.g. `switchyard.{{ type }}`.
    pub subject: String,
    /// Publish to JetStream and wait for its ack (default), or plain core NATS
    /// (at-most-once at the server: nothing acknowledges storage).
    #[serde(default = "yes")]
    pub jetstream: bool,
}

fn yes() -> bool {
    true
}

/// HTTP methods an action may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ActionMethod {
    #[default]
    Post,
    Put,
    Patch,
    Delete,
}

impl ActionMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionMethod::Post => "POST",
            ActionMethod::Put => "PUT",
            ActionMethod::Patch => "PATCH",
            ActionMethod::Delete => "DELETE",
        }
    }
}

/// Settings of a templated API call to an HTTP integration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpActionConfig {
    /// The integration called: its `base_url`, and its credentials for authentication
    /// (`bearer_token`, `username` + `password`, or `api_key`).
    pub integration_id: Uuid,
    #[serde(default)]
    pub method: ActionMethod,
    /// Template of the path after the base URL, e.g. `/v1/customers`.
    pub path: String,
    /// Extra headers: name → template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Template rendering the JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Form fields (`application/x-www-form-urlencoded`, as Stripe takes them): name →
    /// template, e.g. `"metadata[order_id]": "{{ data.id }}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<BTreeMap<String, String>>,
}

fn invalid(param: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::invalid("parameter_invalid", param, detail)
}

/// Checks `config.<field>` as a template.
pub(super) fn check_template(field: &str, source: &str) -> Result<()> {
    template::validate(&format!("config.{field}"), source)
}

/// Checks a template whose output must be JSON, by rendering it over a sample event.
pub(super) fn check_json_template(
    field: &str,
    source: &str,
    sample: &serde_json::Value,
) -> Result<()> {
    check_template(field, source)?;
    template::render_json(field, source, sample)
        .map(|_| ())
        .map_err(|e| {
            template::unprocessable(
                "template_invalid",
                &format!("config.{field}"),
                format!(
                    "`config.{field}` does not render JSON for a sample event: {}",
                    e.message
                ),
            )
        })
}

/// A plain (non-template) text: printable, bounded.
pub(super) fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(invalid(
            format!("config.{field}"),
            format!("`config.{field}` must be 1 to {max} printable characters."),
        ));
    }
    Ok(())
}

/// An email address as the email destination can send to: `local@domain` as lettre parses it
/// (the same `email_address` rules; a domain in Unicode as its IDNA form), a domain with a dot
/// or `localhost`, no display name, comments or IP literal. Anything else would be saved and
/// then fail every delivery.
pub(super) fn check_address(field: &str, value: &str) -> Result<()> {
    use email_address::EmailAddress;
    let ok = value.len() <= 254
        && value.rsplit_once('@').is_some_and(|(l, d)| {
            let ascii = match url::Host::parse(d) {
                Ok(url::Host::Domain(a)) if !d.is_ascii() => a,
                _ => d.to_owned(),
            };
            EmailAddress::is_valid_local_part(l)
                && EmailAddress::is_valid_domain(&ascii)
                && (ascii.contains('.') || ascii == "localhost")
                && !value
                    .chars()
                    .any(|c| c.is_whitespace() || "<>()[]\\,;:\"".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("config.{field}"),
            format!("`config.{field}` is not an email address."),
        ))
    }
}

/// Vets an HTTP(S) URL held in `config.<field>` against the egress rules.
pub(super) async fn vet_http(field: &str, raw: &str, egress: &Egress) -> Result<url::Url> {
    net::vet_url(raw, egress, &format!("config.{field}")).await
}

/// A broker URL's port when it names none, by scheme: AMQP over TLS listens on 5671, plain
/// AMQP on 5672, NATS on 4222 with or without TLS.
pub fn broker_default_port(scheme: &str) -> u16 {
    match scheme {
        "amqps" => 5671,
        "amqp" => 5672,
        _ => 4222,
    }
}

/// Vets a broker URL: one of `schemes`, a host (no sockets), and every address the host
/// resolves to permitted by the egress rules. Credentials may be in it (it is sealed).
pub(super) async fn vet_broker(
    field: &str,
    raw: &str,
    schemes: &[&str],
    egress: &Egress,
) -> Result<url::Url> {
    let param = format!("config.{field}");
    let url = url::Url::parse(raw.trim())
        .map_err(|e| invalid(&param, format!("`{param}` is not a valid URL: {e}.")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(invalid(
            &param,
            format!("`{param}` must start with {}://.", schemes.join(":// or ")),
        ));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(invalid(&param, format!("`{param}` has no host.")));
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port().unwrap_or(broker_default_port(url.scheme()));
    net::vet_host(&host, port, egress, &param).await?;
    Ok(url)
}

/// The address shown for a URL holding secrets: scheme, host and port only.
pub(super) fn display(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}
