//! The Redis dispatch layer: apalis-redis queues holding a bounded window of ready work.
//!
//! Tasks carry only `(job_id, dispatch_seq)`; the ledger in Postgres holds everything else.
//! We push with our own Lua script (`PUSH_SCRIPT`) that writes exactly the structures apalis-redis
//! 1.0.0's `batch_push.lua` writes, with two differences that fix its defects (docs/architecture.md
//! §7): the push is refused beyond the queue's high-water mark, atomically across every replica,
//! and tasks go straight to the `active` list, never through the `scheduled` ZSET whose
//! `unpack` crashes workers above ~8,000 due tasks. It also publishes a wake-up so idle
//! workers fetch at once instead of waiting for their poll interval.

use std::time::Duration;

use redis::{AsyncCommands, Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Queue of events (the outbox) to fan out into webhook messages.
pub const EVENT_FAN_OUT: &str = "event_fan_out";
/// Queue of webhook deliveries (one message to one endpoint).
pub const WEBHOOK_DELIVERIES: &str = "webhook_deliveries";
/// Queue of bulk replays (one batch per run).
pub const WEBHOOK_REPLAYS: &str = "webhook_replays";
/// Queue of janitor runs (retention purges, Redis task data), one per scheduled slot.
pub const JANITOR: &str = "janitor";
/// Queue of scheduled integration health checks, one run per slot.
pub const INTEGRATION_HEALTH: &str = "integration_health";
/// Queue of inbound webhook processing, one job per stored request.
pub const INBOUND_EVENTS: &str = "inbound_events";
/// Queue of sync runs, one job per run (shared::sync).
pub const SYNC_RUNS: &str = "sync_runs";
/// Queue of keyring rotations (re-encryption of every sealed value with the active key).
pub const KEYRING_ROTATION: &str = "keyring_rotation";
/// Queue of probe jobs, which do nothing: the cost of the queue path alone (shared::probes).
pub const QUEUE_PROBES: &str = "queue_probes";

/// What the jobs of `queue` work on (their `subject_id`) and the partner API path that shows
/// that row: `(kind, path)`. `None` for maintenance queues, whose subject has no page.
pub fn subject_path(queue: &str, id: Uuid) -> Option<(&'static str, String)> {
    let (kind, base) = match queue {
        WEBHOOK_DELIVERIES => ("webhook_delivery", "/v1/webhook-deliveries"),
        EVENT_FAN_OUT => ("event", "/v1/events"),
        WEBHOOK_REPLAYS => ("webhook_replay", "/v1/webhook-replays"),
        INBOUND_EVENTS => ("inbound_event", "/v1/inbound-events"),
        SYNC_RUNS => ("sync_run", "/v1/sync/runs"),
        _ => return None,
    };
    Some((kind, format!("{base}/{id}")))
}
// The list of every queue is not kept here: it is derived from the worker's job-kind registry
// (`switchyard_worker::QUEUES`) and handed to [`Queues::new`] (docs/architecture.md §3).

/// apalis heartbeat: a SIGKILLed worker's prefetched tasks are re-enqueued by its peers after
/// `HEARTBEAT * MISSED_HEARTBEATS` (apalis' default is 300 s).
pub const HEARTBEAT: Duration = Duration::from_secs(3);
pub const MISSED_HEARTBEATS: usize = 3;

/// What a task carries: which job, and which dispatch of it (stale copies fail the claim).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTask {
    pub job: Uuid,
    pub seq: i64,
}

impl JobTask {
    /// The apalis task id: unique per dispatch, so pushing the same dispatch twice is a no-op.
    pub fn task_id(&self) -> String {
        format!("{}.{}", self.job.simple(), self.seq)
    }
}

/// A connection manager with a response timeout of seconds (apalis' 500 ms default kills
/// workers under load). Lazy: a process starts even while Redis is down, and reconnects by itself.
pub fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client, cfg)
}

// KEYS[1] data hash, KEYS[2] active list, KEYS[3] scheduled zset, KEYS[4] meta prefix
// ARGV[1] high-water mark, ARGV[2] wake channel, ARGV[3] queue name, ARGV[4..] (task_id, data)…
// Returns how many tasks, from the front, are now in Redis (new or already there).
const PUSH_SCRIPT: &str = r#"
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[2]) - redis.call('ZCARD', KEYS[3])
local accepted = 0
for i = 4, #ARGV, 2 do
  if accepted >= room then break end
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[1], id, ARGV[i + 1]) == 1 then
    redis.call('HSET', KEYS[4] .. ':' .. id, 'attempts', 0, 'max_attempts', 25,
               'status', 'Pending', 'idempotency_key', '')
    redis.call('RPUSH', KEYS[2], id)
  end
  accepted = accepted + 1
