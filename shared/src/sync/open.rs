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
    /// Opens the source of `spec` (its integration has `provider`) on behalf of `actor`.
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
            Err(e) => return Ok(Connection::Refused(e.to_string())),
        };
        let Some(url) = credentials.get("url") else {
            return Ok(Connection::Refused(
                "the integration has no `url` credential".into(),
            ));
        };
        let connected = tokio::time::timeout(
            self.timeout,
            sql_source::connect(provider, url, self.egress, spec.source.table.as_str()),
        )
        .await
        .unwrap_or_else(|_| Err("the connection timed out".into()));
        let source: Box<dyn Source> = match connected {
            Ok(s) => Box::new(s),
            Err(e) => return Ok(Connection::Unreachable(redact(&e, &credentials))),
        };
        let missing = mapping::required_columns(spec)
            .into_iter()
            .find(|c| !source.columns().iter().any(|s| s == c));
        if let Some(c) = missing {
            return Ok(Connection::Refused(format!(
                "the source table has no column `{c}`"
            )));
        }
        Ok(Connection::Ready {
            source,
            credentials,
        })
    }
}
