//! The ledger for operators (admin token): jobs by queue, state, tenant and error, one job in
//! detail, and retry, cancel and discard — one job or every job a filter matches.

use std::sync::Arc;
use switchyard_shared::input::Time;

use poem::{Request, web::Data};
use poem_openapi::{
    Object, OpenApi,
    param::{Path, Query},
};
use serde::{Deserialize, Serialize};
use switchyard_shared::{
    audit::ActorKind,
    input::Text,
    job_actions::{self, BulkOutcome, JobAction},
    jobs_admin::{self, DeadGroup, Job, JobDetail, JobFilter, JobState},
};
use uuid::Uuid;

use super::ApiTags;
use crate::{
    AppState,
    auth::{Admin, actor},
    error::ApiError,
    json::Json,
    pagination::{self, list_type},
};

list_type!(JobList, Job);

#[derive(Object, Serialize)]
pub struct DeadGroupList {
    pub data: Vec<DeadGroup>,
}

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
        /// Only dead jobs of this error group (a `fingerprint` of `GET …/jobs/dead-groups`).
        error_fingerprint: Query<Option<Text<0, 1000>>>,
        /// Only jobs made at or after this time (RFC 3339).
        created_after: Query<Option<Time>>,
        /// Only jobs made before this time (RFC 3339).
        created_before: Query<Option<Time>>,
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
            error_fingerprint: error_fingerprint.0.map(Text::into_string),
            created_after: created_after.0.map(Time::get),
            created_before: created_before.0.map(Time::get),
        };
        let rows =
            jobs_admin::list(&state.services.pool, &filter, limit + 1, starting_after.0).await?;
        Ok(Json(JobList::from_rows(rows, limit)))
    }

    /// Dead jobs grouped by queue and error fingerprint (the error with numbers and ids
    /// masked), biggest groups first, each with a count, its newest job and when the group
    /// began and last grew. Retry or discard a group with `POST /admin/v1/jobs/bulk` and its
    /// queue and `error_fingerprint`.
    #[oai(
        path = "/dead-groups",
        method = "get",
        operation_id = "listDeadJobGroups"
    )]
    async fn dead_groups(
        &self,
        _admin: Admin,
        state: Data<&Arc<AppState>>,
        /// Only this queue.
        queue: Query<Option<Text<1, 100>>>,
    ) -> Result<Json<DeadGroupList>, ApiError> {
        let queue = queue.0.as_ref().map(Text::as_str);
        let data = jobs_admin::dead_groups(&state.services.pool, queue).await?;
        Ok(Json(DeadGroupList { data }))
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

/// What one job action did.
#[derive(Object, Serialize)]
pub struct JobActionResult {
    pub id: Uuid,
    pub action: JobAction,
}

/// A bulk action over every job a filter matches (a filter field absent or `null`: any).
#[derive(Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct BulkJobAction {
    pub action: JobAction,
    /// Only this queue.
    #[oai(nullable)]
    pub queue: Option<Text<1, 100>>,
    /// Only jobs in this state.
    #[oai(nullable)]
    pub state: Option<JobState>,
    /// Only this tenant's jobs.
    #[oai(nullable)]
    pub tenant_id: Option<Uuid>,
    /// Only jobs whose last error contains this (case-insensitive).
    #[oai(nullable)]
    pub error: Option<Text<1, 200>>,
    /// Only dead jobs of this error group (a `fingerprint` of `GET …/jobs/dead-groups`).
    #[oai(nullable)]
    #[serde(default)]
    pub error_fingerprint: Option<Text<0, 1000>>,
    /// Count what matches and change nothing (the default).
    #[oai(default = "dry_run_default")]
    #[serde(default = "dry_run_default")]
    pub dry_run: bool,
    /// Required to act: the `matched` count of the dry run, typed back. If the count changed
    /// meanwhile the action is refused (`409 confirmation_mismatch`, with the new count).
    #[oai(nullable)]
    pub confirm: Option<i64>,
}

fn dry_run_default() -> bool {
    true
}

pub struct JobActionsApi;

#[OpenApi(prefix_path = "/admin/v1/jobs", tag = "ApiTags::Admin")]
impl JobActionsApi {
    /// Retry, cancel or discard one job (see `POST /admin/v1/jobs/bulk` for what each does).
    /// `409 job_state_conflict` when the job is not in a state the action applies to. Audited.
    #[oai(path = "/:id/:action", method = "post", operation_id = "actOnJob")]
    async fn act(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        id: Path<Uuid>,
        /// `retry`, `cancel` or `discard`.
        action: Path<JobAction>,
    ) -> Result<Json<JobActionResult>, ApiError> {
        let who = actor(req, ActorKind::Admin);
        job_actions::act(&state.services.pool, &who, action.0, id.0).await?;
        state.services.dispatcher.wake();
        Ok(Json(JobActionResult {
            id: id.0,
            action: action.0,
        }))
    }

    /// Retry, cancel or discard every job a filter matches. First a dry run (the default)
    /// counts them; then the same call with `dry_run: false` and `confirm` set to that count
    /// acts, in batches of 1,000 (100,000 per call). **retry**: a pending job becomes due now;
    /// a dead or cancelled delivery, fan-out or inbound event runs again from its first
    /// attempt, its row reopened. **cancel**: a pending or queued delivery, fan-out, inbound
    /// event, sync run or queue probe is cancelled with its row; a running sync run stops
    /// within one batch. **discard**: dead jobs leave the ledger. Audited.
    #[oai(path = "/bulk", method = "post", operation_id = "actOnJobs")]
    async fn bulk(
        &self,
        _admin: Admin,
        req: &Request,
        state: Data<&Arc<AppState>>,
        body: Json<BulkJobAction>,
    ) -> Result<Json<BulkOutcome>, ApiError> {
        let b = body.0;
        let filter = JobFilter {
            queue: b.queue.map(Text::into_string),
            state: b.state,
            tenant_id: b.tenant_id,
            error: b.error.map(Text::into_string),
            error_fingerprint: b.error_fingerprint.map(Text::into_string),
            ..JobFilter::default()
        };
        let who = actor(req, ActorKind::Admin);
        let pool = &state.services.pool;
        let out = job_actions::bulk(pool, &who, b.action, &filter, b.dry_run, b.confirm).await?;
        if !b.dry_run {
            state.services.dispatcher.wake();
        }
        Ok(Json(out))
    }
}
