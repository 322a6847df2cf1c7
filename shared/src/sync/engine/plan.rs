//! What an exchange batch decided, and carrying it out: the sides as the engine sees them,
//! records fetched by key, the writes each decision needs, and their results (integrations
//! written before the batch's transaction, the store on it).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Counts, Engine, Run, unavailable};
use crate::{
    error::Result,
    integrations::connection::redact,
    sync::{
        adapter::{Adapter, Read, Row, Write, WriteOp, Written, as_text, key_parts},
        config::{CursorStrategy, DeletePolicy, SyncSpec, Which, cursor_column},
        links::Link,
        mapping::{self, Record, Rejected},
        open::OpenSide,
        store_side::{self, StoreRow, StoreTarget, StoreWrite},
        values,
    },
};

/// A side of an exchange run: the record store, or an integration opened for lookups and
/// writes (reads of its changes use a connection of their own).
pub(super) enum Side {
    Store,
    Ext(Box<OpenSide>),
}

/// A record as one side holds it now, with its version.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    pub(super) record: Record,
    pub(super) version: Option<String>,
    /// When the side changed it, as the side wrote it (for `newest_wins`).
    pub(super) time: Option<DateTime<Utc>>,
}

impl Seen {
    /// A row read from integration side `which`.
    pub(super) fn ext(
        spec: &SyncSpec,
        which: Which,
        adapter: &dyn Adapter,
        read: Read,
    ) -> std::result::Result<Seen, Rejected> {
        let version = adapter.version_of(&read.row);
        let time = which
            .cursor(spec)
            .filter(|c| c.strategy == CursorStrategy::Timestamp)
            .and_then(cursor_column)
            .and_then(|c| read.row.get(c))
            .and_then(as_text)
            .and_then(|t| values::instant(&t));
        let record = ext_record(spec, which, read)?;
        Ok(Seen {
            record,
            version,
            time,
        })
    }

    /// A record of the store read as side `which`.
    pub(super) fn store(
        spec: &SyncSpec,
        which: Which,
        row: StoreRow,
    ) -> std::result::Result<Seen, Rejected> {
        let version = Some(row.version.clone());
        let time = values::instant(&row.version);
        let record = store_record(spec, which, row)?;
        Ok(Seen {
            record,
            version,
            time,
        })
    }
}

impl Seen {
    pub(super) fn state(&self) -> Option<&Row> {
        (!self.record.deleted).then_some(&self.record.data)
    }
}

/// A write one decision needs.
pub(super) struct Planned {
    pub(super) to: Which,
    pub(super) key: String,
    pub(super) op: WriteOp,
    pub(super) expected: Option<String>,
    pub(super) exists: bool,
}

/// What a batch decided for one record: the writes it needs and the link once they are done.
pub(super) struct Outcome {
    pub(super) key: String,
    pub(super) writes: Vec<usize>,
    pub(super) base: Option<Row>,
    pub(super) versions: [Option<String>; 2],
    pub(super) conflict: bool,
    /// A pending conflict the sides settled by agreeing.
    pub(super) converged: Option<Uuid>,
}

pub(super) fn idx(w: Which) -> usize {
    match w {
        Which::Source => 0,
        Which::Target => 1,
    }
}

/// A row of an integration side as a record in the target's names.
pub(super) fn ext_record(
    spec: &SyncSpec,
    which: Which,
    read: Read,
) -> std::result::Result<Record, Rejected> {
    let mut rec = match which {
        Which::Source => mapping::map_row(spec, read.row)?,
        Which::Target => match mapping::target_record(spec, &read.row) {
            Some(r) => r,
            None => {
                return Err(Rejected {
                    key: None,
                    error: "a key column is null".into(),
                    row: Value::Object(read.row),
                });
            }
        },
    };
    rec.deleted |= read.deleted;
    Ok(rec)
}

/// A record of the store as a record of `which` side.
pub(super) fn store_record(
    spec: &SyncSpec,
    which: Which,
    row: StoreRow,
) -> std::result::Result<Record, Rejected> {
    let mut rec = match which {
        Which::Source => mapping::map_keyed(spec, row.key, row.data)?,
        Which::Target => {
            let data: Row = mapping::canonical_fields(spec)
                .into_iter()
                .map(|f| {
                    let v = row.data.get(&f).cloned().unwrap_or(Value::Null);
                    (f, v)
                })
                .collect();
            Record {
                key: row.key,
                hash: mapping::hash(&data),
                data,
                deleted: false,
            }
        }
    };
    rec.deleted |= row.deleted;
    Ok(rec)
}

