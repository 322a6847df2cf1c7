//! Broker destinations under TLS: RabbitMQ over `amqps` (a TLS terminator the test runs in
//! front of the machine's broker) and NATS over `tls://` (a `nats-server` with TLS the test
//! starts), with certificates of a test CA trusted through `--broker-ca-file`. A connection
//! goes to the address the egress rules checked and the certificate must carry the URL's
//! name: shown with `broker.invalid`, a name that never resolves (RFC 2606), so a client that
//! looked the name up again could not connect at all.

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    time::Duration,
};

use futures::StreamExt;
use lapin::{
    Connection, ConnectionProperties,
    options::{BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use serde_json::json;
use switchyard_destinations::{broker::BrokerAddress, nats, rabbitmq};
use switchyard_tests::{TestApp, TestOptions};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use crate::{
    brokers::RABBITMQ_SERVER,
    destinations::{account, deliveries},
};

/// A directory with a test CA and its certificate for `localhost` and `broker.invalid`.
fn certificates() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("switchyard-brokers-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = switchyard_tests::smtp::test_certificates(&dir);
    (dir, ca)
}

/// `address` as a broker URL's host names it: `host`, the connection going to 127.0.0.1.
fn address(scheme_and_credentials: &str, host: &str, port: u16) -> BrokerAddress {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    BrokerAddress {
        url: format!("{scheme_and_credentials}{addr}/%2f")
            .parse()
            .unwrap(),
        host: host.to_owned(),
        addr,
    }
}

/// An app trusting the CA `ca` for brokers, and a partner key of its.
async fn trusting(ca: &Path) -> (TestApp, String) {
    let app = TestApp::spawn(TestOptions {
        args: vec![format!("--broker-ca-file={}", ca.display())],
        ..Default::default()
    })
    .await;
    let key = account(&app).await;
    (app, key)
}

/// Accepts TLS with the test certificate and passes the bytes to the machine's RabbitMQ.
async fn amqps_terminator(certs: &Path) -> u16 {
    let acceptor = switchyard_tests::smtp::test_acceptor(certs);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut broker = TcpStream::connect("127.0.0.1:5672").await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn rabbitmq_over_amqps_reaches_the_checked_address_and_verifies_the_host_name() {
    let _shared = RABBITMQ_SERVER.read().await;
    let (certs, ca) = certificates();
    let port = amqps_terminator(&certs).await;
    let pem = std::fs::read_to_string(&ca).unwrap();

    // The name is only checked against the certificate, never looked up.
    let named = |host| address("amqps://guest:guest@", host, port);
    let conn = rabbitmq::connect(&named("broker.invalid"), Some(&pem))
        .await
        .expect("connected to the checked address, certificate for broker.invalid");
    conn.create_channel().await.unwrap();
    let _ = conn.close(200, "done".into()).await;
    let wrong = rabbitmq::connect(&named("other.invalid"), Some(&pem)).await;
    assert!(
        wrong.as_ref().is_err_and(|e| e.contains("certificate")),
        "a certificate for another name is refused: {:?}",
        wrong.map(|_| ())
    );
    let untrusted = rabbitmq::connect(&named("broker.invalid"), None).await;
    assert!(untrusted.is_err(), "the test CA is trusted only when given");

    // Through the engine: an `amqps` endpoint, the CA from --broker-ca-file.
    let (app, key) = trusting(&ca).await;
    let queue = format!("switchyard-test-{}", Uuid::now_v7().simple());
    let local = Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = local.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let e = app
        .create_endpoint_with(
            &key,
            json!({"kind": "rabbitmq", "event_types": ["order.created"],
            "config": {"url": url, "routing_key": queue}}),
        )
        .await;
    app.post_orders(&key, "amqps", 3, 3).await;
    deliveries(&app, &key, e["id"].as_str().unwrap(), "succeeded", 3).await;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("each message is in the queue")
            .unwrap()
            .unwrap();
    }
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&certs);
}

/// A `nats-server` with TLS (the test certificate) on a free port, stopped when dropped.
struct TlsNats {
    child: std::process::Child,
    port: u16,
}

impl TlsNats {
    async fn start(certs: &Path) -> TlsNats {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--tls"])
            .arg("--tlscert")
            .arg(certs.join("leaf.pem"))
            .arg("--tlskey")
            .arg(certs.join("leaf.key"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server runs");
        switchyard_tests::eventually(Duration::from_secs(10), "nats-server listens", || async {
            TcpStream::connect(("127.0.0.1", port)).await.ok()
        })
        .await;
        TlsNats { child, port }
    }
}

impl Drop for TlsNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn nats_over_tls_reaches_the_checked_address_and_verifies_the_host_name() {
    let (certs, ca) = certificates();
    let server = TlsNats::start(&certs).await;
    let pem = std::fs::read(&ca).unwrap();

    let named = |host| address("tls://", host, server.port);
    let timeout = Duration::from_secs(5);
    let client = nats::connect(&named("broker.invalid"), Some(&pem), timeout)
        .await
        .expect("connected to the checked address, certificate for broker.invalid");
    client.flush().await.unwrap();
    let wrong = nats::connect(&named("other.invalid"), Some(&pem), timeout).await;
    assert!(wrong.is_err(), "a certificate for another name is refused");
    let untrusted = nats::connect(&named("broker.invalid"), None, timeout).await;
    assert!(untrusted.is_err(), "the test CA is trusted only when given");

    // Through the engine: a `tls://` endpoint, the CA from --broker-ca-file.
    let (app, key) = trusting(&ca).await;
    let subject = format!("tls.{}", Uuid::now_v7().simple());
    let mut received = client.subscribe(subject.clone()).await.unwrap();
    client.flush().await.unwrap();
    let url = format!("tls://localhost:{}", server.port);
    let e = app
        .create_endpoint_with(
            &key,
            json!({"kind": "nats", "event_types": ["order.created"],
            "config": {"url": url, "subject": subject, "jetstream": false}}),
        )
        .await;
    app.post_orders(&key, "nats-tls", 3, 3).await;
    deliveries(&app, &key, e["id"].as_str().unwrap(), "succeeded", 3).await;
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(10), received.next())
            .await
            .expect("each message is published")
            .unwrap();
        assert!(m.headers.unwrap().get("webhook-id").is_some());
    }
    let _ = std::fs::remove_dir_all(&certs);
}
