//! An endpoint's destination (`crate::destinations`) as the endpoint routes change and show it:
//! a new `url` or `config` checked against the endpoint's kind, and
//! `POST /v1/webhook-endpoints/{id}/preview` — what the endpoint would send for an event (a
//! sample order event, or the type and data given), rendered by the same code the transports
//! run, without sending anything. Secrets are not opened: they never appear in a message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{credentials::REDACTED, endpoints, webhook_id};
use crate::{
    destinations::{
        self, DestinationKind, Prepared, Settings,
        render::{self, Delivery},
    },
    error::{Error, Result},
    events::types::EventTypeName,
    net::Egress,
    tenants::Scope,
};

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
    let kind = endpoints::get(pool, scope, endpoint_id).await?.kind;
    destinations::prepare(pool, scope, egress, kind, url, config)
        .await
        .map(Some)
}

/// Body of a preview: the event to render (default: a sample `order.created`).
#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct PreviewInput {
    #[oai(nullable)]
    pub event_type: Option<EventTypeName>,
    /// The event's `data` (at most 64 KiB as JSON); default: a sample order.
    #[oai(nullable, validator(max_properties = 200))]
    pub data: Option<BTreeMap<String, Value>>,
}

/// What the endpoint would send.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct Preview {
    pub kind: DestinationKind,
    /// The message as rendered: for `http` the JSON body; for `slack` and `discord` the JSON
    /// posted; for `email` from, to, subject, text, html and `Message-ID`; for `rabbitmq` the
    /// exchange, routing key, properties and body; for `nats` the subject, `Nats-Msg-Id` and
    /// body; for `http_action` the method, path, headers, `Idempotency-Key` and body.
    pub message: Value,
}

pub async fn preview(
    pool: &PgPool,
    scope: Scope,
    endpoint_id: Uuid,
    input: PreviewInput,
) -> Result<Preview> {
    let endpoint = endpoints::get(pool, scope, endpoint_id).await?;
    if input.data.as_ref().is_some_and(|d| d.len() > 200) {
        return Err(Error::invalid(
            "parameter_invalid",
            "data",
            "`data` has at most 200 fields.",
        ));
    }
    let data = input.data.map(|d| Value::Object(d.into_iter().collect()));
    if data
        .as_ref()
        .is_some_and(|d| d.to_string().len() > 64 * 1024)
    {
        return Err(Error::invalid(
            "parameter_invalid",
            "data",
            "`data` is larger than 64 KiB.",
        ));
    }
    let secrets = endpoint
        .config_secrets
        .into_iter()
        .map(|n| (n, REDACTED.to_owned()))
        .collect();
    let settings = Settings::from_stored(endpoint.kind, endpoint.config.as_ref(), &secrets)?;
    let sample = render::sample_context(input.event_type.as_deref(), data);
    // The sample context holds the webhook body's fields plus `id` and `endpoint`.
    let payload = serde_json::json!({
        "type": sample["type"],
        "timestamp": sample["timestamp"],
        "data": sample["data"],
    })
    .to_string();
    let msg = webhook_id(Uuid::nil());
    let delivery = Delivery {
        payload: &payload,
        webhook_id: &msg,
        delivery_id: Uuid::nil(),
        endpoint_id,
        description: endpoint.description.as_deref(),
    };
    let rendered = render::render(&settings, &delivery).map_err(|e| {
        destinations::template::unprocessable(
            "template_render_failed",
            &format!("config.{}", e.field),
            e.to_string(),
        )
    })?;
    let mut message = serde_json::to_value(&rendered).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut message {
        m.remove("kind");
    }
    Ok(Preview {
        kind: endpoint.kind,
        message,
    })
}
