//! The transports of every destination kind behind the delivery engine's one boundary
//! ([`Transport`]): signed webhooks (`switchyard_shared::webhooks::transport`), and here Slack,
//! Discord, templated HTTP actions, email over SMTP, RabbitMQ and NATS. Each renders what it
//! sends with `switchyard_shared::destinations::render` (the same code the preview runs) and
//! turns what happened into an [`AttemptResult`] for the engine to log and decide on: the
//! ledger, retries, caps, breaker, replay and FIFO do not know which kind they move.
//! Adding a kind: its settings in `shared::destinations`, a module here, one arm in
//! [`Destinations::send_other`] (README, "Destinations").

pub mod broker;
mod discord;
mod email;
mod http;
mod http_action;
mod integrations;
pub mod nats;
pub mod rabbitmq;
mod slack;

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::json;
use sqlx::PgPool;
use switchyard_shared::{
    config::CommonConfig,
    crypto::Keyring,
    destinations::{
        DestinationKind, Settings,
        render::{self, Delivery, Rendered},
    },
    net::Egress,
    telemetry::otlp,
    webhooks::{
        credentials::Credentials,
        delivery::Target,
        scrub,
        send::AttemptResult,
        transport::{HttpTransport, Transport, attempt_span},
        webhook_id,
    },
};

pub use integrations::Integrations;

/// Every destination kind, as one [`Transport`]: chosen per attempt by the endpoint's kind.
/// Broker and SMTP connections are pooled for the life of the process and opened again after
/// a failure.
pub struct Destinations {
    http: HttpTransport,
    integrations: Integrations,
    /// Slack's Web API (`https://slack.com/api`; a test points it elsewhere).
    slack_api: String,
    amqp: rabbitmq::Pool,
    nats: nats::Pool,
    smtp: email::Pool,
}

impl Destinations {
    /// `config` gives Slack's Web API address and the extra CAs SMTP and broker TLS trust.
    pub fn new(http: HttpTransport, pool: PgPool, keyring: Keyring, config: &CommonConfig) -> Self {
        let broker_roots = config.broker_ca_file.as_ref().map(|p| p.0.clone());
        Destinations {
            integrations: Integrations::new(pool, keyring),
            slack_api: config.slack_api_url.trim_end_matches('/').to_owned(),
            amqp: rabbitmq::Pool::new(broker_roots.clone()),
            nats: nats::Pool::new(broker_roots),
            smtp: email::Pool::new(config.smtp_ca_file.as_ref().map(|p| p.0.clone())),
            http,
        }
    }

    /// The egress rules every destination's address passes.
    pub fn egress(&self) -> &Egress {
        self.http.egress()
    }

