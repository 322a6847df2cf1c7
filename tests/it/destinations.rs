//! Destinations beyond signed webhooks, over HTTP: the kinds and their schemas, templates
//! checked when saved, previews, and Slack, Discord and HTTP actions against servers that check
//! the request shapes those services document. Brokers and SMTP: `brokers.rs`.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{
    Behaviour, PartnerServer, Reply, TestApp, TestOptions, eventually, problem,
};

/// The deliveries of an endpoint in `status`, once there are `n`.
pub async fn deliveries(
    app: &TestApp,
    key: &str,
    endpoint: &str,
    status: &str,
    n: usize,
) -> Vec<Value> {
    eventually(
        Duration::from_secs(20),
        &format!("{n} {status} deliveries"),
        || async {
            let v = app
                .partner_get(
                    key,
                    &format!(
                        "/v1/webhook-endpoints/{endpoint}/deliveries?status={status}&limit=100"
                    ),
                )
                .await;
            let rows = v["data"].as_array().cloned().unwrap_or_default();
            (rows.len() >= n).then_some(rows)
        },
    )
    .await
}

/// A tenant and a key that may manage endpoints and integrations and post orders.
pub async fn account(app: &TestApp) -> String {
    let tenant = app.create_tenant("Partner").await;
    let scopes = [
        "webhooks:read",
        "webhooks:write",
        "orders:read",
        "orders:write",
        "integrations:read",
        "integrations:write",
    ];
    app.create_key(&tenant, Some(&scopes)).await.1
}

/// The attempts logged for an endpoint, oldest first.
pub async fn attempts(app: &TestApp, key: &str, endpoint: &str) -> Vec<Value> {
    let v = app
        .partner_get(
            key,
            &format!("/v1/webhook-endpoints/{endpoint}/attempts?limit=100"),
        )
        .await;
    let mut rows = v["data"].as_array().cloned().unwrap_or_default();
    rows.reverse();
    rows
}

