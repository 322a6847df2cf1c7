//! What a destination sends for one delivery, rendered from its settings and the event: the
//! transports send exactly this, and `POST /v1/webhook-endpoints/{id}/preview` shows it.
//! Pure: no I/O, no secrets in the output.

use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Settings,
    config::EmailTemplates,
    template::{self, Escape, RenderError},
};

/// The delivery being rendered.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    /// The webhook's JSON body: `{type, timestamp, data}`.
    pub payload: &'a str,
    /// The message's `webhook-id` (`msg_…`): stable across retries, the dedup id everywhere.
    pub webhook_id: &'a str,
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub description: Option<&'a str>,
}

/// A rendered message, by kind.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rendered {
    Http {
        body: Value,
    },
    Slack {
        /// `webhook` (incoming webhook) or `chat.postMessage` (bot token).
        method: &'static str,
        body: Value,
    },
    Discord {
        body: Value,
    },
    Email(Email),
    Rabbitmq {
        exchange: String,
        routing_key: String,
        message_id: String,
        /// The AMQP `type` property and `type` header.
        event_type: String,
        body: Value,
    },
    Nats {
        subject: String,
        /// `Nats-Msg-Id`: JetStream drops a second publish with the same id within the
        /// stream's duplicate window.
        msg_id: String,
        jetstream: bool,
        /// The `type` header.
        event_type: String,
        body: Value,
    },
    HttpAction {
        method: &'static str,
        path: String,
        headers: Vec<(String, String)>,
        /// Per delivery, the same on every retry.
        idempotency_key: String,
        body: ActionBody,
    },
}

/// The body of an HTTP action.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "format", content = "value", rename_all = "snake_case")]
pub enum ActionBody {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
}

/// An email, ready for SMTP.
#[derive(Clone, Debug, Serialize)]
pub struct Email {
    pub from: String,
    pub to: Vec<String>,
    pub reply_to: Option<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// `Message-ID`: one per message and endpoint, the same on every retry, so a resent
    /// mail is recognisably the same mail.
    pub message_id: String,
}

/// The event a template sees when there is none: a sample order event (previews, checks).
pub fn sample_context(event_type: Option<&str>, data: Option<Value>) -> Value {
    let payload = json!({
        "type": event_type.unwrap_or("order.created"),
        "timestamp": "2026-01-01T12:00:00.000Z",
        "data": data.unwrap_or_else(|| json!({
            "id": "ord_0192f0c4a1b27c3d8e9f0a1b2c3d4e5f",
            "external_id": "PO-1001",
            "status": "pending",
            "currency": "EUR",
            "total": "125.00",
            "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
            "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": "62.50"}],
        })),
    });
    template::context(&payload.to_string(), "msg_sample", Uuid::nil(), None)
}

