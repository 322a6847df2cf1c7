//! A tenant's logs: its API requests (written in batches off the request path, filtered,
//! paged, nothing secret in them), one list of everything that failed, and where its key
//! stands on its rate limits.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually};

async fn get(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let r = app
        .http
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The data of a list, once it has at least `n` entries.
async fn at_least(app: &TestApp, key: &str, path: &str, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(10), path, || async {
        let (status, body) = get(app, key, path).await;
        assert_eq!(status, 200, "{body}");
        let data = body["data"].as_array().unwrap().clone();
        (data.len() >= n).then_some(data)
    })
    .await
}

#[tokio::test]
async fn every_request_is_logged_without_secrets_and_the_log_filters_and_pages() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("logged").await;
    let (key_id, key) = app
        .create_key(&tenant, Some(&["orders:write", "logs:read"]))
        .await;
    let (reader_id, reader) = app.create_key(&tenant, Some(&["orders:read"])).await;
    let other_tenant = app.create_tenant("other").await;
    let (_, other) = app
        .create_key(&other_tenant, Some(&["orders:read", "logs:read"]))
        .await;

    let mut order = TestApp::order_body("logged-1");
    order["customer"]["name"] = json!("Body Secret Name");
    let created = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&key)
        .header("idempotency-key", "log-key-1")
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created_id = created.headers()["request-id"].to_str().unwrap().to_owned();
    let bad = app
        .partner_post(&key, "/v1/orders", json!({"items": 5}))
        .await;
    assert_eq!(bad.status(), 400);
    let bad_id = bad.headers()["request-id"].to_str().unwrap().to_owned();
    let bad_code = bad.json::<Value>().await.unwrap()["code"].clone();
    let (status, _) = get(&app, &reader, "/v1/orders?limit=1&token=query-secret").await;
    assert_eq!(status, 200);
    let (status, _) = get(&app, &other, "/v1/orders").await;
    assert_eq!(status, 200);

    // (Reading the log is logged too: the path filter leaves those reads out.)
    let all = at_least(&app, &key, "/v1/logs/requests?limit=100&path=/v1/orders", 3).await;
    assert_eq!(
        all.len(),
        3,
        "the other tenant's request is not here: {all:?}"
    );
    let [listed, failed, created] = [&all[0], &all[1], &all[2]];
    assert_eq!(created["id"], created_id.as_str());
    assert_eq!(created["method"], "POST");
    assert_eq!(created["path"], "/v1/orders");
    assert_eq!(created["operation"], "createOrder");
    assert_eq!(created["status"], 201);
    assert_eq!(created["api_key_id"], key_id.as_str());
    assert_eq!(created["idempotency_key"], "log-key-1");
    assert_eq!(created["client_ip"], "127.0.0.1");
    assert!(created["problem_code"].is_null());
    assert!(created["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(created["created_at"].is_string());
    assert_eq!(failed["id"], bad_id.as_str());
    assert_eq!(failed["status"], 400);
    assert_eq!(failed["problem_code"], bad_code);
    assert!(bad_code.is_string());
    assert_eq!(listed["path"], "/v1/orders", "no query string");
    assert_eq!(listed["api_key_id"], reader_id.as_str());

    // Nothing secret is stored: no key, no body, no query string.
    let stored: String =
        sqlx::query_scalar("SELECT COALESCE(string_agg(r::text, ' '), '') FROM request_logs r")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    for secret in [&key, &reader, &other, "Body Secret Name", "query-secret"] {
        assert!(!stored.contains(secret), "{secret} in {stored}");
    }

    // Filters.
    let only = |q: &str| format!("/v1/logs/requests?{q}");
    let ids = |v: Vec<Value>| -> Vec<String> {
        v.iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, r) = get(&app, &key, &only("status_class=4xx")).await;
    assert_eq!(
        ids(r["data"].as_array().unwrap().clone()),
        std::slice::from_ref(&bad_id)
    );
    let (_, r) = get(&app, &key, &only(&format!("api_key_id={reader_id}"))).await;
    assert_eq!(r["data"].as_array().unwrap().len(), 1);
    assert_eq!(r["data"][0]["api_key_id"], reader_id.as_str());
    let (_, r) = get(&app, &key, &only("path=/v1/orders&status_class=2xx")).await;
    assert_eq!(r["data"].as_array().unwrap().len(), 2);
    let (_, r) = get(&app, &key, &only("path=/v1/logs/&limit=1")).await;
    assert_eq!(r["data"][0]["operation"], "listRequestLogs");
    let (_, r) = get(&app, &key, &only("path=/v1/webhook")).await;
    assert_eq!(r["data"].as_array().unwrap().len(), 0);
    let (_, r) = get(&app, &key, &only("created[gte]=2100-01-01T00:00:00Z")).await;
    assert_eq!(r["data"].as_array().unwrap().len(), 0);
    let (_, r) = get(
        &app,
        &key,
        &only("created[lt]=2100-01-01T00:00:00Z&limit=100"),
    )
    .await;
    assert!(r["data"].as_array().unwrap().len() >= 3);

    // Pages, newest first, each request once.
    let mut seen = vec![];
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("limit=1&starting_after={a}&created[lt]=2100-01-01T00:00:00Z"),
            None => "limit=1&created[lt]=2100-01-01T00:00:00Z".into(),
        };
        let (_, page) = get(&app, &key, &only(&q)).await;
        let data = page["data"].as_array().unwrap();
        seen.extend(ids(data.clone()));
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        after = seen.last().cloned();
    }
    // Listing the log is itself logged, so the walk sees at least the three first requests.
    assert!(seen.ends_with(&ids(all.clone())), "{seen:?}");
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique, seen);

    // Bad cursors and missing scopes are clear errors.
    let (status, body) = get(&app, &key, &only("starting_after=ord_123")).await;
    assert_eq!(
        (status, body["param"].as_str()),
        (400, Some("starting_after"))
    );
    let (status, body) = get(&app, &reader, "/v1/logs/requests").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("insufficient_scope"))
    );
}

