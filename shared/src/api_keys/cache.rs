//! Authentication without a database round trip once a key has been seen.
//!
//! Each API replica keeps the rows of the keys it has seen in a bounded map, and the key ids
//! found not to exist in a second, smaller one (so a flood of unknown ids can never evict real
//! keys). A key whose checksum is wrong never gets this far: it is refused without any lookup.
//! A poller reads `api_keys.updated_at` every second and drops changed entries, so a
//! revocation, a roll or a scope change reaches every replica within about a second. If the
//! poller cannot reach Postgres for [`STALE_AFTER`], the cache is bypassed until it can: a
//! cached key is never trusted for longer than that without confirmation. Expiry is checked on
//! the database's clock (the poller keeps this host's offset to it).

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Principal, hash, parse};
use crate::{
    crypto::constant_time_eq,
    error::{Error, Result},
    net::Cidr,
};

/// How often replicas look for changed keys.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The cache is bypassed when the last successful poll is older than this.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// Entries are reloaded after this long even without a change (belt and braces).
const MAX_AGE: Duration = Duration::from_secs(300);
/// Changes committed this long after their `updated_at` (long transactions) are still seen.
const POLL_OVERLAP_SECS: f64 = 10.0;

/// A key row as authentication needs it.
#[derive(Debug)]
struct KeyRow {
    id: Uuid,
    tenant_id: Uuid,
    key_hash: Vec<u8>,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    allowed_cidrs: Vec<Cidr>,
    rate_limit_per_minute: Option<i32>,
    rate_limit_per_hour: Option<i32>,
    tenant_rate_limit_per_minute: Option<i32>,
}

#[derive(sqlx::FromRow)]
struct DbRow {
    id: Uuid,
    tenant_id: Uuid,
    key_hash: Vec<u8>,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    allowed_cidrs: Vec<String>,
    rate_limit_per_minute: Option<i32>,
    rate_limit_per_hour: Option<i32>,
    tenant_rate_limit_per_minute: Option<i32>,
}

struct Entry {
    loaded: Instant,
    row: Arc<KeyRow>,
}

#[derive(Clone)]
pub struct KeyCache {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    pepper: Vec<u8>,
    capacity: usize,
    entries: RwLock<HashMap<String, Entry>>,
    /// Key ids known not to exist, and since when (bounded apart from `entries`).
    missing: RwLock<HashMap<String, Instant>>,
    /// Ids of keys made before keyed checksums: the only ones a CRC32 checksum may carry.
    legacy: RwLock<HashSet<String>>,
    started: Instant,
    /// Milliseconds since `started` of the last successful poll.
    last_poll_ms: AtomicU64,
    /// The database's clock minus this host's, in milliseconds (learnt by the poller).
    clock_offset_ms: AtomicI64,
}

fn unknown() -> Error {
    Error::unauthenticated("invalid_api_key", "The API key is not valid.")
}

fn to_u32(v: Option<i32>) -> Option<u32> {
    v.and_then(|n| u32::try_from(n).ok())
}

impl KeyCache {
    pub fn new(pool: PgPool, pepper: Vec<u8>, capacity: usize) -> Self {
        KeyCache {
            inner: Arc::new(Inner {
                pool,
                pepper,
                capacity: capacity.max(1),
                entries: RwLock::new(HashMap::new()),
                missing: RwLock::new(HashMap::new()),
                legacy: RwLock::new(HashSet::new()),
                started: Instant::now(),
                last_poll_ms: AtomicU64::new(0),
                clock_offset_ms: AtomicI64::new(0),
            }),
        }
    }

