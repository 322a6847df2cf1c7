//! API key lifecycle: self-service management, scopes, rotation, expiry, revocation reaching
//! every replica, allowlists, usage counts and authentication from the cache. Guards against
//! abuse (forged keys, lockout, escalation, audit modes) are in `api_key_guards`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::{TestApp, TestOptions, eventually, problem};

pub(super) async fn get(app: &TestApp, base: &str, path: &str, key: &str) -> reqwest::Response {
    app.http
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

pub(super) async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Value,
) -> reqwest::Response {
    app.http
        .request(method, app.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn keys_manage_their_own_tenants_keys_without_escalating() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Acme").await;
    let (_, admin_key) = app
        .create_key(&tenant, Some(&["keys:write", "orders:read", "audit:read"]))
        .await;
    let (_, plain) = app.create_key(&tenant, None).await;

    // Without keys:write (or keys:read) the key routes are closed, naming the scope.
    let v = problem(
        get(&app, &app.base, "/v1/api-keys", &plain).await,
        403,
        "insufficient_scope",
        None,
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("keys:read"), "{v}");

    // keys:write includes keys:read; a key may grant only scopes it holds.
    let created = send(
        &app,
        reqwest::Method::POST,
        "/v1/api-keys",
        &admin_key,
        json!({ "name": "reader", "scopes": ["orders:read"] }),
    )
    .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert!(created["key"].as_str().unwrap().starts_with("sy_live_"));
    let v = problem(
        send(
            &app,
            reqwest::Method::POST,
            "/v1/api-keys",
            &admin_key,
            json!({ "name": "escalate", "scopes": ["orders:write"] }),
        )
        .await,
        403,
        "insufficient_scope",
        None,
    )
    .await;
    assert!(
        v["detail"].as_str().unwrap().contains("orders:write"),
        "{v}"
    );
    let v = problem(
        send(
            &app,
            reqwest::Method::POST,
            "/v1/api-keys",
            &admin_key,
            json!({ "name": "test", "mode": "test", "scopes": ["orders:read"] }),
        )
        .await,
        403,
        "mode_mismatch",
        None,
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("live"));

    // The listing shows every live key of the tenant and never a secret.
    let list: Value = get(&app, &app.base, "/v1/api-keys", &admin_key)
        .await
        .json()
        .await
        .unwrap();
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{list}");
    assert!(data.iter().all(|k| k.get("key").is_none()));
    assert!(data.iter().all(|k| k.get("key_hash").is_none()));

    // Changing scopes is audited with both values; unknown scopes are named.
    let id = created["id"].as_str().unwrap();
    problem(
        send(
            &app,
            reqwest::Method::PATCH,
            &format!("/v1/api-keys/{id}"),
            &admin_key,
            json!({ "scopes": ["orders:read", "nope"] }),
        )
        .await,
        400,
        "parameter_invalid",
        Some("scopes[1]"),
    )
    .await;
    let r = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/api-keys/{id}"),
        &admin_key,
        json!({ "name": "renamed", "scopes": ["audit:read"] }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let events: Value = get(&app, &app.base, "/v1/audit-events", &admin_key)
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "api_key.scopes_changed",
            "api_key.created",
            "api_key.created",
            "api_key.created",
            "tenant.created"
        ]
    );
    let change = &events["data"][0];
    assert_eq!(change["actor_type"], "api_key");
    assert_eq!(change["target_id"], id);
    assert_eq!(
        change["changes"]["scopes"],
        json!([["orders:read"], ["audit:read"]])
    );
    assert_eq!(change["ip"], "127.0.0.1");
    assert!(change["request_id"].as_str().unwrap().starts_with("req_"));
    assert!(
        !events.to_string().contains("sy_live_"),
        "no key in the log"
    );

    // The log is append-only, even for the database owner.
    let err = sqlx::query("UPDATE audit_events SET action = 'forged'")
        .execute(&app.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test]
async fn a_rolled_key_keeps_working_for_its_grace_period_only() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Acme").await;
    let (old_id, old) = app
        .create_key(&tenant, Some(&["keys:write", "orders:read"]))
        .await;

    // Roll with a grace period: both keys work.
    let r = send(
        &app,
        reqwest::Method::POST,
        &format!("/v1/api-keys/{old_id}/roll"),
        &old,
        json!({ "grace_period_seconds": 3600 }),
    )
    .await;
    assert_eq!(r.status(), 201);
    let rolled: Value = r.json().await.unwrap();
    let new = rolled["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rolled["rolled_from"], old_id.as_str());
    assert_eq!(rolled["scopes"], json!(["keys:write", "orders:read"]));
    for k in [&old, &new] {
        assert_eq!(get(&app, &app.base, "/v1/api-keys", k).await.status(), 200);
    }
    let old_row: Value = get(&app, &app.base, &format!("/v1/api-keys/{old_id}"), &new)
        .await
        .json()
        .await
        .unwrap();
    assert!(old_row["expires_at"].is_string(), "{old_row}");
    // A key rolled once is not rolled again: the second new key would have died with the
    // first one's grace period (before: 201, with that expiry).
    let new_id = rolled["id"].as_str().unwrap();
    let v = problem(
        send(
            &app,
            reqwest::Method::POST,
            &format!("/v1/api-keys/{old_id}/roll"),
            &new,
            json!({}),
        )
        .await,
        409,
        "api_key_rolled",
        None,
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains(new_id), "{v}");

    // Rolling the new key with no grace retires it at once.
    let r = send(
        &app,
        reqwest::Method::POST,
        &format!("/v1/api-keys/{new_id}/roll"),
        &new,
        json!({ "grace_period_seconds": 0 }),
    )
    .await;
    assert_eq!(r.status(), 201);
    problem(
        get(&app, &app.base, "/v1/api-keys", &new).await,
        401,
        "api_key_expired",
        None,
    )
    .await;
    problem(
        send(
            &app,
            reqwest::Method::POST,
            &format!("/v1/api-keys/{old_id}/roll"),
            &old,
            json!({ "grace_period_seconds": 700000 }),
        )
        .await,
        400,
        "parameter_invalid",
        Some("grace_period_seconds"),
    )
    .await;
}

#[tokio::test]
async fn expired_keys_stop_working_even_when_cached() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Acme").await;
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    let key = app
        .create_key_with(&tenant, json!({ "name": "short", "expires_at": expires }))
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&app, &app.base, "/v1/webhook-endpoints", &key)
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    problem(
        get(&app, &app.base, "/v1/webhook-endpoints", &key).await,
        401,
        "api_key_expired",
        None,
    )
    .await;
}

