//! The event type catalog: built-in and own types, per mode, and filters that catch typos.

use serde_json::Value;
use switchyard_tests::{TestApp, TestOptions};

#[tokio::test]
async fn the_event_type_catalog_lists_built_in_and_own_types_and_catches_typos() {
    use serde_json::json;
    let app = TestApp::spawn(TestOptions {
        with_worker: false,
        ..Default::default()
    })
    .await;
    let (_, key) = app.partner_account().await;
    let (_, other) = app.partner_account().await;
    let list = app.partner_get(&key, "/v1/event-types").await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for t in [
        "order.created",
        "order.updated",
        "order.confirmed",
        "order.cancelled",
        "endpoint.disabled",
    ] {
        assert!(names.contains(&t), "{t} in {names:?}");
    }
    assert_eq!(list["data"][0]["built_in"], true);

    // A typo in an exact type is caught; wildcards are fine.
    let r = app
        .partner_post(
            &key,
            "/v1/webhook-endpoints",
            json!({ "url": "https://example.com/hook", "event_types": ["order.*", "order.craeted"] }),
        )
        .await;
    switchyard_tests::problem(r, 400, "unknown_event_type", Some("event_types[1]")).await;

    // The tenant's own types: created, subscribed to, deprecated; invisible to other tenants.
    let r = app
        .partner_post(
            &key,
            "/v1/event-types",
            json!({ "name": "invoice.paid", "description": "An invoice was paid.",
                    "schema": { "type": "object", "required": ["invoice_id"] } }),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = app
        .partner_post(&key, "/v1/event-types", json!({ "name": "invoice.paid" }))
        .await;
    switchyard_tests::problem(r, 409, "event_type_exists", Some("name")).await;
    app.create_endpoint(&key, "https://example.com/hook", &["invoice.paid"])
        .await;
    let r = app
        .partner_patch(
            &key,
            "/v1/event-types/invoice.paid",
            json!({ "deprecated": true }),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["deprecated"], true);
    let r = app
        .partner_patch(
            &key,
            "/v1/event-types/order.created",
            json!({ "deprecated": true }),
        )
        .await;
    switchyard_tests::problem(r, 409, "event_type_built_in", None).await;
    let theirs = app.partner_get(&other, "/v1/event-types").await;
    assert!(!theirs.to_string().contains("invoice.paid"));
    let r = app
        .partner_post(
            &other,
            "/v1/webhook-endpoints",
            json!({ "url": "https://example.com/hook", "event_types": ["invoice.paid"] }),
        )
        .await;
    switchyard_tests::problem(r, 400, "unknown_event_type", Some("event_types[0]")).await;
}
