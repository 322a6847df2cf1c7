//! Inbound events: the stored requests, their processing (the `inbound_events` job runs
//! [`process`]) and the API's view of them.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use super::{ActionType, Stored};
use crate::{
    error::{Error, Result},
    events::{CreateEvent, Source, publish::publish_from, types::EventTypeName},
    orders::feed,
    queue::JobTask,
    sync::runs::{self, Triggered},
    tenants::Scope,
};

/// Where an inbound event stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, poem_openapi::Enum, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum InboundStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Ignored,
    /// Failed verification (or not acceptable); never processed.
    Rejected,
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
pub struct InboundEvent {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub status: InboundStatus,
    /// The sender's event id, used to suppress duplicates.
    #[oai(nullable)]
    pub dedupe_id: Option<String>,
    /// `verified`, `unverified` (scheme `none`) or `rejected`.
    pub verification: String,
    /// Why it was rejected or failed.
    #[oai(nullable)]
    pub reason: Option<String>,
    #[oai(nullable)]
    pub content_type: Option<String>,
    /// Request headers, with credentials and cookies redacted.
    pub headers: Value,
    /// The raw body as text (base64 in `body_base64` when it is not UTF-8).
    #[oai(nullable)]
    #[sqlx(skip)]
    pub body: Option<String>,
    #[oai(nullable)]
    #[sqlx(skip)]
    pub body_base64: Option<String>,
    #[serde(skip)]
    #[oai(skip)]
    #[sqlx(rename = "body")]
    pub raw: Vec<u8>,
    /// Processing runs so far.
    pub attempts: i32,
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// What processing produced (`{"event_id": …}` for `emit_event`).
    #[oai(nullable)]
    pub result: Option<Value>,
    pub received_at: DateTime<Utc>,
    #[oai(nullable)]
    pub processed_at: Option<DateTime<Utc>>,
}

impl InboundEvent {
    fn with_body(mut self) -> Self {
        match String::from_utf8(self.raw.clone()) {
            Ok(text) => self.body = Some(text),
            Err(_) => self.body_base64 = Some(STANDARD.encode(&self.raw)),
        }
        self
    }
}

const COLUMNS: &str = "id, integration_id, status, dedupe_id, verification, reason, \
    content_type, headers, body, attempts, last_error, result, received_at, processed_at";

/// The inbound event `id` of `scope`, read through `db` (a pool, or the transaction that just
/// changed it).
pub async fn get<'e>(
    db: impl sqlx::PgExecutor<'e>,
    scope: Scope,
    id: Uuid,
) -> Result<InboundEvent> {
    sqlx::query_as::<_, InboundEvent>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM inbound_events WHERE tenant_id = $1 AND mode = $2 AND id = $3"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(db)
    .await?
    .map(InboundEvent::with_body)
    .ok_or_else(|| Error::not_found("inbound event"))
}

/// Filters of the list.
#[derive(Default)]
pub struct Filter {
    pub integration_id: Option<Uuid>,
    pub status: Option<InboundStatus>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// Inbound events of the tenant and mode, newest first.
pub async fn list(
    pool: &PgPool,
    scope: Scope,
    filter: Filter,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<InboundEvent>> {
    Ok(
        sqlx::query_as::<_, InboundEvent>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM inbound_events
          WHERE tenant_id = $1 AND mode = $2 AND ($3::uuid IS NULL OR id < $3)
            AND ($5::uuid IS NULL OR integration_id = $5)
            AND ($6::text IS NULL OR status = $6)
            AND ($7::timestamptz IS NULL OR received_at >= $7)
            AND ($8::timestamptz IS NULL OR received_at < $8)
          ORDER BY id DESC LIMIT $4"
        )))
        .bind(scope.tenant_id)
        .bind(scope.mode.as_str())
        .bind(starting_after)
        .bind(limit)
        .bind(filter.integration_id)
        .bind(filter.status)
        .bind(filter.since)
        .bind(filter.until)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(InboundEvent::with_body)
        .collect(),
    )
}

/// What one processing run did.
pub enum Processed {
    /// Done (or nothing to do); the fan-out tasks of the events it wrote, to push.
    Done(Vec<JobTask>),
    /// A sync run started: its task, to push.
    StartedSyncRun(JobTask),
    /// The action cannot succeed with this input (not retried): recorded as `failed`.
    Failed,
}

