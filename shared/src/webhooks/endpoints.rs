//! Webhook endpoints: where a tenant wants its events delivered. What requests may say about
//! them is in [`super::endpoint_input`].

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use poem_openapi::types::MaybeUndefined;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

pub use super::endpoint_input::{
    CreateEndpoint, EndpointStatus, Rules, UpdateEndpoint, format_duration,
};
use super::{
    credentials::{self, EndpointAuth, PreviousSecret, RotateSecret, RotatedSecret},
    endpoint_backlog,
    endpoint_input::{parse_schedule, parse_timeout, patch},
    signing,
};
use crate::{
    crypto::Keyring,
    destinations::{DestinationKind, Prepared},
    error::{Error, Result},
    events::{catalog, types as event_types},
    input::Text,
    tenants::Scope,
};

#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct Endpoint {
    pub id: Uuid,
    /// `live` or `test`: receives only events of orders of the same mode.
    pub mode: String,
    /// How deliveries leave (`http` = signed webhooks).
    pub kind: DestinationKind,
    /// Where deliveries go: the webhook URL, or for other kinds the destination without its
    /// secrets (`amqp://broker:5672`, `mailto:ops@example.com`, `slack:#orders`).
    pub url: String,
    /// The destination's settings without its secrets (`null` for `http`).
    #[oai(nullable)]
    pub config: Option<serde_json::Value>,
    /// Names of the secret settings stored (values are never shown).
    pub config_secrets: Vec<String>,
    #[oai(nullable)]
    pub description: Option<String>,
    pub event_types: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Why the endpoint is disabled: `manual`, `gone` (it answered 410 Gone) or `failing`.
    #[oai(nullable)]
    pub disabled_reason: Option<String>,
    #[oai(nullable)]
    pub disabled_at: Option<DateTime<Utc>>,
    /// Delays before attempts 2, 3, …; `null` = the deployment's default schedule.
    #[oai(nullable)]
    pub retry_schedule: Option<Vec<String>>,
    /// Total request timeout; `null` = the deployment's default.
    #[oai(nullable)]
    pub timeout: Option<String>,
    /// Names of the custom headers sent (values are never shown).
    pub headers: Vec<String>,
    /// `basic`, `bearer`, or `null` for none (credentials are never shown).
    #[oai(nullable)]
    pub auth_type: Option<String>,
    /// `whpk_` ed25519 public key verifying the `v1a` signatures, when enabled.
    #[oai(nullable)]
    pub public_key: Option<String>,
    /// Most deliveries in flight at once; `null` = the deployment's default.
    #[oai(nullable)]
    pub max_concurrency: Option<i32>,
    /// Most deliveries started per second; `null` = no limit.
    #[oai(nullable)]
    pub rate_limit: Option<i32>,
    /// Circuit breaker: `closed`, `open` (deliveries parked until `circuit_open_until`) or
    /// `half_open` (one probe in flight).
    pub circuit_state: String,
    #[oai(nullable)]
    pub circuit_open_until: Option<DateTime<Utc>>,
    /// Receives operational events only.
    pub operational: bool,
    /// Strict FIFO delivery (one at a time, in message order).
    pub fifo: bool,
    /// Consecutive failed attempts (reset by a success).
    pub consecutive_failures: i32,
    /// Deliveries scheduled by `replay_missed` (only in the response of that update).
    #[oai(nullable)]
    pub replayed: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: Uuid,
    mode: String,
    kind: DestinationKind,
    url: String,
    config: Option<Json<serde_json::Value>>,
    config_secret_names: Vec<String>,
    description: Option<String>,
    event_types: Vec<String>,
    status: String,
    disabled_reason: Option<String>,
    disabled_at: Option<DateTime<Utc>>,
    retry_schedule_ms: Option<Vec<i32>>,
    timeout_ms: Option<i32>,
    header_names: Vec<String>,
    auth_type: Option<String>,
    ed25519_public_key: Option<String>,
    max_concurrency: Option<i32>,
    rate_limit: Option<i32>,
    circuit_state: String,
    circuit_open_until: Option<DateTime<Utc>>,
    operational: bool,
    fifo: bool,
    consecutive_failures: i32,
    /// Set by an update that enabled a disabled endpoint: since when it was disabled.
    #[sqlx(default)]
    was_disabled_at: Option<DateTime<Utc>>,
    /// Set by an update that disabled an enabled endpoint.
    #[sqlx(default)]
    now_disabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<EndpointRow> for Endpoint {
    fn from(r: EndpointRow) -> Self {
        let ms = |v: i32| format_duration(Duration::from_millis(v.max(0) as u64));
        Endpoint {
            id: r.id,
            mode: r.mode,
            kind: r.kind,
            url: r.url,
            config: r.config.map(|c| c.0),
            config_secrets: r.config_secret_names,
            description: r.description,
            event_types: r.event_types,
            status: r.status,
            disabled_reason: r.disabled_reason,
            disabled_at: r.disabled_at,
            retry_schedule: r.retry_schedule_ms.map(|v| v.into_iter().map(ms).collect()),
            timeout: r.timeout_ms.map(ms),
            headers: r.header_names,
            auth_type: r.auth_type,
            public_key: r.ed25519_public_key,
            max_concurrency: r.max_concurrency,
            rate_limit: r.rate_limit,
            circuit_state: r.circuit_state,
            circuit_open_until: r.circuit_open_until,
            operational: r.operational,
            fifo: r.fifo,
            consecutive_failures: r.consecutive_failures,
            replayed: None,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// An endpoint as created: the only time its signing secret is shown.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    #[oai(flatten)]
    pub endpoint: Endpoint,
    /// Standard Webhooks signing secret (`whsec_…`); shown only in this response.
    pub secret: String,
}

const COLUMNS: &str = "e.id, e.mode, e.kind, e.url, e.config, e.config_secret_names, \
    e.description, e.event_types, e.status, \
    e.disabled_reason, e.disabled_at, e.retry_schedule_ms, e.timeout_ms, e.header_names, \
    e.auth_type, e.ed25519_public_key, e.max_concurrency, e.rate_limit, \
    COALESCE(g.breaker, 'closed') AS circuit_state, \
    CASE WHEN g.breaker <> 'closed' THEN g.paused_until END AS circuit_open_until, \
    e.operational, e.fifo, e.consecutive_failures, e.created_at, e.updated_at";

/// Keeps the endpoint's dispatch group (what the dispatcher enforces) in step with its caps;
/// appended to statements whose CTE `e` returns the endpoint row.
const SYNC_GROUP: &str = "g0 AS (
    INSERT INTO dispatch_groups (key, max_concurrency, rate_per_second)
    SELECT id, CASE WHEN fifo THEN 1 ELSE max_concurrency END, rate_limit FROM e
    ON CONFLICT (key) DO UPDATE
       SET max_concurrency = EXCLUDED.max_concurrency,
           rate_per_second = EXCLUDED.rate_per_second,
           tat = CASE WHEN EXCLUDED.rate_per_second IS NULL THEN NULL ELSE dispatch_groups.tat END)";

/// Creates an endpoint on `conn` (the caller's transaction) for `destination` (checked
/// beforehand by `destinations::prepare`; `url`, `kind` and `config` of `input` are not looked
/// at again).
pub async fn create(
    conn: &mut PgConnection,
    keyring: &Keyring,
    rules: Rules,
    scope: Scope,
    destination: Prepared,
    input: CreateEndpoint,
) -> Result<CreatedEndpoint> {
    let tenant_id = scope.tenant_id;
    let event_types = event_types::validate_filter(input.event_types)?;
    catalog::check_filter(conn, scope, &event_types).await?;
    let description = input.description.map(Text::into_string);
    let schedule = input
        .retry_schedule
        .as_deref()
        .map(|s| parse_schedule(s, rules.payload_retention))
        .transpose()?;
    let timeout = input.timeout.as_ref().map(parse_timeout).transpose()?;
    let headers = input
        .headers
        .map(credentials::validate_headers)
        .transpose()?;
    let max_concurrency = input.max_concurrency.map(|n| n.get() as i32);
    let rate_limit = input.rate_limit.map(|n| n.get() as i32);
    let auth = input.auth.map(EndpointAuth::from);
    let id = Uuid::now_v7();
    let secret = signing::generate_secret();
    let (key_id, sealed) = credentials::seal_secret(keyring, tenant_id, id, &secret);
    let headers = headers.filter(|h| !h.is_empty()).map(|h| {
        let (kid, sealed) = credentials::seal_headers(keyring, tenant_id, id, &h);
        (kid, sealed, h.into_keys().collect::<Vec<_>>())
    });
    let auth = auth.map(|a| {
        let (kid, sealed) = credentials::seal_auth(keyring, tenant_id, id, &a);
        (kid, sealed, a.kind)
    });
    let ed25519 = input
        .ed25519_signing
        .unwrap_or(false)
        .then(|| credentials::new_ed25519(keyring, tenant_id, id));
    let config = sealed_config(keyring, tenant_id, id, &destination);
    let row = sqlx::query_as::<_, EndpointRow>(sqlx::AssertSqlSafe(format!(
        "WITH e AS (
            INSERT INTO webhook_endpoints
                (id, tenant_id, mode, url, description, event_types, secret_ciphertext,
                 secret_key_id, retry_schedule_ms, timeout_ms, headers_key_id,
                 headers_ciphertext, header_names, auth_key_id, auth_ciphertext, auth_type,
                 ed25519_key_id, ed25519_ciphertext, ed25519_public_key, max_concurrency,
                 rate_limit, operational, fifo, kind, config, config_secret_names,
                 config_key_id, config_ciphertext)
            VALUES ($1, $2, $8, $3, $4, $5, $6, $7, $9, $10, $11, $12, COALESCE($13, '{{}}'),
                    $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)
            RETURNING *),
         {SYNC_GROUP}
         SELECT {COLUMNS} FROM e LEFT JOIN dispatch_groups g ON g.key = e.id"
    )))
    .bind(id)
    .bind(tenant_id)
    .bind(&destination.url)
    .bind(description)
    .bind(&event_types)
    .bind(sealed)
    .bind(key_id)
    .bind(scope.mode.as_str())
    .bind(schedule)
    .bind(timeout)
    .bind(headers.as_ref().map(|h| &h.0))
    .bind(headers.as_ref().map(|h| &h.1))
    .bind(headers.as_ref().map(|h| &h.2))
    .bind(auth.as_ref().map(|a| &a.0))
    .bind(auth.as_ref().map(|a| &a.1))
    .bind(auth.as_ref().map(|a| &a.2))
    .bind(ed25519.as_ref().map(|e| &e.0))
    .bind(ed25519.as_ref().map(|e| &e.1))
    .bind(ed25519.as_ref().map(|e| &e.2))
    .bind(max_concurrency)
    .bind(rate_limit)
    .bind(input.operational.unwrap_or(false))
    .bind(input.fifo.unwrap_or(false))
    .bind(destination.kind)
    .bind(destination.public.as_ref().map(Json))
    .bind(&config.0)
    .bind(&config.1)
    .bind(&config.2)
    .fetch_one(conn)
    .await?;
    Ok(CreatedEndpoint {
        endpoint: row.into(),
        secret,
    })
}

