//! From a row of one side to a record of the other: the key, the mapped fields, the content
//! hash, and whether the row is a tombstone; and back (bidirectional syncs write the target's
//! changes to the source through each mapping's inverse). Pure functions: a row that cannot be
//! mapped is a [`Rejected`] (a poison record, skipped and kept in the run's errors), never a
//! failed run.
//!
//! Records are in the target's field names (the *canonical* form both sides are compared in).
//! Outbound and bidirectional syncs carry the key and the mapped fields only.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{
    adapter::{Row, as_text, key_text},
    config::{CastType, SyncSpec, Transform, TransformType, Unmapped, Which},
};

/// A row ready for the other side.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The key columns' values as text; several columns as a JSON array of texts.
    pub key: String,
    pub data: Map<String, Value>,
    /// SHA-256 of `data`: equal hashes are unchanged rows, not rewritten.
    pub hash: Vec<u8>,
    /// The side marks the row deleted (its tombstone column, or a reported delete).
    pub deleted: bool,
}

/// A row that cannot be mapped, with why.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    pub key: Option<String>,
    pub error: String,
    pub row: Value,
}

/// The columns a configuration reads on `which` side, which that side must have: a missing one
/// fails the run before any row is read (schema drift), with its name.
pub fn required_columns(spec: &SyncSpec, which: Which) -> Vec<&str> {
    let side = which.spec(spec);
    let mut cols: Vec<&str> = side.key().iter().map(|k| k.as_str()).collect();
    cols.extend(side.tombstone.as_deref());
    cols.extend(which.cursor(spec).and_then(super::config::cursor_column));
    match which {
        Which::Source => cols.extend(spec.mappings().iter().map(|m| m.source.as_str())),
        Which::Target => cols.extend(spec.mappings().iter().map(|m| m.target.as_str())),
    }
    cols.sort_unstable();
    cols.dedup();
    cols
}

/// The key's names in the target's field names: the target integration's key, or (the store)
/// the source's key columns as the mappings name them.
pub fn canonical_key(spec: &SyncSpec) -> Vec<String> {
    if spec.target.is_store() {
        spec.mapped_source_key()
    } else {
        spec.target.key_names()
    }
}

/// The canonical fields of an outbound or bidirectional sync: the key and every mapping's
/// target.
pub fn canonical_fields(spec: &SyncSpec) -> Vec<String> {
    let mut fields = canonical_key(spec);
    for m in spec.mappings() {
        if !fields.iter().any(|f| f == m.target.as_str()) {
            fields.push(m.target.to_string());
        }
    }
    fields
}

/// The key text of a source row (`None` when a key column is null).
pub fn key_of(spec: &SyncSpec, row: &Map<String, Value>) -> Option<String> {
    let parts: Option<Vec<String>> = spec
        .source
        .key()
        .iter()
        .map(|k| row.get(k.as_str()).and_then(as_text))
        .collect();
    Some(key_text(&parts?))
}

/// A source row as a record in the target's names. `key` is the record key when the source
/// is the record store (whose rows carry it beside their data); its parts fill the target's
/// key fields.
pub fn map_row(spec: &SyncSpec, row: Map<String, Value>) -> Result<Record, Rejected> {
    let Some(key) = key_of(spec, &row) else {
        return Err(reject(None, "a key column is null".into(), row));
    };
    map_keyed(spec, key, row)
}

fn reject(key: Option<String>, error: String, row: Map<String, Value>) -> Rejected {
    Rejected {
        key,
        error,
        row: Value::Object(row),
    }
}

