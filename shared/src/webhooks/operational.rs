//! Operational events about a tenant's endpoints (`endpoint.disabled`, `endpoint.recovered`),
//! delivered like any message to the tenant's endpoints marked `operational` (same mode), and
//! only to those: order events never go there, and these never go to ordinary endpoints.

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::event_types;
use crate::{error::Result, queue::WEBHOOK_DELIVERIES};

#[derive(sqlx::FromRow)]
struct Target {
    id: Uuid,
    event_types: Vec<String>,
    max_attempts: Option<i32>,
}

/// Emits `event_type` about `endpoint_id` (with `data`, to which the endpoint's id and URL are
/// added). Returns how many deliveries were created (pending: wake the dispatcher).
pub async fn emit(
    pool: &PgPool,
    endpoint_id: Uuid,
    event_type: &str,
    mut data: Value,
    default_max_attempts: i32,
) -> Result<usize> {
    let subject: Option<(Uuid, String, String)> =
        sqlx::query_as("SELECT tenant_id, mode, url FROM webhook_endpoints WHERE id = $1")
            .bind(endpoint_id)
            .fetch_optional(pool)
            .await?;
    let Some((tenant_id, mode, url)) = subject else {
        return Ok(0);
    };
    let targets = sqlx::query_as::<_, Target>(
        "SELECT id, event_types, cardinality(retry_schedule_ms) + 1 AS max_attempts
           FROM webhook_endpoints
          WHERE tenant_id = $1 AND mode = $2 AND operational AND status = 'enabled'
            AND deleted_at IS NULL AND id <> $3",
    )
    .bind(tenant_id)
    .bind(&mode)
    .bind(endpoint_id)
    .fetch_all(pool)
    .await?;
    let targets: Vec<Target> = targets
        .into_iter()
        .filter(|t| event_types::matches_any(&t.event_types, event_type))
        .collect();
    if targets.is_empty() {
        return Ok(0);
    }
    if let Value::Object(map) = &mut data {
        map.insert("endpoint_id".into(), json!(endpoint_id));
        map.insert("url".into(), json!(url));
    }
    let message_id = Uuid::now_v7();
    let payload = json!({
        "type": event_type,
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string();
    let deliveries: Vec<Uuid> = targets.iter().map(|_| Uuid::now_v7()).collect();
    let jobs: Vec<Uuid> = targets.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "WITH m AS (
            INSERT INTO webhook_messages (id, tenant_id, event_id, event_type, payload)
            VALUES ($1, $2, $1, $3, $4)),
         d AS (
            INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id)
            SELECT t.d, $2, $1, t.e FROM UNNEST($5::uuid[], $6::uuid[]) AS t(d, e))
         INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, group_key)
         SELECT t.j, $8, $2, t.d, t.ma, t.e
           FROM UNNEST($7::uuid[], $5::uuid[], $6::uuid[], $9::int[]) AS t(j, d, e, ma)",
    )
    .bind(message_id)
    .bind(tenant_id)
    .bind(event_type)
    .bind(payload)
    .bind(&deliveries)
    .bind(targets.iter().map(|t| t.id).collect::<Vec<_>>())
    .bind(&jobs)
    .bind(WEBHOOK_DELIVERIES)
    .bind(
        targets
            .iter()
            .map(|t| t.max_attempts.unwrap_or(default_max_attempts))
            .collect::<Vec<_>>(),
    )
    .execute(pool)
    .await?;
    Ok(targets.len())
}
