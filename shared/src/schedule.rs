//! Periodic jobs (docs/architecture.md §3): a schedule names a queue and when it runs (a fixed
//! interval or a cron expression in a time zone); every worker replica's scheduler enqueues
//! its due slots. Each slot's job carries the unique key `<schedule>@<slot>`, so however many
//! replicas race for a slot, exactly one job exists for it: no leader, nothing to elect.
//! `schedules.last_slot` remembers how far a schedule got, which is what catch-up needs after
//! every replica was down.

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::{Error, Result},
    jobs::{self, NewJob},
    queue::JobTask,
};

/// When a schedule's slots are.
#[derive(Clone, Debug)]
pub enum Every {
    /// Every `interval`, slots aligned to the Unix epoch (a 10 s schedule runs at :00, :10, …).
    Interval(Duration),
    /// A cron expression (5 fields, or 6 with seconds first) read in a time zone, so
    /// `0 2 * * *` in `Europe/Berlin` is 02:00 local time in winter and in summer.
    Cron(Box<croner::Cron>, chrono_tz::Tz),
}

impl Every {
    /// Parses a cron expression and an IANA time zone name (`Europe/Berlin`, `UTC`).
    pub fn cron(expr: &str, tz: &str) -> Result<Self> {
        let cron = croner::Cron::from_str(expr).map_err(|e| {
            Error::invalid(
                "parameter_invalid",
                "cron",
                format!("`{expr}` is not a cron expression: {e}."),
            )
        })?;
        let tz = chrono_tz::Tz::from_str(tz).map_err(|_| {
            Error::invalid(
                "parameter_invalid",
                "time_zone",
                format!("`{tz}` is not an IANA time zone name (like `Europe/Berlin`)."),
            )
        })?;
        Ok(Every::Cron(Box::new(cron), tz))
    }

    /// The latest slot at or before `t`.
    pub fn slot_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Every::Interval(d) => {
                let step = d.as_millis().max(1) as i64;
                let ms = t.timestamp_millis().div_euclid(step) * step;
                Utc.timestamp_millis_opt(ms).single()
            }
            Every::Cron(cron, tz) => cron
                .find_previous_occurrence(&t.with_timezone(tz), true)
                .ok()
                .map(|s| s.with_timezone(&Utc)),
        }
    }

    /// The first slot after `t`.
    pub fn slot_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Every::Interval(d) => {
                let step = d.as_millis().max(1) as i64;
                let ms = (t.timestamp_millis().div_euclid(step) + 1) * step;
                Utc.timestamp_millis_opt(ms).single()
            }
            Every::Cron(cron, tz) => cron
                .find_next_occurrence(&t.with_timezone(tz), false)
                .ok()
                .map(|s| s.with_timezone(&Utc)),
        }
    }
}

/// What happens to slots that passed while no scheduler ran (every replica down, Postgres
/// unreachable). The newest due slot always runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// Older missed slots run unless they are older than this (maintenance: a run an hour
    /// late is worth nothing, a run a few seconds late is).
    SkipOlderThan(Duration),
    /// Every missed slot runs, the newest `n` at most (a sync whose slots are data windows).
    RunAll(usize),
}

/// A periodic job kind: its id (stable: it keys the slots), its queue and when it runs.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub id: String,
    pub queue: &'static str,
    pub every: Every,
    pub catch_up: CatchUp,
    pub max_attempts: i32,
}

/// The slots due at `now` after `last` (the newest slot already enqueued; `None` for a new
/// schedule, which starts with the current slot), oldest first, by the catch-up rule.
pub fn due_slots(
    every: &Every,
    catch_up: CatchUp,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let Some(current) = every.slot_at_or_before(now) else {
        return vec![];
    };
    let Some(last) = last else {
        return vec![current];
    };
    if current <= last {
        return vec![];
    }
    let (oldest, cap) = match catch_up {
        CatchUp::SkipOlderThan(d) => (
            now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX),
            usize::MAX,
        ),
        CatchUp::RunAll(n) => (DateTime::<Utc>::MIN_UTC, n.max(1)),
    };
    // Walk back from the current slot: at most `cap` slots, none older than `oldest`.
    let mut slots = vec![current];
    let mut t = current;
    while slots.len() < cap {
        match every.slot_at_or_before(t - chrono::Duration::milliseconds(1)) {
            Some(s) if s > last && s >= oldest => {
                slots.push(s);
                t = s;
            }
            _ => break,
        }
    }
    slots.reverse();
    slots
}