    async fn send_other(
        &self,
        target: &Target,
        credentials: &Credentials,
        timeout: Duration,
    ) -> AttemptResult {
        let started = Instant::now();
        let ts = chrono::Utc::now().timestamp();
        let failed = |class: &'static str, message: String, permanent: bool| {
            let mut r = AttemptResult::failed(ts, started, class, message, Vec::new());
            r.permanent = permanent;
            r
        };
        let settings = match Settings::from_stored(
            target.kind,
            target.config.as_ref().map(|c| &c.0),
            &credentials.config,
        ) {
            Ok(s) => s,
            Err(e) => return failed("config", format!("the stored settings: {e}"), true),
        };
        let msg_id = webhook_id(target.message_id);
        let delivery = Delivery {
            payload: target.payload.as_deref().unwrap_or_default(),
            webhook_id: &msg_id,
            delivery_id: target.delivery_id,
            endpoint_id: target.endpoint_id,
            description: target.description.as_deref(),
        };
        let rendered = match render::render(&settings, &delivery) {
            Ok(r) => r,
            // The same template fails the same way on every retry.
            Err(e) => return failed("template", e.to_string(), true),
        };
        let at = Attempt {
            ts,
            started,
            timeout,
            egress: self.http.egress(),
            client: self.http.client(),
        };
        let body = delivery.payload.as_bytes().to_vec();
        let mut result = match (&settings, rendered) {
            (Settings::Slack(c), Rendered::Slack { body, .. }) => {
                slack::send(&at, &self.slack_api, c, body).await
            }
            (Settings::Discord(c), Rendered::Discord { body }) => {
                discord::send(&at, &c.webhook_url, body).await
            }
            (
                Settings::HttpAction(c),
                Rendered::HttpAction {
                    method,
                    path,
                    headers,
                    idempotency_key,
                    body,
                },
            ) => {
                let action = http_action::Action {
                    method,
                    path,
                    headers,
                    idempotency_key,
                    body,
                };
                match self.integrations.get(c.integration_id, target).await {
                    Ok(i) => http_action::send(&at, &i, action).await,
                    Err(e) => failed("integration", e, false),
                }
            }
            (Settings::Email(c), Rendered::Email(mail)) => {
                match self.integrations.get(c.integration_id, target).await {
                    Ok(i) => self.smtp.send(&at, &i, mail).await,
                    Err(e) => failed("integration", e, false),
                }
            }
            (
                Settings::Rabbitmq(c),
                Rendered::Rabbitmq {
                    exchange,
                    routing_key,
                    message_id,
                    event_type,
                    ..
                },
            ) => {
                let publish = rabbitmq::Publish {
                    exchange,
                    routing_key,
                    message_id,
                    event_type,
                    body,
                };
                self.amqp.send(&at, &c.url, publish).await
            }
            (
                Settings::Nats(c),
                Rendered::Nats {
                    subject,
                    msg_id,
                    jetstream,
                    event_type,
                    ..
                },
            ) => {
                let publish = nats::Publish {
                    subject,
                    msg_id,
                    jetstream,
                    event_type,
                    body,
                };
                self.nats.send(&at, &c.url, publish).await
            }
            (s, _) => failed(
                "config",
                format!("no transport for `{}`", s.kind().as_str()),
                true,
            ),
        };
        // Secrets never reach the attempt log, whatever a server echoed back.
        scrub::for_log(&mut result, credentials);
        if otlp::enabled() {
            let kind = target.kind.as_str();
            let start = std::time::SystemTime::now() - result.duration;
            let attributes = vec![("switchyard.destination_kind", json!(kind))];
            let span = attempt_span(target, &result, start, format!("send {kind}"), attributes);
            otlp::record(span);
        }
        result
    }
}

/// What every transport gets for one attempt.
pub(crate) struct Attempt<'a> {
    /// The `webhook-timestamp` of the attempt (seconds).
    pub ts: i64,
    pub started: Instant,
    pub timeout: Duration,
    pub egress: &'a Egress,
    /// The SSRF-guarded HTTP client.
    pub client: &'a reqwest::Client,
}

impl Attempt<'_> {
    /// A failed attempt of class `class`.
    pub fn failed(&self, class: &'static str, message: impl Into<String>) -> AttemptResult {
        AttemptResult::failed(self.ts, self.started, class, message.into(), Vec::new())
    }

    /// A succeeded attempt with the server's answer for the log.
    pub fn delivered(&self, answer: String) -> AttemptResult {
        AttemptResult {
            webhook_timestamp: self.ts,
            duration: self.started.elapsed(),
            response_size: Some(answer.len() as i64),
            response_body: Some(answer),
            ..Default::default()
        }
    }
}

impl Transport for Destinations {
    fn send<'a>(
        &'a self,
        target: &'a Target,
        credentials: &'a Credentials,
        timeout: Duration,
    ) -> BoxFuture<'a, AttemptResult> {
        match target.kind {
            DestinationKind::Http => self.http.send(target, credentials, timeout),
            _ => Box::pin(self.send_other(target, credentials, timeout)),
        }
    }
}
