//! Small cryptographic building blocks: random tokens, HMAC, constant-time comparison and
//! AES-256-GCM encryption of secrets at rest with a keyring (docs/architecture.md §4).

use aes_gcm::{
    Aes256Gcm, Nonce,
    aead::{Aead, KeyInit, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` random bytes from the thread-local CSPRNG (ChaCha seeded by the OS).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    rand::random::<[u8; N]>()
}

/// A random base62 string of `len` characters (≈5.95 bits each), without modulo bias.
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<64>() {
            // 248 = 4 * 62: rejecting larger bytes keeps the distribution uniform.
            if b < 248 && out.len() < len {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    out
}

/// Encodes `n` as exactly `width` base62 digits (most significant first).
pub fn base62_fixed(mut n: u64, width: usize) -> String {
    let mut buf = vec![b'0'; width];
    for slot in buf.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(buf).expect("base62 is ascii")
}

pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// One AES-256 key of the keyring, named so ciphertexts remember which key made them.
#[derive(Clone)]
struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
}

/// The keys that protect secrets at rest. The first encrypts; all decrypt (rotation).
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("keyring is malformed: {0}")]
    Keyring(String),
    #[error("unknown key id `{0}`")]
    UnknownKey(String),
    #[error("ciphertext failed authentication")]
    Decrypt,
}

const NONCE_LEN: usize = 12;

impl Keyring {
    /// Parses `id:base64(32 bytes)[,id:base64…]`.
    pub fn parse(spec: &str) -> Result<Self, CryptoError> {
        let mut keys = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, b64) = part
                .split_once(':')
                .ok_or_else(|| CryptoError::Keyring("expected id:base64key".into()))?;
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| CryptoError::Keyring(format!("key `{id}` is not base64")))?;
            if raw.len() != 32 {
                return Err(CryptoError::Keyring(format!(
                    "key `{id}` must be 32 bytes, got {}",
                    raw.len()
                )));
            }
            let cipher = Aes256Gcm::new_from_slice(&raw)
                .map_err(|_| CryptoError::Keyring("bad key length".into()))?;
            keys.push(MasterKey {
                id: id.to_owned(),
                cipher,
            });
        }
        if keys.is_empty() {
            return Err(CryptoError::Keyring("no keys".into()));
        }
        Ok(Keyring { keys })
    }

    /// The key new values are sealed with.
    pub fn active_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Every key id, the active one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// A fresh single-key keyring spec, for development.
    pub fn generate_spec() -> String {
        format!("dev1:{}", STANDARD.encode(random_bytes::<32>()))
    }

    /// Encrypts with the active key; `aad` binds the ciphertext to where it is stored.
    /// Returns `(key_id, nonce || ciphertext || tag)`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> (String, Vec<u8>) {
        let key = &self.keys[0];
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let nonce = Nonce::try_from(&nonce_bytes[..]).expect("12-byte nonce");
        let ct = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of in-memory data cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        (key.id.clone(), out)
    }

    pub fn open(&self, key_id: &str, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_owned()))?;
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError::Decrypt)?;
        key.cipher
            .decrypt(&nonce, Payload { msg: ct, aad })
            .map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let ring = Keyring::parse(&Keyring::generate_spec()).unwrap();
        let (kid, sealed) = ring.seal(b"whsec_secret", b"row-1");
        assert_eq!(ring.open(&kid, &sealed, b"row-1").unwrap(), b"whsec_secret");
        // The same ciphertext moved to another row must not decrypt.
        assert!(matches!(
            ring.open(&kid, &sealed, b"row-2"),
            Err(CryptoError::Decrypt)
        ));
        assert!(matches!(
            ring.open("nope", &sealed, b"row-1"),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_readable() {
        let old = Keyring::generate_spec();
        let ring_old = Keyring::parse(&old).unwrap();
        let (kid, sealed) = ring_old.seal(b"x", b"a");
        let new = format!("{},{}", Keyring::generate_spec().replace("dev1", "k2"), old);
        let ring_new = Keyring::parse(&new).unwrap();
        assert_eq!(ring_new.open(&kid, &sealed, b"a").unwrap(), b"x");
        assert_eq!(ring_new.seal(b"y", b"a").0, "k2");
    }

    #[test]
    fn keyring_rejects_bad_specs() {
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse("k1").is_err());
        assert!(Keyring::parse("k1:notbase64!").is_err());
        assert!(Keyring::parse("k1:AAAA").is_err());
    }

    #[test]
    fn base62_helpers() {
        let s = random_base62(40);
        assert_eq!(s.len(), 40);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(base62_fixed(0, 3), "000");
        assert_eq!(base62_fixed(61, 2), "0z");
        assert_eq!(base62_fixed(62, 2), "10");
    }
}
