//! API keys under attack: forged keys cost nothing, failing clients are locked out, a key
//! cannot act on a stronger one, and the audit log keeps test and live apart.

use serde_json::{Value, json};
use switchyard_tests::{TestApp, TestOptions, problem};

use super::api_keys::{get, send};

/// Keys minted without the server's pepper are refused without any database work (here the
/// keys table is gone, so a lookup would answer 503), and unknown-but-valid keys fill only the
/// negative cache: they never evict real keys.
#[tokio::test]
async fn forged_keys_cost_no_lookup_and_never_evict_real_keys() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let mut cfg = app.api_config.clone();
    cfg.auth_cache_capacity = 20;
    cfg.auth_failures_per_minute = 1000;
    let (base, stop) = app.replica(cfg.clone()).await;
    // Warm the cache with the real key, then flood the negative cache with more unknown ids
    // than the whole capacity.
    assert_eq!(get(&app, &base, "/v1/api-keys", &key).await.status(), 403);
    for _ in 0..60 {
        let r = get(
            &app,
            &base,
            "/v1/api-keys",
            &switchyard_tests::unknown_valid_key(),
        )
        .await;
        problem(r, 401, "invalid_api_key", None).await;
    }
    sqlx::query("ALTER TABLE api_keys RENAME TO api_keys_away")
        .execute(&app.pool)
        .await
        .unwrap();
    // Forged keys: refused by their checksum alone.
    for _ in 0..5 {
        let r = get(&app, &base, "/v1/api-keys", &switchyard_tests::forged_key()).await;
        let v = problem(r, 401, "invalid_api_key", None).await;
        assert!(v["detail"].as_str().unwrap().contains("malformed"), "{v}");
    }
    // The real key is still served from the cache.
    let still = get(&app, &base, "/v1/api-keys", &key).await.status();
    sqlx::query("ALTER TABLE api_keys_away RENAME TO api_keys")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(still, 403, "negative entries never evict a real key");
    stop.cancel();
}

#[tokio::test]
async fn a_client_that_keeps_failing_to_authenticate_is_locked_out() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let mut cfg = app.api_config.clone();
    // An address that keeps failing: after its quota of failures, 429 with Retry-After, for
    // good keys too, until the quota refills.
    cfg.auth_failures_per_minute = 5;
    let (base, stop) = app.replica(cfg).await;
    for _ in 0..5 {
        let r = get(&app, &base, "/v1/orders", &switchyard_tests::forged_key()).await;
        assert_eq!(r.status(), 401);
    }
    let r = get(&app, &base, "/v1/orders", &switchyard_tests::forged_key()).await;
    assert!(r.headers().get("retry-after").is_some());
    let v = problem(r, 429, "rate_limited", None).await;
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("failed authentications"),
        "{v}"
    );
    let r = get(&app, &base, "/v1/orders", &key).await;
    problem(r, 429, "rate_limited", None).await;
    stop.cancel();
}

/// Wrong admin tokens count towards the same lockout: the admin API is no side door for
/// guessing the token the dashboard's sign-in guards (before, every guess got its 401).
#[tokio::test]
async fn a_client_that_keeps_guessing_the_admin_token_is_locked_out() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let mut cfg = app.api_config.clone();
    cfg.auth_failures_per_minute = 3;
    let (base, stop) = app.replica(cfg).await;
    let tenants = |token: &'static str| {
        app.http
            .get(format!("{base}/admin/v1/tenants"))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..3 {
        problem(
            tenants("wrong-token").await.unwrap(),
            401,
            "invalid_admin_token",
            None,
        )
        .await;
    }
    let r = tenants("wrong-token").await.unwrap();
    assert!(r.headers().get("retry-after").is_some());
    problem(r, 429, "rate_limited", None).await;
    let r = tenants(switchyard_tests::ADMIN_TOKEN).await.unwrap();
    problem(r, 429, "rate_limited", None).await;
    stop.cancel();
}

/// A `keys:write` key can only act on keys no stronger than itself: it cannot loosen a
/// stronger key's allowlist or limits, roll it, or revoke it.
#[tokio::test]
async fn a_key_cannot_change_a_key_stronger_than_itself() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Acme").await;
    let (_, weak) = app
        .create_key(&tenant, Some(&["keys:write", "orders:read"]))
        .await;
    let strong = app
        .create_key_with(
            &tenant,
            json!({ "name": "strong", "scopes": ["keys:write", "orders:write", "webhooks:write"],
                    "allowed_cidrs": ["203.0.113.0/24"], "rate_limit_per_minute": 10 }),
        )
        .await;
    let id = strong["id"].as_str().unwrap();
    for (method, path, body) in [
        (
            reqwest::Method::PATCH,
            format!("/v1/api-keys/{id}"),
            json!({ "allowed_cidrs": [] }),
        ),
        (
            reqwest::Method::PATCH,
            format!("/v1/api-keys/{id}"),
            json!({ "rate_limit_per_minute": 1000000 }),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/api-keys/{id}/roll"),
            json!({}),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/api-keys/{id}/revoke"),
            json!({}),
        ),
    ] {
        let r = send(&app, method.clone(), &path, &weak, body).await;
        let v = problem(r, 403, "insufficient_scope", None).await;
        assert!(
            v["detail"].as_str().unwrap().contains("orders:write"),
            "{method} {path}: {v}"
        );
    }
    let key = app.partner_get(&weak, &format!("/v1/api-keys/{id}")).await;
    assert_eq!(key["allowed_cidrs"], json!(["203.0.113.0/24"]));
    assert_eq!(key["rate_limit_per_minute"], 10);
    assert!(key["revoked_at"].is_null());
    // Keys it holds every scope of, it may change.
    let own = app
        .create_key_with(
            &tenant,
            json!({ "name": "small", "scopes": ["orders:read"] }),
        )
        .await;
    let r = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/api-keys/{}", own["id"].as_str().unwrap()),
        &weak,
        json!({ "rate_limit_per_minute": 100 }),
    )
    .await;
    assert_eq!(r.status(), 200);
}

