//! Per-record sync links of outbound and bidirectional syncs: what both sides last agreed on
//! (the base of three-way conflict detection) and each side's version then. A row the sync itself wrote reads back equal to its base and is skipped
//! (echo suppression).

use std::collections::HashMap;

use serde_json::Value;
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use super::adapter::Row;
use crate::error::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    /// The record both sides agreed on (`None`: deleted on both).
    pub base: Option<Row>,
    pub source_version: Option<String>,
    pub target_version: Option<String>,
}

type Raw = (String, Option<Json<Row>>, Option<String>, Option<String>);

/// The links of `keys`.
pub async fn load(
    conn: &mut PgConnection,
    configuration_id: Uuid,
    keys: &[String],
) -> Result<HashMap<String, Link>> {
    let rows: Vec<Raw> = sqlx::query_as(
        "SELECT key, base, source_version, target_version FROM sync_links
          WHERE configuration_id = $1 AND key = ANY($2)",
    )
    .bind(configuration_id)
    .bind(keys)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, base, source_version, target_version)| {
            let link = Link {
                base: base.map(|b| b.0),
                source_version,
                target_version,
            };
            (key, link)
        })
        .collect())
}

/// Writes links (one per key) on the caller's transaction.
pub async fn save(
    conn: &mut PgConnection,
    configuration_id: Uuid,
    run_id: Uuid,
    links: &[(String, Link)],
) -> Result<()> {
    if links.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = links.iter().map(|(k, _)| k.as_str()).collect();
    let bases: Vec<Json<Value>> = links
        .iter()
        .map(|(_, l)| Json(l.base.clone().map_or(Value::Null, Value::Object)))
        .collect();
    let sv: Vec<Option<&str>> = links
        .iter()
        .map(|(_, l)| l.source_version.as_deref())
        .collect();
    let tv: Vec<Option<&str>> = links
        .iter()
        .map(|(_, l)| l.target_version.as_deref())
        .collect();
    sqlx::query(
        "INSERT INTO sync_links AS l (configuration_id, key, base, source_version, target_version,
                                      last_run_id, synced_at)
         SELECT $1, i.key, NULLIF(i.base, 'null'::jsonb), i.sv, i.tv, $6, now()
           FROM UNNEST($2::text[], $3::jsonb[], $4::text[], $5::text[]) AS i(key, base, sv, tv)
         ON CONFLICT (configuration_id, key) DO UPDATE
            SET base = excluded.base, source_version = excluded.source_version,
                target_version = excluded.target_version, last_run_id = excluded.last_run_id,
                synced_at = excluded.synced_at",
    )
    .bind(configuration_id)
    .bind(&keys)
    .bind(&bases)
    .bind(&sv)
    .bind(&tv)
    .bind(run_id)
    .execute(conn)
    .await?;
    Ok(())
}