/// Applies a partial update on `conn` (the caller's transaction): the change in one
/// statement; then, when it disabled the endpoint, the cancellation of everything pending for
/// it, or, when it enabled it with `replay_missed`, the replay of what it missed.
/// `destination` is the checked `input.url` or `input.config`, if the update has one.
pub async fn update(
    conn: &mut PgConnection,
    keyring: &Keyring,
    rules: Rules,
    scope: Scope,
    id: Uuid,
    destination: Option<Prepared>,
    input: UpdateEndpoint,
) -> Result<Endpoint> {
    let url = destination.as_ref().map(|d| d.url.clone());
    let config = destination
        .as_ref()
        .filter(|d| d.kind != DestinationKind::Http)
        .map(|d| {
            (
                d.kind,
                d.public.clone(),
                sealed_config(keyring, scope.tenant_id, id, d),
            )
        });
    let event_types = input
        .event_types
        .map(|t| event_types::validate_filter(Some(t)))
        .transpose()?;
    if let Some(t) = &event_types {
        catalog::check_filter(conn, scope, t).await?;
    }
    let status = input.status.map(EndpointStatus::as_str);
    // (present, value) pairs: present = the field was in the body (a null resets it).
    let description = patch(input.description, |d| Ok(d.into_string()))?;
    let schedule = patch(input.retry_schedule, |s| {
        parse_schedule(&s, rules.payload_retention)
    })?;
    let max_concurrency = patch(input.max_concurrency, |n| Ok(n.get() as i32))?;
    let rate_limit = patch(input.rate_limit, |n| Ok(n.get() as i32))?;
    let timeout = patch(input.timeout, |t| parse_timeout(&t))?;
    let (t, e) = (scope.tenant_id, id);
    // (present, key id, sealed, names) for headers; (present, key id, sealed, type) for auth.
    let headers = match input.headers {
        MaybeUndefined::Undefined => (false, None, None, Vec::new()),
        MaybeUndefined::Null => (true, None, None, Vec::new()),
        MaybeUndefined::Value(h) => {
            let h = credentials::validate_headers(h)?;
            if h.is_empty() {
                (true, None, None, Vec::new())
            } else {
                let (kid, sealed) = credentials::seal_headers(keyring, t, e, &h);
                (true, Some(kid), Some(sealed), h.into_keys().collect())
            }
        }
    };
    let auth = match input.auth {
        MaybeUndefined::Undefined => (false, None, None, None),
        MaybeUndefined::Null => (true, None, None, None),
        MaybeUndefined::Value(a) => {
            let a = EndpointAuth::from(a);
            let (kid, sealed) = credentials::seal_auth(keyring, t, e, &a);
            (true, Some(kid), Some(sealed), Some(a.kind))
        }
    };
    // A new key pair is only used if the endpoint has none yet (see the SQL).
    let ed25519 = match input.ed25519_signing {
        Some(true) => (true, Some(credentials::new_ed25519(keyring, t, e))),
        Some(false) => (true, None),
        None => (false, None),
    };
    let row = sqlx::query_as::<_, EndpointRow>(sqlx::AssertSqlSafe(format!(
        "WITH before AS (
            -- The row as the statement found it (no FOR UPDATE: `e` below updates the same
            -- row in this statement, and a locking read would then skip it).
            SELECT id, status, disabled_at FROM webhook_endpoints
             WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL),
         e AS (
         UPDATE webhook_endpoints
            SET max_concurrency = CASE WHEN $25 THEN $26 ELSE max_concurrency END,
                operational = COALESCE($29, operational),
                fifo = COALESCE($30, fifo),
                consecutive_failures = CASE WHEN $12 = 'enabled' THEN 0 ELSE consecutive_failures END,
                failing_since = CASE WHEN $12 = 'enabled' THEN NULL ELSE failing_since END,
                rate_limit = CASE WHEN $27 THEN $28 ELSE rate_limit END,
                headers_key_id = CASE WHEN $13 THEN $14 ELSE headers_key_id END,
                headers_ciphertext = CASE WHEN $13 THEN $15 ELSE headers_ciphertext END,
                header_names = CASE WHEN $13 THEN $16 ELSE header_names END,
                auth_key_id = CASE WHEN $17 THEN $18 ELSE auth_key_id END,
                auth_ciphertext = CASE WHEN $17 THEN $19 ELSE auth_ciphertext END,
                auth_type = CASE WHEN $17 THEN $20 ELSE auth_type END,
                ed25519_key_id = CASE WHEN NOT $21 OR (ed25519_key_id IS NOT NULL AND $22::text IS NOT NULL)
                                      THEN ed25519_key_id ELSE $22 END,
                ed25519_ciphertext = CASE WHEN NOT $21 OR (ed25519_key_id IS NOT NULL AND $22::text IS NOT NULL)
                                          THEN ed25519_ciphertext ELSE $23 END,
                ed25519_public_key = CASE WHEN NOT $21 OR (ed25519_key_id IS NOT NULL AND $22::text IS NOT NULL)
                                          THEN ed25519_public_key ELSE $24 END,
                url = COALESCE($4, url),
                config = CASE WHEN $31::text IS NULL THEN config ELSE $32 END,
                config_secret_names = CASE WHEN $31::text IS NULL THEN config_secret_names ELSE $33 END,
                config_key_id = CASE WHEN $31::text IS NULL THEN config_key_id ELSE $34 END,
                config_ciphertext = CASE WHEN $31::text IS NULL THEN config_ciphertext ELSE $35 END,
                event_types = COALESCE($5, event_types),
                description = CASE WHEN $6 THEN $7 ELSE description END,
                retry_schedule_ms = CASE WHEN $8 THEN $9 ELSE retry_schedule_ms END,
                timeout_ms = CASE WHEN $10 THEN $11 ELSE timeout_ms END,
                status = COALESCE($12, status),
                disabled_reason = CASE WHEN $12 = 'enabled' THEN NULL
                                       WHEN $12 = 'disabled' AND status = 'enabled' THEN 'manual'
                                       ELSE disabled_reason END,
                disabled_at = CASE WHEN $12 = 'enabled' THEN NULL
                                   WHEN $12 = 'disabled' AND status = 'enabled' THEN now()
                                   ELSE disabled_at END,
                updated_at = now()
          WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL
            AND ($31::text IS NULL OR kind = $31)
      RETURNING *),
         {SYNC_GROUP}
         SELECT {COLUMNS},
                (SELECT b.disabled_at FROM before b WHERE b.status = 'disabled' AND e.status = 'enabled')
                    AS was_disabled_at,
                EXISTS (SELECT 1 FROM before b WHERE b.status = 'enabled' AND e.status = 'disabled')
                    AS now_disabled
           FROM e LEFT JOIN dispatch_groups g ON g.key = e.id"
    )))
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .bind(url)
    .bind(event_types)
    .bind(description.0)
    .bind(description.1)
    .bind(schedule.0)
    .bind(schedule.1)
    .bind(timeout.0)
    .bind(timeout.1)
    .bind(status)
    .bind(headers.0)
    .bind(headers.1)
    .bind(headers.2)
    .bind(headers.3)
    .bind(auth.0)
    .bind(auth.1)
    .bind(auth.2)
    .bind(auth.3)
    .bind(ed25519.0)
    .bind(ed25519.1.as_ref().map(|k| &k.0))
    .bind(ed25519.1.as_ref().map(|k| &k.1))
    .bind(ed25519.1.as_ref().map(|k| &k.2))
    .bind(max_concurrency.0)
    .bind(max_concurrency.1)
    .bind(rate_limit.0)
    .bind(rate_limit.1)
    .bind(input.operational)
    .bind(input.fifo)
    .bind(config.as_ref().map(|c| c.0))
    .bind(config.as_ref().and_then(|c| c.1.clone()).map(Json))
    .bind(config.as_ref().map(|c| c.2.0.clone()).unwrap_or_default())
    .bind(config.as_ref().and_then(|c| c.2.1.clone()))
    .bind(config.as_ref().and_then(|c| c.2.2.clone()))
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found("webhook endpoint"))?;
    let since = row
        .was_disabled_at
        .filter(|_| input.replay_missed == Some(true));
    let now_disabled = row.now_disabled;
    let mut endpoint = Endpoint::from(row);
    if now_disabled {
        endpoint_backlog::cancel_pending(conn, id, "endpoint disabled").await?;
    }
    if let Some(since) = since {
        endpoint.replayed =
            Some(endpoint_backlog::replay_since(conn, scope, &endpoint, since).await?);
    }
    Ok(endpoint)
}

