//! One batch of an exchange run: each changed record decided against the other side and its
//! link, the writes carried out, and the links, conflicts, counters and checkpoint committed in
//! one transaction.

use std::collections::HashMap;

use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    BatchState, Counts, Engine, Run, hold,
    plan::{Fetched, Plan, Results, Seen, Settled, Side, idx},
};
use crate::{
    error::Result,
    queue::JobTask,
    sync::{
        adapter::Position,
        classify::{self, Decision, Input},
        config::{ConflictStrategy, Direction, SyncSpec, Which},
        conflicts::{self, Found},
        links::{self, Link},
        mapping::Rejected,
        runs::{self, LogLevel},
        values,
    },
};

/// A record a batch holds for a person: the side read, the other side, and why.
type Held = (Seen, Option<Seen>, Decision);

/// What a batch decided before writing.
struct Decided {
    plan: Plan,
    holds: Vec<Held>,
}

fn rejected(key: &str, error: String, data: &serde_json::Map<String, Value>) -> Rejected {
    Rejected {
        key: Some(key.to_owned()),
        error,
        row: Value::Object(data.clone()),
    }
}

impl Engine<'_> {
    /// One batch of `from`'s changes: decided, written, committed with its checkpoint.
    /// `None` when the lease is lost.
    pub(super) async fn settle(
        &self,
        run: &Run<'_>,
        sides: &mut [Side; 2],
        from: Which,
        items: Vec<std::result::Result<Seen, Rejected>>,
        next: &Position,
        tasks: &mut Vec<JobTask>,
    ) -> Result<Option<BatchState>> {
        let spec = run.spec;
        let other = from.other();
        let mut counts = Counts {
            read: items.len() as i64,
            ..Counts::default()
        };
        let mut bad: Vec<Rejected> = Vec::new();
        // One decision per key: a side's read may hold a key twice (pages that shifted while
        // they were read); its last row is the newest.
        let mut by_key: HashMap<String, Seen> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for item in items {
            match item {
                Ok(s) => {
                    if by_key.contains_key(&s.record.key) {
                        counts.unchanged += 1;
                    } else {
                        order.push(s.record.key.clone());
                    }
                    by_key.insert(s.record.key.clone(), s);
                }
                Err(r) => bad.push(r),
            }
        }
        let seen: Vec<Seen> = order.iter().filter_map(|k| by_key.remove(k)).collect();
        let keys: Vec<String> = seen.iter().map(|s| s.record.key.clone()).collect();
        let (link_of, held) = {
            let mut conn = self.pool.acquire().await?;
            let l = links::load(&mut conn, run.configuration_id, &keys).await?;
            let h = conflicts::pending(&mut conn, run.configuration_id, &keys).await?;
            (l, h)
        };
        let theirs = self
            .fetch(run, &mut sides[idx(other)], other, &keys)
            .await?;
        let strategy =
            (spec.direction() == Direction::Bidirectional).then(|| spec.conflict_strategy());
        let Decided { plan, holds } = decide(
            spec,
            from,
            seen,
            &theirs,
            &link_of,
            &held,
            strategy,
            &mut counts,
            &mut bad,
        );
        let mut results = self.write_integrations(spec, sides, &plan).await?;
        // One way, the source decides: a target row that changed between its read and the
        // write is read again and written once more.
        let retry = if strategy.is_none() {
            self.retry_changed(run, sides, &plan, &results).await?
        } else {
            None
        };
        let mut tx = self.pool.begin().await?;
        if !hold(&mut tx, run.job).await? {
            return Ok(None);
        }
        self.write_store(&mut tx, run, sides, &plan, &mut results)
            .await?;
        let mut saved: Vec<(String, Link)> = Vec::new();
        let mut deferred = 0;
        let retried: Vec<&str> = retry
            .iter()
            .flat_map(|(p, _)| p.outcomes.iter().map(|o| o.key.as_str()))
            .collect();
        let passes = std::iter::once((&plan, &results)).chain(retry.iter().map(|(p, r)| (p, r)));
        for (i, (p, r)) in passes.enumerate() {
            for o in &p.outcomes {
                if i == 0 && retried.contains(&o.key.as_str()) {
                    continue;
                }
                match p.settled(o, r, &mut counts) {
                    Settled::Written(link) => {
                        if let Some(id) = o.converged {
                            conflicts::converged(&mut tx, id).await?;
                        }
                        saved.push((o.key.clone(), link));
                    }
                    Settled::Refused(error) => bad.push(Rejected {
                        key: Some(o.key.clone()),
                        error,
                        row: o.base.clone().map_or(Value::Null, Value::Object),
                    }),
                    // A one-way sync's target that changed again during the retry.
                    Settled::Deferred if strategy.is_none() => bad.push(Rejected {
                        key: Some(o.key.clone()),
                        error: "the target changed the row again while the sync wrote it; the \
                                record's next change writes it again"
                            .into(),
                        row: o.base.clone().map_or(Value::Null, Value::Object),
                    }),
                    Settled::Deferred => deferred += 1,
                }
            }
        }
        links::save(&mut tx, run.configuration_id, run.id, &saved).await?;
        for (x, y, decision) in &holds {
            let Decision::Hold { reason, fields } = decision else {
                continue;
            };
            let (source, target) = match from {
                Which::Source => (x.state(), y.as_ref().and_then(|y| y.state())),
                Which::Target => (y.as_ref().and_then(|y| y.state()), x.state()),
            };
            let base = link_of.get(&x.record.key).and_then(|l| l.base.as_ref());
            let found = Found {
                key: &x.record.key,
                reason: *reason,
                source,
                target,
                base,
                fields,
            };
            let (id, new) =
                conflicts::open(&mut tx, run.scope, run.configuration_id, run.id, &found).await?;
            if new {
                counts.conflicts += 1;
                let data = json!({
                    "id": id, "configuration_id": run.configuration_id,
                    "entity": spec.entity.as_str(), "key": x.record.key,
                    "reason": reason, "fields": fields,
                });
                tasks.push(
                    self.event(&mut tx, run, "sync.conflict.created", data)
                        .await?,
                );
            }
        }
        if deferred > 0 {
            let m = format!(
                "{deferred} records changed on the other side while this batch ran: the next \
                 read of that side's changes takes them"
            );
            runs::log(&mut *tx, run.id, LogLevel::Info, &m, None).await?;
        }
        let state = self
            .count(&mut tx, run.id, counts, &bad, from, next)
            .await?;
        tx.commit().await?;
        Ok(Some(state))
    }

    /// The writes of a one-way batch that found their target row changed, planned again
    /// against the row as it is now and written; `None` when none changed.
    async fn retry_changed(
        &self,
        run: &Run<'_>,
        sides: &mut [Side; 2],
        plan: &Plan,
        results: &Results,
    ) -> Result<Option<(Plan, Results)>> {
        let changed: Vec<&super::plan::Outcome> = plan
            .outcomes
            .iter()
            .filter(|o| {
                o.writes.iter().any(|&i| {
                    matches!(
                        results[i],
                        Some((crate::sync::adapter::Written::Changed, _))
                    )
                })
            })
            .collect();
        if changed.is_empty() {
            return Ok(None);
        }
        let keys: Vec<String> = changed.iter().map(|o| o.key.clone()).collect();
        let now = self
            .fetch(run, &mut sides[idx(Which::Target)], Which::Target, &keys)
            .await?;
        let mut again = Plan::default();
        for o in changed {
            let both = [None, now.seen.get(&o.key)];
            // Written as decided, over the row as it is now.
            if let Ok(Some(j)) = again.apply(
                run.spec,
                &o.key,
                &[Which::Target],
                o.base.as_ref(),
                both,
                false,
            ) {
                again.outcomes[j].versions[0] = o.versions[0].clone();
            }
        }
        let results = self.write_integrations(run.spec, sides, &again).await?;
        Ok(Some((again, results)))
    }
}

