//! Deliveries as partners and operators see them: listed per endpoint, retried by hand, and
//! test sends that show an endpoint's answer at once.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    attempts::Attempt, delivery, record, send, send::AttemptResult, transport::Transport,
    webhook_id,
};
use crate::{
    crypto::Keyring,
    error::{Error, Result},
    events::{self, Audience, NewEvent, Source, types::EventTypeName},
    jobs::insert_jobs_from_sql,
    queue::WEBHOOK_DELIVERIES,
    tenants::Scope,
};

/// One message to one endpoint.
#[derive(Clone, Debug, Serialize, poem_openapi::Object, sqlx::FromRow)]
#[oai(rename = "WebhookDelivery")]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub message_id: Uuid,
    /// The `webhook-id` header (stable across attempts and retries).
    pub webhook_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i32,
    #[oai(nullable)]
    pub last_status_code: Option<i32>,
    /// When the next attempt is due, while `pending`.
    #[oai(nullable)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SELECT: &str = "SELECT d.id, d.endpoint_id, d.message_id,
        'msg_' || replace(d.message_id::text, '-', '') AS webhook_id, m.event_type, d.status,
        d.attempts, d.last_status_code, d.next_attempt_at, d.created_at, d.updated_at
   FROM webhook_deliveries d
   JOIN webhook_messages m ON m.id = d.message_id
   JOIN webhook_endpoints e ON e.id = d.endpoint_id";

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, poem_openapi::Enum, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[oai(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }
}

/// Deliveries to an endpoint of this tenant and mode, newest first.
pub async fn list_for_endpoint(
    pool: &PgPool,
    scope: Scope,
    endpoint_id: Uuid,
    status: Option<DeliveryStatus>,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as::<_, Delivery>(sqlx::AssertSqlSafe(format!(
        "{SELECT}
          WHERE d.endpoint_id = $2 AND d.tenant_id = $1 AND e.tenant_id = $1 AND e.mode = $3
            AND ($4::text IS NULL OR d.status = $4) AND ($6::uuid IS NULL OR d.id < $6)
          ORDER BY d.id DESC LIMIT $5"
    )))
    .bind(scope.tenant_id)
    .bind(endpoint_id)
    .bind(scope.mode.as_str())
    .bind(status)
    .bind(limit)
    .bind(starting_after)
    .fetch_all(pool)
    .await?)
}

/// Deliveries of an event of this tenant and mode, one per endpoint, oldest first (at most
/// `limit`; an event reaches a tenant's endpoints, so a page is enough).
pub async fn list_for_event(
    pool: &PgPool,
    scope: Scope,
    event_id: Uuid,
    limit: i64,
) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as::<_, Delivery>(sqlx::AssertSqlSafe(format!(
        "{SELECT}
          WHERE m.event_id = $2 AND m.tenant_id = $1 AND d.tenant_id = $1 AND e.tenant_id = $1
            AND e.mode = $3
          ORDER BY d.id LIMIT $4"
    )))
    .bind(scope.tenant_id)
    .bind(event_id)
    .bind(scope.mode.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

pub async fn get<'e>(db: impl sqlx::PgExecutor<'e>, scope: Scope, id: Uuid) -> Result<Delivery> {
    sqlx::query_as::<_, Delivery>(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE d.id = $2 AND d.tenant_id = $1 AND e.tenant_id = $1 AND e.mode = $3"
    )))
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .fetch_optional(db)
    .await?
    .ok_or_else(|| Error::not_found("webhook delivery"))
}

