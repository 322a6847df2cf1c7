//! Fan-out: an event of the outbox (`events`) becomes one webhook message and one delivery
//! (+ job) per endpoint of its audience subscribed to its type. Re-running it for the same event
//! changes nothing (unique keys). It reads only `events`: whoever produced the event.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use crate::{
    error::Result,
    events::{self, types as event_types},
    jobs::{self, Lease, NewJob, Outcome, finish_sql, insert_jobs_from_sql},
    queue::{JobTask, WEBHOOK_DELIVERIES},
};

/// An enabled endpoint of the event's audience and its filter.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Subscription {
    pub id: Uuid,
    pub event_types: Vec<String>,
    /// Attempts allowed by the endpoint's own retry schedule, if it has one.
    pub max_attempts: Option<i32>,
}

/// An event as the fan-out reads it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OutboxEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub data: serde_json::Value,
    pub ordering_key: Option<String>,
    pub seq: i64,
    pub occurred_at: DateTime<Utc>,
    /// The W3C trace context of the request that wrote it (`telemetry::trace`).
    pub traceparent: Option<String>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    #[sqlx(flatten)]
    event: OutboxEvent,
    subscriptions: Json<Vec<Subscription>>,
    waiting: bool,
}

/// An event to fan out.
pub struct Loaded {
    pub event: OutboxEvent,
    /// Enabled endpoints of the event's tenant, mode and audience.
    pub subscriptions: Vec<Subscription>,
    /// The latest earlier event with the same ordering key whose fan-out has not given up is
    /// not fanned out yet: this one waits, so each endpoint gets a key's events in order.
    pub waiting: bool,
}

/// The endpoints among `subs` subscribed to the event's type: those the fan-out writes a
/// delivery for.
pub fn subscribed<'a>(event: &OutboxEvent, subs: &'a [Subscription]) -> Vec<&'a Subscription> {
    subs.iter()
        .filter(|s| event_types::matches_any(&s.event_types, &event.event_type))
        .collect()
}

/// The event, the enabled endpoints of its audience, and whether the previous event of its
/// ordering key (skipping those whose fan-out gave up) is still to be fanned out, in one round
/// trip. The previous one is enough: it waited for its own predecessor in turn.
pub async fn load(pool: &PgPool, event_id: Uuid) -> Result<Option<Loaded>> {
    let row = sqlx::query_as::<_, EventRow>(
        "SELECT e.id, e.tenant_id, e.type, e.data, e.ordering_key, e.seq, e.occurred_at,
                e.traceparent,
                COALESCE((SELECT json_agg(json_build_object('id', w.id, 'event_types', w.event_types,
                                                  'max_attempts', cardinality(w.retry_schedule_ms) + 1))
                            FROM webhook_endpoints w
                           WHERE w.tenant_id = e.tenant_id AND w.mode = e.mode
                             AND w.status = 'enabled' AND w.deleted_at IS NULL
                             AND CASE e.audience
                                     WHEN 'endpoints' THEN NOT w.operational
                                     WHEN 'operational' THEN w.operational
                                                             AND w.id IS DISTINCT FROM e.endpoint_id
                                     ELSE w.id = e.endpoint_id END), '[]'::json)
                    AS subscriptions,
                COALESCE((SELECT NOT EXISTS (SELECT 1 FROM webhook_messages m
                                              WHERE m.event_id = p.id)
                            FROM events p
                           WHERE p.tenant_id = e.tenant_id AND p.mode = e.mode
                             AND p.ordering_key = e.ordering_key AND p.seq < e.seq
                             AND p.fan_out_failed_at IS NULL
                           ORDER BY p.seq DESC LIMIT 1), false) AS waiting
           FROM events e WHERE e.id = $1",
    )
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Loaded {
        event: r.event,
        subscriptions: r.subscriptions.0,
        waiting: r.waiting,
    }))
}

/// Records that an event's fan-out gave up (its job is dead): later events of its ordering key
/// no longer wait for it. Runs in the transaction that buries the job.
pub async fn mark_fan_out_failed(
    conn: &mut sqlx::PgConnection,
    event_id: Uuid,
    error: &str,
) -> Result<()> {
    sqlx::query("UPDATE events SET fan_out_failed_at = now(), fan_out_error = $2 WHERE id = $1")
        .bind(event_id)
        .bind(error)
        .execute(conn)
        .await?;
    Ok(())
}

