//! The end of a run: the sweep of unseen records (within the delete guard), the new cursor,
//! the log line and the end event, committed with the run's job.

use serde_json::Value;
use uuid::Uuid;

use super::*;

impl Engine<'_> {
    /// Ends the run and its job in one transaction: the sweep of a full inbound run's unseen
    /// records, the configuration's new cursor, the log line and the end event.
    pub(super) async fn finish(
        &self,
        run: &Run<'_>,
        f: &Finish,
        end: End,
        cursor_after: Option<Value>,
    ) -> Result<Ended> {
        let spec = run.spec;
        let mut tx = self.pool.begin().await?;
        if !jobs::finish(&mut tx, run.job, &Outcome::Succeeded).await? {
            return Ok(Ended::LostLease);
        }
        let (mut status, mut error) = match &end {
            End::Succeeded => (RunStatus::Succeeded, None),
            End::Partial => (RunStatus::Partial, None),
            End::Failed(e) => (RunStatus::Failed, Some(e.clone())),
            End::Cancelled => (RunStatus::Cancelled, Some("cancelled".to_owned())),
        };
        let done = matches!(end, End::Succeeded | End::Partial);
        let mut swept = 0;
        if done && spec.reads_all(Which::Source) && !spec.exchanges() {
            if matches!(end, End::Succeeded) {
                let target = inbound::target(run);
                match refused_deletes(&mut tx, run, &target).await? {
                    None => swept = store::sweep_unseen(&mut tx, &target).await?,
                    Some(why) => {
                        runs::log(&mut *tx, run.id, LogLevel::Warn, &why, None).await?;
                        (status, error) = (RunStatus::Partial, Some(why));
                    }
                }
            } else {
                let m = "deletes by absence skipped: records failed, so absence proves nothing";
                runs::log(&mut *tx, run.id, LogLevel::Warn, m, None).await?;
            }
        }
        let row: runs::SyncRun = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE sync_runs
                SET status = $2, error = $3, cursor_after = $4, rows_deleted = rows_deleted + $5,
                    finished_at = now(), checkpoint = NULL
              WHERE id = $1 RETURNING {}",
            runs::RUN_COLUMNS
        )))
        .bind(run.id)
        .bind(status)
        .bind(&error)
        .bind(&cursor_after)
        .bind(swept)
        .fetch_one(&mut *tx)
        .await?;
        metrics::counter!(m::SYNC_RUNS_FINISHED, "status" => status.as_str()).increment(1);
        if swept > 0 {
            metrics::counter!(m::SYNC_ROWS, "outcome" => "deleted").increment(swept as u64);
        }
        if done {
            sqlx::query("UPDATE sync_configurations SET cursor = $2 WHERE id = $1")
                .bind(run.configuration_id)
                .bind(&cursor_after)
                .execute(&mut *tx)
                .await?;
        }
        let ms = match (row.started_at, row.finished_at) {
            (Some(s), Some(e)) => (e - s).num_milliseconds(),
            _ => 0,
        };
        let plural = if row.batches == 1 { "" } else { "es" };
        let summary = format!("{} rows in {} batch{plural}", row.rows_read, row.batches);
        for (integration_id, target) in &f.sessions {
            let call = SourceCall {
                integration_id: *integration_id,
                tenant_id: run.scope.tenant_id,
                kind: "sync",
                method: "READ",
                target: target.as_deref(),
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
        let stats = serde_json::to_value(&row).map_err(|e| Error::Internal(e.into()))?;
        runs::log(&mut *tx, run.id, level, &message, Some(stats.clone())).await?;
        let mut tasks = Vec::new();
        let event_type = match status {
            RunStatus::Succeeded | RunStatus::Partial => Some("sync.run.succeeded"),
            RunStatus::Failed => Some("sync.run.failed"),
            _ => None,
        };
        if let Some(t) = event_type {
            let mut data = stats;
            data["entity"] = json!(spec.entity.as_str());
            tasks.push(self.event(&mut tx, run, t, data).await?);
        }
        let follow_up = if status == RunStatus::Cancelled {
            None
        } else {
            runs::follow_up(&mut tx, run.scope, run.configuration_id).await?
        };
        if let Some((next, _)) = &follow_up {
            let m = format!(
                "run {} follows: a webhook or a resolution asked for it during this run",
                next.id
            );
            runs::log(&mut *tx, run.id, LogLevel::Info, &m, None).await?;
        }
        tx.commit().await?;
        Ok(Ended::Finished {
            events: tasks,
            follow_up: follow_up.map(|(_, task)| task),
        })
    }

    /// Writes an event of the run's configuration to the outbox (ordered per configuration).
    pub(super) async fn event(
        &self,
        tx: &mut sqlx::PgConnection,
        run: &Run<'_>,
        event_type: &str,
        data: Value,
    ) -> Result<JobTask> {
        run_event(tx, run.scope, run.configuration_id, event_type, data).await
    }
}