/// [`map_row`] for a row whose key is known.
pub fn map_keyed(
    spec: &SyncSpec,
    key: String,
    row: Map<String, Value>,
) -> Result<Record, Rejected> {
    let deleted = spec
        .source
        .tombstone
        .as_ref()
        .and_then(|t| row.get(t.as_str()))
        .is_some_and(is_set);
    let mappings = spec.mappings();
    let mut data = Map::new();
    if spec.unmapped != Some(Unmapped::Drop) {
        for (col, v) in &row {
            if !mappings.iter().any(|m| m.source.as_str() == col) {
                data.insert(col.clone(), v.clone());
            }
        }
    } else if spec.exchanges() {
        // The key travels with the record: under its mapped name (below), or its own; a store
        // record's key fills the target's key fields (a mapping may still override them).
        if spec.source.is_store() {
            let parts = super::adapter::key_parts(&key, spec.target.key().len());
            for (name, v) in spec.target.key().iter().zip(parts.into_iter().flatten()) {
                data.insert(name.to_string(), Value::String(v));
            }
        } else {
            for k in spec.source.key() {
                if !mappings.iter().any(|m| m.source.as_str() == k.as_str()) {
                    data.insert(
                        k.to_string(),
                        row.get(k.as_str()).cloned().unwrap_or_default(),
                    );
                }
            }
        }
    }
    for m in mappings {
        let value = row.get(m.source.as_str()).cloned().unwrap_or(Value::Null);
        let value = match &m.transform {
            Some(t) => match apply(t, value) {
                Ok(v) => v,
                Err(e) => {
                    let error = format!("`{}` → `{}`: {e}", m.source.as_str(), m.target.as_str());
                    return Err(reject(Some(key), error, row));
                }
            },
            None => value,
        };
        data.insert(m.target.as_str().to_owned(), value);
    }
    let hash = hash(&data);
    Ok(Record {
        key,
        data,
        hash,
        deleted,
    })
}

/// A target row as a record: its canonical fields, its key, whether it is deleted.
pub fn target_record(spec: &SyncSpec, row: &Row) -> Option<Record> {
    let parts = super::adapter::key_values(row, &spec.target.key_names())?;
    let deleted = spec
        .target
        .tombstone
        .as_ref()
        .and_then(|t| row.get(t.as_str()))
        .is_some_and(is_set);
    let data: Map<String, Value> = canonical_fields(spec)
        .into_iter()
        .map(|f| {
            let v = row.get(&f).cloned().unwrap_or(Value::Null);
            (f, v)
        })
        .collect();
    Some(Record {
        key: key_text(&parts),
        hash: hash(&data),
        data,
        deleted,
    })
}

/// A canonical record written back to the source: each mapping's inverse (renames undone,
/// text trimmed, lookups read backwards), in the source's names. Key fields come back under
/// the source key's names.
pub fn to_source(spec: &SyncSpec, data: &Map<String, Value>) -> Result<Row, String> {
    let mut row = Row::new();
    for (k, t) in spec.source.key().iter().zip(canonical_key(spec)) {
        if let Some(v) = data.get(&t) {
            row.insert(k.to_string(), v.clone());
        }
    }
    for m in spec.mappings() {
        let v = data.get(m.target.as_str()).cloned().unwrap_or(Value::Null);
        let v = match &m.transform {
            None => v,
            Some(t) => match t.kind {
                TransformType::Trim => apply(t, v)?,
                TransformType::Cast => v,
                TransformType::Lookup => {
                    let table = t.table.as_ref().map(|t| t.iter()).into_iter().flatten();
                    let found = table
                        .into_iter()
                        .find(|(_, to)| super::values::same(to, &v))
                        .map(|(from, _)| Value::String(from.clone()));
                    match (found, v.is_null()) {
                        (Some(from), _) => from,
                        (None, true) => Value::Null,
                        (None, false) => {
                            return Err(format!(
                                "`{v}` is not a value of `{}`'s lookup table",
                                m.target.as_str()
                            ));
                        }
                    }
                }
                TransformType::Constant | TransformType::Default => continue,
            },
        };
        row.insert(m.source.to_string(), v);
    }
    Ok(row)
}

/// A tombstone column marks a row deleted when it is set: not null, not `false`, not `0`.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        _ => true,
    }
}

/// SHA-256 of the record's JSON (keys in a fixed order: serde_json's map is sorted).
pub fn hash(data: &Map<String, Value>) -> Vec<u8> {
    let text = serde_json::to_vec(data).expect("a JSON map serialises");
    Sha256::digest(text).to_vec()
}

fn apply(t: &Transform, v: Value) -> Result<Value, String> {
    match t.kind {
        TransformType::Trim => Ok(match v {
            Value::String(s) => Value::String(s.trim().to_owned()),
            other => other,
        }),
        TransformType::Constant => Ok(t.value.clone().unwrap_or(Value::Null)),
        TransformType::Default => Ok(if v.is_null() {
            t.value.clone().unwrap_or(Value::Null)
        } else {
            v
        }),
        TransformType::Lookup => {
            let Some(k) = as_text(&v) else {
                return Ok(Value::Null);
            };
            t.table
                .as_ref()
                .and_then(|table| table.get(&k))
                .cloned()
                .ok_or_else(|| format!("`{k}` is not in the lookup table"))
        }
        TransformType::Cast => cast(v, t.to.unwrap_or(CastType::String)),
    }
}

