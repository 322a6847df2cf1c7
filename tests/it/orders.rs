//! Orders, complete: totals, the status state machine, history, filters, live/test isolation
//! and in-order delivery of an order's events to each endpoint.

use std::{collections::HashMap, time::Duration};

use serde_json::{Value, json};
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually, problem};

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn set_status(app: &TestApp, key: &str, id: &str, status: &str) -> reqwest::Response {
    call(
        app,
        reqwest::Method::POST,
        &format!("/v1/orders/{id}/status"),
        key,
        Some(json!({ "status": status })),
    )
    .await
}

#[tokio::test]
async fn totals_include_modifiers_and_charges_and_a_wrong_claimed_total_is_refused() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let mut body = TestApp::order_body("tot-1");
    body["provider"] = json!("uber_eats");
    body["items"][0]["modifiers"] =
        json!([{ "name": "Extra cheese", "quantity": 2, "unit_price": 75 }]);
    body["tax"] = json!(120);
    body["delivery_fee"] = json!(299);
    body["tip"] = json!(100);
    body["discount"] = json!(50);
    body["metadata"] = json!({ "store": "berlin-3" });
    // 2 × (950 + 2 × 75) + 300 = 2500; + 120 + 299 + 100 − 50 = 2969.
    body["total"] = json!(2970);
    let v = problem(
        call(
            &app,
            reqwest::Method::POST,
            "/v1/orders",
            &key,
            Some(body.clone()),
        )
        .await,
        400,
        "total_mismatch",
        Some("total"),
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("2969"), "{v}");
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);

    body["total"] = json!(2969);
    let r = call(
        &app,
        reqwest::Method::POST,
        "/v1/orders",
        &key,
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status(), 201);
    let order: Value = r.json().await.unwrap();
    assert_eq!(order["subtotal"], 2500);
    assert_eq!(order["total"], 2969);
    assert_eq!(order["items"][0]["line_total"], 2200);
    assert_eq!(order["items"][0]["modifiers"][0]["quantity"], 2);
    assert_eq!(order["provider"], "uber_eats");
    assert_eq!(order["mode"], "live");
    assert_eq!(order["metadata"]["store"], "berlin-3");

    // external_id is unique per provider: another provider may reuse it.
    problem(
        call(
            &app,
            reqwest::Method::POST,
            "/v1/orders",
            &key,
            Some(body.clone()),
        )
        .await,
        409,
        "order_exists",
        Some("external_id"),
    )
    .await;
    body["provider"] = json!("deliveroo");
    let r = call(&app, reqwest::Method::POST, "/v1/orders", &key, Some(body)).await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn the_status_machine_refuses_illegal_moves_and_keeps_the_history() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let order: Value = app.post_order(&key, "sm-1").await.json().await.unwrap();
    let id = order["id"].as_str().unwrap();

    let v = problem(
        set_status(&app, &key, id, "delivered").await,
        409,
        "invalid_transition",
        Some("status"),
    )
    .await;
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("`received`") && detail.contains("`delivered`"),
        "{detail}"
    );
    problem(
        set_status(&app, &key, id, "teleported").await,
        400,
        "parameter_invalid",
        Some("status"),
    )
    .await;

    for s in ["confirmed", "preparing", "ready", "out_for_delivery"] {
        let r = set_status(&app, &key, id, s).await;
        assert_eq!(r.status(), 200, "{s}");
        assert_eq!(r.json::<Value>().await.unwrap()["status"], s);
    }
    // Too late to cancel.
    let v = problem(
        call(
            &app,
            reqwest::Method::POST,
            &format!("/v1/orders/{id}/cancel"),
            &key,
            Some(json!({ "reason": "customer called" })),
        )
        .await,
        409,
        "invalid_transition",
        Some("status"),
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("`out_for_delivery`"));
    for s in ["delivered", "completed"] {
        assert_eq!(set_status(&app, &key, id, s).await.status(), 200);
    }
    // Final: no further change, not even details.
    problem(
        call(
            &app,
            reqwest::Method::PATCH,
            &format!("/v1/orders/{id}"),
            &key,
            Some(json!({ "notes": "late note" })),
        )
        .await,
        409,
        "order_closed",
        None,
    )
    .await;

    // The order's history, with a query string.
    let events = |query: String| {
        let path = format!("/v1/orders/{id}/events{query}");
        let (app, key) = (&app, &key);
        async move { call(app, reqwest::Method::GET, &path, key, None).await }
    };
    let history: Value = events(String::new()).await.json().await.unwrap();
    let types: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "order.created",
            "order.confirmed",
            "order.preparing",
            "order.ready",
            "order.out_for_delivery",
            "order.delivered",
            "order.completed"
        ]
    );
    let seqs: Vec<i64> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(
        history["data"][1]["changes"]["status"],
        json!(["received", "confirmed"])
    );
    assert_eq!(history["data"][6]["data"]["status"], "completed");
    // Paged by an entry's id; an id that is not an entry of this order is not found (it used
    // to start the list over).
    let third = history["data"][2]["id"].as_str().unwrap();
    let rest: Value = events(format!("?starting_after={third}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["data"][0]["seq"], 4, "{rest}");
    let r = events(format!("?starting_after={}", uuid::Uuid::now_v7())).await;
    let p = problem(r, 404, "resource_not_found", None).await;
    assert!(
        p["detail"].as_str().unwrap().contains("starting_after"),
        "{p}"
    );

    // Cancelling early works and records the reason; a PATCH emits order.updated.
    let second: Value = app.post_order(&key, "sm-2").await.json().await.unwrap();
    let id2 = second["id"].as_str().unwrap();
    let r = call(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/orders/{id2}"),
        &key,
        Some(json!({ "notes": "no onions", "metadata": { "table": "7" } })),
    )
    .await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["notes"], "no onions");
    let r = call(
        &app,
        reqwest::Method::POST,
        &format!("/v1/orders/{id2}/cancel"),
        &key,
        Some(json!({ "reason": "customer called" })),
    )
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    let events: Vec<(String, Value)> = sqlx::query_as::<_, (String, Value)>(
        "SELECT type, changes FROM order_events WHERE order_id = $1::uuid ORDER BY seq",
    )
    .bind(id2)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(events[1].0, "order.updated");
    assert_eq!(events[2].0, "order.cancelled");
    assert_eq!(events[2].1["reason"], "customer called");
    // Every event has its job.
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE queue = 'event_fan_out'")
            .await,
        app.count("SELECT count(*) FROM order_events").await
    );
}

