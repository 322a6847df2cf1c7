//! Re-encryption of an endpoint's sealed values with the active master key (keyring
//! rotation, `crate::keyring`): the signing secret, the secrets kept after a rotation, the
//! custom headers, the auth and the ed25519 key. Deleted endpoints' rows are included: they
//! still hold ciphertext.

use base64::{Engine, engine::general_purpose::STANDARD};
use futures::future::BoxFuture;
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use super::credentials::{PreviousSecret, aad};
use crate::{
    crypto::Keyring,
    error::Result,
    keyring::{Batch, Cursor, SealedKind, reseal},
};

macro_rules! column_kind {
    ($name:literal, $purpose:literal) => {
        SealedKind {
            name: $name,
            count_sql: concat!(
                "SELECT ",
                $purpose,
                "_key_id, count(*) FROM webhook_endpoints
                  WHERE ",
                $purpose,
                "_key_id IS NOT NULL GROUP BY 1"
            ),
            rekey: |pool, keyring, after, limit| {
                Box::pin(rekey_column(pool, keyring, $purpose, after, limit))
            },
        }
    };
}

pub const SECRET: SealedKind = column_kind!("webhook_endpoint.secret", "secret");
pub const HEADERS: SealedKind = column_kind!("webhook_endpoint.headers", "headers");
pub const AUTH: SealedKind = column_kind!("webhook_endpoint.auth", "auth");
pub const ED25519: SealedKind = column_kind!("webhook_endpoint.ed25519", "ed25519");
pub const CONFIG: SealedKind = column_kind!("webhook_endpoint.config", "config");

pub const PREVIOUS_SECRETS: SealedKind = SealedKind {
    name: "webhook_endpoint.previous_secret",
    count_sql: "SELECT p ->> 'key_id', count(*)
                  FROM webhook_endpoints, jsonb_array_elements(previous_secrets) p GROUP BY 1",
    rekey: rekey_previous,
};

/// Moves up to `limit` values of column pair `<purpose>_key_id` / `<purpose>_ciphertext`
/// after `after` to the active key; each row changes only if it still holds what was read.
async fn rekey_column(
    pool: &PgPool,
    keyring: &Keyring,
    purpose: &'static str,
    after: Cursor,
    limit: i64,
) -> Result<Batch> {
    let rows: Vec<(Uuid, Uuid, String, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, tenant_id, {purpose}_key_id, {purpose}_ciphertext FROM webhook_endpoints
          WHERE {purpose}_key_id IS NOT NULL AND {purpose}_key_id <> $1 AND id > $2
          ORDER BY id LIMIT $3"
    )))
    .bind(keyring.active_key_id())
    .bind(after.0)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut batch = Batch {
        next: (rows.len() as i64 == limit).then(|| (rows[rows.len() - 1].0, String::new())),
        ..Batch::default()
    };
    let (mut ids, mut kids, mut cts, mut old_kids, mut old_cts) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (id, tenant_id, key_id, sealed) in rows {
        match reseal(keyring, &key_id, &sealed, &aad(purpose, tenant_id, id)) {
            Some((kid, ct)) => {
                ids.push(id);
                kids.push(kid);
                cts.push(ct);
                old_kids.push(key_id);
                old_cts.push(sealed);
            }
            None => batch.unreadable += 1,
        }
    }
    if !ids.is_empty() {
        batch.rotated = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_endpoints e
                SET {purpose}_key_id = u.kid, {purpose}_ciphertext = u.ct
               FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::text[], $5::bytea[])
                    AS u(id, kid, ct, old_kid, old_ct)
              WHERE e.id = u.id AND e.{purpose}_key_id = u.old_kid
                AND e.{purpose}_ciphertext = u.old_ct"
        )))
        .bind(&ids)
        .bind(&kids)
        .bind(&cts)
        .bind(&old_kids)
        .bind(&old_cts)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(batch)
}

fn rekey_previous<'a>(
    pool: &'a PgPool,
    keyring: &'a Keyring,
    after: Cursor,
    limit: i64,
) -> BoxFuture<'a, Result<Batch>> {
    Box::pin(async move {
        type Row = (Uuid, Uuid, serde_json::Value);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, tenant_id, previous_secrets FROM webhook_endpoints
              WHERE id > $2 AND EXISTS (SELECT 1 FROM jsonb_array_elements(previous_secrets) p
                                         WHERE p ->> 'key_id' <> $1)
              ORDER BY id LIMIT $3",
        )
        .bind(keyring.active_key_id())
        .bind(after.0)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        let mut batch = Batch {
            next: (rows.len() as i64 == limit).then(|| (rows[rows.len() - 1].0, String::new())),
            ..Batch::default()
        };
        for (id, tenant_id, old) in rows {
            // Compared as read (jsonb), so a concurrent secret rotation wins.
            let Ok(mut new) = serde_json::from_value::<Vec<PreviousSecret>>(old.clone()) else {
                batch.unreadable += 1;
                continue;
            };
            let mut moved = 0;
            for p in new
                .iter_mut()
                .filter(|p| p.key_id != keyring.active_key_id())
            {
                let resealed = STANDARD
                    .decode(&p.sealed)
                    .ok()
                    .and_then(|ct| reseal(keyring, &p.key_id, &ct, &aad("secret", tenant_id, id)));
                match resealed {
                    Some((kid, ct)) => {
                        p.key_id = kid;
                        p.sealed = STANDARD.encode(ct);
                        moved += 1;
                    }
                    None => batch.unreadable += 1,
                }
            }
            if moved == 0 {
                continue;
            }
            let n = sqlx::query(
                "UPDATE webhook_endpoints SET previous_secrets = $2
                  WHERE id = $1 AND previous_secrets = $3",
            )
            .bind(id)
            .bind(Json(&new))
            .bind(&old)
            .execute(pool)
            .await?
            .rows_affected();
            if n == 1 {
                batch.rotated += moved;
            }
        }
        Ok(batch)
    })
}
