//! Standard Webhooks signatures: `v1` = HMAC-SHA256 and `v1a` = ed25519, both over
//! `"{id}.{timestamp}.{body}"`. During a secret rotation every valid secret signs, so the
//! header carries several space-separated tokens.

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::crypto::{constant_time_eq, hmac_sha256, random_bytes};

const SECRET_PREFIX: &str = "whsec_";
const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// A fresh endpoint secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(random_bytes::<32>()))
}

/// The raw key bytes of a `whsec_…` secret.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
        .ok()
}

/// The `webhook-signature` token for one key: `v1,<base64 HMAC>`.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", STANDARD.encode(mac))
}

/// A new ed25519 key pair: the PKCS#8 document to seal, and the `whpk_` public key to publish.
pub fn generate_ed25519() -> (Vec<u8>, String) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("just generated");
    let public = format!(
        "{PUBLIC_KEY_PREFIX}{}",
        STANDARD.encode(pair.public_key().as_ref())
    );
    (pkcs8.as_ref().to_vec(), public)
}

pub fn ed25519_from_pkcs8(pkcs8: &[u8]) -> Option<Ed25519KeyPair> {
    Ed25519KeyPair::from_pkcs8(pkcs8).ok()
}

/// The `v1a,<base64 signature>` token.
pub fn sign_v1a(pair: &Ed25519KeyPair, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut content = Vec::with_capacity(msg_id.len() + body.len() + 24);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    format!("v1a,{}", STANDARD.encode(pair.sign(&content).as_ref()))
}

/// The whole `webhook-signature` header: a `v1` token per HMAC key (current first), then the
/// `v1a` token if the endpoint signs with ed25519.
pub fn signature_header(
    hmac_keys: &[Vec<u8>],
    ed25519: Option<&Ed25519KeyPair>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut tokens: Vec<String> = hmac_keys
        .iter()
        .map(|k| sign(k, msg_id, timestamp, body))
        .collect();
    if let Some(pair) = ed25519 {
        tokens.push(sign_v1a(pair, msg_id, timestamp, body));
    }
    tokens.join(" ")
}

/// Why a received signature does not verify.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("timestamp outside the tolerance window")]
    Timestamp,
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a `webhook-signature` header as the reference libraries do: the timestamp must be
/// within `tolerance_secs` of `now`, and any `v1` token matching counts (others are skipped).
pub fn verify(
    key: &[u8],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    if (now - timestamp).abs() > tolerance_secs {
        return Err(VerifyError::Timestamp);
    }
    let expected = sign(key, msg_id, timestamp, body);
    let expected = expected.as_bytes();
    let ok = header
        .split(' ')
        .filter(|t| t.starts_with("v1,"))
        .any(|t| constant_time_eq(t.as_bytes(), expected));
    if ok {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1_649_367_553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const GOLDEN: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn standard_webhooks_golden_vector() {
        let key = secret_key(SECRET).unwrap();
        assert_eq!(sign(&key, ID, TS, BODY), GOLDEN);
    }

    #[test]
    fn verification_rules() {
        let key = secret_key(SECRET).unwrap();
        assert_eq!(verify(&key, ID, TS, BODY, GOLDEN, TS, 300), Ok(()));
        // Unknown versions are skipped; a valid v1 next to them passes.
        let mixed = format!("v2,abc {GOLDEN}");
        assert_eq!(verify(&key, ID, TS, BODY, &mixed, TS, 300), Ok(()));
        assert_eq!(
            verify(&key, ID, TS, b"{}", GOLDEN, TS, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&key, ID, TS, BODY, "v1,", TS, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&key, ID, TS, BODY, GOLDEN, TS + 301, 300),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            verify(&key, ID, TS, BODY, GOLDEN, TS - 301, 300),
            Err(VerifyError::Timestamp)
        );
    }

    #[test]
    fn every_key_signs_and_v1a_verifies_with_the_published_key() {
        let a = secret_key(SECRET).unwrap();
        let b = secret_key(&generate_secret()).unwrap();
        let (pkcs8, public) = generate_ed25519();
        let pair = ed25519_from_pkcs8(&pkcs8).unwrap();
        let header = signature_header(&[a.clone(), b.clone()], Some(&pair), ID, TS, BODY);
        let tokens: Vec<&str> = header.split(' ').collect();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens[0], GOLDEN);
        assert_eq!(tokens[1], sign(&b, ID, TS, BODY));
        let sig = STANDARD
            .decode(tokens[2].strip_prefix("v1a,").unwrap())
            .unwrap();
        let pk = STANDARD
            .decode(public.strip_prefix("whpk_").unwrap())
            .unwrap();
        let content = format!("{ID}.{TS}.{}", std::str::from_utf8(BODY).unwrap());
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &pk)
            .verify(content.as_bytes(), &sig)
            .expect("v1a verifies");
        // A v1 verifier skips the v1a token and accepts either secret.
        assert_eq!(verify(&b, ID, TS, BODY, &header, TS, 300), Ok(()));
    }

    #[test]
    fn generated_secrets_have_32_bytes() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
    }
}
