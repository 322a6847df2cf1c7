//! Fan-out: an order event becomes one webhook message and one delivery (+ job) per endpoint
//! subscribed to its type. Re-running it for the same event changes nothing (unique keys).

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::event_types;
use crate::{
    error::Result,
    jobs::{self, NewJob},
    orders::OrderEvent,
    queue::WEBHOOK_DELIVERIES,
};

/// The enabled endpoints of a tenant and their filters.
#[derive(sqlx::FromRow)]
pub struct Subscription {
    pub id: Uuid,
    pub event_types: Vec<String>,
}

pub async fn subscriptions(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<Subscription>> {
    Ok(sqlx::query_as::<_, Subscription>(
        "SELECT id, event_types FROM webhook_endpoints
          WHERE tenant_id = $1 AND status = 'enabled' AND deleted_at IS NULL",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?)
}

/// The exact body sent for an event: `{"type", "timestamp", "data"}` (DESIGN §4).
pub fn payload(event: &OrderEvent) -> String {
    serde_json::json!({
        "type": event.r#type,
        "timestamp": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": event.data,
    })
    .to_string()
}

/// Writes the message and the deliveries for the endpoints among `subs` that want this event.
/// Returns the ids of the delivery jobs created (to nudge after commit).
pub async fn fan_out(
    conn: &mut PgConnection,
    event: &OrderEvent,
    subs: &[Subscription],
    max_attempts: i32,
) -> Result<Vec<Uuid>> {
    let message_id: Uuid = sqlx::query_scalar(
        "WITH ins AS (
            INSERT INTO webhook_messages (id, tenant_id, event_id, event_type, payload)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (event_id) DO NOTHING RETURNING id)
         SELECT id FROM ins UNION ALL SELECT id FROM webhook_messages WHERE event_id = $3
         LIMIT 1",
    )
    .bind(Uuid::now_v7())
    .bind(event.tenant_id)
    .bind(event.id)
    .bind(&event.r#type)
    .bind(payload(event))
    .fetch_one(&mut *conn)
    .await?;

    let endpoints: Vec<Uuid> = subs
        .iter()
        .filter(|s| event_types::matches_any(&s.event_types, &event.r#type))
        .map(|s| s.id)
        .collect();
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let delivery_ids: Vec<Uuid> = endpoints.iter().map(|_| Uuid::now_v7()).collect();
    let created: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id)
         SELECT d, $2, $3, e FROM UNNEST($1::uuid[], $4::uuid[]) AS t(d, e)
         ON CONFLICT (message_id, endpoint_id) DO NOTHING RETURNING id",
    )
    .bind(&delivery_ids)
    .bind(event.tenant_id)
    .bind(message_id)
    .bind(&endpoints)
    .fetch_all(&mut *conn)
    .await?;
    let new_jobs: Vec<NewJob> = created
        .iter()
        .map(|d| NewJob::new(WEBHOOK_DELIVERIES, event.tenant_id, *d, max_attempts))
        .collect();
    jobs::insert(conn, &new_jobs).await?;
    Ok(new_jobs.iter().map(|j| j.id).collect())
}
