//! Resolutions people made (`POST /v1/sync/conflicts/{id}/resolve`), written to both sides at
//! the start of the configuration's next run; the record then syncs again.

use serde_json::json;
use uuid::Uuid;

use super::{
    Counts, Engine, Run, hold,
    plan::{Plan, Settled, Side, idx},
};
use crate::{
    error::Result,
    sync::{
        conflicts::{self, Resolution},
        links,
        open::Which,
        runs::{self, LogLevel},
        values,
    },
};

impl Engine<'_> {
    /// Writes the resolutions people made since the last run to both sides. `false` when the
    /// lease is lost.
    pub(super) async fn apply_resolutions(
        &self,
        run: &Run<'_>,
        sides: &mut [Side; 2],
    ) -> Result<bool> {
        let spec = run.spec;
        let mut tried: Vec<Uuid> = Vec::new();
        loop {
            let batch = {
                let mut conn = self.pool.acquire().await?;
                conflicts::to_apply(&mut conn, run.configuration_id, spec.batch_size()).await?
            };
            let batch: Vec<_> = batch
                .into_iter()
                .filter(|c| !tried.contains(&c.id))
                .collect();
            if batch.is_empty() {
                return Ok(true);
            }
            tried.extend(batch.iter().map(|c| c.id));
            let keys: Vec<String> = batch.iter().map(|c| c.key.clone()).collect();
            let source = self.fetch(run, &mut sides[0], Which::Source, &keys).await?;
            let target = self.fetch(run, &mut sides[1], Which::Target, &keys).await?;
            let mut plan = Plan::default();
            let mut ids = Vec::new();
            for c in &batch {
                let both = [source.get(&c.key), target.get(&c.key)];
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
                if plan
                    .apply(spec, &c.key, &to, state.as_ref(), both, false)
                    .is_ok()
                {
                    ids.push((c.id, plan.outcomes.len() - 1));
                }
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
            for (id, o) in ids {
                let o = &plan.outcomes[o];
                if let Settled::Written(link) = plan.settled(o, &results, &mut counts) {
                    applied.push(id);
                    saved.push((o.key.clone(), link));
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
