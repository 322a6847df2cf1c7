//! Email over SMTP (lettre, tokio, rustls). The server is the integration's credential `url`:
//! `smtp://user:pass@host:587` (STARTTLS required), `smtps://user:pass@host:465` (implicit
//! TLS), `?tls=opportunistic` or `?tls=none` for relays on a trusted network. The host passes
//! the egress rules and the connection goes to the checked address (TLS still verifies the
//! name). A `5xx` answer fails the delivery (the server refuses the mail for good); a `4xx`
//! or a lost connection retries it. `Message-ID` is the same on every retry.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart, SinglePart, header::ContentType},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};
use switchyard_shared::{
    destinations::render::Email,
    integrations::smtp::{SmtpServer, TlsMode},
    webhooks::send::AttemptResult,
};

use crate::{Attempt, integrations::Integration};

/// How long a server's transport (and the address it was checked at) is kept.
const TTL: Duration = Duration::from_secs(300);

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// SMTP transports (each with its own connection pool) by server URL.
pub(crate) struct Pool {
    transports: Mutex<HashMap<String, (Instant, Transport)>>,
    /// PEM certificates of CAs trusted besides the public ones (`SWITCHYARD_SMTP_CA_FILE`).
    extra_roots: Option<Vec<u8>>,
}

impl Pool {
    pub(crate) fn new(extra_roots: Option<Vec<u8>>) -> Self {
        Pool {
            transports: Mutex::new(HashMap::new()),
            extra_roots,
        }
    }

    pub(crate) async fn send(
        &self,
        at: &Attempt<'_>,
        integration: &Integration,
        mail: Email,
    ) -> AttemptResult {
        let Some(url) = integration.credentials.get("url") else {
            return at.failed(
                "integration",
                format!("integration {} has no credential `url`", integration.id),
            );
        };
        let message = match build(&mail) {
            Ok(m) => m,
            Err(e) => {
                let mut r = at.failed("message", format!("the email cannot be built: {e}"));
                r.permanent = true;
                return r;
            }
        };
        let transport = match self.transport(at, url).await {
            Ok(t) => t,
            Err((class, e)) => return at.failed(class, e),
        };
        match tokio::time::timeout(at.timeout, transport.send(message)).await {
            Ok(Ok(response)) => at.delivered(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Ok(Err(e)) => {
                let class = if e.is_permanent() {
                    "smtp_rejected"
                } else if e.is_transient() {
                    "smtp_deferred"
                } else if e.is_timeout() {
                    "timeout"
                } else if e.is_tls() {
                    "tls"
                } else {
                    "connect"
                };
                let mut r = at.failed(class, format!("SMTP: {e}"));
                r.permanent = e.is_permanent();
                r
            }
            Err(_) => at.failed("timeout", "the SMTP server did not answer in time"),
        }
    }

    async fn transport(
        &self,
        at: &Attempt<'_>,
        raw: &str,
    ) -> Result<Transport, (&'static str, String)> {
        if let Some((made, t)) = self.transports.lock().expect("smtp lock").get(raw)
            && made.elapsed() < TTL
        {
            return Ok(t.clone());
        }
        let server = SmtpServer::parse(raw).map_err(|e| ("config", e))?;
        let addrs = at
            .egress
            .resolve(&server.host, server.port)
            .await
            .map_err(|e| match e {
                switchyard_shared::net::ResolveError::Blocked { .. } => {
                    ("blocked_address", e.to_string())
                }
                switchyard_shared::net::ResolveError::Lookup { .. } => ("dns", e.to_string()),
            })?;
        let ip = addrs
            .first()
            .ok_or(("dns", format!("`{}` has no address", server.host)))?
            .ip();
        let tls = |host: &str| {
            let mut params = TlsParameters::builder(host.to_owned());
            if let Some(pem) = &self.extra_roots {
                for cert in pem_certificates(pem) {
                    let cert = Certificate::from_pem(cert.as_bytes())
                        .map_err(|e| ("tls", format!("SWITCHYARD_SMTP_CA_FILE: {e}")))?;
                    params = params.add_root_certificate(cert);
                }
            }
            params
                .build()
                .map_err(|e| ("tls", format!("TLS setup: {e}")))
        };
        let mode = match server.tls {
            TlsMode::Implicit => Tls::Wrapper(tls(&server.host)?),
            TlsMode::Required => Tls::Required(tls(&server.host)?),
            TlsMode::Opportunistic => Tls::Opportunistic(tls(&server.host)?),
            TlsMode::None => Tls::None,
        };
        let mut builder = Transport::builder_dangerous(ip.to_string())
            .port(server.port)
            .tls(mode)
            .timeout(Some(at.timeout));
        if let Some((user, pass)) = server.credentials {
            builder = builder.credentials(Credentials::new(user, pass));
        }
        let transport = builder.build();
        let mut transports = self.transports.lock().expect("smtp lock");
        transports.retain(|_, (made, _)| made.elapsed() < TTL);
        transports.insert(raw.to_owned(), (Instant::now(), transport.clone()));
        Ok(transport)
    }
}

/// Each `BEGIN CERTIFICATE` block of a PEM file.
fn pem_certificates(pem: &[u8]) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    text.split_inclusive(END)
        .filter_map(|block| {
            let start = block.find("-----BEGIN CERTIFICATE-----")?;
            block.ends_with(END).then(|| block[start..].to_owned())
        })
        .collect()
}

fn build(mail: &Email) -> Result<Message, String> {
    let mailbox = |s: &str| s.parse::<Mailbox>().map_err(|e| format!("`{s}`: {e}"));
    let mut b = Message::builder()
        .from(mailbox(&mail.from)?)
        .subject(mail.subject.clone())
        .message_id(Some(mail.message_id.clone()));
    for to in &mail.to {
        b = b.to(mailbox(to)?);
    }
    if let Some(r) = &mail.reply_to {
        b = b.reply_to(mailbox(r)?);
    }
    let text = |t: &str| {
        SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(t.to_owned())
    };
    let html = |t: &str| {
        SinglePart::builder()
            .header(ContentType::TEXT_HTML)
            .body(t.to_owned())
    };
    let built = match (&mail.text, &mail.html) {
        (Some(t), Some(h)) => b.multipart(
            MultiPart::alternative()
                .singlepart(text(t))
                .singlepart(html(h)),
        ),
        (Some(t), None) => b.singlepart(text(t)),
        (None, Some(h)) => b.singlepart(html(h)),
        (None, None) => b.singlepart(text("")),
    };
    built.map_err(|e| e.to_string())
}
