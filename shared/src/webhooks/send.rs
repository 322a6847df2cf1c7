//! One HTTP attempt: sign, POST through the SSRF-guarded client, classify what happened.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Url;

use super::{
    credentials::{Credentials, REDACTED},
    delivery::Target,
    signing, webhook_id,
};
use crate::{
    net::{self, Egress, ResolveError},
    telemetry::trace::TraceParent,
};

/// Request timeout where neither the endpoint nor the caller sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Response bytes kept in the attempt log.
pub const RESPONSE_BODY_CAP: usize = 64 * 1024;
/// Largest response body read; a bigger one fails the attempt (`body_too_large`).
pub const RESPONSE_READ_LIMIT: usize = 1024 * 1024;
/// Response headers kept in the attempt log, and the longest value kept of each.
const RESPONSE_HEADERS_CAP: usize = 64;
const HEADER_VALUE_CAP: usize = 1024;
/// A connection failure this early gets one immediate second try within the same attempt
/// (a stale keep-alive connection or a restarting load balancer, not a down endpoint).
const RESET_RETRY_WINDOW: Duration = Duration::from_secs(1);

/// What happened on the wire.
#[derive(Clone, Debug, Default)]
pub struct AttemptResult {
    pub webhook_timestamp: i64,
    pub status_code: Option<u16>,
    /// `dns`, `connect`, `tls`, `timeout`, `http_status`, `blocked_address`, `circuit_open`
    /// or `body_too_large`, and the classes of other destination kinds (`attempts::Attempt`);
    /// `None` on success.
    pub error_class: Option<&'static str>,
    pub error_message: Option<String>,
    pub duration: Duration,
    /// Time to the response headers.
    pub ttfb: Option<Duration>,
    /// Time to open a new connection (TCP + TLS); `None` when a pooled one was reused.
    pub connect: Option<Duration>,
    pub remote_ip: Option<String>,
    /// Request headers as sent, secrets redacted.
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub response_body: Option<String>,
    pub response_size: Option<i64>,
    /// The endpoint's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
    /// A failure no retry can mend (an SMTP 5xx, a template that cannot render, a request
    /// the API refuses as malformed): the delivery fails now.
    pub permanent: bool,
}

impl AttemptResult {
    /// Only 2xx counts (Standard Webhooks); redirects are failures. Destinations that are not
    /// HTTP (brokers, SMTP) have no status code: no error class is their success.
    pub fn succeeded(&self) -> bool {
        self.error_class.is_none() && self.status_code.is_none_or(|s| (200..300).contains(&s))
    }

    /// 429, 502, 503, 504 and timeouts mean "slow down", not "broken".
    pub fn throttled(&self) -> bool {
        matches!(self.status_code, Some(429 | 502 | 503 | 504))
            || self.error_class == Some("timeout")
    }

    pub fn failed(
        ts: i64,
        started: Instant,
        class: &'static str,
        message: String,
        request_headers: Vec<(String, String)>,
    ) -> Self {
        AttemptResult {
            webhook_timestamp: ts,
            error_class: Some(class),
            error_message: Some(message),
            duration: started.elapsed(),
            request_headers,
            ..Default::default()
        }
    }
}

/// Signs and POSTs the message to the endpoint. Never fails: every failure is a classified
/// outcome to log and retry. Called through [`super::transport::HttpTransport`].
pub(super) async fn send(
    client: &reqwest::Client,
    target: &Target,
    credentials: &Credentials,
    egress: &Egress,
    timeout: Duration,
) -> AttemptResult {
    let started = Instant::now();
    let ts = Utc::now().timestamp();
    let msg_id = webhook_id(target.message_id);
    let payload = target.payload.as_deref().unwrap_or_default();
    let signature = signing::signature_header(
        &credentials.hmac_keys,
        credentials.ed25519.as_ref(),
        &msg_id,
        ts,
        payload.as_bytes(),
    );
    // Each attempt is a hop of the trace of the request that wrote the event.
    let trace = target
        .traceparent
        .as_deref()
        .and_then(TraceParent::parse)
        .map_or_else(|| TraceParent::of_message(target.message_id), |t| t.child());
    let mut sent_headers: Vec<(String, String)> = vec![
        ("content-type".into(), "application/json".into()),
        ("user-agent".into(), net::USER_AGENT.into()),
        ("webhook-id".into(), msg_id),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), signature),
        ("traceparent".into(), trace.to_string()),
    ];
    // What the attempt log shows: the same, with credential values redacted.
    let headers: Vec<(String, String)> = sent_headers
        .iter()
        .cloned()
        .chain(
            credentials
                .headers
                .iter()
                .map(|(k, _)| (k.clone(), REDACTED.to_owned())),
        )
        .collect();
    sent_headers.extend(credentials.headers.iter().cloned());
    let request = Outbound {
        method: reqwest::Method::POST,
        url: &target.url,
        headers: sent_headers,
        logged: headers,
        body: payload.as_bytes().to_vec(),
    };
    exchange(client, egress, request, ts, started, timeout).await
}

