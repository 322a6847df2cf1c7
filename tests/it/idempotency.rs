//! `Idempotency-Key`: replays, parameter mismatch, requests in flight, failures that store
//! nothing, and tenant scoping.

use serde_json::{Value, json};
use switchyard_tests::{TestApp, TestOptions, problem};

fn no_worker() -> TestOptions {
    TestOptions {
        with_worker: false,
        ..TestOptions::default()
    }
}

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
    let app = TestApp::spawn(no_worker()).await;
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

    // Same key, same parameters (reordered, re-spaced): the first response, marked replayed.
    let reordered: Value = serde_json::from_str(&body).unwrap();
    let pretty = serde_json::to_string_pretty(&reordered).unwrap();
    for b in [body.as_str(), pretty.as_str()] {
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
    let app = TestApp::spawn(no_worker()).await;
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
    let app = TestApp::spawn(no_worker()).await;
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
    let app = TestApp::spawn(no_worker()).await;
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
