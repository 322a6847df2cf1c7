//! Orders become signed webhooks; failures are retried on schedule and every attempt is logged.

use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::{
    Behaviour, PartnerServer, TestApp, TestOptions, eventually, verify_signature,
};

#[tokio::test]
async fn an_order_reaches_the_partner_as_a_signed_order_created_webhook() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    let (_, secret) = app.create_endpoint(&key, &partner.url, &["order.*"]).await;

    let posted = Instant::now();
    let r = app.post_order(&key, "ord-1001").await;
    assert_eq!(r.status(), 201);
    let order: Value = r.json().await.unwrap();
    assert_eq!(order["status"], "received");
    assert_eq!(order["total"], 2 * 950 + 300, "totals computed server side");

    let hook = eventually(Duration::from_secs(2), "the webhook", || async {
        partner.received().into_iter().next()
    })
    .await;
    println!("order → webhook in {:?}", hook.at - posted);

    assert!(hook.header("webhook-id").starts_with("msg_"));
    assert!(hook.header("user-agent").starts_with("Switchyard"));
    assert_eq!(hook.header("content-type"), "application/json");
    assert!(
        verify_signature(
            &secret,
            hook.header("webhook-id"),
            hook.header("webhook-timestamp"),
            &hook.body,
            hook.header("webhook-signature"),
        ),
        "signature must verify with the endpoint secret"
    );
    let ts: i64 = hook.header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 10);
    let body = hook.json();
    assert_eq!(body["type"], "order.created");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["data"]["id"], order["id"]);
    assert_eq!(
        body["data"], order,
        "the payload is the order as the API returns it"
    );

    // The attempt is logged as a success.
    eventually(
        Duration::from_secs(2),
        "the delivery to be recorded",
        || async {
            let n = app
                .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'")
                .await;
            (n == 1).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_failing_endpoint_gets_the_event_on_the_third_attempt() {
    // 1.5 s ± 20 % between attempts guarantees distinct whole-second timestamps.
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "1500ms,1500ms,1500ms".into(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::PerMessage(vec![500, 500, 200])).await;
    let (_, key) = app.partner_account().await;
    let (endpoint, secret) = app.create_endpoint(&key, &partner.url, &["*"]).await;
    assert_eq!(app.post_order(&key, "ord-retry").await.status(), 201);

    let hooks = eventually(Duration::from_secs(15), "three attempts", || async {
        let r = partner.received();
        (r.len() >= 3).then_some(r)
    })
    .await;
    // Past the latest moment a fourth attempt could come (1.5 s + 20 %).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(partner.count(), 3, "no attempt after the success");
    let statuses: Vec<u16> = hooks.iter().map(|h| h.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    let ids: Vec<&str> = hooks.iter().map(|h| h.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "same webhook-id on every attempt: {ids:?}"
    );
    let stamps: Vec<i64> = hooks
        .iter()
        .map(|h| h.header("webhook-timestamp").parse().unwrap())
        .collect();
    assert!(
        stamps[0] < stamps[1] && stamps[1] < stamps[2],
        "fresh timestamp per attempt: {stamps:?}"
    );
    for h in &hooks {
        assert!(verify_signature(
            &secret,
            h.header("webhook-id"),
            h.header("webhook-timestamp"),
            &h.body,
            h.header("webhook-signature")
        ));
    }
    for w in hooks.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(1150), "retry waited {gap:?}");
    }

    // Three attempt rows, newest first, through the API.
    let attempts = eventually(Duration::from_secs(5), "three attempt rows", || async {
        let v: Value = app
            .http
            .get(app.url(&format!("/v1/webhook-endpoints/{endpoint}/attempts")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v["data"].as_array().unwrap().len() == 3).then_some(v)
    })
    .await;
    let data = attempts["data"].as_array().unwrap();
    let nums: Vec<i64> = data
        .iter()
        .map(|a| a["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(nums, [3, 2, 1], "newest first");
    let codes: Vec<i64> = data
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [200, 500, 500]);
    assert_eq!(data[1]["error_class"], "http_status");
    assert_eq!(data[1]["response_body"], "partner says hi");
    assert_eq!(data[0]["error_class"], Value::Null);
    assert!(data.iter().all(|a| a["webhook_id"] == ids[0]));
    assert_eq!(attempts["has_more"], false);
    let status: String = sqlx::query_scalar("SELECT status FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "succeeded");
}

#[tokio::test]
async fn a_delivery_that_never_succeeds_fails_after_the_last_scheduled_attempt() {
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "200ms,200ms".into(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(503)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;
    assert_eq!(app.post_order(&key, "ord-dead").await.status(), 201);
    eventually(Duration::from_secs(10), "the delivery to fail", || async {
        let n = app
            .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'")
            .await;
        (n == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(partner.count(), 3, "exactly 1 + 2 scheduled attempts");
    assert_eq!(app.count("SELECT count(*) FROM webhook_attempts").await, 3);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE state = 'dead' AND queue <> 'janitor'")
            .await,
        1
    );
}

#[tokio::test]
async fn attempts_paginate_with_a_cursor() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    let (endpoint, _) = app.create_endpoint(&key, &partner.url, &["*"]).await;
    app.post_orders(&key, "page", 5, 5).await;
    eventually(Duration::from_secs(5), "5 attempts", || async {
        (app.count("SELECT count(*) FROM webhook_attempts").await == 5).then_some(())
    })
    .await;
    let list = |after: Option<String>| {
        let mut url = app.url(&format!(
            "/v1/webhook-endpoints/{endpoint}/attempts?limit=2"
        ));
        if let Some(a) = after {
            url.push_str(&format!("&starting_after={a}"));
        }
        let (http, key) = (app.http.clone(), key.clone());
        async move {
            http.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = list(after.clone()).await;
        let data = page["data"].as_array().unwrap().clone();
        seen.extend(data.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        after = data.last().map(|a| a["id"].as_str().unwrap().to_owned());
        if page["has_more"] == false {
            break;
        }
        assert_eq!(data.len(), 2);
    }
    assert_eq!(seen.len(), 5);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first");
    // Each attempt exactly once across the pages: the very ids in the database.
    let unique: std::collections::HashSet<String> = seen.iter().cloned().collect();
    let stored: std::collections::HashSet<String> =
        sqlx::query_scalar("SELECT id::text FROM webhook_attempts")
            .fetch_all(&app.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(unique.len(), seen.len(), "no attempt on two pages");
    assert_eq!(unique, stored, "none missing");
}

#[tokio::test]
async fn endpoints_receive_only_the_event_types_they_subscribe_to() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let wants_orders = PartnerServer::start(Behaviour::Status(200)).await;
    let wants_other = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &wants_orders.url, &["order.created"])
        .await;
    app.create_endpoint(&key, &wants_other.url, &["invoice.*"])
        .await;
    assert_eq!(app.post_order(&key, "ord-filter").await.status(), 201);
    eventually(
        Duration::from_secs(3),
        "the subscribed endpoint",
        || async { (wants_orders.count() == 1).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wants_other.count(), 0);
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_deliveries").await,
        1
    );
}

#[tokio::test]
async fn deleting_an_endpoint_cancels_its_pending_retries() {
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "1s,1s,1s".into(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(500)).await;
    let (_, key) = app.partner_account().await;
    let (endpoint, _) = app.create_endpoint(&key, &partner.url, &["*"]).await;
    assert_eq!(app.post_order(&key, "ord-cancel").await.status(), 201);
    eventually(Duration::from_secs(3), "a first attempt, its retry scheduled", || async {
        let n = app
            .count("SELECT count(*) FROM webhook_deliveries WHERE attempts = 1 AND status = 'pending'")
            .await;
        (partner.count() == 1 && n == 1).then_some(())
    })
    .await;
    let r = app
        .http
        .delete(app.url(&format!("/v1/webhook-endpoints/{endpoint}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Cancelled by the deletion itself, not when the retry comes up.
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'cancelled'")
            .await,
        1
    );
    // Past the moment the retry was due (1 s ± 20 % after the first attempt): nothing sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        partner.count(),
        1,
        "no attempt after the endpoint was deleted"
    );
    let r = app
        .http
        .get(app.url(&format!("/v1/webhook-endpoints/{endpoint}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_finished_delivery_can_be_retried_by_hand_with_the_same_webhook_id() {
    use serde_json::json;
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::PerMessage(vec![500, 200])).await;
    let stuck = PartnerServer::start(Behaviour::Status(500)).await;
    let (_, key) = app.partner_account().await;
    let once = app
        .create_endpoint_with(&key, json!({ "url": partner.url, "retry_schedule": [] }))
        .await;
    let later = app
        .create_endpoint_with(&key, json!({ "url": stuck.url, "retry_schedule": ["1h"] }))
        .await;
    let (once, later) = (once["id"].as_str().unwrap(), later["id"].as_str().unwrap());
    assert_eq!(app.post_order(&key, "ord-manual").await.status(), 201);

    let list = |endpoint: String, status: &'static str| {
        let app = &app;
        let key = &key;
        async move {
            let v = app
                .partner_get(
                    key,
                    &format!("/v1/webhook-endpoints/{endpoint}/deliveries?status={status}"),
                )
                .await;
            v["data"].as_array().unwrap().clone()
        }
    };
    let failed = eventually(Duration::from_secs(5), "a failed delivery", || async {
        let l = list(once.to_owned(), "failed").await;
        (l.len() == 1).then_some(l)
    })
    .await;
    let delivery = failed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(failed[0]["attempts"], 1);
    assert_eq!(failed[0]["last_status_code"], 500);

    let r = app
        .partner_post(
            &key,
            &format!("/v1/webhook-deliveries/{delivery}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "pending");
    eventually(
        Duration::from_secs(5),
        "the retried delivery to succeed",
        || async {
            let v = app
                .partner_get(&key, &format!("/v1/webhook-deliveries/{delivery}"))
                .await;
            (v["status"] == "succeeded").then_some(())
        },
    )
    .await;
    let got = partner.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));

    // A delivery waiting for its next attempt is already scheduled.
    let pending = eventually(Duration::from_secs(5), "a pending retry", || async {
        let l = list(later.to_owned(), "pending").await;
        (l.first().is_some_and(|d| d["attempts"] == 1)).then_some(l)
    })
    .await;
    let r = app
        .partner_post(
            &key,
            &format!(
                "/v1/webhook-deliveries/{}/retry",
                pending[0]["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    switchyard_tests::problem(r, 409, "delivery_pending", None).await;
    // A disabled endpoint's deliveries wait until it is enabled again.
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/webhook-endpoints/{once}"),
            json!({ "status": "disabled" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["status"], "disabled");
    assert_eq!(e["disabled_reason"], "manual", "{e}");
    let r = app
        .partner_post(
            &key,
            &format!("/v1/webhook-deliveries/{delivery}/retry"),
            json!({}),
        )
        .await;
    switchyard_tests::problem(r, 409, "endpoint_disabled", None).await;
}

#[tokio::test]
async fn a_test_send_returns_the_attempt_and_is_never_retried() {
    use serde_json::json;
    let app = TestApp::spawn(TestOptions::default()).await;
    let ok = PartnerServer::start(Behaviour::Status(200)).await;
    let down = PartnerServer::start(Behaviour::Status(503)).await;
    let (_, key) = app.partner_account().await;
    let (good, secret) = app.create_endpoint(&key, &ok.url, &["order.*"]).await;
    let (bad, _) = app.create_endpoint(&key, &down.url, &["*"]).await;

    let r = app
        .partner_post(
            &key,
            &format!("/v1/webhook-endpoints/{good}/test"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["status_code"], 200);
    assert_eq!(a["error_class"], Value::Null);
    assert_eq!(a["event_type"], "webhook.test");
    assert_eq!(a["response_body"], "partner says hi");
    let hook = &ok.received()[0];
    assert_eq!(hook.json()["type"], "webhook.test");
    assert_eq!(hook.header("webhook-id"), a["webhook_id"].as_str().unwrap());
    assert!(verify_signature(
        &secret,
        hook.header("webhook-id"),
        hook.header("webhook-timestamp"),
        &hook.body,
        hook.header("webhook-signature"),
    ));

    let a: Value = app
        .partner_post(
            &key,
            &format!("/v1/webhook-endpoints/{bad}/test"),
            json!({ "event_type": "order.confirmed" }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["status_code"], 503);
    assert_eq!(a["error_class"], "http_status");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(down.count(), 1, "test sends are not retried");
    let d = app
        .partner_get(
            &key,
            &format!(
                "/v1/webhook-deliveries/{}",
                a["delivery_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(d["status"], "failed");
}

#[tokio::test]
async fn payloads_are_removed_after_the_retention_period_and_attempts_stay() {
    use serde_json::json;
    let app = TestApp::spawn(TestOptions {
        payload_retention: "2s".into(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(500)).await;
    let (_, key) = app.partner_account().await;
    // A schedule that outlasts the payloads is refused: its last attempts could send nothing.
    let r = app
        .partner_post(
            &key,
            "/v1/webhook-endpoints",
            json!({ "url": partner.url, "retry_schedule": ["1s", "1500ms"] }),
        )
        .await;
    let v = switchyard_tests::problem(r, 400, "parameter_invalid", Some("retry_schedule")).await;
    assert!(v["detail"].as_str().unwrap().contains("2500ms"), "{v}");
    let ep = app
        .create_endpoint_with(
            &key,
            json!({ "url": partner.url, "retry_schedule": ["1s"] }),
        )
        .await;
    let id = ep["id"].as_str().unwrap();
    // As if the operator had shortened the retention after the endpoint was made: the retry
    // comes after the payload's retention. The payload stays while the delivery waits for it,
    // the retry is sent, and once the delivery has ended the payload goes; attempts stay.
    sqlx::query("UPDATE webhook_endpoints SET retry_schedule_ms = '{4000}' WHERE id = $1::uuid")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.post_order(&key, "ord-retention").await.status(), 201);
    eventually(Duration::from_secs(5), "the first attempt", || async {
        (partner.count() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let removed = "SELECT count(*) FROM webhook_messages
                    WHERE payload IS NULL AND payload_removed_at IS NOT NULL";
    assert_eq!(app.count(removed).await, 0, "kept for the waiting retry");
    let d = eventually(Duration::from_secs(10), "the retry, failed", || async {
        let v = app
            .partner_get(
                &key,
                &format!("/v1/webhook-endpoints/{id}/deliveries?status=failed"),
            )
            .await;
        v["data"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(partner.count(), 2);
    eventually(
        Duration::from_secs(10),
        "the payload to be removed",
        || async { (app.count(removed).await == 1).then_some(()) },
    )
    .await;
    let log = app
        .partner_get(&key, &format!("/v1/webhook-endpoints/{id}/attempts"))
        .await;
    assert_eq!(log["data"].as_array().unwrap().len(), 2);
    // A delivery whose payload is gone cannot be sent again.
    let r = app
        .partner_post(
            &key,
            &format!("/v1/webhook-deliveries/{}/retry", d["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    switchyard_tests::problem(r, 409, "payload_expired", None).await;
}