/// One HTTP request of an attempt, as sent and as logged.
pub struct Outbound<'a> {
    pub method: reqwest::Method,
    pub url: &'a str,
    /// Every header sent.
    pub headers: Vec<(String, String)>,
    /// The same as the attempt log shows them: secrets redacted.
    pub logged: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Makes one request through the SSRF-guarded client and classifies what came back (the
/// status, the headers, a capped body, `Retry-After`); a failure to connect within the first
/// second gets one immediate second try. Shared by every destination that speaks HTTP.
pub async fn exchange(
    client: &reqwest::Client,
    egress: &Egress,
    request: Outbound<'_>,
    ts: i64,
    started: Instant,
    timeout: Duration,
) -> AttemptResult {
    let Outbound {
        method,
        url,
        headers: sent_headers,
        logged: headers,
        body: payload,
    } = request;
    let url = match Url::parse(url) {
        Ok(u) => u,
        Err(e) => {
            let msg = format!("invalid URL: {e}");
            return AttemptResult::failed(ts, started, "blocked_address", msg, headers);
        }
    };
    if let Err(e) = net::check_url(&url, egress) {
        return AttemptResult::failed(ts, started, "blocked_address", e.to_string(), headers);
    }
    let build = || {
        let mut request = client.request(method.clone(), url.clone()).timeout(timeout);
        for (name, value) in &sent_headers {
            request = request.header(name, value);
        }
        request.body(payload.clone())
    };
    let (mut sent, mut connect) = net::timed(build().send()).await;
    let mut reset_note = None;
    if let Err(e) = &sent {
        let (class, message) = classify(e);
        if class == "connect" && started.elapsed() < RESET_RETRY_WINDOW {
            reset_note = Some(message);
            (sent, connect) = net::timed(build().send()).await;
        }
    }
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            let (class, mut message) = classify(&e);
            if let Some(first) = reset_note {
                message = format!("{message} (after an immediate retry of: {first})");
            }
            let mut r = AttemptResult::failed(ts, started, class, message, headers);
            r.connect = connect;
            return r;
        }
    };
    let ttfb = started.elapsed();
    let status = response.status().as_u16();
    let remote_ip = response.remote_addr().map(|a| a.ip().to_string());
    let response_headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .take(RESPONSE_HEADERS_CAP)
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes());
            let v: String = v.chars().take(HEADER_VALUE_CAP).collect();
            (k.as_str().to_owned(), v)
        })
        .collect();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, Utc::now()));
    let declared = response.content_length();
    let mut body = Vec::new();
    let mut seen: usize = 0;
    // The status decides the outcome; a body that breaks off only shortens the log.
    while seen <= RESPONSE_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = RESPONSE_BODY_CAP.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                seen += chunk.len();
            }
            Ok(None) | Err(_) => break,
        }
    }
    let too_large =
        seen > RESPONSE_READ_LIMIT || declared.is_some_and(|d| d > RESPONSE_READ_LIMIT as u64);
    // Any 2xx is a delivery, whatever size of body came with it (the log keeps its start).
    let (error_class, error_message) = if (200..300).contains(&status) {
        (None, None)
    } else if too_large {
        (
            Some("body_too_large"),
            Some(format!(
                "HTTP {status} with a response body over {} bytes",
                RESPONSE_READ_LIMIT
            )),
        )
    } else {
        (Some("http_status"), Some(format!("HTTP {status}")))
    };
    AttemptResult {
        webhook_timestamp: ts,
        status_code: Some(status),
        error_class,
        error_message,
        duration: started.elapsed(),
        ttfb: Some(ttfb),
        connect,
        remote_ip,
        request_headers: headers,
        response_headers,
        response_body: Some(String::from_utf8_lossy(&body).into_owned()),
        response_size: Some(declared.map_or(seen as i64, |d| d as i64)),
        retry_after,
        permanent: false,
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // An HTTP date: IMF-fixdate, or the obsolete RFC 850 and asctime forms that RFC 9110
    // §5.6.7 asks recipients to accept.
    let at = DateTime::parse_from_rfc2822(value)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(value, "%A, %d-%b-%y %H:%M:%S GMT")
                .map(|t| t.and_utc())
        })
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y")
                .map(|t| t.and_utc())
        })
        .ok()?;
    (at - now).to_std().ok()
}

/// Maps a transport error to an error class by walking its cause chain.
fn classify(e: &reqwest::Error) -> (&'static str, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<ResolveError>() {
            return match r {
                ResolveError::Blocked { .. } => ("blocked_address", r.to_string()),
                ResolveError::Lookup { .. } => ("dns", r.to_string()),
            };
        }
        let io_inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<rustls::Error>());
        if s.is::<rustls::Error>() || io_inner {
            return ("tls", error_chain(e));
        }
        source = s.source();
    }
    let text = error_chain(e);
    if e.is_timeout() {
        ("timeout", text)
    } else {
        // Refused, reset, closed before a response: the endpoint could not be talked to.
        ("connect", text)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        for obsolete in [
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
        ] {
            assert_eq!(
                parse_retry_after(obsolete, now),
                Some(Duration::from_secs(60)),
                "{obsolete}"
            );
        }
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            None
        );
    }
}
