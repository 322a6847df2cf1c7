//! Destinations that are not HTTP, against the real servers on the machine: RabbitMQ
//! (127.0.0.1:5672, publisher confirms, a broker restart mid-run), NATS JetStream
//! (127.0.0.1:4222, a retried publish stored once) and an SMTP relay started by the test
//! (a 4xx then 2xx, a 5xx). Each test has its own queue, stream or server.

use std::{collections::HashSet, time::Duration};

use futures::StreamExt;
use lapin::{
    Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable},
};
use serde_json::{Value, json};
use switchyard_tests::{SmtpServer, TestApp, TestOptions, eventually};
use uuid::Uuid;

use crate::destinations::{account, attempts, deliveries};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS: &str = "nats://127.0.0.1:4222";

/// The machine's NATS server, which one test stops and starts again: that test holds it
/// alone, the others share it, so none sees the restart unless it is testing it.
static NATS_SERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The same for the machine's RabbitMQ, which one test restarts.
pub(crate) static RABBITMQ_SERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Retries that outlast a broker restart (about 20 s in all), and a breaker that stays closed
/// through the failures it causes.
fn outlasting_a_restart() -> TestOptions {
    TestOptions {
        retry_schedule: "1s,1s,1s,2s,2s,5s,5s,5s".into(),
        breaker_min_attempts: 1000,
        ..Default::default()
    }
}

