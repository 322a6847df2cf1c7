//! Inbound webhooks: what partners' systems send to an integration's inbound URL
//! (`/inbound/in_<token>`). The settings live on the integration ([`InboundInput`] in, the
//! `inbound` field out); requests are verified ([`verify`]), stored raw before the `2xx` and
//! deduplicated ([`receive`]), and processed by the `inbound_events` job ([`events`]).

pub mod dashboard;
pub mod events;
pub mod receive;
pub mod verify;

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    crypto::random_base62,
    error::{Error, Result},
    events::{catalog, types::EventTypeName},
    input::{Int, Text, pattern_string},
    integrations::{input::SecretValue, vault::CredentialInfo},
    orders::{feed::OrderMapping, input::ProviderSlug},
    tenants::Scope,
};
pub use verify::{Algorithm, Encoding, Rules, Scheme};

/// Credential names of the inbound secrets (`inbound/0` is the newest); users' own names
/// cannot contain `/`.
pub const SECRET_PREFIX: &str = "inbound/";
/// Most secrets verifying at once (during a rotation).
const MAX_SECRETS: usize = 5;

pattern_string!(
    /// An HTTP header name.
    HeaderName,
    "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$",
    "an HTTP header name"
);

/// What becomes of a verified request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum ActionType {
    /// Kept, nothing else.
    Store,
    /// Re-emitted as a Switchyard event of `event_type` (its data: the JSON body).
    EmitEvent,
    /// A delivery platform's order webhook: creates or updates the order of `provider` with
    /// the body's external id, through `mapping`.
    OrderFeed,
    /// An ERP's "data changed" webhook: starts a run of the sync configuration
    /// `configuration_id` (or, if one is going, one more run after it).
    SyncRun,
}

#[derive(Clone, Debug, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct Action {
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub kind: ActionType,
    /// `emit_event`: a type of your catalog.
    #[oai(nullable)]
    pub event_type: Option<EventTypeName>,
    /// `order_feed`: the orders' provider (`uber_eats`).
    #[oai(nullable)]
    #[serde(default)]
    pub provider: Option<ProviderSlug>,
    /// `order_feed`: how the body becomes an order.
    #[oai(nullable)]
    #[serde(default)]
    pub mapping: Option<Box<OrderMapping>>,
    /// `sync_run`: the sync configuration to run.
    #[oai(nullable)]
    #[serde(default)]
    pub configuration_id: Option<Uuid>,
}

/// Inbound settings as requests give them.
#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct InboundInput {
    pub scheme: Scheme,
    /// The signing secret (write-only; stored encrypted). Required unless `scheme` is `none`.
    #[oai(nullable)]
    pub secret: Option<SecretValue>,
    /// Older secrets that still verify during a rotation (at most 4).
    #[oai(nullable, validator(max_items = 4))]
    pub previous_secrets: Option<Vec<SecretValue>>,
    /// How far a signed timestamp may be from now, in seconds (default 300).
    #[oai(nullable)]
    pub tolerance_seconds: Option<Int<1, 86_400>>,
    /// `hmac`: the signature header (default `X-Signature`).
    #[oai(nullable)]
    pub header: Option<HeaderName>,
    /// `hmac`: `sha256` (default) or `sha512`.
    #[oai(nullable)]
    pub algorithm: Option<Algorithm>,
    /// `hmac`: `hex` (default) or `base64`.
    #[oai(nullable)]
    pub encoding: Option<Encoding>,
    /// `hmac`: a timestamp header; the signed content is then `{timestamp}.{body}`.
    #[oai(nullable)]
    pub timestamp_header: Option<HeaderName>,
    /// A JSON pointer (`/data/id`) to the sender's event id, instead of the scheme's own.
    #[oai(nullable)]
    pub dedupe: Option<Text<1, 200>>,
    pub action: Action,
}

/// Inbound settings as stored on the integration (`integrations.inbound`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stored {
    pub rules: Rules,
    pub action: Action,
}

/// Inbound settings as responses show them.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct InboundView {
    pub scheme: Scheme,
    pub tolerance_seconds: u32,
    #[oai(nullable)]
    pub header: Option<String>,
    #[oai(nullable)]
    pub algorithm: Option<Algorithm>,
    #[oai(nullable)]
    pub encoding: Option<Encoding>,
    #[oai(nullable)]
    pub timestamp_header: Option<String>,
    #[oai(nullable)]
    pub dedupe: Option<String>,
    pub action: Action,
    /// The secrets verifying requests, newest first (fingerprints, never values).
    pub secrets: Vec<CredentialInfo>,
}

impl InboundView {
    pub fn new(stored: Stored, secrets: Vec<CredentialInfo>) -> Self {
        let r = stored.rules;
        InboundView {
            scheme: r.scheme,
            tolerance_seconds: r.tolerance_seconds,
            header: r.header,
            algorithm: r.algorithm,
            encoding: r.encoding,
            timestamp_header: r.timestamp_header,
            dedupe: r.dedupe,
            action: stored.action,
            secrets,
        }
    }
}