/// The settings a fan-out needs.
#[derive(Clone, Debug)]
pub struct FanOutLimits {
    /// Attempts of endpoints without a retry schedule of their own.
    pub default_max_attempts: i32,
    /// A new delivery skips the dispatcher while its endpoint (without limits of its own) has
    /// fewer than this many in flight: half the default cap, so racing fan-outs stay under it.
    pub fast_in_flight: i64,
    /// The default per-endpoint cap (`SWITCHYARD_ENDPOINT_CONCURRENCY`).
    pub group_concurrency: i64,
}

/// Delivery jobs the fan-out's own process runs at once: up to `count` of those that could go
/// straight out are born `running` under `owner`'s lease ([`Lease::born`]).
pub struct RunHere<'a> {
    pub owner: &'a str,
    pub lease: std::time::Duration,
    pub count: usize,
}

/// What a fan-out did.
pub struct FanOut {
    /// False when the job's lease was lost: nothing was written; the new holder fans out.
    pub finished: bool,
    /// Delivery jobs born running under the caller's lease (run them now).
    pub running: Vec<Lease>,
    /// Tasks of the delivery jobs born queued (push them after commit).
    pub tasks: Vec<JobTask>,
    /// Delivery jobs born pending whose endpoint has room now (wake the dispatcher); the others
    /// wait for a slot, whose release wakes it.
    pub pending: i64,
}

#[derive(sqlx::FromRow)]
struct FanOutRow {
    finished: bool,
    queued: Vec<Uuid>,
    running: Vec<Uuid>,
    pending: i64,
}

/// The statement of [`fan_out`] (public so a test can check its plan).
pub const FAN_OUT_SQL: &str = concat!(
    "WITH fin AS (",
    finish_sql!(),
    " RETURNING id),
         m_new AS (
            INSERT INTO webhook_messages (id, tenant_id, event_id, event_type, payload,
                                          ordering_key, ordering_seq, traceparent)
            SELECT $8, $9, $10, $11, $12, $18, $19, $25 WHERE EXISTS (SELECT 1 FROM fin)
            ON CONFLICT (event_id) DO NOTHING RETURNING id),
         m AS (
            SELECT id FROM m_new
            UNION ALL SELECT id FROM webhook_messages WHERE event_id = $10
            LIMIT 1),
         d AS (
            INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id,
                                            ordering_key, ordering_seq, job_id)
            SELECT t.d, $9, m.id, t.e, $18, $19, t.j
              FROM UNNEST($13::uuid[], $14::uuid[], $15::uuid[]) AS t(d, e, j), m
             WHERE EXISTS (SELECT 1 FROM fin)
            ON CONFLICT (message_id, endpoint_id) DO NOTHING RETURNING id),
         t AS (
            -- Per new delivery: `fast` (born running here, `h`, or queued and pushed right
            -- after commit) when its endpoint has no limits of its own, a closed breaker and
            -- less than `$20` deliveries in flight, the common case that costs no dispatcher
            -- pass; otherwise born pending in the endpoint's dispatch group, where the
            -- dispatcher admits it under the caps and breaker (an open breaker parks it
            -- until its cool-down ends).
            -- `room`: the group could take it now, so waking the dispatcher helps.
            -- While the deliveries' queue is paused (`q`), every one is born pending.
            SELECT u.d, u.j, u.ma, u.e,
                   CASE WHEN g.breaker = 'open' THEN GREATEST(now(), g.paused_until)
                        ELSE now() END AS run_at,
                   COALESCE(g.breaker = 'closed' AND g.max_concurrency IS NULL
                            AND g.rate_per_second IS NULL AND n.c < $20, false)
                       AND q.open AS fast,
                   COALESCE(g.breaker, 'closed') = 'closed'
                       AND n.c < COALESCE(g.max_concurrency, $21) AND q.open AS room
              FROM UNNEST($13::uuid[], $15::uuid[], $17::int[], $14::uuid[]) AS u(d, j, ma, e)
              CROSS JOIN (SELECT NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = $16)
                             AS open) q
              LEFT JOIN dispatch_groups g ON g.key = u.e
              CROSS JOIN LATERAL (
                  SELECT count(*) AS c FROM jobs x
                   WHERE x.group_key = u.e AND x.state IN ('queued', 'running')) n),
         h AS (
            -- The first `$24` of the fast ones are born running under this process's lease
            -- (`$22`, `$23` seconds): it runs them at once without a claim.
            SELECT t.*, t.fast AND count(*) FILTER (WHERE t.fast)
                                       OVER (ROWS UNBOUNDED PRECEDING) <= $24 AS here
              FROM t),
         j AS (",
    insert_jobs_from_sql!(
        leased: "SELECT h.j, $16, $9, d.id, h.ma, h.e, h.run_at,
                    CASE WHEN h.here THEN 'running' WHEN h.fast THEN 'queued'
                         ELSE 'pending' END,
                    CASE WHEN h.fast THEN 1 ELSE 0 END,
                    CASE WHEN h.fast THEN now() END, NULL,
                    CASE WHEN h.here THEN 1 ELSE 0 END,
                    CASE WHEN h.here THEN $22 END,
                    CASE WHEN h.here THEN now() + make_interval(secs => $23) END
               FROM d JOIN h ON h.d = d.id"
    ),
    " RETURNING id, state)
     SELECT EXISTS (SELECT 1 FROM fin) AS finished,
            ARRAY(SELECT id FROM j WHERE state = 'queued') AS queued,
            ARRAY(SELECT id FROM j WHERE state = 'running') AS running,
            (SELECT count(*) FROM j JOIN t ON t.j = j.id
              WHERE j.state = 'pending' AND t.room) AS pending"
);