/// The body as JSON Postgres can store (no `\u0000` anywhere), or `None`: a body that is not
/// fails its action at once (a retry of a body refused on arrival included), never after
/// every attempt.
fn usable_json(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(|v| !super::receive::holds_nul(v))
}

/// Processes inbound event `id` on `conn` (the job's transaction): its integration's action,
/// and the event's new status, together.
pub async fn process(conn: &mut PgConnection, id: Uuid) -> Result<Processed> {
    type Row = (
        Uuid,
        Uuid,
        String,
        InboundStatus,
        Vec<u8>,
        Option<Json<Stored>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT e.tenant_id, e.integration_id, e.mode, e.status, e.body, i.inbound
               FROM inbound_events e JOIN integrations i ON i.id = e.integration_id
              WHERE e.id = $1 FOR UPDATE OF e",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((tenant_id, _, mode, status, body, stored)) = row else {
        return Ok(Processed::Done(vec![]));
    };
    if !matches!(
        status,
        InboundStatus::Pending | InboundStatus::Processing | InboundStatus::Failed
    ) {
        return Ok(Processed::Done(vec![]));
    }
    let scope = Scope {
        tenant_id,
        mode: crate::mode::Mode::parse(&mode)?,
    };
    let Some(stored) = stored else {
        // Inbound was turned off since: nothing to do with it.
        finish(
            conn,
            id,
            InboundStatus::Ignored,
            None,
            Some("inbound is off for the integration"),
        )
        .await?;
        return Ok(Processed::Done(vec![]));
    };
    match stored.0.action.kind {
        ActionType::Store => {
            finish(conn, id, InboundStatus::Completed, None, None).await?;
            Ok(Processed::Done(vec![]))
        }
        ActionType::EmitEvent => {
            let data = match usable_json(&body) {
                Some(Value::Object(map)) => map.into_iter().collect(),
                _ => {
                    finish(
                        conn,
                        id,
                        InboundStatus::Failed,
                        None,
                        Some("`emit_event` needs a JSON object body (without `\\u0000`)"),
                    )
                    .await?;
                    return Ok(Processed::Failed);
                }
            };
            let event_type =
                stored.0.action.event_type.clone().unwrap_or_else(|| {
                    EventTypeName::new("inbound.received").expect("a valid name")
                });
            let input = CreateEvent {
                event_type,
                data,
                ordering_key: None,
                occurred_at: None,
            };
            match publish_from(conn, scope, input, Source::Inbound).await {
                Ok((event, task)) => {
                    let result = json!({ "event_id": event.id });
                    finish(conn, id, InboundStatus::Completed, Some(result), None).await?;
                    Ok(Processed::Done(vec![task]))
                }
                // The type left the catalog, or the body breaks its schema: not retried.
                Err(Error::Invalid { detail, .. } | Error::Unprocessable { detail, .. }) => {
                    finish(conn, id, InboundStatus::Failed, None, Some(&detail)).await?;
                    Ok(Processed::Failed)
                }
                Err(e) => Err(e),
            }
        }
        ActionType::SyncRun => {
            let Some(configuration) = stored.0.action.configuration_id else {
                let reason = "no sync configuration";
                finish(conn, id, InboundStatus::Failed, None, Some(reason)).await?;
                return Ok(Processed::Failed);
            };
            match runs::trigger_inbound(conn, scope, configuration).await {
                Ok(Triggered::Started(run, task)) => {
                    let result = json!({ "run_id": run, "follow_up": false });
                    finish(conn, id, InboundStatus::Completed, Some(result), None).await?;
                    Ok(Processed::StartedSyncRun(task))
                }
                Ok(Triggered::FollowUp(active)) => {
                    let result = json!({ "run_id": active, "follow_up": true });
                    finish(conn, id, InboundStatus::Completed, Some(result), None).await?;
                    Ok(Processed::Done(vec![]))
                }
                // The configuration is gone or disabled: not retried.
                Err(Error::NotFound { .. }) => {
                    let reason = "the sync configuration no longer exists";
                    finish(conn, id, InboundStatus::Failed, None, Some(reason)).await?;
                    Ok(Processed::Failed)
                }
                Err(Error::Conflict { detail, .. }) => {
                    finish(conn, id, InboundStatus::Failed, None, Some(&detail)).await?;
                    Ok(Processed::Failed)
                }
                Err(e) => Err(e),
            }
        }
        ActionType::OrderFeed => {
            let action = &stored.0.action;
            let (Some(provider), Some(mapping)) = (&action.provider, &action.mapping) else {
                finish(
                    conn,
                    id,
                    InboundStatus::Failed,
                    None,
                    Some("no order mapping"),
                )
                .await?;
                return Ok(Processed::Failed);
            };
            let Some(body) = usable_json(&body) else {
                let reason = "`order_feed` needs a JSON body (without `\\u0000`)";
                finish(conn, id, InboundStatus::Failed, None, Some(reason)).await?;
                return Ok(Processed::Failed);
            };
            // The order's writes and this event's outcome commit together: a retried or
            // replayed webhook finds the order and changes only what differs.
            match feed::apply(conn, scope, provider, mapping, &body).await {
                Ok(a) => {
                    let result = json!({
                        "order_id": a.order.id,
                        "created": a.created,
                        "events": a.events,
                        "note": a.note,
                    });
                    finish(conn, id, InboundStatus::Completed, Some(result), None).await?;
                    Ok(Processed::Done(a.tasks))
                }
                Err(Error::Invalid { detail, .. } | Error::Conflict { detail, .. }) => {
                    finish(conn, id, InboundStatus::Failed, None, Some(&detail)).await?;
                    Ok(Processed::Failed)
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Records the outcome of a processing run (a failed run that will be retried leaves the
/// status to the job: see [`record_attempt`]).
async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    status: InboundStatus,
    result: Option<Value>,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE inbound_events
            SET status = $2, result = $3, reason = COALESCE($4, reason),
                attempts = attempts + 1, processed_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(result.map(Json))
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// A run that ended in an error: counted, its error kept; the job retries it, and once its
/// attempts are used up the event is `failed` (`dead` = true).
pub async fn record_attempt(
    conn: &mut PgConnection,
    id: Uuid,
    error: &str,
    dead: bool,
) -> Result<()> {
    sqlx::query(
        "UPDATE inbound_events
            SET attempts = attempts + 1, last_error = $2,
                status = CASE WHEN $3 THEN 'failed' ELSE 'processing' END,
                processed_at = CASE WHEN $3 THEN now() END
          WHERE id = $1 AND status IN ('pending', 'processing')",
    )
    .bind(id)
    .bind(error)
    .bind(dead)
    .execute(conn)
    .await?;
    Ok(())
}

/// Queues inbound event `id` to be processed again (on the caller's transaction): a failed,
/// ignored or completed one. Returns it and the job's task to push after commit.
pub async fn retry(conn: &mut PgConnection, scope: Scope, id: Uuid) -> Result<JobTask> {
    let status: Option<InboundStatus> = sqlx::query_scalar(
        "SELECT status FROM inbound_events
          WHERE tenant_id = $1 AND mode = $2 AND id = $3 FOR UPDATE",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match status {
        None => return Err(Error::not_found("inbound event")),
        Some(InboundStatus::Rejected) => {
            return Err(Error::conflict(
                "inbound_event_rejected",
                None,
                "A rejected request (failed verification) is never processed.",
            ));
        }
        Some(InboundStatus::Pending | InboundStatus::Processing) => {
            return Err(Error::conflict(
                "inbound_event_pending",
                None,
                "The event is still being processed.",
            ));
        }
        Some(_) => {}
    }
    let job = crate::jobs::NewJob::new(
        crate::queue::INBOUND_EVENTS,
        scope.tenant_id,
        id,
        super::receive::PROCESS_MAX_ATTEMPTS,
    );
    sqlx::query("UPDATE inbound_events SET status = 'pending', last_error = NULL WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    crate::jobs::bind_insert(
        sqlx::query(crate::jobs::insert_jobs_sql!()),
        std::slice::from_ref(&job),
    )
    .execute(&mut *conn)
    .await?;
    Ok(job.task())
}
