//! The inbound `order_feed` action: a delivery platform's signed order webhooks become orders
//! through a declarative mapping (pointers, constants, major → minor units); the orders fan out
//! as `order.*` events to partner endpoints; a later webhook of the same order updates it
//! (status walked forward, details changed), a replayed one changes nothing, a body the mapping
//! cannot turn into a valid order is a recorded failure.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually, problem};

const SECRET: &str = "platform-signing-secret";

fn sign(body: &str) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(body.as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The mapping of a platform that sends decimal prices (`12.50`) and its own status names.
fn mapping() -> Value {
    json!({
        "external_id": {"pointer": "/order/id"},
        "currency": {"pointer": "/order/currency", "const": "EUR"},
        "items": {
            "pointer": "/order/cart",
            "sku": {"pointer": "/id"},
            "name": {"pointer": "/title"},
            "quantity": {"pointer": "/qty"},
            "unit_price": {"pointer": "/price", "unit": "major"},
            "modifiers": {
                "pointer": "/options",
                "name": {"pointer": "/title"},
                "unit_price": {"pointer": "/price", "unit": "major"}
            }
        },
        "customer_name": {"pointer": "/eater/first_name"},
        "delivery_address": {"pointer": "/dropoff/address"},
        "delivery_instructions": {"pointer": "/dropoff/note"},
        "delivery_fee": {"pointer": "/order/fees/delivery", "unit": "major"},
        "total": {"pointer": "/order/total", "unit": "major"},
        "status": {"pointer": "/order/state", "values": {
            "CREATED": "received", "ACCEPTED": "confirmed", "PREPARING": "preparing",
            "CANCELLED": "cancelled"
        }}
    })
}

fn webhook(event_id: &str, order_id: &str, state: &str, note: &str, total: &str) -> String {
    json!({
        "event_id": event_id,
        "order": {
            "id": order_id, "currency": "EUR", "state": state, "total": total,
            "fees": {"delivery": 2.99},
            "cart": [
                {"id": "PIZ-1", "title": "Margherita", "qty": 2, "price": "9.50",
                 "options": [{"title": "Extra basil", "price": 0.5}]},
                {"id": "DRK-2", "title": "Lemonade", "qty": "1", "price": 3}
            ]
        },
        "eater": {"first_name": "Grace"},
        "dropoff": {"address": "1 Navy Way", "note": note}
    })
    .to_string()
}

#[tokio::test]
async fn an_order_feed_creates_and_updates_orders_that_fan_out_as_order_events() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let tenant = app.create_tenant("Restaurant").await;
    let scopes = ["integrations:write", "webhooks:write", "orders:read"];
    let key = app.create_key(&tenant, Some(&scopes)).await.1;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    app.create_endpoint(&key, &partner.url, &["order.*"]).await;

    // A mapping that is not usable is refused when it is configured.
    let mut broken = mapping();
    broken["customer_name"] = json!({});
    let r = app
        .partner_post(
            &key,
            "/v1/integrations",
            json!({"name": "Feed", "code": "feed", "type": "webhook", "provider": "uber_eats",
                   "inbound": {"scheme": "hmac", "secret": SECRET, "dedupe": "/event_id",
                               "action": {"type": "order_feed", "provider": "uber_eats",
                                          "mapping": broken}}}),
        )
        .await;
    problem(
        r,
        400,
        "parameter_invalid",
        Some("inbound.action.mapping.customer_name"),
    )
    .await;
    let r = app
        .partner_post(
            &key,
            "/v1/integrations",
            json!({"name": "Feed", "code": "feed", "type": "webhook", "provider": "uber_eats",
                   "inbound": {"scheme": "hmac", "secret": SECRET, "dedupe": "/event_id",
                               "action": {"type": "order_feed", "provider": "uber_eats",
                                          "mapping": mapping()}}}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let integration: Value = r.json().await.unwrap();
    let path = integration["inbound_url"].as_str().unwrap().to_owned();
    assert_eq!(integration["inbound"]["action"]["type"], "order_feed");

    let post = |body: String| {
        let req = app
            .http
            .post(app.url(&path))
            .header("content-type", "application/json")
            .header("x-signature", sign(&body))
            .body(body);
        async move { req.send().await.unwrap() }
    };
    let processed = |id: String| {
        let (app, key) = (&app, &key);
        async move {
            eventually(Duration::from_secs(20), "the webhook processed", || {
                let id = id.clone();
                async move {
                    let e = app
                        .partner_get(key, &format!("/v1/inbound-events/{id}"))
                        .await;
                    (e["status"] != "pending" && e["status"] != "processing").then_some(e)
                }
            })
            .await
        }
    };
    let inbound_id = |v: Value| v["id"].as_str().unwrap().to_owned();

    // 1. A new order: 2 × (9.50 + 0.50) + 3 + 2.99 delivery = 25.99 EUR.
    let r = post(webhook("ev-1", "UE-77", "CREATED", "Ring twice", "25.99")).await;
    assert_eq!(r.status(), 202);
    let first = processed(inbound_id(r.json().await.unwrap())).await;
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["result"]["created"], true);
    assert_eq!(first["result"]["events"], json!(["order.created"]));
    let order_id = first["result"]["order_id"].as_str().unwrap().to_owned();
    let order = app
        .partner_get(&key, &format!("/v1/orders/{order_id}"))
        .await;
    assert_eq!(
        (&order["provider"], &order["external_id"], &order["status"]),
        (&json!("uber_eats"), &json!("UE-77"), &json!("received"))
    );
    assert_eq!(
        (&order["subtotal"], &order["delivery_fee"], &order["total"]),
        (&json!(2300), &json!(299), &json!(2599))
    );
    assert_eq!(order["items"][0]["modifiers"][0]["unit_price"], 50);
    assert_eq!(order["items"][1]["quantity"], 1);
    assert_eq!(order["delivery"]["instructions"], "Ring twice");
    let created = eventually(
        Duration::from_secs(20),
        "order.created delivered",
        || async {
            partner
                .received()
                .into_iter()
                .map(|r| r.json())
                .find(|p| p["type"] == "order.created")
        },
    )
    .await;
    assert_eq!(created["data"]["id"], json!(order_id));
    assert_eq!(created["data"]["total"], 2599);

    // 2. The platform accepts it and the customer changes the note: one update, then the
    // status walked from `received` to `preparing` through `confirmed`.
    let r = post(webhook(
        "ev-2",
        "UE-77",
        "PREPARING",
        "Leave at door",
        "25.99",
    ))
    .await;
    let second = processed(inbound_id(r.json().await.unwrap())).await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(second["result"]["created"], false);
    assert_eq!(second["result"]["order_id"], json!(order_id));
    assert_eq!(
        second["result"]["events"],
        json!(["order.updated", "order.confirmed", "order.preparing"])
    );
    let types = eventually(Duration::from_secs(20), "the updates delivered", || async {
        let types: Vec<String> = partner
            .received()
            .into_iter()
            .map(|r| r.json()["type"].as_str().unwrap().to_owned())
            .collect();
        (types.len() >= 4).then_some(types)
    })
    .await;
    assert_eq!(
        types,
        [
            "order.created",
            "order.updated",
            "order.confirmed",
            "order.preparing"
        ]
    );

    // 3. The same webhook again under the same event id is suppressed; a resend under a new id
    // is processed but changes nothing (idempotent on provider + external id); a late
    // `ACCEPTED` cannot move the order back.
    let r = post(webhook(
        "ev-2",
        "UE-77",
        "PREPARING",
        "Leave at door",
        "25.99",
    ))
    .await;
    assert_eq!(r.status(), 200);
    let r = post(webhook(
        "ev-3",
        "UE-77",
        "PREPARING",
        "Leave at door",
        "25.99",
    ))
    .await;
    let third = processed(inbound_id(r.json().await.unwrap())).await;
    assert_eq!(third["result"]["events"], json!([]), "{third}");
    let r = post(webhook(
        "ev-4",
        "UE-77",
        "ACCEPTED",
        "Leave at door",
        "25.99",
    ))
    .await;
    let late = processed(inbound_id(r.json().await.unwrap())).await;
    assert_eq!(late["result"]["events"], json!([]));
    assert!(
        late["result"]["note"]
            .as_str()
            .unwrap()
            .contains("stays `preparing`"),
        "{late}"
    );
    let list = app.partner_get(&key, "/v1/orders?provider=uber_eats").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");

    // 4. A body that maps to an invalid order (its total is not the sum) fails with the
    // reason, writes no order, and is not retried.
    let r = post(webhook("ev-5", "UE-78", "CREATED", "x", "99.00")).await;
    let bad = processed(inbound_id(r.json().await.unwrap())).await;
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["attempts"], 1);
    assert!(bad["reason"].as_str().unwrap().contains("total"), "{bad}");
    // A price with more decimals than the currency has is refused, not rounded.
    let body = webhook("ev-6", "UE-79", "CREATED", "x", "25.99").replace("\"9.50\"", "\"9.505\"");
    let r = post(body).await;
    let bad = processed(inbound_id(r.json().await.unwrap())).await;
    assert_eq!(bad["status"], "failed");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("at most 2 decimals"),
        "{bad}"
    );
    let list = app.partner_get(&key, "/v1/orders?provider=uber_eats").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}
