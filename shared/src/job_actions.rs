//! What operators do to jobs (`/admin/v1/jobs/…`, the dashboard): retry now, cancel,
//! discard — one job or every job a filter matches. Each action is one statement over a batch
//! of job ids that moves the jobs and, in the same statement, the rows they own, so no
//! delivery, event, inbound event or sync run is left waiting on a job that will not move it:
//!
//! - **retry**: a pending job becomes due now (one already due keeps its place); a dead or cancelled delivery, fan-out or inbound
//!   event runs again from its first attempt, its row reopened — only if the row is still
//!   closed and by its newest job (a delivery resent meanwhile already has a job; of two
//!   dead jobs of one row, only the last runs). Other dead jobs are skipped.
//! - **cancel**: a pending or queued delivery, fan-out, inbound event, sync run or queue probe
//!   ends `cancelled`, its row closed (`cancelled`, fan-out failed, inbound `failed`, run
//!   `cancelled`); a running sync run is asked to stop (within one batch). Other running jobs
//!   cannot be interrupted and are skipped.
//! - **discard**: a dead job leaves the ledger (its row stays as it ended).

use serde_json::json;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    error::{Error, Result},
    jobs_admin::{self, Job, JobFilter},
};

/// An operator's action on jobs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, poem_openapi::Enum,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum JobAction {
    Retry,
    Cancel,
    Discard,
}

impl JobAction {
    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::Retry => "retry",
            JobAction::Cancel => "cancel",
            JobAction::Discard => "discard",
        }
    }
}

const REASON: &str = "cancelled by an operator";

/// `$1` the job ids; returns the ids acted on. A closed row is reopened by one job only: of
/// the ids given, the newest job of each row; for a delivery, only the job it names as its
/// current one (a delivery resent since has another). Each row is locked when checked, so a
/// resend or another retry at the same moment sees it reopened and does not add a job.
const RETRY_SQL: &str = "
    WITH due AS (
        UPDATE jobs j SET run_at = LEAST(j.run_at, now()), updated_at = now()
         WHERE j.id = ANY($1) AND j.state = 'pending'
        RETURNING j.id, j.queue, j.subject_id),
    closed AS (
        SELECT DISTINCT ON (j.subject_id) j.id FROM jobs j
         WHERE j.id = ANY($1) AND j.state IN ('dead', 'cancelled')
         ORDER BY j.subject_id, j.id DESC),
    revived AS (
        UPDATE jobs j
           SET state = 'pending', attempt = 0, run_at = now(), finished_at = NULL,
               lease_owner = NULL, lease_until = NULL, updated_at = now()
          FROM closed c
         WHERE j.id = c.id AND j.state IN ('dead', 'cancelled')
           AND CASE j.queue
                 WHEN 'webhook_deliveries' THEN EXISTS (
                     SELECT 1 FROM webhook_deliveries d
                      WHERE d.id = j.subject_id AND d.status IN ('failed', 'cancelled')
                        AND (d.job_id = j.id OR d.job_id IS NULL) FOR UPDATE)
                 WHEN 'event_fan_out' THEN EXISTS (
                     SELECT 1 FROM events e
                      WHERE e.id = j.subject_id AND e.fan_out_failed_at IS NOT NULL FOR UPDATE)
                 WHEN 'inbound_events' THEN EXISTS (
                     SELECT 1 FROM inbound_events i
                      WHERE i.id = j.subject_id AND i.status = 'failed' FOR UPDATE)
                 ELSE false END
        RETURNING j.id, j.queue, j.subject_id),
    d AS (
        UPDATE webhook_deliveries w
           SET status = 'pending', next_attempt_at = LEAST(w.next_attempt_at, now()),
               updated_at = now(), job_id = COALESCE(r.job_id, w.job_id)
          FROM (SELECT subject_id, id AS job_id FROM revived
                 WHERE queue = 'webhook_deliveries'
                UNION ALL SELECT subject_id, NULL FROM due
                 WHERE queue = 'webhook_deliveries') r
         WHERE w.id = r.subject_id),
    e AS (
        UPDATE events SET fan_out_failed_at = NULL, fan_out_error = NULL
         WHERE id IN (SELECT subject_id FROM revived WHERE queue = 'event_fan_out')),
    i AS (
        UPDATE inbound_events SET status = 'pending', processed_at = NULL
         WHERE id IN (SELECT subject_id FROM revived WHERE queue = 'inbound_events'))
    SELECT id FROM due UNION ALL SELECT id FROM revived";

