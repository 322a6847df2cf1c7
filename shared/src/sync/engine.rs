//! The run loop (docs/architecture.md §10): stream the source's rows after the checkpoint up to
//! the run's watermark, and for every batch taken from the stream, map it and write it to the
//! record store with the run's counters and the new checkpoint in one transaction. The engine
//! knows no adapter: it asks a [`Source`](super::source::Source) for rows.
//!
//! Every batch transaction first takes a share lock on the run's job row, held by this
//! process's lease: a run that lost its lease (frozen, then resumed elsewhere) writes nothing.
//! A run killed mid-way is resumed by the job's next run from the last committed checkpoint, so
//! no row is skipped, and a re-read row is an idempotent upsert, so none is duplicated.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use super::{
    config::{SyncMode, SyncSpec},
    mapping::{self, Record, Rejected},
    open::{Connection, Opener},
    runs::{self, LogLevel, RunStatus},
    source::{Page, Position, as_text},
    store::{self, Applied, Target},
};
use crate::{
    audit::{Actor, ActorKind},
    crypto::Keyring,
    error::{Error, Result},
    events::{NewEvent, Source as EventSource, insert_one},
    integrations::{
        connection::redact,
        logs::{self as integration_logs, SourceCall},
        vault::Purpose,
    },
    jobs::{self, Lease, Outcome},
    mode::Mode,
    net::Egress,
    queue::JobTask,
    tenants::Scope,
};

/// Longest wait for a connection or one page from the source before the run counts as failed
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
    checkpoint: Option<Json<Position>>,
    cursor_before: Option<Value>,
    rows_failed: i64,
    started: bool,
    tenant_id: Uuid,
    mode: String,
    configuration_id: Uuid,
    spec: Json<SyncSpec>,
    provider: String,
    integration_live: bool,
}

/// How a run ended here, with the tasks to push after commit.
pub enum Ended {
    Finished {
        /// The end event's fan-out.
        events: Vec<JobTask>,
        /// The follow-up run an inbound webhook asked for while this one was going.
        follow_up: Option<JobTask>,
    },
    /// This process lost the job's lease: whoever holds it now goes on.
    LostLease,
}

