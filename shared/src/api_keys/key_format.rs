//! The text of a key: `sy_<mode>_<key id>_<secret><checksum>`, its keyed checksum, and its
//! stored hash.

use super::Mode;
use crate::crypto::{base62_fixed, hmac_sha256, random_base62};

const KEY_ID_LEN: usize = 12;
const SECRET_LEN: usize = 36;
const CHECK_LEN: usize = 6;
/// A key as parsed from a request, before any database lookup.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub mode: Mode,
    pub key_id: &'a str,
    /// The key carries a CRC32 checksum from before keyed checksums: it is only valid if its
    /// key id is one of those legacy keys.
    pub legacy: bool,
}

/// Checks the shape and checksum of a presented key: the keyed checksum, or a legacy CRC32.
pub fn parse<'a>(pepper: &[u8], key: &'a str) -> Option<ParsedKey<'a>> {
    let (mode, rest) = if let Some(r) = key.strip_prefix("sy_live_") {
        (Mode::Live, r)
    } else if let Some(r) = key.strip_prefix("sy_test_") {
        (Mode::Test, r)
    } else {
        return None;
    };
    let (key_id, tail) = rest.split_once('_')?;
    if key_id.len() != KEY_ID_LEN
        || tail.len() != SECRET_LEN + CHECK_LEN
        || !key_id.bytes().all(|b| b.is_ascii_alphanumeric())
        || !tail.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let (body, check) = key.split_at(key.len() - CHECK_LEN);
    let legacy =
        if crate::crypto::constant_time_eq(checksum(pepper, body).as_bytes(), check.as_bytes()) {
            false
        } else if legacy_checksum(body) == check {
            true
        } else {
            return None;
        };
    Some(ParsedKey {
        mode,
        key_id,
        legacy,
    })
}

/// The keyed checksum: HMAC-SHA256 under a key derived from the pepper, truncated to six
/// base62 characters.
fn checksum(pepper: &[u8], body: &str) -> String {
    let key = hmac_sha256(pepper, &[b"switchyard api key checksum v2"]);
    let mac = hmac_sha256(&key, &[body.as_bytes()]);
    let n = u64::from_be_bytes(mac[..8].try_into().expect("8 bytes"));
    base62_fixed(n, CHECK_LEN)
}

/// The unkeyed CRC32 checksum of keys made before keyed checksums.
fn legacy_checksum(body: &str) -> String {
    base62_fixed(u64::from(crc32fast::hash(body.as_bytes())), CHECK_LEN)
}

/// Mints a new key: returns `(key_id, full key)`.
pub fn generate(pepper: &[u8], mode: Mode) -> (String, String) {
    let key_id = random_base62(KEY_ID_LEN);
    let body = format!(
        "sy_{}_{}_{}",
        mode.as_str(),
        key_id,
        random_base62(SECRET_LEN)
    );
    let key = format!("{body}{}", checksum(pepper, &body));
    (key_id, key)
}

pub fn hash(pepper: &[u8], key: &str) -> [u8; 32] {
    hmac_sha256(pepper, &[key.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEPPER: &[u8] = b"pepper-pepper-pepper-pepper-pepper";

    #[test]
    fn generated_keys_parse_and_carry_their_mode() {
        for mode in [Mode::Live, Mode::Test] {
            let (key_id, key) = generate(PEPPER, mode);
            let parsed = parse(PEPPER, &key).expect("valid key parses");
            assert_eq!(parsed.mode, mode);
            assert_eq!(parsed.key_id, key_id);
            assert!(!parsed.legacy);
            // id (12) + secret (36) + checksum (6) + "sy_live_" (8) + "_" (1)
            assert_eq!(key.len(), 63);
        }
    }

    #[test]
    fn mistyped_or_forged_keys_fail_the_keyed_checksum() {
        let (_, key) = generate(PEPPER, Mode::Live);
        // One character of the secret changed: the shape is fine, the checksum is not.
        let mut bytes = key.clone().into_bytes();
        let i = 30;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).unwrap();
        assert_eq!(parse(PEPPER, &typo), None);
        // A key minted with another pepper (anyone's forgery) does not parse here.
        let (_, forged) = generate(b"somebody-elses-pepper-0123456789", Mode::Live);
        assert_eq!(parse(PEPPER, &forged), None);
        assert_eq!(parse(PEPPER, "sy_live_short"), None);
        assert_eq!(parse(PEPPER, "sk_live_123"), None);
        assert_eq!(parse(PEPPER, ""), None);
    }

    #[test]
    fn legacy_crc_keys_parse_as_legacy() {
        let body = format!(
            "sy_live_{}_{}",
            "a".repeat(KEY_ID_LEN),
            "b".repeat(SECRET_LEN)
        );
        let key = format!("{body}{}", legacy_checksum(&body));
        assert!(parse(PEPPER, &key).unwrap().legacy);
    }

    #[test]
    fn hashes_are_hmac_sha256_under_the_pepper() {
        // RFC 4231 test case 2: HMAC-SHA256(key "Jefe", "what do ya want for nothing?").
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let got: String = hash(b"Jefe", "what do ya want for nothing?")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(hash(PEPPER, "k"), hash(PEPPER, "k"));
        assert_ne!(hash(b"pepper-one", "k"), hash(b"pepper-two", "k"));
    }
}