/// `$1` the job ids, `$2` the reason; returns the ids acted on.
const CANCEL_SQL: &str = "
    WITH c AS (
        UPDATE jobs j
           SET state = 'cancelled', last_error = $2, finished_at = now(), lease_owner = NULL,
               lease_until = NULL, updated_at = now()
         WHERE j.id = ANY($1) AND j.state IN ('pending', 'queued')
           AND j.queue IN ('webhook_deliveries', 'event_fan_out', 'inbound_events', 'sync_runs',
                           'queue_probes')
        RETURNING j.id, j.queue, j.subject_id),
    stop AS (
        UPDATE sync_runs r SET cancel_requested = true
          FROM jobs j
         WHERE j.id = ANY($1) AND j.state = 'running' AND j.queue = 'sync_runs'
           AND r.id = j.subject_id AND r.status = 'running'
        RETURNING j.id),
    d AS (
        UPDATE webhook_deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = now()
         WHERE id IN (SELECT subject_id FROM c WHERE queue = 'webhook_deliveries')
           AND status = 'pending'),
    e AS (
        UPDATE events SET fan_out_failed_at = now(), fan_out_error = $2
         WHERE id IN (SELECT subject_id FROM c WHERE queue = 'event_fan_out')
           AND fan_out_failed_at IS NULL),
    i AS (
        UPDATE inbound_events SET status = 'failed', last_error = $2, processed_at = now()
         WHERE id IN (SELECT subject_id FROM c WHERE queue = 'inbound_events')
           AND status IN ('pending', 'processing')),
    s AS (
        UPDATE sync_runs SET status = 'cancelled', error = 'cancelled', finished_at = now()
         WHERE id IN (SELECT subject_id FROM c WHERE queue = 'sync_runs')
           AND status IN ('pending', 'running'))
    SELECT id FROM c UNION ALL SELECT id FROM stop";

const DISCARD_SQL: &str = "DELETE FROM jobs WHERE id = ANY($1) AND state = 'dead' RETURNING id";

/// Applies `action` to the jobs `ids` (one statement); returns those it acted on — the others
/// were not in a state the action applies to.
pub async fn apply(
    conn: &mut sqlx::PgConnection,
    action: JobAction,
    ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    let q = match action {
        JobAction::Retry => sqlx::query_scalar(RETRY_SQL).bind(ids),
        JobAction::Cancel => sqlx::query_scalar(CANCEL_SQL).bind(ids).bind(REASON),
        JobAction::Discard => sqlx::query_scalar(DISCARD_SQL).bind(ids),
    };
    Ok(q.fetch_all(conn).await?)
}

/// Jobs per statement of a bulk action.
const BATCH: i64 = 1_000;

/// What a bulk action did.
#[derive(Clone, Debug, Default)]
pub struct Bulk {
    /// Jobs the filter matched and the action looked at.
    pub seen: i64,
    pub done: i64,
}

/// Who runs a bulk action, under which audit id, and how many jobs it matched when it began.
pub struct BulkAudit<'a> {
    pub actor: &'a Actor,
    pub id: Uuid,
    pub matched: i64,
}

/// Applies `action` to every job `filter` matches, `max` at most, a batch per transaction (a
/// long bulk action holds no lock for long). Each batch commits with its audit event, so
/// whatever a bulk action did is audited even if it stops half-way.
pub async fn apply_all(
    pool: &sqlx::PgPool,
    action: JobAction,
    filter: &JobFilter,
    max: i64,
    audit: &BulkAudit<'_>,
) -> Result<Bulk> {
    let mut out = Bulk::default();
    let mut before = None;
    let name = format!("jobs.bulk_{}", action.as_str());
    while out.seen < max {
        let ids = jobs_admin::ids(pool, filter, BATCH.min(max - out.seen), before).await?;
        let Some(last) = ids.last() else { break };
        before = Some(*last);
        out.seen += ids.len() as i64;
        let mut tx = pool.begin().await?;
        let done = apply(&mut tx, action, &ids).await?.len() as i64;
        let changes = json!({ "filter": filter, "matched": audit.matched, "seen": ids.len(),
                              "done": done });
        audit::record_operator(&mut tx, audit.actor, "job", audit.id, &name, changes).await?;
        tx.commit().await?;
        out.done += done;
        if (ids.len() as i64) < BATCH {
            break;
        }
    }
    Ok(out)
}

