//! An SMTP server playing a mail relay (plain text, no auth): records every message's data
//! and answers the end of each message as scripted (`451`, then `250`, …).

use std::sync::{Arc, Mutex};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

/// A message as received (also those refused at the end of DATA).
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as sent, dot-stuffing undone.
    pub data: String,
    /// The reply given to it.
    pub reply: u16,
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

impl SmtpServer {
    /// Answers the n-th message with the n-th of `replies` (the last one repeats).
    pub async fn start(replies: Vec<u16>) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let shared = mails.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (mails, replies) = (shared.clone(), replies.clone());
                tokio::spawn(async move {
                    let _ = session(socket, mails, replies).await;
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

async fn session(
    socket: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
    replies: Vec<u16>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 test-relay ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let answer = if upper.starts_with("EHLO") {
            "250-test-relay\r\n250-8BITMIME\r\n250 SMTPUTF8".to_owned()
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
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push('\n');
            }
            let reply = {
                let mut mails = mails.lock().unwrap();
                let reply = replies[mails.len().min(replies.len() - 1)];
                mails.push(Mail {
                    from: from.clone(),
                    to: to.clone(),
                    data,
                    reply,
                });
                reply
            };
            match reply {
                250 => "250 2.0.0 queued as test".to_owned(),
                r if r >= 500 => format!("{r} 5.7.1 relaying denied"),
                r => format!("{r} 4.3.0 try again later"),
            }
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            "502 command not implemented".to_owned()
        };
        write.write_all(format!("{answer}\r\n").as_bytes()).await?;
    }
    Ok(())
}
