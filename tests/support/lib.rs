//! Test harness: every test gets its own database (cloned from a migrated template), its own
//! Redis key prefix, its own API (and worker) on ephemeral ports, and partner servers that play
//! the outside world. Nothing is shared between tests, so they run in parallel and repeat.

pub mod app;
pub mod browser;
pub mod dashboard;
pub mod db;
pub mod erp;
pub mod mariadb;
pub mod partner;
pub mod process;
pub mod rest_erp;
pub mod smtp;

pub use app::{TestApp, TestOptions};
pub use erp::ErpServer;
pub use partner::{Behaviour, PartnerServer, Received, Reply};
pub use smtp::SmtpServer;

use std::time::{Duration, Instant};

/// Fixed development secrets for tests (never used outside them).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const MASTER_KEYS: &str = "test1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const PEPPER: &str = "cGVwcGVyLXBlcHBlci1wZXBwZXItcGVwcGVyLXBlcHBlcg==";

/// A well-formed key with a valid checksum under the test pepper that no tenant has (what a
/// leaked pepper would let anyone mint).
pub fn unknown_valid_key() -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let pepper = STANDARD.decode(PEPPER).expect("test pepper is base64");
    switchyard_shared::api_keys::generate(&pepper, switchyard_shared::api_keys::Mode::Live).1
}

/// A well-formed key minted without the server's pepper: what anyone can make.
pub fn forged_key() -> String {
    switchyard_shared::api_keys::generate(
        b"not-the-servers-pepper-0123456789",
        switchyard_shared::api_keys::Mode::Live,
    )
    .1
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Verifies a Standard Webhooks signature independently of the code under test.
pub fn verify_signature(secret: &str, id: &str, ts: &str, body: &[u8], header: &str) -> bool {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use hmac::{Hmac, KeyInit, Mac};
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("secret is base64");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    header.split(' ').any(|t| t == expected)
}

/// Asserts a problem+json response and returns its body.
pub async fn problem(
    r: reqwest::Response,
    status: u16,
    code: &str,
    param: Option<&str>,
) -> serde_json::Value {
    assert_eq!(r.status(), status, "status for {code}");
    let request_id = r
        .headers()
        .get("request-id")
        .expect("request-id header")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], status);
    assert_eq!(v["type"], format!("https://switchyard.dev/problems/{code}"));
    assert!(!v["title"].as_str().unwrap().is_empty());
    assert!(!v["detail"].as_str().unwrap().is_empty());
    assert_eq!(v["request_id"], request_id.as_str());
    assert_eq!(v["param"].as_str(), param, "{v}");
    v
}
