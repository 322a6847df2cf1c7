//! What an endpoint's requests carry that must stay secret: signing secrets (with rotation),
//! the optional ed25519 key, custom headers and auth. All of it is sealed with AES-256-GCM and
//! bound to its endpoint row by AAD; the API shows header names and the auth type, never values.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use ring::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use uuid::Uuid;

use super::signing;
use crate::{
    crypto::Keyring,
    error::{Error, Result},
};

/// Old signing secrets kept signing after a rotation.
pub const MAX_PREVIOUS_SECRETS: usize = 10;
const MAX_HEADERS: usize = 20;
const MAX_HEADER_VALUE: usize = 1024;
/// Shown in attempt logs instead of credential values.
pub const REDACTED: &str = "[redacted]";

/// Names our requests set themselves, or that would break HTTP framing.
fn reserved_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-type"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
            | "user-agent"
            | "authorization"
    ) || name.starts_with("webhook-")
        || name.starts_with("proxy-")
}

/// What identifies the row a sealed value belongs to (AAD).
fn aad(purpose: &str, tenant_id: Uuid, endpoint_id: Uuid) -> Vec<u8> {
    format!("webhook_endpoint|{purpose}|{endpoint_id}|{tenant_id}|v1").into_bytes()
}

pub fn seal_secret(
    keyring: &Keyring,
    tenant_id: Uuid,
    endpoint_id: Uuid,
    secret: &str,
) -> (String, Vec<u8>) {
    keyring.seal(secret.as_bytes(), &aad("secret", tenant_id, endpoint_id))
}

/// A secret replaced by a rotation; it keeps signing until `expires_at`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PreviousSecret {
    pub key_id: String,
    /// Base64 of the sealed secret.
    pub sealed: String,
    pub expires_at: DateTime<Utc>,
}

/// Authentication sent with every request to the endpoint.
#[derive(Clone, Debug, Deserialize, Serialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct EndpointAuth {
    /// `basic` (with `username` and `password`) or `bearer` (with `token`).
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub kind: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

