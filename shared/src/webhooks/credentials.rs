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
    input::{DurationText, PrintableText, pattern_string},
    net,
};

/// Old signing secrets kept signing after a rotation.
pub const MAX_PREVIOUS_SECRETS: usize = 10;
const MAX_HEADERS: usize = 20;
/// Shown in attempt logs instead of credential values.
pub const REDACTED: &str = "[redacted]";

/// What identifies the row a sealed value belongs to (AAD).
pub(super) fn aad(purpose: &str, tenant_id: Uuid, endpoint_id: Uuid) -> Vec<u8> {
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

pattern_string!(
    /// A basic-auth user name: printable ASCII without `:`, at most 1024 characters.
    UsernameText,
    "^[ -9;-~]{1,1024}$",
    "1 to 1024 printable ASCII characters without `:`"
);

/// Basic authentication (`Authorization: Basic …`).
#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: UsernameText,
    pub password: PrintableText,
}

/// Bearer authentication (`Authorization: Bearer …`).
#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct BearerAuth {
    pub token: PrintableText,
}

/// Authentication sent with every request to the endpoint, as requests give it.
#[derive(Clone, Debug, Deserialize, poem_openapi::Union)]
#[serde(tag = "type", rename_all = "lowercase")]
#[oai(discriminator_name = "type")]
pub enum AuthInput {
    #[oai(mapping = "basic")]
    Basic(BasicAuth),
    #[oai(mapping = "bearer")]
    Bearer(BearerAuth),
}

impl From<AuthInput> for EndpointAuth {
    fn from(a: AuthInput) -> Self {
        match a {
            AuthInput::Basic(b) => EndpointAuth {
                kind: "basic".into(),
                username: Some(b.username.into_string()),
                password: Some(b.password.into_string()),
                token: None,
            },
            AuthInput::Bearer(b) => EndpointAuth {
                kind: "bearer".into(),
                username: None,
                password: None,
                token: Some(b.token.into_string()),
            },
        }
    }
}

/// Authentication sent with every request to the endpoint, as it is sealed and stored.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct EndpointAuth {
    /// `basic` (with `username` and `password`) or `bearer` (with `token`).
    #[serde(rename = "type")]
    pub kind: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

impl EndpointAuth {
    /// The `Authorization` header value.
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
pub fn validate_headers(
    headers: BTreeMap<String, PrintableText>,
) -> Result<BTreeMap<String, String>> {
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
        if net::reserved_header(&lower) {
            return Err(Error::invalid(
                "parameter_invalid",
                param,
                format!("`{name}` is set by Switchyard itself; use `auth` for `authorization`."),
            ));
        }
        out.insert(lower, value.into_string());
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

/// Seals a destination's secret settings (`crate::destinations`).
pub fn seal_config(
    keyring: &Keyring,
    tenant_id: Uuid,
    endpoint_id: Uuid,
    secrets: &BTreeMap<String, String>,
) -> (String, Vec<u8>) {
    let json = serde_json::to_vec(secrets).expect("a map of strings serialises");
    keyring.seal(&json, &aad("config", tenant_id, endpoint_id))
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
    pub config_ciphertext: Option<Vec<u8>>,
    pub config_key_id: Option<String>,
}

/// An endpoint's credentials, opened for one attempt.
pub struct Credentials {
    /// HMAC keys that sign: the current secret first, then unexpired previous ones.
    pub hmac_keys: Vec<Vec<u8>>,
    pub ed25519: Option<Ed25519KeyPair>,
    /// Custom headers and the `authorization` header, all sent and all redacted in logs.
    pub headers: Vec<(String, String)>,
    /// A destination's secret settings (`crate::destinations`), redacted in logs.
    pub config: BTreeMap<String, String>,
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
        let mut config = BTreeMap::new();
        if let (Some(kid), Some(sealed)) = (&self.config_key_id, &self.config_ciphertext) {
            let plain = self.open_one(keyring, "config", kid, sealed)?;
            config = serde_json::from_slice(&plain)
                .map_err(|e| Error::Internal(anyhow::anyhow!("stored config secrets: {e}")))?;
        }
        Ok(Credentials {
            hmac_keys,
            ed25519,
            headers,
            config,
        })
    }
}

/// Body of `POST /v1/webhook-endpoints/{id}/secret/rotate`.
#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the current secret keeps signing next to the new one: `0s` to `7d`, default
    /// `24h`. Receivers can switch to the new secret at any point in that window.
    #[oai(nullable)]
    pub grace_period: Option<DurationText>,
    /// Bring your own `whsec_` secret (base64 of 24 to 64 bytes); default: 32 random bytes.
    #[oai(nullable)]
    pub secret: Option<SecretText>,
}