/// A test key with `audit:read` sees the audit events of test mode only.
#[tokio::test]
async fn the_audit_log_is_mode_scoped() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Acme").await;
    let live = app
        .create_key_with(
            &tenant,
            json!({ "name": "live-auditor", "scopes": ["audit:read", "keys:write"] }),
        )
        .await;
    let test = app
        .create_key_with(
            &tenant,
            json!({ "name": "test-auditor", "mode": "test", "scopes": ["audit:read", "keys:write"] }),
        )
        .await;
    let test_key = test["key"].as_str().unwrap();
    let r = send(
        &app,
        reqwest::Method::POST,
        "/v1/api-keys",
        test_key,
        json!({ "name": "made-in-test", "mode": "test", "scopes": ["audit:read"] }),
    )
    .await;
    assert_eq!(r.status(), 201);
    let seen = |events: &Value| -> Vec<(String, String)> {
        events["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["mode"].as_str().unwrap_or("tenant").to_owned(),
                )
            })
            .collect()
    };
    let test_view = seen(&app.partner_get(test_key, "/v1/audit-events").await);
    assert_eq!(
        test_view,
        [
            ("api_key.created".to_owned(), "test".to_owned()),
            ("api_key.created".to_owned(), "test".to_owned())
        ],
        "only test-mode events"
    );
    let live_view = seen(
        &app.partner_get(live["key"].as_str().unwrap(), "/v1/audit-events")
            .await,
    );
    assert_eq!(
        live_view,
        [
            ("api_key.created".to_owned(), "live".to_owned()),
            ("tenant.created".to_owned(), "tenant".to_owned())
        ]
    );
}

/// Past its scopes, a key's allowlist, rate limits and expiry bound the keys it manages: a
/// short-lived key, usable from one network at 10 requests a minute, cannot make itself or
/// another key freer (before, both requests below succeeded).
#[tokio::test]
async fn a_restricted_key_cannot_make_an_unrestricted_one() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Acme").await;
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    let restricted = app
        .create_key_with(
            &tenant,
            json!({ "name": "contractor", "scopes": ["keys:write", "orders:read"],
                    "allowed_cidrs": ["127.0.0.0/8"], "rate_limit_per_minute": 10,
                    "expires_at": expires }),
        )
        .await;
    let (id, key) = (
        restricted["id"].as_str().unwrap(),
        restricted["key"].as_str().unwrap(),
    );
    let post = |body: Value| send(&app, reqwest::Method::POST, "/v1/api-keys", key, body);
    for body in [
        json!({ "name": "free", "scopes": ["orders:read"] }),
        json!({ "name": "wider", "scopes": ["orders:read"], "allowed_cidrs": ["0.0.0.0/0"],
                "rate_limit_per_minute": 5, "expires_at": expires }),
        json!({ "name": "longer", "scopes": ["orders:read"], "allowed_cidrs": ["127.0.0.1"],
                "rate_limit_per_minute": 5 }),
    ] {
        problem(post(body).await, 403, "api_key_too_strong", None).await;
    }
    let r = post(json!({ "name": "bounded", "scopes": ["orders:read"],
                         "allowed_cidrs": ["127.0.0.1"], "rate_limit_per_minute": 5,
                         "expires_at": expires - chrono::Duration::minutes(1) }))
    .await;
    assert_eq!(r.status(), 201);
    let path = format!("/v1/api-keys/{id}");
    for body in [
        json!({ "allowed_cidrs": [] }),
        json!({ "rate_limit_per_minute": 1000000 }),
    ] {
        let r = send(&app, reqwest::Method::PATCH, &path, key, body).await;
        problem(r, 403, "api_key_too_strong", None).await;
    }
    // Nothing of the refused requests was written.
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 2);
    // Revoking narrows what exists: a restricted key may revoke a freer key of its scopes.
    let free = app
        .create_key_with(
            &tenant,
            json!({ "name": "free", "scopes": ["orders:read"] }),
        )
        .await;
    let revoke = format!("/v1/api-keys/{}/revoke", free["id"].as_str().unwrap());
    let r = send(&app, reqwest::Method::POST, &revoke, key, json!({})).await;
    assert_eq!(r.status(), 200);
    let shown: Value = get(&app, &app.base, &path, key).await.json().await.unwrap();
    assert_eq!(shown["allowed_cidrs"], json!(["127.0.0.0/8"]), "{shown}");
    assert_eq!(shown["rate_limit_per_minute"], 10, "{shown}");
}