fn printable(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_HEADER_VALUE && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl EndpointAuth {
    pub fn validate(&self) -> Result<()> {
        let bad =
            |param: &str, detail: &str| Err(Error::invalid("parameter_invalid", param, detail));
        match self.kind.as_str() {
            "basic" => {
                if !self
                    .username
                    .as_deref()
                    .is_some_and(|u| printable(u) && !u.contains(':'))
                {
                    return bad(
                        "auth.username",
                        "`auth.username` is required for basic auth: printable ASCII without `:`.",
                    );
                }
                if !self.password.as_deref().is_some_and(printable) {
                    return bad(
                        "auth.password",
                        "`auth.password` is required for basic auth: printable ASCII.",
                    );
                }
                if self.token.is_some() {
                    return bad("auth.token", "`auth.token` belongs to bearer auth.");
                }
            }
            "bearer" => {
                if !self.token.as_deref().is_some_and(printable) {
                    return bad(
                        "auth.token",
                        "`auth.token` is required for bearer auth: printable ASCII.",
                    );
                }
                if self.username.is_some() || self.password.is_some() {
                    return bad(
                        "auth.username",
                        "`auth.username` and `auth.password` belong to basic auth.",
                    );
                }
            }
            other => {
                return bad(
                    "auth.type",
                    &format!("`auth.type` must be `basic` or `bearer`, got `{other}`."),
                );
            }
        }
        Ok(())
    }

    fn authorization(&self) -> String {
        match self.kind.as_str() {
            "basic" => {
                let pair = format!(
                    "{}:{}",
                    self.username.as_deref().unwrap_or(""),
                    self.password.as_deref().unwrap_or("")
                );
                format!("Basic {}", STANDARD.encode(pair))
            }
            _ => format!("Bearer {}", self.token.as_deref().unwrap_or("")),
        }
    }
}

/// Validates and normalises custom headers (names lower-cased).
pub fn validate_headers(headers: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    if headers.len() > MAX_HEADERS {
        return Err(Error::invalid(
            "parameter_invalid",
            "headers",
            format!("`headers` may hold at most {MAX_HEADERS} headers."),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let token = !lower.is_empty()
            && lower.len() <= 100
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let param = format!("headers.{name}");
        if !token {
            return Err(Error::invalid(
                "parameter_invalid",
                param,
                format!("`{name}` is not a valid header name."),
            ));
        }
        if reserved_header(&lower) {
            return Err(Error::invalid(
                "parameter_invalid",
                param,
                format!("`{name}` is set by Switchyard itself; use `auth` for `authorization`."),
            ));
        }
        if !printable(&value) {
            return Err(Error::invalid(
                "parameter_invalid",
                param,
                format!(
                    "The value of `{name}` must be 1 to {MAX_HEADER_VALUE} printable ASCII characters."
                ),
            ));
        }
        out.insert(lower, value);
    }
    Ok(out)
}

pub fn seal_headers(
    keyring: &Keyring,
    tenant_id: Uuid,
    endpoint_id: Uuid,
    headers: &BTreeMap<String, String>,
) -> (String, Vec<u8>) {
    let json = serde_json::to_vec(headers).expect("a map of strings serialises");
    keyring.seal(&json, &aad("headers", tenant_id, endpoint_id))
}

pub fn seal_auth(
    keyring: &Keyring,
    tenant_id: Uuid,
    endpoint_id: Uuid,
    auth: &EndpointAuth,
) -> (String, Vec<u8>) {
    let json = serde_json::to_vec(auth).expect("auth serialises");
    keyring.seal(&json, &aad("auth", tenant_id, endpoint_id))
}

/// A fresh ed25519 key pair: `(key id, sealed PKCS#8, whpk_ public key)`.
pub fn new_ed25519(
    keyring: &Keyring,
    tenant_id: Uuid,
    endpoint_id: Uuid,
) -> (String, Vec<u8>, String) {
    let (pkcs8, public) = signing::generate_ed25519();
    let (key_id, sealed) = keyring.seal(&pkcs8, &aad("ed25519", tenant_id, endpoint_id));
    (key_id, sealed, public)
}

/// The sealed columns of an endpoint, as read with a delivery.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Sealed {
    pub tenant_id: Uuid,
    pub endpoint_id: Uuid,
    pub secret_ciphertext: Vec<u8>,
    pub secret_key_id: String,
    pub previous_secrets: Json<Vec<PreviousSecret>>,
    pub ed25519_ciphertext: Option<Vec<u8>>,
    pub ed25519_key_id: Option<String>,
    pub headers_ciphertext: Option<Vec<u8>>,
    pub headers_key_id: Option<String>,
    pub auth_ciphertext: Option<Vec<u8>>,
    pub auth_key_id: Option<String>,
}

/// An endpoint's credentials, opened for one attempt.
pub struct Credentials {
    /// HMAC keys that sign: the current secret first, then unexpired previous ones.
    pub hmac_keys: Vec<Vec<u8>>,
    pub ed25519: Option<Ed25519KeyPair>,
    /// Custom headers and the `authorization` header, all sent and all redacted in logs.
    pub headers: Vec<(String, String)>,
}

impl Sealed {
    fn open_one(
        &self,
        keyring: &Keyring,
        purpose: &str,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        keyring
            .open(
                key_id,
                sealed,
                &aad(purpose, self.tenant_id, self.endpoint_id),
            )
            .map_err(|e| {
                Error::Internal(anyhow::anyhow!(
                    "endpoint {} {purpose}: {e}",
                    self.endpoint_id
                ))
            })
    }

    fn hmac_key(&self, keyring: &Keyring, key_id: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let plain = self.open_one(keyring, "secret", key_id, sealed)?;
        std::str::from_utf8(&plain)
            .ok()
            .and_then(signing::secret_key)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("stored secret is not whsec_ base64")))
    }

    /// Opens everything needed to sign and authenticate one request at `now`.
    pub fn open(&self, keyring: &Keyring, now: DateTime<Utc>) -> Result<Credentials> {
        let mut hmac_keys =
            vec![self.hmac_key(keyring, &self.secret_key_id, &self.secret_ciphertext)?];
        for p in self
            .previous_secrets
            .0
            .iter()
            .filter(|p| p.expires_at > now)
        {
            let sealed = STANDARD
                .decode(&p.sealed)
                .map_err(|e| Error::Internal(anyhow::anyhow!("previous secret encoding: {e}")))?;
            hmac_keys.push(self.hmac_key(keyring, &p.key_id, &sealed)?);
        }
        let ed25519 = match (&self.ed25519_key_id, &self.ed25519_ciphertext) {
            (Some(kid), Some(sealed)) => {
                let pkcs8 = self.open_one(keyring, "ed25519", kid, sealed)?;
                Some(signing::ed25519_from_pkcs8(&pkcs8).ok_or_else(|| {
                    Error::Internal(anyhow::anyhow!("stored ed25519 key is not PKCS#8"))
                })?)
            }
            _ => None,
        };
        let mut headers = Vec::new();
        if let (Some(kid), Some(sealed)) = (&self.headers_key_id, &self.headers_ciphertext) {
            let plain = self.open_one(keyring, "headers", kid, sealed)?;
            let map: BTreeMap<String, String> = serde_json::from_slice(&plain)
                .map_err(|e| Error::Internal(anyhow::anyhow!("stored headers: {e}")))?;
            headers.extend(map);
        }
        if let (Some(kid), Some(sealed)) = (&self.auth_key_id, &self.auth_ciphertext) {
            let plain = self.open_one(keyring, "auth", kid, sealed)?;
            let auth: EndpointAuth = serde_json::from_slice(&plain)
                .map_err(|e| Error::Internal(anyhow::anyhow!("stored auth: {e}")))?;
            headers.push(("authorization".to_owned(), auth.authorization()));
        }
        Ok(Credentials {
            hmac_keys,
            ed25519,
            headers,
        })
    }
}

