//! Retry schedules, throttling, `Retry-After`, 410 Gone, redirects, timeouts, connection
//! resets, and what the attempt log records about each.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{
    Behaviour, PartnerServer, Reply, TestApp, TestOptions, eventually, problem,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The attempts of an endpoint, oldest first, once there are `n`.
async fn attempts(app: &TestApp, key: &str, endpoint: &str, n: usize) -> Vec<Value> {
    eventually(
        Duration::from_secs(20),
        &format!("{n} attempts"),
        || async {
            let v = app
                .partner_get(key, &format!("/v1/webhook-endpoints/{endpoint}/attempts"))
                .await;
            let mut list = v["data"].as_array().unwrap().clone();
            list.reverse();
            (list.len() >= n).then_some(list)
        },
    )
    .await
}

async fn delivery_status(app: &TestApp) -> Vec<(String, i32)> {
    sqlx::query_as("SELECT status, attempts FROM webhook_deliveries ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_endpoint_schedule_sets_the_attempt_count_and_the_delays() {
    // The deployment default allows 3 attempts; this endpoint asks for 5, 300 ms apart.
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Status(500)).await;
    let (_, key) = app.partner_account().await;
    let ep = app
        .create_endpoint_with(
            &key,
            json!({ "url": partner.url, "retry_schedule": ["300ms", "300ms", "300ms", "300ms"] }),
        )
        .await;
    assert_eq!(
        ep["retry_schedule"],
        json!(["300ms", "300ms", "300ms", "300ms"])
    );
    assert_eq!(ep["timeout"], Value::Null, "default timeout");
    let id = ep["id"].as_str().unwrap();
    assert_eq!(app.post_order(&key, "ord-5x").await.status(), 201);

    let log = attempts(&app, &key, id, 5).await;
    eventually(Duration::from_secs(5), "the delivery to fail", || async {
        (delivery_status(&app).await == vec![("failed".to_owned(), 5)]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(partner.count(), 5, "exactly five attempts, no sixth");
    let at: Vec<_> = partner.received().iter().map(|r| r.at).collect();
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            // The lower bound is the schedule's jitter; the upper one leaves the
            // dispatcher's poll and a busy test machine room, not a second schedule.
            gap >= Duration::from_millis(240) && gap < Duration::from_millis(1200),
            "300 ms ± 20 % between attempts, got {gap:?}"
        );
    }
    let numbers: Vec<i64> = log.iter().map(|a| a["attempt"].as_i64().unwrap()).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
    assert!(log.iter().all(|a| a["error_class"] == "http_status"));

    let stats = app
        .partner_get(&key, &format!("/v1/webhook-endpoints/{id}/stats?window=1h"))
        .await;
    assert_eq!(stats["attempts"], 5);
    assert_eq!(stats["failed"], 5);
    assert_eq!(stats["success_rate"], 0.0);
    assert_eq!(
        stats["errors"],
        json!([{ "error_class": "http_status", "count": 5 }])
    );
    assert_eq!(
        stats["deliveries"],
        json!([{ "status": "failed", "count": 1 }])
    );
    // Percentiles lie within the logged durations they summarise.
    let durations: Vec<f64> = log
        .iter()
        .map(|a| a["duration_ms"].as_f64().unwrap())
        .collect();
    let lo = durations.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = durations.iter().cloned().fold(0.0, f64::max);
    let (p50, p99) = (
        stats["latency_p50_ms"].as_f64().unwrap(),
        stats["latency_p99_ms"].as_f64().unwrap(),
    );
    assert!(
        lo <= p50 && p50 <= p99 && p99 <= hi,
        "{lo} ≤ {p50} ≤ {p99} ≤ {hi}"
    );
    let buckets = stats["buckets"].as_array().unwrap();
    let in_buckets: i64 = buckets.iter().map(|b| b["failed"].as_i64().unwrap()).sum();
    assert_eq!(in_buckets, 5);
    let bad = app
        .http
        .get(app.url(&format!("/v1/webhook-endpoints/{id}/stats?window=2d")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    problem(bad, 400, "parameter_invalid", Some("window")).await;

    // Validation: bad delays and timeouts name the offending field.
    let bad = app
        .partner_post(
            &key,
            "/v1/webhook-endpoints",
            json!({ "url": partner.url, "retry_schedule": ["5s", "8d"] }),
        )
        .await;
    problem(bad, 400, "parameter_invalid", Some("retry_schedule[1]")).await;
    let bad = app
        .partner_post(
            &key,
            "/v1/webhook-endpoints",
            json!({ "url": partner.url, "timeout": "31s" }),
        )
        .await;
    problem(bad, 400, "parameter_invalid", Some("timeout")).await;

    // PATCH changes the schedule; null goes back to the default.
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/webhook-endpoints/{id}"),
            json!({ "retry_schedule": null, "timeout": "10s", "description": "ERP" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["retry_schedule"], Value::Null);
    assert_eq!(v["timeout"], "10s");
    assert_eq!(v["description"], "ERP");
}

#[tokio::test]
async fn retry_after_and_throttling_answers_slow_the_retries_down() {
    // Schedule 200 ms; throttling penalty 1 s (60 s in production).
    let app = TestApp::spawn(TestOptions::default()).await;
    let asks = PartnerServer::start(Behaviour::Replies(vec![
        Reply::status(429).header("retry-after", "3"),
        Reply::status(200),
    ]))
    .await;
    let busy = PartnerServer::start(Behaviour::Replies(vec![
        Reply::status(503),
        Reply::status(200),
    ]))
    .await;
    let plain = PartnerServer::start(Behaviour::PerMessage(vec![500, 200])).await;
    let (_, key) = app.partner_account().await;
    for p in [&asks, &busy, &plain] {
        app.create_endpoint_with(&key, json!({ "url": p.url, "retry_schedule": ["200ms"] }))
            .await;
    }
    assert_eq!(app.post_order(&key, "ord-throttle").await.status(), 201);
    eventually(Duration::from_secs(10), "all three delivered", || async {
        (asks.count() == 2 && busy.count() == 2 && plain.count() == 2).then_some(())
    })
    .await;
    let gap = |p: &PartnerServer| {
        let r = p.received();
        r[1].at - r[0].at
    };
    assert!(
        gap(&asks) >= Duration::from_secs(3),
        "Retry-After: 3 → {:?}",
        gap(&asks)
    );
    assert!(gap(&asks) < Duration::from_secs(5));
    assert!(
        gap(&busy) >= Duration::from_secs(1),
        "503 → throttle penalty, {:?}",
        gap(&busy)
    );
    assert!(
        gap(&plain) < Duration::from_secs(1),
        "500 → schedule only, {:?}",
        gap(&plain)
    );
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_redirects_are_failures_not_followed() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let gone = PartnerServer::start(Behaviour::Status(410)).await;
    let elsewhere = PartnerServer::start(Behaviour::Status(200)).await;
    let redirects = PartnerServer::start(Behaviour::Replies(vec![
        Reply::status(302).header("location", elsewhere.url.clone()),
    ]))
    .await;
    let (_, key) = app.partner_account().await;
    let g = app
        .create_endpoint_with(
            &key,
            json!({ "url": gone.url, "retry_schedule": ["200ms", "200ms", "200ms"] }),
        )
        .await;
    let r = app
        .create_endpoint_with(
            &key,
            json!({ "url": redirects.url, "retry_schedule": ["200ms"] }),
        )
        .await;
    let (g, r) = (g["id"].as_str().unwrap(), r["id"].as_str().unwrap());
    assert_eq!(app.post_order(&key, "ord-gone").await.status(), 201);

    // 410: one attempt, the delivery fails, the endpoint is disabled with a reason.
    attempts(&app, &key, g, 1).await;
    let ep = eventually(Duration::from_secs(5), "the endpoint disabled", || async {
        let v = app
            .partner_get(&key, &format!("/v1/webhook-endpoints/{g}"))
            .await;
        (v["status"] == "disabled").then_some(v)
    })
    .await;
    assert_eq!(ep["disabled_reason"], "gone");
    assert!(ep["disabled_at"].is_string());
    // 302: two attempts (schedule of one retry), both failures; the Location is never called.
    let log = attempts(&app, &key, r, 2).await;
    for a in &log {
        assert_eq!(a["status_code"], 302);
        assert_eq!(a["error_class"], "http_status");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gone.count(), 1, "no retry after 410");
    assert_eq!(elsewhere.count(), 0, "redirects are never followed");

    // A disabled endpoint gets no new deliveries; enabling it clears the reason.
    assert_eq!(app.post_order(&key, "ord-after-gone").await.status(), 201);
    eventually(Duration::from_secs(5), "the second fan-out", || async {
        let n = app.count("SELECT count(*) FROM webhook_messages").await;
        (n == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gone.count(), 1);
    let v: Value = app
        .partner_patch(
            &key,
            &format!("/v1/webhook-endpoints/{g}"),
            json!({ "status": "enabled" }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "enabled");
    assert_eq!(v["disabled_reason"], Value::Null);
}

#[tokio::test]
async fn a_slow_endpoint_times_out_at_its_own_timeout() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let slow = PartnerServer::start(Behaviour::Slow(Duration::from_secs(4))).await;
    let (_, key) = app.partner_account().await;
    let ep = app
        .create_endpoint_with(
            &key,
            json!({ "url": slow.url, "timeout": "1s", "retry_schedule": [] }),
        )
        .await;
    assert_eq!(ep["timeout"], "1s");
    assert_eq!(app.post_order(&key, "ord-slow").await.status(), 201);
    let log = attempts(&app, &key, ep["id"].as_str().unwrap(), 1).await;
    assert_eq!(log[0]["error_class"], "timeout");
    let ms = log[0]["duration_ms"].as_i64().unwrap();
    assert!(
        (900..3000).contains(&ms),
        "timed out after ~1 s, took {ms} ms"
    );
    eventually(Duration::from_secs(5), "the delivery to fail", || async {
        (delivery_status(&app).await == vec![("failed".to_owned(), 1)]).then_some(())
    })
    .await;
}

/// A bare HTTP server: resets the first connection as soon as it is accepted, answers 200 on
/// the next ones. Returns its URL and the number of connections accepted.
async fn resetting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{Arc, atomic::AtomicUsize, atomic::Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                sock.set_zero_linger().unwrap();
                drop(sock); // RST
                continue;
            }
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and the body (content-length) of one request, then answer.
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_lowercase();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_connection_reset_gets_one_immediate_retry_within_the_attempt() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let (url, accepted) = resetting_server().await;
    let (_, key) = app.partner_account().await;
    let ep = app
        .create_endpoint_with(&key, json!({ "url": url, "retry_schedule": [] }))
        .await;
    assert_eq!(app.post_order(&key, "ord-reset").await.status(), 201);
    let log = attempts(&app, &key, ep["id"].as_str().unwrap(), 1).await;
    assert_eq!(log[0]["status_code"], 200, "{}", log[0]);
    assert_eq!(log[0]["error_class"], Value::Null);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    eventually(
        Duration::from_secs(5),
        "the delivery to succeed",
        || async {
            (delivery_status(&app).await == vec![("succeeded".to_owned(), 1)]).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_attempt_log_has_timings_address_and_headers() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Replies(vec![
        Reply::status(200).header("x-partner-trace", "abc123"),
    ]))
    .await;
    let (_, key) = app.partner_account().await;
    let (id, _) = app.create_endpoint(&key, &partner.url, &["*"]).await;
    assert_eq!(app.post_order(&key, "ord-log").await.status(), 201);
    let a = &attempts(&app, &key, &id, 1).await[0];
    assert_eq!(a["remote_ip"], "127.0.0.1");
    assert!(a["ttfb_ms"].as_i64().unwrap() <= a["duration_ms"].as_i64().unwrap());
    assert!(
        a["connect_ms"].is_i64(),
        "first request opens a connection: {a}"
    );
    let sent = a["request_headers"].as_array().unwrap();
    let sent_names: Vec<&str> = sent.iter().map(|h| h[0].as_str().unwrap()).collect();
    for name in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "user-agent",
    ] {
        assert!(sent_names.contains(&name), "{name} in {sent_names:?}");
    }
    let got = a["response_headers"].as_array().unwrap();
    assert!(
        got.iter()
            .any(|h| h[0] == "x-partner-trace" && h[1] == "abc123")
    );
    assert_eq!(a["response_body"], "partner says hi");
    assert_eq!(a["response_size"], 15);
}

/// Any 2xx is a delivery (Standard Webhooks), whatever size of body comes with it: the read
/// stops past 1 MiB and the log keeps the first 64 KiB.
#[tokio::test]
async fn a_2xx_with_a_response_body_over_one_mebibyte_delivers_and_logs_its_start() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let huge = "x".repeat(1536 * 1024);
    let partner =
        PartnerServer::start(Behaviour::Replies(vec![Reply::status(200).body(huge)])).await;
    let (_, key) = app.partner_account().await;
    let ep = app
        .create_endpoint_with(&key, json!({ "url": partner.url, "retry_schedule": [] }))
        .await;
    assert_eq!(app.post_order(&key, "ord-huge").await.status(), 201);
    let a = &attempts(&app, &key, ep["id"].as_str().unwrap(), 1).await[0];
    assert_eq!(a["status_code"], 200);
    assert!(a["error_class"].is_null(), "{a}");
    assert!(a["response_size"].as_i64().unwrap() > 1024 * 1024);
    assert_eq!(
        a["response_body"].as_str().unwrap().len(),
        64 * 1024,
        "the log keeps 64 KiB"
    );
    eventually(Duration::from_secs(5), "the delivery", || async {
        (delivery_status(&app).await == vec![("succeeded".to_owned(), 1)]).then_some(())
    })
    .await;
}
