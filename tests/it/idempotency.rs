//! `Idempotency-Key`: replays, parameter mismatch, requests in flight, failures that store
//! nothing, and tenant scoping.

use serde_json::{Value, json};
use std::time::Duration;

use switchyard_tests::{TestApp, TestOptions, eventually, problem};

async fn post(app: &TestApp, path: &str, key: &str, idem: &str, body: &str) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retried_order_is_created_once_and_replayed_byte_for_byte() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let body = TestApp::order_body("idem-1").to_string();
    let first = post(&app, "/v1/orders", &key, "k-1", &body).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.bytes().await.unwrap();

    // The record was written with the order, in the same statement.
    let state: String = sqlx::query_scalar("SELECT state FROM idempotency_keys WHERE key = 'k-1'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "finished");

    // Same key, same parameters (keys in another order, other spacing): the first response,
    // marked replayed. serde_json sorts keys when it serialises, so the reordered body is
    // written by hand.
    let reordered = r#"{ "notes": "extra basil",
        "delivery": {"instructions": "Ring twice", "address": "1 Navy Way"},
        "customer": {"email": "grace@example.com", "name": "Grace Hopper"},
        "items": [
            {"unit_price": 950, "quantity": 2, "name": "Margherita", "sku": "PIZ-1"},
            {"unit_price": 300, "quantity": 1, "name": "Lemonade", "sku": "DRK-7"}
        ],
        "currency": "EUR", "external_id": "idem-1" }"#;
    assert!(!body.starts_with(r#"{ "notes""#));
    for b in [body.as_str(), reordered] {
        let again = post(&app, "/v1/orders", &key, "k-1", b).await;
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.headers()["content-type"], "application/json");
        assert_eq!(again.bytes().await.unwrap(), first_body);
    }
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM order_events").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 1);

    // Same key, other parameters: 422, nothing written.
    let other = TestApp::order_body("idem-2").to_string();
    let v = problem(
        post(&app, "/v1/orders", &key, "k-1", &other).await,
        422,
        "idempotency_key_reused",
        Some("Idempotency-Key"),
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("different"), "{v}");
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);

    // A malformed key is refused before anything happens.
    problem(
        post(&app, "/v1/orders", &key, &"x".repeat(256), &other).await,
        400,
        "idempotency_key_invalid",
        Some("Idempotency-Key"),
    )
    .await;
}

#[tokio::test]
async fn failed_requests_store_nothing_and_can_be_retried() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let mut bad = TestApp::order_body("idem-bad");
    bad["items"][0]["quantity"] = json!(0);
    problem(
        post(&app, "/v1/orders", &key, "k-bad", &bad.to_string()).await,
        400,
        "parameter_invalid",
        Some("items[0].quantity"),
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 0);
    // The corrected request with the same key runs (no 422 for "other parameters").
    let good = TestApp::order_body("idem-bad").to_string();
    assert_eq!(
        post(&app, "/v1/orders", &key, "k-bad", &good)
            .await
            .status(),
        201
    );
    // A conflict is an outcome, and is replayed.
    let dup = post(&app, "/v1/orders", &key, "k-dup", &good).await;
    assert_eq!(dup.status(), 409);
    let again = post(&app, "/v1/orders", &key, "k-dup", &good).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.status(), 409);
    // The replay is the first response, including its `request_id`.
    let first: Value = dup.json().await.unwrap();
    let replayed: Value = again.json().await.unwrap();
    assert_eq!(replayed, first);
    assert_eq!(replayed["code"], "order_exists");
}