/// The fields written to `which` side (the source's names for the source).
pub(super) fn written_fields(spec: &SyncSpec, which: Which) -> Vec<String> {
    match which {
        Which::Target => mapping::canonical_fields(spec),
        Which::Source => {
            let mut f = spec.source.key_names();
            f.extend(spec.mappings().iter().map(|m| m.source.to_string()));
            f.dedup();
            f
        }
    }
}

/// The writes and links a batch decided.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) writes: Vec<Planned>,
    pub(super) outcomes: Vec<Outcome>,
}

impl Plan {
    pub(super) fn agree(
        &mut self,
        key: &str,
        state: Option<&Row>,
        both: [Option<&Seen>; 2],
        converged: Option<Uuid>,
    ) {
        self.outcomes.push(Outcome {
            key: key.to_owned(),
            writes: vec![],
            base: state.cloned(),
            versions: both.map(|s| s.and_then(|s| s.version.clone())),
            conflict: false,
            converged,
        });
    }

    /// Writes `state` (`None`: a delete, by the configuration's policy) to the sides `to`;
    /// both then agree on it. `Err`: the record cannot be written back (a lookup the source
    /// has no value for).
    pub(super) fn apply(
        &mut self,
        spec: &SyncSpec,
        key: &str,
        to: &[Which],
        state: Option<&Row>,
        both: [Option<&Seen>; 2],
        conflict: bool,
    ) -> std::result::Result<Option<usize>, String> {
        let mut writes = Vec::new();
        for &w in to {
            let now = both[idx(w)];
            let exists = now.is_some();
            let op = match state {
                Some(data) => WriteOp::Upsert(match w {
                    Which::Target => data.clone(),
                    Which::Source => mapping::to_source(spec, data)?,
                }),
                None if !exists => continue,
                None => match spec.delete_policy() {
                    // Deletes are not carried: the other side keeps its record, and the link
                    // its base, so the kept record is not taken for a change.
                    DeletePolicy::Ignore => return Ok(None),
                    DeletePolicy::Soft if now.is_some_and(|s| s.record.deleted) => continue,
                    DeletePolicy::Soft => WriteOp::SoftDelete,
                    DeletePolicy::Hard => WriteOp::Delete,
                },
            };
            writes.push(Planned {
                to: w,
                key: key.to_owned(),
                op,
                expected: now.and_then(|s| s.version.clone()),
                exists,
            });
        }
        let first = self.writes.len();
        let n = writes.len();
        self.writes.extend(writes);
        self.outcomes.push(Outcome {
            key: key.to_owned(),
            writes: (first..first + n).collect(),
            base: state.cloned(),
            versions: both.map(|s| s.and_then(|s| s.version.clone())),
            conflict,
            converged: None,
        });
        Ok(Some(self.outcomes.len() - 1))
    }
}

/// One result per planned write: what the side did, and the record's version there after.
pub(super) type Results = Vec<Option<(Written, Option<String>)>>;

/// What came of one record's writes.
pub(super) enum Settled {
    /// Every write took: both sides now agree on the link's base.
    Written(Link),
    /// A side refused the values: a poison record.
    Refused(String),
    /// A side's record changed since it was read: the next read of its changes decides again.
    Deferred,
}

impl Plan {
    /// What came of outcome `o`'s writes, counted into `counts`.
    pub(super) fn settled(&self, o: &Outcome, results: &Results, counts: &mut Counts) -> Settled {
        let mut versions = o.versions.clone();
        let mut done = Counts::default();
        for &i in &o.writes {
            let w = &self.writes[i];
            match &results[i] {
                Some((Written::Done { .. }, v)) => {
                    versions[idx(w.to)] = v.clone();
                    match (&w.op, w.exists) {
                        (WriteOp::Upsert(_), false) => done.inserted += 1,
                        (WriteOp::Upsert(_), true) => done.updated += 1,
                        _ => done.deleted += 1,
                    }
                }
                Some((Written::Refused(e), _)) => {
                    return Settled::Refused(format!("the {} refused it: {e}", w.to.as_str()));
                }
                _ => return Settled::Deferred,
            }
        }
        counts.inserted += done.inserted;
        counts.updated += done.updated;
        counts.deleted += done.deleted;
        if o.conflict {
            counts.conflicts += 1;
        }
        let [source_version, target_version] = versions;
        Settled::Written(Link {
            base: o.base.clone(),
            source_version,
            target_version,
        })
    }
}

