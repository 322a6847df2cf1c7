//! Sync runs: one per start (manual, retry, later scheduled and inbound), each with its job on
//! the `sync_runs` queue, created in one transaction. One run of a configuration is active at a
//! time (`sync_runs_one_active`); starting another is a `409 sync_run_active` naming it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    error::{Error, Result},
    jobs::{self, NewJob, insert_jobs_sql},
    queue::{JobTask, SYNC_RUNS},
    tenants::Scope,
};

/// Runs a sync run's job gets: a source that stays unreachable through them fails the run.
pub const MAX_ATTEMPTS: i32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, poem_openapi::Enum, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for a worker.
    Pending,
    Running,
    /// Every row read was applied.
    Succeeded,
    /// Finished, with some records failed (below the error threshold): see `/errors`.
    Partial,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Pending | RunStatus::Running)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, poem_openapi::Enum, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Trigger {
    Manual,
    Scheduled,
    Retry,
    Inbound,
}

/// A run as the API shows it: live counters while it runs.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, poem_openapi::Object)]
pub struct SyncRun {
    pub id: Uuid,
    pub configuration_id: Uuid,
    pub status: RunStatus,
    pub trigger: Trigger,
    pub rows_read: i64,
    pub rows_inserted: i64,
    pub rows_updated: i64,
    /// Read again with equal content (not rewritten).
    pub rows_unchanged: i64,
    pub rows_deleted: i64,
    pub conflicts: i64,
    /// Records skipped because they could not be mapped or written: see `/errors`.
    pub rows_failed: i64,
    /// Batches committed (each with its checkpoint).
    pub batches: i32,
    /// The stream's position the run started from (`{"value": …}`), null for a first or full run.
    #[oai(nullable)]
    pub cursor_before: Option<Value>,
    /// Its position once the run succeeded: where the next incremental run starts.
    #[oai(nullable)]
    pub cursor_after: Option<Value>,
    /// The run's upper bound on the cursor column, read on the source at the start.
    #[oai(nullable)]
    pub watermark: Option<String>,
    #[oai(nullable)]
    pub error: Option<String>,
    /// The schedule's slot a `scheduled` run was started for.
    #[oai(nullable)]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Started with `confirm_deletes`: deletes by absence beyond the configuration's
    /// `max_delete_percent` are applied.
    pub confirm_deletes: bool,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

pub(crate) const RUN_COLUMNS: &str = "id, configuration_id, status, trigger, rows_read,
    rows_inserted, rows_updated, rows_unchanged, rows_deleted, conflicts, rows_failed, batches,
    cursor_before, cursor_after, watermark, error, scheduled_for, confirm_deletes, created_at,
    started_at, finished_at";

/// Starts a run of configuration `id` on `conn` (the caller's transaction). Returns the run and
/// the task of its job, to push after commit.
pub async fn start(
    conn: &mut PgConnection,
    scope: Scope,
    configuration_id: Uuid,
    trigger: Trigger,
    confirm_deletes: bool,
) -> Result<(SyncRun, JobTask)> {
    let started = try_start(conn, scope, configuration_id, trigger, None).await?;
    let started = match started {
        Ok((run, task)) if confirm_deletes => Ok((confirm(conn, run.id).await?, task)),
        other => other,
    };
    match started {
        Ok(started) => Ok(started),
        Err(run) => Err(Error::conflict(
            "sync_run_active",
            None,
            format!("Run {run} of this configuration is still active; cancel it or wait for it."),
        )),
    }
}

/// The configuration's run that is pending or running, if any (at most one is).
pub(crate) async fn active(
    conn: &mut PgConnection,
    configuration_id: Uuid,
) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM sync_runs
          WHERE configuration_id = $1 AND status IN ('pending', 'running')",
    )
    .bind(configuration_id)
    .fetch_optional(conn)
    .await?)
}

/// Marks a run just started as allowed to delete by absence beyond the guard.
async fn confirm(conn: &mut PgConnection, run: Uuid) -> Result<SyncRun> {
    Ok(sqlx::query_as::<_, SyncRun>(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_runs SET confirm_deletes = true WHERE id = $1 RETURNING {RUN_COLUMNS}"
    )))
    .bind(run)
    .fetch_one(conn)
    .await?)
}

