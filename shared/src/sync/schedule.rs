//! Scheduled runs (docs/architecture.md §10): a configuration's `schedule` (an interval or a
//! cron expression in a time zone, the slots of [`crate::schedule::Every`]) keeps
//! `next_run_at` on its row. Every worker replica's sync scheduler starts the runs that are due
//! twice a second, taking the due rows with `FOR UPDATE SKIP LOCKED`; a run remembers its slot
//! (`scheduled_for`, unique per configuration), so however many replicas race, a slot gets one
//! run. A slot that comes while the previous run is still going is skipped, and slots the
//! scheduler was too late for (every replica down) are folded into the newest one; either is
//! said in a run's log with the number of slots, so every slot is accounted for.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use super::{
    config::SyncSpec,
    runs::{self, LogLevel, Trigger},
};
use crate::{
    error::{Error, Result},
    input::{Int, Text},
    mode::Mode,
    queue::JobTask,
    schedule::Every,
    tenants::Scope,
};

/// When a configuration runs on its own: `interval_seconds` (slots aligned to the Unix epoch),
/// or `cron` (5 fields, or 6 with seconds first) read in `timezone` (IANA, default `UTC`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, poem_openapi::Object)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct ScheduleSpec {
    #[oai(nullable)]
    #[serde(default)]
    pub interval_seconds: Option<Int<1, 31_622_400>>,
    #[oai(nullable)]
    #[serde(default)]
    pub cron: Option<Text<1, 120>>,
    #[oai(nullable)]
    #[serde(default)]
    pub timezone: Option<Text<1, 64>>,
}

impl ScheduleSpec {
    /// The slots, or why the schedule is not one (exactly one of `interval_seconds` and
    /// `cron`; `timezone` only with `cron`).
    pub fn every(&self) -> Result<Every> {
        let invalid = |detail: &str| Error::invalid("parameter_invalid", "schedule", detail);
        match (&self.interval_seconds, &self.cron) {
            (Some(s), None) if self.timezone.is_none() => Ok(Every::Interval(
                std::time::Duration::from_secs(s.get() as u64),
            )),
            (Some(_), None) => Err(invalid("`timezone` goes with `cron`.")),
            (None, Some(cron)) => Every::cron(
                cron.as_str(),
                self.timezone.as_ref().map_or("UTC", |t| t.as_str()),
            )
            .map_err(|e| match e {
                Error::Invalid { detail, .. } => {
                    Error::invalid("parameter_invalid", "schedule", detail)
                }
                e => e,
            }),
            _ => Err(invalid(
                "A schedule has `interval_seconds` or `cron` (with an optional `timezone`).",
            )),
        }
    }
}

/// The first slot after `now` of an enabled, scheduled configuration (`None`: it does not run
/// on its own).
pub fn next_run_at(spec: &SyncSpec, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
    match &spec.schedule {
        Some(s) if spec.enabled.unwrap_or(true) => Ok(s.every()?.slot_after(now)),
        Some(s) => s.every().map(|_| None),
        None => Ok(None),
    }
}

/// Due configurations one pass takes at most (the next pass takes the rest).
const BATCH: i64 = 100;

/// How many slots from `from` (included) up to `to` (excluded) a schedule has, counted up to
/// a cap (a long outage of a one-second schedule is not walked slot by slot).
fn slots_between(every: &Every, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    const CAP: i64 = 100_000;
    if let Every::Interval(d) = every {
        let step = d.as_millis().max(1) as i64;
        return ((to - from).num_milliseconds().max(0) + step - 1) / step;
    }
    let (mut n, mut t) = (0, from);
    while t < to && n < CAP {
        n += 1;
        match every.slot_after(t) {
            Some(next) => t = next,
            None => break,
        }
    }
    n
}