#[tokio::test]
async fn the_error_log_lists_failures_of_every_kind_newest_first() {
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "200ms,200ms".into(),
        ..Default::default()
    })
    .await;
    let tenant = app.create_tenant("failing").await;
    let (_, key) = app
        .create_key(&tenant, Some(switchyard_shared::api_keys::ALL_SCOPES))
        .await;
    let test_key = app
        .create_key_with(
            &tenant,
            json!({"name": "test", "mode": "test", "scopes": ["logs:read"]}),
        )
        .await;
    let test_key = test_key["key"].as_str().unwrap().to_owned();

    // A delivery given up on.
    let partner = PartnerServer::start(Behaviour::Status(503)).await;
    app.create_endpoint(
        &key,
        &format!("{}?token=endpoint-secret", partner.url),
        &["*"],
    )
    .await;
    assert_eq!(app.post_order(&key, "err-1").await.status(), 201);
    eventually(Duration::from_secs(15), "the delivery to fail", || async {
        let n = app
            .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'")
            .await;
        (n == 1).then_some(())
    })
    .await;
    // An inbound webhook that fails processing, and one rejected.
    let integration: Value = app
        .partner_post(
            &key,
            "/v1/integrations",
            json!({"name": "ERP", "code": "erp-log", "type": "erp", "provider": "http",
                   "base_url": "http://127.0.0.1:9",
                   "inbound": {"scheme": "none", "action": {"type": "store"}}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let inbound = app.url(integration["inbound_url"].as_str().unwrap());
    for (content_type, status) in [("application/json", 400), ("text/plain", 415)] {
        let r = app
            .http
            .post(&inbound)
            .header("content-type", content_type)
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }
    // A failed sync run (seeded: what makes a run fail is the sync tests' business).
    let configuration: Value = app
        .partner_post(
            &key,
            "/v1/sync/configurations",
            json!({"name": "Items", "entity": "items", "mode": "full",
                   "source": {"integration_id": integration["id"], "resource": "/items",
                              "key": ["id"]},
                   "target": {"store": "switchyard"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let run: String = sqlx::query_scalar(
        "INSERT INTO sync_runs (id, tenant_id, mode, configuration_id, status, trigger, job_id,
                                error, started_at, finished_at)
         VALUES (gen_random_uuid(), $1::uuid, 'live', $2::uuid, 'failed', 'manual',
                 gen_random_uuid(), 'the ERP refused the connection', now(), now())
         RETURNING id::text",
    )
    .bind(&tenant)
    .bind(configuration["id"].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // A request refused.
    let (status, _) = get(&app, &key, &format!("/v1/orders/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(status, 404);

    let log = at_least(&app, &key, "/v1/logs/errors?limit=100", 5).await;
    let kinds: Vec<&str> = log.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["request", "webhook_delivery", "inbound_event", "sync_run"] {
        assert!(kinds.contains(&kind), "{kind} missing from {log:?}");
    }
    let times: Vec<&str> = log
        .iter()
        .map(|e| e["occurred_at"].as_str().unwrap())
        .collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> =
        times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(
        parsed.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let find = |code: &str| {
        log.iter()
            .find(|e| e["code"] == code)
            .unwrap_or_else(|| panic!("{code} in {log:?}"))
            .clone()
    };
    let delivery = find("delivery_failed");
    assert_eq!(delivery["severity"], "error");
    let message = delivery["message"].as_str().unwrap();
    assert!(
        message.contains("3 attempt(s)") && message.contains("503"),
        "{message}"
    );
    assert!(!message.contains("endpoint-secret"), "{message}");
    let (status, shown) = get(&app, &key, delivery["url"].as_str().unwrap()).await;
    assert_eq!((status, shown["status"].as_str()), (200, Some("failed")));
    assert_eq!(find("inbound_failed")["severity"], "error");
    assert_eq!(find("inbound_rejected")["severity"], "warning");
    let sync = find("sync_run_failed");
    assert_eq!(sync["id"], run.as_str());
    assert!(
        sync["message"]
            .as_str()
            .unwrap()
            .contains("refused the connection")
    );
    assert_eq!(sync["url"], format!("/v1/sync/runs/{run}").as_str());
    let refused = find("resource_not_found");
    assert_eq!(
        (refused["kind"].as_str(), refused["severity"].as_str()),
        (Some("request"), Some("warning"))
    );
    assert!(refused["url"].is_null());

    // Page by page, the same entries in the same order.
    let mut paged = vec![];
    let mut after: Option<String> = None;
    while paged.len() < log.len() {
        let q = match &after {
            Some(a) => format!("/v1/logs/errors?limit=2&starting_after={a}"),
            None => "/v1/logs/errors?limit=2".into(),
        };
        let (_, page) = get(&app, &key, &q).await;
        let data = page["data"].as_array().unwrap();
        assert!(
            !data.is_empty(),
            "ran out at {} of {}",
            paged.len(),
            log.len()
        );
        paged.extend(data.iter().map(|e| e["id"].clone()));
        after = paged.last().and_then(|v| v.as_str()).map(str::to_owned);
    }
    let listed: Vec<Value> = log.iter().map(|e| e["id"].clone()).collect();
    // Newer failures (the listing requests are not failures) cannot slip in between.
    assert_eq!(paged[..listed.len()], listed[..]);

    // Another tenant sees none of them.
    let stranger = app.create_tenant("stranger").await;
    let (_, stranger) = app.create_key(&stranger, Some(&["logs:read"])).await;
    let (status, body) = get(&app, &stranger, "/v1/logs/errors").await;
    assert_eq!((status, &body["data"]), (200, &json!([])), "{body}");
    // A test key sees none of the live failures.
    let (status, body) = get(&app, &test_key, "/v1/logs/errors").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([]), "{body}");
    let (status, body) = get(&app, &key, "/v1/logs/errors?starting_after=nope").await;
    assert_eq!(
        (status, body["param"].as_str()),
        (400, Some("starting_after"))
    );
}

#[tokio::test]
async fn a_key_sees_where_it_stands_on_every_rate_limit() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = app.create_tenant("limited").await;
    let created = app
        .create_key_with(
            &tenant,
            json!({"name": "limited", "scopes": ["logs:read"], "rate_limit_per_minute": 5}),
        )
        .await;
    let key = created["key"].as_str().unwrap();
    let (status, first) = get(&app, key, "/v1/rate-limits").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["api_key_id"], created["id"]);
    assert_eq!(first["degraded"], false);
    let limit = |body: &Value, name: &str| {
        body["limits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {body}"))
            .clone()
    };
    let minute = limit(&first, "key-minute");
    assert_eq!(
        (
            minute["applies_to"].as_str(),
            minute["limit"].as_u64(),
            minute["window_seconds"].as_u64()
        ),
        (Some("api_key"), Some(5), Some(60))
    );
    assert_eq!(minute["remaining"], 4, "this request counted");
    assert_eq!(limit(&first, "tenant-minute")["applies_to"], "tenant");
    assert_eq!(limit(&first, "key-hour")["window_seconds"], 3600);
    let (_, second) = get(&app, key, "/v1/rate-limits").await;
    assert_eq!(limit(&second, "key-minute")["remaining"], 3);
    assert!(
        limit(&second, "key-minute")["reset_seconds"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

/// While Postgres refuses request logs they wait in memory, at most `MAX_PENDING` of them;
/// past that new ones are dropped (counted), and once Postgres takes them again every kept
/// entry is written once.
#[tokio::test]
async fn request_logs_wait_for_postgres_within_their_memory_bound() {
    use switchyard_shared::{
        logs::requests::{MAX_PENDING, RequestEntry, RequestLogger},
        mode::Mode,
    };
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let tenant = uuid::Uuid::now_v7();
    let entry = |path: String| RequestEntry {
        id: uuid::Uuid::now_v7(),
        tenant_id: tenant,
        mode: Mode::Live,
        api_key_id: uuid::Uuid::nil(),
        method: "GET".into(),
        path,
        operation: "getOrder",
        status: 200,
        duration_ms: 1.0,
        client_ip: None,
        idempotency_key: None,
        problem_code: None,
    };
    sqlx::query("ALTER TABLE request_logs ADD CONSTRAINT refused CHECK (false)")
        .execute(&app.pool)
        .await
        .unwrap();
    let logger = RequestLogger::default();
    for i in 0..MAX_PENDING {
        logger.record(entry(format!("/v1/orders/{i}")));
    }
    assert!(logger.flush(&app.pool).await.is_err(), "refused, kept");
    for i in 0..7 {
        logger.record(entry(format!("/v1/late/{i}")));
    }
    assert!(logger.flush(&app.pool).await.is_err(), "refused again");
    sqlx::query("ALTER TABLE request_logs DROP CONSTRAINT refused")
        .execute(&app.pool)
        .await
        .unwrap();
    logger.flush(&app.pool).await.unwrap();
    let (written, late): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE path LIKE '/v1/late/%')
           FROM request_logs WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(written, MAX_PENDING as i64, "every kept entry, once");
    assert_eq!(late, 0, "entries past the bound were dropped");
}
