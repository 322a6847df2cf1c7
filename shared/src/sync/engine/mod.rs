//! The run loop (docs/architecture.md §10). A run reads a side's changes after its checkpoint
//! up to the run's watermark, batch by batch, and commits every batch with the run's counters
//! and the new checkpoint in one transaction:
//!
//! - [`inbound`]: an integration's rows upserted into the record store (the store write is in
//!   the batch's transaction).
//! - [`exchange`]: outbound and bidirectional runs, which compare each changed record with the
//!   other side and their sync link, then write to the other side (external writes before the
//!   batch's transaction, store writes in it), and hold or settle conflicts.
//!
//! Every batch transaction first takes a share lock on the run's job row, held by this
//! process's lease: a run that lost its lease (frozen, then resumed elsewhere) writes nothing.
//! A run killed mid-way is resumed by the job's next run from the last committed checkpoint,
//! so no row is skipped, and a re-read row is idempotent (an upsert, or sides found equal), so
//! none is duplicated. The engine knows no adapter.

mod exchange;
mod finish;
mod inbound;
mod plan;
mod resolutions;
mod settle;

use finish::Finish;
pub use finish::fail_dead;

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use super::{
    adapter::{Position, Read, SourceError, as_text},
    config::{CursorStrategy, DeletePolicy, SyncSpec, Which, lookback_seconds},
    mapping::Rejected,
    open::{Connection, OpenSide, Opener},
    runs::{self, LogLevel, RunStatus},
    store, store_side,
};
use crate::{
    audit::{Actor, ActorKind},
    crypto::Keyring,
    error::{Error, Result},
    events::{NewEvent, Source as EventSource, insert_one},
    integrations::{
        connection::redact,
        logs as integration_logs,
        logs::SourceCall,
        vault::{Opened, Purpose},
    },
    jobs::{self, Lease, Outcome},
    mode::Mode,
    net::Egress,
    queue::JobTask,
    telemetry::metrics as m,
    tenants::Scope,
};

/// Longest wait for a connection or one batch from a side before the run counts as failed
/// (and retries).
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// What the engine needs from the worker.
pub struct Engine<'a> {
    pub pool: &'a PgPool,
    pub keyring: &'a Keyring,
    pub egress: &'a Egress,
}

/// A run as its job reads it.
#[derive(sqlx::FromRow)]
struct RunRow {
    status: RunStatus,
    cancel_requested: bool,
    watermark: Option<String>,
    target_watermark: Option<String>,
    phase: String,
    checkpoint: Option<Json<Position>>,
    cursor_before: Option<Value>,
    rows_failed: i64,
    started: bool,
    confirm_deletes: bool,
    tenant_id: Uuid,
    mode: String,
    configuration_id: Uuid,
    spec: Json<SyncSpec>,
}

/// How a run ended here, with the tasks to push after commit.
pub enum Ended {
    Finished {
        /// The fan-outs of the events it wrote.
        events: Vec<JobTask>,
        /// The follow-up run an inbound webhook asked for while this one was going.
        follow_up: Option<JobTask>,
    },
    /// This process lost the job's lease: whoever holds it now goes on.
    LostLease,
}

/// What a run is working on, once its sides are open.
struct Run<'a> {
    job: &'a Lease,
    id: Uuid,
    scope: Scope,
    configuration_id: Uuid,
    spec: &'a SyncSpec,
    row: RunRow,
}

/// The counters a batch adds to its run.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    read: i64,
    inserted: i64,
    updated: i64,
    unchanged: i64,
    deleted: i64,
    conflicts: i64,
    failed: i64,
}

