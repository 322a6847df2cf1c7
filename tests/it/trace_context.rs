//! W3C trace context: a partner's `traceparent` goes on through its request into the events it
//! writes and every webhook attempt they become (same trace, a new span per attempt); without
//! one, a message's attempts still share one trace.

use std::time::Duration;

use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The `traceparent` header's trace id and span id, checking its shape.
fn parts(header: &str) -> (String, String) {
    let p: Vec<&str> = header.split('-').collect();
    assert_eq!(p.len(), 4, "{header}");
    assert_eq!(p[0], "00");
    assert!(
        p[1].len() == 32 && p[2].len() == 16 && p[3].len() == 2,
        "{header}"
    );
    (p[1].to_owned(), p[2].to_owned())
}

#[tokio::test]
async fn a_requests_traceparent_reaches_every_attempt_of_the_webhooks_it_causes() {
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "100ms".into(),
        ..Default::default()
    })
    .await;
    // Each message fails once, then succeeds: two attempts each.
    let partner = PartnerServer::start(Behaviour::PerMessage(vec![503, 200])).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["order.created"])
        .await;
    let traced = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&key)
        .header("traceparent", PARENT)
        .json(&TestApp::order_body("traced"))
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 201);
    assert_eq!(app.post_order(&key, "untraced").await.status(), 201);
    // A malformed header is ignored: the request starts its own trace.
    let bad = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&key)
        .header("traceparent", "00-nonsense")
        .json(&TestApp::order_body("malformed"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 201);

    let received = eventually(
        Duration::from_secs(15),
        "two attempts per order",
        || async {
            let r = partner.received();
            (r.len() == 6).then_some(r)
        },
    )
    .await;
    let attempts = |external_id: &str| -> Vec<(String, String)> {
        received
            .iter()
            .filter(|r| r.json()["data"]["external_id"] == external_id)
            .map(|r| parts(r.header("traceparent")))
            .collect()
    };
    let traced = attempts("traced");
    assert_eq!(traced.len(), 2);
    for (trace, span) in &traced {
        assert_eq!(trace, TRACE_ID, "the caller's trace");
        assert_ne!(span, "00f067aa0ba902b7", "a span of its own");
    }
    assert_ne!(traced[0].1, traced[1].1, "a new span per attempt");
    for other in ["untraced", "malformed"] {
        let a = attempts(other);
        assert_eq!(a.len(), 2);
        assert_ne!(a[0].0, TRACE_ID);
        assert_eq!(a[0].0, a[1].0, "a message's attempts share its trace");
    }
    assert_ne!(attempts("untraced")[0].0, attempts("malformed")[0].0);
    // The event keeps the request's context.
    let stored: String =
        sqlx::query_scalar("SELECT traceparent FROM events WHERE data->>'external_id' = 'traced'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(parts(&stored).0, TRACE_ID);
}