impl Engine<'_> {
    /// Runs (or resumes) the sync run the job works on. `Err` means the run could not go on
    /// for now (source or Postgres unreachable): the job retries it from its checkpoint.
    pub async fn run(&self, job: &Lease) -> Result<Ended> {
        let run_id = job.subject_id;
        let row: Option<RunRow> = sqlx::query_as(
            "SELECT r.status, r.cancel_requested, r.watermark, r.checkpoint, r.cursor_before,
                    r.rows_failed, r.started_at IS NOT NULL AS started, r.tenant_id, r.mode,
                    r.configuration_id, c.spec, i.provider, i.deleted_at IS NULL AS integration_live
               FROM sync_runs r
               JOIN sync_configurations c ON c.id = r.configuration_id
               JOIN integrations i ON i.id = c.integration_id
              WHERE r.id = $1",
        )
        .bind(run_id)
        .fetch_optional(self.pool)
        .await?;
        let Some(run) = row else {
            // The configuration was deleted with its runs.
            return self.close_job(job).await;
        };
        if !run.status.is_active() {
            return self.close_job(job).await;
        }
        let spec = run.spec.0.clone();
        let scope = Scope {
            tenant_id: run.tenant_id,
            mode: Mode::parse(&run.mode)?,
        };
        let fin = Finish {
            run_id,
            scope,
            configuration_id: run.configuration_id,
            spec: &spec,
            opened: false,
            target: None,
        };
        if run.cancel_requested {
            return self.finish(job, &fin, End::Cancelled, None).await;
        }
        if !run.integration_live {
            let e = "the source integration was deleted".to_owned();
            return self.finish(job, &fin, End::Failed(e), None).await;
        }
        let actor = Actor {
            kind: ActorKind::Job(job.id),
            request_id: None,
            ip: None,
        };
        let opener = Opener {
            pool: self.pool,
            keyring: self.keyring,
            egress: self.egress,
            timeout: READ_TIMEOUT,
        };
        let (mut source, credentials, target) = match opener
            .open(scope, &spec, &run.provider, &actor, Purpose::SyncRun)
            .await?
        {
            Connection::Ready {
                source,
                credentials,
                target,
            } => (source, credentials, target),
            Connection::Refused(e) => return self.finish(job, &fin, End::Failed(e), None).await,
            Connection::Unreachable(e) => return Err(unavailable(e)),
        };
        // From here on the run has a session with the source, which its end writes to the
        // integration's log.
        let fin = Finish {
            opened: true,
            target,
            ..fin
        };

        let cursor = spec.cursor.as_ref();
        let is_time = spec.cursor_is_time();
        let watermark = match (&run.watermark, cursor, run.started) {
            (w, _, true) => w.clone(),
            (_, Some(c), false) => source
                .watermark(c.column.as_str(), is_time, spec.lag_seconds())
                .await
                .map_err(|e| unavailable(redact(&e, &credentials)))?,
            (_, None, false) => None,
        };
        if !self
            .mark_running(job, run_id, &watermark, run.started)
            .await?
        {
            return Ok(Ended::LostLease);
        }
        let start_value = run
            .cursor_before
            .as_ref()
            .and_then(|c| c.get("value"))
            .and_then(as_text);
        let position = match run.checkpoint {
            Some(Json(p)) => p,
            None => Position::Since {
                value: start_value,
                minus_seconds: if is_time { spec.lookback_seconds() } else { 0 },
            },
        };
        let key: Vec<String> = spec.source.key.iter().map(|k| k.to_string()).collect();
        let target = Target {
            scope,
            entity: spec.entity.to_string(),
            configuration_id: run.configuration_id,
            run_id,
            delete_policy: spec.delete_policy(),
            full: spec.mode == SyncMode::Full,
        };
        let mut failed = run.rows_failed;
        let page = Page {
            cursor: cursor.map(|c| c.column.as_str()),
            cursor_is_time: is_time,
            key: &key,
            position: &position,
            watermark: watermark.as_deref(),
            limit: None,
        };
        let batch_size = spec.batch_size() as usize;
        let mut rows = source.stream(&page);
        loop {
            let mut batch = Vec::with_capacity(batch_size);
            let filled = async {
                while batch.len() < batch_size {
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
                .map_err(|e| unavailable(redact(&e, &credentials)))?;
            let Some(last) = batch.last() else { break };
            let next = Position::After {
                value: page.cursor.and_then(|c| last.get(c)).and_then(as_text),
                key: key
                    .iter()
                    .map(|k| last.get(k).and_then(as_text).unwrap_or_default())
                    .collect(),
            };
            let full_batch = batch.len() == batch_size;
            let read = batch.len() as i64;
            let (records, rejected): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|r| mapping::map_row(&spec, r))
                .partition(|r| r.is_ok());
            let records: Vec<Record> = records.into_iter().filter_map(|r| r.ok()).collect();
            let rejected: Vec<Rejected> = rejected.into_iter().filter_map(|r| r.err()).collect();
            let Some(committed) = self
                .commit_batch(job, &target, read, records, rejected, &next)
                .await?
            else {
                return Ok(Ended::LostLease);
            };
            failed = committed.rows_failed;
            if failed > spec.error_threshold() {
                let e = format!(
                    "{failed} records failed, more than the error threshold of {}",
                    spec.error_threshold()
                );
                return self.finish(job, &fin, End::Failed(e), None).await;
            }
            if committed.cancel_requested {
                return self.finish(job, &fin, End::Cancelled, None).await;
            }
            if !full_batch {
                break;
            }
        }
        drop(rows);
        let cursor_after = match (cursor, &watermark) {
            (Some(_), Some(w)) => Some(json!({ "value": w })),
            (Some(_), None) => run.cursor_before.clone(),
            (None, _) => None,
        };
        let end = if failed > 0 {
            End::Partial
        } else {
            End::Succeeded
        };
        self.finish(job, &fin, end, cursor_after).await
    }

    /// Marks the run running (and its watermark, on its first start), if the lease still holds.
    async fn mark_running(
        &self,
        job: &Lease,
        run_id: Uuid,
        watermark: &Option<String>,
        resumed: bool,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if !hold(&mut tx, job).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE sync_runs SET status = 'running', watermark = $2,
                                  started_at = COALESCE(started_at, now())
              WHERE id = $1",
        )
        .bind(run_id)
        .bind(watermark)
        .execute(&mut *tx)
        .await?;
        let (message, details) = if resumed {
            (
                "resumed from its checkpoint",
                json!({ "attempt": job.attempt }),
            )
        } else {
            ("started", json!({ "watermark": watermark }))
        };
        runs::log(&mut *tx, run_id, LogLevel::Info, message, Some(details)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Writes one batch with its counters and checkpoint; `None` when the lease is lost.
    async fn commit_batch(
        &self,
        job: &Lease,
        target: &Target,
        read: i64,
        records: Vec<Record>,
        mut rejected: Vec<Rejected>,
        next: &Position,
    ) -> Result<Option<BatchState>> {
        let mut tx = self.pool.begin().await?;
        if !hold(&mut tx, job).await? {
            return Ok(None);
        }
        let applied = {
            let mut sp = sqlx::Acquire::begin(&mut *tx).await?;
            match store::apply(&mut sp, target, &records).await {
                Ok(a) => {
                    sp.commit().await?;
                    a
                }
                Err(e) if is_data_error(&e) => {
                    sp.rollback().await?;
                    // One record the store refuses: find it, write the others.
                    let mut total = Applied::default();
                    for r in records {
                        let mut one = sqlx::Acquire::begin(&mut *tx).await?;
                        match store::apply(&mut one, target, std::slice::from_ref(&r)).await {
                            Ok(a) => {
                                one.commit().await?;
                                total.inserted += a.inserted;
                                total.updated += a.updated;
                                total.unchanged += a.unchanged;
                                total.deleted += a.deleted;
                            }
                            Err(e) if is_data_error(&e) => {
                                one.rollback().await?;
                                rejected.push(Rejected {
                                    key: Some(r.key),
                                    error: format!("the record store refused it: {e}"),
                                    row: Value::Object(r.data),
                                });
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    total
                }
                Err(e) => return Err(e),
            }
        };
        if !rejected.is_empty() {
            sqlx::query(
                "INSERT INTO sync_record_errors (id, run_id, record_key, error, data)
                 SELECT gen_random_uuid(), $1, t.k, t.e, t.d
                   FROM UNNEST($2::text[], $3::text[], $4::jsonb[]) AS t(k, e, d)",
            )
            .bind(target.run_id)
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
        let state: BatchState = sqlx::query_as(
            "UPDATE sync_runs
                SET rows_read = rows_read + $2, rows_inserted = rows_inserted + $3,
                    rows_updated = rows_updated + $4, rows_unchanged = rows_unchanged + $5,
                    rows_deleted = rows_deleted + $6, rows_failed = rows_failed + $7,
                    batches = batches + 1, checkpoint = $8
              WHERE id = $1 RETURNING rows_failed, cancel_requested",
        )
        .bind(target.run_id)
        .bind(read)
        .bind(applied.inserted)
        .bind(applied.updated)
        .bind(applied.unchanged)
        .bind(applied.deleted)
        .bind(rejected.len() as i64)
        .bind(Json(next))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(state))
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

    /// Ends the run and its job in one transaction: the sweep of a full run's unseen records,
    /// the configuration's new cursor, the log line and the end event.
    async fn finish(
        &self,
        job: &Lease,
        f: &Finish<'_>,
        end: End,
        cursor_after: Option<Value>,
    ) -> Result<Ended> {
        let mut tx = self.pool.begin().await?;
        if !jobs::finish(&mut tx, job, &Outcome::Succeeded).await? {
            return Ok(Ended::LostLease);
        }
        let (status, error) = match &end {
            End::Succeeded => (RunStatus::Succeeded, None),
            End::Partial => (RunStatus::Partial, None),
            End::Failed(e) => (RunStatus::Failed, Some(e.clone())),
            End::Cancelled => (RunStatus::Cancelled, Some("cancelled".to_owned())),
        };
        let done = matches!(end, End::Succeeded | End::Partial);
        let mut swept = 0;
        if done && f.spec.mode == SyncMode::Full {
            if matches!(end, End::Succeeded) {
                let target = Target {
                    scope: f.scope,
                    entity: f.spec.entity.to_string(),
                    configuration_id: f.configuration_id,
                    run_id: f.run_id,
                    delete_policy: f.spec.delete_policy(),
                    full: true,
                };
                swept = store::sweep_unseen(&mut tx, &target).await?;
            } else {
                let m = "deletes by absence skipped: records failed, so absence proves nothing";
                runs::log(&mut *tx, f.run_id, LogLevel::Warn, m, None).await?;
            }
        }
        let run: runs::SyncRun = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE sync_runs
                SET status = $2, error = $3, cursor_after = $4, rows_deleted = rows_deleted + $5,
                    finished_at = now(), checkpoint = NULL
              WHERE id = $1 RETURNING {}",
            runs::RUN_COLUMNS
        )))
        .bind(f.run_id)
        .bind(status)
        .bind(&error)
        .bind(&cursor_after)
        .bind(swept)
        .fetch_one(&mut *tx)
        .await?;
        if done {
            sqlx::query("UPDATE sync_configurations SET cursor = $2 WHERE id = $1")
                .bind(f.configuration_id)
                .bind(&cursor_after)
                .execute(&mut *tx)
                .await?;
        }
        if f.opened {
            let ms = match (run.started_at, run.finished_at) {
                (Some(s), Some(e)) => (e - s).num_milliseconds(),
                _ => 0,
            };
            let plural = if run.batches == 1 { "" } else { "es" };
            let summary = format!("{} rows in {} batch{plural}", run.rows_read, run.batches);
            let call = SourceCall {
                integration_id: f.spec.source.integration_id,
                tenant_id: f.scope.tenant_id,
                kind: "sync",
                method: "READ",
                target: f.target.as_deref(),
                ok: done,
                duration_ms: ms,
                error: error.as_deref(),
                summary: Some(&summary),
            };
            integration_logs::write(&mut *tx, &call).await?;
        }
        let level = if done { LogLevel::Info } else { LogLevel::Warn };
        let message = format!(
            "{}: {}",
            status.as_str(),
            error.as_deref().unwrap_or("done")
        );
        let stats = serde_json::to_value(&run).map_err(|e| Error::Internal(e.into()))?;
        runs::log(&mut *tx, f.run_id, level, &message, Some(stats.clone())).await?;
        let mut tasks = Vec::new();
        let event_type = match status {
            RunStatus::Succeeded | RunStatus::Partial => Some("sync.run.succeeded"),
            RunStatus::Failed => Some("sync.run.failed"),
            _ => None,
        };
        if let Some(t) = event_type {
            let mut data = stats;
            data["entity"] = json!(f.spec.entity.as_str());
            let mut event = NewEvent::new(
                f.scope.tenant_id,
                f.scope.mode,
                t,
                data,
                EventSource::Sync,
                chrono::Utc::now(),
            );
            event.ordering_key = Some(f.configuration_id.to_string());
            tasks.push(insert_one(&mut *tx, &event).await?);
        }
        let follow_up = if status == RunStatus::Cancelled {
            None
        } else {
            runs::follow_up(&mut tx, f.scope, f.configuration_id).await?
        };
        if let Some((next, _)) = &follow_up {
            let m = format!(
                "run {} follows: a webhook asked for it during this run",
                next.id
            );
            runs::log(&mut *tx, f.run_id, LogLevel::Info, &m, None).await?;
        }
        tx.commit().await?;
        Ok(Ended::Finished {
            events: tasks,
            follow_up: follow_up.map(|(_, task)| task),
        })
    }
}

struct Finish<'a> {
    run_id: Uuid,
    scope: Scope,
    configuration_id: Uuid,
    spec: &'a SyncSpec,
    /// Whether the source was opened: the run's reads are then logged on the integration.
    opened: bool,
    /// `host:port/database table`.
    target: Option<String>,
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

/// The store refused the data itself (a value Postgres cannot hold), not the connection.
fn is_data_error(e: &Error) -> bool {
    match e {
        Error::Database(sqlx::Error::Database(d)) => d
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}

fn unavailable(message: String) -> Error {
    Error::Internal(anyhow::anyhow!("the source failed: {message}"))
}