#[tokio::test]
async fn kinds_are_listed_templates_are_checked_and_previews_render() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let key = account(&app).await;
    let kinds = app.partner_get(&key, "/v1/destination-kinds").await;
    let names: Vec<&str> = kinds["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "http",
            "slack",
            "discord",
            "email",
            "rabbitmq",
            "nats",
            "http_action"
        ]
    );
    let slack = &kinds["data"][1];
    assert_eq!(slack["secret_fields"], json!(["webhook_url", "bot_token"]));
    assert_eq!(slack["config_schema"]["required"], json!(["text"]));

    // A template error names the field, the line and the column.
    let r = app
        .partner_post(
            &key,
            "/v1/webhook-endpoints",
            json!({"kind": "discord",
            "config": {"webhook_url": "http://127.0.0.1:9/api/webhooks/1/tok",
                       "content": "New order\n{{ data.external_id "}}),
        )
        .await;
    let p = problem(r, 422, "template_invalid", Some("config.content")).await;
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("line 2, column"), "{detail}");
    // A JSON template must render JSON.
    let r = app
        .partner_post(&key, "/v1/webhook-endpoints", json!({"kind": "discord",
            "config": {"webhook_url": "http://127.0.0.1:9/x", "embeds": "[{\"title\": {{ type }}"}}))
        .await;
    problem(r, 422, "template_invalid", Some("config.embeds")).await;
    // `url` is for http; other kinds keep their address in `config`; unknown fields fail.
    let r = app
        .partner_post(
            &key,
            "/v1/webhook-endpoints",
            json!({"kind": "slack", "url": "http://127.0.0.1:9/"}),
        )
        .await;
    problem(r, 400, "parameter_invalid", Some("url")).await;
    let r = app
        .partner_post(
            &key,
            "/v1/webhook-endpoints",
            json!({"config": {"text": "x"}}),
        )
        .await;
    problem(r, 400, "parameter_invalid", Some("config")).await;
    let r = app
        .partner_post(
            &key,
            "/v1/webhook-endpoints",
            json!({"kind": "nats",
            "config": {"url": "nats://127.0.0.1:4222", "subject": "a", "stream": "x"}}),
        )
        .await;
    problem(r, 400, "parameter_invalid", Some("config.stream")).await;
    let r = app
        .partner_post(
            &key,
            "/v1/webhook-endpoints",
            json!({"kind": "rabbitmq",
            "config": {"url": "http://127.0.0.1:5672", "routing_key": "a"}}),
        )
        .await;
    problem(r, 400, "parameter_invalid", Some("config.url")).await;

    // Secrets are write-only: the response shows the rest, and names the secret fields.
    let token = "tok-secret-0123456789";
    let created = app
        .create_endpoint_with(&key, json!({"kind": "discord", "description": "ops room",
            "config": {"webhook_url": format!("http://127.0.0.1:9/api/webhooks/1/{token}"),
                       "content": "**{{ type }}** {{ data.external_id }} for {{ endpoint.description }}",
                       "embeds": "[{\"title\": {{ data.external_id }}, \"description\": {{ data.notes }}}]"}}))
        .await;
    assert_eq!(created["kind"], "discord");
    assert_eq!(created["config_secrets"], json!(["webhook_url"]));
    assert!(created["config"].get("webhook_url").is_none());
    assert!(!created.to_string().contains(token), "{created}");
    assert_eq!(created["url"], "http://127.0.0.1:9/…");
    let id = created["id"].as_str().unwrap();
    let got = app
        .partner_get(&key, &format!("/v1/webhook-endpoints/{id}"))
        .await;
    assert!(!got.to_string().contains(token));

    let r = app
        .partner_post(&key, &format!("/v1/webhook-endpoints/{id}/preview"),
            json!({"event_type": "order.created", "data": {"external_id": "PO-\"7\"", "notes": "<b>"}}))
        .await;
    assert_eq!(r.status(), 200);
    let preview: Value = r.json().await.unwrap();
    assert_eq!(preview["kind"], "discord");
    assert_eq!(
        preview["message"]["body"]["content"],
        "**order.created** PO-\"7\" for ops room"
    );
    assert_eq!(
        preview["message"]["body"]["embeds"],
        json!([{"title": "PO-\"7\"", "description": "<b>"}])
    );
    // The sample event, when none is given.
    let r = app
        .partner_post(
            &key,
            &format!("/v1/webhook-endpoints/{id}/preview"),
            json!({}),
        )
        .await;
    let preview: Value = r.json().await.unwrap();
    assert_eq!(
        preview["message"]["body"]["content"],
        "**order.created** PO-1001 for ops room"
    );

    // A change replaces the whole config; `url` cannot be given to a non-http endpoint.
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/webhook-endpoints/{id}"),
            json!({"url": "http://127.0.0.1:9/"}),
        )
        .await;
    problem(r, 400, "parameter_invalid", Some("url")).await;
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/webhook-endpoints/{id}"),
            json!({"config": {"webhook_url": "http://127.0.0.1:9/x", "content": "{{ type }}"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["config"], json!({"content": "{{ type }}"}));
}

#[tokio::test]
async fn slack_webhooks_and_bot_messages_have_slacks_shapes_and_429_waits() {
    let api = PartnerServer::start(Behaviour::Status(200)).await;
    let app = TestApp::spawn(TestOptions {
        args: vec![format!("--slack-api-url={}/api", api.base)],
        ..Default::default()
    })
    .await;
    let key = account(&app).await;
    // Incoming webhook: Slack answers `ok`; a 429 with Retry-After is waited out.
    let hook = PartnerServer::start(Behaviour::Replies(vec![
        Reply::status(429)
            .header("retry-after", "1")
            .body("rate_limited"),
        Reply::status(200).body("ok"),
    ]))
    .await;
    let by_hook = app
        .create_endpoint_with(&key, json!({"kind": "slack", "event_types": ["order.created"],
            "config": {"webhook_url": format!("{}/services/T0/B0/secret", hook.base),
                       "text": "New order {{ data.external_id }}",
                       "blocks": "[{\"type\": \"section\", \"text\": {\"type\": \"mrkdwn\", \"text\": {{ '*' ~ data.external_id ~ '*' }}}}]"}}))
        .await;
    // Bot token: `chat.postMessage` with the token as Bearer; `ok: false` fails the attempt.
    api.set_behaviour(Behaviour::Replies(vec![
        Reply::status(200).body(r#"{"ok": false, "error": "ratelimited"}"#),
        Reply::status(200).body(r#"{"ok": true, "channel": "C1", "ts": "1.2"}"#),
    ]));
    let by_bot = app
        .create_endpoint_with(
            &key,
            json!({"kind": "slack", "event_types": ["order.created"],
            "config": {"bot_token": "xoxb-test-token", "channel": "#orders",
                       "text": "New order {{ data.external_id }}"}}),
        )
        .await;
    assert_eq!(by_bot["url"], "slack:#orders");
    assert_eq!(app.post_order(&key, "PO-9").await.status(), 201);
    let (hook_id, bot_id) = (
        by_hook["id"].as_str().unwrap(),
        by_bot["id"].as_str().unwrap(),
    );
    deliveries(&app, &key, hook_id, "succeeded", 1).await;
    deliveries(&app, &key, bot_id, "succeeded", 1).await;

    let sent = hook.received();
    assert_eq!(sent.len(), 2, "one 429, then the message");
    assert!(
        sent[1].at - sent[0].at >= Duration::from_millis(900),
        "Retry-After waited"
    );
    assert_eq!(sent[1].path, "/services/T0/B0/secret");
    assert!(
        sent[1]
            .header("content-type")
            .starts_with("application/json")
    );
    assert_eq!(
        sent[1].json(),
        json!({"text": "New order PO-9", "blocks": [{"type": "section",
               "text": {"type": "mrkdwn", "text": "*PO-9*"}}]})
    );
    let posted = api.received();
    assert_eq!(posted.len(), 2);
    assert_eq!(posted[1].path, "/api/chat.postMessage");
    assert_eq!(posted[1].header("authorization"), "Bearer xoxb-test-token");
    assert_eq!(
        posted[1].json(),
        json!({"text": "New order PO-9", "channel": "#orders"})
    );
    // The attempt log keeps Slack's answers and never the token or the webhook's secret path.
    let logged = attempts(&app, &key, bot_id).await;
    assert_eq!(logged[0]["error_class"], "api_error");
    assert_eq!(logged[0]["error_message"], "Slack answered: ratelimited");
    assert!(
        !logged
            .iter()
            .any(|a| a.to_string().contains("xoxb-test-token"))
    );
    let logged = attempts(&app, &key, hook_id).await;
    assert_eq!(logged[0]["status_code"], 429);
    assert!(!logged.iter().any(|a| a.to_string().contains("B0/secret")));
}

#[tokio::test]
async fn discord_waits_for_the_message_and_honours_retry_after_in_json() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let key = account(&app).await;
    let discord = PartnerServer::start(Behaviour::Replies(vec![
        Reply::status(429)
            .header("content-type", "application/json")
            .header("location", "https://discord.example/api/webhooks/42/token?wait=true")
            .body(r#"{"message": "You are being rate limited.", "retry_after": 1.5, "global": false}"#),
        Reply::status(200).body(r#"{"id": "1100", "content": "x"}"#),
    ]))
    .await;
    let e = app
        .create_endpoint_with(
            &key,
            json!({"kind": "discord", "event_types": ["order.created"],
            "config": {"webhook_url": format!("{}/api/webhooks/42/token", discord.base),
                       "username": "Switchyard", "content": "Order {{ data.external_id }}"}}),
        )
        .await;
    assert_eq!(app.post_order(&key, "PO-5").await.status(), 201);
    deliveries(&app, &key, e["id"].as_str().unwrap(), "succeeded", 1).await;
    let sent = discord.received();
    assert_eq!(sent.len(), 2);
    assert!(
        sent[1].at - sent[0].at >= Duration::from_millis(1400),
        "retry_after 1.5 s honoured"
    );
    assert_eq!(sent[1].path, "/api/webhooks/42/token?wait=true");
    assert_eq!(
        sent[1].json(),
        json!({"content": "Order PO-5", "username": "Switchyard", "allowed_mentions": {"parse": []}})
    );
    // The webhook's token never reaches the attempt log, even quoted by the server in a header.
    let logged = attempts(&app, &key, e["id"].as_str().unwrap()).await;
    assert_eq!(logged[0]["status_code"], 429);
    assert!(
        !logged
            .iter()
            .any(|a| a.to_string().contains("webhooks/42/token")),
        "{logged:?}"
    );
}

#[tokio::test]
async fn http_actions_call_stripe_style_apis_form_encoded_with_one_idempotency_key() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let key = account(&app).await;
    let stripe = PartnerServer::start(Behaviour::Replies(vec![
        Reply::status(500).body(r#"{"error": {"type": "api_error"}}"#),
        Reply::status(200).body(r#"{"id": "cus_1", "object": "customer"}"#),
    ]))
    .await;
    let r = app
        .partner_post(
            &key,
            "/v1/integrations",
            json!({"name": "Stripe", "code": "stripe",
            "type": "payment_gateway", "provider": "stripe", "base_url": stripe.base,
            "credentials": {"bearer_token": "sk_test_51secret"}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let integration: Value = r.json().await.unwrap();
    let e = app
        .create_endpoint_with(&key, json!({"kind": "http_action", "event_types": ["order.created"],
            "config": {"integration_id": integration["id"], "method": "POST", "path": "/v1/customers",
                       "headers": {"Stripe-Version": "2024-06-20"},
                       "form": {"email": "{{ data.customer.email }}", "name": "{{ data.customer.name }}",
                                "metadata[order_id]": "{{ data.external_id }}"}}}))
        .await;
    assert!(e["url"].as_str().unwrap().ends_with("/v1/customers"), "{e}");
    assert_eq!(app.post_order(&key, "PO-1 & 2").await.status(), 201);
    let id = e["id"].as_str().unwrap();
    deliveries(&app, &key, id, "succeeded", 1).await;
    let sent = stripe.received();
    assert_eq!(sent.len(), 2, "a 500, then the retry");
    for s in &sent {
        assert_eq!(s.path, "/v1/customers");
        assert_eq!(
            s.header("content-type"),
            "application/x-www-form-urlencoded"
        );
        assert_eq!(s.header("authorization"), "Bearer sk_test_51secret");
        assert_eq!(s.header("stripe-version"), "2024-06-20");
        assert_eq!(
            String::from_utf8_lossy(&s.body),
            "email=grace%40example.com&metadata%5Border_id%5D=PO-1+%26+2&name=Grace+Hopper"
        );
    }
    let key0 = sent[0].header("idempotency-key");
    assert!(key0.starts_with("del_"), "{key0}");
    assert_eq!(
        sent[1].header("idempotency-key"),
        key0,
        "the same key on the retry"
    );
    let logged = attempts(&app, &key, id).await;
    assert!(
        !logged
            .iter()
            .any(|a| a.to_string().contains("sk_test_51secret"))
    );

    // A path takes event data as one segment: it cannot climb out of the path it is given,
    // nor leave the integration's host.
    let r = app
        .partner_post(
            &key,
            "/v1/webhook-endpoints",
            json!({"kind": "http_action",
            "config": {"integration_id": integration["id"], "path": ".attacker.example/x"}}),
        )
        .await;
    problem(r, 400, "parameter_invalid", Some("config.path")).await;
    let by_id = app
        .create_endpoint_with(&key, json!({"kind": "http_action", "event_types": ["order.created"],
            "config": {"integration_id": integration["id"], "method": "POST",
                       "path": "/v1/customers/{{ data.external_id }}", "body": "{\"ref\": {{ data.external_id }}}"}}))
        .await;
    stripe.set_behaviour(Behaviour::Status(200));
    assert_eq!(app.post_order(&key, "../../v1/charges").await.status(), 201);
    deliveries(&app, &key, by_id["id"].as_str().unwrap(), "succeeded", 1).await;
    let put = stripe.received().into_iter().last().unwrap();
    assert_eq!(put.path, "/v1/customers/..%2F..%2Fv1%2Fcharges");
    assert_eq!(put.json(), json!({"ref": "../../v1/charges"}));
    stripe.set_behaviour(Behaviour::Status(400));

    // A 4xx that says the request is wrong fails the delivery at once (no retry).
    stripe.set_behaviour(Behaviour::Status(400));
    assert_eq!(app.post_order(&key, "PO-3").await.status(), 201);
    let failed = deliveries(&app, &key, id, "failed", 1).await;
    assert_eq!(failed[0]["attempts"], 1, "{failed:?}");

    // A server that echoes the request's Basic authorization (`plant:pa:ss` in base64) in its
    // body and headers: the attempt log keeps neither it nor the password.
    let basic = "cGxhbnQ6cGE6c3M=";
    let echo = PartnerServer::start(Behaviour::Replies(vec![
        Reply::status(200)
            .body(format!("you sent Basic {basic} (pa:ss)"))
            .header("x-echo", format!("Basic {basic}")),
    ]))
    .await;
    let r = app
        .partner_post(
            &key,
            "/v1/integrations",
            json!({"name": "MES", "code": "mes", "type": "mes", "provider": "http",
                   "base_url": echo.base, "credentials": {"username": "plant", "password": "pa:ss"}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let mes: Value = r.json().await.unwrap();
    let e = app
        .create_endpoint_with(
            &key,
            json!({"kind": "http_action", "event_types": ["order.created"],
            "config": {"integration_id": mes["id"], "method": "POST", "path": "/orders",
                       "body": "{\"ref\": {{ data.external_id }}}"}}),
        )
        .await;
    assert_eq!(app.post_order(&key, "PO-9").await.status(), 201);
    let id = e["id"].as_str().unwrap();
    deliveries(&app, &key, id, "succeeded", 1).await;
    assert_eq!(
        echo.received()[0].header("authorization"),
        format!("Basic {basic}")
    );
    let logged = attempts(&app, &key, id).await;
    let text = serde_json::to_string(&logged).unwrap();
    assert!(text.contains("you sent Basic"), "{text}");
    assert!(!text.contains(basic) && !text.contains("pa:ss"), "{text}");
}

#[tokio::test]
async fn destination_addresses_pass_the_egress_rules() {
    let app = TestApp::spawn(TestOptions {
        allow_private: false,
        ..TestOptions::no_worker()
    })
    .await;
    let key = account(&app).await;
    let cases = [
        (
            json!({"kind": "slack", "config": {"webhook_url": "http://127.0.0.1:9/services/x", "text": "x"}}),
            "config.webhook_url",
        ),
        (
            json!({"kind": "discord", "config": {"webhook_url": "http://[::1]:9/api/webhooks/1/t", "content": "x"}}),
            "config.webhook_url",
        ),
        (
            json!({"kind": "rabbitmq", "config": {"url": "amqp://guest:guest@127.0.0.1:5672/%2f", "routing_key": "q"}}),
            "config.url",
        ),
        (
            json!({"kind": "nats", "config": {"url": "nats://10.0.0.7:4222", "subject": "s"}}),
            "config.url",
        ),
        (
            json!({"kind": "nats", "config": {"url": "nats://localhost:4222", "subject": "s"}}),
            "config.url",
        ),
    ];
    for (body, param) in cases {
        let r = app
            .partner_post(&key, "/v1/webhook-endpoints", body.clone())
            .await;
        problem(r, 400, "url_not_allowed", Some(param)).await;
    }
}