/// [`start`] for callers that act on an active run instead of refusing (the scheduler, the
/// inbound action, follow-ups): `Err` holds the active run's id. `slot` is a scheduled run's
/// slot (a slot has at most one run).
pub(crate) async fn try_start(
    conn: &mut PgConnection,
    scope: Scope,
    configuration_id: Uuid,
    trigger: Trigger,
    slot: Option<DateTime<Utc>>,
) -> Result<std::result::Result<(SyncRun, JobTask), Uuid>> {
    // The configuration's row lock orders concurrent starts: the second sees the first's run.
    let found: Option<(bool, Option<Value>)> = sqlx::query_as(
        "SELECT enabled, cursor FROM sync_configurations
          WHERE tenant_id = $1 AND mode = $2 AND id = $3 FOR UPDATE",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(configuration_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((enabled, cursor)) = found else {
        return Err(Error::not_found("sync configuration"));
    };
    if !enabled && trigger != Trigger::Retry && trigger != Trigger::Manual {
        return Err(Error::conflict(
            "sync_configuration_disabled",
            None,
            "The configuration is disabled.",
        ));
    }
    if let Some(run) = active(conn, configuration_id).await? {
        return Ok(Err(run));
    }
    // This run reads everything a pending follow-up request asked for.
    sqlx::query(
        "UPDATE sync_configurations SET rerun_requested = false WHERE id = $1 AND rerun_requested",
    )
    .bind(configuration_id)
    .execute(&mut *conn)
    .await?;
    let id = Uuid::now_v7();
    let job = NewJob::new(SYNC_RUNS, scope.tenant_id, id, MAX_ATTEMPTS);
    jobs::bind_insert(sqlx::query(insert_jobs_sql!()), std::slice::from_ref(&job))
        .execute(&mut *conn)
        .await?;
    let run = sqlx::query_as::<_, SyncRun>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO sync_runs (id, tenant_id, mode, configuration_id, status, trigger, job_id,
                                cursor_before, scheduled_for)
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8) RETURNING {RUN_COLUMNS}"
    )))
    .bind(id)
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(configuration_id)
    .bind(trigger)
    .bind(job.id)
    .bind(cursor)
    .bind(slot)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Ok((run, job.task())))
}

/// What an inbound "data changed" webhook did to a configuration.
pub enum Triggered {
    /// A run started: its id and its job's task.
    Started(Uuid, JobTask),
    /// A run was going: one more starts when it ends, since it may have read past the change.
    FollowUp(Uuid),
}

/// Starts a run for an inbound webhook, or asks the active run for a follow-up run.
pub async fn trigger_inbound(
    conn: &mut PgConnection,
    scope: Scope,
    configuration_id: Uuid,
) -> Result<Triggered> {
    trigger(conn, scope, configuration_id, Trigger::Inbound).await
}

/// Starts a run, or, while one is active, asks it for a follow-up run when it ends (what asked
/// may be past the active run's reads already).
pub async fn trigger(
    conn: &mut PgConnection,
    scope: Scope,
    configuration_id: Uuid,
    trigger: Trigger,
) -> Result<Triggered> {
    match try_start(conn, scope, configuration_id, trigger, None).await? {
        Ok((run, task)) => Ok(Triggered::Started(run.id, task)),
        Err(active) => {
            sqlx::query("UPDATE sync_configurations SET rerun_requested = true WHERE id = $1")
                .bind(configuration_id)
                .execute(&mut *conn)
                .await?;
            Ok(Triggered::FollowUp(active))
        }
    }
}

