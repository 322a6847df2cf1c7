//! SQL connections of integrations (`postgres`, `mysql`, `mssql`), from `credentials.url`.
//!
//! MSSQL connections are encrypted (TLS through rustls, the server's certificate checked
//! against the system's roots for the URL's host name) unless the URL says `encrypt=false`
//! (then only the login is encrypted); `trust_server_certificate=true` accepts a self-signed
//! certificate.
//!
//! The URL is read here, not by the driver's own parser: drivers fill what a URL leaves out
//! from this process's environment and files (`PGPASSWORD`, `~/.pgpass`, `sslkey=` paths),
//! which must never reach a tenant's server. Only host, port, user, password, database and
//! the TLS mode are taken; the host must pass the egress rules, and the connection goes to the
//! vetted address (or, when the TLS mode verifies the host name, to the name just vetted).

use std::net::IpAddr;

use sqlx::{
    ConnectOptions, Connection,
    mysql::{MySqlConnectOptions, MySqlSslMode},
    postgres::{PgConnectOptions, PgSslMode},
};
use url::Url;

use crate::net::Egress;

/// Why a SQL connection failed, and where it was going (`host:port/database`).
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub target: Option<String>,
}

impl Failure {
    fn new(message: impl Into<String>, target: Option<&str>) -> Self {
        Failure {
            message: message.into(),
            target: target.map(str::to_owned),
        }
    }

    pub fn timeout() -> Self {
        Failure::new("the connection timed out", None)
    }
}

/// A parsed `credentials.url`.
#[derive(Debug)]
pub struct SqlUrl {
    pub provider: Provider,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub database: Option<String>,
    /// The TLS mode as written (`sslmode` / `ssl-mode` / `encrypt`), checked against the
    /// provider's modes.
    pub tls: Option<String>,
    /// MSSQL: accept the server's certificate without checking it.
    pub trust_server_certificate: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Postgres,
    MySql,
    MsSql,
}

impl SqlUrl {
    pub fn parse(provider: &str, raw: &str) -> Result<SqlUrl, String> {
        let provider = match provider {
            "postgres" => Provider::Postgres,
            "mysql" => Provider::MySql,
            "mssql" => Provider::MsSql,
            other => return Err(format!("`{other}` is not a SQL provider")),
        };
        let url = Url::parse(raw).map_err(|e| format!("`credentials.url` is not a URL: {e}"))?;
        let schemes: &[&str] = match provider {
            Provider::Postgres => &["postgres", "postgresql"],
            Provider::MySql => &["mysql", "mariadb"],
            Provider::MsSql => &["mssql", "sqlserver"],
        };
        if !schemes.contains(&url.scheme()) {
            return Err(format!(
                "`credentials.url` must start with {}://",
                schemes.join(":// or ")
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("`credentials.url` has no host (sockets are not allowed)".into()),
        };
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| "`credentials.url` is not valid UTF-8".to_owned())
        };
        let default_port = match provider {
            Provider::Postgres => 5432,
            Provider::MySql => 3306,
            Provider::MsSql => 1433,
        };
        let database = decode(url.path().trim_start_matches('/'))?;
        let mut tls = None;
        let mut trust_server_certificate = false;
        for (key, value) in url.query_pairs() {
            match (provider, key.as_ref()) {
                (Provider::Postgres, "sslmode") | (Provider::MySql, "ssl-mode" | "sslmode") => {
                    tls = Some(value.into_owned())
                }
                (Provider::MsSql, "encrypt") => match value.as_ref() {
                    "true" | "false" => tls = Some(value.into_owned()),
                    other => {
                        return Err(format!("`encrypt={other}` is not `true` or `false`"));
                    }
                },
                (Provider::MsSql, "trust_server_certificate") => {
                    trust_server_certificate = value == "true";
                }
                (_, other) => {
                    return Err(format!(
                        "`credentials.url` parameter `{other}` is not supported (only the TLS mode is)"
                    ));
                }
            }
        }
        let parsed = SqlUrl {
            provider,
            host,
            port: url.port().unwrap_or(default_port),
            username: decode(url.username())?,
            password: decode(url.password().unwrap_or(""))?,
            database: (!database.is_empty()).then_some(database),
            tls,
            trust_server_certificate,
        };
        parsed.pg_tls()?;
        parsed.mysql_tls()?;
        Ok(parsed)
    }