end
if accepted > 0 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return accepted
"#;

// Which tasks a worker will still get: data present and id in the active list, the scheduled
// set or a registered worker's inflight set (apalis' fetch moves ids from the list there).
// KEYS[1] data hash, KEYS[2] active list, KEYS[3] scheduled zset, KEYS[4] workers zset,
// KEYS[5] inflight prefix; ARGV task ids. Returns 1 or 0 per task.
const PRESENCE_SCRIPT: &str = r#"
local listed = nil
local workers = redis.call('ZRANGE', KEYS[4], 0, -1)
local out = {}
for i, id in ipairs(ARGV) do
  local here = 0
  if redis.call('HEXISTS', KEYS[1], id) == 1 then
    if redis.call('ZSCORE', KEYS[3], id) then
      here = 1
    else
      for _, w in ipairs(workers) do
        if redis.call('SISMEMBER', KEYS[5] .. ':' .. w, id) == 1 then here = 1 break end
      end
      if here == 0 then
        if not listed then
          listed = {}
          for _, l in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do listed[l] = true end
        end
        if listed[id] then here = 1 end
      end
    end
  end
  out[i] = here
end
return out
"#;

// Removes finished tasks (done and dead sets) with their data and metadata.
// KEYS[1] set, KEYS[2] data hash, KEYS[3] meta prefix; ARGV[1] batch size. Returns count removed.
const SWEEP_SCRIPT: &str = r#"
local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[2], id)
  redis.call('DEL', KEYS[3] .. ':' .. id)
end
return #ids
"#;

/// Handle on the Redis side of every queue, under one key prefix.
#[derive(Clone)]
pub struct Queues {
    conn: ConnectionManager,
    prefix: String,
    /// Every queue, in the order the dispatcher serves them (the registry's order).
    names: &'static [&'static str],
    high_water_mark: u32,
    push_script: std::sync::Arc<Script>,
    sweep_script: std::sync::Arc<Script>,
    presence_script: std::sync::Arc<Script>,
}

