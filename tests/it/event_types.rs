//! The event type catalog: built-in and own types, per mode, and filters that catch typos.

use serde_json::Value;
use switchyard_tests::{TestApp, TestOptions};

#[tokio::test]
async fn the_event_type_catalog_lists_built_in_and_own_types_and_catches_typos() {
    use serde_json::json;
    let app = TestApp::spawn(TestOptions::no_worker()).await;
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
    // A name in a family of Switchyard's own events could pass for one of them to an
    // endpoint subscribed to `order.*`.
    for name in ["order.refunded", "endpoint.paused", "sync.run.retried"] {
        let r = app
            .partner_post(&key, "/v1/event-types", json!({ "name": name }))
            .await;
        switchyard_tests::problem(r, 400, "event_type_reserved", Some("name")).await;
    }
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

/// A schema is the tenant's document: whatever JSON numbers it holds (the largest double, the
/// smallest subnormal) read back as sent, on creation, on change and in the list.
#[tokio::test]
async fn a_schema_reads_back_exactly_as_it_was_sent() {
    use serde_json::json;
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let schema = json!({ "type": "object", "maximum": 1.7976931348623157e308,
                         "minimum": 5e-324, "multipleOf": 5.9239229642707576e16,
                         "examples": [[2.5776383096321136e16, null, true], -102130] });
    let r = app
        .partner_post(
            &key,
            "/v1/event-types",
            json!({ "name": "meter.read", "schema": schema }),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["schema"], schema);
    let changed = json!({ "maximum": -1.5e300, "items": { "minimum": 1e-300 } });
    let r = app
        .partner_patch(
            &key,
            "/v1/event-types/meter.read",
            json!({ "schema": changed }),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["schema"], changed);
    let list = app.partner_get(&key, "/v1/event-types").await;
    let own = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "meter.read")
        .unwrap();
    assert_eq!(own["schema"], changed);
}
