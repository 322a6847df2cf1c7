//! RabbitMQ (AMQP 0.9.1): a persistent message (`delivery_mode` 2) whose body is the JSON a
//! webhook carries, `message_id` = the `webhook-id`, `type` and a `webhook-timestamp` header,
//! published `mandatory` on a channel in confirm mode. The attempt succeeds only on the
//! broker's ack of a routed message: a nack, a return (no queue bound to the routing key) or a
//! lost connection fails it, and the engine retries with the same `message_id`.
//!
//! One connection and one confirm channel per broker URL and process, shared by concurrent
//! attempts (confirms are matched per publish); a failure drops them and the next attempt
//! connects again, so a broker restart costs the attempts in flight a retry, nothing more.
//! Connections go to the address the egress rules checked ([`crate::broker`]).

use std::{sync::Arc, time::Duration};

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    tcp::{AsyncTcpStream, TLSConfig},
    types::{AMQPValue, FieldTable},
    uri::{AMQPScheme, AMQPUri},
};
use switchyard_shared::webhooks::send::AttemptResult;

use crate::{
    Attempt,
    broker::{BrokerAddress, IDLE, Slots},
};

/// A message to publish.
pub(crate) struct Publish {
    pub exchange: String,
    pub routing_key: String,
    pub message_id: String,
    pub event_type: String,
    pub body: Vec<u8>,
}

struct Link {
    connection: Connection,
    channel: Channel,
}

/// Connections by broker URL.
pub(crate) struct Pool {
    slots: Slots<Arc<Link>>,
    /// PEM certificates of CAs trusted besides the public ones (`SWITCHYARD_BROKER_CA_FILE`).
    extra_roots: Option<String>,
}

impl Pool {
    pub(crate) fn new(extra_roots: Option<Vec<u8>>) -> Pool {
        Pool {
            slots: Slots::new(IDLE),
            extra_roots: extra_roots.map(|pem| String::from_utf8_lossy(&pem).into_owned()),
        }
    }

    pub(crate) async fn send(&self, at: &Attempt<'_>, url: &str, p: Publish) -> AttemptResult {
        let link = match tokio::time::timeout(at.timeout, self.link(at, url)).await {
            Ok(Ok(link)) => link,
            Ok(Err((class, e))) => return at.failed(class, e),
            Err(_) => return at.failed("timeout", "connecting to the broker timed out"),
        };
        let mut headers = FieldTable::default();
        headers.insert(
            "type".into(),
            AMQPValue::LongString(p.event_type.as_str().into()),
        );
        headers.insert(
            "webhook-id".into(),
            AMQPValue::LongString(p.message_id.as_str().into()),
        );
        headers.insert("webhook-timestamp".into(), AMQPValue::LongLongInt(at.ts));
        let properties = BasicProperties::default()
            .with_message_id(p.message_id.as_str().into())
            .with_type(p.event_type.as_str().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_timestamp(at.ts.max(0) as u64)
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let publish = async {
            link.channel
                .basic_publish(
                    p.exchange.as_str().into(),
                    p.routing_key.as_str().into(),
                    options,
                    &p.body,
                    properties,
                )
                .await?
                .await
        };
        let confirmation = match tokio::time::timeout(at.timeout, publish).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.drop_link(url, &link);
                return at.failed("broker", format!("publish failed: {e}"));
            }
            Err(_) => {
                // The confirm may still come; the retry carries the same message_id.
                self.drop_link(url, &link);
                return at.failed("timeout", "the broker did not confirm in time");
            }
        };
        let target = format!("exchange `{}`, routing key `{}`", p.exchange, p.routing_key);
        match confirmation {
            Confirmation::Ack(None) => at.delivered(format!("ack: {target}")),
            Confirmation::Ack(Some(returned)) => at.failed(
                "unroutable",
                format!(
                    "returned unroutable ({} {}): no queue is bound for {target}",
                    returned.reply_code, returned.reply_text
                ),
            ),
            Confirmation::Nack(_) => at.failed(
                "broker",
                format!("nack: the broker did not store the message for {target}"),
            ),
            Confirmation::NotRequested => at.failed("broker", "publisher confirms are off"),
        }
    }

    /// The live connection to `url`, opened (after an egress check of the host) if needed.
    async fn link(&self, at: &Attempt<'_>, url: &str) -> Result<Arc<Link>, (&'static str, String)> {
        let slot = self.slot(url);
        let mut slot = slot.lock().await;
        if let Some(link) = slot.as_ref()
            && link.channel.status().connected()
        {
            return Ok(link.clone());
        }
        *slot = None;
        let address = BrokerAddress::resolve(url, at.egress).await?;
        let connection = connect(&address, self.extra_roots.as_deref())
            .await
            .map_err(|e| ("connect", format!("cannot connect to the broker: {e}")))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| ("connect", format!("cannot open a channel: {e}")))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| ("connect", format!("cannot turn on publisher confirms: {e}")))?;
        let link = Arc::new(Link {
            connection,
            channel,
        });
        *slot = Some(link.clone());
        Ok(link)
    }

    fn slot(&self, url: &str) -> crate::broker::Slot<Arc<Link>> {
        self.slots.get(url, |link| {
            tokio::spawn(close(link, "idle"));
        })
    }

    /// Forgets a broken link and closes it, in the background: the attempt that found it broken
    /// does not wait for a slot another attempt may hold while connecting.
    fn drop_link(&self, url: &str, link: &Arc<Link>) {
        let (slot, link) = (self.slot(url), link.clone());
        tokio::spawn(async move {
            {
                let mut slot = slot.lock().await;
                if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, &link)) {
                    *slot = None;
                }
            }
            close(link, "reconnecting").await;
        });
    }
}

/// Closes the connection (if the broker still hears it), which closes its channel too.
async fn close(link: Arc<Link>, reason: &str) {
    let close = link.connection.close(200, reason.into());
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
}

/// Opens an AMQP connection to `address.addr` (also when it reconnects); `amqps` verifies the
/// broker's certificate against `address.host`, trusting the public roots and `extra_roots`.
pub async fn connect(
    address: &BrokerAddress,
    extra_roots: Option<&str>,
) -> Result<Connection, String> {
    let uri: AMQPUri = address.url.as_str().parse()?;
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    let (addr, host) = (address.addr, address.host.clone());
    let roots = extra_roots.map(str::to_owned);
    Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let stream = AsyncTcpStream::connect(&runtime, addr).await?;
            let stream = match uri.scheme {
                AMQPScheme::AMQP => stream,
                AMQPScheme::AMQPS => {
                    let tls = TLSConfig {
                        identity: None,
                        cert_chain: roots.as_deref(),
                    };
                    stream.into_tls(&host, tls).await?
                }
            };
            Ok(stream)
        },
        ConnectionProperties::default(),
    )
    .await
    .map_err(|e| e.to_string())
}
