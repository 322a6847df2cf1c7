//! Verification of inbound webhooks, each scheme from its provider's published algorithm, every
//! comparison constant-time:
//!
//! * `standard_webhooks`: `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`
//!   (space-separated, one per secret), key = base64 after `whsec_`; `webhook-timestamp` within
//!   the tolerance; event id `webhook-id`.
//! * `stripe`: `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`; the
//!   secret's bytes as given (`whsec_…` included); event id: the body's `id`.
//! * `github`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`; event id
//!   `X-GitHub-Delivery`. No timestamp is signed, so nothing expires.
//! * `shopify`: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>`; event id
//!   `X-Shopify-Webhook-Id`. No timestamp either.
//! * `hmac`: HMAC (`sha256` or `sha512`) of the body, or of `{timestamp}.{body}` with a
//!   timestamp header (then within the tolerance), `hex` or `base64`, in a named header
//!   (an `sha256=` style prefix is allowed).
//! * `none`: nothing is checked (chosen explicitly).

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Sha256, Sha512};

use crate::crypto::constant_time_eq;

/// How an integration's inbound requests are verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum Scheme {
    StandardWebhooks,
    Stripe,
    Github,
    Shopify,
    Hmac,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum Algorithm {
    Sha256,
    Sha512,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum Encoding {
    Hex,
    Base64,
}

/// The verification parameters, as stored (secrets apart).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rules {
    pub scheme: Scheme,
    pub tolerance_seconds: u32,
    /// `hmac`: the signature header (lower case).
    pub header: Option<String>,
    pub algorithm: Option<Algorithm>,
    pub encoding: Option<Encoding>,
    /// `hmac`: the timestamp header; the signed content is then `{timestamp}.{body}`.
    pub timestamp_header: Option<String>,
    /// A JSON pointer to the event id in the body, instead of the scheme's own.
    pub dedupe: Option<String>,
}

/// Request headers, names lower-cased.
pub type Headers = BTreeMap<String, String>;

/// What verification found out.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// The sender's event id, for duplicate suppression.
    pub event_id: Option<String>,
    /// Whether a signature was checked (`false` for `none`).
    pub signed: bool,
}

/// Checks the request against `secrets` (any may match: rotation) at `now` (Unix seconds).
/// `Err` is the reason it is refused.
pub fn verify(
    rules: &Rules,
    secrets: &[String],
    headers: &Headers,
    body: &[u8],
    now: i64,
) -> Result<Verified, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("the `{name}` header is missing"))
    };
    let fresh = |ts: &str| -> Result<(), String> {
        let t: i64 = ts
            .trim()
            .parse()
            .map_err(|_| format!("timestamp `{ts}` is not a number"))?;
        // `abs_diff`: any i64 a sender writes, even i64::MIN, neither overflows nor passes.
        let away = now.abs_diff(t);
        if away > u64::from(rules.tolerance_seconds) {
            Err(format!(
                "the timestamp is {away} s away from now (tolerance {} s): expired or replayed",
                rules.tolerance_seconds
            ))
        } else {
            Ok(())
        }
    };
    let mut event_id = None;
    let signed = match rules.scheme {
        Scheme::None => false,
        Scheme::StandardWebhooks => {
            let (id, ts, sig) = (
                header("webhook-id")?,
                header("webhook-timestamp")?,
                header("webhook-signature")?,
            );
            fresh(ts)?;
            let content = [id.as_bytes(), b".", ts.as_bytes(), b".", body].concat();
            let ok = secrets.iter().any(|s| {
                let Some(key) = s
                    .strip_prefix("whsec_")
                    .and_then(|k| STANDARD.decode(k).ok())
                else {
                    return false;
                };
                let expected = STANDARD.encode(mac(Algorithm::Sha256, &key, &content));
                sig.split(' ')
                    .filter_map(|t| t.strip_prefix("v1,"))
                    .any(|t| constant_time_eq(t.as_bytes(), expected.as_bytes()))
            });
            require(ok)?;
            event_id = Some(id.to_owned());
            true
        }
        Scheme::Stripe => {
            let sig = header("stripe-signature")?;
            let mut t = None;
            let mut v1 = Vec::new();
            for part in sig.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => t = Some(v),
                    Some(("v1", v)) => v1.push(v),
                    _ => {}
                }
            }
            let t = t.ok_or("`Stripe-Signature` has no timestamp (`t=`)")?;
            fresh(t)?;
            let content = [t.as_bytes(), b".", body].concat();
            let ok = secrets.iter().any(|s| {
                let expected = hex(&mac(Algorithm::Sha256, s.as_bytes(), &content));
                v1.iter()
                    .any(|v| constant_time_eq(v.as_bytes(), expected.as_bytes()))
            });
            require(ok)?;
            event_id = json_pointer(body, "/id");
            true
        }
        Scheme::Github => {
            let sig = header("x-hub-signature-256")?;
            let given = sig
                .strip_prefix("sha256=")
                .ok_or("`X-Hub-Signature-256` must start with `sha256=`")?;
            let ok = secrets.iter().any(|s| {
                constant_time_eq(
                    given.as_bytes(),
                    hex(&mac(Algorithm::Sha256, s.as_bytes(), body)).as_bytes(),
                )
            });
            require(ok)?;
            event_id = headers.get("x-github-delivery").cloned();
            true
        }
        Scheme::Shopify => {
            let given = header("x-shopify-hmac-sha256")?;
            let ok = secrets.iter().any(|s| {
                let expected = STANDARD.encode(mac(Algorithm::Sha256, s.as_bytes(), body));
                constant_time_eq(given.as_bytes(), expected.as_bytes())
            });
            require(ok)?;
            event_id = headers.get("x-shopify-webhook-id").cloned();
            true
        }
        Scheme::Hmac => {
            let name = rules.header.as_deref().unwrap_or("x-signature");
            let algorithm = rules.algorithm.unwrap_or(Algorithm::Sha256);
            let given = header(name)?;
            let prefix = match algorithm {
                Algorithm::Sha256 => "sha256=",
                Algorithm::Sha512 => "sha512=",
            };
            let given = given.strip_prefix(prefix).unwrap_or(given);
            let content = match rules.timestamp_header.as_deref() {
                Some(ts_header) => {
                    let ts = header(ts_header)?;
                    fresh(ts)?;
                    [ts.as_bytes(), b".", body].concat()
                }
                None => body.to_vec(),
            };
            let ok = secrets.iter().any(|s| {
                let raw = mac(algorithm, s.as_bytes(), &content);
                let expected = match rules.encoding.unwrap_or(Encoding::Hex) {
                    Encoding::Hex => hex(&raw),
                    Encoding::Base64 => STANDARD.encode(raw),
                };
                constant_time_eq(given.as_bytes(), expected.as_bytes())
            });
            require(ok)?;
            true
        }
    };
    if let Some(pointer) = &rules.dedupe {
        event_id = json_pointer(body, pointer);
    }
    Ok(Verified { event_id, signed })
}

