//! The event type catalog: the built-in types Switchyard emits, and a tenant's own entries
//! (description, optional JSON Schema of `data`, deprecated flag). Endpoint filters that name
//! an exact type must name one of these; wildcards (`order.*`) match whatever exists.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use super::{schema, types::EventTypeName};
use crate::{
    error::{Error, Result},
    input::Text,
    tenants::Scope,
};

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct EventType {
    pub name: String,
    #[oai(nullable)]
    pub description: Option<String>,
    /// JSON Schema of the event's `data`, if one was given.
    #[oai(nullable)]
    pub schema: Option<serde_json::Value>,
    pub deprecated: bool,
    /// Emitted by Switchyard itself (read-only).
    pub built_in: bool,
    #[oai(nullable)]
    pub created_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CreateEventType {
    /// Dotted name of `[A-Za-z0-9_]` segments, e.g. `invoice.paid`.
    pub name: EventTypeName,
    /// At most 1000 characters.
    #[oai(nullable)]
    pub description: Option<Text<0, 1000>>,
    /// A JSON Schema of the event's `data` (an object, at most 64 KiB).
    #[oai(nullable)]
    pub schema: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    #[oai(nullable)]
    pub deprecated: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct UpdateEventType {
    #[oai(nullable)]
    pub description: Option<Text<0, 1000>>,
    #[oai(nullable)]
    pub schema: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    #[oai(nullable)]
    pub deprecated: Option<bool>,
}

/// The types Switchyard emits, with what they mean. Partners cannot post these
/// (`POST /v1/events`); every order status has its `order.<status>` here (a test in `orders`
/// keeps the two in step).
pub const BUILT_IN: &[(&str, &str)] = &[
    ("order.created", "An order was accepted."),
    (
        "order.updated",
        "An order's notes, delivery details or metadata changed.",
    ),
    ("order.confirmed", "An order moved to `confirmed`."),
    ("order.preparing", "An order moved to `preparing`."),
    ("order.ready", "An order moved to `ready`."),
    (
        "order.out_for_delivery",
        "An order moved to `out_for_delivery`.",
    ),
    ("order.delivered", "An order moved to `delivered`."),
    ("order.completed", "An order moved to `completed`."),
    ("order.cancelled", "An order moved to `cancelled`."),
    ("order.rejected", "An order moved to `rejected`."),
    (
        "endpoint.disabled",
        "Operational: one of your endpoints was disabled.",
    ),
    (
        "endpoint.recovered",
        "Operational: an endpoint's circuit breaker closed again.",
    ),
    (
        "integration.unhealthy",
        "Operational: an integration's connection check failed.",
    ),
    (
        "integration.recovered",
        "Operational: an integration's connection works again.",
    ),
    (
        "sync.run.succeeded",
        "A sync run finished (`partial` runs too: see `rows_failed`).",
    ),
    ("sync.run.failed", "A sync run failed."),
    (
        "sync.conflict.created",
        "A bidirectional sync found a record changed on both sides that waits for a person \
         (POST /v1/sync/conflicts/{id}/resolve).",
    ),
    (
        "webhook.test",
        "A test message sent with POST /v1/webhook-endpoints/{id}/test.",
    ),
];

pub fn is_built_in(name: &str) -> bool {
    BUILT_IN.iter().any(|(n, _)| *n == name)
}

/// Whether `name` is in a family of the built-in types (`order.`, `endpoint.`, …): such names
/// are Switchyard's, so a tenant's own type cannot pass for one of its events to the
/// endpoints that subscribe to the family (`order.*`).
pub fn is_reserved(name: &str) -> bool {
    BUILT_IN.iter().any(|(n, _)| {
        let family = n.split('.').next().unwrap_or(n);
        name.split('.').next() == Some(family) && name.contains('.')
    })
}

/// The checks the types cannot make: a schema's size, and that it compiles. Returns the schema's JSON text, which
/// is stored as it is (a `json` column), so every number reads back as it was sent.
fn schema_text(
    schema: Option<std::collections::BTreeMap<String, serde_json::Value>>,
) -> Result<Option<String>> {
    let schema = schema.map(|s| serde_json::Value::Object(s.into_iter().collect()).to_string());
    if schema.as_ref().is_some_and(|s| s.len() > 64 * 1024) {
        return Err(Error::invalid(
            "parameter_invalid",
            "schema",
            "`schema` must be a JSON Schema object of at most 64 KiB.",
        ));
    }
    if let Some(text) = &schema {
        schema::check(text)?;
    }
    Ok(schema)
}

const COLUMNS: &str =
    "name, description, schema, deprecated, false AS built_in, created_at, updated_at";

/// Built-in types first, then the tenant's own, by name.
pub async fn list(pool: &PgPool, scope: Scope) -> Result<Vec<EventType>> {
    let own = sqlx::query_as::<_, EventType>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM event_types WHERE tenant_id = $1 AND mode = $2 ORDER BY name"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .fetch_all(pool)
    .await?;
    Ok(BUILT_IN
        .iter()
        .map(|(name, description)| EventType {
            name: (*name).to_owned(),
            description: Some((*description).to_owned()),
            schema: None,
            deprecated: false,
            built_in: true,
            created_at: None,
            updated_at: None,
        })
        .chain(own)
        .collect())
}

pub async fn create(
    conn: &mut PgConnection,
    scope: Scope,
    input: CreateEventType,
) -> Result<EventType> {
    let name = input.name.as_str();
    let schema = schema_text(input.schema)?;
    let exists = || {
        Error::conflict(
            "event_type_exists",
            Some("name"),
            format!("The event type `{name}` already exists."),
        )
    };
    if is_built_in(name) {
        return Err(exists());
    }
    if is_reserved(name) {
        let family = name.split('.').next().unwrap_or(name);
        return Err(Error::invalid(
            "event_type_reserved",
            "name",
            format!("`{family}.*` names are Switchyard's own events; choose another prefix."),
        ));
    }
    sqlx::query_as::<_, EventType>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO event_types (tenant_id, mode, name, description, schema, deprecated)
         VALUES ($1, $6, $2, $3, $4::text::json, $5)
         ON CONFLICT (tenant_id, mode, name) DO NOTHING
         RETURNING {COLUMNS}"
    )))
    .bind(scope.tenant_id)
    .bind(name)
    .bind(input.description.as_deref())
    .bind(schema)
    .bind(input.deprecated.unwrap_or(false))
    .bind(scope.mode.as_str())
    .fetch_optional(conn)
    .await?
    .ok_or_else(exists)
}

