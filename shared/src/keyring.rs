//! The keyring at rest: which master key seals how many values of each kind, and rotation,
//! which re-encrypts everything still under an older key with the active one (the first of
//! `SWITCHYARD_MASTER_KEYS`). Every sealed kind is listed once, in [`KINDS`]; its
//! re-encryption lives next to its domain. A rotation is a job (`keyring_rotations` row +
//! ledger job): a crashed run resumes, since it only ever picks values not yet under the
//! active key, and each value changes only if it still is what was read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use crate::{
    crypto::Keyring,
    error::{Error, Result, is_unique_violation},
    jobs::{self, NewJob, insert_jobs_sql},
    queue::{JobTask, KEYRING_ROTATION},
};

/// Runs a rotation gets before it is dead (it resumes where it was each time).
pub const ROTATION_MAX_ATTEMPTS: i32 = 10;
/// Values re-encrypted per statement.
const BATCH: i64 = 500;

/// Where a kind's pass has got to: the last row's key (a uuid and, for composite keys, text).
pub type Cursor = (Uuid, String);

/// What one batch of a kind did.
#[derive(Debug, Default)]
pub struct Batch {
    pub rotated: u64,
    /// Values that failed to open (tampered, moved, or under a key no longer in the keyring):
    /// left as they are, and counted.
    pub unreadable: u64,
    /// Where the next batch starts; `None` when the kind is done.
    pub next: Option<Cursor>,
}

type Rekey = for<'a> fn(&'a PgPool, &'a Keyring, Cursor, i64) -> BoxFuture<'a, Result<Batch>>;

/// One kind of sealed value: how to count it by key id, and how to move a batch to the
/// active key.
pub struct SealedKind {
    pub name: &'static str,
    /// Returns `(key_id, count)` rows.
    pub count_sql: &'static str,
    pub rekey: Rekey,
}

/// Every sealed value in the system.
pub const KINDS: &[SealedKind] = &[
    crate::webhooks::rekey::SECRET,
    crate::webhooks::rekey::PREVIOUS_SECRETS,
    crate::webhooks::rekey::HEADERS,
    crate::webhooks::rekey::AUTH,
    crate::webhooks::rekey::ED25519,
    crate::webhooks::rekey::CONFIG,
    crate::idempotency::SEALED_RESPONSES,
    crate::integrations::vault::SEALED_CREDENTIALS,
];

/// Opens `sealed` and seals it again with the active key; `None` if it does not open.
pub fn reseal(
    keyring: &Keyring,
    key_id: &str,
    sealed: &[u8],
    aad: &[u8],
) -> Option<(String, Vec<u8>)> {
    let plain = keyring.open(key_id, sealed, aad).ok()?;
    Some(keyring.seal(&plain, aad))
}

/// One master key and what it seals.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct MasterKeyUsage {
    pub key_id: String,
    /// The key new values are sealed with.
    pub active: bool,
    /// In `SWITCHYARD_MASTER_KEYS`; values under a key that is not cannot be opened.
    pub configured: bool,
    /// Sealed values under this key, per kind.
    pub rows: BTreeMap<String, i64>,
    pub total: i64,
    /// Nothing is sealed under it any more: it can leave `SWITCHYARD_MASTER_KEYS`.
    pub retirable: bool,
}