fn cast(v: Value, to: CastType) -> Result<Value, String> {
    if v.is_null() {
        return Ok(v);
    }
    let text = as_text(&v).unwrap_or_default();
    let fail = || format!("`{text}` is not a valid {}", type_name(to));
    match to {
        CastType::String => Ok(Value::String(text)),
        CastType::Integer => match &v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v),
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
                _ => Err(fail()),
            },
            Value::Bool(b) => Ok(Value::from(i64::from(*b))),
            _ => text
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| fail()),
        },
        CastType::Number => match &v {
            Value::Number(_) => Ok(v),
            _ => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(fail),
        },
        CastType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "t" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "n" | "f" => Ok(Value::Bool(false)),
            _ => Err(fail()),
        },
    }
}

fn type_name(t: CastType) -> &'static str {
    match t {
        CastType::String => "string",
        CastType::Integer => "integer",
        CastType::Number => "number",
        CastType::Boolean => "boolean",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(extra: Value) -> SyncSpec {
        let mut base = json!({
            "name": "Equipment", "entity": "equipment", "mode": "full",
            "source": {"integration_id": uuid::Uuid::nil(), "table": "equipment", "key": ["id"],
                       "tombstone": "deleted"},
            "target": {"store": "switchyard"},
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn mappings_rename_transform_and_pass_the_rest() {
        let s = spec(json!({"mappings": [
            {"source": "name", "target": "title", "transform": {"type": "trim"}},
            {"source": "qty", "target": "quantity", "transform": {"type": "cast", "to": "integer"}},
            {"source": "status", "target": "state",
             "transform": {"type": "lookup", "table": {"A": "active", "R": "retired"}}},
            {"source": "site", "target": "site", "transform": {"type": "default", "value": "main"}},
        ]}));
        let r = map_row(
            &s,
            row(
                json!({"id": 7, "name": "  Press ", "qty": "12", "status": "A", "site": null,
                       "deleted": false, "note": "x"}),
            ),
        )
        .unwrap();
        assert_eq!(r.key, "7");
        assert!(!r.deleted);
        assert_eq!(
            Value::Object(r.data.clone()),
            json!({"id": 7, "title": "Press", "quantity": 12, "state": "active", "site": "main",
                   "deleted": false, "note": "x"})
        );
        assert_eq!(r.hash, hash(&r.data));
        // A value outside the lookup table is a poison record, with the mapping named.
        let bad = map_row(&s, row(json!({"id": 8, "status": "Z"}))).unwrap_err();
        assert_eq!(bad.key.as_deref(), Some("8"));
        assert!(bad.error.contains("`status` → `state`"), "{}", bad.error);
        let bad = map_row(&s, row(json!({"id": 9, "qty": "twelve", "status": "A"}))).unwrap_err();
        assert!(bad.error.contains("not a valid integer"), "{}", bad.error);
    }

    #[test]
    fn keys_tombstones_and_dropped_columns() {
        let s = spec(json!({"unmapped": "drop",
                            "mappings": [{"source": "name", "target": "name"}]}));
        let r = map_row(&s, row(json!({"id": "A-1", "name": "n", "deleted": 1}))).unwrap();
        assert!(r.deleted);
        assert_eq!(Value::Object(r.data), json!({"name": "n"}));
        assert!(map_row(&s, row(json!({"id": null, "name": "n"}))).is_err());
        let mut s2 = spec(json!({}));
        s2.source
            .key
            .as_mut()
            .unwrap()
            .push(super::super::config::Identifier::new("line").unwrap());
        assert_eq!(
            key_of(&s2, &row(json!({"id": 1, "line": "b"}))).unwrap(),
            r#"["1","b"]"#
        );
        // The same data hashes the same whatever order its columns came in.
        assert_eq!(
            hash(&row(json!({"a": 1, "b": 2}))),
            hash(&row(json!({"b": 2, "a": 1})))
        );
    }
}
