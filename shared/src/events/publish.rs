//! `POST /v1/events`: a partner's own event (`ncr.created`, `payment.completed`, …), checked
//! against the tenant's catalog and the type's JSON Schema, then written to the outbox with its
//! fan-out job. From there it goes exactly where an order event goes.

use crate::input::Time;
use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::Value;
use sqlx::{PgConnection, Row};

use super::{
    NewEvent, Source, catalog, events_json, insert_events_sql, schema, types::EventTypeName,
};
use crate::{
    error::{Error, Result},
    input::Text,
    jobs::{self, insert_jobs_sql},
    queue::JobTask,
    tenants::Scope,
};

/// Largest `data`, as JSON text.
pub const MAX_DATA_BYTES: usize = 256 * 1024;

/// Body of `POST /v1/events`.
#[derive(Clone, Debug, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CreateEvent {
    /// A type of your catalog (`GET /v1/event-types`), e.g. `ncr.created`. Built-in types
    /// (`order.*`, `endpoint.*`, `webhook.test`) are emitted by Switchyard only.
    #[serde(rename = "type")]
    #[oai(rename = "type")]
    pub event_type: EventTypeName,
    /// The event's payload, a JSON object of at most 256 KiB; checked against the type's
    /// schema when it has one. Webhooks carry it as `data`.
    pub data: BTreeMap<String, Value>,
    /// Events with the same key reach each endpoint in the order they were accepted (1 to 200
    /// characters), e.g. the id of the record they are about.
    #[oai(nullable)]
    pub ordering_key: Option<Text<1, 200>>,
    /// When it happened in your system (the webhook's `timestamp`); default: now.
    #[oai(nullable)]
    pub occurred_at: Option<Time>,
}

/// Checks `input` and writes the event and its fan-out job on `conn` (the caller's
/// transaction, which also records the idempotent answer). Returns the event as stored and the
/// job's task to push after commit.
pub async fn publish(
    conn: &mut PgConnection,
    scope: Scope,
    input: CreateEvent,
) -> Result<(super::Event, JobTask)> {
    publish_from(conn, scope, input, Source::Api).await
}

/// [`publish`] for another producer of partner-typed events (an inbound webhook).
pub async fn publish_from(
    conn: &mut PgConnection,
    scope: Scope,
    input: CreateEvent,
    source: Source,
) -> Result<(super::Event, JobTask)> {
    let event_type = input.event_type.into_string();
    if catalog::is_built_in(&event_type) {
        return Err(Error::invalid(
            "event_type_built_in",
            "type",
            format!("`{event_type}` is emitted by Switchyard itself; post a type of your own."),
        ));
    }
    let data = Value::Object(input.data.into_iter().collect());
    if data.to_string().len() > MAX_DATA_BYTES {
        return Err(Error::invalid(
            "parameter_invalid",
            "data",
            format!(
                "`data` must be at most {} KiB of JSON.",
                MAX_DATA_BYTES / 1024
            ),
        ));
    }
    let Some(entry) = catalog::schema_of(&mut *conn, scope, &event_type).await? else {
        return Err(Error::invalid(
            "unknown_event_type",
            "type",
            format!(
                "`{event_type}` is not in your event type catalog; add it with POST /v1/event-types."
            ),
        ));
    };
    if let Some(s) = &entry.schema {
        schema::validate(
            scope.tenant_id,
            scope.mode,
            &event_type,
            entry.updated_at,
            s,
            &data,
        )?;
    }
    // Postgres keeps microseconds: the answer must match what GET returns.
    let now = Utc::now().trunc_subsecs(6);
    let mut event = NewEvent::new(
        scope.tenant_id,
        scope.mode,
        event_type,
        data,
        source,
        input.occurred_at.map_or(now, |t| t.get().trunc_subsecs(6)),
    );
    event.ordering_key = input.ordering_key.map(Text::into_string);
    let job = event.job();
    let row = jobs::bind_insert(
        sqlx::query(concat!(
            "WITH j AS (",
            insert_jobs_sql!(),
            "), ev AS (",
            insert_events_sql!("$6"),
            " RETURNING created_at) SELECT created_at FROM ev"
        )),
        std::slice::from_ref(&job),
    )
    .bind(events_json(std::slice::from_ref(&event)))
    .fetch_one(&mut *conn)
    .await?;
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    Ok((super::Event::from_new(event, created_at), job.task()))
}
