use switchyard_shared::webhooks::signing;

/// Standard Webhooks reference vector (libraries/rust/src/lib.rs `test_sign`).
#[test]
fn signature_matches_the_standard_webhooks_golden_vector() {
    let key = signing::secret_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    let sig = signing::sign(
        &key,
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1_649_367_553,
        br#"{"email":"test@example.com","username":"test_user"}"#,
    );
    assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
}

mod end_to_end {
    use std::time::Duration;

    use base64::{Engine, engine::general_purpose::STANDARD};
    use serde_json::{Value, json};
    use switchyard_tests::{
        Behaviour, PartnerServer, Received, Reply, TestApp, TestOptions, eventually, problem,
        verify_signature,
    };

    /// The n-th request the partner receives.
    async fn nth(partner: &PartnerServer, n: usize) -> Received {
        eventually(Duration::from_secs(10), "a webhook", || async {
            partner.received().get(n).cloned()
        })
        .await
    }

    /// A third-party verifier's rule for a rotation: every `v1` token in the header must be
    /// the signature of one of the secrets, and each secret must have signed.
    fn tokens_match_secrets(hook: &Received, secrets: &[&str]) {
        let header = hook.header("webhook-signature");
        let tokens: Vec<&str> = header.split(' ').filter(|t| t.starts_with("v1,")).collect();
        assert_eq!(tokens.len(), secrets.len(), "{header}");
        for secret in secrets {
            assert!(
                verify_signature(
                    secret,
                    hook.header("webhook-id"),
                    hook.header("webhook-timestamp"),
                    &hook.body,
                    header
                ),
                "a token signed with {secret}"
            );
        }
        for token in tokens {
            assert!(
                secrets.iter().any(|s| verify_signature(
                    s,
                    hook.header("webhook-id"),
                    hook.header("webhook-timestamp"),
                    &hook.body,
                    token
                )),
                "token {token} verifies with one of the secrets"
            );
        }
    }

    #[tokio::test]
    async fn rotated_secrets_sign_until_their_grace_period_ends() {
        let app = TestApp::spawn(TestOptions::default()).await;
        let partner = PartnerServer::start(Behaviour::Status(200)).await;
        let (_, key) = app.partner_account().await;
        let (id, first) = app.create_endpoint(&key, &partner.url, &["*"]).await;
        let rotate = |body: Value| {
            let (app, key, id) = (&app, &key, &id);
            async move {
                let r = app
                    .partner_post(
                        key,
                        &format!("/v1/webhook-endpoints/{id}/secret/rotate"),
                        body,
                    )
                    .await;
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()
            }
        };

        let r = rotate(json!({ "grace_period": "1h" })).await;
        let second = r["secret"].as_str().unwrap().to_owned();
        assert!(second.starts_with("whsec_") && second != first);
        assert!(r["previous_secret_expires_at"].is_string());
        assert_eq!(app.post_order(&key, "ord-rot-1").await.status(), 201);
        tokens_match_secrets(&nth(&partner, 0).await, &[&second, &first]);

        // A zero grace period drops the replaced secret at once; the first one still signs.
        let own = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        let r = rotate(json!({ "grace_period": "0s", "secret": own })).await;
        assert_eq!(r["secret"], own.as_str());
        assert_eq!(r["previous_secret_expires_at"], Value::Null);
        assert_eq!(app.post_order(&key, "ord-rot-2").await.status(), 201);
        tokens_match_secrets(&nth(&partner, 1).await, &[&own, &first]);

        // A short grace period: the replaced secret signs until it ends, then never again.
        let r = rotate(json!({ "grace_period": "2s" })).await;
        let third = r["secret"].as_str().unwrap().to_owned();
        assert_eq!(app.post_order(&key, "ord-rot-3").await.status(), 201);
        tokens_match_secrets(&nth(&partner, 2).await, &[&third, &own, &first]);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(app.post_order(&key, "ord-rot-4").await.status(), 201);
        tokens_match_secrets(&nth(&partner, 3).await, &[&third, &first]);

        let bad = app
            .partner_post(
                &key,
                &format!("/v1/webhook-endpoints/{id}/secret/rotate"),
                json!({ "grace_period": "8d" }),
            )
            .await;
        problem(bad, 400, "parameter_invalid", Some("grace_period")).await;
    }