/// How many attempts to the endpoint failed.
async fn failed_attempts(app: &TestApp, key: &str, endpoint: &str) -> usize {
    attempts(app, key, endpoint)
        .await
        .iter()
        .filter(|a| !a["error_class"].is_null())
        .count()
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn rabbitmq_gets_every_message_confirmed_with_its_id_through_a_broker_restart() {
    let _alone = RABBITMQ_SERVER.write().await;
    let app = TestApp::spawn(outlasting_a_restart()).await;
    let key = account(&app).await;
    let queue = format!("switchyard-test-{}", Uuid::now_v7().simple());
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, FieldTable::default())
        .await
        .unwrap();
    let e = app
        .create_endpoint_with(
            &key,
            json!({"kind": "rabbitmq", "event_types": ["order.created"],
            "config": {"url": AMQP, "exchange": "", "routing_key": queue}}),
        )
        .await;
    assert_eq!(e["url"], "amqp://127.0.0.1:5672", "no credentials shown");
    let id = e["id"].as_str().unwrap().to_owned();
    app.post_orders(&key, "rmq-a", 10, 5).await;
    deliveries(&app, &key, &id, "succeeded", 10).await;

    // The broker restarts while orders keep coming: attempts in flight fail and are retried
    // on a new connection; nothing confirmed is lost, nothing is published under a new id.
    drop(channel);
    let _ = conn.close(200, "restart".into()).await;
    rabbitmqctl(&["stop_app"]);
    app.post_orders(&key, "rmq-b", 10, 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    app.post_orders(&key, "rmq-c", 10, 5).await;
    let done = deliveries(&app, &key, &id, "succeeded", 30).await;
    let expected: HashSet<String> = done
        .iter()
        .map(|d| d["webhook_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expected.len(), 30);
    assert!(
        failed_attempts(&app, &key, &id).await > 0,
        "attempts failed while the broker was down"
    );

    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = HashSet::new();
    let mut copies = 0;
    while seen.len() < 30 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("every message arrives")
            .unwrap()
            .unwrap();
        let p = &delivery.properties;
        let message_id = p.message_id().as_ref().unwrap().to_string();
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(p.kind().as_ref().unwrap().as_str(), "order.created");
        let headers = p.headers().as_ref().unwrap();
        assert!(matches!(
            headers.inner().get("type"),
            Some(AMQPValue::LongString(_))
        ));
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        assert_eq!(body["type"], "order.created", "the webhook's JSON");
        assert!(expected.contains(&message_id), "{message_id}");
        seen.insert(message_id);
        copies += 1;
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(seen, expected);
    // A publish unconfirmed when the connection broke may have been stored and is sent again
    // under the same message_id: at-least-once, deduplicable.
    assert!(copies >= 30);
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();

    // No queue bound to the routing key: the broker returns the message, the attempt fails.
    let lost = app
        .create_endpoint_with(
            &key,
            json!({"kind": "rabbitmq", "event_types": ["order.created"],
            "retry_schedule": [],
            "config": {"url": AMQP, "routing_key": format!("nowhere-{}", Uuid::now_v7())}}),
        )
        .await;
    assert_eq!(app.post_order(&key, "rmq-lost").await.status(), 201);
    let lost_id = lost["id"].as_str().unwrap();
    deliveries(&app, &key, lost_id, "failed", 1).await;
    let a = attempts(&app, &key, lost_id).await;
    assert_eq!(a[0]["error_class"], "unroutable", "{a:?}");
}

/// A JetStream stream named `name` taking the subjects `name.>`.
async fn create_stream(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> async_nats::jetstream::stream::Stream {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn nats_jetstream_stores_each_message_once_when_retried_and_through_a_server_restart() {
    let _alone = NATS_SERVER.write().await;
    let app = TestApp::spawn(outlasting_a_restart()).await;
    let key = account(&app).await;
    let name = format!("SY{}", Uuid::now_v7().simple());
    let client = async_nats::connect(NATS).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = create_stream(&js, &name).await;
    let e = app
        .create_endpoint_with(
            &key,
            json!({"kind": "nats", "event_types": ["order.created"],
            "config": {"url": NATS, "subject": format!("{name}.{{{{ type }}}}")}}),
        )
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    app.post_orders(&key, "nats", 3, 3).await;
    let done = deliveries(&app, &key, &id, "succeeded", 3).await;
    assert_eq!(stream.info().await.unwrap().state.messages, 3);

    // The same delivery sent again (as a retry after a lost ack would): the stream knows its
    // Nats-Msg-Id and keeps one copy.
    let delivery = done[0]["id"].as_str().unwrap();
    let r = app
        .partner_post(
            &key,
            &format!("/v1/webhook-deliveries/{delivery}/retry"),
            json!({}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let again = eventually(Duration::from_secs(10), "the second attempt", || async {
        let a: Vec<Value> = attempts(&app, &key, &id)
            .await
            .into_iter()
            .filter(|a| a["delivery_id"] == delivery)
            .collect();
        (a.len() == 2).then(|| a[1].clone())
    })
    .await;
    let ack: Value = serde_json::from_str(again["response_body"].as_str().unwrap()).unwrap();
    assert_eq!(ack["duplicate"], true, "{ack}");
    assert_eq!(stream.info().await.unwrap().state.messages, 3);
    let msg = stream
        .get_last_raw_message_by_subject(&format!("{name}.order.created"))
        .await
        .unwrap();
    let headers = msg.headers;
    assert!(
        headers
            .get("Nats-Msg-Id")
            .is_some_and(|v| v.as_str().starts_with("msg_"))
    );

    // The server restarts while orders come: attempts fail while it is down, the worker's
    // client reconnects (or is replaced), and every message is stored once.
    drop(js);
    restart_nats_server(|| app.post_orders(&key, "nats-down", 5, 5)).await;
    app.post_orders(&key, "nats-up", 5, 5).await;
    deliveries(&app, &key, &id, "succeeded", 13).await;
    assert!(
        failed_attempts(&app, &key, &id).await > 0,
        "attempts failed while the server was down"
    );
    let client = async_nats::connect(NATS).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(&name).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 13);
    js.delete_stream(&name).await.unwrap();
}

/// The engine's rules hold for a broker as for HTTP: a FIFO NATS endpoint whose subject no
/// stream takes yet fails, trips the breaker (its deliveries parked in the ledger), is probed
/// after the cool-down, closes once the stream exists, and the stream then holds every message
/// once, in the order the orders were taken.
#[tokio::test]
async fn a_fifo_nats_endpoint_without_its_stream_trips_the_breaker_and_delivers_in_order_once_it_exists()
 {
    let _shared = NATS_SERVER.read().await;
    let app = TestApp::spawn(TestOptions {
        breaker_cooldown: "1s".into(),
        breaker_min_attempts: 4,
        ..Default::default()
    })
    .await;
    let key = account(&app).await;
    let name = format!("SY{}", Uuid::now_v7().simple());
    let e = app
        .create_endpoint_with(
            &key,
            json!({"kind": "nats", "event_types": ["order.created"], "fifo": true,
                   "retry_schedule": ["100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms"],
                   "config": {"url": NATS, "subject": format!("{name}.orders")}}),
        )
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    app.post_orders(&key, "fifo", 6, 1).await;

    eventually(Duration::from_secs(10), "the breaker to open", || async {
        let state: Option<String> =
            sqlx::query_scalar("SELECT breaker FROM dispatch_groups WHERE key = $1::uuid")
                .bind(&id)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        (state.as_deref() == Some("open")).then_some(())
    })
    .await;
    let v = app
        .partner_get(&key, &format!("/v1/webhook-endpoints/{id}"))
        .await;
    assert_eq!(v["circuit_state"], "open");
    let failed = attempts(&app, &key, &id).await;
    assert!(failed.len() >= 4, "{failed:?}");
    for a in &failed {
        assert_eq!(a["error_class"], "broker", "{a}");
        assert!(
            a["error_message"]
                .as_str()
                .unwrap()
                .contains("no stream found"),
            "{a}"
        );
    }
    let heads: HashSet<&str> = failed
        .iter()
        .map(|a| a["delivery_id"].as_str().unwrap())
        .collect();
    assert_eq!(heads.len(), 1, "FIFO: only the first delivery is attempted");

    let client = async_nats::connect(NATS).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = create_stream(&js, &name).await;
    deliveries(&app, &key, &id, "succeeded", 6).await;
    let v = app
        .partner_get(&key, &format!("/v1/webhook-endpoints/{id}"))
        .await;
    assert_eq!(v["circuit_state"], "closed");
    assert_eq!(stream.info().await.unwrap().state.messages, 6);
    let mut order = Vec::new();
    for seq in 1..=6 {
        let msg = stream.get_raw_message(seq).await.unwrap();
        let body: Value = serde_json::from_slice(&msg.payload).unwrap();
        order.push(body["data"]["external_id"].as_str().unwrap().to_owned());
    }
    let posted: Vec<String> = (0..6).map(|i| format!("fifo-{i}")).collect();
    assert_eq!(order, posted, "stored in the order the orders were taken");
    js.delete_stream(&name).await.unwrap();
}

/// Stops the machine's NATS server, runs `while_down`, and starts it again with the command
/// the machine starts it with (its JetStream store is on disk, so streams survive).
async fn restart_nats_server<F: Future<Output = ()>>(while_down: impl FnOnce() -> F) {
    let stopped = std::process::Command::new("pkill")
        .args(["-x", "nats-server"])
        .status()
        .unwrap();
    assert!(stopped.success(), "nats-server was running");
    eventually(
        Duration::from_secs(10),
        "the NATS server is down",
        || async {
            tokio::net::TcpStream::connect("127.0.0.1:4222")
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    while_down().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::process::Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/nats-server",
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/var/lib/nats-server",
            "-l",
            "/var/log/nats-server.log",
        ])
        .status()
        .unwrap();
    assert!(started.success(), "nats-server started again");
    eventually(
        Duration::from_secs(20),
        "the NATS server is back",
        || async {
            let client = async_nats::connect(NATS).await.ok()?;
            client.flush().await.ok()
        },
    )
    .await;
}

#[tokio::test]
async fn email_retries_a_4xx_fails_on_a_5xx_and_keeps_one_message_id() {
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "1s,1s,1s".into(),
        ..Default::default()
    })
    .await;
    let key = account(&app).await;
    let relay = SmtpServer::start(vec![451, 250]).await;
    let integration = |code: &str, url: String| {
        json!({"name": "Mail", "code": code, "type": "email", "provider": "smtp",
               "credentials": {"url": url}})
    };
    let r = app
        .partner_post(&key, "/v1/integrations", integration("mail", relay.url()))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let mail: Value = r.json().await.unwrap();
    let config = |integration: &Value| {
        json!({"integration_id": integration["id"], "from": "hub@example.com",
               "to": ["ops@example.com", "sales@example.com"],
               "subject": "Order {{ data.external_id }}",
               "text": "Order {{ data.external_id }} for {{ data.customer.name }}",
               "html": "<p>Order <b>{{ data.external_id }}</b> {{ data.notes }}</p>",
               "templates": {"order.cancelled": {"subject": "Cancelled: {{ data.external_id }}"}}})
    };
    let e = app
        .create_endpoint_with(
            &key,
            json!({"kind": "email", "event_types": ["order.created"],
            "config": config(&mail)}),
        )
        .await;
    assert_eq!(e["url"], "mailto:ops@example.com,sales@example.com");
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(app.post_order(&key, "PO-<7>").await.status(), 201);
    deliveries(&app, &key, &id, "succeeded", 1).await;
    let mails = relay.mails();
    assert_eq!(mails.len(), 2, "a 451, then accepted");
    assert_eq!(mails[0].reply, 451);
    assert_eq!(mails[1].header("subject").as_deref(), Some("Order PO-<7>"));
    assert_eq!(
        mails[1].header("message-id"),
        mails[0].header("message-id"),
        "one Message-ID"
    );
    assert!(mails[1].header("message-id").unwrap().starts_with("<msg_"));
    assert_eq!(mails[1].from, "<hub@example.com>");
    assert_eq!(mails[1].to, ["<ops@example.com>", "<sales@example.com>"]);
    assert!(
        mails[1].data.contains("Order PO-<7> for Grace Hopper"),
        "{}",
        mails[1].data
    );
    assert!(
        mails[1].data.contains("<b>PO-&lt;7&gt;</b>"),
        "HTML escaped: {}",
        mails[1].data
    );
    let a = attempts(&app, &key, &id).await;
    assert_eq!(a[0]["error_class"], "smtp_deferred");
    assert!(a[1]["response_body"].as_str().unwrap().starts_with("250"));

    // A 5xx is final: one attempt, the delivery failed, though the schedule had more.
    let refusing = SmtpServer::start(vec![550]).await;
    let r = app
        .partner_post(
            &key,
            "/v1/integrations",
            integration("refusing", refusing.url()),
        )
        .await;
    let bad: Value = r.json().await.unwrap();
    let e = app
        .create_endpoint_with(
            &key,
            json!({"kind": "email", "event_types": ["order.created"],
            "config": config(&bad)}),
        )
        .await;
    assert_eq!(app.post_order(&key, "PO-8").await.status(), 201);
    let failed = deliveries(&app, &key, e["id"].as_str().unwrap(), "failed", 1).await;
    assert_eq!(failed[0]["attempts"], 1);
    assert_eq!(refusing.mails().len(), 1);

    // The integration must speak SMTP.
    let r = app
        .partner_post(&key, "/v1/webhook-endpoints", json!({"kind": "email",
            "config": {"integration_id": Uuid::now_v7(), "from": "a@example.com", "to": ["b@example.com"],
                       "subject": "x", "text": "y"}}))
        .await;
    switchyard_tests::problem(r, 400, "parameter_invalid", Some("config.integration_id")).await;
    // Addresses the mailer could not send to are refused when saved, not failed on every
    // delivery.
    for to in [
        "ops@example.com.",
        "a@b@example.com",
        "a..b@example.com",
        "a@.",
        "a@-x.com",
    ] {
        let r = app
            .partner_post(
                &key,
                "/v1/webhook-endpoints",
                json!({"kind": "email",
                "config": {"integration_id": bad["id"], "from": "a@example.com", "to": [to],
                           "subject": "x", "text": "y"}}),
            )
            .await;
        switchyard_tests::problem(r, 400, "parameter_invalid", Some("config.to[0]")).await;
    }
}

#[tokio::test]
async fn email_goes_over_starttls_and_implicit_tls_and_never_falls_back_to_plain_text() {
    let certs = std::env::temp_dir().join(format!("switchyard-smtp-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&certs).unwrap();
    let ca = switchyard_tests::smtp::test_certificates(&certs);
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "1s".into(),
        args: vec![format!("--smtp-ca-file={}", ca.display())],
        ..Default::default()
    })
    .await;
    let key = account(&app).await;
    use switchyard_tests::smtp::Security;
    let starttls = SmtpServer::start_with(vec![250], Security::StartTls, Some(&certs)).await;
    let implicit = SmtpServer::start_with(vec![250], Security::Implicit, Some(&certs)).await;
    let plain = SmtpServer::start(vec![250]).await;
    let mut endpoints = Vec::new();
    for (code, url) in [
        ("starttls", format!("smtp://localhost:{}", starttls.port)),
        ("implicit", format!("smtps://localhost:{}", implicit.port)),
        ("no-tls-offered", format!("smtp://localhost:{}", plain.port)),
    ] {
        let r = app
            .partner_post(
                &key,
                "/v1/integrations",
                json!({"name": code, "code": code,
                "type": "email", "provider": "smtp", "credentials": {"url": url}}),
            )
            .await;
        let i: Value = r.json().await.unwrap();
        let e = app
            .create_endpoint_with(&key, json!({"kind": "email", "event_types": ["order.created"],
                "config": {"integration_id": i["id"], "from": "hub@example.com", "to": ["ops@example.com"],
                           "subject": "Order {{ data.external_id }}", "text": "hello"}}))
            .await;
        endpoints.push(e["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(app.post_order(&key, "PO-TLS").await.status(), 201);
    deliveries(&app, &key, &endpoints[0], "succeeded", 1).await;
    deliveries(&app, &key, &endpoints[1], "succeeded", 1).await;
    assert!(
        starttls.mails()[0].tls && implicit.mails()[0].tls,
        "both under TLS"
    );
    // STARTTLS is required unless the URL says otherwise: a relay without it gets nothing.
    deliveries(&app, &key, &endpoints[2], "failed", 1).await;
    assert!(plain.mails().is_empty());
    let a = attempts(&app, &key, &endpoints[2]).await;
    assert!(!a[0]["error_class"].is_null(), "{a:?}");
    let _ = std::fs::remove_dir_all(&certs);
}
