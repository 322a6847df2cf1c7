//! Inbound runs: an integration's rows, mapped, upserted into the record store. The run reads
//! one streamed statement (or the resource's pages) from its checkpoint up to its watermark,
//! and commits each batch — records, skipped records, counters, checkpoint — in one
//! transaction.

use serde_json::{Value, json};

use super::{
    BatchState, Counts, End, Ended, Engine, Finish, Run, hold, is_data_error, next_batch, start_of,
    unavailable,
};
use crate::{
    error::Result,
    integrations::connection::redact,
    sync::{
        adapter::{Page, Position},
        config::Which,
        mapping::{self, Record, Rejected},
        store::{self, Applied, Target},
    },
};

/// Where an inbound run writes.
pub(super) fn target(run: &Run<'_>) -> Target {
    Target {
        scope: run.scope,
        entity: run.spec.entity.to_string(),
        configuration_id: run.configuration_id,
        run_id: run.id,
        delete_policy: run.spec.delete_policy(),
        full: run.spec.reads_all(Which::Source),
    }
}

impl Engine<'_> {
    pub(super) async fn inbound(&self, run: Run<'_>, fin: &mut Finish) -> Result<Ended> {
        let spec = run.spec;
        let mut side = match self.open(&run, fin, Which::Source).await? {
            Ok(side) => side,
            Err(ended) => return Ok(ended),
        };
        fin.opened(&side);
        let column = spec.cursor_column();
        let strategy = spec.strategy();
        let watermark = match (&run.row.watermark, strategy, run.row.started) {
            (w, _, true) => w.clone(),
            (_, Some(s), false) => side
                .adapter
                .watermark(column, s, spec.lag_seconds())
                .await
                .map_err(|e| unavailable(redact(&e, &side.credentials)))?,
            (_, None, false) => None,
        };
        if !self.mark_running(&run, &watermark, &None).await? {
            return Ok(Ended::LostLease);
        }
        let position = start_of(&run, Which::Source);
        let key = spec.source.key_names();
        let target = target(&run);
        let mut failed = run.row.rows_failed;
        let page = Page {
            cursor: column,
            strategy,
            key: &key,
            position: &position,
            watermark: watermark.as_deref(),
            limit: None,
        };
        let batch_size = spec.batch_size() as usize;
        let credentials = &side.credentials;
        let mut rows = side.adapter.stream(&page);
        loop {
            let Some((batch, next)) =
                next_batch(&mut rows, batch_size, column, &key, credentials).await?
            else {
                break;
            };
            let full_batch = batch.len() == batch_size;
            let read = batch.len() as i64;
            let mut records = Vec::with_capacity(batch.len());
            let mut rejected = Vec::new();
            for r in batch {
                match mapping::map_row(spec, r.row) {
                    Ok(mut rec) => {
                        rec.deleted |= r.deleted;
                        records.push(rec);
                    }
                    Err(e) => rejected.push(e),
                }
            }
            let Some(committed) = self
                .commit_batch(&run, &target, read, records, rejected, &next)
                .await?
            else {
                return Ok(Ended::LostLease);
            };
            failed = committed.rows_failed;
            if let Some(end) = Self::after_batch(spec, &committed) {
                drop(rows);
                return self.finish(&run, fin, end, None).await;
            }
            if !full_batch {
                break;
            }
        }
        drop(rows);
        let cursor_after = match (column.is_some() || strategy.is_some(), &watermark) {
            (true, Some(w)) if !spec.reads_all(Which::Source) => Some(json!({ "value": w })),
            (true, None) if !spec.reads_all(Which::Source) => run.row.cursor_before.clone(),
            _ => None,
        };
        let end = if failed > 0 {
            End::Partial
        } else {
            End::Succeeded
        };
        self.finish(&run, fin, end, cursor_after).await
    }

    /// Writes one batch with its counters and checkpoint; `None` when the lease is lost.
    async fn commit_batch(
        &self,
        run: &Run<'_>,
        target: &Target,
        read: i64,
        records: Vec<Record>,
        mut rejected: Vec<Rejected>,
        next: &Position,
    ) -> Result<Option<BatchState>> {
        let mut tx = self.pool.begin().await?;
        if !hold(&mut tx, run.job).await? {
            return Ok(None);
        }
        // The batch in one statement; only when the store refuses a record is the batch
        // written again record by record, each under a savepoint, to find it (a savepoint per
        // batch would cost every batch a subtransaction).
        let applied = match store::apply(&mut tx, target, &records).await {
            Ok(a) => a,
            Err(e) if is_data_error(&e) => {
                tx.rollback().await?;
                tx = self.pool.begin().await?;
                if !hold(&mut tx, run.job).await? {
                    return Ok(None);
                }
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
        };
        let counts = Counts {
            read,
            inserted: applied.inserted,
            updated: applied.updated,
            unchanged: applied.unchanged,
            deleted: applied.deleted,
            conflicts: 0,
            failed: 0,
        };
        let state = self
            .count(&mut tx, run.id, counts, &rejected, Which::Source, next)
            .await?;
        tx.commit().await?;
        Ok(Some(state))
    }
}