/// `409 job_state_conflict`: `job` is not in a state `action` applies to.
fn not_applicable(action: JobAction, job: &Job) -> Error {
    let applies = match action {
        JobAction::Retry => {
            "pending jobs, and dead or cancelled deliveries, fan-outs and inbound events whose \
             row is still closed"
        }
        JobAction::Cancel => {
            "pending or queued deliveries, fan-outs, inbound events, sync runs and queue \
             probes, and running sync runs"
        }
        JobAction::Discard => "dead jobs",
    };
    Error::conflict(
        "job_state_conflict",
        None,
        format!(
            "This {} job is {}; `{}` applies to {applies}.",
            job.queue,
            job.state.as_str(),
            action.as_str()
        ),
    )
}

/// An operator's `action` on the job `id`, audited as `actor`'s; the job as it was before.
/// `409 job_state_conflict` when the job is not in a state the action applies to.
pub async fn act(pool: &sqlx::PgPool, actor: &Actor, action: JobAction, id: Uuid) -> Result<Job> {
    let job = jobs_admin::get(pool, id).await?.job;
    // The action and its audit event commit together.
    let mut tx = pool.begin().await?;
    if apply(&mut tx, action, &[id]).await?.is_empty() {
        return Err(not_applicable(action, &job));
    }
    let changes = json!({ "queue": job.queue, "state": job.state });
    let name = format!("job.{}", action.as_str());
    audit::record_operator(&mut tx, actor, "job", id, &name, changes).await?;
    tx.commit().await?;
    Ok(job)
}

/// Jobs one bulk call looks at, at most.
pub const BULK_MAX: i64 = 100_000;

/// What a bulk action matched and did.
#[derive(Clone, Debug, serde::Serialize, poem_openapi::Object)]
pub struct BulkOutcome {
    pub action: JobAction,
    pub dry_run: bool,
    /// Jobs the filter matched when the call began.
    pub matched: i64,
    /// Jobs the action looked at (at most 100,000 per call).
    pub seen: i64,
    /// Jobs it changed (the others were not in a state it applies to).
    pub done: i64,
    /// Matched jobs not looked at yet: call again (with a new dry run) for them.
    pub remaining: i64,
}

/// An operator's `action` on every job `filter` matches: a count when `dry_run`, else the
/// action itself — only if `confirm` is the count matched now (`409 confirmation_mismatch`
/// otherwise), so nobody acts on more than they were shown. Audited as `actor`'s.
pub async fn bulk(
    pool: &sqlx::PgPool,
    actor: &Actor,
    action: JobAction,
    filter: &JobFilter,
    dry_run: bool,
    confirm: Option<i64>,
) -> Result<BulkOutcome> {
    let matched = jobs_admin::count(pool, filter).await?;
    let mut out = BulkOutcome {
        action,
        dry_run,
        matched,
        seen: 0,
        done: 0,
        remaining: matched,
    };
    if dry_run {
        return Ok(out);
    }
    if confirm != Some(matched) {
        return Err(Error::conflict(
            "confirmation_mismatch",
            Some("confirm"),
            format!("The filter matches {matched} jobs now: confirm {matched} to act on them."),
        ));
    }
    // One audit event per batch, each committed with what its batch did, all under one id.
    let audit = BulkAudit {
        actor,
        id: Uuid::now_v7(),
        matched,
    };
    let bulk = apply_all(pool, action, filter, BULK_MAX, &audit).await?;
    out.seen = bulk.seen;
    out.done = bulk.done;
    out.remaining = (matched - bulk.seen).max(0);
    Ok(out)
}
