//! Request rate limits shared by every API replica: GCRA (a token bucket kept as one
//! "theoretical arrival time" per limit) in Redis, all of a request's limits checked and
//! charged atomically by one Lua script on Redis' own clock.
//!
//! If Redis fails or is slow, partner traffic is never refused because of it: the limiter
//! fails open to the same algorithm in process memory (per replica, so a cluster admits up to
//! N× the quota) for [`FAIL_OPEN_FOR`], logs it, then tries Redis again.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::aio::ConnectionManager;

/// Highest configurable limit (requests per minute or per hour, of a key or a tenant).
pub const MAX_RATE_LIMIT: i64 = 10_000_000;

/// How long the limiter stays on its in-process fallback after a Redis failure.
pub const FAIL_OPEN_FOR: Duration = Duration::from_secs(5);
/// A Redis answer slower than this counts as a failure (the request must not wait on it).
const REDIS_BUDGET: Duration = Duration::from_millis(250);

// KEYS[i]: the state of limit i; ARGV[2i-1], ARGV[2i]: its quota and window in ms.
// Returns {limited, retry_after_ms, remaining_1, reset_ms_1, remaining_2, reset_ms_2, …}.
// A refused request charges nothing.
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local limited, retry = 0, 0
local new, out = {}, {}
for i = 1, #KEYS do
  local quota, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local interval = window / quota
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local next_tat = tat + interval
  local allow_at = next_tat - window
  if now < allow_at then
    limited = 1
    retry = math.max(retry, allow_at - now)
    out[#out + 1] = 0
    out[#out + 1] = math.ceil(tat - now)
  else
    new[i] = next_tat
    out[#out + 1] = math.floor((now + window - next_tat) / interval)
    out[#out + 1] = math.ceil(next_tat - now)
  end
end
if limited == 0 then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], string.format('%.3f', new[i]), 'PX', math.ceil(new[i] - now) + 1)
  end
end
local res = {limited, math.ceil(retry)}
for _, v in ipairs(out) do res[#res + 1] = v end
return res
"#;

/// One limit: `quota` requests per `window_secs`, bursting up to the whole quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Policy name in the `RateLimit-Policy` header (`key-minute`, …).
    pub name: &'static str,
    /// Redis key suffix identifying whose limit it is.
    pub subject: String,
    pub quota: u32,
    pub window_secs: u32,
}

/// The state of one limit after a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitState {
    pub name: &'static str,
    pub quota: u32,
    pub window_secs: u32,
    pub remaining: u64,
    /// Seconds until the limit is fully replenished.
    pub reset_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Seconds to wait before retrying, when refused.
    pub retry_after_secs: u64,
    pub limits: Vec<LimitState>,
    /// True when decided by the in-process fallback (Redis unavailable).
    pub local: bool,
}

impl Decision {
    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): every limit that applies.
    pub fn policy_header(&self) -> String {
        self.limits
            .iter()
            .map(|l| format!("\"{}\";q={};w={}", l.name, l.quota, l.window_secs))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `RateLimit`: the limit closest to exhaustion.
    pub fn state_header(&self) -> Option<String> {
        let l = self.limits.iter().min_by(|a, b| {
            (a.remaining as f64 / f64::from(a.quota))
                .total_cmp(&(b.remaining as f64 / f64::from(b.quota)))
        })?;
        Some(format!(
            "\"{}\";r={};t={}",
            l.name, l.remaining, l.reset_secs
        ))
    }
}

pub struct RateLimiter {
    conn: ConnectionManager,
    prefix: String,
    script: redis::Script,
    local: Mutex<HashMap<String, f64>>,
    epoch: Instant,
    fail_open_until: Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        RateLimiter {
            conn,
            prefix: format!("{prefix}:rl"),
            script: redis::Script::new(GCRA_SCRIPT),
            local: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            fail_open_until: Mutex::new(None),
        }
    }

    /// Checks and, if every limit allows it, charges one request to each of `limits`.
    pub async fn check(&self, limits: &[Limit]) -> Decision {
        let on_fallback = self
            .fail_open_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t);
        if !on_fallback {
            match tokio::time::timeout(REDIS_BUDGET, self.check_redis(limits)).await {
                Ok(Ok(d)) => return d,
                Ok(Err(e)) => self.fail_open(&e.to_string()),
                Err(_) => self.fail_open("Redis did not answer in time"),
            }
        }
        self.check_local(limits)
    }

    fn fail_open(&self, why: &str) {
        let mut until = self
            .fail_open_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if until.is_none_or(|t| Instant::now() >= t) {
            tracing::warn!(
                error = why,
                "rate limiter cannot use Redis; failing open to per-process limits"
            );
        }
        *until = Some(Instant::now() + FAIL_OPEN_FOR);
    }

    async fn check_redis(&self, limits: &[Limit]) -> redis::RedisResult<Decision> {
        let mut inv = self.script.prepare_invoke();
        for l in limits {
            inv.key(format!("{}:{}:{}", self.prefix, l.subject, l.name));
        }
        for l in limits {
            inv.arg(l.quota).arg(u64::from(l.window_secs) * 1000);
        }
        let mut conn = self.conn.clone();
        let r: Vec<i64> = inv.invoke_async(&mut conn).await?;
        Ok(decision(limits, &r, false))
    }

    /// The same algorithm as the script, on this process' clock.
    fn check_local(&self, limits: &[Limit]) -> Decision {
        let now = self.epoch.elapsed().as_secs_f64() * 1000.0;
        let mut state = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() > 100_000 {
            state.retain(|_, tat| *tat > now);
        }
        let (mut limited, mut retry) = (0i64, 0f64);
        let mut out = Vec::with_capacity(limits.len() * 2);
        let mut new = Vec::with_capacity(limits.len());
        for l in limits {
            let window = f64::from(l.window_secs) * 1000.0;
            let interval = window / f64::from(l.quota);
            let key = format!("{}:{}", l.subject, l.name);
            let tat = state.get(&key).copied().unwrap_or(now).max(now);
            let next = tat + interval;
            let allow_at = next - window;
            if now < allow_at {
                limited = 1;
                retry = retry.max(allow_at - now);
                out.extend([0, (tat - now).ceil() as i64]);
            } else {
                out.extend([
                    ((now + window - next) / interval).floor() as i64,
                    (next - now).ceil() as i64,
                ]);
                new.push((key, next));
            }
        }
        if limited == 0 {
            state.extend(new);
        }
        let mut r = vec![limited, retry.ceil() as i64];
        r.extend(out);
        decision(limits, &r, true)
    }
}