    #[tokio::test]
    async fn ed25519_signatures_verify_with_the_published_key() {
        let app = TestApp::spawn(TestOptions::default()).await;
        let partner = PartnerServer::start(Behaviour::Status(200)).await;
        let (_, key) = app.partner_account().await;
        let ep = app
            .create_endpoint_with(&key, json!({ "url": partner.url, "ed25519_signing": true }))
            .await;
        let public = ep["public_key"].as_str().unwrap();
        assert!(public.starts_with("whpk_"));
        // The key is on the endpoint for anyone holding webhooks:read.
        let got = app
            .partner_get(
                &key,
                &format!("/v1/webhook-endpoints/{}", ep["id"].as_str().unwrap()),
            )
            .await;
        assert_eq!(got["public_key"], public);

        assert_eq!(app.post_order(&key, "ord-ed").await.status(), 201);
        let hook = nth(&partner, 0).await;
        let header = hook.header("webhook-signature");
        let v1a = header
            .split(' ')
            .find_map(|t| t.strip_prefix("v1a,"))
            .expect("a v1a token");
        let content = [
            hook.header("webhook-id").as_bytes(),
            b".",
            hook.header("webhook-timestamp").as_bytes(),
            b".",
            &hook.body,
        ]
        .concat();
        let pk = STANDARD
            .decode(public.strip_prefix("whpk_").unwrap())
            .unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &pk)
            .verify(&content, &STANDARD.decode(v1a).unwrap())
            .expect("v1a verifies with the published key");
        // v1 verifiers, which skip v1a, still accept the header.
        assert!(verify_signature(
            ep["secret"].as_str().unwrap(),
            hook.header("webhook-id"),
            hook.header("webhook-timestamp"),
            &hook.body,
            header
        ));
    }

    #[tokio::test]
    async fn endpoint_auth_and_headers_are_sent_but_never_shown_or_logged() {
        let app = TestApp::spawn(TestOptions::default()).await;
        let partner = PartnerServer::start(Behaviour::Status(200)).await;
        let (_, key) = app.partner_account().await;
        let ep = app
            .create_endpoint_with(
                &key,
                json!({
                    "url": partner.url,
                    "headers": { "X-Api-Token": "tok-SECRET-1", "X-Tenant": "acme" },
                    "auth": { "type": "basic", "username": "erp", "password": "pw-SECRET-2" }
                }),
            )
            .await;
        let id = ep["id"].as_str().unwrap();
        assert_eq!(ep["headers"], json!(["x-api-token", "x-tenant"]));
        assert_eq!(ep["auth_type"], "basic");
        assert!(
            !ep.to_string().contains("SECRET"),
            "values never shown: {ep}"
        );

        assert_eq!(app.post_order(&key, "ord-auth-1").await.status(), 201);
        let hook = nth(&partner, 0).await;
        assert_eq!(hook.header("x-api-token"), "tok-SECRET-1");
        assert_eq!(hook.header("x-tenant"), "acme");
        assert_eq!(
            hook.header("authorization"),
            format!("Basic {}", STANDARD.encode("erp:pw-SECRET-2"))
        );

        // Switch to bearer auth and drop the headers.
        let r = app
            .partner_patch(
                &key,
                &format!("/v1/webhook-endpoints/{id}"),
                json!({ "auth": { "type": "bearer", "token": "bearer-SECRET-3" }, "headers": null }),
            )
            .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["auth_type"], "bearer");
        assert_eq!(v["headers"], json!([]));
        assert_eq!(app.post_order(&key, "ord-auth-2").await.status(), 201);
        let hook = nth(&partner, 1).await;
        assert_eq!(hook.header("authorization"), "Bearer bearer-SECRET-3");
        assert_eq!(hook.header("x-api-token"), "");

        // The attempt log redacts the values; nothing secret is stored in clear anywhere.
        let log = eventually(Duration::from_secs(5), "two attempts", || async {
            let v = app
                .partner_get(&key, &format!("/v1/webhook-endpoints/{id}/attempts"))
                .await;
            (v["data"].as_array().unwrap().len() == 2).then_some(v)
        })
        .await;
        assert!(!log.to_string().contains("SECRET"), "{log}");
        let first = &log["data"][1]["request_headers"];
        assert!(
            first
                .as_array()
                .unwrap()
                .contains(&json!(["authorization", "[redacted]"]))
        );
        assert!(
            first
                .as_array()
                .unwrap()
                .contains(&json!(["x-api-token", "[redacted]"]))
        );
        let dump: String = sqlx::query_scalar(
            "SELECT (SELECT string_agg(t::text, '') FROM webhook_attempts t)
                 || (SELECT string_agg(e::text, '') FROM webhook_endpoints e)",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert!(
            !dump.contains("SECRET"),
            "no credential in clear in the database"
        );

        for (body, code, param) in [
            (
                json!({ "headers": { "Authorization": "x" } }),
                "parameter_invalid",
                "headers.Authorization",
            ),
            (
                json!({ "headers": { "webhook-id": "x" } }),
                "parameter_invalid",
                "headers.webhook-id",
            ),
            (
                json!({ "auth": { "type": "basic", "username": "u" } }),
                "parameter_missing",
                "auth.password",
            ),
            (
                json!({ "auth": { "type": "digest" } }),
                "parameter_invalid",
                "auth.type",
            ),
        ] {
            let r = app
                .partner_patch(&key, &format!("/v1/webhook-endpoints/{id}"), body)
                .await;
            problem(r, 400, code, Some(param)).await;
        }
    }

    /// Secrets reach the partner and nowhere else: an API and a worker process logging at
    /// debug level through creation, failing sends, a rotation and a PATCH never write one.
    #[tokio::test]
    async fn no_secret_is_ever_written_to_a_log() {
        use switchyard_tests::process::{Process, WorkerProcess};

        let mut app = TestApp::spawn(TestOptions::default()).await;
        app.stop_workers().await;
        let partner = PartnerServer::start(Behaviour::Status(500)).await;
        let tenant = app.create_tenant("Partner").await;
        let scopes = ["webhooks:write", "orders:write", "integrations:write"];
        let (_, key) = app.create_key(&tenant, Some(&scopes)).await;
        let env: Vec<(String, String)> = app
            .process_env()
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "RUST_LOG" => (k, "debug".into()),
                "SWITCHYARD_RETRY_SCHEDULE" => (k, "100ms,100ms".into()),
                _ => (k, v),
            })
            .collect();
        let (api, base) = Process::spawn_api(&env).await;
        let worker = WorkerProcess::spawn(&env);
        let call = |method: reqwest::Method, path: String, body: Value| {
            let (http, key, base) = (app.http.clone(), key.clone(), base.clone());
            async move {
                let r = http
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{path}: {}", r.status());
                r.json::<Value>().await.unwrap()
            }
        };
        let ep = call(
            reqwest::Method::POST,
            "/v1/webhook-endpoints".into(),
            json!({
                "url": partner.url,
                "headers": { "X-Api-Token": "tok-SECRET-1" },
                "auth": { "type": "bearer", "token": "bearer-SECRET-2" }
            }),
        )
        .await;
        let id = ep["id"].as_str().unwrap().to_owned();
        let mut secrets = vec![ep["secret"].as_str().unwrap().to_owned()];
        let rotated = call(
            reqwest::Method::POST,
            format!("/v1/webhook-endpoints/{id}/secret/rotate"),
            json!({}),
        )
        .await;
        secrets.push(rotated["secret"].as_str().unwrap().to_owned());
        call(
            reqwest::Method::PATCH,
            format!("/v1/webhook-endpoints/{id}"),
            json!({ "auth": { "type": "basic", "username": "erp", "password": "pw-SECRET-3" } }),
        )
        .await;
        let order = TestApp::order_body("ord-no-log");
        call(reqwest::Method::POST, "/v1/orders".into(), order).await;
        eventually(Duration::from_secs(15), "three failed attempts", || async {
            (partner.count() == 3).then_some(())
        })
        .await;
        // Integration credentials, used for connection checks and replaced; an inbound
        // secret, verified against (and refusing a bad signature).
        let integration = call(
            reqwest::Method::POST,
            "/v1/integrations".into(),
            json!({
                "name": "ERP", "code": "erp", "type": "erp", "provider": "http",
                "base_url": partner.url,
                "credentials": { "bearer_token": "erp-token-SECRET-4" },
                "inbound": { "scheme": "github", "secret": "inbound-SECRET-5",
                             "action": { "type": "store" } }
            }),
        )
        .await;
        let iid = integration["id"].as_str().unwrap().to_owned();
        let test = format!("/v1/integrations/{iid}/test");
        let checked = call(reqwest::Method::POST, test.clone(), json!({})).await;
        assert_eq!(checked["ok"], false, "the partner answers 500: {checked}");
        call(
            reqwest::Method::PATCH,
            format!("/v1/integrations/{iid}"),
            json!({ "credentials": { "bearer_token": "erp-token-SECRET-6" } }),
        )
        .await;
        call(reqwest::Method::POST, test, json!({})).await;
        let inbound = integration["inbound_url"].as_str().unwrap();
        let r = app
            .http
            .post(format!("{base}{inbound}"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", "sha256=00")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(
            api.log_text().contains("/v1/integrations"),
            "the API logged the integration calls"
        );
        let basic = STANDARD.encode("erp:pw-SECRET-3");
        for (name, log) in [("api", api.log_text()), ("worker", worker.log_text())] {
            assert!(log.lines().count() > 5, "the {name} logged: {log}");
            assert!(!log.contains("SECRET"), "a credential in the {name} log");
            assert!(!log.contains(&basic), "basic auth in the {name} log");
            assert!(!log.contains(&key), "the API key in the {name} log");
            for s in &secrets {
                assert!(
                    !log.contains(s.as_str()),
                    "a signing secret in the {name} log"
                );
                let raw = s.trim_start_matches("whsec_");
                assert!(
                    !log.contains(raw),
                    "a signing secret's bytes in the {name} log"
                );
            }
        }
    }

    /// What a receiver answers is logged as it can be stored, never with a secret in it: a
    /// body quoting the endpoint's credentials back is redacted, a NUL character (which
    /// Postgres' text refuses) is replaced, and a 2xx with a body too large to keep is a
    /// delivery all the same.
    #[tokio::test]
    async fn what_a_receiver_answers_is_logged_without_secrets_or_nul_and_any_2xx_delivers() {
        let app = TestApp::spawn(TestOptions::default()).await;
        let echo = Reply {
            body: Some(
                "you sent: Bearer tok-ECHOED-7 and X-Key key-ECHOED-8\0 (debug true).".into(),
            ),
            ..Reply::status(200)
        };
        let huge = Reply {
            body: Some("x".repeat(2 << 20)),
            ..Reply::status(200)
        };
        let partner = PartnerServer::start(Behaviour::Replies(vec![echo])).await;
        let big = PartnerServer::start(Behaviour::Replies(vec![huge])).await;
        let (_, key) = app.partner_account().await;
        let ep = app
            .create_endpoint_with(
                &key,
                json!({"url": partner.url, "headers": {"X-Key": "key-ECHOED-8", "X-Debug": "true"},
                       "auth": {"type": "bearer", "token": "tok-ECHOED-7"},
                       "retry_schedule": ["100ms"]}),
            )
            .await;
        let other = app
            .create_endpoint_with(&key, json!({"url": big.url, "retry_schedule": ["100ms"]}))
            .await;
        assert_eq!(app.post_order(&key, "ord-echo").await.status(), 201);
        for (ep, what) in [(&ep, "the echo"), (&other, "the large body")] {
            let id = ep["id"].as_str().unwrap();
            let log = eventually(Duration::from_secs(10), what, || async {
                let v = app
                    .partner_get(&key, &format!("/v1/webhook-endpoints/{id}/attempts"))
                    .await;
                (!v["data"].as_array().unwrap().is_empty()).then_some(v)
            })
            .await;
            let attempts = log["data"].as_array().unwrap();
            assert_eq!(attempts.len(), 1, "one attempt, delivered: {log}");
            assert!(attempts[0]["error_class"].is_null(), "{log}");
        }
        let id = ep["id"].as_str().unwrap();
        let log = app
            .partner_get(&key, &format!("/v1/webhook-endpoints/{id}/attempts"))
            .await;
        let body = log["data"][0]["response_body"].as_str().unwrap();
        // A short, common header value (`true`) is left: it is no credential.
        assert_eq!(
            body,
            "you sent: [redacted] and X-Key [redacted]\u{FFFD} (debug true)."
        );
        assert_eq!(big.count(), 1, "sent once");
    }
}