/// The follow-up run an inbound webhook asked for while the run that just ended was going
/// (`None` when none was asked for, or the configuration is disabled now).
pub(crate) async fn follow_up(
    conn: &mut PgConnection,
    scope: Scope,
    configuration_id: Uuid,
) -> Result<Option<(SyncRun, JobTask)>> {
    let asked: bool =
        sqlx::query_scalar("SELECT rerun_requested FROM sync_configurations WHERE id = $1")
            .bind(configuration_id)
            .fetch_one(&mut *conn)
            .await?;
    if !asked {
        return Ok(None);
    }
    match try_start(conn, scope, configuration_id, Trigger::Inbound, None).await {
        Ok(Ok(started)) => Ok(Some(started)),
        // Another run is active already, or the configuration was disabled: nothing to add.
        Ok(Err(_)) | Err(Error::Conflict { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn get<'e>(db: impl sqlx::PgExecutor<'e>, scope: Scope, id: Uuid) -> Result<SyncRun> {
    sqlx::query_as::<_, SyncRun>(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM sync_runs WHERE tenant_id = $1 AND mode = $2 AND id = $3"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| Error::not_found("sync run"))
}

/// Runs, newest first, of one configuration or all.
pub async fn list(
    pool: &PgPool,
    scope: Scope,
    configuration_id: Option<Uuid>,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<SyncRun>> {
    let rows = sqlx::query_as::<_, SyncRun>(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM sync_runs
          WHERE tenant_id = $1 AND mode = $2 AND ($3::uuid IS NULL OR configuration_id = $3)
            AND ($4::uuid IS NULL OR id < $4)
          ORDER BY id DESC LIMIT $5"
    )))
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(configuration_id)
    .bind(starting_after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Asks run `id` to stop. A run still waiting is cancelled at once, with its job; a running
/// one stops after the batch it is writing (cooperative). A finished run is a `409`.
pub async fn cancel(conn: &mut PgConnection, scope: Scope, id: Uuid) -> Result<SyncRun> {
    let found: Option<(RunStatus, Uuid)> = sqlx::query_as(
        "SELECT status, job_id FROM sync_runs
          WHERE tenant_id = $1 AND mode = $2 AND id = $3 FOR UPDATE",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((status, job_id)) = found else {
        return Err(Error::not_found("sync run"));
    };
    if !status.is_active() {
        return Err(Error::conflict(
            "sync_run_finished",
            None,
            "The run has finished already.",
        ));
    }
    // A job not yet claimed is cancelled here (a copy in Redis then fails its claim); one
    // that is running sees the flag after its batch.
    let not_started = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', last_error = 'cancelled', finished_at = now(),
                         queued_at = NULL, updated_at = now()
          WHERE id = $1 AND state IN ('pending', 'queued')",
    )
    .bind(job_id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    let run = sqlx::query_as::<_, SyncRun>(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_runs
            SET cancel_requested = true,
                status = CASE WHEN $2 THEN 'cancelled' ELSE status END,
                error = CASE WHEN $2 THEN 'cancelled before it started' ELSE error END,
                finished_at = CASE WHEN $2 THEN now() ELSE finished_at END
          WHERE id = $1 RETURNING {RUN_COLUMNS}"
    )))
    .bind(id)
    .bind(not_started)
    .fetch_one(&mut *conn)
    .await?;
    Ok(run)
}

/// Starts a new run (`trigger: retry`) of a failed, partial or cancelled run's configuration.
pub async fn retry(conn: &mut PgConnection, scope: Scope, id: Uuid) -> Result<(SyncRun, JobTask)> {
    let found: Option<(RunStatus, Uuid)> = sqlx::query_as(
        "SELECT status, configuration_id FROM sync_runs
          WHERE tenant_id = $1 AND mode = $2 AND id = $3",
    )
    .bind(scope.tenant_id)
    .bind(scope.mode.as_str())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((status, configuration_id)) = found else {
        return Err(Error::not_found("sync run"));
    };
    if !matches!(
        status,
        RunStatus::Failed | RunStatus::Partial | RunStatus::Cancelled
    ) {
        return Err(Error::conflict(
            "sync_run_not_retryable",
            None,
            "Only a failed, partial or cancelled run can be retried.",
        ));
    }
    start(conn, scope, configuration_id, Trigger::Retry, false).await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, poem_openapi::Enum, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

/// A line of a run's log.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, poem_openapi::Object)]
pub struct SyncRunLog {
    pub id: Uuid,
    pub level: LogLevel,
    pub message: String,
    #[oai(nullable)]
    pub details: Option<Value>,
    pub created_at: DateTime<Utc>,
}

/// A record a run skipped, with why.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, poem_openapi::Object)]
pub struct SyncRecordError {
    pub id: Uuid,
    /// The record's key, when it could be read.
    #[oai(nullable)]
    pub record_key: Option<String>,
    pub error: String,
    /// The source row as read.
    #[oai(nullable)]
    pub data: Option<Value>,
    pub created_at: DateTime<Utc>,
}

/// The run's log, oldest first; `None` when the run is not the tenant's.
pub async fn logs(
    pool: &PgPool,
    scope: Scope,
    id: Uuid,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<SyncRunLog>> {
    get(pool, scope, id).await?;
    let rows = sqlx::query_as::<_, SyncRunLog>(
        "SELECT id, level, message, details, created_at FROM sync_run_logs
          WHERE run_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
    )
    .bind(id)
    .bind(starting_after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// The records the run skipped, oldest first.
pub async fn errors(
    pool: &PgPool,
    scope: Scope,
    id: Uuid,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<SyncRecordError>> {
    get(pool, scope, id).await?;
    let rows = sqlx::query_as::<_, SyncRecordError>(
        "SELECT id, record_key, error, data, created_at FROM sync_record_errors
          WHERE run_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
    )
    .bind(id)
    .bind(starting_after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Writes a line of run `run_id`'s log.
pub async fn log<'e>(
    db: impl sqlx::PgExecutor<'e>,
    run_id: Uuid,
    level: LogLevel,
    message: &str,
    details: Option<Value>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sync_run_logs (id, run_id, level, message, details) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(run_id)
    .bind(level)
    .bind(message)
    .bind(details)
    .execute(db)
    .await?;
    Ok(())
}
