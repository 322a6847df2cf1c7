//! Keyring rotation: every sealed value of every kind moves to the new active key, counted by
//! key before and after; an unreadable value is reported and left; afterwards the old key can
//! leave the keyring and everything still opens.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use switchyard_tests::{
    ADMIN_TOKEN, Behaviour, ErpServer, MASTER_KEYS, PartnerServer, TestApp, TestOptions,
    eventually, process::Process, verify_signature,
};

const TOKEN: &str = "erp-token-rotates-0123456789";

fn new_key() -> String {
    format!("new1:{}", STANDARD.encode([7u8; 32]))
}

/// A keyring's counts: kind → rows, for one key id.
fn rows_of(status: &Value, key_id: &str) -> Value {
    status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id)
        .map(|k| k["rows"].clone())
        .unwrap_or(json!({}))
}

async fn admin_get(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let r = http
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn rotation_moves_every_sealed_kind_to_the_new_key_and_the_old_key_can_go() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Vaulted").await;
    let key = app
        .create_key(
            &tenant,
            Some(&["integrations:write", "webhooks:write", "orders:write"]),
        )
        .await
        .1;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let endpoint = app
        .create_endpoint_with(
            &key,
            json!({"url": partner.url, "headers": {"x-tenant": "t-42"},
                   "auth": {"type": "bearer", "token": "partner-token-123"},
                   "ed25519_signing": true, "event_types": ["webhook.test"]}),
        )
        .await;
    // A destination's secret settings are sealed too.
    app.create_endpoint_with(
        &key,
        json!({"kind": "nats", "config": {"url": "nats://user:pw@127.0.0.1:4222", "subject": "s"}}),
    )
    .await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let first_secret = endpoint["secret"].as_str().unwrap().to_owned();
    let r = app
        .partner_post(
            &key,
            &format!("/v1/webhook-endpoints/{endpoint_id}/secret/rotate"),
            json!({"grace_period": "1h"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&key)
        .header("idempotency-key", "order-1")
        .json(&TestApp::order_body("ext-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let order: Value = r.json().await.unwrap();
    let erp = ErpServer::start(200).await;
    let integration = |code: &str| {
        json!({"name": code, "code": code, "type": "erp", "provider": "http",
               "base_url": erp.url, "credentials": {"bearer_token": TOKEN, "username": "u"}})
    };
    let r = app
        .partner_post(&key, "/v1/integrations", integration("erp"))
        .await;
    let erp_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .partner_post(&key, "/v1/integrations", integration("broken"))
        .await;
    let broken = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // One value tampered with: it cannot be moved, and must say so.
    sqlx::query(
        "UPDATE integration_credentials SET sealed = sealed || '\\x00'::bytea
          WHERE integration_id = $1::uuid AND name = 'username'",
    )
    .bind(&broken)
    .execute(&app.pool)
    .await
    .unwrap();

    let before = admin_get(&app.http, &app.base, "/admin/v1/keyring").await;
    assert_eq!(before["active_key_id"], "test1");
    let old_rows = rows_of(&before, "test1");
    assert_eq!(
        old_rows,
        json!({"idempotency.response": 1, "integration.credential": 4,
               "webhook_endpoint.auth": 1, "webhook_endpoint.config": 1,
               "webhook_endpoint.ed25519": 1, "webhook_endpoint.headers": 1,
               "webhook_endpoint.previous_secret": 1, "webhook_endpoint.secret": 2})
    );

    // A new active key in front of the old one; a process with that keyring rotates.
    let mut env = app.process_env();
    let both = format!("{},{MASTER_KEYS}", new_key());
    env.retain(|(k, _)| k != "SWITCHYARD_MASTER_KEYS");
    env.push(("SWITCHYARD_MASTER_KEYS".into(), both));
    env.push(("SWITCHYARD_WITH_WORKER".into(), "true".into()));
    let (mut rotating, base) = Process::spawn_api(&env).await;
    let r = app
        .http
        .post(format!("{base}/admin/v1/keyring/rotate"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rotation: Value = r.json().await.unwrap();
    assert_eq!(rotation["key_id"], "new1");
    assert_eq!(rotation["state"], "running");
    let after = eventually(Duration::from_secs(30), "the rotation finishes", || async {
        let s = admin_get(&app.http, &base, "/admin/v1/keyring").await;
        (s["rotation"]["state"] == "finished").then_some(s)
    })
    .await;
    let mut moved = old_rows.clone();
    moved["integration.credential"] = json!(3);
    assert_eq!(rows_of(&after, "new1"), moved);
    assert_eq!(
        rows_of(&after, "test1"),
        json!({"integration.credential": 1})
    );
    assert_eq!(after["rotation"]["rotated"], moved);
    assert_eq!(
        after["rotation"]["unreadable"],
        json!({"integration.credential": 1})
    );
    let old = after["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == "test1")
        .unwrap();
    assert_eq!(
        (old["active"].clone(), old["retirable"].clone()),
        (json!(false), json!(false))
    );
    // A second rotation while none runs is fine; the broken value is the operator's to fix.
    let r = app
        .http
        .delete(app.url(&format!("/v1/integrations/{broken}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let s = admin_get(&app.http, &base, "/admin/v1/keyring").await;
    let old = s["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == "test1")
        .unwrap();
    assert_eq!(
        (old["total"].clone(), old["retirable"].clone()),
        (json!(0), json!(true))
    );
    rotating.terminate(Duration::from_secs(20)).await;

    // The old key leaves the keyring: everything still opens with the new one alone.
    let mut env = app.process_env();
    env.retain(|(k, _)| k != "SWITCHYARD_MASTER_KEYS");
    env.push(("SWITCHYARD_MASTER_KEYS".into(), new_key()));
    env.push(("SWITCHYARD_WITH_WORKER".into(), "true".into()));
    let (mut alone, base) = Process::spawn_api(&env).await;
    let replay = app
        .http
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&key)
        .header("idempotency-key", "order-1")
        .json(&TestApp::order_body("ext-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), order);
    let r = app
        .http
        .post(format!("{base}/v1/integrations/{erp_id}/test"))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["ok"], true);
    assert_eq!(
        erp.seen()[0].headers["authorization"],
        format!("Bearer {TOKEN}")
    );
    let r = app
        .http
        .post(format!("{base}/v1/webhook-endpoints/{endpoint_id}/test"))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let got = eventually(Duration::from_secs(20), "the test message", || async {
        partner.received().into_iter().next()
    })
    .await;
    assert_eq!(got.header("x-tenant"), "t-42");
    assert_eq!(got.header("authorization"), "Bearer partner-token-123");
    // The secret replaced before the rotation still signs, next to the new one.
    assert!(verify_signature(
        &first_secret,
        got.header("webhook-id"),
        got.header("webhook-timestamp"),
        &got.body,
        got.header("webhook-signature"),
    ));
    assert!(got.header("webhook-signature").contains("v1a,"));
    // Nothing secret reached the logs of either process.
    let logs = format!("{}{}", rotating.log_text(), alone.log_text());
    for secret in [TOKEN, "partner-token-123", first_secret.as_str()] {
        assert!(!logs.contains(secret), "`{secret}` is in a log");
    }
    alone.terminate(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn one_rotation_runs_at_a_time() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let r = app.admin_post("/admin/v1/keyring/rotate", json!({})).await;
    assert_eq!(r.status(), 201);
    let r = app.admin_post("/admin/v1/keyring/rotate", json!({})).await;
    switchyard_tests::problem(r, 409, "rotation_running", None).await;
}