#[tokio::test]
async fn a_retry_while_the_first_request_runs_gets_409() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let body = TestApp::order_body("idem-slow").to_string();
    // Hold the orders table so the first request stalls after claiming its key.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE orders IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let first = {
        let (http, url, key, body) = (
            app.http.clone(),
            app.url("/v1/orders"),
            key.clone(),
            body.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .header("idempotency-key", "k-slow")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    switchyard_tests::eventually(std::time::Duration::from_secs(5), "the claim", || async {
        (app.count("SELECT count(*) FROM idempotency_keys").await == 1).then_some(())
    })
    .await;
    problem(
        post(&app, "/v1/orders", &key, "k-slow", &body).await,
        409,
        "idempotency_key_in_use",
        Some("Idempotency-Key"),
    )
    .await;
    blocker.rollback().await.unwrap();
    assert_eq!(first.await.unwrap(), 201);
    let replay = post(&app, "/v1/orders", &key, "k-slow", &body).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
}

#[tokio::test]
async fn keys_are_scoped_per_tenant_and_cover_every_post() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, a) = app.partner_account().await;
    let (_, b) = app.partner_account().await;
    let body = json!({ "url": "http://127.0.0.1:9/hook", "event_types": ["order.*"] }).to_string();
    let first: Value = post(&app, "/v1/webhook-endpoints", &a, "same", &body)
        .await
        .json()
        .await
        .unwrap();
    let replay = post(&app, "/v1/webhook-endpoints", &a, "same", &body).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"]);
    assert_eq!(replay["secret"], first["secret"]);
    // The stored response holds a secret shown once: it is kept encrypted.
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT response_body FROM idempotency_keys WHERE key = 'same'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let secret = first["secret"].as_str().unwrap().as_bytes();
    assert!(!stored.windows(secret.len()).any(|w| w == secret));
    assert!(!stored.windows(6).any(|w| w == b"whsec_"));
    // Another tenant's identical key is its own.
    let other: Value = post(&app, "/v1/webhook-endpoints", &b, "same", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(other["id"], first["id"]);
    assert_eq!(app.count("SELECT count(*) FROM webhook_endpoints").await, 2);
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    idem: &str,
    body: &Value,
) -> reqwest::Response {
    app.http
        .request(method, app.url(path))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Security: a stored answer (which may hold a secret shown once) is replayed only to the key
/// that made it, and only once the route's authorization has passed.
#[tokio::test]
async fn a_replay_needs_the_routes_scope_and_belongs_to_the_key_that_made_it() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Acme").await;
    let all = [
        "keys:write",
        "orders:read",
        "webhooks:write",
        "webhooks:read",
    ];
    let (maker_id, maker) = app.create_key(&tenant, Some(&all)).await;
    let (_, reader) = app.create_key(&tenant, Some(&["orders:read"])).await;
    let (_, twin) = app.create_key(&tenant, Some(&all)).await;
    let post = reqwest::Method::POST;
    let new_key = json!({ "name": "ci", "scopes": ["orders:read"] });
    let first = send(&app, post.clone(), "/v1/api-keys", &maker, "K", &new_key).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let secret = first["key"].as_str().unwrap();

    // The same request and key from a key without `keys:write`: refused, no secret.
    let r = send(&app, post.clone(), "/v1/api-keys", &reader, "K", &new_key).await;
    assert!(r.headers().get("idempotent-replayed").is_none());
    let v = problem(r, 403, "insufficient_scope", None).await;
    assert!(!v.to_string().contains(secret));
    // From another key that may create keys: a different request, a different key.
    let r = send(&app, post.clone(), "/v1/api-keys", &twin, "K", &new_key).await;
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("idempotent-replayed").is_none());
    let other: Value = r.json().await.unwrap();
    assert_ne!(other["id"], first["id"]);
    assert_ne!(other["key"], first["key"]);
    // The maker's own retry is the replay.
    let r = send(&app, post.clone(), "/v1/api-keys", &maker, "K", &new_key).await;
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["key"], first["key"]);

    // Endpoint secrets: the same for creation and rotation.
    let endpoint = json!({ "url": "http://127.0.0.1:9/hook" });
    let created: Value = send(
        &app,
        post.clone(),
        "/v1/webhook-endpoints",
        &maker,
        "E",
        &endpoint,
    )
    .await
    .json()
    .await
    .unwrap();
    let whsec = created["secret"].as_str().unwrap();
    let r = send(
        &app,
        post.clone(),
        "/v1/webhook-endpoints",
        &reader,
        "E",
        &endpoint,
    )
    .await;
    assert!(
        !problem(r, 403, "insufficient_scope", None)
            .await
            .to_string()
            .contains(whsec)
    );
    let r = send(
        &app,
        post.clone(),
        "/v1/webhook-endpoints",
        &twin,
        "E",
        &endpoint,
    )
    .await;
    assert_ne!(
        r.json::<Value>().await.unwrap()["secret"],
        created["secret"]
    );
    let rotate = format!(
        "/v1/webhook-endpoints/{}/secret/rotate",
        created["id"].as_str().unwrap()
    );
    let rotated: Value = send(&app, post.clone(), &rotate, &maker, "R", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let r = send(&app, post.clone(), &rotate, &reader, "R", &json!({})).await;
    let v = problem(r, 403, "insufficient_scope", None).await;
    assert!(!v.to_string().contains(rotated["secret"].as_str().unwrap()));

    // Authorization runs before the replay: once the maker loses `keys:write`, its own retry
    // is refused too.
    let r = app
        .http
        .patch(app.url(&format!("/admin/v1/tenants/{tenant}/api-keys/{maker_id}")))
        .bearer_auth(switchyard_tests::ADMIN_TOKEN)
        .json(&json!({ "scopes": ["orders:read"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let denied = switchyard_tests::eventually(
        std::time::Duration::from_secs(5),
        "the scope change to reach the cache",
        || async {
            let r = send(&app, post.clone(), "/v1/api-keys", &maker, "K", &new_key).await;
            (r.status() == 403).then_some(r)
        },
    )
    .await;
    assert!(denied.headers().get("idempotent-replayed").is_none());
    assert!(!denied.text().await.unwrap().contains(secret));
}

/// Live and test keys of one tenant have their own records, like any two keys.
#[tokio::test]
async fn records_are_kept_per_key_and_so_per_mode() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Acme").await;
    let live = app
        .create_key_with(&tenant, json!({ "name": "live" }))
        .await;
    let test = app
        .create_key_with(&tenant, json!({ "name": "test", "mode": "test" }))
        .await;
    let body = TestApp::order_body("same-everywhere").to_string();
    let mut ids = Vec::new();
    for key in [&live, &test] {
        let r = post(&app, "/v1/orders", key["key"].as_str().unwrap(), "K", &body).await;
        assert_eq!(r.status(), 201);
        assert!(r.headers().get("idempotent-replayed").is_none());
        let v: Value = r.json().await.unwrap();
        ids.push((v["id"].as_str().unwrap().to_owned(), v["mode"].clone()));
    }
    assert_ne!(ids[0].0, ids[1].0);
    assert_eq!(
        (ids[0].1.clone(), ids[1].1.clone()),
        (json!("live"), json!("test"))
    );
    let modes: Vec<String> =
        sqlx::query_scalar("SELECT mode FROM idempotency_keys WHERE key = 'K' ORDER BY mode")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(modes, ["live", "test"]);
}

/// A replay is an answer like any other: the API logs no error for it (before, every replay
/// was logged as a route that ignored its key).
#[tokio::test]
async fn a_replay_logs_no_error() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let (api, base) = switchyard_tests::process::Process::spawn_api(&app.process_env()).await;
    for _ in 0..2 {
        let r = app
            .http
            .post(format!("{base}/v1/orders"))
            .bearer_auth(&key)
            .header("idempotency-key", "replayed-once")
            .json(&TestApp::order_body("replayed"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    eventually(Duration::from_secs(5), "both requests logged", || async {
        (api.log_text().matches("\"request\"").count() >= 2).then_some(())
    })
    .await;
    let log = api.log_text();
    assert!(!log.contains("\"ERROR\""), "{log}");
}
