//! Opening a configuration's source: its integration's `url` credential (opened for use, so
//! audited), a connection through the egress rules, and the schema check (every column the
//! configuration names exists). Runs and previews (`delta`) open sources the same way.

use std::time::Duration;

use sqlx::PgPool;

use super::{config::SyncSpec, mapping, source::Source, sql_source};
use crate::{
    audit::Actor,
    crypto::Keyring,
    error::Result,
    integrations::{
        connection::redact,
        logs::{self, SourceCall},
        sql::SqlUrl,
        vault::{self, Opened, Purpose},
    },
    net::Egress,
    tenants::Scope,
};

/// A source ready to read, or why not.
pub enum Connection {
    Ready {
        source: Box<dyn Source>,
        /// Opened credentials, to redact from every message about the source.
        credentials: Opened,
        /// `host:port/database table`, for the integration's log.
        target: Option<String>,
    },
    /// Cannot work until the configuration or the integration changes (a credential that does
    /// not open, no `url`, a column the table lacks): a run fails at once.
    Refused(String),
    /// The source did not answer (down, refused, timed out): a run retries later.
    Unreachable(String),
}

/// What is needed to open sources.
pub struct Opener<'a> {
    pub pool: &'a PgPool,
    pub keyring: &'a Keyring,
    pub egress: &'a Egress,
    /// Longest wait for a connection (and, for callers, for each read).
    pub timeout: Duration,
}

impl Opener<'_> {
    /// Opens the source of `spec` (its integration has `provider`) on behalf of `actor`. A
    /// failure is written to the integration's log here; a session's outcome, by the caller.
    pub async fn open(
        &self,
        scope: Scope,
        spec: &SyncSpec,
        provider: &str,
        actor: &Actor,
        purpose: Purpose,
    ) -> Result<Connection> {
        let opened = vault::open_for_use(
            self.pool,
            self.keyring,
            scope,
            spec.source.integration_id,
            actor,
            purpose,
        )
        .await?;
        let credentials = match opened {
            Ok(c) => c,
            Err(e) => {
                let e = e.to_string();
                self.log(scope, spec, purpose, None, Err(&e), 0, None)
                    .await?;
                return Ok(Connection::Refused(e));
            }
        };
        let Some(url) = credentials.get("url") else {
            let e = "the integration has no `url` credential".to_owned();
            self.log(scope, spec, purpose, None, Err(&e), 0, None)
                .await?;
            return Ok(Connection::Refused(e));
        };
        let target = SqlUrl::parse(provider, url)
            .ok()
            .map(|u| format!("{} {}", u.target(), spec.source.table.as_str()));
        let started = std::time::Instant::now();
        let connected = tokio::time::timeout(
            self.timeout,
            sql_source::connect(provider, url, self.egress, spec.source.table.as_str()),
        )
        .await
        .unwrap_or_else(|_| Err("the connection timed out".into()));
        let source: Box<dyn Source> = match connected {
            Ok(s) => Box::new(s),
            Err(e) => {
                let e = redact(&e, &credentials);
                let ms = started.elapsed().as_millis() as i64;
                let target = target.as_deref();
                self.log(scope, spec, purpose, target, Err(&e), ms, None)
                    .await?;
                return Ok(Connection::Unreachable(e));
            }
        };
        let missing = mapping::required_columns(spec)
            .into_iter()
            .find(|c| !source.columns().iter().any(|s| s == c));
        if let Some(c) = missing {
            let e = format!("the source table has no column `{c}`");
            let ms = started.elapsed().as_millis() as i64;
            self.log(scope, spec, purpose, target.as_deref(), Err(&e), ms, None)
                .await?;
            return Ok(Connection::Refused(e));
        }
        Ok(Connection::Ready {
            source,
            credentials,
            target,
        })
    }

    /// Writes a session with the source to the integration's log (`kind: sync`; `READ` for a
    /// run, `PREVIEW` for `delta`).
    #[allow(clippy::too_many_arguments)]
    pub async fn log(
        &self,
        scope: Scope,
        spec: &SyncSpec,
        purpose: Purpose,
        target: Option<&str>,
        outcome: std::result::Result<(), &str>,
        duration_ms: i64,
        summary: Option<&str>,
    ) -> Result<()> {
        let call = SourceCall {
            integration_id: spec.source.integration_id,
            tenant_id: scope.tenant_id,
            kind: "sync",
            method: if purpose == Purpose::SyncPreview {
                "PREVIEW"
            } else {
                "READ"
            },
            target,
            ok: outcome.is_ok(),
            duration_ms,
            error: outcome.err(),
            summary,
        };
        logs::write(self.pool, &call).await
    }
}
