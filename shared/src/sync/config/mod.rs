//! Sync configurations: what partners send ([`spec`]), the checks no schema can state
//! ([`checks`]), and their storage. The whole configuration is kept as one JSON `spec` with
//! every default filled in, so what a run reads is what the API shows.

mod checks;
mod spec;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

pub use checks::SideKind;
pub use spec::*;

use super::schedule;
use crate::{
    error::{Error, Result},
    tenants::Scope,
};

#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct SyncConfiguration {
    pub id: Uuid,
    #[oai(flatten)]
    #[serde(flatten)]
    pub spec: SyncSpec,
    /// The stream's committed position after the last finished run.
    #[oai(nullable)]
    pub state: Option<Value>,
    /// When the schedule next starts a run (null: no schedule, or disabled).
    #[oai(nullable)]
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

type Row = (
    Uuid,
    Json<SyncSpec>,
    Option<Value>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn view((id, spec, state, next_run_at, created_at, updated_at): Row) -> SyncConfiguration {
    SyncConfiguration {
        id,
        spec: spec.0,
        state,
        next_run_at,
        created_at,
        updated_at,
    }
}

const COLUMNS: &str = "id, spec, cursor, next_run_at, created_at, updated_at";

pub async fn create(
    conn: &mut PgConnection,
    scope: Scope,
    spec: SyncSpec,
) -> Result<SyncConfiguration> {
    let spec = spec.checked()?;
    checks::check_integrations(conn, scope, &spec).await?;
    // The configuration goes with its integrations: the source's (or, outbound, the
    // target's), and a bidirectional target integration's.
    let (integration, other) = match (spec.source.integration_id, spec.target.integration_id) {
        (Some(s), t) => (s, t),
        (None, Some(t)) => (t, None),
        (None, None) => unreachable!("checked: one side is an integration"),
    };
    // Slots are reckoned on the database's clock, as the scheduler does.
    let now = schedule::db_now(&mut *conn).await?;
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO sync_configurations (id, tenant_id, mode, name, entity, integration_id,
                                          target_integration_id, spec, enabled, next_run_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(spec.name.as_str())
    .bind(spec.entity.as_str())
    .bind(integration)
    .bind(other)
    .bind(Json(&spec))
    .bind(spec.enabled.unwrap_or(true))
    .bind(schedule::next_run_at(&spec, now)?)
    .fetch_one(conn)
    .await?;
    Ok(view(row))
}

/// Whether the tenant has configuration `id` in this mode.
pub async fn exists<'e>(db: impl sqlx::PgExecutor<'e>, scope: Scope, id: Uuid) -> Result<bool> {
    let found: Option<bool> = sqlx::query_scalar(
        "SELECT true FROM sync_configurations WHERE tenant_id = $1 AND mode = $2 AND id = $3",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(found.is_some())
}

pub async fn get(pool: &PgPool, scope: Scope, id: Uuid) -> Result<SyncConfiguration> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sync_configurations WHERE tenant_id = $1 AND mode = $2 AND id = $3"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(view)
        .ok_or_else(|| Error::not_found("sync configuration"))
}

pub async fn list(
    pool: &PgPool,
    scope: Scope,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<SyncConfiguration>> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sync_configurations
          WHERE tenant_id = $1 AND mode = $2 AND ($3::uuid IS NULL OR id < $3)
          ORDER BY id DESC LIMIT $4"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(starting_after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(view).collect())
}

/// Applies `change` over the stored configuration and checks the result as a whole.
pub async fn update(
    conn: &mut PgConnection,
    scope: Scope,
    id: Uuid,
    change: SyncSpecChange,
) -> Result<SyncConfiguration> {
    let stored: Option<(Json<Value>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT spec, now() FROM sync_configurations
          WHERE tenant_id = $1 AND mode = $2 AND id = $3 FOR UPDATE",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((Json(mut spec), now)) = stored else {
        return Err(Error::not_found("sync configuration"));
    };
    let before: SyncSpec =
        serde_json::from_value(spec.clone()).map_err(|e| Error::Internal(e.into()))?;
    let changes = serde_json::to_value(&change).map_err(|e| Error::Internal(e.into()))?;
    if let (Some(spec), Value::Object(changes)) = (spec.as_object_mut(), changes) {
        spec.extend(changes);
    }
    let spec: SyncSpec = serde_json::from_value(spec).map_err(|e| Error::Internal(e.into()))?;
    let spec = spec.checked()?;
    checks::check_integrations(conn, scope, &spec).await?;
    // A cursor on another column or strategy cannot go on from the old one's position: the
    // next run reads from the start. Not while a run holds a checkpoint of the old one.
    let cursor_changed = cursor_key(&before) != cursor_key(&spec);
    if cursor_changed && let Some(run) = super::runs::active(conn, id).await? {
        return Err(Error::conflict(
            "sync_run_active",
            Some("cursor"),
            format!("Run {run} reads by the current cursor; change it once the run ends."),
        ));
    }
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_configurations
            SET spec = $2, name = $3, enabled = $4, updated_at = now(),
                next_run_at = CASE WHEN $7 THEN $5 ELSE next_run_at END,
                cursor = CASE WHEN $6 THEN NULL ELSE cursor END
          WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(Json(&spec))
    .bind(spec.name.as_str())
    .bind(spec.enabled.unwrap_or(true))
    .bind(schedule::next_run_at(&spec, now)?)
    .bind(cursor_changed)
    // A change of anything else keeps the slot the schedule waits for (a due slot still runs).
    .bind(before.schedule != spec.schedule || before.enabled != spec.enabled)
    .fetch_one(conn)
    .await?;
    Ok(view(row))
}

/// What a committed cursor position means: the strategy and column of each side's cursor.
fn cursor_key(spec: &SyncSpec) -> [Option<(CursorStrategy, String)>; 2] {
    [spec.cursor.as_ref(), spec.target.cursor.as_ref()]
        .map(|c| c.map(|c| (c.strategy, c.column.as_deref().unwrap_or("").to_owned())))
}

/// Deletes the configuration with its runs; its records stay (unowned) in the store.
pub async fn delete(conn: &mut PgConnection, scope: Scope, id: Uuid) -> Result<()> {
    let n = sqlx::query(
        "DELETE FROM sync_configurations WHERE tenant_id = $1 AND mode = $2 AND id = $3",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::not_found("sync configuration"));
    }
    Ok(())
}
