//! Tenants own everything; every other query is scoped by a tenant id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Display name, 1 to 200 characters.
    pub name: String,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

pub fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::invalid(
            "parameter_invalid",
            "name",
            "`name` must be 1 to 200 characters.",
        ));
    }
    Ok(name.to_owned())
}

pub async fn create(pool: &PgPool, name: &str) -> Result<Tenant> {
    let name = validate_name(name)?;
    Ok(sqlx::query_as::<_, Tenant>(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id, name, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_one(pool)
    .await?)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Tenant> {
    sqlx::query_as::<_, Tenant>("SELECT id, name, created_at FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found("tenant"))
}

pub async fn list(pool: &PgPool, limit: i64, starting_after: Option<Uuid>) -> Result<Vec<Tenant>> {
    Ok(sqlx::query_as::<_, Tenant>(
        "SELECT id, name, created_at FROM tenants
          WHERE ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .bind(starting_after)
    .fetch_all(pool)
    .await?)
}