/// An event of configuration `configuration_id`'s runs, in the outbox (ordered per
/// configuration).
async fn run_event(
    tx: &mut sqlx::PgConnection,
    scope: Scope,
    configuration_id: Uuid,
    event_type: &str,
    data: Value,
) -> Result<JobTask> {
    let mut event = NewEvent::new(
        scope.tenant_id,
        scope.mode,
        event_type,
        data,
        EventSource::Sync,
        chrono::Utc::now(),
    );
    event.ordering_key = Some(configuration_id.to_string());
    insert_one(tx, &event).await
}

/// A dead run's job fails its run (`Kind::on_dead`), so no run stays active without a job,
/// and ends it as a failed run ends: its log line, `sync.run.failed`, and the follow-up a
/// webhook or a resolution asked for meanwhile. In the job's death's transaction; returns the
/// event's task and the follow-up's, for the caller to push after the commit (as
/// [`Ended::Finished`]).
pub async fn fail_dead(
    conn: &mut sqlx::PgConnection,
    run_id: Uuid,
    error: &str,
) -> Result<(Vec<JobTask>, Option<JobTask>)> {
    let failed: Option<(Uuid, String, String)> = sqlx::query_as(
        "UPDATE sync_runs r SET status = 'failed', error = $2, finished_at = now(),
                                checkpoint = NULL
           FROM sync_configurations c
          WHERE r.id = $1 AND r.status IN ('pending', 'running') AND c.id = r.configuration_id
         RETURNING r.tenant_id, r.mode, c.entity",
    )
    .bind(run_id)
    .bind(error)
    .fetch_optional(&mut *conn)
    .await?;
    runs::log(&mut *conn, run_id, LogLevel::Error, error, None).await?;
    let Some((tenant_id, mode, entity)) = failed else {
        return Ok((vec![], None));
    };
    metrics::counter!(m::SYNC_RUNS_FINISHED, "status" => "failed").increment(1);
    let scope = Scope {
        tenant_id,
        mode: Mode::parse(&mode)?,
    };
    let row = runs::get(&mut *conn, scope, run_id).await?;
    let mut data = serde_json::to_value(&row).map_err(|e| Error::Internal(e.into()))?;
    data["entity"] = json!(entity);
    let event = run_event(conn, scope, row.configuration_id, "sync.run.failed", data).await?;
    let follow_up = runs::follow_up(conn, scope, row.configuration_id).await?;
    if let Some((next, _)) = &follow_up {
        let m = format!(
            "run {} follows: a webhook or a resolution asked for it during this run",
            next.id
        );
        runs::log(&mut *conn, run_id, LogLevel::Info, &m, None).await?;
    }
    Ok((vec![event], follow_up.map(|(_, task)| task)))
}

/// Why the deletes by absence of a run are not applied, if they are beyond the configuration's
/// guard and the run was not started with `confirm_deletes`: a read cut short (an API's page
/// smaller than asked, an empty answer, a table being reloaded) looks like mass deletion.
async fn refused_deletes(
    conn: &mut sqlx::PgConnection,
    run: &Run<'_>,
    target: &store::Target,
) -> Result<Option<String>> {
    if run.row.confirm_deletes || target.delete_policy == DeletePolicy::Ignore {
        return Ok(None);
    }
    let max = run.spec.max_delete_percent();
    let (unseen, live) = store::unseen(conn, target).await?;
    if unseen <= 10 || unseen * 100 <= max * live {
        return Ok(None);
    }
    Ok(Some(format!(
        "deletes by absence refused: {unseen} of {live} records were not read ({} %), more \
         than max_delete_percent {max}; start a run with confirm_deletes=true to apply them",
        unseen * 100 / live.max(1)
    )))
}

/// What the end of a run needs: the sessions it had with integrations, for their logs.
#[derive(Default)]
pub(super) struct Finish {
    sessions: Vec<(Uuid, Option<String>)>,
}

impl Finish {
    pub(super) fn opened(&mut self, side: &OpenSide) {
        self.sessions
            .push((side.integration_id, side.target.clone()));
    }
}