/// Renders what `settings` sends for `delivery`.
pub fn render(settings: &Settings, delivery: &Delivery<'_>) -> Result<Rendered, RenderError> {
    let ctx = template::context(
        delivery.payload,
        delivery.webhook_id,
        delivery.endpoint_id,
        delivery.description,
    );
    let body = || serde_json::from_str::<Value>(delivery.payload).unwrap_or(Value::Null);
    let event_type = ctx
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(match settings {
        Settings::Http => Rendered::Http { body: body() },
        Settings::Slack(c) => {
            let mut msg = json!({ "text": template::render("text", &c.text, Escape::None, &ctx)? });
            if let Some(b) = &c.blocks {
                msg["blocks"] = template::render_json("blocks", b, &ctx)?;
            }
            let method = if let Some(channel) = &c.channel {
                msg["channel"] = json!(channel);
                "chat.postMessage"
            } else {
                "webhook"
            };
            Rendered::Slack { method, body: msg }
        }
        Settings::Discord(c) => {
            let mut msg = json!({});
            if let Some(t) = &c.content {
                let content = template::render("content", t, Escape::None, &ctx)?;
                if content.chars().count() > 2000 {
                    return Err(RenderError {
                        field: "content".into(),
                        message: "Discord takes at most 2000 characters of content".into(),
                    });
                }
                msg["content"] = json!(content);
            }
            if let Some(e) = &c.embeds {
                msg["embeds"] = template::render_json("embeds", e, &ctx)?;
            }
            if let Some(u) = &c.username {
                msg["username"] = json!(u);
            }
            // Mentions only where the template names them explicitly by id.
            msg["allowed_mentions"] = json!({ "parse": [] });
            Rendered::Discord { body: msg }
        }
        Settings::Email(c) => {
            let own = c.templates.get(&event_type);
            let pick = |f: fn(&EmailTemplates) -> &Option<String>, default: &Option<String>| {
                own.and_then(|t| f(t).clone()).or_else(|| default.clone())
            };
            let subject = pick(|t| &t.subject, &Some(c.subject.clone())).unwrap_or_default();
            let subject = template::render("subject", &subject, Escape::None, &ctx)?;
            // A header is one line.
            let subject: String = subject
                .chars()
                .map(|ch| if ch.is_control() { ' ' } else { ch })
                .take(998)
                .collect();
            let text = pick(|t| &t.text, &c.text)
                .map(|t| template::render("text", &t, Escape::None, &ctx))
                .transpose()?;
            let html = pick(|t| &t.html, &c.html)
                .map(|t| template::render("html", &t, Escape::Html, &ctx))
                .transpose()?;
            let domain = c.from.rsplit_once('@').map_or("switchyard", |(_, d)| d);
            Rendered::Email(Email {
                from: c.from.clone(),
                to: c.to.clone(),
                reply_to: c.reply_to.clone(),
                subject,
                text,
                html,
                message_id: format!(
                    "<{}.{}@{domain}>",
                    delivery.webhook_id,
                    delivery.endpoint_id.simple()
                ),
            })
        }
        Settings::Rabbitmq(c) => Rendered::Rabbitmq {
            exchange: c.exchange.clone(),
            routing_key: one_line(
                "routing_key",
                template::render("routing_key", &c.routing_key, Escape::None, &ctx)?,
                255,
            )?,
            message_id: delivery.webhook_id.to_owned(),
            event_type,
            body: body(),
        },
        Settings::Nats(c) => {
            let subject = template::render("subject", &c.subject, Escape::None, &ctx)?;
            let valid = !subject.is_empty()
                && subject.len() <= 512
                && !subject.starts_with('.')
                && !subject.ends_with('.')
                && !subject.contains("..")
                && !subject
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch == '*' || ch == '>');
            if !valid {
                return Err(RenderError {
                    field: "subject".into(),
                    message: format!("`{subject}` is not a NATS subject to publish to"),
                });
            }
            Rendered::Nats {
                subject,
                msg_id: delivery.webhook_id.to_owned(),
                jetstream: c.jetstream,
                event_type,
                body: body(),
            }
        }
        Settings::HttpAction(c) => {
            let path = one_line(
                "path",
                template::render("path", &c.path, Escape::Path, &ctx)?,
                2048,
            )?;
            // The path goes after the integration's base URL: it must not reach another host.
            if !path.starts_with('/') || path.starts_with("//") {
                return Err(RenderError {
                    field: "path".into(),
                    message: format!("renders to `{path}`, which does not start with one `/`"),
                });
            }
            let mut headers = Vec::new();
            for (name, t) in &c.headers {
                let value = template::render(&format!("headers.{name}"), t, Escape::None, &ctx)?;
                headers.push((name.clone(), one_line(name, value, 4096)?));
            }
            let body = match (&c.body, &c.form) {
                (Some(b), _) => ActionBody::Json(template::render_json("body", b, &ctx)?),
                (None, Some(f)) => ActionBody::Form(
                    f.iter()
                        .map(|(k, t)| {
                            template::render(&format!("form.{k}"), t, Escape::None, &ctx)
                                .map(|v| (k.clone(), v))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                (None, None) => ActionBody::None,
            };
            Rendered::HttpAction {
                method: c.method.as_str(),
                path,
                headers,
                idempotency_key: format!("del_{}", delivery.delivery_id.simple()),
                body,
            }
        }
    })
}

/// A rendered value that must be one non-empty line of at most `max` bytes.
fn one_line(field: &str, value: String, max: usize) -> Result<String, RenderError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(RenderError {
            field: field.to_owned(),
            message: format!("renders to `{value}`, not one line of 1 to {max} bytes"),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::{DestinationKind, Settings};

    fn delivery(payload: &str) -> Delivery<'_> {
        Delivery {
            payload,
            webhook_id: "msg_1",
            delivery_id: Uuid::nil(),
            endpoint_id: Uuid::nil(),
            description: None,
        }
    }

    #[test]
    fn email_picks_the_event_types_templates_and_keeps_one_message_id() {
        let settings = Settings::parse(
            DestinationKind::Email,
            json!({"integration_id": Uuid::nil(), "from": "hub@example.com", "to": ["ops@example.com"],
                   "subject": "{{ type }}", "text": "default",
                   "templates": {"order.cancelled": {"subject": "Cancelled {{ data.id }}\r\nBcc: x"}}}),
        )
        .unwrap();
        let payload = r#"{"type":"order.cancelled","data":{"id":"o1"}}"#;
        let Rendered::Email(e) = render(&settings, &delivery(payload)).unwrap() else {
            panic!()
        };
        assert_eq!(e.subject, "Cancelled o1  Bcc: x", "no header injection");
        assert_eq!(e.text.as_deref(), Some("default"));
        assert_eq!(
            e.message_id,
            format!("<msg_1.{}@example.com>", Uuid::nil().simple())
        );
    }

    #[test]
    fn form_bodies_and_paths_render() {
        let settings = Settings::parse(
            DestinationKind::HttpAction,
            json!({"integration_id": Uuid::nil(), "path": "/v1/customers/{{ data.id }}",
                   "form": {"email": "{{ data.email }}", "metadata[order]": "{{ data.id }}"}}),
        )
        .unwrap();
        let payload = r#"{"type":"order.created","data":{"id":"o1","email":"a@b.c"}}"#;
        let Rendered::HttpAction {
            path,
            body,
            idempotency_key,
            ..
        } = render(&settings, &delivery(payload)).unwrap()
        else {
            panic!()
        };
        assert_eq!(path, "/v1/customers/o1");
        assert_eq!(idempotency_key, format!("del_{}", Uuid::nil().simple()));
        let ActionBody::Form(f) = body else { panic!() };
        assert_eq!(
            f,
            vec![
                ("email".into(), "a@b.c".into()),
                ("metadata[order]".into(), "o1".into())
            ]
        );
    }
}