/// Decides each record of a batch.
#[allow(clippy::too_many_arguments)]
fn decide(
    spec: &SyncSpec,
    from: Which,
    seen: Vec<Seen>,
    theirs: &Fetched,
    link_of: &HashMap<String, Link>,
    held: &HashMap<String, Uuid>,
    strategy: Option<ConflictStrategy>,
    counts: &mut Counts,
    bad: &mut Vec<Rejected>,
) -> Decided {
    let other = from.other();
    let mut plan = Plan::default();
    let mut holds = Vec::new();
    for x in seen {
        let key = x.record.key.clone();
        // The other side has the record but it cannot be mapped: never taken for absent.
        if let Some(e) = theirs.unreadable.get(&key) {
            let e = format!("the {}'s record cannot be mapped: {e}", other.as_str());
            bad.push(rejected(&key, e, &x.record.data));
            continue;
        }
        let y = theirs.seen.get(&key);
        let input = Input {
            from,
            x: x.state(),
            y: y.and_then(|y| y.state()),
            base: link_of.get(&key).map(|l| l.base.as_ref()),
            held: held.contains_key(&key),
            x_time: x.time,
            y_time: y.and_then(|y| y.time),
        };
        let decision = classify::decide(strategy, &input);
        let mut both: [Option<&Seen>; 2] = [None, None];
        both[idx(from)] = Some(&x);
        both[idx(other)] = y;
        let applied = match &decision {
            Decision::Skip => {
                counts.unchanged += 1;
                Ok(())
            }
            Decision::Agree => {
                counts.unchanged += 1;
                plan.agree(&key, x.state(), both, held.get(&key).copied());
                Ok(())
            }
            Decision::Apply {
                to,
                state,
                conflict,
            } => plan
                .apply(spec, &key, &[*to], state.as_ref(), both, *conflict)
                .map(|done| {
                    if done.is_none() {
                        counts.unchanged += 1;
                    }
                }),
            Decision::Merge { state } => {
                let to: Vec<Which> = [Which::Source, Which::Target]
                    .into_iter()
                    .filter(|w| {
                        !both[idx(*w)]
                            .and_then(|s| s.state())
                            .is_some_and(|s| values::same_fields(s, state))
                    })
                    .collect();
                plan.apply(spec, &key, &to, Some(state), both, true)
                    .map(|_| ())
            }
            Decision::Hold { .. } => {
                holds.push((x.clone(), y.cloned(), decision.clone()));
                Ok(())
            }
        };
        if let Err(e) = applied {
            bad.push(rejected(&key, e, &x.record.data));
        }
    }
    Decided { plan, holds }
}
