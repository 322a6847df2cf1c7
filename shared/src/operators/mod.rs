//! Operator accounts: people who use the dashboard. Each has a role — `viewer` reads,
//! `operator` also acts — and signs in with an email and a generated access secret, shown
//! once. Secrets are high-entropy (like API keys), so they are stored as HMAC-SHA256 with the
//! server's pepper rather than a slow password hash, and checked in constant time. The admin
//! token signs in too, as an `operator` with no account.

pub mod sessions;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    crypto::{constant_time_eq, hmac_sha256, random_base62},
    error::{Error, Result},
    input::{EmailText, Text},
};

/// What a signed-in person may do.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Role {
    /// Reads every page; acts on nothing.
    Viewer,
    /// Also retries, cancels and discards jobs, pauses queues and resolves conflicts.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    pub fn can_act(self) -> bool {
        self == Role::Operator
    }
}

/// An operator account (never its secret).
#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct Operator {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// What `create` takes.
#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct NewOperator {
    /// Sign-in name; unique, case-insensitive.
    pub email: EmailText,
    pub name: Text<1, 200>,
    pub role: Role,
}

const SECRET_PREFIX: &str = "syop_";

fn hash(pepper: &[u8], secret: &str) -> [u8; 32] {
    hmac_sha256(pepper, &[b"operator:", secret.as_bytes()])
}

/// Creates an account, audited as `actor`'s; returns it with its access secret, which is not
/// kept and cannot be shown again.
pub async fn create(
    pool: &PgPool,
    actor: &Actor,
    pepper: &[u8],
    new: &NewOperator,
) -> Result<(Operator, String)> {
    let mut tx = pool.begin().await?;
    let secret = format!("{SECRET_PREFIX}{}", random_base62(43));
    let row = sqlx::query_as::<_, Operator>(
        "INSERT INTO operators (id, email, name, role, secret_hash) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING
         RETURNING id, email, name, role, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(new.email.as_str())
    .bind(new.name.as_str())
    .bind(new.role)
    .bind(&hash(pepper, &secret)[..])
    .fetch_optional(&mut *tx)
    .await?;
    let op = row.ok_or_else(|| {
        Error::conflict(
            "operator_exists",
            Some("email"),
            "An operator with this email exists.",
        )
    })?;
    let changes = serde_json::json!({ "email": op.email, "role": op.role });
    audit::record_operator(
        &mut tx,
        actor,
        "operator",
        op.id,
        "operator.created",
        changes,
    )
    .await?;
    tx.commit().await?;
    Ok((op, secret))
}

pub async fn list(pool: &PgPool) -> Result<Vec<Operator>> {
    Ok(sqlx::query_as::<_, Operator>(
        "SELECT id, email, name, role, created_at FROM operators ORDER BY lower(email)",
    )
    .fetch_all(pool)
    .await?)
}

/// Deletes an account and every session it has, audited as `actor`'s.
pub async fn delete(pool: &PgPool, actor: &Actor, id: Uuid) -> Result<()> {
    let mut tx = pool.begin().await?;
    let email: Option<String> =
        sqlx::query_scalar("DELETE FROM operators WHERE id = $1 RETURNING email")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(email) = email else {
        return Err(Error::not_found("operator"));
    };
    let changes = serde_json::json!({ "email": email });
    audit::record_operator(&mut tx, actor, "operator", id, "operator.deleted", changes).await?;
    tx.commit().await?;
    Ok(())
}

/// The account `email` names, if `secret` is its access secret. The comparison is constant
/// time, and an unknown email costs the same hash as a known one.
pub async fn verify(
    pool: &PgPool,
    pepper: &[u8],
    email: &str,
    secret: &str,
) -> Result<Option<Operator>> {
    let row: Option<(Vec<u8>, Operator)> =
        sqlx::query_as::<_, (Vec<u8>, Uuid, String, String, Role, DateTime<Utc>)>(
            "SELECT secret_hash, id, email, name, role, created_at FROM operators
          WHERE lower(email) = lower($1)",
        )
        .bind(email.trim())
        .fetch_optional(pool)
        .await?
        .map(|(h, id, email, name, role, created_at)| {
            (
                h,
                Operator {
                    id,
                    email,
                    name,
                    role,
                    created_at,
                },
            )
        });
    let presented = hash(pepper, secret.trim());
    Ok(match row {
        Some((stored, op)) if constant_time_eq(&stored, &presented) => Some(op),
        _ => None,
    })
}
