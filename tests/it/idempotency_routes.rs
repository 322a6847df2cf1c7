//! `Idempotency-Key` on every mutating partner route (read from the served OpenAPI document, so
//! a new route cannot be left out), and its record committing with the change it describes.

use std::{collections::BTreeSet, time::Duration};

use serde_json::{Value, json};
use switchyard_tests::{
    Behaviour, PartnerServer, TestApp, TestOptions, eventually, process::Process,
};

/// Every partner POST and PATCH, run twice with one key: the second answer is the first one,
/// replayed, and nothing ran twice.
#[tokio::test]
async fn every_mutating_partner_route_replays_its_first_answer() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let tenant = app.create_tenant("Acme").await;
    let (_, key) = app
        .create_key(&tenant, Some(switchyard_shared::api_keys::ALL_SCOPES))
        .await;
    // What the routes act on.
    let (endpoint, _) = app.create_endpoint(&key, &partner.url, &["*"]).await;
    let order = app
        .post_order(&key, "idem-route-1")
        .await
        .json::<Value>()
        .await
        .unwrap();
    let order = order["id"].as_str().unwrap().to_owned();
    let order2 = app
        .post_order(&key, "idem-route-2")
        .await
        .json::<Value>()
        .await
        .unwrap();
    let order2 = order2["id"].as_str().unwrap().to_owned();
    let test: Value = app
        .partner_post(
            &key,
            &format!("/v1/webhook-endpoints/{endpoint}/test"),
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    let delivery = test["delivery_id"].as_str().unwrap().to_owned();
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let replay: Value = app
        .partner_post(
            &key,
            &format!("/v1/webhook-endpoints/{endpoint}/replays"),
            json!({ "since": since }),
        )
        .await
        .json()
        .await
        .unwrap();
    let replay = replay["id"].as_str().unwrap().to_owned();
    let other_key: Value = app
        .partner_post(&key, "/v1/api-keys", json!({ "name": "other" }))
        .await
        .json()
        .await
        .unwrap();
    let other_key = other_key["id"].as_str().unwrap().to_owned();

    let erp = switchyard_tests::ErpServer::start(200).await;
    let integration: Value = app
        .partner_post(
            &key,
            "/v1/integrations",
            json!({"name": "ERP", "code": "erp-setup", "type": "erp", "provider": "http",
                   "base_url": erp.url,
                   "inbound": {"scheme": "none", "action": {"type": "store"}}}),
        )
        .await
        .json()
        .await
        .unwrap();
    // A verified request whose body is not JSON: a failed inbound event, which can be retried.
    let inbound_url = integration["inbound_url"].as_str().unwrap();
    let r = app
        .http
        .post(app.url(inbound_url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let integration = integration["id"].as_str().unwrap().to_owned();
    let inbound_event: String =
        sqlx::query_scalar("SELECT id::text FROM inbound_events WHERE status = 'failed'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    // Sync: configurations over a Postgres integration; a run cancelled (retryable), a run
    // pending (cancellable), and a configuration with no run yet (startable).
    let database: Value = app
        .partner_post(
            &key,
            "/v1/integrations",
            json!({"name": "MES", "code": "mes-db", "type": "mes", "provider": "postgres",
                   "credentials": {"url": "postgres://127.0.0.1:5432/none"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let sync_spec = json!({"name": "Equipment", "entity": "equipment", "mode": "full",
        "source": {"integration_id": database["id"], "table": "equipment", "key": ["id"]},
        "target": {"store": "switchyard"}});
    let mut sync_configs = Vec::new();
    let mut sync_runs = Vec::new();
    for start in [true, true, false] {
        let config: Value = app
            .partner_post(&key, "/v1/sync/configurations", sync_spec.clone())
            .await
            .json()
            .await
            .unwrap();
        let config = config["id"].as_str().unwrap().to_owned();
        if start {
            let run: Value = app
                .partner_post(
                    &key,
                    &format!("/v1/sync/configurations/{config}/runs"),
                    json!({}),
                )
                .await
                .json()
                .await
                .unwrap();
            sync_runs.push(run["id"].as_str().unwrap().to_owned());
        }
        sync_configs.push(config);
    }
    let r = app
        .partner_post(
            &key,
            &format!("/v1/sync/runs/{}/cancel", sync_runs[0]),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    // A conflict as a bidirectional run leaves one (written here: making one takes a second
    // system); resolving it asks the configuration's active run (the retry below) for a
    // follow-up instead of starting another.
    let conflict: String = sqlx::query_scalar(
        "INSERT INTO sync_conflicts (id, tenant_id, mode, configuration_id, key, status, reason,
                                     fields, source_data)
         SELECT gen_random_uuid(), tenant_id, mode, id, 'E-1', 'open', 'both_changed', '{name}',
                '{\"name\": \"a\"}'
           FROM sync_configurations WHERE id = $1::uuid
         RETURNING id::text",
    )
    .bind(&sync_configs[0])
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let cases: Vec<(&str, String, Value)> = vec![
        (
            "createSyncConfiguration",
            "/v1/sync/configurations".into(),
            sync_spec.clone(),
        ),
        (
            "updateSyncConfiguration",
            format!("/v1/sync/configurations/{}", sync_configs[0]),
            json!({ "batch_size": 100 }),
        ),
        (
            "startSyncRun",
            format!("/v1/sync/configurations/{}/runs", sync_configs[2]),
            json!({}),
        ),
        (
            "cancelSyncRun",
            format!("/v1/sync/runs/{}/cancel", sync_runs[1]),
            json!({}),
        ),
        (
            "retrySyncRun",
            format!("/v1/sync/runs/{}/retry", sync_runs[0]),
            json!({}),
        ),
        (
            "resolveSyncConflict",
            format!("/v1/sync/conflicts/{conflict}/resolve"),
            json!({ "resolution": "source" }),
        ),
        (
            "createIntegration",
            "/v1/integrations".into(),
            json!({"name": "MES", "code": "mes", "type": "mes", "provider": "http",
                   "credentials": {"bearer_token": "tok-0123456789"}}),
        ),
        (
            "updateIntegration",
            format!("/v1/integrations/{integration}"),
            json!({"credentials": {"api_key": "key-0123456789"}}),
        ),
        (
            "testIntegration",
            format!("/v1/integrations/{integration}/test"),
            json!({}),
        ),
        (
            "rotateIntegrationInboundUrl",
            format!("/v1/integrations/{integration}/inbound/rotate-url"),
            json!({}),
        ),
        (
            "retryInboundEvent",
            format!("/v1/inbound-events/{inbound_event}/retry"),
            json!({}),
        ),
        (
            "createOwnApiKey",
            "/v1/api-keys".into(),
            json!({ "name": "k" }),
        ),
        (
            "updateOwnApiKey",
            format!("/v1/api-keys/{other_key}"),
            json!({ "name": "renamed" }),
        ),
        (
            "rollOwnApiKey",
            format!("/v1/api-keys/{other_key}/roll"),
            json!({}),
        ),
        (
            "revokeOwnApiKey",
            format!("/v1/api-keys/{other_key}/revoke"),
            json!({}),
        ),
        (
            "createEventType",
            "/v1/event-types".into(),
            json!({ "name": "invoice.paid" }),
        ),
        (
            "updateEventType",
            "/v1/event-types/invoice.paid".into(),
            json!({ "description": "d" }),
        ),
        (
            "createEvent",
            "/v1/events".into(),
            json!({ "type": "invoice.paid", "data": { "invoice": "inv-1" } }),
        ),
        (
            "createOrder",
            "/v1/orders".into(),
            TestApp::order_body("idem-route-3"),
        ),
        (
            "updateOrder",
            format!("/v1/orders/{order}"),
            json!({ "notes": "n" }),
        ),
        (
            "changeOrderStatus",
            format!("/v1/orders/{order}/status"),
            json!({ "status": "confirmed" }),
        ),
        (
            "cancelOrder",
            format!("/v1/orders/{order2}/cancel"),
            json!({}),
        ),
        (
            "retryWebhookDelivery",
            format!("/v1/webhook-deliveries/{delivery}/retry"),
            json!({}),
        ),
        (
            "createWebhookEndpoint",
            "/v1/webhook-endpoints".into(),
            json!({ "url": partner.url }),
        ),
        (
            "updateWebhookEndpoint",
            format!("/v1/webhook-endpoints/{endpoint}"),
            json!({ "description": "d" }),
        ),
        (
            "createWebhookReplay",
            format!("/v1/webhook-endpoints/{endpoint}/replays"),
            json!({ "since": since, "dry_run": true }),
        ),
        (
            "rotateWebhookEndpointSecret",
            format!("/v1/webhook-endpoints/{endpoint}/secret/rotate"),
            json!({}),
        ),
        (
            "testWebhookEndpoint",
            format!("/v1/webhook-endpoints/{endpoint}/test"),
            json!({}),
        ),
        (
            "previewWebhookEndpoint",
            format!("/v1/webhook-endpoints/{endpoint}/preview"),
            json!({}),
        ),
        (
            "cancelWebhookReplay",
            format!("/v1/webhook-replays/{replay}/cancel"),
            json!({}),
        ),
    ];

    // The cases cover exactly the partner POST and PATCH operations the server documents.
    let spec: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut documented = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if path.starts_with("/v1/") && (method == "post" || method == "patch") {
                documented.insert(op["operationId"].as_str().unwrap().to_owned());
                let header = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
                assert!(header, "{path} documents Idempotency-Key");
            }
        }
    }
    let covered: BTreeSet<String> = cases.iter().map(|c| c.0.to_owned()).collect();
    assert_eq!(covered, documented);

    for (op, path, body) in &cases {
        let method = if op.starts_with("update") {
            reqwest::Method::PATCH
        } else {
            reqwest::Method::POST
        };
        let idem = format!("idem-{op}");
        let call = || {
            app.http
                .request(method.clone(), app.url(path))
                .bearer_auth(&key)
                .header("idempotency-key", &idem)
                .json(body)
                .send()
        };
        let first = call().await.unwrap();
        let status = first.status();
        assert!(status.is_success(), "{op}: {}", first.text().await.unwrap());
        assert!(first.headers().get("idempotent-replayed").is_none(), "{op}");
        let first_body = first.bytes().await.unwrap();
        let second = call().await.unwrap();
        assert_eq!(second.status(), status, "{op}");
        assert_eq!(second.headers()["idempotent-replayed"], "true", "{op}");
        assert_eq!(
            second.bytes().await.unwrap(),
            first_body,
            "{op}: the first answer"
        );
        // Recorded with the change, in its transaction.
        let state: String = sqlx::query_scalar("SELECT state FROM idempotency_keys WHERE key = $1")
            .bind(&idem)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(state, "finished", "{op}");
    }
    // Each ran once: one test send per call above (two, with the one made for the setup), one
    // order.updated, one rotation, one connection check.
    assert_eq!(partner.count(), 2);
    assert_eq!(erp.seen().len(), 1);
    let history = app
        .partner_get(&key, &format!("/v1/orders/{order}/events"))
        .await;
    let types: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["order.created", "order.updated", "order.confirmed"]);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE type = 'invoice.paid'")
            .await,
        1
    );
    // Four configurations (three set up, one created), four runs (two set up, one started,
    // one retry).
    assert_eq!(
        app.count("SELECT count(*) FROM sync_configurations").await,
        4
    );
    assert_eq!(app.count("SELECT count(*) FROM sync_runs").await, 4);
}

/// The record of a mutation commits in the mutation's own transaction: an API killed between
/// the change and its record leaves neither, so the retry runs exactly once (today's main
/// would emit a second `order.updated` with another `webhook-id`).
#[tokio::test]
async fn an_api_killed_before_the_record_commits_leaves_no_change_behind() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let order = app
        .post_order(&key, "atomic-1")
        .await
        .json::<Value>()
        .await
        .unwrap();
    let path = format!("/v1/orders/{}", order["id"].as_str().unwrap());
    let (mut api, base) = Process::spawn_api(&app.process_env()).await;
    // Writing the record stalls (as if the API were killed at that moment).
    sqlx::raw_sql(
        "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(4); RETURN NEW; END $$;
         CREATE TRIGGER stall BEFORE UPDATE ON idempotency_keys
           FOR EACH ROW EXECUTE FUNCTION stall();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let patch = |base: String| {
        let (http, key, path) = (app.http.clone(), key.clone(), path.clone());
        async move {
            http.patch(format!("{base}{path}"))
                .bearer_auth(key)
                .header("idempotency-key", "patch-1")
                .json(&json!({ "notes": "second floor" }))
                .send()
                .await
        }
    };
    let first = tokio::spawn(patch(base));
    eventually(Duration::from_secs(10), "the record to stall", || async {
        let stalled = app
            .count("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(4)%' AND pid <> pg_backend_pid()")
            .await;
        (stalled > 0).then_some(())
    })
    .await;
    api.kill9();
    assert!(
        first.await.unwrap().is_err(),
        "the client saw the connection die"
    );
    sqlx::raw_sql("DROP TRIGGER stall ON idempotency_keys; DROP FUNCTION stall();")
        .execute(&app.pool)
        .await
        .unwrap();
    // The killed request's claim lapses (as it would after a minute).
    sqlx::query("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (_api, base) = Process::spawn_api(&app.process_env()).await;
    let retry = patch(base.clone()).await.unwrap();
    assert_eq!(retry.status(), 200);
    assert!(
        retry.headers().get("idempotent-replayed").is_none(),
        "it ran"
    );
    let again = patch(base).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    // One change, one event: the killed attempt left nothing.
    let history = app.partner_get(&key, &format!("{path}/events")).await;
    let types: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["order.created", "order.updated"]);
}
