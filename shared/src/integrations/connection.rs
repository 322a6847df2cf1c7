//! Checking an integration's connection with its stored credentials, by the conventions the
//! README documents: HTTP providers get `GET base_url + config.health_path` (2xx = ok) with
//! Bearer, Basic or API-key authentication; SQL providers (`postgres`, `mysql`) connect with
//! `credentials.url` and run `SELECT 1`; SMTP relays (`smtp`) are connected to and must greet
//! with `220` (implicit TLS: connected). Every outbound address passes the egress (SSRF) rules.
//! Each check is logged and counted on the integration ([`record`]).

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    ConnectionStatus, Integration,
    smtp::{SmtpServer, TlsMode},
    sql,
    vault::Opened,
};
use crate::{
    error::Result,
    net::{self, Egress},
};

/// A connection check gives up after this long.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most characters of a response body kept in the log.
const LOGGED_BODY_CHARS: usize = 2048;

/// The outcome of a connection check.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct CheckResult {
    pub ok: bool,
    /// How long the check took, in milliseconds.
    pub latency_ms: i64,
    /// The HTTP status of the health request (HTTP providers).
    #[oai(nullable)]
    pub status_code: Option<u16>,
    /// Why it failed (credential values are never included).
    #[oai(nullable)]
    pub error: Option<String>,
    pub checked_at: DateTime<Utc>,
}

/// What a check did, for the integration's log.
pub struct Call {
    pub method: Option<&'static str>,
    pub target: Option<String>,
    pub response_body: Option<String>,
}

/// Makes the outbound calls of connection checks (guarded DNS, no redirects).
#[derive(Clone)]
pub struct Checker {
    client: reqwest::Client,
    egress: Egress,
}

impl Checker {
    pub fn new(egress: Egress) -> Self {
        Checker {
            client: net::outbound_client(egress.clone(), Duration::from_secs(5), CHECK_TIMEOUT),
            egress,
        }
    }

    /// Checks `integration` with its opened `credentials`.
    pub async fn check(
        &self,
        integration: &Integration,
        credentials: &Opened,
    ) -> (CheckResult, Call) {
        let started = Instant::now();
        let checked_at = Utc::now().trunc_subsecs(6);
        let outcome = match integration.provider.as_str() {
            "postgres" | "mysql" | "mssql" => {
                let r = tokio::time::timeout(
                    CHECK_TIMEOUT,
                    sql::check(&integration.provider, credentials.get("url"), &self.egress),
                )
                .await
                .unwrap_or_else(|_| Err(sql::Failure::timeout()));
                match r {
                    Ok(target) => Outcome::ok(None, Some(target)),
                    Err(f) => Outcome::failed(f.message, None, f.target),
                }
            }
            "smtp" => tokio::time::timeout(CHECK_TIMEOUT, self.smtp(credentials))
                .await
                .unwrap_or_else(|_| {
                    Outcome::failed("the SMTP server did not answer in time".into(), None, None)
                }),
            _ => self.http(integration, credentials).await,
        };
        let error = outcome.error.map(|e| redact(&e, credentials));
        let result = CheckResult {
            ok: error.is_none(),
            latency_ms: started.elapsed().as_millis() as i64,
            status_code: outcome.status_code,
            error,
            checked_at,
        };
        let call = Call {
            method: outcome.method,
            target: outcome.target,
            response_body: outcome.body.map(|b| redact(&b, credentials)),
        };
        (result, call)
    }

    /// An SMTP relay: its address checked against the egress rules, connected, and (unless
    /// it speaks TLS from the first byte) its `220` greeting read before a `QUIT`. No mail,
    /// no login: the first delivery checks the certificate and the credentials.
    async fn smtp(&self, credentials: &Opened) -> Outcome {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = match credentials.get("url").map(SmtpServer::parse) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Outcome::failed(e, None, None),
            None => {
                return Outcome::failed(
                    "the integration has no `url` credential".into(),
                    None,
                    None,
                );
            }
        };
        let target = Some(format!("{}:{}", server.host, server.port));
        let addr = match self.egress.resolve(&server.host, server.port).await {
            Ok(addrs) if !addrs.is_empty() => addrs[0],
            Ok(_) => {
                return Outcome::failed(format!("`{}` has no address", server.host), None, target);
            }
            Err(e) => return Outcome::failed(e.to_string(), None, target),
        };
        let mut stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => return Outcome::failed(format!("cannot connect: {e}"), None, target),
        };
        if server.tls == TlsMode::Implicit {
            return Outcome::ok(None, target);
        }
        let mut greeting = [0u8; 512];
        let n = stream.read(&mut greeting).await.unwrap_or(0);
        let line = String::from_utf8_lossy(&greeting[..n]);
        let line = line.lines().next().unwrap_or("").trim().to_owned();
        if line.starts_with("220") {
            let _ = stream.write_all(b"QUIT\r\n").await;
            Outcome::ok(Some(220), target)
        } else {
            let shown: String = line.chars().take(200).collect();
            Outcome::failed(format!("not an SMTP greeting: `{shown}`"), None, target)
        }
    }

    async fn http(&self, integration: &Integration, credentials: &Opened) -> Outcome {
        let Some(base) = integration.base_url.as_deref() else {
            return Outcome::failed(
                "the integration has no `base_url` to check".into(),
                None,
                None,
            );
        };
        let path = integration
            .config
            .get("health_path")
            .and_then(|v| v.as_str())
            .unwrap_or("/");
        let url = match join(base, path) {
            Ok(u) => u,
            Err(e) => return Outcome::failed(e, None, None),
        };
        let target = Some(url.path().to_owned());
        if let Err(e) = net::check_url(&url, &self.egress) {
            return Outcome::failed(format!("the address is not allowed: {e}"), None, target);
        }
        let mut req = self.client.get(url);
        let key_header = integration
            .config
            .get("api_key_header")
            .and_then(|v| v.as_str());
        for (name, value) in auth_headers(credentials, key_header) {
            req = req.header(name, value);
        }
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let why = if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    error_chain(&e)
                };
                let mut o = Outcome::failed(format!("request failed: {why}"), None, target);
                o.method = Some("GET");
                return o;
            }
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(LOGGED_BODY_CHARS).collect();
        let mut o = if status.is_success() {
            Outcome::ok(Some(status.as_u16()), target)
        } else {
            Outcome::failed(
                format!("the health path answered {status}"),
                Some(status.as_u16()),
                target,
            )
        };
        o.method = Some("GET");
        o.body = Some(body);
        o
    }
}

