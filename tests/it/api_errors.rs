//! Bad input gets a clear problem document and changes nothing; tenants never see each other.

use serde_json::{Value, json};
use switchyard_tests::{ADMIN_TOKEN, TestApp, TestOptions, problem};

#[tokio::test]
async fn bad_order_input_is_rejected_precisely_and_writes_nothing() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let (_, key) = app.partner_account().await;
    let post_raw = |body: Vec<u8>, content_type: Option<&'static str>| {
        let mut req = app
            .http
            .post(app.url("/v1/orders"))
            .bearer_auth(&key)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let post = |body: Value| post_raw(body.to_string().into_bytes(), Some("application/json"));

    problem(
        post_raw(b"{\"external_id\": ".to_vec(), Some("application/json"))
            .await
            .unwrap(),
        400,
        "invalid_json",
        None,
    )
    .await;
    problem(
        post_raw(Vec::new(), Some("application/json"))
            .await
            .unwrap(),
        400,
        "invalid_json",
        None,
    )
    .await;
    problem(
        post_raw(b"{}".to_vec(), Some("text/plain")).await.unwrap(),
        415,
        "unsupported_media_type",
        None,
    )
    .await;
    problem(
        post_raw(b"{}".to_vec(), None).await.unwrap(),
        415,
        "unsupported_media_type",
        None,
    )
    .await;
    problem(
        post(json!([1, 2])).await.unwrap(),
        400,
        "invalid_request",
        None,
    )
    .await;

    let mut missing = TestApp::order_body("x");
    missing.as_object_mut().unwrap().remove("currency");
    problem(
        post(missing).await.unwrap(),
        400,
        "parameter_missing",
        Some("currency"),
    )
    .await;

    let mut missing_nested = TestApp::order_body("x");
    missing_nested["customer"]
        .as_object_mut()
        .unwrap()
        .remove("name");
    problem(
        post(missing_nested).await.unwrap(),
        400,
        "parameter_missing",
        Some("customer.name"),
    )
    .await;

    let mut mistyped = TestApp::order_body("x");
    mistyped["items"][1]["quantity"] = json!("2");
    problem(
        post(mistyped).await.unwrap(),
        400,
        "parameter_invalid",
        Some("items[1].quantity"),
    )
    .await;

    let mut unknown = TestApp::order_body("x");
    unknown["customer"]["age"] = json!(42);
    problem(
        post(unknown).await.unwrap(),
        400,
        "unknown_parameter",
        Some("customer.age"),
    )
    .await;

    let mut zero = TestApp::order_body("x");
    zero["items"][0]["quantity"] = json!(0);
    problem(
        post(zero).await.unwrap(),
        400,
        "parameter_invalid",
        Some("items[0].quantity"),
    )
    .await;

    let mut negative = TestApp::order_body("x");
    negative["items"][0]["unit_price"] = json!(-5);
    problem(
        post(negative).await.unwrap(),
        400,
        "parameter_invalid",
        Some("items[0].unit_price"),
    )
    .await;

    let mut no_items = TestApp::order_body("x");
    no_items["items"] = json!([]);
    problem(
        post(no_items).await.unwrap(),
        400,
        "parameter_invalid",
        Some("items"),
    )
    .await;

    let mut bad_currency = TestApp::order_body("x");
    bad_currency["currency"] = json!("euro");
    problem(
        post(bad_currency).await.unwrap(),
        400,
        "parameter_invalid",
        Some("currency"),
    )
    .await;

    let mut bad_email = TestApp::order_body("x");
    bad_email["customer"]["email"] = json!("grace at navy");
    problem(
        post(bad_email).await.unwrap(),
        400,
        "parameter_invalid",
        Some("customer.email"),
    )
    .await;

    let mut big = TestApp::order_body("x");
    big["notes"] = json!("n".repeat(2 * 1024 * 1024));
    problem(post(big).await.unwrap(), 413, "body_too_large", None).await;

    // Nothing of any of that was written (the janitor's periodic jobs are the worker's own).
    for table in [
        "orders",
        "order_events",
        "events",
        "jobs WHERE queue NOT IN ('janitor', 'integration_health')",
        "webhook_messages",
    ] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table} must be empty");
    }

    // A duplicate external id is a conflict, and the first order stays the only one.
    assert_eq!(app.post_order(&key, "dup").await.status(), 201);
    problem(
        app.post_order(&key, "dup").await,
        409,
        "order_exists",
        Some("external_id"),
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM order_events").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE queue = 'event_fan_out'")
            .await,
        1
    );
}