pub async fn update(
    conn: &mut PgConnection,
    scope: Scope,
    name: &str,
    input: UpdateEventType,
) -> Result<EventType> {
    if is_built_in(name) {
        return Err(Error::conflict(
            "event_type_built_in",
            None,
            format!("`{name}` is built in and cannot be changed."),
        ));
    }
    let schema = schema_text(input.schema)?;
    sqlx::query_as::<_, EventType>(sqlx::AssertSqlSafe(format!(
        "UPDATE event_types
            SET description = COALESCE($3, description), schema = COALESCE($4::text::json, schema),
                deprecated = COALESCE($5, deprecated), updated_at = now()
          WHERE tenant_id = $1 AND name = $2 AND mode = $6
      RETURNING {COLUMNS}"
    )))
    .bind(scope.tenant_id)
    .bind(name)
    .bind(input.description.as_deref())
    .bind(schema)
    .bind(input.deprecated)
    .bind(scope.mode.as_str())
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| Error::not_found("event type"))
}

/// Exact names in an endpoint filter must be catalogued (built in or the tenant's own), so a
/// typo is an error instead of an endpoint that never receives anything.
pub async fn check_filter(
    conn: &mut PgConnection,
    scope: Scope,
    patterns: &[String],
) -> Result<()> {
    let exact: Vec<&String> = patterns
        .iter()
        .filter(|p| !p.ends_with('*') && !is_built_in(p))
        .collect();
    if exact.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM event_types WHERE tenant_id = $1 AND mode = $3 AND name = ANY($2)",
    )
    .bind(scope.tenant_id)
    .bind(exact.iter().map(|s| s.as_str()).collect::<Vec<_>>())
    .bind(scope.mode.as_str())
    .fetch_all(conn)
    .await?;
    if let Some((i, unknown)) = patterns
        .iter()
        .enumerate()
        .find(|(_, p)| exact.contains(p) && !known.contains(p))
    {
        return Err(Error::invalid(
            "unknown_event_type",
            format!("event_types[{i}]"),
            format!(
                "`{unknown}` is not a known event type; see GET /v1/event-types, or add it there."
            ),
        ));
    }
    Ok(())
}

/// A catalogued type of the tenant's own, as `POST /v1/events` needs it.
pub struct Entry {
    pub schema: Option<serde_json::Value>,
    /// The entry's version: a changed schema is compiled again.
    pub updated_at: DateTime<Utc>,
}

/// The tenant's own entry for `name`, if there is one.
pub async fn schema_of(conn: &mut PgConnection, scope: Scope, name: &str) -> Result<Option<Entry>> {
    let row: Option<(Option<serde_json::Value>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT schema, updated_at FROM event_types
          WHERE tenant_id = $1 AND mode = $2 AND name = $3",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(name)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(schema, updated_at)| Entry { schema, updated_at }))
}
