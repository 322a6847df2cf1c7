//! Outbound and bidirectional runs. A run first writes the resolutions people made since the
//! last run, then reads the source's changes (and, bidirectional, the target's), batch by
//! batch. Each changed record is compared with the other side as it is now and with its sync
//! link ([`classify`](crate::sync::classify)); what must be written is written to the
//! integration first (keyed and conditional), then the batch's transaction commits the store's
//! writes, the links, the conflicts, the counters and the checkpoint. A crash between the two
//! loses nothing: the re-read batch finds both sides equal and only records the link.

use serde_json::{Value, json};

use super::{
    End, Ended, Engine, Finish, Run, next_batch,
    plan::{Seen, Side, idx, written_fields},
    start_of, unavailable,
};
use crate::{
    error::Result,
    integrations::connection::redact,
    queue::JobTask,
    sync::{
        adapter::{Page, Position},
        config::{Direction, SyncMode, SyncSpec, Which, cursor_column, lag_seconds},
        mapping::Rejected,
        store_side,
    },
};

impl Engine<'_> {
    pub(super) async fn exchange(&self, run: Run<'_>, fin: &mut Finish) -> Result<Ended> {
        let spec = run.spec;
        let bidirectional = spec.direction() == Direction::Bidirectional;
        let mut sides = [Side::Store, Side::Store];
        for which in [Which::Source, Which::Target] {
            if which.spec(spec).is_store() {
                continue;
            }
            let mut side = match self.open(&run, fin, which).await? {
                Ok(side) => side,
                Err(ended) => return Ok(ended),
            };
            fin.opened(&side);
            let writes_here = which == Which::Target || bidirectional;
            if writes_here {
                let fields = written_fields(spec, which);
                if let Err(e) = side.adapter.check_writable(&fields).await {
                    let e = redact(&e, &side.credentials);
                    return self.finish(&run, fin, End::Failed(e), None).await;
                }
            }
            sides[idx(which)] = Side::Ext(side);
        }
        let (watermark, target_watermark) = if run.row.started {
            (run.row.watermark.clone(), run.row.target_watermark.clone())
        } else {
            let w = self.watermark(&mut sides[0], spec, Which::Source).await?;
            let t = if bidirectional {
                self.watermark(&mut sides[1], spec, Which::Target).await?
            } else {
                None
            };
            (w, t)
        };
        if !self
            .mark_running(&run, &watermark, &target_watermark)
            .await?
        {
            return Ok(Ended::LostLease);
        }
        let mut tasks = Vec::new();
        if bidirectional && !self.apply_resolutions(&run, &mut sides).await? {
            return Ok(Ended::LostLease);
        }
        let mut phases = vec![(Which::Source, watermark.clone())];
        if bidirectional {
            phases.push((Which::Target, target_watermark.clone()));
        }
        for (which, w) in phases {
            if which == Which::Source && run.row.phase == "target" {
                continue;
            }
            match self
                .pass(&run, fin, &mut sides, which, w.as_deref(), &mut tasks)
                .await?
            {
                Pass::Done => {}
                Pass::Lost => return Ok(Ended::LostLease),
                Pass::End(end) => return self.end_with(&run, fin, end, None, tasks).await,
                Pass::Ended(ended) => return Ok(ended),
            }
        }
        let cursor_after = (spec.mode == SyncMode::Incremental).then(|| {
            let mut c = json!({ "value": watermark });
            if bidirectional {
                c["target"] = json!({ "value": target_watermark });
            }
            c
        });
        let failed: i64 = sqlx::query_scalar("SELECT rows_failed FROM sync_runs WHERE id = $1")
            .bind(run.id)
            .fetch_one(self.pool)
            .await?;
        let end = if failed > 0 {
            End::Partial
        } else {
            End::Succeeded
        };
        self.end_with(&run, fin, end, cursor_after, tasks).await
    }

    /// Finishes the run, adding the fan-outs of the conflict events it wrote.
    async fn end_with(
        &self,
        run: &Run<'_>,
        fin: &Finish,
        end: End,
        cursor_after: Option<Value>,
        tasks: Vec<JobTask>,
    ) -> Result<Ended> {
        let mut ended = self.finish(run, fin, end, cursor_after).await?;
        if let Ended::Finished { events, .. } = &mut ended {
            events.extend(tasks);
        }
        Ok(ended)
    }

    /// A side's upper bound for this run, on its own clock.
    async fn watermark(
        &self,
        side: &mut Side,
        spec: &SyncSpec,
        which: Which,
    ) -> Result<Option<String>> {
        if spec.reads_all(which) && which.spec(spec).is_store() {
            return Ok(None);
        }
        match side {
            Side::Store => {
                let mut conn = self.pool.acquire().await?;
                Ok(Some(store_side::watermark(&mut conn).await?))
            }
            Side::Ext(s) => {
                let Some(cursor) = which.cursor(spec) else {
                    return Ok(None);
                };
                let lag = lag_seconds(cursor);
                s.adapter
                    .watermark(cursor_column(cursor), cursor.strategy, lag)
                    .await
                    .map_err(|e| unavailable(redact(&e, &s.credentials)))
            }
        }
    }

    /// One batch settled; `Some` when the pass stops there (the lease lost, the error
    /// threshold passed, the run cancelled).
    async fn step(
        &self,
        run: &Run<'_>,
        sides: &mut [Side; 2],
        which: Which,
        items: Vec<std::result::Result<Seen, Rejected>>,
        next: &Position,
        tasks: &mut Vec<JobTask>,
    ) -> Result<Option<Pass>> {
        Ok(
            match self.settle(run, sides, which, items, next, tasks).await? {
                None => Some(Pass::Lost),
                Some(state) => Self::after_batch(run.spec, &state).map(Pass::End),
            },
        )
    }

    /// Reads `which` side's changes from its checkpoint (or cursor) up to `watermark`, and
    /// settles them batch by batch.
    async fn pass(
        &self,
        run: &Run<'_>,
        fin: &Finish,
        sides: &mut [Side; 2],
        which: Which,
        watermark: Option<&str>,
        tasks: &mut Vec<JobTask>,
    ) -> Result<Pass> {
        let spec = run.spec;
        let cursor = which.cursor(spec);
        let store = which.spec(spec).is_store();
        let position = start_of(run, which);
        let batch_size = spec.batch_size();
        if store {
            let mut position = position;
            loop {
                let rows = {
                    let mut conn = self.pool.acquire().await?;
                    store_side::page(
                        &mut conn,
                        run.scope,
                        spec.entity.as_str(),
                        &position,
                        watermark,
                        batch_size,
                    )
                    .await?
                };
                let Some(last) = rows.last() else { break };
                let next = Position::After {
                    value: Some(last.version.clone()),
                    key: vec![last.key.clone()],
                };
                let full = rows.len() as i64 == batch_size;
                let items = rows
                    .into_iter()
                    .map(|r| Seen::store(spec, which, r))
                    .collect();
                if let Some(stop) = self.step(run, sides, which, items, &next, tasks).await? {
                    return Ok(stop);
                }
                position = next;
                if !full {
                    break;
                }
            }
            return Ok(Pass::Done);
        }
        // An integration side: its changes stream on a reading connection of their own, while
        // lookups and writes go through the side opened for them.
        let mut reader = match self.open(run, fin, which).await? {
            Ok(r) => r,
            Err(ended) => return Ok(Pass::Ended(ended)),
        };
        let column = cursor.and_then(cursor_column);
        let key = which.spec(spec).key_names();
        let page = Page {
            cursor: column,
            strategy: cursor.map(|c| c.strategy),
            key: &key,
            position: &position,
            watermark,
            limit: None,
        };
        let credentials = &reader.credentials;
        let mut rows = reader.adapter.stream(&page);
        loop {
            let Some((batch, next)) =
                next_batch(&mut rows, batch_size as usize, column, &key, credentials).await?
            else {
                break;
            };
            let full = batch.len() as i64 == batch_size;
            let items = batch
                .into_iter()
                .map(|r| match &sides[idx(which)] {
                    Side::Ext(s) => Seen::ext(spec, which, s.adapter.as_ref(), r),
                    Side::Store => unreachable!("an integration side"),
                })
                .collect();
            if let Some(stop) = self.step(run, sides, which, items, &next, tasks).await? {
                return Ok(stop);
            }
            if !full {
                break;
            }
        }
        Ok(Pass::Done)
    }
}

/// How a pass ended.
enum Pass {
    Done,
    Lost,
    End(End),
    Ended(Ended),
}