impl Engine<'_> {
    /// Writes the plan's records to the integrations, before the batch's transaction: what
    /// they took is known when it commits.
    pub(super) async fn write_integrations(
        &self,
        spec: &SyncSpec,
        sides: &mut [Side; 2],
        plan: &Plan,
    ) -> Result<Results> {
        let mut results: Results = vec![None; plan.writes.len()];
        for which in [Which::Source, Which::Target] {
            let Side::Ext(s) = &mut sides[idx(which)] else {
                continue;
            };
            let mine: Vec<usize> = (0..plan.writes.len())
                .filter(|&i| plan.writes[i].to == which)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let n = which.spec(spec).key().len();
            // A record key that does not split into the side's key columns is refused, never
            // written under an empty key.
            let (mine, misfits): (Vec<usize>, Vec<usize>) = mine
                .into_iter()
                .partition(|&i| key_parts(&plan.writes[i].key, n).is_some());
            for i in misfits {
                let e = format!(
                    "the key does not fit the {}'s {n} key columns",
                    which.as_str()
                );
                results[i] = Some((Written::Refused(e), None));
            }
            if mine.is_empty() {
                continue;
            }
            let writes: Vec<Write> = mine
                .iter()
                .map(|&i| {
                    let p = &plan.writes[i];
                    Write {
                        key: key_parts(&p.key, n).unwrap_or_default(),
                        op: p.op.clone(),
                        expected: p.expected.clone(),
                        exists: p.exists,
                    }
                })
                .collect();
            let done = s
                .adapter
                .write(&writes)
                .await
                .map_err(|e| unavailable(redact(&e, &s.credentials)))?;
            for (&i, w) in mine.iter().zip(done) {
                let version = match &w {
                    Written::Done { row: Some(r) } => s.adapter.version_of(r),
                    _ => None,
                };
                results[i] = Some((w, version));
            }
        }
        Ok(results)
    }

    /// Writes the plan's store records on the batch's transaction.
    pub(super) async fn write_store(
        &self,
        tx: &mut PgConnection,
        run: &Run<'_>,
        sides: &[Side; 2],
        plan: &Plan,
        results: &mut Results,
    ) -> Result<()> {
        let mine: Vec<usize> = (0..plan.writes.len())
            .filter(|&i| matches!(sides[idx(plan.writes[i].to)], Side::Store))
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        let target = StoreTarget {
            scope: run.scope,
            entity: run.spec.entity.as_str(),
            configuration_id: run.configuration_id,
            run_id: run.id,
        };
        let writes: Vec<StoreWrite> = mine
            .iter()
            .map(|&i| StoreWrite {
                key: &plan.writes[i].key,
                op: &plan.writes[i].op,
                expected: plan.writes[i].expected.as_deref(),
            })
            .collect();
        let done = store_side::write(tx, &target, &writes).await?;
        for (&i, w) in mine.iter().zip(done) {
            results[i] = Some(w);
        }
        Ok(())
    }

    /// The records with `keys` as `which` side holds them now. A record the side holds but
    /// that cannot be mapped is not absent: it is returned among the unreadable, with why.
    pub(super) async fn fetch(
        &self,
        run: &Run<'_>,
        side: &mut Side,
        which: Which,
        keys: &[String],
    ) -> Result<Fetched> {
        let spec = run.spec;
        let mut out = Fetched::default();
        let mut keep = |seen: std::result::Result<Seen, Rejected>| match seen {
            Ok(seen) => {
                out.seen.insert(seen.record.key.clone(), seen);
            }
            Err(r) => {
                if let Some(k) = r.key {
                    out.unreadable.insert(k, r.error);
                }
            }
        };
        match side {
            Side::Store => {
                let mut conn = self.pool.acquire().await?;
                let rows =
                    store_side::fetch(&mut conn, run.scope, spec.entity.as_str(), keys).await?;
                for r in rows {
                    keep(Seen::store(spec, which, r));
                }
            }
            Side::Ext(s) => {
                let n = which.spec(spec).key().len();
                // A key that does not fit the side's key (a record key of other parts) cannot
                // be there.
                let parts: Vec<Vec<String>> = keys.iter().filter_map(|k| key_parts(k, n)).collect();
                let rows = s
                    .adapter
                    .fetch(&parts)
                    .await
                    .map_err(|e| unavailable(redact(&e, &s.credentials)))?;
                for row in rows {
                    keep(Seen::ext(spec, which, s.adapter.as_ref(), Read::row(row)));
                }
            }
        }
        Ok(out)
    }
}

/// Records fetched by key.
#[derive(Default)]
pub(super) struct Fetched {
    pub(super) seen: HashMap<String, Seen>,
    /// Present on the side, but not mappable (a lookup miss, a failed cast): never taken for
    /// absent.
    pub(super) unreadable: HashMap<String, String>,
}