#[tokio::test]
async fn orders_list_with_filters_and_cursor_pagination() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, key) = app.partner_account().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = TestApp::order_body(&format!("ls-{i}"));
        body["provider"] = json!(if i % 2 == 0 { "talabat" } else { "careem" });
        let o: Value = call(&app, reqwest::Method::POST, "/v1/orders", &key, Some(body))
            .await
            .json()
            .await
            .unwrap();
        ids.push(o["id"].as_str().unwrap().to_owned());
    }
    let before_update = chrono::Utc::now();
    assert_eq!(
        set_status(&app, &key, &ids[1], "confirmed").await.status(),
        200
    );

    let list = |query: String| {
        let app = &app;
        let key = key.clone();
        async move {
            let v: Value = call(
                app,
                reqwest::Method::GET,
                &format!("/v1/orders{query}"),
                &key,
                None,
            )
            .await
            .json()
            .await
            .unwrap();
            let got: Vec<String> = v["data"]
                .as_array()
                .unwrap_or_else(|| panic!("{v}"))
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned())
                .collect();
            (got, v["has_more"].as_bool().unwrap())
        }
    };
    let (all, more) = list(String::new()).await;
    assert_eq!(all, ids.iter().rev().cloned().collect::<Vec<_>>());
    assert!(!more);
    let (page, more) = list("?limit=2".into()).await;
    assert_eq!(page, [ids[4].clone(), ids[3].clone()]);
    assert!(more);
    let (page, _) = list(format!("?limit=2&starting_after={}", ids[3])).await;
    assert_eq!(page, [ids[2].clone(), ids[1].clone()]);
    let (talabat, _) = list("?provider=talabat".into()).await;
    assert_eq!(talabat, [ids[4].clone(), ids[2].clone(), ids[0].clone()]);
    let (confirmed, _) = list("?status=confirmed".into()).await;
    assert_eq!(confirmed, [ids[1].clone()]);
    let since = before_update.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (updated, _) = list(format!("?updated%5Bgte%5D={}", urlencode(&since))).await;
    assert_eq!(updated, [ids[1].clone()]);
    let (none, _) = list(format!("?created%5Bgte%5D={}", urlencode(&since))).await;
    assert!(none.is_empty());
    let (created, _) = list(format!("?created%5Blte%5D={}", urlencode(&since))).await;
    assert_eq!(created.len(), 5);
    problem(
        call(
            &app,
            reqwest::Method::GET,
            "/v1/orders?status=lost",
            &key,
            None,
        )
        .await,
        400,
        "parameter_invalid",
        Some("status"),
    )
    .await;
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test]
async fn test_keys_never_see_live_data_and_test_events_reach_only_test_endpoints() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let live_partner = PartnerServer::start(Behaviour::Status(200)).await;
    let test_partner = PartnerServer::start(Behaviour::Status(200)).await;
    let tenant = app.create_tenant("Acme").await;
    let (_, live) = app.create_key(&tenant, None).await;
    let test = app
        .create_key_with(&tenant, json!({ "name": "sandbox", "mode": "test" }))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(test.starts_with("sy_test_"));
    let (live_ep, _) = app
        .create_endpoint(&live, &live_partner.url, &["order.*"])
        .await;
    let (test_ep, _) = app
        .create_endpoint(&test, &test_partner.url, &["order.*"])
        .await;

    let live_order: Value = app
        .post_order(&live, "same-ext")
        .await
        .json()
        .await
        .unwrap();
    // The same external id is free in test mode: the modes are separate worlds.
    let r = app.post_order(&test, "same-ext").await;
    assert_eq!(r.status(), 201);
    let test_order: Value = r.json().await.unwrap();
    assert_eq!(test_order["mode"], "test");

    let live_id = live_order["id"].as_str().unwrap();
    let test_id = test_order["id"].as_str().unwrap();
    for (key, foreign) in [(&test, live_id), (&live, test_id)] {
        problem(
            call(
                &app,
                reqwest::Method::GET,
                &format!("/v1/orders/{foreign}"),
                key,
                None,
            )
            .await,
            404,
            "resource_not_found",
            None,
        )
        .await;
    }
    for (key, foreign) in [(&test, &live_ep), (&live, &test_ep)] {
        let r = call(
            &app,
            reqwest::Method::GET,
            &format!("/v1/webhook-endpoints/{foreign}"),
            key,
            None,
        )
        .await;
        assert_eq!(r.status(), 404);
    }
    let listed: Value = call(&app, reqwest::Method::GET, "/v1/orders", &test, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], test_id);

    eventually(Duration::from_secs(5), "both webhooks", || async {
        (live_partner.count() == 1 && test_partner.count() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live_partner.received()[0].json()["data"]["id"], live_id);
    assert_eq!(test_partner.received()[0].json()["data"]["id"], test_id);
    assert_eq!(live_partner.count(), 1);
    assert_eq!(test_partner.count(), 1);
}

#[tokio::test]
async fn each_endpoint_gets_an_orders_events_in_order_even_when_attempts_fail() {
    // Half of all attempts fail here: keep the circuit breaker (tested on its own) out of it.
    let app = TestApp::spawn(TestOptions {
        breaker_min_attempts: 100_000,
        ..Default::default()
    })
    .await;
    // Every message fails its first attempt: without ordering, a later event's retry could
    // overtake an earlier one's.
    let partner = PartnerServer::start(Behaviour::PerMessage(vec![500, 200])).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["order.*"]).await;
    let steps = [
        "confirmed",
        "preparing",
        "ready",
        "out_for_delivery",
        "delivered",
    ];
    let orders = 6;
    let ids: Vec<String> = futures::future::join_all((0..orders).map(|i| {
        let (app, key) = (&app, key.clone());
        async move {
            let o: Value = app
                .post_order(&key, &format!("ord-seq-{i}"))
                .await
                .json()
                .await
                .unwrap();
            let id = o["id"].as_str().unwrap().to_owned();
            for s in steps {
                assert_eq!(set_status(app, &key, &id, s).await.status(), 200);
            }
            id
        }
    }))
    .await;
    let expected = orders * (steps.len() + 1);
    eventually(Duration::from_secs(60), "every event delivered", || async {
        let ok = partner
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .count();
        (ok >= expected).then_some(())
    })
    .await;
    // Per order, every request the endpoint saw (failed ones included) follows the order's
    // event sequence: nothing was sent before its predecessor had succeeded.
    let rank = |t: &str| {
        ["order.created"]
            .iter()
            .copied()
            .chain([
                "order.confirmed",
                "order.preparing",
                "order.ready",
                "order.out_for_delivery",
                "order.delivered",
            ])
            .position(|x| x == t)
            .unwrap()
    };
    let mut seen: HashMap<String, Vec<(usize, u16)>> = HashMap::new();
    for r in partner.received() {
        let v = r.json();
        seen.entry(v["data"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .push((rank(v["type"].as_str().unwrap()), r.status));
    }
    for id in &ids {
        let got = &seen[id];
        let mut expected = Vec::new();
        for rank in 0..=steps.len() {
            expected.push((rank, 500));
            expected.push((rank, 200));
        }
        assert_eq!(got, &expected, "order {id}");
    }
}