/// A destination's secret settings, sealed for the endpoint: `(names, key id, ciphertext)`.
fn sealed_config(
    keyring: &Keyring,
    tenant_id: Uuid,
    id: Uuid,
    destination: &Prepared,
) -> (Vec<String>, Option<String>, Option<Vec<u8>>) {
    if destination.secrets.is_empty() {
        return (Vec::new(), None, None);
    }
    let (kid, sealed) = credentials::seal_config(keyring, tenant_id, id, &destination.secrets);
    (
        destination.secrets.keys().cloned().collect(),
        Some(kid),
        Some(sealed),
    )
}

/// Attempts allowed to work the API schedules (replays, manual retries) when the endpoint has
/// no schedule of its own: the longest schedule an endpoint can have. The worker's schedule
/// still decides when to stop; this only bounds runs that crash before recording an attempt.
pub const MANUAL_MAX_ATTEMPTS: i32 = 21;

/// Replaces the signing secret; the old one keeps signing for the grace period.
pub async fn rotate_secret(
    conn: &mut PgConnection,
    keyring: &Keyring,
    scope: Scope,
    id: Uuid,
    input: RotateSecret,
) -> Result<RotatedSecret> {
    let (grace, secret) = credentials::rotation_input(&input)?;
    type Current = (String, Vec<u8>, Json<Vec<PreviousSecret>>, DateTime<Utc>);
    // Expiry times are on the database's clock, the one attempts compare them with.
    let current: Option<Current> = sqlx::query_as(
        "SELECT secret_key_id, secret_ciphertext, previous_secrets, now() FROM webhook_endpoints
          WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let (old_kid, old_sealed, previous, now) =
        current.ok_or_else(|| Error::not_found("webhook endpoint"))?;
    let expires_at = now + grace;
    let replaced = PreviousSecret {
        key_id: old_kid,
        sealed: base64::engine::general_purpose::STANDARD.encode(old_sealed),
        expires_at,
    };
    let previous = credentials::rotated_previous(previous.0, replaced, now);
    let (kid, sealed) = credentials::seal_secret(keyring, scope.tenant_id, id, &secret);
    sqlx::query(
        "UPDATE webhook_endpoints
            SET secret_key_id = $2, secret_ciphertext = $3, previous_secrets = $4, updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(kid)
    .bind(sealed)
    .bind(Json(&previous))
    .execute(&mut *conn)
    .await?;
    Ok(RotatedSecret {
        secret,
        previous_secret_expires_at: (expires_at > now).then_some(expires_at),
    })
}

pub async fn get<'e>(db: impl sqlx::PgExecutor<'e>, scope: Scope, id: Uuid) -> Result<Endpoint> {
    sqlx::query_as::<_, EndpointRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints e LEFT JOIN dispatch_groups g ON g.key = e.id
          WHERE e.tenant_id = $1 AND e.id = $2 AND e.mode = $3 AND e.deleted_at IS NULL"
    )))
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .fetch_optional(db)
    .await?
    .map(Endpoint::from)
    .ok_or_else(|| Error::not_found("webhook endpoint"))
}