/// Checks `input` (on the caller's transaction, for the catalog) and returns what to store
/// and the secrets to seal, newest first.
pub async fn check(
    conn: &mut PgConnection,
    scope: Scope,
    input: InboundInput,
) -> Result<(Stored, Vec<String>)> {
    let invalid = |param: &str, detail: &str| Error::invalid("parameter_invalid", param, detail);
    let mut secrets: Vec<String> = input.secret.into_iter().map(Text::into_string).collect();
    let previous = input.previous_secrets.unwrap_or_default();
    if !previous.is_empty() && secrets.is_empty() {
        return Err(invalid(
            "inbound.secret",
            "`inbound.previous_secrets` needs `inbound.secret`.",
        ));
    }
    secrets.extend(previous.into_iter().map(Text::into_string));
    secrets.truncate(MAX_SECRETS);
    match (input.scheme, secrets.is_empty()) {
        (Scheme::None, false) => {
            return Err(invalid(
                "inbound.secret",
                "Scheme `none` verifies nothing: it takes no secret.",
            ));
        }
        (s, true) if s != Scheme::None => {
            return Err(invalid(
                "inbound.secret",
                "This scheme needs `inbound.secret`.",
            ));
        }
        _ => {}
    }
    if input.scheme == Scheme::StandardWebhooks
        && let Some(i) = secrets.iter().position(|s| !valid_whsec(s))
    {
        let param = if i == 0 {
            "inbound.secret".to_owned()
        } else {
            format!("inbound.previous_secrets[{}]", i - 1)
        };
        return Err(Error::invalid(
            "parameter_invalid",
            param,
            "A Standard Webhooks secret is `whsec_` and base64 of 24 to 64 bytes.",
        ));
    }
    if let Some(p) = &input.dedupe
        && !p.starts_with('/')
    {
        return Err(invalid(
            "inbound.dedupe",
            "`inbound.dedupe` is a JSON pointer, starting with `/`.",
        ));
    }
    match (input.action.kind, &input.action.event_type) {
        (ActionType::EmitEvent, None) => {
            return Err(invalid(
                "inbound.action.event_type",
                "`emit_event` needs `event_type`.",
            ));
        }
        (ActionType::EmitEvent, Some(t)) => {
            if catalog::is_built_in(t) || catalog::schema_of(&mut *conn, scope, t).await?.is_none()
            {
                return Err(Error::invalid(
                    "unknown_event_type",
                    "inbound.action.event_type",
                    format!(
                        "`{}` is not a type of your catalog (POST /v1/event-types).",
                        t.as_str()
                    ),
                ));
            }
        }
        (ActionType::Store | ActionType::OrderFeed | ActionType::SyncRun, _) => {}
    }
    match (input.action.kind, input.action.configuration_id) {
        (ActionType::SyncRun, None) => {
            return Err(invalid(
                "inbound.action.configuration_id",
                "`sync_run` needs `configuration_id`.",
            ));
        }
        (ActionType::SyncRun, Some(id))
            if !crate::sync::config::exists(&mut *conn, scope, id).await? =>
        {
            return Err(invalid(
                "inbound.action.configuration_id",
                "No such sync configuration.",
            ));
        }
        (ActionType::SyncRun, Some(_)) => {}
        (_, Some(_)) => {
            return Err(invalid(
                "inbound.action.configuration_id",
                "`configuration_id` is for `sync_run` only.",
            ));
        }
        _ => {}
    }
    let a = &input.action;
    if a.kind != ActionType::EmitEvent && a.event_type.is_some() {
        return Err(invalid(
            "inbound.action.event_type",
            "`event_type` is for `emit_event` only.",
        ));
    }
    match (a.kind, &a.provider, &a.mapping) {
        (ActionType::OrderFeed, None, _) => {
            return Err(invalid(
                "inbound.action.provider",
                "`order_feed` needs `provider`.",
            ));
        }
        (ActionType::OrderFeed, _, None) => {
            return Err(invalid(
                "inbound.action.mapping",
                "`order_feed` needs `mapping`.",
            ));
        }
        (ActionType::OrderFeed, _, Some(m)) => m.check("inbound.action.mapping")?,
        (_, Some(_), _) | (_, _, Some(_)) => {
            return Err(invalid(
                "inbound.action",
                "`provider` and `mapping` are for `order_feed` only.",
            ));
        }
        _ => {}
    }
    let lower = |h: Option<HeaderName>| h.map(|h| h.as_str().to_ascii_lowercase());
    let rules = Rules {
        scheme: input.scheme,
        tolerance_seconds: input.tolerance_seconds.map_or(300, |t| t.get() as u32),
        header: lower(input.header),
        algorithm: input.algorithm,
        encoding: input.encoding,
        timestamp_header: lower(input.timestamp_header),
        dedupe: input.dedupe.map(Text::into_string),
    };
    Ok((
        Stored {
            rules,
            action: input.action,
        },
        secrets,
    ))
}

fn valid_whsec(s: &str) -> bool {
    use base64::{Engine, engine::general_purpose::STANDARD};
    s.strip_prefix("whsec_")
        .and_then(|k| STANDARD.decode(k).ok())
        .is_some_and(|k| (24..=64).contains(&k.len()))
}

/// A new inbound URL token: 190 bits, base62.
pub fn new_token() -> String {
    format!("in_{}", random_base62(32))
}

/// The path partners post to.
pub fn path(token: &str) -> String {
    format!("/inbound/{token}")
}

/// Replaces the integration's inbound URL token (the old URL stops working at once).
pub async fn rotate_token(conn: &mut PgConnection, scope: Scope, id: Uuid) -> Result<()> {
    let n = sqlx::query(
        "UPDATE integrations SET inbound_token = $4, updated_at = now()
          WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL
            AND inbound IS NOT NULL",
    )
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .bind(new_token())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::not_found("integration with inbound settings"));
    }
    Ok(())
}
