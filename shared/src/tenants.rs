//! Tenants own everything; every other query is scoped by a tenant id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    error::{Error, Result},
    input::{Int, Text},
    mode::Mode,
    rate_limit::MAX_RATE_LIMIT,
};

/// What a partner request sees: one tenant's data of one mode (test keys never see live data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    pub tenant_id: Uuid,
    pub mode: Mode,
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CreateTenant {
    /// Display name, 1 to 200 characters.
    pub name: Text<1, 200>,
    /// Requests per minute over all of the tenant's keys; default: the server's.
    #[oai(nullable)]
    pub rate_limit_per_minute: Option<Int<1, MAX_RATE_LIMIT>>,
}

/// A change to a tenant; absent fields stay as they are.
#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct UpdateTenant {
    #[oai(nullable)]
    pub name: Option<Text<1, 200>>,
    /// `0` returns to the server default.
    #[oai(nullable)]
    pub rate_limit_per_minute: Option<Int<0, MAX_RATE_LIMIT>>,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    /// `null`: the server default.
    #[oai(nullable)]
    pub rate_limit_per_minute: Option<i32>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, rate_limit_per_minute, created_at";

/// The tenant and mode of row `id` of `table` (a table with `tenant_id` and `mode`): how an
/// operator's page, which lists across tenants, reads one row with the tenant-scoped functions.
pub async fn scope_of_row(pool: &PgPool, table: &'static str, id: Uuid) -> Result<Option<Scope>> {
    let row: Option<(Uuid, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT tenant_id, mode FROM {table} WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((tenant_id, mode)) = row else {
        return Ok(None);
    };
    Ok(Some(Scope {
        tenant_id,
        mode: Mode::parse(&mode)?,
    }))
}

pub async fn create(pool: &PgPool, actor: &Actor, new: CreateTenant) -> Result<Tenant> {
    let name = new.name.into_string();
    let limit = new.rate_limit_per_minute.map(|n| n.get() as i32);
    let mut tx = pool.begin().await?;
    let tenant = sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO tenants (id, name, rate_limit_per_minute) VALUES ($1, $2, $3)
         RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(limit)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        actor,
        audit::Entry {
            tenant_id: Some(tenant.id),
            mode: None,
            action: "tenant.created",
            target_type: "tenant",
            target_id: tenant.id,
            changes: serde_json::json!({
                "name": tenant.name, "rate_limit_per_minute": tenant.rate_limit_per_minute,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(tenant)
}

/// Changes a tenant. Its keys pick up a new limit as their cache entries are refreshed.
pub async fn update(
    pool: &PgPool,
    actor: &Actor,
    id: Uuid,
    change: UpdateTenant,
) -> Result<Tenant> {
    let name = change.name.map(Text::into_string);
    let limit = change.rate_limit_per_minute.map(|n| n.get() as i32);
    let mut tx = pool.begin().await?;
    let old = sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::not_found("tenant"))?;
    let tenant = sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "UPDATE tenants
            SET name = COALESCE($2, name),
                rate_limit_per_minute = CASE WHEN $3::int IS NULL THEN rate_limit_per_minute
                                             ELSE NULLIF($3, 0) END
          WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(name)
    .bind(limit)
    .fetch_one(&mut *tx)
    .await?;
    if old.rate_limit_per_minute != tenant.rate_limit_per_minute {
        // Cached keys carry the tenant's limit: touch them so every replica reloads it.
        sqlx::query("UPDATE api_keys SET updated_at = now() WHERE tenant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    audit::record(
        &mut tx,
        actor,
        audit::Entry {
            tenant_id: Some(id),
            mode: None,
            action: "tenant.updated",
            target_type: "tenant",
            target_id: id,
            changes: serde_json::json!({
                "name": [old.name, tenant.name],
                "rate_limit_per_minute": [old.rate_limit_per_minute, tenant.rate_limit_per_minute],
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(tenant)
}

pub async fn get(conn: impl PgExecutor<'_>, id: Uuid) -> Result<Tenant> {
    sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| Error::not_found("tenant"))
}

pub async fn list(pool: &PgPool, limit: i64, starting_after: Option<Uuid>) -> Result<Vec<Tenant>> {
    Ok(sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants
          WHERE ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $1"
    )))
    .bind(limit)
    .bind(starting_after)
    .fetch_all(pool)
    .await?)
}