pub async fn list(
    pool: &PgPool,
    scope: Scope,
    limit: i64,
    starting_after: Option<Uuid>,
) -> Result<Vec<Endpoint>> {
    Ok(
        sqlx::query_as::<_, EndpointRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM webhook_endpoints e LEFT JOIN dispatch_groups g ON g.key = e.id
              WHERE e.tenant_id = $1 AND e.mode = $4 AND e.deleted_at IS NULL
                AND ($3::uuid IS NULL OR e.id < $3)
              ORDER BY e.id DESC LIMIT $2"
        )))
        .bind(scope.tenant_id)
        .bind(limit)
        .bind(starting_after)
        .bind(scope.mode.as_str())
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(Endpoint::from)
        .collect(),
    )
}

/// Soft-deletes the endpoint on `conn` (the caller's transaction): everything pending for it is
/// cancelled at once, parked or not, and its dispatch group disappears.
pub async fn delete(conn: &mut PgConnection, scope: Scope, id: Uuid) -> Result<()> {
    let n = sqlx::query(
        "UPDATE webhook_endpoints SET deleted_at = now(), updated_at = now()
          WHERE tenant_id = $1 AND id = $2 AND mode = $3 AND deleted_at IS NULL",
    )
    .bind(scope.tenant_id)
    .bind(id)
    .bind(scope.mode.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::not_found("webhook endpoint"));
    }
    endpoint_backlog::cancel_pending(conn, id, "endpoint deleted").await?;
    sqlx::query("DELETE FROM dispatch_groups WHERE key = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
