//! `GET /v1/destination-kinds`: every kind with the JSON Schema of its `config`, so UIs and
//! clients can build forms. The schemas describe the types in [`super::config`]; a test
//! checks each one accepts the README's example and rejects unknown fields.

use serde::Serialize;
use serde_json::{Value, json};

use super::DestinationKind;

/// One destination kind.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct DestinationKindInfo {
    pub kind: DestinationKind,
    pub name: String,
    pub description: String,
    /// `config` fields that are secrets: stored encrypted, never returned, redacted in logs.
    pub secret_fields: Vec<String>,
    /// Fields that are templates (MiniJinja over `{id, type, timestamp, data, endpoint}`).
    pub template_fields: Vec<String>,
    /// JSON Schema (2020-12) of `config`; `null` for `http`, which takes `url` instead.
    pub config_schema: Value,
}

fn string(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "description": description})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    })
}

/// `schema`, requiring at least one of `fields`.
fn any_of(mut schema: Value, fields: &[&str]) -> Value {
    let options: Vec<Value> = fields.iter().map(|f| json!({"required": [f]})).collect();
    schema["anyOf"] = Value::Array(options);
    schema
}

/// Every kind, in a stable order.
pub fn all() -> Vec<DestinationKindInfo> {
    DestinationKind::ALL.iter().map(|k| info(*k)).collect()
}

