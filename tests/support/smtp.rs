//! An SMTP server playing a mail relay (no auth; plain, STARTTLS or implicit TLS with a
//! certificate of a test CA made by `openssl`): records every message's data and answers the
//! end of each message as scripted (`451`, then `250`, …).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};

/// How the relay speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    Plain,
    /// Offers `STARTTLS`.
    StartTls,
    /// TLS from the first byte (`smtps`).
    Implicit,
}

/// A message as received (also those refused at the end of DATA).
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as sent, dot-stuffing undone.
    pub data: String,
    /// The reply given to it.
    pub reply: u16,
    /// Whether the session was under TLS.
    pub tls: bool,
}

impl Mail {
    /// A header's value (the first line of it).
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .lines()
            .take_while(|l| !l.is_empty())
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    }
}

pub struct SmtpServer {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

/// A test CA and a certificate it issued for `localhost` and `broker.invalid` (a name that
/// never resolves), in `dir`; returns the CA's PEM file.
pub fn test_certificates(dir: &Path) -> PathBuf {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Switchyard test CA",
            "-days",
            "2",
        ],
    ]
    .concat());
    run(&[
        &["req"],
        &ec[..],
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,DNS:broker.invalid\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    dir.join("ca.pem")
}

/// A TLS server configuration with the certificate [`test_certificates`] made in `dir`.
pub fn test_acceptor(dir: &Path) -> TlsAcceptor {
    switchyard_shared::install_crypto_provider();
    let chain = vec![CertificateDer::from_pem_file(dir.join("leaf.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

impl SmtpServer {
    /// Answers the n-th message with the n-th of `replies` (the last one repeats).
    pub async fn start(replies: Vec<u16>) -> SmtpServer {
        Self::start_with(replies, Security::Plain, None).await
    }

    /// The same, speaking `security` with the `localhost` certificate made in `certs` by
    /// [`test_certificates`].
    pub async fn start_with(
        replies: Vec<u16>,
        security: Security,
        certs: Option<&Path>,
    ) -> SmtpServer {
        let acceptor = certs.map(test_acceptor);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let shared = mails.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (mails, replies, acceptor) =
                    (shared.clone(), replies.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let s = Session { mails, replies };
                    let _ = match (security, acceptor) {
                        (Security::Implicit, Some(a)) => match a.accept(socket).await {
                            Ok(tls) => s.run(tls, true, false, true).await.map(|_| ()),
                            Err(e) => Err(e),
                        },
                        (Security::StartTls, Some(a)) => {
                            match s.run(socket, false, true, true).await {
                                Ok(Some(plain)) => match a.accept(plain).await {
                                    Ok(tls) => s.run(tls, true, false, false).await.map(|_| ()),
                                    Err(e) => Err(e),
                                },
                                other => other.map(|_| ()),
                            }
                        }
                        _ => s.run(socket, false, false, true).await.map(|_| ()),
                    };
                });
            }
        });
        SmtpServer { port, mails }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

struct Session {
    mails: Arc<Mutex<Vec<Mail>>>,
    replies: Vec<u16>,
}

impl Session {
    /// Speaks SMTP on `stream` until `QUIT`; on `STARTTLS` (when offered) answers `220` and
    /// hands the stream back for the handshake.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        tls: bool,
        offer_starttls: bool,
        greet: bool,
    ) -> std::io::Result<Option<S>> {
        let mut lines = BufReader::new(stream);
        if greet {
            lines
                .get_mut()
                .write_all(b"220 test-relay ESMTP\r\n")
                .await?;
        }
        let (mut from, mut to) = (String::new(), Vec::new());
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(None);
            }
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            let upper = line.to_ascii_uppercase();
            let answer = if upper.starts_with("EHLO") {
                let starttls = if offer_starttls {
                    "250-STARTTLS\r\n"
                } else {
                    ""
                };
                format!("250-test-relay\r\n{starttls}250-8BITMIME\r\n250 SMTPUTF8")
            } else if upper == "STARTTLS" && offer_starttls {
                lines
                    .get_mut()
                    .write_all(b"220 2.0.0 ready to start TLS\r\n")
                    .await?;
                return Ok(Some(lines.into_inner()));
            } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
                "250 ok".to_owned()
            } else if upper.starts_with("MAIL FROM:") {
                from = line[10..].trim().to_owned();
                to.clear();
                "250 ok".to_owned()
            } else if upper.starts_with("RCPT TO:") {
                to.push(line[8..].trim().to_owned());
                "250 ok".to_owned()
            } else if upper.starts_with("RSET") {
                to.clear();
                "250 ok".to_owned()
            } else if upper == "DATA" {
                lines.get_mut().write_all(b"354 go ahead\r\n").await?;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if lines.read_line(&mut l).await? == 0 {
                        return Ok(None);
                    }
                    let l = l.trim_end_matches(['\r', '\n']);
                    if l == "." {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(l));
                    data.push('\n');
                }
                let reply = {
                    let mut mails = self.mails.lock().unwrap();
                    let reply = self.replies[mails.len().min(self.replies.len() - 1)];
                    mails.push(Mail {
                        from: from.clone(),
                        to: to.clone(),
                        data,
                        reply,
                        tls,
                    });
                    reply
                };
                match reply {
                    250 => "250 2.0.0 queued as test".to_owned(),
                    r if r >= 500 => format!("{r} 5.7.1 relaying denied"),
                    r => format!("{r} 4.3.0 try again later"),
                }
            } else if upper.starts_with("QUIT") {
                lines.get_mut().write_all(b"221 bye\r\n").await?;
                return Ok(None);
            } else {
                "502 command not implemented".to_owned()
            };
            lines
                .get_mut()
                .write_all(format!("{answer}\r\n").as_bytes())
                .await?;
        }
    }
}