    /// `host:port/database`, for logs (no credentials).
    pub fn target(&self) -> String {
        format!(
            "{}:{}/{}",
            self.host,
            self.port,
            self.database.as_deref().unwrap_or("")
        )
    }

    fn pg_tls(&self) -> Result<PgSslMode, String> {
        match (self.provider, self.tls.as_deref()) {
            (Provider::Postgres, Some(m)) => m
                .parse()
                .map_err(|_| format!("`sslmode={m}` is not a Postgres TLS mode")),
            _ => Ok(PgSslMode::Prefer),
        }
    }

    fn mysql_tls(&self) -> Result<MySqlSslMode, String> {
        match (self.provider, self.tls.as_deref()) {
            (Provider::MySql, Some(m)) => m
                .parse()
                .map_err(|_| format!("`ssl-mode={m}` is not a MySQL TLS mode")),
            _ => Ok(MySqlSslMode::Preferred),
        }
    }

    /// Whether the TLS mode checks the server's name (then the name, not the address, is used).
    fn verifies_name(&self) -> bool {
        matches!(self.pg_tls(), Ok(PgSslMode::VerifyFull)) && self.provider == Provider::Postgres
            || matches!(self.mysql_tls(), Ok(MySqlSslMode::VerifyIdentity))
                && self.provider == Provider::MySql
    }

    /// The address to connect to, once the host passed the egress rules.
    pub async fn vet(&self, egress: &Egress) -> Result<String, String> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return if egress.permits(ip) {
                Ok(ip.to_string())
            } else {
                Err(format!(
                    "the address {ip} is not allowed (not a public address)"
                ))
            };
        }
        let addrs = egress
            .resolve(&self.host, self.port)
            .await
            .map_err(|e| e.to_string())?;
        let first = addrs
            .first()
            .ok_or_else(|| format!("`{}` does not resolve", self.host))?;
        Ok(if self.verifies_name() {
            self.host.clone()
        } else {
            first.ip().to_string()
        })
    }

    pub fn postgres_options(&self, host: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host(host)
            .port(self.port)
            .username(&self.username)
            .password(&self.password)
            .database(self.database.as_deref().unwrap_or(&self.username))
            .ssl_mode(self.pg_tls().unwrap_or(PgSslMode::Prefer))
            .application_name("switchyard")
            .disable_statement_logging()
    }

    pub fn mysql_options(&self, host: &str) -> MySqlConnectOptions {
        let mut o = MySqlConnectOptions::new()
            .host(host)
            .port(self.port)
            .username(&self.username)
            .password(&self.password)
            .ssl_mode(self.mysql_tls().unwrap_or(MySqlSslMode::Preferred))
            .disable_statement_logging();
        if let Some(db) = &self.database {
            o = o.database(db);
        }
        o
    }
}

/// An MSSQL client over TDS.
pub type MsSqlClient = tiberius::Client<tokio_util::compat::Compat<tokio::net::TcpStream>>;

