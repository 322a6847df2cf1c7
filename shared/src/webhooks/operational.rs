//! Operational events about a tenant's endpoints (`endpoint.disabled`, `endpoint.recovered`),
//! written to the outbox for the tenant's endpoints marked `operational` (same mode), and only
//! those: ordinary events never go there, and these never go to ordinary endpoints.

use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::Result,
    events::{Audience, NewEvent, Source},
    mode::Mode,
    queue::JobTask,
};

/// Emits `event_type` about `endpoint_id` (with `data`, to which the endpoint's id and URL are
/// added). Returns the fan-out's task to push, or `None` when the endpoint is gone.
pub async fn emit(
    pool: &PgPool,
    endpoint_id: Uuid,
    event_type: &str,
    mut data: Value,
) -> Result<Option<JobTask>> {
    let subject: Option<(Uuid, String, String)> =
        sqlx::query_as("SELECT tenant_id, mode, url FROM webhook_endpoints WHERE id = $1")
            .bind(endpoint_id)
            .fetch_optional(pool)
            .await?;
    let Some((tenant_id, mode, url)) = subject else {
        return Ok(None);
    };
    if let Value::Object(map) = &mut data {
        map.insert("endpoint_id".into(), json!(endpoint_id));
        map.insert("url".into(), json!(url));
    }
    let mut event = NewEvent::new(
        tenant_id,
        Mode::parse(&mode)?,
        event_type,
        data,
        Source::Endpoint,
        Utc::now().trunc_subsecs(6),
    );
    event.audience = Audience::Operational;
    event.endpoint_id = Some(endpoint_id);
    Ok(Some(crate::events::insert_one(pool, &event).await?))
}
