//! One batch of an exchange run: each changed record decided against the other side and its
//! link, the writes carried out, and the links, conflicts, counters and checkpoint committed in
//! one transaction.

use serde_json::{Value, json};

use super::{
    BatchState, Counts, Engine, Run, hold,
    plan::{Plan, Seen, Settled, Side, idx},
};
use crate::{
    error::Result,
    queue::JobTask,
    sync::{
        adapter::Position,
        classify::{self, Decision, Input},
        config::Direction,
        conflicts::{self, Found},
        links::{self, Link},
        mapping::Rejected,
        open::Which,
        runs::{self, LogLevel},
        values,
    },
};

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
        let (seen, mut rejected): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| i.is_ok());
        let seen: Vec<Seen> = seen.into_iter().filter_map(|s| s.ok()).collect();
        let mut rejected: Vec<Rejected> = rejected.drain(..).filter_map(|r| r.err()).collect();
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
        let mut plan = Plan::default();
        let mut holds: Vec<(Seen, Option<Seen>, classify::Decision)> = Vec::new();
        for x in seen {
            let y = theirs.get(&x.record.key);
            let link = link_of.get(&x.record.key);
            let input = Input {
                from,
                x: x.state(),
                y: y.and_then(|y| y.state()),
                base: link.map(|l| l.base.as_ref()),
                held: held.contains_key(&x.record.key),
                x_time: x.time,
                y_time: y.and_then(|y| y.time),
            };
            let decision = classify::decide(strategy, &input);
            let mut both: [Option<&Seen>; 2] = [None, None];
            both[idx(from)] = Some(&x);
            both[idx(other)] = y;
            match &decision {
                Decision::Skip => counts.unchanged += 1,
                Decision::Agree => {
                    counts.unchanged += 1;
                    plan.agree(
                        &x.record.key,
                        x.state(),
                        both,
                        held.get(&x.record.key).copied(),
                    );
                }
                Decision::Apply {
                    to,
                    state,
                    conflict,
                } => {
                    if let Err(e) =
                        plan.apply(spec, &x.record.key, &[*to], state.as_ref(), both, *conflict)
                    {
                        rejected.push(Rejected {
                            key: Some(x.record.key.clone()),
                            error: e,
                            row: Value::Object(x.record.data.clone()),
                        });
                    }
                }
                Decision::Merge { state } => {
                    let to: Vec<Which> = [Which::Source, Which::Target]
                        .into_iter()
                        .filter(|w| {
                            !both[idx(*w)]
                                .and_then(|s| s.state())
                                .is_some_and(|s| values::same_fields(s, state))
                        })
                        .collect();
                    if let Err(e) = plan.apply(spec, &x.record.key, &to, Some(state), both, true) {
                        rejected.push(Rejected {
                            key: Some(x.record.key.clone()),
                            error: e,
                            row: Value::Object(x.record.data.clone()),
                        });
                    }
                }
                Decision::Hold { .. } => holds.push((x.clone(), y.cloned(), decision.clone())),
            }
        }
        let mut results = self.write_integrations(spec, sides, &plan).await?;
        let mut tx = self.pool.begin().await?;
        if !hold(&mut tx, run.job).await? {
            return Ok(None);
        }
        self.write_store(&mut tx, run, sides, &plan, &mut results)
            .await?;
        let mut saved: Vec<(String, Link)> = Vec::new();
        let mut deferred = 0;
        for o in &plan.outcomes {
            match plan.settled(o, &results, &mut counts) {
                Settled::Written(link) => {
                    if let Some(id) = o.converged {
                        conflicts::converged(&mut tx, id).await?;
                    }
                    saved.push((o.key.clone(), link));
                }
                Settled::Refused(error) => rejected.push(Rejected {
                    key: Some(o.key.clone()),
                    error,
                    row: o.base.clone().map_or(Value::Null, Value::Object),
                }),
                Settled::Deferred => deferred += 1,
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
                "{deferred} records changed on the other side while this batch ran: the next read of that side's changes takes them"
            );
            runs::log(&mut *tx, run.id, LogLevel::Info, &m, None).await?;
        }
        let state = self
            .count(&mut tx, run.id, counts, &rejected, from, next)
            .await?;
        tx.commit().await?;
        Ok(Some(state))
    }
}
