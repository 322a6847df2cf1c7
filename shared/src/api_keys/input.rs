//! What partners and operators send to create and change keys: typed values whose schema is
//! exactly what the server accepts (see `crate::input`).

use crate::input::Time;
use serde::Deserialize;

use super::{DEFAULT_SCOPES, MAX_CIDRS, Mode, Scope};
use crate::{
    error::{Error, Result},
    input::{CidrText, Int, Text},
    net::Cidr,
    rate_limit::MAX_RATE_LIMIT,
};

/// Longest grace period of a rolled key.
pub const MAX_ROLL_GRACE_SECONDS: i64 = 7 * 24 * 3600;

pub type Name = Text<1, 200>;
/// A per-key limit on creation.
pub type Limit = Int<1, MAX_RATE_LIMIT>;
/// A per-key limit on update: `0` returns to the server default.
pub type LimitChange = Int<0, MAX_RATE_LIMIT>;

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for, 1 to 200 characters.
    pub name: Name,
    /// Scopes granted (at least one); default: `events:read`, `events:write`, `orders:read`,
    /// `orders:write`, `webhooks:read`, `webhooks:write`. A `…:write` scope includes the matching `…:read`.
    #[oai(nullable, validator(min_items = 1))]
    pub scopes: Option<Vec<Scope>>,
    /// `live` (default) or `test`. Test keys see only test data.
    #[oai(nullable)]
    pub mode: Option<Mode>,
    /// The key stops working at this time (in the future).
    #[oai(nullable)]
    pub expires_at: Option<Time>,
    /// At most 50 CIDR blocks (IPv4 or IPv6) the key may be used from; empty or absent =
    /// anywhere.
    #[oai(nullable, validator(max_items = 50))]
    pub allowed_cidrs: Option<Vec<CidrText>>,
    /// Requests per minute for this key; default: the server's.
    #[oai(nullable)]
    pub rate_limit_per_minute: Option<Limit>,
    /// Requests per hour for this key; default: the server's.
    #[oai(nullable)]
    pub rate_limit_per_hour: Option<Limit>,
}

/// A change to a key's settings; absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct UpdateApiKey {
    #[oai(nullable)]
    pub name: Option<Name>,
    /// Replaces the scopes (at least one).
    #[oai(nullable, validator(min_items = 1))]
    pub scopes: Option<Vec<Scope>>,
    /// Replaces the allowlist (at most 50 blocks); `[]` allows any address.
    #[oai(nullable, validator(max_items = 50))]
    pub allowed_cidrs: Option<Vec<CidrText>>,
    /// `0` returns to the server default.
    #[oai(nullable)]
    pub rate_limit_per_minute: Option<LimitChange>,
    /// `0` returns to the server default.
    #[oai(nullable)]
    pub rate_limit_per_hour: Option<LimitChange>,
}

/// Rolling a key: a new key with the same settings; the old one keeps working for the grace
/// period.
#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct RollApiKey {
    /// Seconds the old key keeps working, 0 to 604800 (7 days); default 86400 (24 h).
    #[oai(nullable)]
    pub grace_period_seconds: Option<Int<0, MAX_ROLL_GRACE_SECONDS>>,
}

/// Scopes as stored: sorted, without duplicates; the default set when none are given.
pub fn scope_names(scopes: Option<Vec<Scope>>) -> Result<Vec<String>> {
    let mut names: Vec<String> = match scopes {
        Some(s) if s.is_empty() => {
            return Err(Error::invalid(
                "parameter_invalid",
                "scopes",
                "`scopes` must name at least one scope.",
            ));
        }
        Some(s) => s.iter().map(|s| s.as_str().to_owned()).collect(),
        None => DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
    };
    names.sort();
    names.dedup();
    Ok(names)
}

/// Normalises an allowlist (`203.0.113.7/24` is stored as `203.0.113.0/24`).
pub fn cidr_names(cidrs: Vec<CidrText>) -> Result<Vec<String>> {
    if cidrs.len() > MAX_CIDRS {
        return Err(Error::invalid(
            "parameter_invalid",
            "allowed_cidrs",
            format!("`allowed_cidrs` holds at most {MAX_CIDRS} blocks."),
        ));
    }
    let mut out = Vec::with_capacity(cidrs.len());
    for (i, c) in cidrs.iter().enumerate() {
        let cidr = Cidr::parse(c).ok_or_else(|| {
            Error::invalid(
                "parameter_invalid",
                format!("allowed_cidrs[{i}]"),
                format!(
                    "`{}` is not an IPv4 or IPv6 address or CIDR block.",
                    c.as_str()
                ),
            )
        })?;
        out.push(cidr.to_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}
