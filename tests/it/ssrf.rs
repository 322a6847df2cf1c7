//! Outbound requests cannot be turned against our own network: URLs are vetted when an
//! endpoint is created or changed and again at every attempt.

use std::time::Duration;

use serde_json::json;
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually, problem};

#[tokio::test]
async fn private_targets_in_any_notation_are_refused_when_an_endpoint_is_created() {
    let app = TestApp::spawn(TestOptions {
        allow_private: false,
        with_worker: false,
        ..Default::default()
    })
    .await;
    let (_, key) = app.partner_account().await;
    for url in [
        "http://127.0.0.1/hook",
        "http://2130706433/hook",                   // decimal
        "http://0x7f000001/hook",                   // hex
        "http://0177.0.0.1/hook",                   // octal
        "http://0x7f.1/hook",                       // mixed short form
        "http://10.0.0.1/hook",                     // private
        "http://100.64.1.1/hook",                   // CGNAT
        "http://169.254.169.254/latest/meta-data/", // cloud metadata
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",   // IPv4-mapped
        "http://[::ffff:a9fe:a9fe]/hook",   // mapped metadata
        "http://[64:ff9b::7f00:1]/hook",    // NAT64
        "http://[2002:7f00:1::]/hook",      // 6to4
        "http://[fd00:ec2::254]/hook",      // AWS metadata (ULA)
        "http://[fe80::1]/hook",            // link-local
        "http://[::ffff:0:7f00:1]/hook",    // SIIT (::ffff:0:0/96)
        "http://[::ffff:0:a9fe:a9fe]/hook", // SIIT metadata
        "http://[::1:0:0:1]/hook",          // the rest of ::/8
        "http://[80::1]/hook",              // the rest of ::/8
        "http://localhost:9/hook",          // a name that resolves to loopback
    ] {
        let r = app
            .partner_post(&key, "/v1/webhook-endpoints", json!({ "url": url }))
            .await;
        problem(r, 400, "url_not_allowed", Some("url")).await;
    }
    for url in ["ftp://example.com/", "https://user:pw@example.com/hook"] {
        let r = app
            .partner_post(&key, "/v1/webhook-endpoints", json!({ "url": url }))
            .await;
        problem(r, 400, "parameter_invalid", Some("url")).await;
    }
    // Nothing was written.
    assert_eq!(app.count("SELECT count(*) FROM webhook_endpoints").await, 0);
}

#[tokio::test]
async fn every_attempt_checks_the_address_again_and_the_allowlist_opens_only_its_networks() {
    // Private targets are closed; only 127.0.0.2 is opened, where the partner listens.
    let app = TestApp::spawn(TestOptions {
        allow_private: false,
        outbound_allowlist: "127.0.0.2/32".into(),
        retry_schedule: String::new(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start_on("127.0.0.2", Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    let (ok, _) = app.create_endpoint(&key, &partner.url, &["*"]).await;

    // Changing the URL to a name that resolves to 127.0.0.1 is refused …
    let port = partner
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let moved = format!("http://localhost:{port}/hook");
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/webhook-endpoints/{ok}"),
            json!({ "url": moved }),
        )
        .await;
    problem(r, 400, "url_not_allowed", Some("url")).await;

    // … and a name that starts resolving to a blocked address after the endpoint was vetted
    // (DNS rebinding; simulated by changing the stored URL) is refused at the attempt.
    let (rebound, _) = app.create_endpoint(&key, &partner.url, &["*"]).await;
    sqlx::query("UPDATE webhook_endpoints SET url = $1 WHERE id = $2::uuid")
        .bind(&moved)
        .bind(&rebound)
        .execute(&app.pool)
        .await
        .unwrap();

    assert_eq!(app.post_order(&key, "ord-ssrf").await.status(), 201);
    let classes = eventually(Duration::from_secs(10), "both attempts", || async {
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT endpoint_id::text, error_class, error_message FROM webhook_attempts",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        (rows.len() == 2).then_some(rows)
    })
    .await;
    for (endpoint, class, message) in classes {
        if endpoint == ok {
            assert_eq!(class, None, "the allowlisted partner is reachable");
        } else {
            assert_eq!(class.as_deref(), Some("blocked_address"), "{message:?}");
            // `localhost` may resolve to either loopback first; the message names the address.
            let message = message.unwrap();
            assert!(
                message.contains("127.0.0.1") || message.contains("::1"),
                "{message}"
            );
        }
    }
    assert_eq!(partner.count(), 1, "only the vetted endpoint was called");
}
