//! What partners send to create and change endpoints: typed values whose schema is exactly
//! what the server accepts (see `crate::input`), and the checks that need more than one value
//! or the deployment's settings (schedules against the payload retention, URLs against the
//! egress rules).

use std::{collections::BTreeMap, time::Duration};

use poem_openapi::types::MaybeUndefined;
use serde::Deserialize;

use super::credentials::AuthInput;
use crate::destinations::DestinationKind;
use crate::events::types::EventTypePattern;
use crate::{
    error::{Error, Result},
    input::{DurationText, Int, PrintableText, Text},
};

/// Custom headers: name → value (at most 20; values printable ASCII).
pub type Headers = BTreeMap<String, PrintableText>;

/// A destination's settings, checked against its kind (`crate::destinations`).
pub type DestinationConfig = BTreeMap<String, serde_json::Value>;

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// For `kind: http` (the default): the HTTPS (or HTTP) URL that receives POSTed events, at
    /// most 2048 characters; it must not point at a non-public address. Other kinds take
    /// their address in `config`.
    #[oai(nullable)]
    pub url: Option<Text<1, 2048>>,
    /// How deliveries leave: `http` (signed webhooks, default), `slack`, `discord`, `email`,
    /// `rabbitmq`, `nats` or `http_action`. Cannot be changed later.
    #[oai(nullable)]
    pub kind: Option<DestinationKind>,
    /// For kinds other than `http`: the destination's settings, as `GET /v1/destination-kinds`
    /// describes them (at most 64 KiB). Its secret fields are stored encrypted and never
    /// shown again.
    #[oai(nullable, validator(max_properties = 50))]
    pub config: Option<DestinationConfig>,
    /// 1 to 100 event types to deliver; `order.*` style wildcards allowed (exact names must be
    /// in the catalog). Default: `["*"]`.
    #[oai(nullable, validator(min_items = 1, max_items = 100))]
    pub event_types: Option<Vec<EventTypePattern>>,
    /// Free text for operators, at most 1000 characters.
    #[oai(nullable)]
    pub description: Option<Text<0, 1000>>,
    /// Delays before attempts 2, 3, … (`"5s"`, `"30m"`, `"2h"`; at most 20, each ≤ 7 days, all
    /// together within the payload retention); `[]` means a single attempt. Default: the
    /// deployment's schedule (Standard Webhooks: 5s, 5m, 30m, 2h, 5h, 10h, 14h, 20h, 24h),
    /// with ±20 % jitter.
    #[oai(nullable, validator(max_items = 20))]
    pub retry_schedule: Option<Vec<DurationText>>,
    /// Total request timeout, 1s to 30s (e.g. `"10s"`). Default: the deployment's (15 s).
    #[oai(nullable)]
    pub timeout: Option<DurationText>,
    /// Extra headers sent with every request (at most 20; names are HTTP tokens Switchyard
    /// does not set itself). Values are stored encrypted, never shown again and redacted in
    /// attempt logs.
    #[oai(nullable, validator(max_properties = 20))]
    pub headers: Option<Headers>,
    /// Basic or bearer authentication sent with every request; stored encrypted, never shown.
    #[oai(nullable)]
    pub auth: Option<AuthInput>,
    /// Also sign with ed25519 (`v1a` tokens); the `whpk_` public key is on the endpoint.
    #[oai(nullable)]
    pub ed25519_signing: Option<bool>,
    /// Most deliveries in flight to this endpoint at once, across all workers (1–1000).
    /// Default: the deployment's (16).
    #[oai(nullable)]
    pub max_concurrency: Option<Int<1, 1000>>,
    /// Most deliveries started per second, across all workers (1–100000). Default: no limit.
    #[oai(nullable)]
    pub rate_limit: Option<Int<1, 100_000>>,
    /// An operational endpoint receives `endpoint.disabled` and `endpoint.recovered` events
    /// about the tenant's other endpoints, and no order events.
    #[oai(nullable)]
    pub operational: Option<bool>,
    /// Strict FIFO: one delivery at a time, in message order; a failing message holds back
    /// the ones after it (on this endpoint only) until it succeeds or finally fails.
    #[oai(nullable)]
    pub fifo: Option<bool>,
}

/// Whether an endpoint receives deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "lowercase")]
#[oai(rename_all = "lowercase")]
pub enum EndpointStatus {
    Enabled,
    Disabled,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Enabled => "enabled",
            EndpointStatus::Disabled => "disabled",
        }
    }
}