/// Body of `POST /v1/webhook-endpoints/{id}/secret/rotate`.
#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the current secret keeps signing next to the new one: `0s` to `7d`, default
    /// `24h`. Receivers can switch to the new secret at any point in that window.
    pub grace_period: Option<String>,
    /// Bring your own `whsec_` secret (24 to 64 bytes, base64); default: 32 random bytes.
    pub secret: Option<String>,
}

/// The new secret, shown only in this response.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct RotatedSecret {
    pub secret: String,
    /// Until when the replaced secret keeps signing (`null` with a zero grace period).
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// Validates a rotation request: the grace period and the new secret.
pub fn rotation_input(input: &RotateSecret) -> Result<(chrono::Duration, String)> {
    let grace = match input.grace_period.as_deref() {
        None => std::time::Duration::from_secs(86_400),
        Some(raw) => crate::config::parse_duration(raw)
            .ok()
            .filter(|d| *d <= std::time::Duration::from_secs(7 * 86_400))
            .ok_or_else(|| {
                Error::invalid(
                    "parameter_invalid",
                    "grace_period",
                    format!("`grace_period` must be between 0s and 7d, got `{raw}`."),
                )
            })?,
    };
    let secret = match &input.secret {
        None => signing::generate_secret(),
        Some(s) => {
            let ok = s.starts_with("whsec_")
                && signing::secret_key(s).is_some_and(|k| (24..=64).contains(&k.len()));
            if !ok {
                return Err(Error::invalid(
                    "parameter_invalid",
                    "secret",
                    "`secret` must be `whsec_` followed by base64 of 24 to 64 bytes.",
                ));
            }
            s.clone()
        }
    };
    Ok((
        chrono::Duration::from_std(grace).unwrap_or_default(),
        secret,
    ))
}

/// The previous-secret list after a rotation at `now`: the replaced secret first (unless the
/// grace period is zero), expired entries dropped, at most [`MAX_PREVIOUS_SECRETS`].
pub fn rotated_previous(
    old: Vec<PreviousSecret>,
    replaced: PreviousSecret,
    now: DateTime<Utc>,
) -> Vec<PreviousSecret> {
    std::iter::once(replaced)
        .chain(old)
        .filter(|p| p.expires_at > now)
        .take(MAX_PREVIOUS_SECRETS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        let ok = validate_headers(BTreeMap::from([("X-Tenant".into(), "acme".into())])).unwrap();
        assert_eq!(ok.get("x-tenant").map(String::as_str), Some("acme"));
        for (name, value) in [
            ("Authorization", "x"),
            ("webhook-id", "x"),
            ("Host", "x"),
            ("bad name", "x"),
            ("x-ok", "line\r\nbreak"),
            ("x-ok", ""),
        ] {
            assert!(
                validate_headers(BTreeMap::from([(name.to_owned(), value.to_owned())])).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn auth_rules_and_header_values() {
        let basic = EndpointAuth {
            kind: "basic".into(),
            username: Some("user".into()),
            password: Some("pass".into()),
            token: None,
        };
        basic.validate().unwrap();
        assert_eq!(basic.authorization(), "Basic dXNlcjpwYXNz");
        let bearer = EndpointAuth {
            kind: "bearer".into(),
            username: None,
            password: None,
            token: Some("tok".into()),
        };
        bearer.validate().unwrap();
        assert_eq!(bearer.authorization(), "Bearer tok");
        let mut bad = basic.clone();
        bad.username = Some("a:b".into());
        assert!(bad.validate().is_err());
        bad.kind = "digest".into();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn rotation_keeps_unexpired_secrets_newest_first() {
        let now = Utc::now();
        let entry = |n: i64| PreviousSecret {
            key_id: format!("k{n}"),
            sealed: String::new(),
            expires_at: now + chrono::Duration::seconds(n),
        };
        let old: Vec<_> = (-2..=12).rev().map(entry).collect();
        let list = rotated_previous(old, entry(100), now);
        assert_eq!(list.len(), MAX_PREVIOUS_SECRETS);
        assert_eq!(list[0].key_id, "k100");
        assert!(list.iter().all(|p| p.expires_at > now));
        // Zero grace: the replaced secret is not kept.
        assert!(rotated_previous(vec![], entry(0), now).is_empty());
        assert!(
            rotation_input(&RotateSecret {
                grace_period: Some("8d".into()),
                secret: None
            })
            .is_err()
        );
        assert!(
            rotation_input(&RotateSecret {
                grace_period: None,
                secret: Some("whsec_short".into())
            })
            .is_err()
        );
    }
}