    /// Loads the ids of keys made before keyed checksums (once, at start: no new ones can
    /// appear).
    pub async fn load_legacy(&self) -> Result<()> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT key_id FROM api_keys WHERE legacy_checksum AND revoked_at IS NULL",
        )
        .fetch_all(&self.inner.pool)
        .await?;
        *self.inner.legacy.write().unwrap_or_else(|e| e.into_inner()) = ids.into_iter().collect();
        Ok(())
    }

    /// Now on the database's clock, as well as this host knows it.
    fn db_now(&self) -> DateTime<Utc> {
        Utc::now()
            + chrono::TimeDelta::milliseconds(self.inner.clock_offset_ms.load(Ordering::Relaxed))
    }

    fn fresh(&self) -> bool {
        let last = Duration::from_millis(self.inner.last_poll_ms.load(Ordering::Relaxed));
        self.inner.started.elapsed().saturating_sub(last) < STALE_AFTER
    }

    /// Resolves a presented key to its principal, or says precisely why not. `peer` is the
    /// client address checked against the key's allowlist.
    pub async fn authenticate(&self, presented: &str, peer: Option<IpAddr>) -> Result<Principal> {
        let malformed =
            || Error::unauthenticated("invalid_api_key", "The API key is malformed or mistyped.");
        let parsed = parse(&self.inner.pepper, presented).ok_or_else(malformed)?;
        if parsed.legacy
            && !self
                .inner
                .legacy
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(parsed.key_id)
        {
            return Err(malformed());
        }
        let row = match self.cached(parsed.key_id) {
            Some(row) => row,
            None => self.load(parsed.key_id).await?,
        };
        let row = row.ok_or_else(unknown)?;
        if !constant_time_eq(&row.key_hash, &hash(&self.inner.pepper, presented)) {
            return Err(unknown());
        }
        if row.revoked_at.is_some() {
            return Err(Error::unauthenticated(
                "api_key_revoked",
                "The API key has been revoked.",
            ));
        }
        if row.expires_at.is_some_and(|t| t <= self.db_now()) {
            return Err(Error::unauthenticated(
                "api_key_expired",
                "The API key has expired.",
            ));
        }
        if !row.allowed_cidrs.is_empty() {
            let allowed = peer.is_some_and(|ip| row.allowed_cidrs.iter().any(|c| c.contains(ip)));
            if !allowed {
                return Err(Error::forbidden(
                    "ip_not_allowed",
                    format!(
                        "This API key may not be used from {}.",
                        peer.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string())
                    ),
                ));
            }
        }
        Ok(Principal {
            tenant_id: row.tenant_id,
            api_key_id: row.id,
            key_id: parsed.key_id.to_owned(),
            mode: parsed.mode,
            scopes: row.scopes.clone(),
            allowed_cidrs: row.allowed_cidrs.clone(),
            rate_limit_per_minute: to_u32(row.rate_limit_per_minute),
            rate_limit_per_hour: to_u32(row.rate_limit_per_hour),
            tenant_rate_limit_per_minute: to_u32(row.tenant_rate_limit_per_minute),
            expires_at: row.expires_at,
        })
    }

    /// The cached row (`Some(None)`: known not to exist), if it may be trusted.
    fn cached(&self, key_id: &str) -> Option<Option<Arc<KeyRow>>> {
        if !self.fresh() {
            return None;
        }
        let entries = self.inner.entries.read().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get(key_id) {
            return (e.loaded.elapsed() < MAX_AGE).then(|| Some(e.row.clone()));
        }
        drop(entries);
        let missing = self.inner.missing.read().unwrap_or_else(|e| e.into_inner());
        let since = missing.get(key_id)?;
        (since.elapsed() < MAX_AGE).then_some(None)
    }

    async fn load(&self, key_id: &str) -> Result<Option<Arc<KeyRow>>> {
        let row = sqlx::query_as::<_, DbRow>(
            "SELECT k.id, k.tenant_id, k.key_hash, k.scopes, k.expires_at, k.revoked_at,
                    k.allowed_cidrs, k.rate_limit_per_minute, k.rate_limit_per_hour,
                    t.rate_limit_per_minute AS tenant_rate_limit_per_minute
               FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
              WHERE k.key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.inner.pool)
        .await?;
        let row = row.map(|r| {
            Arc::new(KeyRow {
                id: r.id,
                tenant_id: r.tenant_id,
                key_hash: r.key_hash,
                scopes: r.scopes,
                expires_at: r.expires_at,
                revoked_at: r.revoked_at,
                allowed_cidrs: r
                    .allowed_cidrs
                    .iter()
                    .filter_map(|c| Cidr::parse(c))
                    .collect(),
                rate_limit_per_minute: r.rate_limit_per_minute,
                rate_limit_per_hour: r.rate_limit_per_hour,
                tenant_rate_limit_per_minute: r.tenant_rate_limit_per_minute,
            })
        });
        match &row {
            Some(row) => remember(
                &self.inner.entries,
                self.inner.capacity,
                key_id,
                Entry {
                    loaded: Instant::now(),
                    row: row.clone(),
                },
                |e| e.loaded,
            ),
            None => remember(
                &self.inner.missing,
                (self.inner.capacity / 10).max(1000),
                key_id,
                Instant::now(),
                |t| *t,
            ),
        }
        Ok(row)
    }

    /// Drops entries of keys changed since the last poll, every [`POLL_INTERVAL`], until
    /// `shutdown`.
    pub async fn run_invalidation(self, shutdown: CancellationToken) {
        let mut since: Option<DateTime<Utc>> = None;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        let mut last_error_log: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let sent = Utc::now();
            match self.poll(since).await {
                Ok(now) => {
                    // The database read its clock about halfway through the round trip; taking
                    // the end instead would put it behind by the whole trip, and a key that
                    // expired a moment ago would still pass.
                    let received = Utc::now();
                    let offset = (now - (sent + (received - sent) / 2)).num_milliseconds();
                    self.inner.clock_offset_ms.store(offset, Ordering::Relaxed);
                    since = Some(now);
                    let ms = self.inner.started.elapsed().as_millis() as u64;
                    self.inner.last_poll_ms.store(ms, Ordering::Relaxed);
                }
                Err(e) => {
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "API key cache cannot poll for changes; bypassing it");
                        last_error_log = Some(Instant::now());
                    }
                }
            }
        }
    }

    /// One poll: drops changed keys and returns the database's clock.
    async fn poll(&self, since: Option<DateTime<Utc>>) -> Result<DateTime<Utc>> {
        let Some(since) = since else {
            // First poll: only learn the clock; nothing cached can predate it by much.
            return Ok(sqlx::query_scalar("SELECT now()")
                .fetch_one(&self.inner.pool)
                .await?);
        };
        let (now, changed): (DateTime<Utc>, Vec<String>) = sqlx::query_as(
            "SELECT now(), ARRAY(SELECT key_id FROM api_keys
                                  WHERE updated_at > $1 - make_interval(secs => $2))",
        )
        .bind(since)
        .bind(POLL_OVERLAP_SECS)
        .fetch_one(&self.inner.pool)
        .await?;
        if !changed.is_empty() {
            let mut entries = self
                .inner
                .entries
                .write()
                .unwrap_or_else(|e| e.into_inner());
            for key_id in &changed {
                entries.remove(key_id);
            }
            drop(entries);
            let mut missing = self
                .inner
                .missing
                .write()
                .unwrap_or_else(|e| e.into_inner());
            for key_id in &changed {
                missing.remove(key_id);
            }
        }
        Ok(now)
    }

    /// Drops one key at once (the replica that changed it need not wait for the poller).
    pub fn forget(&self, key_id: &str) {
        self.inner
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key_id);
    }

    /// Drops the key with row id `id` (a scan: only for rare changes such as a roll).
    pub fn forget_id(&self, id: Uuid) {
        self.inner
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| e.row.id != id);
    }

    /// Drops every key (after a change that affects many, such as a tenant's limit).
    pub fn clear(&self) {
        self.inner
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Inserts into a bounded map; when full, first drops the oldest tenth (a scan, but only when
/// full).
fn remember<V>(
    map: &RwLock<HashMap<String, V>>,
    capacity: usize,
    key: &str,
    value: V,
    age: impl Fn(&V) -> Instant,
) {
    let mut map = map.write().unwrap_or_else(|e| e.into_inner());
    if map.len() >= capacity {
        let mut ages: Vec<(Instant, String)> =
            map.iter().map(|(k, v)| (age(v), k.clone())).collect();
        ages.sort();
        for (_, k) in ages.into_iter().take(capacity / 10 + 1) {
            map.remove(&k);
        }
    }
    map.insert(key.to_owned(), value);
}