fn info(kind: DestinationKind) -> DestinationKindInfo {
    let template = "A template (MiniJinja).";
    let (name, description, templates, schema): (&str, &str, &[&str], Value) = match kind {
        DestinationKind::Http => (
            "Webhook",
            "Signed Standard Webhooks POSTed to `url`.",
            &[],
            Value::Null,
        ),
        DestinationKind::Slack => (
            "Slack",
            "A message to a Slack channel, by incoming webhook or by bot token \
             (`chat.postMessage`). Honours 429 with Retry-After.",
            &["text", "blocks"],
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["text"],
                "oneOf": [
                    {"required": ["webhook_url"], "not": {"anyOf": [{"required": ["bot_token"]}, {"required": ["channel"]}]}},
                    {"required": ["bot_token", "channel"], "not": {"required": ["webhook_url"]}},
                ],
                "properties": {
                    "webhook_url": {"type": "string", "format": "uri", "description": "Secret. An incoming-webhook URL."},
                    "bot_token": {"type": "string", "minLength": 1, "maxLength": 512, "description": "Secret. A bot token (`xoxb-…`) with `chat:write`."},
                    "channel": {"type": "string", "minLength": 1, "maxLength": 80, "description": "With `bot_token`: channel id or `#name`."},
                    "text": string(template),
                    "blocks": string("A template rendering a JSON array of Block Kit blocks."),
                },
            }),
        ),
        DestinationKind::Discord => (
            "Discord",
            "A message through a Discord webhook (`?wait=true`). Honours 429 `retry_after`.",
            &["content", "embeds"],
            any_of(
                object(
                    &["webhook_url"],
                    json!({
                        "webhook_url": {"type": "string", "format": "uri", "description": "Secret. `https://discord.com/api/webhooks/{id}/{token}`."},
                        "content": string("A template; at most 2000 characters rendered."),
                        "embeds": string("A template rendering a JSON array of embeds."),
                        "username": {"type": "string", "minLength": 1, "maxLength": 80},
                    }),
                ),
                &["content", "embeds"],
            ),
        ),
        DestinationKind::Email => (
            "Email",
            "An email over SMTP through an integration with `provider: smtp` (its credential \
             `url`: `smtp://user:pass@host:587` with STARTTLS, `smtps://…` with implicit TLS). \
             A 5xx answer fails the delivery, a 4xx retries it.",
            &[
                "subject",
                "text",
                "html",
                "templates.*.subject",
                "templates.*.text",
                "templates.*.html",
            ],
            any_of(
                object(
                    &["integration_id", "from", "to", "subject"],
                    json!({
                        "integration_id": {"type": "string", "format": "uuid"},
                        "from": {"type": "string", "format": "email"},
                        "to": {"type": "array", "minItems": 1, "maxItems": 50, "items": {"type": "string", "format": "email"}},
                        "reply_to": {"type": "string", "format": "email"},
                        "subject": string(template),
                        "text": string(template),
                        "html": string("A template; values are HTML-escaped."),
                        "templates": {
                            "type": "object",
                            "description": "Per event type: templates replacing the defaults.",
                            "maxProperties": 100,
                            "additionalProperties": object(&[], json!({
                                "subject": string(template), "text": string(template), "html": string(template)})),
                        },
                    }),
                ),
                &["text", "html"],
            ),
        ),
        DestinationKind::Rabbitmq => (
            "RabbitMQ",
            "A persistent AMQP 0.9.1 message with publisher confirms; `message_id` is the \
             `webhook-id`, the body the webhook's JSON.",
            &["routing_key"],
            object(
                &["url", "routing_key"],
                json!({
                    "url": {"type": "string", "description": "Secret. `amqp://user:pass@host:5672/vhost` or `amqps://…`."},
                    "exchange": {"type": "string", "maxLength": 255, "default": "", "description": "`\"\"` is the default exchange."},
                    "routing_key": string(template),
                }),
            ),
        ),
        DestinationKind::Nats => (
            "NATS",
            "A JetStream publish with `Nats-Msg-Id` = `webhook-id` (deduplicated by the \
             server), acknowledged by the stream; or plain core NATS.",
            &["subject"],
            object(
                &["url", "subject"],
                json!({
                    "url": {"type": "string", "description": "Secret. `nats://user:pass@host:4222` or `tls://…`."},
                    "subject": string(template),
                    "jetstream": {"type": "boolean", "default": true},
                }),
            ),
        ),
        DestinationKind::HttpAction => (
            "HTTP action",
            "A templated API call to an HTTP integration (its `base_url` and credentials), \
             with an `Idempotency-Key` per delivery: e.g. Stripe's form-encoded API.",
            &["path", "headers.*", "body", "form.*"],
            object(
                &["integration_id", "path"],
                json!({
                    "integration_id": {"type": "string", "format": "uuid"},
                    "method": {"enum": ["POST", "PUT", "PATCH", "DELETE"], "default": "POST"},
                    "path": string("A template of the path after the integration's base URL."),
                    "headers": {"type": "object", "maxProperties": 20, "additionalProperties": {"type": "string"}},
                    "body": string("A template rendering the JSON body; values are JSON-encoded."),
                    "form": {"type": "object", "maxProperties": 100, "additionalProperties": {"type": "string"},
                             "description": "Form fields (name → template), sent form-encoded."},
                }),
            ),
        ),
    };
    DestinationKindInfo {
        kind,
        name: name.into(),
        description: description.into(),
        secret_fields: kind.secret_fields().iter().map(|s| (*s).into()).collect(),
        template_fields: templates.iter().map(|s| (*s).into()).collect(),
        config_schema: schema,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::destinations::Settings;

    /// A valid config of each kind (as the README shows them).
    fn examples() -> Vec<(DestinationKind, Value)> {
        let id = uuid::Uuid::nil();
        vec![
            (
                DestinationKind::Slack,
                json!({"webhook_url": "https://hooks.slack.com/services/T/B/x", "text": "{{ type }}"}),
            ),
            (
                DestinationKind::Slack,
                json!({"bot_token": "xoxb-1", "channel": "#orders", "text": "x"}),
            ),
            (
                DestinationKind::Discord,
                json!({"webhook_url": "https://discord.com/api/webhooks/1/t", "embeds": "[]"}),
            ),
            (
                DestinationKind::Email,
                json!({"integration_id": id, "from": "a@example.com", "to": ["b@example.com"], "subject": "s", "html": "<p>x</p>",
                                            "templates": {"order.cancelled": {"subject": "c"}}}),
            ),
            (
                DestinationKind::Rabbitmq,
                json!({"url": "amqp://u:p@rabbit:5672/%2f", "exchange": "orders", "routing_key": "o.{{ type }}"}),
            ),
            (
                DestinationKind::Nats,
                json!({"url": "nats://nats:4222", "subject": "orders.{{ type }}", "jetstream": false}),
            ),
            (
                DestinationKind::HttpAction,
                json!({"integration_id": id, "method": "POST", "path": "/v1/customers",
                                                 "form": {"email": "{{ data.customer.email }}"}}),
            ),
        ]
    }

    #[test]
    fn each_schema_takes_what_the_server_takes_and_refuses_unknown_fields() {
        let schemas: std::collections::HashMap<DestinationKind, Value> = all()
            .into_iter()
            .map(|k| (k.kind, k.config_schema))
            .collect();
        assert!(schemas[&DestinationKind::Http].is_null());
        for (kind, config) in examples() {
            let settings = Settings::parse(kind, config.clone()).expect("the server takes it");
            settings.check().expect("and its checks pass");
            let schema = jsonschema::validator_for(&schemas[&kind]).expect("a valid schema");
            assert!(schema.is_valid(&config), "{kind:?}: {config}");
            let mut unknown = config.clone();
            unknown["colour"] = json!("red");
            assert!(
                !schema.is_valid(&unknown),
                "{kind:?} refuses unknown fields"
            );
            assert!(Settings::parse(kind, unknown).is_err());
        }
        // What the checks refuse beyond types, the schemas refuse too.
        let slack = jsonschema::validator_for(&schemas[&DestinationKind::Slack]).unwrap();
        assert!(
            !slack.is_valid(&json!({"webhook_url": "https://h/x", "channel": "#c", "text": "x"}))
        );
        let discord = jsonschema::validator_for(&schemas[&DestinationKind::Discord]).unwrap();
        assert!(!discord.is_valid(&json!({"webhook_url": "https://h/x"})));
        let email = jsonschema::validator_for(&schemas[&DestinationKind::Email]).unwrap();
        assert!(!email.is_valid(&json!({"integration_id": uuid::Uuid::nil(), "from": "a@b.c", "to": ["d@e.f"], "subject": "s"})));
    }
}
