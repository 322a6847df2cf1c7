//! The integrations email and HTTP-action destinations use: their address and credentials,
//! opened from the vault and kept for a minute, so a burst of deliveries opens (and audits)
//! them once, not once per delivery, and a changed credential is picked up within a minute.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::PgPool;
use switchyard_shared::{
    audit::{Actor, ActorKind},
    crypto::Keyring,
    integrations::vault::{self, Opened, Purpose},
    mode::Mode,
    tenants::Scope,
    webhooks::delivery::Target,
};
use uuid::Uuid;

/// How long opened credentials are kept.
const TTL: Duration = Duration::from_secs(60);

/// An integration, opened for deliveries.
pub struct Integration {
    pub id: Uuid,
    pub provider: String,
    pub base_url: Option<String>,
    /// `config.api_key_header`, where an `api_key` credential goes.
    pub api_key_header: Option<String>,
    pub credentials: Opened,
}

type Cached = (Instant, Arc<Integration>);

pub struct Integrations {
    pool: PgPool,
    keyring: Keyring,
    /// By (integration, endpoint): when opened, and what.
    cache: Mutex<HashMap<(Uuid, Uuid), Cached>>,
}

impl Integrations {
    pub fn new(pool: PgPool, keyring: Keyring) -> Self {
        Integrations {
            pool,
            keyring,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The integration `id` as the endpoint of `target` may use it: the same tenant and mode,
    /// not deleted. The error is for the attempt log.
    pub async fn get(&self, id: Uuid, target: &Target) -> Result<Arc<Integration>, String> {
        let key = (id, target.endpoint_id);
        if let Some((at, i)) = self.cache.lock().expect("cache lock").get(&key)
            && at.elapsed() < TTL
        {
            return Ok(i.clone());
        }
        let opened = self.open(id, target).await.map_err(|e| e.to_string())?;
        let opened = Arc::new(opened?);
        let mut cache = self.cache.lock().expect("cache lock");
        cache.retain(|_, (at, _)| at.elapsed() < TTL);
        cache.insert(key, (Instant::now(), opened.clone()));
        Ok(opened)
    }

    async fn open(
        &self,
        id: Uuid,
        target: &Target,
    ) -> switchyard_shared::Result<Result<Integration, String>> {
        type Row = (String, Option<String>, Option<String>, String);
        let row: Option<Row> = sqlx::query_as(
            "SELECT i.provider, i.base_url, i.config ->> 'api_key_header', i.mode
               FROM integrations i
               JOIN webhook_endpoints e ON e.tenant_id = i.tenant_id AND e.mode = i.mode
              WHERE i.id = $1 AND e.id = $2 AND i.deleted_at IS NULL",
        )
        .bind(id)
        .bind(target.endpoint_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((provider, base_url, api_key_header, mode)) = row else {
            return Ok(Err(format!(
                "integration {id} no longer exists in the endpoint's mode"
            )));
        };
        let scope = Scope {
            tenant_id: target.tenant_id,
            mode: Mode::parse(&mode)?,
        };
        let actor = Actor {
            kind: ActorKind::Job(target.delivery_id),
            request_id: None,
            ip: None,
        };
        let opened = vault::open_for_use(
            &self.pool,
            &self.keyring,
            scope,
            id,
            &actor,
            Purpose::Delivery,
        )
        .await?;
        Ok(opened
            .map(|credentials| Integration {
                id,
                provider,
                base_url,
                api_key_header,
                credentials,
            })
            .map_err(|e| e.to_string()))
    }
}
