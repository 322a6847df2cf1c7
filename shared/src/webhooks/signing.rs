//! Standard Webhooks signatures (v1 = HMAC-SHA256 over `"{id}.{timestamp}.{body}"`).

use base64::{Engine, engine::general_purpose::STANDARD};

use crate::crypto::{constant_time_eq, hmac_sha256, random_bytes};

const SECRET_PREFIX: &str = "whsec_";

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
    fn generated_secrets_have_32_bytes() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
    }
}