/// Sends a finished delivery (failed, cancelled or even succeeded) again, with the endpoint's
/// full retry schedule and the same `webhook-id`, on `conn` (the caller's transaction). A
/// delivery still pending is already scheduled: 409.
pub async fn retry(
    conn: &mut PgConnection,
    scope: Scope,
    id: Uuid,
    default_max_attempts: i32,
) -> Result<Delivery> {
    let row: Option<(DeliveryStatus, String, Option<i32>, bool, bool)> = sqlx::query_as(
        "SELECT d.status, e.status, cardinality(e.retry_schedule_ms) + 1, e.deleted_at IS NULL,
                m.payload IS NULL
           FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
           JOIN webhook_messages m ON m.id = d.message_id
          WHERE d.id = $2 AND d.tenant_id = $1 AND e.tenant_id = $1 AND e.mode = $3
            FOR UPDATE OF d",
    )
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let (status, endpoint_status, max_attempts, endpoint_alive, payload_gone) =
        row.ok_or_else(|| Error::not_found("webhook delivery"))?;
    if !endpoint_alive {
        return Err(Error::not_found("webhook delivery"));
    }
    if status == DeliveryStatus::Pending {
        return Err(Error::conflict(
            "delivery_pending",
            None,
            "This delivery is still pending: its next attempt is already scheduled.",
        ));
    }
    if payload_gone {
        return Err(Error::conflict(
            "payload_expired",
            None,
            "The message payload has passed its retention period; it cannot be sent again.",
        ));
    }
    if endpoint_status != "enabled" {
        return Err(Error::conflict(
            "endpoint_disabled",
            None,
            "The endpoint is disabled; enable it before retrying its deliveries.",
        ));
    }
    // Pending in the endpoint's dispatch group: the dispatcher admits it under its caps.
    sqlx::query(concat!(
        "WITH j AS (",
        insert_jobs_from_sql!(
            "SELECT $1, $2, d.tenant_id, d.id, $3, d.endpoint_id, now(), 'pending', 0, NULL,
                        NULL
                   FROM webhook_deliveries d WHERE d.id = $4"
        ),
        ") UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(),
                      updated_at = now(), job_id = $1
                WHERE id = $4"
    ))
    .bind(Uuid::now_v7())
    .bind(WEBHOOK_DELIVERIES)
    .bind(max_attempts.unwrap_or(default_max_attempts))
    .bind(id)
    .execute(&mut *conn)
    .await?;
    get(conn, scope, id).await
}

/// Body of `POST /v1/webhook-endpoints/{id}/test`.
#[derive(Clone, Debug, Default, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct TestSend {
    /// Event type of the test message; default `webhook.test`.
    #[oai(nullable)]
    pub event_type: Option<EventTypeName>,
}

/// A test send that happened, not yet recorded.
pub struct TestSent {
    target: delivery::Target,
    event: NewEvent,
    result: AttemptResult,
}

/// Sends a signed test message to the endpoint now, from this process. Writes nothing: the
/// message, a finished delivery and the attempt are recorded afterwards by [`record_test`], so
/// a test send that is interrupted (client gone, API killed, shutdown) leaves nothing behind,
/// and a test message is never pending (it cannot hold up a FIFO endpoint).
pub async fn send_test(
    pool: &PgPool,
    transport: &dyn Transport,
    keyring: &Keyring,
    scope: Scope,
    endpoint_id: Uuid,
    input: TestSend,
) -> Result<TestSent> {
    let event_type = input
        .event_type
        .map_or_else(|| "webhook.test".to_owned(), EventTypeName::into_string);
    let (message_id, delivery_id) = (Uuid::now_v7(), Uuid::now_v7());
    let data = serde_json::json!({
        "endpoint_id": endpoint_id,
        "webhook_id": webhook_id(message_id),
        "message": "A test message from Switchyard.",
    });
    let mut event = NewEvent::new(
        scope.tenant_id,
        scope.mode,
        event_type,
        data,
        Source::Test,
        Utc::now().trunc_subsecs(6),
    );
    event.audience = Audience::Endpoint;
    event.endpoint_id = Some(endpoint_id);
    let payload = events::payload(&event.event_type, event.occurred_at, &event.data);
    let target =
        delivery::load_test_target(pool, scope, endpoint_id, message_id, delivery_id, &payload)
            .await?
            .ok_or_else(|| Error::not_found("webhook endpoint"))?;
    let credentials = target.sealed.open(keyring, target.db_now)?;
    let timeout = target.timeout_or(send::DEFAULT_TIMEOUT);
    let result = transport.send(&target, &credentials, timeout).await;
    Ok(TestSent {
        target,
        event,
        result,
    })
}

/// Records a test send on `conn` (the caller's transaction) and returns its attempt.
pub async fn record_test(
    conn: &mut PgConnection,
    scope: Scope,
    sent: &TestSent,
) -> Result<Attempt> {
    let id = record::record_test(&mut *conn, &sent.target, &sent.event, &sent.result).await?;
    super::attempts::get(conn, scope.tenant_id, id).await
}