impl SqlUrl {
    /// Connects to MSSQL at `addr` (the vetted address); TLS checks the URL's host name.
    pub async fn mssql_connect(&self, addr: &str) -> Result<MsSqlClient, String> {
        use tokio_util::compat::TokioAsyncWriteCompatExt;
        let mut config = tiberius::Config::new();
        config.host(&self.host);
        config.encryption(match self.tls.as_deref() {
            Some("false") => tiberius::EncryptionLevel::Off,
            _ => tiberius::EncryptionLevel::Required,
        });
        if self.trust_server_certificate {
            config.trust_cert();
        }
        config.port(self.port);
        config.authentication(tiberius::AuthMethod::sql_server(
            &self.username,
            &self.password,
        ));
        if let Some(db) = &self.database {
            config.database(db);
        }
        config.application_name("switchyard");
        let tcp = tokio::net::TcpStream::connect((addr, self.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        tiberius::Client::connect(config, tcp.compat_write())
            .await
            .map_err(|e| match e {
                tiberius::error::Error::Server(t) => format!("the server refused: {}", t.message()),
                other => format!("cannot connect: {other}"),
            })
    }
}

/// Connects with `url` (after the egress rules) and runs `SELECT 1`. Returns the target.
pub async fn check(provider: &str, url: Option<&str>, egress: &Egress) -> Result<String, Failure> {
    let Some(url) = url else {
        return Err(Failure::new(
            "the integration has no `url` credential (a connection URL)",
            None,
        ));
    };
    let parsed = SqlUrl::parse(provider, url).map_err(|e| Failure::new(e, None))?;
    let target = parsed.target();
    let host = parsed
        .vet(egress)
        .await
        .map_err(|e| Failure::new(e, Some(&target)))?;
    let failed = |e: sqlx::Error| Failure::new(describe(&e), Some(&target));
    match parsed.provider {
        Provider::Postgres => {
            let mut conn = sqlx::PgConnection::connect_with(&parsed.postgres_options(&host))
                .await
                .map_err(failed)?;
            sqlx::query("SELECT 1")
                .execute(&mut conn)
                .await
                .map_err(failed)?;
            let _ = conn.close().await;
        }
        Provider::MySql => {
            let mut conn = sqlx::MySqlConnection::connect_with(&parsed.mysql_options(&host))
                .await
                .map_err(failed)?;
            sqlx::query("SELECT 1")
                .execute(&mut conn)
                .await
                .map_err(failed)?;
            let _ = conn.close().await;
        }
        Provider::MsSql => {
            let mut client = parsed
                .mssql_connect(&host)
                .await
                .map_err(|e| Failure::new(e, Some(&target)))?;
            let ran = match client.simple_query("SELECT 1").await {
                Ok(stream) => stream.into_row().await.map(|_| ()),
                Err(e) => Err(e),
            };
            ran.map_err(|e| Failure::new(format!("the query failed: {e}"), Some(&target)))?;
            let _ = client.close().await;
        }
    }
    Ok(target)
}

/// A driver error in words: the server's message for database errors, the cause otherwise.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => format!("the server refused: {}", db.message()),
        sqlx::Error::Io(io) => format!("cannot connect: {io}"),
        sqlx::Error::Tls(tls) => format!("TLS failed: {tls}"),
        other => super::connection::error_chain(other),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_only_what_is_needed() {
        let u = SqlUrl::parse(
            "postgres",
            "postgres://app:p%40ss@db.example:6543/erp?sslmode=require",
        )
        .unwrap();
        assert_eq!((u.host.as_str(), u.port), ("db.example", 6543));
        assert_eq!((u.username.as_str(), u.password.as_str()), ("app", "p@ss"));
        assert_eq!(u.database.as_deref(), Some("erp"));
        assert_eq!(u.target(), "db.example:6543/erp");
        assert!(SqlUrl::parse("postgres", "postgres://h/db?sslkey=/etc/key").is_err());
        assert!(SqlUrl::parse("postgres", "mysql://h/db").is_err());
        assert!(SqlUrl::parse("postgres", "postgres:///db?host=/tmp").is_err());
        assert!(SqlUrl::parse("postgres", "postgres://h/db?sslmode=bogus").is_err());
        let m = SqlUrl::parse("mysql", "mariadb://root@127.0.0.1/shop?ssl-mode=disabled").unwrap();
        assert_eq!((m.port, m.password.as_str()), (3306, ""));
        assert!(SqlUrl::parse("mysql", "mysql://h/db?ssl-mode=require").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2F").as_deref(), Some("a b/"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz"), None);
    }
}
