//! The audit log: an append-only record of who changed keys and what the operator API did.
//! Entries are written in the same transaction as the change they describe, so the log can
//! neither miss a change nor record one that did not happen. Secrets never enter `changes`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{error::Result, mode::Mode};

/// Who made a change, and from where.
#[derive(Clone, Debug)]
pub struct Actor {
    pub kind: ActorKind,
    pub request_id: Option<String>,
    pub ip: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActorKind {
    /// The operator token.
    Admin,
    /// A partner API key (its row id).
    ApiKey(Uuid),
    /// A background job of Switchyard itself (its job id).
    Job(Uuid),
    /// An operator account, from the dashboard (its id).
    Operator(Uuid),
}

impl Actor {
    fn columns(&self) -> (&'static str, Option<Uuid>) {
        match self.kind {
            ActorKind::Admin => ("admin", None),
            ActorKind::ApiKey(id) => ("api_key", Some(id)),
            ActorKind::Job(id) => ("system", Some(id)),
            ActorKind::Operator(id) => ("operator", Some(id)),
        }
    }
}

/// One entry to append.
pub struct Entry<'a> {
    pub tenant_id: Option<Uuid>,
    /// The mode of the data the change touched (a key's mode); `None` for tenant-wide changes,
    /// which belong to the live account.
    pub mode: Option<Mode>,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: Uuid,
    pub changes: serde_json::Value,
}

/// Appends `entry` on `conn` (the caller's transaction).
pub async fn record(conn: &mut PgConnection, actor: &Actor, entry: Entry<'_>) -> Result<()> {
    let (actor_type, actor_id) = actor.columns();
    sqlx::query(
        "INSERT INTO audit_events (id, tenant_id, actor_type, actor_id, action, target_type,
                                   target_id, request_id, ip, changes, mode)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(Uuid::now_v7())
    .bind(entry.tenant_id)
    .bind(actor_type)
    .bind(actor_id)
    .bind(entry.action)
    .bind(entry.target_type)
    .bind(entry.target_id)
    .bind(&actor.request_id)
    .bind(&actor.ip)
    .bind(entry.changes)
    .bind(entry.mode.map(Mode::as_str))
    .execute(conn)
    .await?;
    Ok(())
}

/// Appends an operator's action on the deployment (a queue, jobs: no tenant) on `conn` (the
/// action's transaction where it has one).
pub async fn record_operator(
    conn: &mut PgConnection,
    actor: &Actor,
    target_type: &str,
    target_id: Uuid,
    action: &str,
    changes: serde_json::Value,
) -> Result<()> {
    let entry = Entry {
        tenant_id: None,
        mode: None,
        action,
        target_type,
        target_id,
        changes,
    };
    record(conn, actor, entry).await
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: Uuid,
    #[oai(nullable)]
    pub tenant_id: Option<Uuid>,
    /// `admin` (operator token), `api_key`, or `system` (a background job of Switchyard).
    pub actor_type: String,
    /// The API key that acted, for `api_key`; the job, for `system`.
    #[oai(nullable)]
    pub actor_id: Option<Uuid>,
    /// What happened: `api_key.created`, `api_key.rolled`, `api_key.revoked`,
    /// `api_key.updated`, `tenant.created`, `integration.created`,
    /// `integration.credentials_opened`, …
    pub action: String,
    pub target_type: String,
    pub target_id: Uuid,
    #[oai(nullable)]
    pub request_id: Option<String>,
    #[oai(nullable)]
    pub ip: Option<String>,
    /// The changed fields (never secrets).
    pub changes: serde_json::Value,
    /// `live` or `test`: the mode of the key the change touched; `null` for tenant-wide changes.
    #[oai(nullable)]
    pub mode: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A tenant's audit events, newest first. `mode` limits them to what a key of that mode may
/// see (its mode's events; tenant-wide ones belong to live mode); operators pass `None`.
pub async fn list(
    pool: &sqlx::PgPool,
    tenant_id: Uuid,
    mode: Option<Mode>,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<AuditEvent>> {
    Ok(sqlx::query_as::<_, AuditEvent>(
        "SELECT id, tenant_id, actor_type, actor_id, action, target_type, target_id, request_id,
                ip, changes, mode, created_at
           FROM audit_events
          WHERE tenant_id = $1 AND ($3::uuid IS NULL OR id < $3)
            AND ($4::text IS NULL OR COALESCE(mode, 'live') = $4)
          ORDER BY id DESC LIMIT $2",
    )
    .bind(tenant_id)
    .bind(limit)
    .bind(starting_after)
    .bind(mode.map(Mode::as_str))
    .fetch_all(pool)
    .await?)
}
