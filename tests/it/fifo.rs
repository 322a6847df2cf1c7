//! Strict FIFO endpoints: one delivery at a time, in the order the events were accepted,
//! through failures, a backlog, and fan-outs that run late.

use std::time::Duration;

use serde_json::json;
use switchyard_tests::{Behaviour, PartnerServer, Reply, TestApp, TestOptions, eventually};

#[tokio::test]
async fn a_fifo_endpoint_gets_messages_one_at_a_time_in_order_even_through_failures() {
    let app = TestApp::spawn(TestOptions::default()).await;
    // Every message fails once: without FIFO, later messages overtake the retries.
    // Each answer takes 150 ms, so two sends at once would overlap and be seen.
    let slow = |status| Reply {
        delay: Some(Duration::from_millis(150)),
        ..Reply::status(status)
    };
    let partner = PartnerServer::start(Behaviour::Replies(vec![slow(500), slow(200)])).await;
    let (_, key) = app.partner_account().await;
    let ep = app
        .create_endpoint_with(
            &key,
            json!({ "url": partner.url, "fifo": true, "retry_schedule": ["300ms", "300ms"] }),
        )
        .await;
    assert_eq!(ep["fifo"], true);
    let n = 5;
    for i in 0..n {
        assert_eq!(
            app.post_order(&key, &format!("ord-fifo-{i}"))
                .await
                .status(),
            201
        );
    }
    eventually(
        Duration::from_secs(30),
        "every message delivered",
        || async {
            (partner
                .received()
                .iter()
                .filter(|r| r.status == 200)
                .count()
                == n)
                .then_some(())
        },
    )
    .await;
    // Arrival order: m1 (500), m1 (200), m2 (500), m2 (200), … — message ids (UUIDv7) ascending.
    let ids = partner.ids();
    assert_eq!(ids.len(), 2 * n);
    for pair in ids.chunks(2) {
        assert_eq!(
            pair[0], pair[1],
            "a message's retry comes before the next message: {ids:?}"
        );
    }
    // The next message, admitted while the failed one waits for its retry, never sends it
    // early (webhooks::ordering starts only a due delivery): each retry keeps its 300 ms.
    for pair in partner.received().chunks(2) {
        let waited = pair[1].at - pair[0].at;
        assert!(
            waited >= Duration::from_millis(290),
            "retried after {waited:?}"
        );
    }
    let firsts: Vec<&String> = ids.iter().step_by(2).collect();
    let mut sorted = firsts.clone();
    sorted.sort();
    assert_eq!(firsts, sorted, "in message order");
    assert_eq!(partner.max_in_flight(), 1, "never two sends at once");
}

/// A FIFO endpoint's cap is one, and deliveries are admitted by due time, which is not message
/// order (fan-outs run concurrently). An admitted delivery that must wait for an older message
/// runs that one in its slot (`webhooks::ordering`): each message is admitted about twice, one
/// message going out right after another. Before, it went back to the ledger and the next
/// pick was often another that had to wait: 60 messages were admitted 642 times and had not
/// all arrived after 60 s.
#[tokio::test]
async fn a_fifo_backlog_drains_with_each_message_admitted_about_twice() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint_with(&key, json!({ "url": partner.url, "fifo": true }))
        .await;
    let n = 60;
    app.post_orders(&key, "fifo-backlog", n, 10).await;
    eventually(Duration::from_secs(30), "every message", || async {
        (partner.received().len() >= n).then_some(())
    })
    .await;
    let ids = partner.ids();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "in message order");
    assert_eq!(ids.len(), n, "each once");
    assert_eq!(partner.max_in_flight(), 1);
    let (admissions, most): (i64, i64) = sqlx::query_as(
        "SELECT sum(dispatch_seq)::int8, max(dispatch_seq)::int8 FROM jobs
          WHERE queue = 'webhook_deliveries'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        admissions <= 3 * n as i64 && most <= 10,
        "{admissions} admissions for {n} messages, one admitted {most} times"
    );
}

/// Strict FIFO holds across fan-outs: the message of an event whose fan-out is held up (here
/// it fails once and runs again a second later) still reaches a FIFO endpoint before the
/// message of a later event. Before, the later event's delivery went out at once and the
/// earlier one arrived a second after it.
#[tokio::test]
async fn a_late_fan_out_still_goes_first_to_a_fifo_endpoint() {
    let app = TestApp::spawn(TestOptions {
        args: vec![
            "--job-retry-delay=1s".into(),
            "--job-retry-max-delay=1s".into(),
        ],
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint_with(&key, json!({ "url": partner.url, "fifo": true }))
        .await;
    // The first order's fan-out fails once (a sequence counts across rolled-back attempts).
    sqlx::raw_sql(
        "CREATE SEQUENCE held_once;
         CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.payload::text LIKE '%fifo-late-first%' AND nextval('held_once') = 1 THEN
             RAISE EXCEPTION 'held up';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER hold BEFORE INSERT ON webhook_messages
           FOR EACH ROW EXECUTE FUNCTION hold();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    for order in ["fifo-late-first", "fifo-late-second"] {
        assert_eq!(app.post_order(&key, order).await.status(), 201);
    }
    eventually(Duration::from_secs(20), "both messages", || async {
        (partner.received().len() >= 2).then_some(())
    })
    .await;
    let held: i64 = sqlx::query_scalar("SELECT last_value FROM held_once")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(held >= 2, "the first fan-out failed once and ran again");
    let ids = partner.ids();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "in the order the events were accepted");
    assert_eq!(ids.len(), 2, "each once");
}
