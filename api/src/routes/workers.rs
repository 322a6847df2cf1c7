//! The worker pool as operators see it (admin token): every worker process seen in the last
//! day, running, stopped or lost.

use std::{sync::Arc, time::Duration};

use poem::web::Data;
use poem_openapi::{Object, OpenApi};
use switchyard_shared::workers::{self, Worker};

use super::ApiTags;
use crate::{AppState, auth::Admin, error::ApiError, json::Json};

/// How far back the list reaches.
const WINDOW: Duration = Duration::from_secs(24 * 3600);

#[derive(Object, serde::Serialize)]
pub struct WorkerList {
    /// Running workers first, then by their last report.
    pub data: Vec<Worker>,
}

pub struct WorkersApi;

#[OpenApi(prefix_path = "/admin/v1/workers", tag = "ApiTags::Admin")]
impl WorkersApi {
    /// Worker processes seen in the last 24 hours: host, pid, version, the queues they consume
    /// with their concurrency, jobs running at their last report (every 5 s), and whether they
    /// run, stopped cleanly, or went silent (`lost`: killed or frozen; their jobs come back when
    /// their leases expire).
    #[oai(path = "/", method = "get", operation_id = "listWorkers")]
    async fn list(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
    ) -> Result<Json<WorkerList>, ApiError> {
        let data = workers::list(&state.services.pool, WINDOW).await?;
        Ok(Json(WorkerList { data }))
    }
}
