//! NATS: a JetStream publish with `Nats-Msg-Id` = the `webhook-id`, so the stream stores a
//! message once however often it is retried within its duplicate window (2 minutes by
//! default), and the attempt succeeds only on the stream's ack; or, with `jetstream: false`, a
//! core NATS publish flushed to the server (nothing acknowledges storage there). The body is
//! the JSON a webhook carries, with `type`, `webhook-id` and `webhook-timestamp` headers.
//!
//! One client per server URL and process; the client reconnects by itself after a server
//! restart, and an attempt made meanwhile times out and is retried. Connections go to the
//! address the egress rules checked ([`crate::broker`]).

use std::time::Duration;

use async_nats::{Client, ConnectOptions, HeaderMap, jetstream};
use switchyard_shared::webhooks::send::AttemptResult;

use crate::{
    Attempt,
    broker::{BrokerAddress, IDLE, Slots, pinned_tls},
};

/// A message to publish.
pub(crate) struct Publish {
    pub subject: String,
    pub msg_id: String,
    pub jetstream: bool,
    pub event_type: String,
    pub body: Vec<u8>,
}

/// Clients by server URL.
pub(crate) struct Pool {
    slots: Slots<Client>,
    /// PEM certificates of CAs trusted besides the public ones (`SWITCHYARD_BROKER_CA_FILE`).
    extra_roots: Option<Vec<u8>>,
}

impl Pool {
    pub(crate) fn new(extra_roots: Option<Vec<u8>>) -> Pool {
        Pool {
            slots: Slots::new(IDLE),
            extra_roots,
        }
    }

    pub(crate) async fn send(&self, at: &Attempt<'_>, url: &str, p: Publish) -> AttemptResult {
        let client = match tokio::time::timeout(at.timeout, self.client(at, url)).await {
            Ok(Ok(c)) => c,
            Ok(Err((class, e))) => return at.failed(class, e),
            Err(_) => return at.failed("timeout", "connecting to the NATS server timed out"),
        };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", p.msg_id.as_str());
        headers.insert("type", p.event_type.as_str());
        headers.insert("webhook-id", p.msg_id.as_str());
        headers.insert("webhook-timestamp", at.ts.to_string().as_str());
        if !p.jetstream {
            let sent = async {
                client
                    .publish_with_headers(p.subject.clone(), headers, p.body.into())
                    .await
                    .map_err(|e| e.to_string())?;
                client.flush().await.map_err(|e| e.to_string())
            };
            return match tokio::time::timeout(at.timeout, sent).await {
                Ok(Ok(())) => at.delivered(format!("published to `{}` (core NATS)", p.subject)),
                Ok(Err(e)) => at.failed("broker", format!("publish failed: {e}")),
                Err(_) => at.failed(
                    "timeout",
                    "the NATS server did not take the message in time",
                ),
            };
        }
        let js = jetstream::new(client);
        let acked = async {
            js.publish_with_headers(p.subject.clone(), headers, p.body.into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(at.timeout, acked).await {
            Ok(Ok(ack)) => at.delivered(
                serde_json::json!({
                    "stream": ack.stream,
                    "seq": ack.sequence,
                    "duplicate": ack.duplicate,
                })
                .to_string(),
            ),
            // `no responders`: no stream takes the subject (yet).
            Ok(Err(e)) => at.failed(
                "broker",
                format!("JetStream publish to `{}` failed: {e}", p.subject),
            ),
            Err(_) => at.failed("timeout", "JetStream did not acknowledge in time"),
        }
    }

    async fn client(&self, at: &Attempt<'_>, url: &str) -> Result<Client, (&'static str, String)> {
        let slot = self.slots.get(url, |client| {
            // Closes the connection once what was published is flushed.
            tokio::spawn(async move { client.drain().await });
        });
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            // Reconnecting by itself, or given up: a new client to a freshly checked address.
            if c.connection_state() == async_nats::connection::State::Connected {
                return Ok(c.clone());
            }
            *slot = None;
        }
        let address = BrokerAddress::resolve(url, at.egress).await?;
        let client = connect(&address, self.extra_roots.as_deref(), at.timeout)
            .await
            .map_err(|e| ("connect", format!("cannot connect to the NATS server: {e}")))?;
        *slot = Some(client.clone());
        Ok(client)
    }
}

/// Connects to `address.addr` only: servers a NATS server announces are not followed (they
/// have not passed the egress rules), and a client that cannot reconnect is replaced. TLS —
/// `tls://`, or a server that requires it — verifies the certificate against `address.host`,
/// trusting the system's roots and `extra_roots` (PEM).
pub async fn connect(
    address: &BrokerAddress,
    extra_roots: Option<&[u8]>,
    timeout: Duration,
) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .connection_timeout(timeout)
        .ignore_discovered_servers()
        .retain_servers_order()
        .max_reconnects(Some(3))
        .name("switchyard")
        .tls_client_config(pinned_tls(&address.host, extra_roots)?);
    if address.url.scheme() == "tls" {
        options = options.require_tls(true);
    }
    options
        .connect(address.url.as_str())
        .await
        .map_err(|e| e.to_string())
}