pattern_string!(
    /// A `whsec_` signing secret: base64 (padded or not) of 24 to 64 bytes.
    SecretText,
    "^whsec_[A-Za-z0-9+/]{32,88}={0,2}$",
    "`whsec_` followed by base64 of 24 to 64 bytes"
);

/// The new secret, shown only in this response.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct RotatedSecret {
    pub secret: String,
    /// Until when the replaced secret keeps signing (`null` with a zero grace period).
    #[oai(nullable)]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// Validates a rotation request: the grace period and the new secret.
pub fn rotation_input(input: &RotateSecret) -> Result<(chrono::Duration, String)> {
    let grace = match &input.grace_period {
        None => std::time::Duration::from_secs(86_400),
        Some(raw) => raw
            .duration()
            .ok()
            .filter(|d| *d <= std::time::Duration::from_secs(7 * 86_400))
            .ok_or_else(|| {
                Error::invalid(
                    "parameter_invalid",
                    "grace_period",
                    format!(
                        "`grace_period` must be between 0s and 7d, got `{}`.",
                        raw.as_str()
                    ),
                )
            })?,
    };
    let secret = match &input.secret {
        None => signing::generate_secret(),
        Some(s) => {
            let ok = signing::secret_key(s).is_some_and(|k| (24..=64).contains(&k.len()));
            if !ok {
                return Err(Error::invalid(
                    "parameter_invalid",
                    "secret",
                    "`secret` must be `whsec_` followed by base64 of 24 to 64 bytes.",
                ));
            }
            s.as_str().to_owned()
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
        let value = |v: &str| PrintableText::new(v).unwrap();
        let ok = validate_headers(BTreeMap::from([("X-Tenant".into(), value("acme"))])).unwrap();
        assert_eq!(ok.get("x-tenant").map(String::as_str), Some("acme"));
        for name in ["Authorization", "webhook-id", "Host", "bad name"] {
            assert!(
                validate_headers(BTreeMap::from([(name.to_owned(), value("x"))])).is_err(),
                "{name}"
            );
        }
        // Values are printable ASCII by type.
        assert!(PrintableText::new("line\r\nbreak").is_err());
        assert!(PrintableText::new("").is_err());
    }

    #[test]
    fn auth_is_basic_or_bearer_by_type() {
        let basic: AuthInput = serde_json::from_value(serde_json::json!(
            { "type": "basic", "username": "user", "password": "pass" }
        ))
        .unwrap();
        assert_eq!(
            EndpointAuth::from(basic).authorization(),
            "Basic dXNlcjpwYXNz"
        );
        let bearer: AuthInput =
            serde_json::from_value(serde_json::json!({ "type": "bearer", "token": "tok" }))
                .unwrap();
        assert_eq!(EndpointAuth::from(bearer).authorization(), "Bearer tok");
        for bad in [
            serde_json::json!({ "type": "basic", "username": "a:b", "password": "p" }),
            serde_json::json!({ "type": "digest", "token": "t" }),
            serde_json::json!({ "type": "bearer", "token": "t", "username": "u" }),
            serde_json::json!({ "type": "basic", "username": "u" }),
        ] {
            assert!(
                serde_json::from_value::<AuthInput>(bad.clone()).is_err(),
                "{bad}"
            );
        }
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
                grace_period: Some(DurationText::new("8d").unwrap()),
                secret: None
            })
            .is_err()
        );
        assert!(
            rotation_input(&RotateSecret {
                grace_period: None,
                // 33 bytes of base64 padding trouble: the pattern passes, the decoding fails.
                secret: Some(SecretText::new(format!("whsec_{}=", "A".repeat(33))).unwrap())
            })
            .is_err()
        );
        assert!(SecretText::new("whsec_short").is_err());
    }
}