#[tokio::test]
async fn revocation_reaches_every_replica_within_seconds() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (other, stop) = app.replica(app.api_config.clone()).await;
    let tenant = app.create_tenant("Acme").await;
    let (id, key) = app.create_key(&tenant, None).await;
    // Warm the other replica's cache.
    for _ in 0..3 {
        assert_eq!(
            get(&app, &other, "/v1/webhook-endpoints", &key)
                .await
                .status(),
            200
        );
    }
    let r = app
        .http
        .post(app.url(&format!("/admin/v1/tenants/{tenant}/api-keys/{id}/revoke")))
        .bearer_auth(switchyard_tests::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked = Instant::now();
    // The replica that revoked it refuses it at once.
    problem(
        get(&app, &app.base, "/v1/webhook-endpoints", &key).await,
        401,
        "api_key_revoked",
        None,
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "revocation on the other replica",
        || async {
            let r = get(&app, &other, "/v1/webhook-endpoints", &key).await;
            (r.status() == 401).then_some(())
        },
    )
    .await;
    println!(
        "revocation reached the other replica after {:?}",
        revoked.elapsed()
    );
    // Revoked is not deleted: the key and its usage stay readable for audits.
    for path in ["", &format!("/{id}/usage")] {
        let r = app
            .http
            .get(app.url(&format!("/admin/v1/tenants/{tenant}/api-keys{path}")))
            .bearer_auth(switchyard_tests::ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        if path.is_empty() {
            let row = v["data"].as_array().unwrap().iter().find(|k| k["id"] == id);
            assert!(row.unwrap()["revoked_at"].is_string(), "{v}");
        }
    }
    stop.cancel();
}

#[tokio::test]
async fn authentication_needs_no_database_round_trip_once_a_key_is_cached() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    // Warm the cache; the healthz call does not need auth.
    assert_eq!(
        get(&app, &app.base, "/v1/api-keys", &key).await.status(),
        403
    );
    // With the keys table gone, cached keys still authenticate (the route itself needs no
    // table of keys: a 403 for a missing scope is decided after authentication).
    sqlx::query("ALTER TABLE api_keys RENAME TO api_keys_away")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(
            get(&app, &app.base, "/v1/api-keys", &key)
                .await
                .status()
                .as_u16(),
        );
    }
    // An unseen key needs the table: it fails cleanly (503, retry later), not with a 500.
    let unseen = get(
        &app,
        &app.base,
        "/v1/api-keys",
        &switchyard_tests::unknown_valid_key(),
    )
    .await;
    let unseen = problem(unseen, 503, "service_unavailable", None).await;
    sqlx::query("ALTER TABLE api_keys_away RENAME TO api_keys")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(statuses, vec![403; 10], "authenticated from the cache");
    assert!(
        unseen["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was changed")
    );
}

