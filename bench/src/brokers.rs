//! Broker destinations for the benchmark: endpoints of kind `rabbitmq` (one durable queue
//! each, on the default exchange) or `nats` (one JetStream stream for the run, a subject per
//! endpoint), and consumers that record every message in the [`Receiver`] the way the HTTP
//! receiver records a webhook, so the same report covers all kinds.

use anyhow::Context;
use futures::StreamExt;
use lapin::{
    Connection, ConnectionProperties,
    options::{BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use serde_json::{Value, json};

use crate::receiver::Receiver;

/// Where a broker endpoint's messages go.
pub struct Broker {
    pub kind: String,
    pub url: String,
    pub run: String,
}

impl Broker {
    fn queue(&self, i: usize) -> String {
        format!("bench-{}-{i}", self.run)
    }

    fn stream(&self) -> String {
        format!("BENCH{}", self.run)
    }

    /// The `kind` and `config` of endpoint `i`.
    pub fn endpoint(&self, i: usize, event_type: &str) -> Value {
        let config = match self.kind.as_str() {
            "rabbitmq" => json!({"url": self.url, "routing_key": self.queue(i)}),
            _ => json!({"url": self.url, "subject": format!("{}.{i}", self.stream())}),
        };
        json!({"kind": self.kind, "config": config, "event_types": [event_type]})
    }

    /// Declares the queues (or the stream) of `endpoints` endpoints and starts consuming them.
    pub async fn start(&self, endpoints: usize, receiver: &Receiver) -> anyhow::Result<()> {
        if self.kind == "rabbitmq" {
            let conn = Connection::connect(&self.url, ConnectionProperties::default()).await?;
            let channel = conn.create_channel().await?;
            for i in 0..endpoints {
                let durable = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                channel
                    .queue_declare(
                        self.queue(i).as_str().into(),
                        durable,
                        FieldTable::default(),
                    )
                    .await?;
                let no_ack = BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                };
                let mut consumer = channel
                    .basic_consume(
                        self.queue(i).as_str().into(),
                        format!("bench-{i}").as_str().into(),
                        no_ack,
                        FieldTable::default(),
                    )
                    .await?;
                let receiver = receiver.clone();
                tokio::spawn(async move {
                    while let Some(Ok(d)) = consumer.next().await {
                        let id = d
                            .properties
                            .message_id()
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default();
                        receiver.record(i, id, &d.data);
                    }
                });
            }
            // The connection lives as long as the process.
            std::mem::forget(conn);
            return Ok(());
        }
        let client = async_nats::connect(self.url.as_str()).await?;
        let js = async_nats::jetstream::new(client.clone());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: self.stream(),
            subjects: vec![format!("{}.>", self.stream())],
            ..Default::default()
        })
        .await
        .context("creating the stream")?;
        let mut sub = client.subscribe(format!("{}.>", self.stream())).await?;
        let receiver = receiver.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let i: usize = m
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default();
                receiver.record(i, id, &m.payload);
            }
        });
        Ok(())
    }

    /// Removes the queues (or the stream).
    pub async fn clean_up(&self, endpoints: usize) -> anyhow::Result<()> {
        if self.kind == "rabbitmq" {
            let conn = Connection::connect(&self.url, ConnectionProperties::default()).await?;
            let channel = conn.create_channel().await?;
            for i in 0..endpoints {
                channel
                    .queue_delete(self.queue(i).as_str().into(), QueueDeleteOptions::default())
                    .await?;
            }
            return Ok(());
        }
        let client = async_nats::connect(self.url.as_str()).await?;
        async_nats::jetstream::new(client)
            .delete_stream(self.stream())
            .await?;
        Ok(())
    }
}