/// A partial update: absent fields stay; `null` resets `description`, `retry_schedule`,
/// `timeout`, `headers`, `auth`, `max_concurrency` and `rate_limit` to their defaults.
#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct UpdateEndpoint {
    /// Only for `http` endpoints.
    #[oai(nullable)]
    pub url: Option<Text<1, 2048>>,
    /// Only for kinds other than `http`: replaces the whole configuration, its secrets
    /// included.
    #[oai(nullable, validator(max_properties = 50))]
    pub config: Option<DestinationConfig>,
    #[oai(nullable, validator(min_items = 1, max_items = 100))]
    pub event_types: Option<Vec<EventTypePattern>>,
    #[serde(default)]
    pub description: MaybeUndefined<Text<0, 1000>>,
    #[serde(default)]
    #[oai(validator(max_items = 20))]
    pub retry_schedule: MaybeUndefined<Vec<DurationText>>,
    #[serde(default)]
    pub timeout: MaybeUndefined<DurationText>,
    /// `enabled` or `disabled`. Enabling clears `disabled_reason`; disabling cancels what
    /// waits for the endpoint.
    #[oai(nullable)]
    pub status: Option<EndpointStatus>,
    /// Replaces all custom headers; `null` removes them.
    #[serde(default)]
    #[oai(validator(max_properties = 20))]
    pub headers: MaybeUndefined<Headers>,
    /// Replaces the auth; `null` removes it.
    #[serde(default)]
    pub auth: MaybeUndefined<AuthInput>,
    /// `true` creates an ed25519 key if there is none; `false` stops `v1a` signing.
    #[oai(nullable)]
    pub ed25519_signing: Option<bool>,
    #[serde(default)]
    pub max_concurrency: MaybeUndefined<Int<1, 1000>>,
    #[serde(default)]
    pub rate_limit: MaybeUndefined<Int<1, 100_000>>,
    #[oai(nullable)]
    pub operational: Option<bool>,
    #[oai(nullable)]
    pub fifo: Option<bool>,
    /// With `status: "enabled"` on a disabled endpoint: also deliver what it missed while
    /// disabled (messages created since, and deliveries cancelled since; at most 10,000).
    #[oai(nullable)]
    pub replay_missed: Option<bool>,
}

/// Longest delay allowed in a retry schedule.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 86_400);

/// `1500ms`, `5s`, `30m`, `2h`, `1d`: the largest unit that divides the duration.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses a retry schedule; its whole span must end within `retention` (message payloads are
/// removed after that, so a later attempt would have nothing to send).
pub(super) fn parse_schedule(raw: &[DurationText], retention: Duration) -> Result<Vec<i32>> {
    if raw.len() > 20 {
        return Err(Error::invalid(
            "parameter_invalid",
            "retry_schedule",
            "`retry_schedule` may list at most 20 delays.",
        ));
    }
    let delays = parse_delays(raw)?;
    let total: u64 = delays.iter().map(|&ms| ms as u64).sum();
    if Duration::from_millis(total) > retention {
        return Err(Error::invalid(
            "parameter_invalid",
            "retry_schedule",
            format!(
                "`retry_schedule` spans {} in all, longer than the payload retention ({}): the \
                 last attempts would have nothing to send.",
                format_duration(Duration::from_millis(total)),
                format_duration(retention)
            ),
        ));
    }
    Ok(delays)
}

fn parse_delays(raw: &[DurationText]) -> Result<Vec<i32>> {
    raw.iter()
        .enumerate()
        .map(|(i, s)| {
            s.duration()
                .ok()
                .filter(|d| *d <= MAX_RETRY_DELAY)
                .map(|d| d.as_millis() as i32)
                .ok_or_else(|| {
                    Error::invalid(
                        "parameter_invalid",
                        format!("retry_schedule[{i}]"),
                        format!(
                            "`{}` is not a delay between 0s and 7d (like `500ms`, `5s`, `30m`, `2h`).",
                            s.as_str()
                        ),
                    )
                })
        })
        .collect()
}

pub(super) fn parse_timeout(raw: &DurationText) -> Result<i32> {
    raw.duration()
        .ok()
        .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(30)).contains(d))
        .map(|d| d.as_millis() as i32)
        .ok_or_else(|| {
            Error::invalid(
                "parameter_invalid",
                "timeout",
                format!(
                    "`timeout` must be between 1s and 30s, got `{}`.",
                    raw.as_str()
                ),
            )
        })
}

/// A PATCH field as `(present, value)`: absent → `(false, None)`, `null` → `(true, None)`,
/// a value → `(true, Some(check(value)?))`.
pub(super) fn patch<T, U>(
    field: MaybeUndefined<T>,
    check: impl FnOnce(T) -> Result<U>,
) -> Result<(bool, Option<U>)> {
    Ok(match field {
        MaybeUndefined::Undefined => (false, None),
        MaybeUndefined::Null => (true, None),
        MaybeUndefined::Value(v) => (true, Some(check(v)?)),
    })
}

/// What bounds an endpoint's settings beyond their own ranges.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Message payloads are removed after this long: no retry schedule may outlast it.
    pub payload_retention: Duration,
}