/// In one statement: finishes the fan-out job and, if it still held the lease, writes the
/// message, a delivery per endpoint of `subscribed` ([`subscribed`]), and their jobs.
/// Re-running it for the same event adds nothing (unique message per event, delivery per
/// message × endpoint).
pub async fn fan_out(
    pool: &PgPool,
    job: &Lease,
    event: &OutboxEvent,
    subscribed: &[&Subscription],
    limits: &FanOutLimits,
    here: &RunHere<'_>,
) -> Result<FanOut> {
    let endpoints: Vec<Uuid> = subscribed.iter().map(|s| s.id).collect();
    let deliveries: Vec<NewJob> = subscribed
        .iter()
        .map(|s| {
            NewJob::new(
                WEBHOOK_DELIVERIES,
                event.tenant_id,
                Uuid::now_v7(),
                s.max_attempts.unwrap_or(limits.default_max_attempts),
            )
        })
        .collect();
    // The message takes its event's id (UUIDv7, made when the event was accepted): messages,
    // and so a FIFO endpoint's deliveries, follow the order events were accepted in, not the
    // order their fan-outs happened to run in.
    let row = jobs::bind_finish(sqlx::query(FAN_OUT_SQL), job, &Outcome::Succeeded)
        .bind(event.id)
        .bind(event.tenant_id)
        .bind(event.id)
        .bind(&event.event_type)
        .bind(events::payload(
            &event.event_type,
            event.occurred_at,
            &event.data,
        ))
        .bind(deliveries.iter().map(|d| d.subject_id).collect::<Vec<_>>())
        .bind(&endpoints)
        .bind(deliveries.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(WEBHOOK_DELIVERIES)
        .bind(
            deliveries
                .iter()
                .map(|d| d.max_attempts)
                .collect::<Vec<_>>(),
        )
        .bind(event.ordering_key.as_deref())
        .bind(event.ordering_key.as_ref().map(|_| event.seq))
        .bind(limits.fast_in_flight)
        .bind(limits.group_concurrency)
        .bind(here.owner)
        .bind(here.lease.as_secs_f64())
        .bind(i64::try_from(here.count).unwrap_or(i64::MAX))
        .bind(event.traceparent.as_deref())
        .fetch_one(pool)
        .await?;
    let row = <FanOutRow as sqlx::FromRow<_>>::from_row(&row)?;
    if row.finished {
        jobs::count_finished(&job.queue, &Outcome::Succeeded);
    }
    let running = deliveries
        .iter()
        .filter(|d| row.running.contains(&d.id))
        .map(|d| Lease::born(d, here.owner))
        .collect();
    Ok(FanOut {
        finished: row.finished,
        running,
        tasks: row
            .queued
            .into_iter()
            .map(|job| JobTask { job, seq: 1 })
            .collect(),
        pending: row.pending,
    })
}
