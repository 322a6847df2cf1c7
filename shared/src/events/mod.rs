//! The event outbox (docs/architecture.md §4). Every event a tenant's endpoints may receive is
//! an `events` row, written by its producer in the producer's own statement: partners' own
//! events ([`publish`]), order changes, operational notices about endpoints, test sends. The
//! fan-out (`webhooks::messages`) reads only this table, so a new producer is one
//! [`NewEvent`] in its statement and nothing else.

pub mod catalog;
pub mod dashboard;
pub mod id;
pub mod publish;
pub mod query;
pub mod schema;
pub mod types;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

pub use self::{
    id::{EventId, event_id},
    publish::{CreateEvent, publish},
    query::{Event, EventFilter, get, list},
};
use crate::{
    jobs::NewJob,
    mode::Mode,
    queue::{EVENT_FAN_OUT, JobTask},
};

/// Attempts of a fan-out: it only touches Postgres, so it fails only while Postgres is
/// unreachable (with the backoff, 25 attempts last over an hour); the cap stops a poison event
/// looping forever, and the later events of its ordering key then go on without it.
pub const FAN_OUT_MAX_ATTEMPTS: i32 = 25;

/// Who produced an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, poem_openapi::Enum, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Source {
    /// A partner, with `POST /v1/events`.
    Api,
    /// An order change.
    Order,
    /// An endpoint's health (`endpoint.disabled`, `endpoint.recovered`).
    Endpoint,
    /// A test send (`POST /v1/webhook-endpoints/{id}/test`).
    Test,
    /// An integration's connection health (`integration.unhealthy`, `integration.recovered`).
    Integration,
    /// An inbound webhook re-emitted as an event (`emit_event` action).
    Inbound,
    /// The end of a sync run (`sync.run.succeeded`, `sync.run.failed`).
    Sync,
}

/// Who receives an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Audience {
    /// Every ordinary endpoint of the tenant and mode whose filter matches.
    Endpoints,
    /// The tenant's operational endpoints, except `endpoint_id` (the one the notice is about).
    Operational,
    /// Only `endpoint_id` (a test send, recorded with its delivery; never fanned out).
    Endpoint,
}

/// A new event, inserted by [`insert_events_sql!`] inside its producer's statement.
#[derive(Clone, Debug, Serialize)]
pub struct NewEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub mode: Mode,
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: serde_json::Value,
    pub source: Source,
    pub audience: Audience,
    pub endpoint_id: Option<Uuid>,
    /// Events sharing a key reach each endpoint in the order they were written.
    pub ordering_key: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// The W3C trace context of the request writing it (`telemetry::trace`), if any.
    pub traceparent: Option<String>,
}

impl NewEvent {
    /// An event for the tenant's ordinary endpoints.
    pub fn new(
        tenant_id: Uuid,
        mode: Mode,
        event_type: impl Into<String>,
        data: serde_json::Value,
        source: Source,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        NewEvent {
            id: Uuid::now_v7(),
            tenant_id,
            mode,
            event_type: event_type.into(),
            data,
            source,
            audience: Audience::Endpoints,
            endpoint_id: None,
            ordering_key: None,
            occurred_at,
            traceparent: crate::telemetry::trace::current().map(|t| t.to_string()),
        }
    }

    /// The fan-out job of this event, inserted beside it (`jobs::insert_jobs_sql!`).
    pub fn job(&self) -> NewJob {
        NewJob::new(EVENT_FAN_OUT, self.tenant_id, self.id, FAN_OUT_MAX_ATTEMPTS)
    }
}

/// The outbox's one insert: the events bound (as a JSON array of [`NewEvent`], see
/// [`events_json`]) at parameter `$n`. Producers embed it as a CTE of their own statement
/// (`ev AS (insert_events_sql!("$6"))`), next to the events' jobs, so the business rows, the
/// events and their jobs commit together or not at all.
#[macro_export]
macro_rules! insert_events_sql {
    ($param:literal) => {
        concat!(
            "INSERT INTO events (id, tenant_id, mode, type, data, source, audience, endpoint_id,
                                 ordering_key, occurred_at, traceparent)
             SELECT e.id, e.tenant_id, e.mode, e.type, e.data, e.source, e.audience,
                    e.endpoint_id, e.ordering_key, e.occurred_at, e.traceparent
               FROM jsonb_populate_recordset(NULL::events, ",
            $param,
            "::jsonb) AS e"
        )
    };
}
pub use insert_events_sql;

/// The value to bind for [`insert_events_sql!`].
/// Writes one event with its fan-out job (one statement). Returns the task to push after it.
pub async fn insert_one<'e>(
    db: impl sqlx::PgExecutor<'e>,
    event: &NewEvent,
) -> crate::Result<JobTask> {
    let job = event.job();
    crate::jobs::bind_insert(
        sqlx::query(concat!(
            "WITH j AS (",
            crate::jobs::insert_jobs_sql!(),
            ") ",
            insert_events_sql!("$6")
        )),
        std::slice::from_ref(&job),
    )
    .bind(events_json(std::slice::from_ref(event)))
    .execute(db)
    .await?;
    Ok(job.task())
}

pub fn events_json(events: &[NewEvent]) -> sqlx::types::Json<&[NewEvent]> {
    sqlx::types::Json(events)
}

/// The exact body sent for an event: `{"type", "timestamp", "data"}` (README, "Requests").
pub fn payload(event_type: &str, occurred_at: DateTime<Utc>, data: &serde_json::Value) -> String {
    serde_json::json!({
        "type": event_type,
        "timestamp": occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}