/// A rotation run.
#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct Rotation {
    pub id: Uuid,
    /// The key everything is moved to.
    pub key_id: String,
    /// `running`, `finished` or `failed`.
    pub state: String,
    /// Values moved to the key, per kind.
    pub rotated: BTreeMap<String, i64>,
    /// Values that could not be opened (left as they are), per kind.
    pub unreadable: BTreeMap<String, i64>,
    #[oai(nullable)]
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct RotationRow {
    id: Uuid,
    key_id: String,
    state: String,
    rotated: Json<BTreeMap<String, i64>>,
    unreadable: Json<BTreeMap<String, i64>>,
    error: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<RotationRow> for Rotation {
    fn from(r: RotationRow) -> Self {
        Rotation {
            id: r.id,
            key_id: r.key_id,
            state: r.state,
            rotated: r.rotated.0,
            unreadable: r.unreadable.0,
            error: r.error,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

#[derive(Clone, Debug, Serialize, poem_openapi::Object)]
pub struct KeyringStatus {
    pub active_key_id: String,
    pub keys: Vec<MasterKeyUsage>,
    /// The latest rotation, if any.
    #[oai(nullable)]
    pub rotation: Option<Rotation>,
}

const ROTATION_COLUMNS: &str =
    "id, key_id, state, rotated, unreadable, error, started_at, finished_at";

/// Counts sealed values by key and kind; keys of the keyring with nothing sealed are listed
/// too (retirable unless active).
pub async fn status(pool: &PgPool, keyring: &Keyring) -> Result<KeyringStatus> {
    let mut by_key: BTreeMap<String, BTreeMap<String, i64>> = keyring
        .key_ids()
        .map(|k| (k.to_owned(), BTreeMap::new()))
        .collect();
    for kind in KINDS {
        let rows: Vec<(Option<String>, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(kind.count_sql))
            .fetch_all(pool)
            .await?;
        for (key_id, n) in rows {
            let key_id = key_id.unwrap_or_default();
            *by_key
                .entry(key_id)
                .or_default()
                .entry(kind.name.to_owned())
                .or_default() += n;
        }
    }
    let active = keyring.active_key_id().to_owned();
    let keys = by_key
        .into_iter()
        .map(|(key_id, rows)| {
            let total = rows.values().sum();
            MasterKeyUsage {
                active: key_id == active,
                configured: keyring.key_ids().any(|k| k == key_id),
                retirable: key_id != active && total == 0,
                key_id,
                rows,
                total,
            }
        })
        .collect();
    let rotation = sqlx::query_as::<_, RotationRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {ROTATION_COLUMNS} FROM keyring_rotations ORDER BY id DESC LIMIT 1"
    )))
    .fetch_optional(pool)
    .await?
    .map(Rotation::from);
    Ok(KeyringStatus {
        active_key_id: active,
        keys,
        rotation,
    })
}

/// Starts a rotation to the active key on `conn` (the caller's transaction): its row and its
/// job. One runs at a time: while one is running, this is a `409 rotation_running`.
pub async fn start_rotation(
    conn: &mut PgConnection,
    keyring: &Keyring,
) -> Result<(Rotation, JobTask)> {
    let id = Uuid::now_v7();
    let inserted = sqlx::query_as::<_, RotationRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO keyring_rotations (id, key_id) VALUES ($1, $2) RETURNING {ROTATION_COLUMNS}"
    )))
    .bind(id)
    .bind(keyring.active_key_id())
    .fetch_one(&mut *conn)
    .await;
    let rotation = match inserted {
        Ok(r) => Rotation::from(r),
        Err(e) if is_unique_violation(&e, "keyring_rotations_one_running") => {
            return Err(Error::conflict(
                "rotation_running",
                None,
                "A keyring rotation is already running; see GET /admin/v1/keyring.",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let job = NewJob::new(KEYRING_ROTATION, Uuid::nil(), id, ROTATION_MAX_ATTEMPTS);
    jobs::bind_insert(sqlx::query(insert_jobs_sql!()), std::slice::from_ref(&job))
        .execute(&mut *conn)
        .await?;
    Ok((rotation, job.task()))
}

/// Runs rotation `id`: every kind, batch by batch, progress saved after each batch. Values
/// sealed meanwhile are already under the active key.
pub async fn rotate(pool: &PgPool, keyring: &Keyring, id: Uuid) -> Result<()> {
    let key_id: Option<String> = sqlx::query_scalar(
        "SELECT key_id FROM keyring_rotations WHERE id = $1 AND state = 'running'",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(key_id) = key_id else {
        return Ok(());
    };
    if key_id != keyring.active_key_id() {
        // The keyring changed under a running rotation: the new active key is its target.
        sqlx::query("UPDATE keyring_rotations SET key_id = $2 WHERE id = $1")
            .bind(id)
            .bind(keyring.active_key_id())
            .execute(pool)
            .await?;
    }
    for kind in KINDS {
        let mut cursor: Cursor = (Uuid::nil(), String::new());
        loop {
            let batch = (kind.rekey)(pool, keyring, cursor.clone(), BATCH).await?;
            if batch.rotated > 0 || batch.unreadable > 0 {
                sqlx::query(
                    "UPDATE keyring_rotations
                        SET rotated = CASE WHEN $3 = 0 THEN rotated ELSE jsonb_set(rotated, ARRAY[$2],
                                        to_jsonb(COALESCE((rotated ->> $2)::bigint, 0) + $3)) END,
                            unreadable = CASE WHEN $4 = 0 THEN unreadable ELSE jsonb_set(unreadable, ARRAY[$2],
                                        to_jsonb(COALESCE((unreadable ->> $2)::bigint, 0) + $4)) END
                      WHERE id = $1",
                )
                .bind(id)
                .bind(kind.name)
                .bind(batch.rotated as i64)
                .bind(batch.unreadable as i64)
                .execute(pool)
                .await?;
            }
            match batch.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
    }
    finish(pool, id, None).await
}

/// Closes rotation `id`: `finished`, or `failed` with `error`.
pub async fn finish<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: Uuid,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE keyring_rotations
            SET state = CASE WHEN $2::text IS NULL THEN 'finished' ELSE 'failed' END,
                error = $2, finished_at = now()
          WHERE id = $1 AND state = 'running'",
    )
    .bind(id)
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}