#[tokio::test]
async fn unknown_routes_methods_and_parameters_get_problems() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let (_, key) = app.partner_account().await;
    let r = app
        .http
        .get(app.url("/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    problem(r, 404, "route_not_found", None).await;
    let r = app
        .http
        .put(app.url("/v1/orders"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    problem(r, 405, "method_not_allowed", None).await;
    let r = app
        .http
        .get(app.url("/v1/orders/not-a-uuid"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    problem(r, 404, "resource_not_found", None).await;
    let r = app
        .http
        .get(app.url("/v1/webhook-endpoints?limit=1000"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    problem(r, 400, "parameter_invalid", Some("limit")).await;
    let r = app
        .http
        .post(app.url("/v1/webhook-endpoints"))
        .bearer_auth(&key)
        .json(&json!({ "url": "ftp://example.com/x" }))
        .send()
        .await
        .unwrap();
    problem(r, 400, "parameter_invalid", Some("url")).await;
    let r = app
        .http
        .post(app.url("/v1/webhook-endpoints"))
        .bearer_auth(&key)
        .json(&json!({ "url": "https://example.com/x", "event_types": ["order..created"] }))
        .send()
        .await
        .unwrap();
    problem(r, 400, "parameter_invalid", Some("event_types[0]")).await;
}

#[tokio::test]
async fn credentials_are_checked_and_explained() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let tenant = app.create_tenant("Acme").await;
    let (key_row, key) = app.create_key(&tenant, None).await;
    let order = TestApp::order_body("auth-1");
    let post = |k: Option<String>, header: &'static str| {
        let mut req = app.http.post(app.url("/v1/orders")).json(&order);
        if let Some(k) = k {
            req = if header == "bearer" {
                req.bearer_auth(k)
            } else {
                req.header(header, k)
            };
        }
        req.send()
    };
    problem(
        post(None, "bearer").await.unwrap(),
        401,
        "missing_api_key",
        None,
    )
    .await;
    problem(
        post(Some("sy_live_nonsense".into()), "bearer")
            .await
            .unwrap(),
        401,
        "invalid_api_key",
        None,
    )
    .await;
    // Right shape and checksum, unknown key: still just "invalid".
    problem(
        post(Some(switchyard_tests::unknown_valid_key()), "x-api-key")
            .await
            .unwrap(),
        401,
        "invalid_api_key",
        None,
    )
    .await;
    // Right shape, checksum not made with the server's pepper: the same answer.
    problem(
        post(Some(switchyard_tests::forged_key()), "x-api-key")
            .await
            .unwrap(),
        401,
        "invalid_api_key",
        None,
    )
    .await;
    // Both header styles work.
    assert_eq!(
        post(Some(key.clone()), "bearer").await.unwrap().status(),
        201
    );
    let mut second = order.clone();
    second["external_id"] = json!("auth-2");
    let r = app
        .http
        .post(app.url("/v1/orders"))
        .header("x-api-key", &key)
        .json(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // A key without the scope is refused with 403, naming it.
    let (_, read_only) = app.create_key(&tenant, Some(&["orders:read"])).await;
    let v = problem(
        post(Some(read_only), "bearer").await.unwrap(),
        403,
        "insufficient_scope",
        None,
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("orders:write"));

    // Revoked keys stop working at once.
    let r = app
        .http
        .post(app.url(&format!(
            "/admin/v1/tenants/{tenant}/api-keys/{key_row}/revoke"
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    problem(
        post(Some(key), "bearer").await.unwrap(),
        401,
        "api_key_revoked",
        None,
    )
    .await;

    // The admin API wants the admin token, not a partner key.
    let r = app
        .http
        .post(app.url("/admin/v1/tenants"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    problem(r, 401, "missing_admin_token", None).await;
    let r = app
        .http
        .post(app.url("/admin/v1/tenants"))
        .bearer_auth("wrong-token-wrong-token")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    problem(r, 401, "invalid_admin_token", None).await;
    let r = app
        .http
        .post(app.url(&format!(
            "/admin/v1/tenants/{}/api-keys",
            uuid::Uuid::now_v7()
        )))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "k"}))
        .send()
        .await
        .unwrap();
    problem(r, 404, "resource_not_found", None).await;
    let r = app
        .http
        .post(app.url(&format!("/admin/v1/tenants/{tenant}/api-keys")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "k", "scopes": ["orders:read", "root"]}))
        .send()
        .await
        .unwrap();
    problem(r, 400, "parameter_invalid", Some("scopes[1]")).await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 2);
}

#[tokio::test]
async fn tenants_cannot_reach_each_others_resources() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let (_, key_a) = app.partner_account().await;
    let (_, key_b) = app.partner_account().await;
    let (endpoint_a, _) = app
        .create_endpoint(&key_a, "http://127.0.0.1:9/hook", &["*"])
        .await;
    let order_a: Value = app.post_order(&key_a, "iso-1").await.json().await.unwrap();
    let order_a = order_a["id"].as_str().unwrap();

    let get = |path: String| app.http.get(app.url(&path)).bearer_auth(&key_b).send();
    problem(
        get(format!("/v1/orders/{order_a}")).await.unwrap(),
        404,
        "resource_not_found",
        None,
    )
    .await;
    problem(
        get(format!("/v1/webhook-endpoints/{endpoint_a}"))
            .await
            .unwrap(),
        404,
        "resource_not_found",
        None,
    )
    .await;
    problem(
        get(format!("/v1/webhook-endpoints/{endpoint_a}/attempts"))
            .await
            .unwrap(),
        404,
        "resource_not_found",
        None,
    )
    .await;
    let r = app
        .http
        .delete(app.url(&format!("/v1/webhook-endpoints/{endpoint_a}")))
        .bearer_auth(&key_b)
        .send()
        .await
        .unwrap();
    problem(r, 404, "resource_not_found", None).await;
    let list: Value = get("/v1/webhook-endpoints".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "B sees none of A's endpoints"
    );
    // B may reuse A's external id: ids are per tenant.
    assert_eq!(app.post_order(&key_b, "iso-1").await.status(), 201);
    // A still has its endpoint.
    let r = app
        .http
        .get(app.url(&format!("/v1/webhook-endpoints/{endpoint_a}")))
        .bearer_auth(&key_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Durations from partners are parsed with checked arithmetic: a value too large to represent
/// is a 400 naming the field (debug builds used to panic in the handler, release builds to
/// wrap around to a "valid" value).
#[tokio::test]
async fn durations_that_overflow_are_refused_by_name() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let huge = "213503982334602d";
    for (body, param) in [
        (
            json!({ "url": "http://127.0.0.1:9/h", "timeout": huge }),
            "timeout",
        ),
        (
            json!({ "url": "http://127.0.0.1:9/h", "retry_schedule": ["5s", huge] }),
            "retry_schedule[1]",
        ),
    ] {
        let r = app.partner_post(&key, "/v1/webhook-endpoints", body).await;
        problem(r, 400, "parameter_invalid", Some(param)).await;
    }
    let (endpoint, _) = app
        .create_endpoint(&key, "http://127.0.0.1:9/h", &["*"])
        .await;
    let r = app
        .partner_post(
            &key,
            &format!("/v1/webhook-endpoints/{endpoint}/secret/rotate"),
            json!({ "grace_period": huge }),
        )
        .await;
    problem(r, 400, "parameter_invalid", Some("grace_period")).await;
    assert_eq!(app.count("SELECT count(*) FROM webhook_endpoints").await, 1);
}

/// Times outside the years 1 to 9999 (which RFC 3339 parsers take and Postgres refuses) are a
/// 400 naming the parameter, in query filters and in bodies alike; nothing is written.
#[tokio::test]
async fn times_beyond_the_years_1_to_9999_are_refused_by_name() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (tenant, _) = app.partner_account().await;
    let (_, key) = app
        .create_key(
            &tenant,
            Some(&["orders:read", "events:read", "events:write"]),
        )
        .await;
    for (path, param) in [
        (
            "/v1/orders?created%5Bgte%5D=0000-01-01T00:00:00Z",
            "created[gte]",
        ),
        (
            "/v1/orders?updated%5Bgte%5D=%2B10000-01-01T00:00:00Z",
            "updated[gte]",
        ),
        (
            "/v1/events?created%5Blte%5D=-0001-06-01T00:00:00Z",
            "created[lte]",
        ),
    ] {
        let r = app
            .http
            .get(app.url(path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        problem(r, 400, "parameter_invalid", Some(param)).await;
    }
    let r = app
        .partner_post(
            &key,
            "/v1/events",
            json!({"type": "ncr.created", "data": {}, "occurred_at": "0000-01-01T00:00:00Z"}),
        )
        .await;
    let p = problem(r, 400, "parameter_invalid", Some("occurred_at")).await;
    assert!(p["detail"].as_str().unwrap().contains("9999"), "{p}");
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);
}
