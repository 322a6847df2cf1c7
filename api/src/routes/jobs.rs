//! The ledger for operators (admin token): jobs by queue, state, tenant and error, and one
//! job in detail.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{
    OpenApi,
    param::{Path, Query},
};
use switchyard_shared::{
    input::Text,
    jobs_admin::{self, Job, JobDetail, JobFilter, JobState},
};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState,
    auth::Admin,
    error::ApiError,
    json::Json,
    pagination::{self, list_type},
};

list_type!(JobList, Job);

pub struct JobsApi;

#[OpenApi(prefix_path = "/admin/v1/jobs", tag = "ApiTags::Admin")]
impl JobsApi {
    /// Jobs of the ledger, newest first — finished states (`succeeded`, `cancelled`, `dead`) by
    /// when they finished, the others by when they were made. Pages stay fast with millions of
    /// jobs: each state's page reads that state's own index.
    #[oai(path = "/", method = "get", operation_id = "listJobs")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
        /// Only this queue (`webhook_deliveries`, `event_fan_out`, `sync_runs`, …).
        queue: Query<Option<Text<1, 100>>>,
        /// Only jobs in this state.
        #[oai(name = "state")]
        job_state: Query<Option<JobState>>,
        /// Only this tenant's jobs.
        tenant_id: Query<Option<Uuid>>,
        /// Only jobs whose last error contains this (case-insensitive).
        error: Query<Option<Text<1, 200>>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
        /// The last `id` of the previous page.
        starting_after: Query<Option<Uuid>>,
    ) -> Result<Json<JobList>, ApiError> {
        let limit = pagination::limit(limit.0)?;
        let filter = JobFilter {
            queue: queue.0.map(Text::into_string),
            state: job_state.0,
            tenant_id: tenant_id.0,
            error: error.0.map(Text::into_string),
        };
        let rows =
            jobs_admin::list(&state.services.pool, &filter, limit + 1, starting_after.0).await?;
        Ok(Json(JobList::from_rows(rows, limit)))
    }

    /// One job: its state, runs, last error and lease, the row it works on (with its path in
    /// the partner API), and, for a delivery, every attempt with its answer or error.
    #[oai(path = "/:id", method = "get", operation_id = "getJob")]
    async fn get(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
    ) -> Result<Json<JobDetail>, ApiError> {
        Ok(Json(jobs_admin::get(&state.services.pool, id.0).await?))
    }
}
