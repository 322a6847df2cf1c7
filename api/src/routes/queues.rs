//! Queues for operators (admin token): what each holds, and pausing and resuming one
//! cluster-wide.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::{Request, http::StatusCode, web::Data};
use poem_openapi::{Object, OpenApi, param::Path};
use serde::Serialize;
use switchyard_shared::{audit::ActorKind, dispatch::pauses, jobs};

use super::ApiTags;
use crate::{
    AppState,
    auth::{Admin, actor},
    error::ApiError,
    json::Json,
};

#[derive(Serialize, Object)]
pub struct QueueState {
    pub queue: String,
    /// Jobs waiting in the ledger (due now or later).
    pub pending: i64,
    /// Pending jobs whose time has come.
    pub due: i64,
    /// Jobs pushed to Redis, not yet claimed.
    pub queued: i64,
    pub running: i64,
    /// Jobs that gave up (attempts used up); each keeps its `last_error`. Kept for the dead
    /// job retention (30 days by default).
    pub dead: i64,
    pub oldest_due_age_seconds: f64,
    /// Ready tasks in Redis (bounded by the high-water mark).
    pub redis_ready: u64,
    pub high_water_mark: u32,
    /// Paused by an operator: nothing of it is dispatched, claimed or started.
    pub paused: bool,
    #[oai(nullable)]
    pub paused_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Object)]
pub struct QueueList {
    pub data: Vec<QueueState>,
}

/// A queue's pause state after a pause or resume.
#[derive(Serialize, Object)]
pub struct QueuePause {
    pub queue: String,
    pub paused: bool,
    #[oai(nullable)]
    pub paused_at: Option<DateTime<Utc>>,
}

pub struct QueuesApi;

/// The queue named in the path, if Switchyard has it.
fn known(state: &AppState, queue: &str) -> Result<&'static str, ApiError> {
    state
        .services
        .queues
        .names()
        .iter()
        .copied()
        .find(|q| *q == queue)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "resource_not_found",
                "No such queue.",
            )
        })
}

#[OpenApi(prefix_path = "/admin/v1/queues", tag = "ApiTags::Admin")]
impl QueuesApi {
    /// Work per queue: the ledger's unfinished jobs, Redis' ready window, and whether an
    /// operator paused it.
    #[oai(path = "/", method = "get", operation_id = "listQueues")]
    async fn list(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
    ) -> Result<Json<QueueList>, ApiError> {
        let s = &state.services;
        let paused = pauses::paused(&s.pool).await?;
        let mut data = Vec::new();
        for q in jobs::queue_stats(&s.pool, s.queues.names()).await? {
            let redis_ready = s
                .queues
                .depth(&q.queue)
                .await
                .map_err(switchyard_shared::Error::from)?;
            let paused_at = paused.iter().find(|p| p.0 == q.queue).map(|p| p.1);
            data.push(QueueState {
                queue: q.queue,
                pending: q.pending,
                due: q.due,
                queued: q.queued,
                running: q.running,
                dead: q.dead,
                oldest_due_age_seconds: q.oldest_due_age_seconds,
                redis_ready,
                high_water_mark: s.queues.high_water_mark(),
                paused: paused_at.is_some(),
                paused_at,
            });
        }
        debug_assert_eq!(data.len(), s.queues.names().len());
        Ok(Json(QueueList { data }))
    }

    /// Pause a queue on every replica: within one dispatch interval (100 ms by default) no
    /// job of it is dispatched, claimed or started; jobs already running finish, and tasks
    /// already in Redis go back to the ledger. Its jobs wait, none is lost. Audited.
    #[oai(path = "/:queue/pause", method = "post", operation_id = "pauseQueue")]
    async fn pause(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        queue: Path<String>,
    ) -> Result<Json<QueuePause>, ApiError> {
        let queue = known(&state, &queue.0)?;
        let who = actor(req, ActorKind::Admin);
        let by = who.request_id.clone().unwrap_or_else(|| "admin".into());
        let at = pauses::pause_audited(&state.services.pool, &who, queue, &by).await?;
        Ok(Json(QueuePause {
            queue: queue.to_owned(),
            paused: true,
            paused_at: Some(at),
        }))
    }

    /// Resume a paused queue: its due jobs are dispatched on the next pass. Audited.
    #[oai(path = "/:queue/resume", method = "post", operation_id = "resumeQueue")]
    async fn resume(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        queue: Path<String>,
    ) -> Result<Json<QueuePause>, ApiError> {
        let queue = known(&state, &queue.0)?;
        let who = actor(req, ActorKind::Admin);
        pauses::resume_audited(&state.services.pool, &who, queue).await?;
        Ok(Json(QueuePause {
            queue: queue.to_owned(),
            paused: false,
            paused_at: None,
        }))
    }
}