impl Engine<'_> {
    /// Runs (or resumes) the sync run the job works on. `Err` means the run could not go on
    /// for now (an integration or Postgres unreachable): the job retries it from its
    /// checkpoint.
    pub async fn run(&self, job: &Lease) -> Result<Ended> {
        let run_id = job.subject_id;
        let row: Option<RunRow> = sqlx::query_as(
            "SELECT r.status, r.cancel_requested, r.watermark, r.target_watermark, r.phase,
                    r.checkpoint, r.cursor_before, r.rows_failed,
                    r.started_at IS NOT NULL AS started, r.confirm_deletes, r.tenant_id, r.mode,
                    r.configuration_id, c.spec
               FROM sync_runs r JOIN sync_configurations c ON c.id = r.configuration_id
              WHERE r.id = $1",
        )
        .bind(run_id)
        .fetch_optional(self.pool)
        .await?;
        let Some(row) = row else {
            // The configuration was deleted with its runs.
            return self.close_job(job).await;
        };
        if !row.status.is_active() {
            return self.close_job(job).await;
        }
        let spec = row.spec.0.clone();
        let run = Run {
            job,
            id: run_id,
            scope: Scope {
                tenant_id: row.tenant_id,
                mode: Mode::parse(&row.mode)?,
            },
            configuration_id: row.configuration_id,
            spec: &spec,
            row,
        };
        let mut fin = Finish::default();
        if run.row.cancel_requested {
            return self.finish(&run, &fin, End::Cancelled, None).await;
        }
        if spec.exchanges() {
            self.exchange(run, &mut fin).await
        } else {
            self.inbound(run, &mut fin).await
        }
    }

    /// Opens side `which` of the run's configuration for the run, or ends the run when it
    /// cannot be opened for good (`Err(ended)`). An unreachable side is an error: the job
    /// retries.
    async fn open(
        &self,
        run: &Run<'_>,
        fin: &Finish,
        which: Which,
    ) -> Result<std::result::Result<Box<OpenSide>, Ended>> {
        let actor = Actor {
            kind: ActorKind::Job(run.job.id),
            request_id: None,
            ip: None,
        };
        let opener = Opener {
            pool: self.pool,
            keyring: self.keyring,
            egress: self.egress,
            timeout: READ_TIMEOUT,
        };
        match opener
            .open(run.scope, run.spec, which, &actor, Purpose::SyncRun)
            .await?
        {
            Connection::Ready(side) => Ok(Ok(side)),
            Connection::Refused(e) => Ok(Err(self.finish(run, fin, End::Failed(e), None).await?)),
            Connection::Unreachable(e) => Err(unavailable(e)),
        }
    }

    /// Marks the run running with its watermarks (on its first start), if the lease still
    /// holds.
    async fn mark_running(
        &self,
        run: &Run<'_>,
        watermark: &Option<String>,
        target_watermark: &Option<String>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if !hold(&mut tx, run.job).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE sync_runs SET status = 'running', watermark = $2, target_watermark = $3,
                                  started_at = COALESCE(started_at, now())
              WHERE id = $1",
        )
        .bind(run.id)
        .bind(watermark)
        .bind(target_watermark)
        .execute(&mut *tx)
        .await?;
        let (message, details) = if run.row.started {
            (
                "resumed from its checkpoint",
                json!({ "attempt": run.job.attempt, "phase": run.row.phase }),
            )
        } else {
            (
                "started",
                json!({ "watermark": watermark, "target_watermark": target_watermark }),
            )
        };
        runs::log(&mut *tx, run.id, LogLevel::Info, message, Some(details)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Adds a batch's counters, skipped records and checkpoint to the run (on the batch's
    /// transaction).
    async fn count(
        &self,
        tx: &mut sqlx::PgConnection,
        run_id: Uuid,
        c: Counts,
        rejected: &[Rejected],
        phase: Which,
        next: &Position,
    ) -> Result<BatchState> {
        if !rejected.is_empty() {
            sqlx::query(
                "INSERT INTO sync_record_errors (id, run_id, record_key, error, data)
                 SELECT gen_random_uuid(), $1, t.k, t.e, t.d
                   FROM UNNEST($2::text[], $3::text[], $4::jsonb[]) AS t(k, e, d)",
            )
            .bind(run_id)
            .bind(rejected.iter().map(|r| r.key.clone()).collect::<Vec<_>>())
            .bind(rejected.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
            .bind(
                rejected
                    .iter()
                    .map(|r| Json(store::storable(&r.row)))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
        }
        let state = sqlx::query_as(
            "UPDATE sync_runs
                SET rows_read = rows_read + $2, rows_inserted = rows_inserted + $3,
                    rows_updated = rows_updated + $4, rows_unchanged = rows_unchanged + $5,
                    rows_deleted = rows_deleted + $6, conflicts = conflicts + $7,
                    rows_failed = rows_failed + $8, batches = batches + 1, checkpoint = $9,
                    phase = $10
              WHERE id = $1 RETURNING rows_failed, cancel_requested",
        )
        .bind(run_id)
        .bind(c.read)
        .bind(c.inserted)
        .bind(c.updated)
        .bind(c.unchanged)
        .bind(c.deleted)
        .bind(c.conflicts)
        .bind(c.failed + rejected.len() as i64)
        .bind(Json(next))
        .bind(phase.as_str())
        .fetch_one(tx)
        .await?;
        let failed = c.failed + rejected.len() as i64;
        for (outcome, n) in [
            ("read", c.read),
            ("inserted", c.inserted),
            ("updated", c.updated),
            ("unchanged", c.unchanged),
            ("deleted", c.deleted),
            ("conflict", c.conflicts),
            ("failed", failed),
        ] {
            if n > 0 {
                metrics::counter!(m::SYNC_ROWS, "outcome" => outcome).increment(n as u64);
            }
        }
        Ok(state)
    }

    /// After a batch: the run goes on, or it ends (failed past the error threshold, or
    /// cancelled).
    fn after_batch(spec: &SyncSpec, state: &BatchState) -> Option<End> {
        if state.rows_failed > spec.error_threshold() {
            return Some(End::Failed(format!(
                "{} records failed, more than the error threshold of {}",
                state.rows_failed,
                spec.error_threshold()
            )));
        }
        state.cancel_requested.then_some(End::Cancelled)
    }

    /// Ends the job whose run is gone or finished already.
    async fn close_job(&self, job: &Lease) -> Result<Ended> {
        let mut conn = self.pool.acquire().await?;
        jobs::finish(&mut conn, job, &Outcome::Succeeded).await?;
        Ok(Ended::Finished {
            events: Vec::new(),
            follow_up: None,
        })
    }
}

/// The next batch of up to `n` rows from a side's stream (waiting at most [`READ_TIMEOUT`]
/// for it), and where a read resumes after it (`None`: the stream has ended).
async fn next_batch(
    rows: &mut futures::stream::BoxStream<'_, std::result::Result<Read, SourceError>>,
    n: usize,
    column: Option<&str>,
    key: &[String],
    credentials: &Opened,
) -> Result<Option<(Vec<Read>, Position)>> {
    use futures::StreamExt;
    let mut batch: Vec<Read> = Vec::with_capacity(n);
    let filled = async {
        while batch.len() < n {
            match rows.next().await {
                Some(Ok(row)) => batch.push(row),
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(())
    };
    tokio::time::timeout(READ_TIMEOUT, filled)
        .await
        .unwrap_or_else(|_| Err("reading a batch timed out".into()))
        .map_err(|e| unavailable(redact(&e, credentials)))?;
    let Some(last) = batch.last() else {
        return Ok(None);
    };
    let next = last.after.clone().unwrap_or_else(|| Position::After {
        value: column.and_then(|c| last.row.get(c)).and_then(as_text),
        key: key
            .iter()
            .map(|k| last.row.get(k).and_then(as_text).unwrap_or_default())
            .collect(),
    });
    Ok(Some((batch, next)))
}

/// Where the run's read of `which` side starts: its checkpoint when the run resumes that side;
/// the beginning for a side read whole; else the side's committed cursor (from the run's
/// `cursor_before`), less the lookback for times and the record store.
fn start_of(run: &Run<'_>, which: Which) -> Position {
    let resume = run.row.checkpoint.as_ref().map(|c| &c.0);
    if let Some(p) = resume.filter(|_| run.row.phase == which.as_str()) {
        return p.clone();
    }
    let spec = run.spec;
    if spec.reads_all(which) {
        return Position::Since {
            value: None,
            minus_seconds: 0,
        };
    }
    let before = run.row.cursor_before.as_ref();
    let value = match which {
        Which::Source => before.and_then(|c| c.get("value")),
        Which::Target => before
            .and_then(|c| c.get("target"))
            .and_then(|t| t.get("value")),
    };
    let lookback = if which.spec(spec).is_store() {
        store_side::LOOKBACK_SECONDS
    } else {
        which
            .cursor(spec)
            .filter(|c| c.strategy == CursorStrategy::Timestamp)
            .map_or(0, lookback_seconds)
    };
    Position::Since {
        value: value.and_then(as_text),
        minus_seconds: lookback,
    }
}

enum End {
    Succeeded,
    Partial,
    Failed(String),
    Cancelled,
}

#[derive(sqlx::FromRow)]
struct BatchState {
    rows_failed: i64,
    cancel_requested: bool,
}

/// Takes a share lock on the job's row if this process still holds its lease: the transaction
/// then commits only while the lease is ours (a reconciler taking the job back waits for it).
async fn hold(tx: &mut sqlx::PgConnection, job: &Lease) -> Result<bool> {
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM jobs
          WHERE id = $1 AND dispatch_seq = $2 AND lease_owner = $3 AND state = 'running'
          FOR SHARE",
    )
    .bind(job.id)
    .bind(job.dispatch_seq)
    .bind(job.owner.as_str())
    .fetch_optional(tx)
    .await?;
    Ok(held.is_some())
}

/// Postgres refused the data itself (a value it cannot hold), not the connection.
fn is_data_error(e: &Error) -> bool {
    match e {
        Error::Database(sqlx::Error::Database(d)) => d
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}

fn unavailable(message: String) -> Error {
    Error::Internal(anyhow::anyhow!("the integration failed: {message}"))
}