#[tokio::test]
async fn allowlists_accept_only_their_networks_in_both_address_families() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Acme").await;
    let key_with = |cidrs: Value| {
        let app = &app;
        let tenant = tenant.clone();
        async move {
            app.create_key_with(&tenant, json!({ "name": "k", "allowed_cidrs": cidrs }))
                .await["key"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let loopback = key_with(json!(["127.0.0.0/8"])).await;
    let elsewhere = key_with(json!(["10.0.0.0/8", "2001:db8::/32"])).await;
    assert_eq!(
        get(&app, &app.base, "/v1/webhook-endpoints", &loopback)
            .await
            .status(),
        200
    );
    let v = problem(
        get(&app, &app.base, "/v1/webhook-endpoints", &elsewhere).await,
        403,
        "ip_not_allowed",
        None,
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("127.0.0.1"), "{v}");
    problem(
        app.admin_post(
            &format!("/admin/v1/tenants/{tenant}/api-keys"),
            json!({ "name": "k", "allowed_cidrs": ["10.0.0.0/8", "300.1.1.1/8"] }),
        )
        .await,
        400,
        "parameter_invalid",
        Some("allowed_cidrs[1]"),
    )
    .await;

    // Behind a trusted proxy the client is the forwarded address, IPv6 included.
    let mut config = app.api_config.clone();
    config.trusted_proxies = vec![switchyard_shared::net::Cidr::parse("127.0.0.1").unwrap()];
    let (proxied, stop) = app.replica(config).await;
    let via = |ip: &'static str, key: String| {
        let app = &app;
        let url = format!("{proxied}/v1/webhook-endpoints");
        async move {
            app.http
                .get(url)
                .bearer_auth(key)
                .header("x-forwarded-for", format!("{ip}, 127.0.0.1"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(via("2001:db8::7", elsewhere.clone()).await, 200);
    assert_eq!(via("10.1.2.3", elsewhere.clone()).await, 200);
    assert_eq!(via("2001:db9::7", elsewhere.clone()).await, 403);
    assert_eq!(via("192.168.1.1", elsewhere.clone()).await, 403);
    // Every line of the header counts, in order: a proxy that adds its own line after the
    // client's forged one names the client. A forged entry that is not an address (here
    // obs-text bytes) stops the walk at the address the proxy added.
    let lines = |values: &[&'static [u8]]| {
        let mut r = app
            .http
            .get(format!("{proxied}/v1/webhook-endpoints"))
            .bearer_auth(&elsewhere);
        for v in values {
            r = r.header(
                "x-forwarded-for",
                reqwest::header::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(lines(&[b"10.1.2.3", b"192.168.1.1"]).await, 403);
    assert_eq!(lines(&[b"192.168.1.1", b"10.1.2.3"]).await, 200);
    assert_eq!(lines(&[b"\xff, 10.1.2.3"]).await, 200);
    stop.cancel();
}

#[tokio::test]
async fn usage_is_counted_per_key_and_operation_without_a_write_per_request() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Acme").await;
    let (id, key) = app
        .create_key(&tenant, Some(&["keys:read", "webhooks:read"]))
        .await;
    for _ in 0..7 {
        assert_eq!(
            get(&app, &app.base, "/v1/webhook-endpoints", &key)
                .await
                .status(),
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get(
                &app,
                &app.base,
                "/v1/orders/00000000-0000-0000-0000-000000000000",
                &key
            )
            .await
            .status(),
            403
        );
    }
    // Nothing is written per request: the aggregate and `last_used_at` arrive with the next
    // flushes (≤ 5 s each; under load they may land in different ones).
    let usage = eventually(Duration::from_secs(15), "usage flush", || async {
        let v: Value = get(&app, &app.base, &format!("/v1/api-keys/{id}/usage"), &key)
            .await
            .json()
            .await
            .unwrap();
        (v["requests"].as_i64() >= Some(9) && v["last_used_at"].is_string()).then_some(v)
    })
    .await;
    let by_op: Vec<(String, i64, i64)> = usage["by_operation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["operation"].as_str().unwrap().to_owned(),
                o["requests"].as_i64().unwrap(),
                o["errors"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        by_op.contains(&("listWebhookEndpoints".into(), 7, 0)),
        "{usage}"
    );
    assert!(by_op.contains(&("getOrder".into(), 2, 2)), "{usage}");
    assert!(usage["last_used_at"].is_string(), "{usage}");
    assert_eq!(usage["by_hour"].as_array().unwrap().len(), 1, "{usage}");
    // Usage is kept 90 days: an earlier `since` reads as 90 days back.
    let old = get(
        &app,
        &app.base,
        &format!("/v1/api-keys/{id}/usage?since=2001-01-01T00:00:00Z"),
        &key,
    )
    .await;
    assert_eq!(old.status(), 200);
    let old: Value = old.json().await.unwrap();
    let since = chrono::DateTime::parse_from_rfc3339(old["since"].as_str().unwrap()).unwrap();
    let days = (chrono::Utc::now() - since.with_timezone(&chrono::Utc)).num_days();
    assert!((89..=90).contains(&days), "{old}");
}

/// A roll renews a key's secret, not its life: the new key ends when the old one was to end.
#[tokio::test]
async fn a_rolled_key_keeps_its_expiry() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("Acme").await;
    let ends = (chrono::Utc::now() + chrono::Duration::hours(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let created = app
        .create_key_with(
            &tenant,
            json!({"name": "short-lived", "scopes": ["keys:write"], "expires_at": ends}),
        )
        .await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    let r = send(
        &app,
        reqwest::Method::POST,
        &format!("/v1/api-keys/{id}/roll"),
        key,
        json!({ "grace_period_seconds": 60 }),
    )
    .await;
    assert_eq!(r.status(), 201);
    let rolled: Value = r.json().await.unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(rolled["expires_at"].clone()).unwrap();
    assert_eq!(
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ends
    );
}