/// Starts the runs of every configuration whose slot is due, in one transaction, and moves
/// each `next_run_at` to its next slot. The newest due slot runs; older ones still due (the
/// scheduler was late or down) are folded into it, and the run's log says how many. A
/// configuration that cannot start is logged and moved to its next slot on its own savepoint:
/// it does not hold back the others. Returns the new runs' tasks, to push.
pub async fn start_due(pool: &PgPool) -> Result<Vec<JobTask>> {
    let mut tx = pool.begin().await?;
    let due: Vec<Due> = sqlx::query_as(
        "SELECT id, tenant_id, mode, spec, next_run_at, now() FROM sync_configurations
          WHERE next_run_at <= now()
          ORDER BY next_run_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let mut tasks = Vec::new();
    for due in due {
        let mut one = sqlx::Connection::begin(&mut *tx).await?;
        match start_one(&mut one, &due).await {
            Ok(task) => {
                one.commit().await?;
                tasks.extend(task);
            }
            Err(e) => {
                one.rollback().await?;
                let (id, Json(spec), now) = (due.0, &due.3, due.5);
                tracing::error!(configuration_id = %id, error = %e,
                                "a scheduled sync run could not start; its slot is skipped");
                let every = spec.schedule.as_ref().and_then(|s| s.every().ok());
                set_next(&mut tx, id, every.and_then(|e| e.slot_after(now))).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(tasks)
}

type Due = (
    Uuid,
    Uuid,
    String,
    Json<SyncSpec>,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// Starts the run of one due configuration (or logs why its slot is skipped) and moves its
/// `next_run_at` on.
async fn start_one(
    conn: &mut PgConnection,
    (id, tenant_id, mode, Json(spec), next_run_at, now): &Due,
) -> Result<Option<JobTask>> {
    let (id, next_run_at, now) = (*id, *next_run_at, *now);
    let scope = Scope {
        tenant_id: *tenant_id,
        mode: Mode::parse(mode)?,
    };
    let every = match spec.schedule.as_ref().map(ScheduleSpec::every) {
        Some(Ok(every)) => every,
        // Checked when saved; a schedule that no longer parses stops instead of looping.
        _ => {
            set_next(conn, id, None).await?;
            return Ok(None);
        }
    };
    let slot = every.slot_at_or_before(now).unwrap_or(now).max(next_run_at);
    let folded = slots_between(&every, next_run_at, slot);
    set_next(conn, id, every.slot_after(now)).await?;
    // A slot that already had its run (a `next_run_at` set back to it) does not run twice.
    let ran: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sync_runs WHERE configuration_id = $1 AND scheduled_for = $2)",
    )
    .bind(id)
    .bind(slot)
    .fetch_one(&mut *conn)
    .await?;
    if ran {
        return Ok(None);
    }
    match runs::try_start(conn, scope, id, Trigger::Scheduled, Some(slot)).await? {
        Ok((run, task)) => {
            if folded > 0 {
                let message = format!(
                    "{folded} earlier scheduled slot(s) since {next_run_at} were folded into \
                     this run: the scheduler was late or down."
                );
                skip_log(conn, run.id, &message, folded).await?;
            }
            Ok(Some(task))
        }
        Err(active) => {
            let message = format!(
                "The scheduled slot {slot} (and {folded} before it) was skipped: this run \
                 was still active."
            );
            skip_log(conn, active, &message, folded + 1).await?;
            Ok(None)
        }
    }
}

/// The database's clock, on which slots are reckoned (by the scheduler and by every change
/// of a schedule), so a host whose clock is behind cannot set a slot that already ran.
pub async fn db_now(conn: &mut PgConnection) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT now()").fetch_one(conn).await?)
}

async fn set_next(conn: &mut PgConnection, id: Uuid, next: Option<DateTime<Utc>>) -> Result<()> {
    sqlx::query("UPDATE sync_configurations SET next_run_at = $2 WHERE id = $1")
        .bind(id)
        .bind(next)
        .execute(conn)
        .await?;
    Ok(())
}

/// Slots that did not get a run of their own, said in a run's log with how many
/// (`details.skipped_slots`), so every slot is accounted for.
async fn skip_log(conn: &mut PgConnection, run: Uuid, message: &str, slots: i64) -> Result<()> {
    let details = serde_json::json!({ "skipped_slots": slots });
    runs::log(conn, run, LogLevel::Warn, message, Some(details)).await
}
