//! Reading the outbox: `GET /v1/events` and `GET /v1/events/{id}`, every event of the tenant
//! and mode whatever produced it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::{NewEvent, Source, event_id};
use crate::{
    error::{Error, Result},
    tenants::Scope,
};

/// An event as partners see it.
#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct Event {
    /// `evt_…`.
    pub id: String,
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    #[sqlx(rename = "type")]
    pub event_type: String,
    /// The payload webhooks carry as `data`.
    pub data: serde_json::Value,
    /// Events sharing a key reach each endpoint in order; order events are keyed by their
    /// order's id.
    #[oai(nullable)]
    pub ordering_key: Option<String>,
    /// Who produced it.
    pub source: Source,
    /// When it happened (the webhook's `timestamp`).
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl Event {
    pub(super) fn from_new(e: NewEvent, created_at: DateTime<Utc>) -> Self {
        Event {
            id: event_id(e.id),
            event_type: e.event_type,
            data: e.data,
            ordering_key: e.ordering_key,
            source: e.source,
            occurred_at: e.occurred_at,
            created_at,
        }
    }
}

/// The columns of [`Event`]; the id as partners see it (`evt_…`, [`event_id`]).
const COLUMNS: &str =
    "'evt_' || replace(id::text, '-', '') AS id, type, data, ordering_key, source,
     occurred_at, created_at";

/// Filters of `GET /v1/events`.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub created_gte: Option<DateTime<Utc>>,
    pub created_lte: Option<DateTime<Utc>>,
}

/// Events of the tenant and mode, newest first, before `starting_after`.
pub async fn list(
    pool: &PgPool,
    scope: Scope,
    filter: &EventFilter,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<Event>> {
    Ok(sqlx::query_as::<_, Event>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM events
          WHERE tenant_id = $1 AND mode = $2
            AND ($3::text IS NULL OR type = $3)
            AND ($4::timestamptz IS NULL OR created_at >= $4)
            AND ($5::timestamptz IS NULL OR created_at <= $5)
            AND ($6::uuid IS NULL OR id < $6)
          ORDER BY id DESC LIMIT $7"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(filter.event_type.as_deref())
    .bind(filter.created_gte)
    .bind(filter.created_lte)
    .bind(starting_after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// One event of the tenant and mode.
pub async fn get(pool: &PgPool, scope: Scope, id: Uuid) -> Result<Event> {
    sqlx::query_as::<_, Event>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM events WHERE id = $1 AND tenant_id = $2 AND mode = $3"
    )))
    .bind(id)
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::not_found("event"))
}
