//! An SMTP integration's server, from its credential `url`: `smtp://user:pass@host:587`
//! (STARTTLS required), `smtps://user:pass@host:465` (implicit TLS), `?tls=opportunistic` or
//! `?tls=none` for relays on a trusted network. Read when the integration is saved (a URL the
//! email destination could not use is refused then), by its health check and by the email
//! transport.

use crate::{
    error::{Error, Result},
    net::{self, Egress},
};

/// The credential an SMTP integration keeps its server in.
const PARAM: &str = "credentials.url";

/// Vets the server URL of an SMTP integration being saved: one the email destination can use,
/// whose host the egress rules permit as far as DNS answers now (every connection checks it
/// again). Errors never echo the URL: it holds the relay's password.
pub async fn vet(raw: Option<&str>, egress: &Egress) -> Result<()> {
    let invalid = |detail: String| Error::invalid("parameter_invalid", PARAM, detail);
    let raw = raw.ok_or_else(|| invalid(format!("an `smtp` integration needs `{PARAM}`.")))?;
    let server = SmtpServer::parse(raw).map_err(|e| invalid(format!("`{PARAM}`: {e}.")))?;
    net::vet_host(&server.host, server.port, egress, PARAM).await
}

/// How the connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    Implicit,
    Required,
    Opportunistic,
    None,
}

/// An SMTP server URL.
#[derive(Debug)]
pub struct SmtpServer {
    /// As written (the name its certificate must carry), without brackets.
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// User and password, percent-decoded.
    pub credentials: Option<(String, String)>,
}

impl SmtpServer {
    pub fn parse(raw: &str) -> Result<SmtpServer, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("the SMTP URL is not valid: {e}"))?;
        let (tls, port) = match url.scheme() {
            "smtps" => (TlsMode::Implicit, 465),
            "smtp" => {
                let asked = url
                    .query_pairs()
                    .find(|(k, _)| k == "tls")
                    .map(|(_, v)| v.into_owned());
                let mode = match asked.as_deref() {
                    None | Some("required") => TlsMode::Required,
                    Some("opportunistic") => TlsMode::Opportunistic,
                    Some("none") => TlsMode::None,
                    Some(other) => {
                        return Err(format!(
                            "`tls={other}` is not required, opportunistic or none"
                        ));
                    }
                };
                (mode, 587)
            }
            other => return Err(format!("`{other}://` is not smtp:// or smtps://")),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the SMTP URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let decode = |s: &str| percent_decode(s);
        let credentials = (!url.username().is_empty()).then(|| {
            (
                decode(url.username()),
                decode(url.password().unwrap_or_default()),
            )
        });
        Ok(SmtpServer {
            host,
            port: url.port().unwrap_or(port),
            tls,
            credentials,
        })
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_tls_and_default_ports() {
        let s = SmtpServer::parse("smtp://user%40x:p%2Bw+d@mail.example.com").unwrap();
        assert_eq!((s.port, s.tls), (587, TlsMode::Required));
        assert_eq!(s.credentials, Some(("user@x".into(), "p+w+d".into())));
        let s = SmtpServer::parse("smtps://mail.example.com").unwrap();
        assert_eq!(
            (s.port, s.tls, s.credentials),
            (465, TlsMode::Implicit, None)
        );
        let s = SmtpServer::parse("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!((s.port, s.tls), (2525, TlsMode::None));
        assert!(SmtpServer::parse("smtp://h?tls=maybe").is_err());
        assert!(SmtpServer::parse("http://h").is_err());
    }
}
