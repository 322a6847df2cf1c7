//! JSON Schemas of event types: checked when a tenant saves one (it must compile, with no
//! remote references), and applied to every event posted with that type. Compiled validators
//! are cached per (tenant, mode, type, version), so a post costs one validation, not a compile.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    error::{Error, Result},
    mode::Mode,
};

/// Most compiled schemas kept; past it the cache starts over (schemas are few per tenant).
const CACHE_CAPACITY: usize = 4096;

/// Compiles a schema. Remote `$ref`s cannot be resolved (no retriever is built in: a schema
/// never makes the server fetch a URL), and `pattern`s use a regex engine without
/// backtracking, so no schema can make validation slow.
fn compile(schema: &Value) -> std::result::Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map_err(|e| e.to_string())
}

/// The check made when a schema is saved: it compiles. Returns a `400 schema_invalid`
/// otherwise, saying why.
pub fn check(schema: &str) -> Result<()> {
    let value: Value = serde_json::from_str(schema).map_err(|e| Error::Internal(e.into()))?;
    compile(&value).map(|_| ()).map_err(|why| {
        Error::invalid(
            "schema_invalid",
            "schema",
            format!("`schema` is not a usable JSON Schema: {why}."),
        )
    })
}

type Key = (Uuid, Mode, String);
/// A compiled schema and the version (`updated_at`) it was compiled from.
type Compiled = (DateTime<Utc>, Arc<jsonschema::Validator>);

static CACHE: LazyLock<Mutex<HashMap<Key, Compiled>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Validates `data` against the schema of `event_type` as stored at `version` (the type's
/// `updated_at`). The first violation is a `422 schema_mismatch` whose `param` is its JSON
/// pointer in the request body (`/data/amount`).
pub fn validate(
    tenant_id: Uuid,
    mode: Mode,
    event_type: &str,
    version: DateTime<Utc>,
    schema: &Value,
    data: &Value,
) -> Result<()> {
    let key = (tenant_id, mode, event_type.to_owned());
    let cached = {
        let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&key)
            .filter(|(v, _)| *v == version)
            .map(|(_, validator)| validator.clone())
    };
    let validator = match cached {
        Some(v) => v,
        None => {
            let compiled = Arc::new(compile(schema).map_err(|why| {
                Error::Internal(anyhow::anyhow!(
                    "the stored schema of `{event_type}` does not compile: {why}"
                ))
            })?);
            let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(key, (version, compiled.clone()));
            compiled
        }
    };
    match validator.iter_errors(data).next() {
        None => Ok(()),
        Some(error) => {
            let pointer = error.instance_path().to_string();
            Err(Error::Unprocessable {
                code: "schema_mismatch",
                param: Some(format!("/data{pointer}")),
                detail: format!(
                    "`data` does not match the schema of `{event_type}`: at `/data{pointer}`, {error}."
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mismatch(schema: Value, data: Value) -> Option<(String, String)> {
        let at = Utc::now();
        match validate(Uuid::now_v7(), Mode::Live, "t.x", at, &schema, &data) {
            Ok(()) => None,
            Err(Error::Unprocessable { param, detail, .. }) => Some((param.unwrap(), detail)),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_first_violation_is_named_by_its_pointer() {
        let schema = json!({
            "type": "object",
            "required": ["id", "lines"],
            "properties": {
                "id": {"type": "string"},
                "lines": {"type": "array", "items": {
                    "type": "object", "properties": {"qty": {"type": "integer", "minimum": 1}}}}
            }
        });
        assert_eq!(
            mismatch(schema.clone(), json!({"id": "n-1", "lines": [{"qty": 2}]})),
            None
        );
        let (param, detail) = mismatch(
            schema.clone(),
            json!({"id": "n-1", "lines": [{"qty": 2}, {"qty": 0}]}),
        )
        .unwrap();
        assert_eq!(param, "/data/lines/1/qty");
        assert!(
            detail.contains("minimum") || detail.contains("less than"),
            "{detail}"
        );
        let (param, _) = mismatch(schema, json!({"lines": []})).unwrap();
        assert_eq!(param, "/data");
    }

    #[test]
    fn schemas_that_cannot_work_are_refused_when_saved() {
        assert!(check(r#"{"type": "object"}"#).is_ok());
        for bad in [
            r#"{"type": "objekt"}"#,
            r#"{"$ref": "https://example.com/schema.json"}"#,
            r#"{"type": "string", "pattern": "(unclosed"}"#,
            r#"{"minimum": "one"}"#,
        ] {
            match check(bad) {
                Err(Error::Invalid { code, param, .. }) => {
                    assert_eq!((code, param.as_deref()), ("schema_invalid", Some("schema")))
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
