//! Tenant and mode isolation matrix: every partner route that takes an id or a name, read from
//! the served OpenAPI document (so a new route is covered the day it appears), called with
//! another tenant's id — or, with a test key, with its own tenant's live ids — answers 404 and
//! changes nothing; every list shows only the caller's own resources.

use serde_json::{Value, json};
use switchyard_tests::{TestApp, TestOptions, problem};

const ALL: &[&str] = &[
    "orders:write",
    "webhooks:write",
    "keys:write",
    "audit:read",
    "events:write",
    "integrations:write",
    "sync:write",
];

struct Account {
    tenant: String,
    key: String,
    key_row: String,
    event_type: String,
    order: String,
    endpoint: String,
    delivery: String,
    replay: String,
    event: String,
    integration: String,
    inbound_event: String,
    sync_configuration: String,
    sync_run: String,
    sync_conflict: String,
    /// A record key of entity `equipment`.
    sync_record: String,
}

async fn account(app: &TestApp, name: &str) -> Account {
    let tenant = app.create_tenant(name).await;
    let (key_row, key) = app.create_key(&tenant, Some(ALL)).await;
    let order: Value = app
        .post_order(&key, &format!("{name}-order"))
        .await
        .json()
        .await
        .unwrap();
    let (endpoint, _) = app
        .create_endpoint(&key, "http://127.0.0.1:9/hook", &["order.*"])
        .await;
    // A test send leaves a delivery (and its attempt) behind.
    let attempt: Value = app
        .partner_post(
            &key,
            &format!("/v1/webhook-endpoints/{endpoint}/test"),
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    let event_type = format!("{name}.thing");
    let r = app
        .partner_post(&key, "/v1/event-types", json!({ "name": event_type }))
        .await;
    assert_eq!(r.status(), 201);
    let event: Value = app
        .partner_post(
            &key,
            "/v1/events",
            json!({ "type": event_type, "data": {} }),
        )
        .await
        .json()
        .await
        .unwrap();
    let replay: Value = app
        .partner_post(
            &key,
            &format!("/v1/webhook-endpoints/{endpoint}/replays"),
            json!({ "since": "2026-01-01T00:00:00Z", "dry_run": true }),
        )
        .await
        .json()
        .await
        .unwrap();
    let integration: Value = app
        .partner_post(
            &key,
            "/v1/integrations",
            json!({"name": "ERP", "code": "erp", "type": "erp", "provider": "http",
                   "base_url": "https://erp.example", "credentials": {"api_key": "k-0123456789"},
                   "inbound": {"scheme": "none", "action": {"type": "store"}}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let inbound_event: Value = app
        .http
        .post(app.url(integration["inbound_url"].as_str().unwrap()))
        .json(&json!({"hello": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // A sync configuration reading a Postgres integration, and a run left pending (no worker).
    let database: Value = app
        .partner_post(
            &key,
            "/v1/integrations",
            json!({"name": "MES", "code": "mes", "type": "mes", "provider": "postgres",
                   "credentials": {"url": "postgres://127.0.0.1:5432/none"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let sync: Value = app
        .partner_post(
            &key,
            "/v1/sync/configurations",
            json!({"name": "Equipment", "entity": "equipment", "mode": "full",
                   "source": {"integration_id": database["id"], "table": "equipment", "key": ["id"]},
                   "target": {"store": "switchyard"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let sync_configuration = sync["id"].as_str().unwrap().to_owned();
    let run: Value = app
        .partner_post(
            &key,
            &format!("/v1/sync/configurations/{sync_configuration}/runs"),
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    // A conflict as a bidirectional run leaves one (a row written here: no run can make one
    // without a second system), and a record the partner wrote.
    let sync_conflict = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO sync_conflicts (id, tenant_id, mode, configuration_id, key, status, reason,
                                     fields)
         SELECT $1::uuid, tenant_id, mode, id, 'E-1', 'open', 'both_changed', '{name}'
           FROM sync_configurations WHERE id = $2::uuid",
    )
    .bind(&sync_conflict)
    .bind(&sync_configuration)
    .execute(&app.pool)
    .await
    .unwrap();
    let sync_record = format!("{name}-record");
    let r = app
        .http
        .put(app.url(&format!("/v1/sync/records/equipment/{sync_record}")))
        .bearer_auth(&key)
        .json(&json!({"data": {"name": name}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    Account {
        sync_configuration,
        sync_conflict,
        sync_record,
        sync_run: run["id"].as_str().unwrap().to_owned(),
        inbound_event: inbound_event["id"].as_str().unwrap().to_owned(),
        integration: integration["id"].as_str().unwrap().to_owned(),
        replay: replay["id"].as_str().unwrap().to_owned(),
        event: event["id"].as_str().unwrap().to_owned(),
        tenant,
        event_type,
        key,
        key_row,
        order: order["id"].as_str().unwrap().to_owned(),
        endpoint,
        delivery: attempt["delivery_id"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn no_partner_route_reaches_another_tenants_resources() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let a = account(&app, "alpha").await;
    let b = account(&app, "beta").await;
    let spec: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let before = snapshot(&app, &b.tenant).await;
    let routes = walk(&app, &spec, &a.key, &b).await;
    let expected = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(p, _)| {
            p.starts_with("/v1/")
                && (p.contains("{id}") || p.contains("{name}") || p.contains("{entity}"))
        })
        .map(|(p, ops)| {
            let ops = ops.as_object().unwrap();
            // A record PUT writes the caller's own record: left out of the walk.
            ops.len() - usize::from(p.starts_with("/v1/sync/records/") && ops.contains_key("put"))
        })
        .sum::<usize>();
    assert_eq!(
        routes, expected,
        "every route with an id or a name was walked"
    );
    // A test key of tenant A against A's own live resources: the same 404s (mode isolation).
    let test_key = app
        .create_key_with(
            &a.tenant,
            json!({ "name": "test", "mode": "test", "scopes": ALL }),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let own_live = snapshot(&app, &a.tenant).await;
    assert_eq!(walk(&app, &spec, &test_key, &a).await, expected);
    let after_test_walk = snapshot(&app, &a.tenant).await;
    assert_eq!(
        without_keys(&own_live),
        without_keys(&after_test_walk),
        "a test key changed live data"
    );

    // Lists show only the caller's own resources.
    for (path, own) in [
        ("/v1/orders", &a.order),
        ("/v1/webhook-endpoints", &a.endpoint),
        ("/v1/api-keys", &a.key_row),
    ] {
        let v: Value = app
            .http
            .get(app.url(path))
            .bearer_auth(&a.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [own.as_str()], "{path}");
    }
    let audit: Value = app
        .http
        .get(app.url("/v1/audit-events"))
        .bearer_auth(&a.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!audit.to_string().contains(&b.key_row), "{audit}");

    // Nothing of B's changed, row for row.
    assert_eq!(snapshot(&app, &b.tenant).await, before);
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1::uuid")
        .bind(&b.order)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "received");
    assert_eq!(
        app.count("SELECT count(*) FROM order_events").await,
        2,
        "no event was added to either order"
    );
    let (revoked, name): (Option<chrono::DateTime<chrono::Utc>>, String) =
        sqlx::query_as("SELECT revoked_at, name FROM api_keys WHERE id = $1::uuid")
            .bind(&b.key_row)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(revoked.is_none());
    assert_ne!(name, "hijacked");
    let deleted: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT deleted_at FROM webhook_endpoints WHERE id = $1::uuid")
            .bind(&b.endpoint)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(deleted.is_none());
    assert_eq!(
        app.count("SELECT count(*) FROM api_keys").await,
        3,
        "no key was rolled (the two accounts' keys and A's test key)"
    );
    // B's key still works.
    let r = app
        .http
        .get(app.url(&format!("/v1/orders/{}", b.order)))
        .bearer_auth(&b.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Calls every partner route with an id or a name with `key` and `foreign`'s resources; each
/// must answer 404. Returns how many were called.
async fn walk(app: &TestApp, spec: &Value, key: &str, foreign: &Account) -> usize {
    let mut checked = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/")
            || !(path.contains("{id}") || path.contains("{name}") || path.contains("{entity}"))
        {
            continue;
        }
        let id = if path.starts_with("/v1/orders/") {
            &foreign.order
        } else if path.starts_with("/v1/webhook-endpoints/") {
            &foreign.endpoint
        } else if path.starts_with("/v1/api-keys/") {
            &foreign.key_row
        } else if path.starts_with("/v1/webhook-deliveries/") {
            &foreign.delivery
        } else if path.starts_with("/v1/webhook-replays/") {
            &foreign.replay
        } else if path.starts_with("/v1/event-types/") {
            &foreign.event_type
        } else if path.starts_with("/v1/events/") {
            &foreign.event
        } else if path.starts_with("/v1/integrations/") {
            &foreign.integration
        } else if path.starts_with("/v1/inbound-events/") {
            &foreign.inbound_event
        } else if path.starts_with("/v1/sync/configurations/") {
            &foreign.sync_configuration
        } else if path.starts_with("/v1/sync/runs/") {
            &foreign.sync_run
        } else if path.starts_with("/v1/sync/conflicts/") {
            &foreign.sync_conflict
        } else if path.starts_with("/v1/sync/records/") {
            &foreign.sync_record
        } else {
            panic!("{path}: add its resource to the isolation matrix");
        };
        for method in ops.as_object().unwrap().keys() {
            // A PUT of a record writes the caller's own record under that key (checked by the
            // snapshots: the foreign one stays as it was).
            if method == "put" && path.starts_with("/v1/sync/records/") {
                continue;
            }
            let body = match (method.as_str(), path.as_str()) {
                ("post", "/v1/orders/{id}/status") => Some(json!({ "status": "confirmed" })),
                ("post", "/v1/webhook-endpoints/{id}/replays") => {
                    Some(json!({ "since": "2026-01-01T00:00:00Z" }))
                }
                ("patch", "/v1/orders/{id}") => Some(json!({ "notes": "hijacked" })),
                ("patch", "/v1/api-keys/{id}") => Some(json!({ "name": "hijacked" })),
                ("patch", "/v1/event-types/{name}") => Some(json!({ "description": "hijacked" })),
                ("patch", "/v1/sync/configurations/{id}") => Some(json!({ "enabled": false })),
                ("post", "/v1/sync/conflicts/{id}/resolve") => {
                    Some(json!({ "resolution": "source" }))
                }
                ("post", _) | ("patch", _) => Some(json!({})),
                _ => None,
            };
            let url = app.url(
                &path
                    .replace("{id}", id)
                    .replace("{name}", id)
                    .replace("{entity}", "equipment")
                    .replace("{key}", id),
            );
            let mut req = app
                .http
                .request(method.to_uppercase().parse().unwrap(), url)
                .bearer_auth(key);
            if let Some(body) = body {
                req = req.json(&body);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 404, "{method} {path} with a foreign resource");
            problem(r, 404, "resource_not_found", None).await;
            checked += 1;
        }
    }
    checked
}

/// Every row a tenant owns, as JSON, table by table.
async fn snapshot(app: &TestApp, tenant: &str) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for table in [
        "orders",
        "order_events",
        "events",
        "webhook_endpoints",
        "webhook_messages",
        "webhook_deliveries",
        "webhook_attempts",
        "webhook_replays",
        "event_types",
        "api_keys",
        "jobs",
        "integrations",
        "integration_credentials",
        "integration_logs",
        "inbound_events",
        "sync_configurations",
        "sync_runs",
        "sync_records",
        "sync_conflicts",
    ] {
        let rows: Vec<Value> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT to_jsonb(t) FROM {table} t WHERE tenant_id = $1::uuid ORDER BY 1::text"
        )))
        .bind(tenant)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        out.push((table.to_owned(), rows));
    }
    out
}

/// A snapshot without the key table (creating the test key changed it) and the keys' usage
/// bookkeeping.
fn without_keys(s: &[(String, Vec<Value>)]) -> Vec<(String, Vec<Value>)> {
    s.iter().filter(|(t, _)| t != "api_keys").cloned().collect()
}
