//! Integrations and the credential vault: credentials are write-only, sealed one by one, bound
//! to their row, and visible nowhere (responses, the database's plain text).

use serde_json::{Value, json};
use switchyard_tests::{TestApp, TestOptions, problem};

const TOKEN: &str = "erp-bearer-token-7f3a9c2e41d8b605";
const PASSWORD: &str = "s3cr3t-pw";

async fn integration_key(app: &TestApp) -> String {
    let tenant = app.create_tenant("Integrator").await;
    app.create_key(&tenant, Some(&["integrations:write"]))
        .await
        .1
}

fn erp_body(code: &str) -> Value {
    json!({
        "name": "Main ERP", "code": code, "type": "erp", "provider": "http",
        "base_url": "https://erp.example/api",
        "config": {"health_path": "/health", "plant": "north"},
        "credentials": {"bearer_token": TOKEN, "password": PASSWORD},
    })
}

#[tokio::test]
async fn credentials_are_write_only_fingerprinted_and_nowhere_in_plain_text() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let key = integration_key(&app).await;
    let r = app
        .partner_post(&key, "/v1/integrations", erp_body("erp-main"))
        .await;
    assert_eq!(r.status(), 201);
    let text = r.text().await.unwrap();
    assert!(!text.contains(TOKEN) && !text.contains(PASSWORD), "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["type"], "erp");
    assert_eq!(created["status"], "active");
    assert_eq!(created["connection_status"], "unknown");
    assert_eq!(created["config"]["plant"], "north");
    let token = &created["credentials"]["bearer_token"];
    assert!(token["fingerprint"].as_str().unwrap().starts_with("fp_"));
    assert_eq!(token["last4"], "b605");
    // A short value shows no tail: four characters of nine give too much away.
    assert_eq!(created["credentials"]["password"]["last4"], Value::Null);

    // Replace one credential, delete another, add a third; the rest stays.
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/integrations/{id}"),
            json!({"credentials": {"password": null, "api_key": "key-0123456789abcdef"},
                   "status": "testing"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    let names: Vec<&String> = updated["credentials"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["api_key", "bearer_token"]);
    assert_eq!(updated["credentials"]["bearer_token"], *token);
    assert_eq!(updated["status"], "testing");
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/integrations/{id}"),
            json!({"credentials": {"bearer_token": "another-token-value-1234"}}),
        )
        .await;
    let rotated: Value = r.json().await.unwrap();
    assert_ne!(
        rotated["credentials"]["bearer_token"]["fingerprint"],
        token["fingerprint"]
    );
    assert_eq!(rotated["credentials"]["bearer_token"]["last4"], "1234");

    let listed = app.partner_get(&key, "/v1/integrations").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let got = app
        .partner_get(&key, &format!("/v1/integrations/{id}"))
        .await;
    assert_eq!(got["credentials"], rotated["credentials"]);

    // Every change is audited by credential name; values never enter the log.
    let audit: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, changes::text FROM audit_events WHERE target_id = $1::uuid ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(
        actions,
        [
            "integration.created",
            "integration.updated",
            "integration.updated"
        ]
    );
    assert!(
        audit[1]
            .1
            .contains("\"credentials_deleted\": [\"password\"]"),
        "{}",
        audit[1].1
    );

    // A plain-text dump of the whole database holds none of the values.
    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", "--no-owner", &app.db.url])
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("integration_credentials"));
    for secret in [
        TOKEN,
        PASSWORD,
        "key-0123456789abcdef",
        "another-token-value-1234",
    ] {
        assert!(!dump.contains(secret), "`{secret}` is in the dump");
    }

    // Deleting erases the credentials at once; the integration is gone from the API.
    let r = app
        .http
        .delete(app.url(&format!("/v1/integrations/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let left = app
        .count("SELECT count(*) FROM integration_credentials")
        .await;
    assert_eq!(left, 0);
    let r = app
        .http
        .get(app.url(&format!("/v1/integrations/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    problem(r, 404, "resource_not_found", None).await;
    // Its code is free again.
    let r = app
        .partner_post(&key, "/v1/integrations", erp_body("erp-main"))
        .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn bad_input_is_refused_with_the_offending_parameter() {
    let app = TestApp::spawn(TestOptions {
        with_worker: false,
        allow_private: false,
        ..Default::default()
    })
    .await;
    let key = integration_key(&app).await;
    let r = app
        .partner_post(&key, "/v1/integrations", erp_body("dup"))
        .await;
    assert_eq!(r.status(), 201);
    let dup: Value = r.json().await.unwrap();
    let r = app
        .partner_post(&key, "/v1/integrations", erp_body("dup"))
        .await;
    problem(r, 409, "integration_code_taken", Some("code")).await;

    let cases = [
        (
            json!({"credentials": {"Bearer-Token": "x"}}),
            "credentials.Bearer-Token",
        ),
        (
            json!({"config": {"health_path": "health"}}),
            "config.health_path",
        ),
        (
            json!({"config": {"health_interval": "5s"}}),
            "config.health_interval",
        ),
        (
            json!({"config": {"api_key_header": "x key"}}),
            "config.api_key_header",
        ),
        (json!({"config": {"blob": "x".repeat(17 * 1024)}}), "config"),
        (
            json!({"base_url": "http://169.254.169.254/latest"}),
            "base_url",
        ),
        (json!({"base_url": "ftp://erp.example/"}), "base_url"),
        // Headers that frame the request or that Switchyard sets cannot carry the key.
        (
            json!({"config": {"api_key_header": "Content-Length"}}),
            "config.api_key_header",
        ),
        (
            json!({"config": {"api_key_header": "webhook-signature"}}),
            "config.api_key_header",
        ),
    ];
    for (i, (patch, param)) in cases.into_iter().enumerate() {
        let mut body = erp_body(&format!("case-{i}"));
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = app.partner_post(&key, "/v1/integrations", body).await;
        let code = if param == "base_url" && i == 5 {
            "url_not_allowed"
        } else {
            "parameter_invalid"
        };
        problem(r, 400, code, Some(param)).await;
    }
    // A change is held to the same rules as a creation.
    let path = format!("/v1/integrations/{}", dup["id"].as_str().unwrap());
    for header in ["Host", "Webhook-Signature", "x key"] {
        let r = app
            .partner_patch(&key, &path, json!({"config": {"api_key_header": header}}))
            .await;
        problem(r, 400, "parameter_invalid", Some("config.api_key_header")).await;
    }
    // Nothing of a refused request was written.
    assert_eq!(app.count("SELECT count(*) FROM integrations").await, 1);
    let config = app
        .count("SELECT count(*) FROM integrations WHERE config ? 'api_key_header'")
        .await;
    assert_eq!(config, 0, "no refused change was kept");

    // Scopes: reading needs `integrations:read`; the data-plane default key has neither.
    let tenant = app.create_tenant("Other").await;
    let (_, plain) = app.create_key(&tenant, None).await;
    let r = app
        .http
        .get(app.url("/v1/integrations"))
        .bearer_auth(&plain)
        .send()
        .await
        .unwrap();
    problem(r, 403, "insufficient_scope", None).await;
    let (_, reader) = app.create_key(&tenant, Some(&["integrations:read"])).await;
    let r = app
        .partner_post(&reader, "/v1/integrations", erp_body("x"))
        .await;
    problem(r, 403, "insufficient_scope", None).await;
}

#[tokio::test]
async fn integrations_are_isolated_by_tenant_and_mode() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("A").await;
    let live = app
        .create_key(&tenant, Some(&["integrations:write"]))
        .await
        .1;
    let test = app
        .create_key_with(
            &tenant,
            json!({"name": "test", "mode": "test", "scopes": ["integrations:write"]}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = integration_key(&app).await;
    let r = app
        .partner_post(&live, "/v1/integrations", erp_body("shared-code"))
        .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same code is free in the other mode and the other tenant.
    for k in [&test, &other] {
        let r = app
            .partner_post(k, "/v1/integrations", erp_body("shared-code"))
            .await;
        assert_eq!(r.status(), 201);
        let r = app
            .http
            .get(app.url(&format!("/v1/integrations/{id}")))
            .bearer_auth(k)
            .send()
            .await
            .unwrap();
        problem(r, 404, "resource_not_found", None).await;
        let r = app
            .partner_patch(
                k,
                &format!("/v1/integrations/{id}"),
                json!({"name": "mine"}),
            )
            .await;
        problem(r, 404, "resource_not_found", None).await;
        let r = app
            .partner_post(k, &format!("/v1/integrations/{id}/test"), json!({}))
            .await;
        problem(r, 404, "resource_not_found", None).await;
        let listed = app.partner_get(k, "/v1/integrations").await;
        assert_eq!(listed["data"].as_array().unwrap().len(), 1);
        assert_ne!(listed["data"][0]["id"], id.as_str());
    }
}