/// The unique key of a slot's job.
pub fn slot_key(schedule: &str, slot: DateTime<Utc>) -> String {
    format!(
        "{schedule}@{}",
        slot.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

/// What one scheduler pass did for a schedule.
pub struct Enqueued {
    /// Tasks of the slot jobs this replica inserted (push them).
    pub tasks: Vec<JobTask>,
    /// How long until the schedule's next slot, on the database's clock.
    pub next_in: Option<Duration>,
}

/// Enqueues `schedule`'s due slots, on the database's clock, in one transaction: the
/// schedule's row is locked (a replica that finds it locked leaves the slots to the holder),
/// each slot's job is inserted unless its key exists, and `last_slot` moves on.
pub async fn enqueue_due(pool: &PgPool, schedule: &Schedule) -> Result<Enqueued> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO schedules (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
        .bind(&schedule.id)
        .execute(&mut *tx)
        .await?;
    let row: Option<(Option<DateTime<Utc>>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT last_slot, now() FROM schedules WHERE id = $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(&schedule.id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((last, now)) = row else {
        // Another replica is enqueuing this schedule right now.
        return Ok(Enqueued {
            tasks: vec![],
            next_in: None,
        });
    };
    let slots = due_slots(&schedule.every, schedule.catch_up, last, now);
    let next_in = schedule
        .every
        .slot_after(now)
        .and_then(|t| (t - now).to_std().ok());
    let Some(newest) = slots.last().copied() else {
        return Ok(Enqueued {
            tasks: vec![],
            next_in,
        });
    };
    let new: Vec<(NewJob, String)> = slots
        .iter()
        .map(|slot| {
            let job = NewJob::new(
                schedule.queue,
                Uuid::nil(),
                Uuid::nil(),
                schedule.max_attempts,
            );
            (job, slot_key(&schedule.id, *slot))
        })
        .collect();
    let tasks = jobs::insert_unique(&mut tx, &new).await?;
    sqlx::query("UPDATE schedules SET last_slot = $2, updated_at = now() WHERE id = $1")
        .bind(&schedule.id)
        .bind(newest)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Enqueued { tasks, next_in })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn interval_slots_are_aligned_and_caught_up_by_the_rule() {
        let every = Every::Interval(Duration::from_secs(10));
        let now = at("2026-12-02T10:00:35.5Z");
        // A new schedule starts with the current slot.
        assert_eq!(
            due_slots(&every, CatchUp::RunAll(100), None, now),
            [at("2026-12-02T10:00:30Z")]
        );
        // Nothing new since the last slot.
        let last = Some(at("2026-12-02T10:00:30Z"));
        assert!(due_slots(&every, CatchUp::RunAll(100), last, now).is_empty());
        // Missed slots: all of them, or the newest n, or those not too old.
        let last = Some(at("2026-12-02T10:00:00Z"));
        assert_eq!(
            due_slots(&every, CatchUp::RunAll(100), last, now),
            [
                at("2026-12-02T10:00:10Z"),
                at("2026-12-02T10:00:20Z"),
                at("2026-12-02T10:00:30Z")
            ]
        );
        assert_eq!(
            due_slots(&every, CatchUp::RunAll(2), last, now),
            [at("2026-12-02T10:00:20Z"), at("2026-12-02T10:00:30Z")]
        );
        assert_eq!(
            due_slots(
                &every,
                CatchUp::SkipOlderThan(Duration::from_secs(16)),
                last,
                now
            ),
            [at("2026-12-02T10:00:20Z"), at("2026-12-02T10:00:30Z")]
        );
        // Down for an hour, skipping what is older than a minute: the last minute's slots.
        let last = Some(at("2026-12-02T09:00:00Z"));
        let skipped = due_slots(
            &every,
            CatchUp::SkipOlderThan(Duration::from_secs(60)),
            last,
            now,
        );
        assert_eq!(skipped.len(), 6);
        assert_eq!(skipped[0], at("2026-12-02T09:59:40Z"));
        assert_eq!(every.slot_after(now).unwrap(), at("2026-12-02T10:00:40Z"));
    }

    #[test]
    fn cron_slots_follow_the_time_zone_through_daylight_saving() {
        let every = Every::cron("0 2 * * *", "Europe/Berlin").unwrap();
        // Winter: 02:00 in Berlin is 01:00 UTC; summer: 00:00 UTC.
        assert_eq!(
            every.slot_after(at("2026-12-02T00:00:00Z")).unwrap(),
            at("2026-12-02T01:00:00Z")
        );
        assert_eq!(
            every.slot_after(at("2026-07-01T00:30:00Z")).unwrap(),
            at("2026-07-02T00:00:00Z")
        );
        // Three missed nights run in order (catch-up), the next one is tomorrow.
        let slots = due_slots(
            &every,
            CatchUp::RunAll(10),
            Some(at("2026-11-29T01:00:00Z")),
            at("2026-12-02T09:00:00Z"),
        );
        assert_eq!(
            slots,
            [
                at("2026-11-30T01:00:00Z"),
                at("2026-12-01T01:00:00Z"),
                at("2026-12-02T01:00:00Z")
            ]
        );
        // Seconds are allowed as a sixth, leading field.
        let every = Every::cron("*/15 * * * * *", "UTC").unwrap();
        assert_eq!(
            every.slot_after(at("2026-12-02T10:00:01Z")).unwrap(),
            at("2026-12-02T10:00:15Z")
        );
        assert!(Every::cron("61 * * * *", "UTC").is_err());
        assert!(Every::cron("0 2 * * *", "Mars/Olympus").is_err());
    }
}