struct Outcome {
    error: Option<String>,
    status_code: Option<u16>,
    method: Option<&'static str>,
    target: Option<String>,
    body: Option<String>,
}

impl Outcome {
    fn ok(status_code: Option<u16>, target: Option<String>) -> Self {
        Outcome {
            error: None,
            status_code,
            method: None,
            target,
            body: None,
        }
    }

    fn failed(error: String, status_code: Option<u16>, target: Option<String>) -> Self {
        Outcome {
            error: Some(error),
            status_code,
            method: None,
            target,
            body: None,
        }
    }
}

/// The headers that authenticate calls to an HTTP integration, from its credentials:
/// `bearer_token` (Bearer), `username` + `password` (Basic), `api_key` (in the integration's
/// `api_key_header`, default `X-API-Key`).
pub fn auth_headers(credentials: &Opened, api_key_header: Option<&str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(token) = credentials.get("bearer_token") {
        out.push(("authorization".to_owned(), format!("Bearer {token}")));
    } else if let (Some(user), Some(pass)) =
        (credentials.get("username"), credentials.get("password"))
    {
        let basic = STANDARD.encode(format!("{user}:{pass}"));
        out.push(("authorization".to_owned(), format!("Basic {basic}")));
    }
    if let Some(key) = credentials.get("api_key") {
        let header = api_key_header.unwrap_or("X-API-Key");
        out.push((header.to_owned(), key.to_owned()));
    }
    out
}

/// `base` with `path` appended (a base path is kept: `https://h/api` + `/health` =
/// `https://h/api/health`).
fn join(base: &str, path: &str) -> std::result::Result<reqwest::Url, String> {
    let joined = format!("{}{}", base.trim_end_matches('/'), path);
    reqwest::Url::parse(&joined)
        .map_err(|e| format!("`base_url` + `health_path` is not a URL: {e}"))
}

/// The error and its causes, one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `text` with every credential value replaced.
pub fn redact(text: &str, credentials: &Opened) -> String {
    // What the auth headers carry beyond the raw values: Basic's `user:password` in base64
    // decodes straight back to the password.
    let basic = match (credentials.get("username"), credentials.get("password")) {
        (Some(user), Some(pass)) => Some(STANDARD.encode(format!("{user}:{pass}"))),
        _ => None,
    };
    let mut out = text.to_owned();
    for v in credentials
        .values()
        .chain(basic.as_deref())
        .filter(|v| v.len() >= 3)
    {
        out = out.replace(v, crate::webhooks::credentials::REDACTED);
    }
    out
}

/// A check's effect on the integration: whether its connection status changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: ConnectionStatus,
    pub to: ConnectionStatus,
}

/// Records a check: the log entry, the counters, the connection status. Returns the status
/// change, or `None` when the integration is gone.
pub async fn record(
    pool: &PgPool,
    integration_id: Uuid,
    kind: &str,
    result: &CheckResult,
    call: &Call,
) -> Result<Option<Transition>> {
    let to = if result.ok {
        ConnectionStatus::Connected
    } else {
        ConnectionStatus::Error
    };
    let row: Option<(ConnectionStatus,)> = sqlx::query_as(
        "WITH prev AS (
            SELECT id, tenant_id, connection_status FROM integrations
             WHERE id = $1 AND deleted_at IS NULL FOR UPDATE),
         upd AS (
            UPDATE integrations i
               SET connection_status = $2, last_health_check_at = $3, last_error = $4,
                   calls_total = calls_total + 1,
                   failures_total = failures_total + CASE WHEN $5 THEN 0 ELSE 1 END
              FROM prev WHERE i.id = prev.id RETURNING 1),
         log AS (
            INSERT INTO integration_logs (id, integration_id, tenant_id, direction, kind, method,
                                          target, status_code, ok, duration_ms, error,
                                          response_body, created_at)
            SELECT $6, id, tenant_id, 'outbound', $7, $8, $9, $10, $5, $11, $4, $12, $3
              FROM prev)
         SELECT connection_status FROM prev",
    )
    .bind(integration_id)
    .bind(to)
    .bind(result.checked_at)
    .bind(&result.error)
    .bind(result.ok)
    .bind(Uuid::now_v7())
    .bind(kind)
    .bind(call.method)
    .bind(&call.target)
    .bind(result.status_code.map(i32::from))
    .bind(result.latency_ms.min(i32::MAX as i64) as i32)
    .bind(&call.response_body)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(from,)| Transition { from, to }))
}