impl Queues {
    pub fn new(
        conn: ConnectionManager,
        prefix: &str,
        high_water_mark: u32,
        names: &'static [&'static str],
    ) -> Self {
        Queues {
            conn,
            prefix: prefix.trim_end_matches(':').to_owned(),
            names,
            high_water_mark,
            push_script: std::sync::Arc::new(Script::new(PUSH_SCRIPT)),
            sweep_script: std::sync::Arc::new(Script::new(SWEEP_SCRIPT)),
            presence_script: std::sync::Arc::new(Script::new(PRESENCE_SCRIPT)),
        }
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every queue of the registry.
    pub fn names(&self) -> &'static [&'static str] {
        self.names
    }

    pub fn high_water_mark(&self) -> u32 {
        self.high_water_mark
    }

    /// The channel on which pushes announce work (payload: queue name).
    pub fn wake_channel(&self) -> String {
        format!("{}:wake", self.prefix)
    }

    /// apalis configuration of `queue`, namespaced under the prefix, with explicit heartbeat
    /// settings, no pub/sub chatter and no per-task Redis locks (the ledger's claim is the lock).
    /// `persist_results` must stay on: in apalis-redis 1.0 it also switches acknowledgements, and
    /// without them every task stays in its worker's inflight set forever.
    pub fn apalis_config(&self, queue: &str, batch_size: usize) -> apalis_redis::Config {
        apalis_redis::Config::default()
            .queue(format!("{}:{}", self.prefix, queue))
            .batch_size(batch_size.max(1))
            .heartbeat_interval(HEARTBEAT)
            .missed_heartbeats(MISSED_HEARTBEATS)
            .emit_events(false)
            .persist_results(true)
            .lock_tasks(false)
            .idempotency_ttl(Some(Duration::from_secs(86_400)))
    }

    /// Pushes tasks in order until the queue reaches its high-water mark; returns how many of
    /// them (from the front) are in Redis.
    pub async fn push(&self, queue: &str, tasks: &[JobTask]) -> redis::RedisResult<usize> {
        if tasks.is_empty() {
            return Ok(0);
        }
        let cfg = self.apalis_config(queue, 1);
        let mut inv = self.push_script.prepare_invoke();
        inv.key(cfg.job_data_hash())
            .key(cfg.active_jobs_list())
            .key(cfg.scheduled_jobs_set())
            .key(cfg.job_meta_hash())
            .arg(self.high_water_mark)
            .arg(self.wake_channel())
            .arg(queue);
        for t in tasks {
            let data = serde_json::to_vec(t).expect("JobTask serialises");
            inv.arg(t.task_id()).arg(data);
        }
        let mut conn = self.conn.clone();
        let accepted: usize = inv.invoke_async(&mut conn).await?;
        Ok(accepted)
    }

    /// Ready tasks in Redis for `queue` (what the high-water mark bounds).
    pub async fn depth(&self, queue: &str) -> redis::RedisResult<u64> {
        let cfg = self.apalis_config(queue, 1);
        let mut conn = self.conn.clone();
        let (active, scheduled): (u64, u64) = redis::pipe()
            .llen(cfg.active_jobs_list())
            .zcard(cfg.scheduled_jobs_set())
            .query_async(&mut conn)
            .await?;
        Ok(active + scheduled)
    }

    /// Whether Redis still holds each task where a worker will get it: its data is there and
    /// its id is in the active list, the scheduled set or a worker's inflight set. A status
    /// alone proves nothing: a flush or an eviction can take the list and leave the rest.
    pub async fn tasks_present(
        &self,
        queue: &str,
        tasks: &[JobTask],
    ) -> redis::RedisResult<Vec<bool>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = self.apalis_config(queue, 1);
        let mut inv = self.presence_script.prepare_invoke();
        inv.key(cfg.job_data_hash())
            .key(cfg.active_jobs_list())
            .key(cfg.scheduled_jobs_set())
            .key(cfg.workers_set())
            .key(cfg.inflight_jobs_set());
        for t in tasks {
            inv.arg(t.task_id());
        }
        let mut conn = self.conn.clone();
        let present: Vec<i64> = inv.invoke_async(&mut conn).await?;
        Ok(present.into_iter().map(|p| p == 1).collect())
    }

    /// Deletes finished tasks of `queue` from Redis (apalis keeps them forever otherwise).
    /// Returns the number of tasks removed.
    pub async fn sweep_finished(&self, queue: &str) -> redis::RedisResult<u64> {
        let cfg = self.apalis_config(queue, 1);
        let mut conn = self.conn.clone();
        let mut removed = 0u64;
        for set in [cfg.done_jobs_set(), cfg.dead_jobs_set()] {
            loop {
                let n: u64 = self
                    .sweep_script
                    .key(&set)
                    .key(cfg.job_data_hash())
                    .key(cfg.job_meta_hash())
                    .arg(500)
                    .invoke_async(&mut conn)
                    .await?;
                removed += n;
                if n < 500 {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// Deletes the metadata hashes apalis leaves behind for workers that are gone. Uses SCAN
    /// over the keyspace, so it runs rarely.
    pub async fn sweep_worker_metadata(&self, queue: &str) -> redis::RedisResult<u64> {
        let cfg = self.apalis_config(queue, 1);
        let mut conn = self.conn.clone();
        let workers_set = cfg.workers_set();
        let pattern = format!("{}:workers:metadata:*", cfg.queue.as_ref());
        let mut removed = 0;
        for key in scan_keys(&mut conn, &pattern).await? {
            let Some((_, name)) = key.rsplit_once(":metadata:") else {
                continue;
            };
            let score: Option<f64> = conn.zscore(&workers_set, name).await?;
            if score.is_none() {
                let _: () = conn.del(&key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes every key under the prefix (tests and operator tooling; never used at runtime).
    pub async fn delete_all_keys(&self) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.prefix);
        let keys = scan_keys(&mut conn, &pattern).await?;
        let mut n = 0;
        for chunk in keys.chunks(500) {
            let d: u64 = conn.del(chunk).await?;
            n += d;
        }
        // apalis registers every queue in one global key it does not namespace.
        let mut zrem = redis::cmd("ZREM");
        zrem.arg("core:apalis:queues:list");
        for q in self.names {
            zrem.arg(format!("{}:{}:workers", self.prefix, q));
        }
        let _: i64 = zrem.query_async(&mut conn).await?;
        Ok(n)
    }
}

async fn scan_keys(conn: &mut ConnectionManager, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut iter = conn.scan_match::<_, String>(pattern).await?;
    let mut keys = Vec::new();
    while let Some(k) = futures::StreamExt::next(&mut iter).await {
        keys.push(k?);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_unique_per_dispatch_and_parse_as_strings() {
        let job = Uuid::now_v7();
        let a = JobTask { job, seq: 1 };
        let b = JobTask { job, seq: 2 };
        assert_ne!(a.task_id(), b.task_id());
        // apalis parses task ids back; ours must not be mistaken for a UUID, ULID or integer.
        let parsed: apalis_core::task::task_id::TaskId = a.task_id().parse().unwrap();
        assert_eq!(parsed.to_string(), a.task_id());
    }
}