fn decision(limits: &[Limit], r: &[i64], local: bool) -> Decision {
    let ms_to_secs = |ms: i64| (ms.max(0) as u64).div_ceil(1000);
    Decision {
        allowed: r.first() == Some(&0),
        retry_after_secs: ms_to_secs(r.get(1).copied().unwrap_or(0)).max(1),
        limits: limits
            .iter()
            .enumerate()
            .map(|(i, l)| LimitState {
                name: l.name,
                quota: l.quota,
                window_secs: l.window_secs,
                remaining: r.get(2 + 2 * i).copied().unwrap_or(0).max(0) as u64,
                reset_secs: ms_to_secs(r.get(3 + 2 * i).copied().unwrap_or(0)),
            })
            .collect(),
        local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        // Never connects: only the local path is exercised here.
        let conn = crate::queue::connect("redis://127.0.0.1:1").unwrap();
        RateLimiter::new(conn, "t")
    }

    #[tokio::test]
    async fn the_local_limiter_allows_the_quota_then_refuses() {
        let l = limiter();
        let limits = [Limit {
            name: "key-minute",
            subject: "k".into(),
            quota: 3,
            window_secs: 60,
        }];
        let remaining: Vec<u64> = (0..3)
            .map(|_| {
                let d = l.check_local(&limits);
                assert!(d.allowed);
                d.limits[0].remaining
            })
            .collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let refused = l.check_local(&limits);
        assert!(!refused.allowed);
        assert!((19..=20).contains(&refused.retry_after_secs), "{refused:?}");
        assert_eq!(refused.policy_header(), "\"key-minute\";q=3;w=60");
        assert_eq!(refused.state_header().unwrap(), "\"key-minute\";r=0;t=60");
    }
}

/// Clients locked out after too many failed authentications: each failure is charged to the
/// client address' GCRA limit in Redis (shared by every replica, failing open like every
/// limit), and once that refuses, this replica answers the address `429` without even parsing
/// its keys until the lockout ends. Only failures cost a Redis call; the lockout check is a
/// local lookup.
#[derive(Default)]
pub struct Lockouts {
    until: Mutex<HashMap<std::net::IpAddr, Instant>>,
}

impl Lockouts {
    /// Seconds left of `ip`'s lockout, if it is locked out.
    pub fn locked(&self, ip: std::net::IpAddr) -> Option<u64> {
        let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let left = until.get(&ip)?.checked_duration_since(Instant::now())?;
        Some(left.as_secs().max(1))
    }

    /// Charges a failed authentication from `ip` to `limit`; returns the lockout in seconds
    /// when this failure was one too many.
    pub async fn failed(
        &self,
        limiter: &RateLimiter,
        ip: std::net::IpAddr,
        limit: Limit,
    ) -> Option<u64> {
        let decision = limiter.check(std::slice::from_ref(&limit)).await;
        if decision.allowed {
            return None;
        }
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if until.len() > 100_000 {
            until.retain(|_, t| *t > now);
        }
        until.insert(ip, now + Duration::from_secs(decision.retry_after_secs));
        Some(decision.retry_after_secs)
    }
}
