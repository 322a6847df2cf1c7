//! Resolutions people made (`POST /v1/sync/conflicts/{id}/resolve`), written to both sides at
//! the start of the configuration's next run; the record then syncs again. A resolution that
//! cannot be written (a side refuses it, it cannot be mapped back, a side's record cannot be
//! read) opens its conflict again, with why; one whose record changed meanwhile is tried again
//! by the next run.

use serde_json::json;
use uuid::Uuid;

use super::{
    Counts, Engine, Run, hold,
    plan::{Plan, Settled, Side, idx},
};
use crate::{
    error::Result,
    sync::{
        config::Which,
        conflicts::{self, Resolution},
        links,
        runs::{self, LogLevel},
        values,
    },
};

/// What became of one resolution.
enum Step {
    /// Planned: outcome `usize` of the plan.
    Planned(usize),
    /// Nothing to write (a delete the policy ignores): settled as it is.
    Settled,
    /// Cannot be written: opened again with why.
    Reopen(String),
}

impl Engine<'_> {
    /// Writes the resolutions people made since the last run to both sides. `false` when the
    /// lease is lost.
    pub(super) async fn apply_resolutions(
        &self,
        run: &Run<'_>,
        sides: &mut [Side; 2],
    ) -> Result<bool> {
        let spec = run.spec;
        let mut after: Option<Uuid> = None;
        loop {
            let batch = {
                let mut conn = self.pool.acquire().await?;
                conflicts::to_apply(&mut conn, run.configuration_id, after, spec.batch_size())
                    .await?
            };
            let Some(last) = batch.last() else {
                return Ok(true);
            };
            after = Some(last.id);
            let keys: Vec<String> = batch.iter().map(|c| c.key.clone()).collect();
            let source = self.fetch(run, &mut sides[0], Which::Source, &keys).await?;
            let target = self.fetch(run, &mut sides[1], Which::Target, &keys).await?;
            let mut plan = Plan::default();
            let mut steps: Vec<(Uuid, Step)> = Vec::new();
            for c in &batch {
                let unreadable = [&source, &target]
                    .iter()
                    .zip(["source", "target"])
                    .find_map(|(f, side)| f.unreadable.get(&c.key).map(|e| (side, e)));
                if let Some((side, e)) = unreadable {
                    let why = format!("the {side}'s record cannot be mapped: {e}");
                    steps.push((c.id, Step::Reopen(why)));
                    continue;
                }
                let both = [source.seen.get(&c.key), target.seen.get(&c.key)];
                let state = match c.resolution {
                    Resolution::Source => both[0].and_then(|s| s.state()).cloned(),
                    Resolution::Target => both[1].and_then(|s| s.state()).cloned(),
                    Resolution::Merged | Resolution::Converged => c.data.clone(),
                };
                let to: Vec<Which> = [Which::Source, Which::Target]
                    .into_iter()
                    .filter(|w| {
                        let now = both[idx(*w)].and_then(|s| s.state());
                        match (now, &state) {
                            (Some(a), Some(b)) => !values::same_fields(a, b),
                            (None, None) => false,
                            _ => true,
                        }
                    })
                    .collect();
                let step = match plan.apply(spec, &c.key, &to, state.as_ref(), both, false) {
                    Ok(Some(o)) => Step::Planned(o),
                    Ok(None) => Step::Settled,
                    Err(e) => Step::Reopen(e),
                };
                steps.push((c.id, step));
            }
            let mut results = self.write_integrations(spec, sides, &plan).await?;
            let mut tx = self.pool.begin().await?;
            if !hold(&mut tx, run.job).await? {
                return Ok(false);
            }
            self.write_store(&mut tx, run, sides, &plan, &mut results)
                .await?;
            let mut applied = Vec::new();
            let mut saved = Vec::new();
            let mut counts = Counts::default();
            for (id, step) in steps {
                match step {
                    Step::Planned(o) => {
                        let o = &plan.outcomes[o];
                        match plan.settled(o, &results, &mut counts) {
                            Settled::Written(link) => {
                                applied.push(id);
                                saved.push((o.key.clone(), link));
                            }
                            Settled::Refused(e) => conflicts::reopen(&mut tx, id, &e).await?,
                            // The record changed since it was read: the next run tries again.
                            Settled::Deferred => {}
                        }
                    }
                    Step::Settled => applied.push(id),
                    Step::Reopen(e) => conflicts::reopen(&mut tx, id, &e).await?,
                }
            }
            links::save(&mut tx, run.configuration_id, run.id, &saved).await?;
            conflicts::applied(&mut tx, &applied).await?;
            let m = format!("{} resolved conflicts written to both sides", applied.len());
            runs::log(
                &mut *tx,
                run.id,
                LogLevel::Info,
                &m,
                Some(json!({ "conflicts": applied })),
            )
            .await?;
            tx.commit().await?;
        }
    }
}
