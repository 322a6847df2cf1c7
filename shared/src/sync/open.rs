//! Opening a configuration's integration side: its credentials (opened for use, so audited), a
//! connection through the egress rules, and the schema check (every column the configuration
//! names exists). Runs and previews (`delta`) open sides the same way.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    adapter::Adapter,
    adapters::{self, SideInfo},
    config::{SyncSpec, Which},
    mapping,
};
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

/// An integration side ready to read and write.
pub struct OpenSide {
    pub adapter: Box<dyn Adapter>,
    /// Opened credentials, to redact from every message about the side.
    pub credentials: Opened,
    /// `host:port/database table` or the resource, for the integration's log.
    pub target: Option<String>,
    pub integration_id: Uuid,
}

/// A side ready, or why not.
pub enum Connection {
    Ready(Box<OpenSide>),
    /// Cannot work until the configuration or the integration changes (a credential that does
    /// not open, no `url`, a column the table lacks): a run fails at once.
    Refused(String),
    /// The integration did not answer (down, refused, timed out): a run retries later.
    Unreachable(String),
}

/// What is needed to open sides.
pub struct Opener<'a> {
    pub pool: &'a PgPool,
    pub keyring: &'a Keyring,
    pub egress: &'a Egress,
    /// Longest wait for a connection (and, for callers, for each read).
    pub timeout: Duration,
}

impl Opener<'_> {
    /// Opens `which` side of `spec` (an integration side) on behalf of `actor`. A failure is
    /// written to the integration's log here; a session's outcome, by the caller.
    pub async fn open(
        &self,
        scope: Scope,
        spec: &SyncSpec,
        which: Which,
        actor: &Actor,
        purpose: Purpose,
    ) -> Result<Connection> {
        let side = which.spec(spec);
        let Some(integration_id) = side.integration_id else {
            return Ok(Connection::Refused(format!(
                "the {} is the record store",
                which.as_str()
            )));
        };
        let row: Option<(String, Option<String>, Value)> = sqlx::query_as(
            "SELECT provider, base_url, config FROM integrations
              WHERE tenant_id = $1 AND mode = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(scope.tenant_id)
        .bind(scope.mode.as_str())
        .bind(integration_id)
        .fetch_optional(self.pool)
        .await?;
        let Some((provider, base_url, config)) = row else {
            return Ok(Connection::Refused(format!(
                "the {} integration was deleted",
                which.as_str()
            )));
        };
        let log = |target: Option<String>, e: String, ms: i64| async move {
            let call = SourceCall {
                integration_id,
                tenant_id: scope.tenant_id,
                kind: "sync",
                method: method(purpose),
                target: target.as_deref(),
                ok: false,
                duration_ms: ms,
                error: Some(&e),
                summary: None,
            };
            logs::write(self.pool, &call).await
        };
        let opened = vault::open_for_use(
            self.pool,
            self.keyring,
            scope,
            integration_id,
            actor,
            purpose,
        )
        .await?;
        let credentials = match opened {
            Ok(c) => c,
            Err(e) => {
                let e = e.to_string();
                log(None, e.clone(), 0).await?;
                return Ok(Connection::Refused(e));
            }
        };
        let url = credentials.get("url");
        let target = match (url, &base_url) {
            (Some(url), _) => SqlUrl::parse(&provider, url)
                .ok()
                .map(|u| format!("{} {}", u.target(), side.object())),
            (None, Some(base)) => Some(format!("{base}{}", side.object())),
            (None, None) => None,
        };
        let info = SideInfo::of(side, which.cursor(spec));
        let integration = adapters::Target {
            provider: &provider,
            url,
            base_url: base_url.as_deref(),
            config: &config,
            credentials: &credentials,
        };
        let started = std::time::Instant::now();
        let connected = tokio::time::timeout(
            self.timeout,
            adapters::connect(&integration, side, info, self.egress),
        )
        .await
        .unwrap_or_else(|_| Err("the connection timed out".into()));
        let adapter = match connected {
            Ok(a) => a,
            Err(e) => {
                let e = redact(&e, &credentials);
                let ms = started.elapsed().as_millis() as i64;
                log(target.clone(), e.clone(), ms).await?;
                return Ok(Connection::Unreachable(e));
            }
        };
        let described = adapter.describe();
        if described.schema_known {
            let missing = mapping::required_columns(spec, which)
                .into_iter()
                .find(|c| !described.columns.iter().any(|s| s == c));
            if let Some(c) = missing {
                let e = format!("the {} table has no column `{c}`", which.as_str());
                let ms = started.elapsed().as_millis() as i64;
                log(target.clone(), e.clone(), ms).await?;
                return Ok(Connection::Refused(e));
            }
        }
        Ok(Connection::Ready(Box::new(OpenSide {
            adapter,
            credentials,
            target,
            integration_id,
        })))
    }

    /// Writes a session with a side to its integration's log (`kind: sync`; `READ` for a run,
    /// `PREVIEW` for `delta`).
    #[allow(clippy::too_many_arguments)]
    pub async fn log(
        &self,
        scope: Scope,
        integration_id: Uuid,
        purpose: Purpose,
        target: Option<&str>,
        outcome: std::result::Result<(), &str>,
        duration_ms: i64,
        summary: Option<&str>,
    ) -> Result<()> {
        let call = SourceCall {
            integration_id,
            tenant_id: scope.tenant_id,
            kind: "sync",
            method: method(purpose),
            target,
            ok: outcome.is_ok(),
            duration_ms,
            error: outcome.err(),
            summary,
        };
        logs::write(self.pool, &call).await
    }
}

fn method(purpose: Purpose) -> &'static str {
    if purpose == Purpose::SyncPreview {
        "PREVIEW"
    } else {
        "READ"
    }
}