fn require(ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err("the signature does not match".into())
    }
}

fn mac(algorithm: Algorithm, key: &[u8], content: &[u8]) -> Vec<u8> {
    match algorithm {
        Algorithm::Sha256 => {
            let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
            m.update(content);
            m.finalize().into_bytes().to_vec()
        }
        Algorithm::Sha512 => {
            let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key length");
            m.update(content);
            m.finalize().into_bytes().to_vec()
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The string (or number) at `pointer` in a JSON body.
fn json_pointer(body: &[u8], pointer: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match v.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(scheme: Scheme) -> Rules {
        Rules {
            scheme,
            tolerance_seconds: 300,
            header: None,
            algorithm: None,
            encoding: None,
            timestamp_header: None,
            dedupe: None,
        }
    }

    const NOW: i64 = 1_764_000_000;

    fn hmac_hex(alg: Algorithm, key: &[u8], content: &[u8]) -> String {
        hex(&mac(alg, key, content))
    }

    /// Checks a scheme with a valid request, the same request tampered with, and (where the
    /// scheme signs a timestamp) one signed too long ago; returns the valid one's result.
    fn check(
        r: &Rules,
        secret: &str,
        sign: impl Fn(&[u8], i64) -> Headers,
        expires: bool,
    ) -> Verified {
        let body = br#"{"id":"evt_1","amount":100}"#;
        let secrets = [secret.to_owned()];
        let ok = verify(r, &secrets, &sign(body, NOW), body, NOW).expect("valid request");
        assert!(ok.signed);
        let tampered = br#"{"id":"evt_1","amount":999}"#;
        let e = verify(r, &secrets, &sign(body, NOW), tampered, NOW).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let wrong = ["another-secret".to_owned()];
        assert!(verify(r, &wrong, &sign(body, NOW), body, NOW).is_err());
        // A rotation: the old secret next to the new one still verifies.
        let both = ["another-secret".to_owned(), secret.to_owned()];
        assert!(verify(r, &both, &sign(body, NOW), body, NOW).is_ok());
        let old = verify(r, &secrets, &sign(body, NOW - 301), body, NOW);
        if expires {
            assert!(old.unwrap_err().contains("tolerance"));
        } else {
            assert!(old.is_ok());
        }
        ok
    }

    #[test]
    fn timestamps_at_the_ends_of_i64_are_refused_without_overflow() {
        let r = rules(Scheme::StandardWebhooks);
        for ts in [i64::MIN, i64::MAX, NOW + i64::MIN] {
            let headers = Headers::from([
                ("webhook-id".into(), "msg_1".into()),
                ("webhook-timestamp".into(), ts.to_string()),
                ("webhook-signature".into(), "v1,bm90LWl0".into()),
            ]);
            let e = verify(&r, &["whsec_eA==".to_owned()], &headers, b"{}", NOW).unwrap_err();
            assert!(e.contains("tolerance"), "{ts}: {e}");
        }
    }

    #[test]
    fn standard_webhooks() {
        let secret = format!(
            "whsec_{}",
            STANDARD.encode(b"a-32-byte-secret-for-the-tests!!")
        );
        let key = b"a-32-byte-secret-for-the-tests!!";
        let sign = |body: &[u8], ts: i64| {
            let content = [b"msg_1.".as_slice(), ts.to_string().as_bytes(), b".", body].concat();
            let sig = STANDARD.encode(mac(Algorithm::Sha256, key, &content));
            Headers::from([
                ("webhook-id".into(), "msg_1".into()),
                ("webhook-timestamp".into(), ts.to_string()),
                ("webhook-signature".into(), format!("v1,bm90LWl0 v1,{sig}")),
            ])
        };
        let v = check(&rules(Scheme::StandardWebhooks), &secret, sign, true);
        assert_eq!(v.event_id.as_deref(), Some("msg_1"));
    }

    #[test]
    fn stripe() {
        let secret = "whsec_stripe_test_secret";
        let sign = |body: &[u8], ts: i64| {
            let content = [ts.to_string().as_bytes(), b".", body].concat();
            let sig = hmac_hex(Algorithm::Sha256, secret.as_bytes(), &content);
            Headers::from([(
                "stripe-signature".into(),
                format!("t={ts},v1={sig},v0=ignored"),
            )])
        };
        let v = check(&rules(Scheme::Stripe), secret, sign, true);
        assert_eq!(v.event_id.as_deref(), Some("evt_1"));
    }

    #[test]
    fn github() {
        let sign = |body: &[u8], _| {
            let sig = hmac_hex(Algorithm::Sha256, b"gh-secret", body);
            Headers::from([
                ("x-hub-signature-256".into(), format!("sha256={sig}")),
                (
                    "x-github-delivery".into(),
                    "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
                ),
            ])
        };
        let v = check(&rules(Scheme::Github), "gh-secret", sign, false);
        assert_eq!(
            v.event_id.as_deref(),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        );
    }

    #[test]
    fn shopify() {
        let sign = |body: &[u8], _| {
            let sig = STANDARD.encode(mac(Algorithm::Sha256, b"shpss_secret", body));
            Headers::from([
                ("x-shopify-hmac-sha256".into(), sig),
                (
                    "x-shopify-webhook-id".into(),
                    "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".into(),
                ),
            ])
        };
        let v = check(&rules(Scheme::Shopify), "shpss_secret", sign, false);
        assert_eq!(
            v.event_id.as_deref(),
            Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
        );
    }

    #[test]
    fn generic_hmac_with_and_without_a_timestamp() {
        let mut r = rules(Scheme::Hmac);
        r.header = Some("x-erp-signature".into());
        r.algorithm = Some(Algorithm::Sha512);
        r.encoding = Some(Encoding::Base64);
        r.dedupe = Some("/id".into());
        let sign = |body: &[u8], _| {
            let sig = STANDARD.encode(mac(Algorithm::Sha512, b"erp", body));
            Headers::from([("x-erp-signature".into(), sig)])
        };
        let v = check(&r, "erp", sign, false);
        assert_eq!(v.event_id.as_deref(), Some("evt_1"));
        let mut r = rules(Scheme::Hmac);
        r.timestamp_header = Some("x-erp-timestamp".into());
        let sign = |body: &[u8], ts: i64| {
            let content = [ts.to_string().as_bytes(), b".", body].concat();
            Headers::from([
                (
                    "x-signature".into(),
                    format!("sha256={}", hmac_hex(Algorithm::Sha256, b"erp", &content)),
                ),
                ("x-erp-timestamp".into(), ts.to_string()),
            ])
        };
        check(&r, "erp", sign, true);
    }

    #[test]
    fn none_checks_nothing_and_missing_headers_are_named() {
        let v = verify(&rules(Scheme::None), &[], &Headers::new(), b"{}", NOW).unwrap();
        assert!(!v.signed);
        let e = verify(
            &rules(Scheme::Github),
            &["s".into()],
            &Headers::new(),
            b"{}",
            NOW,
        );
        assert_eq!(
            e.unwrap_err(),
            "the `x-hub-signature-256` header is missing"
        );
    }

    #[test]
    fn github_signature_from_its_documentation() {
        // GitHub's published example: secret "It's a Secret to Everybody", payload
        // "Hello, World!".
        let headers = Headers::from([(
            "x-hub-signature-256".into(),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".into(),
        )]);
        let secrets = ["It's a Secret to Everybody".to_owned()];
        assert!(
            verify(
                &rules(Scheme::Github),
                &secrets,
                &headers,
                b"Hello, World!",
                0
            )
            .is_ok()
        );
        assert!(
            verify(
                &rules(Scheme::Github),
                &secrets,
                &headers,
                b"Hello, World?",
                0
            )
            .is_err()
        );
    }
}
