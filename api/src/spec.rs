//! The OpenAPI document as served: poem-openapi's, plus what it cannot say by itself.
//!
//! Request bodies refuse fields they do not know (`deny_unknown_fields`), so every object a
//! request body can contain gets `additionalProperties: false`; objects composed with `allOf`
//! (the variants of a tagged union) are merged into one object first, since
//! `additionalProperties` only sees the properties next to it.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// OpenAPI links: how the id a creation returns flows into the operations on it (clients and
/// stateful testers follow them). `(from, status, to, path parameters)`, each parameter taken
/// from the response body's `id` or from the creating request's own path.
type Link = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const LINKS: &[Link] = &[
    (
        "createOrder",
        "201",
        "getOrder",
        &[("id", "$response.body#/id")],
    ),
    (
        "createOrder",
        "201",
        "updateOrder",
        &[("id", "$response.body#/id")],
    ),
    (
        "createOrder",
        "201",
        "changeOrderStatus",
        &[("id", "$response.body#/id")],
    ),
    (
        "createOrder",
        "201",
        "cancelOrder",
        &[("id", "$response.body#/id")],
    ),
    (
        "createOrder",
        "201",
        "listOrderEvents",
        &[("id", "$response.body#/id")],
    ),
    (
        "createWebhookEndpoint",
        "201",
        "getWebhookEndpoint",
        &[("id", "$response.body#/id")],
    ),
    (
        "createWebhookEndpoint",
        "201",
        "updateWebhookEndpoint",
        &[("id", "$response.body#/id")],
    ),
    (
        "createWebhookEndpoint",
        "201",
        "deleteWebhookEndpoint",
        &[("id", "$response.body#/id")],
    ),
    (
        "createWebhookEndpoint",
        "201",
        "testWebhookEndpoint",
        &[("id", "$response.body#/id")],
    ),
    (
        "createWebhookEndpoint",
        "201",
        "createWebhookReplay",
        &[("id", "$response.body#/id")],
    ),
    (
        "createWebhookEndpoint",
        "201",
        "rotateWebhookEndpointSecret",
        &[("id", "$response.body#/id")],
    ),
    (
        "testWebhookEndpoint",
        "200",
        "getWebhookDelivery",
        &[("id", "$response.body#/delivery_id")],
    ),
    (
        "testWebhookEndpoint",
        "200",
        "retryWebhookDelivery",
        &[("id", "$response.body#/delivery_id")],
    ),
    (
        "createWebhookReplay",
        "201",
        "getWebhookReplay",
        &[("id", "$response.body#/id")],
    ),
    (
        "createWebhookReplay",
        "201",
        "cancelWebhookReplay",
        &[("id", "$response.body#/id")],
    ),
    (
        "createOwnApiKey",
        "201",
        "getOwnApiKey",
        &[("id", "$response.body#/id")],
    ),
    (
        "createOwnApiKey",
        "201",
        "updateOwnApiKey",
        &[("id", "$response.body#/id")],
    ),
    (
        "createOwnApiKey",
        "201",
        "rollOwnApiKey",
        &[("id", "$response.body#/id")],
    ),
    (
        "createOwnApiKey",
        "201",
        "revokeOwnApiKey",
        &[("id", "$response.body#/id")],
    ),
    (
        "createEventType",
        "201",
        "updateEventType",
        &[("name", "$response.body#/name")],
    ),
    (
        "createTenant",
        "201",
        "getTenant",
        &[("tenant_id", "$response.body#/id")],
    ),
    (
        "createTenant",
        "201",
        "updateTenant",
        &[("tenant_id", "$response.body#/id")],
    ),
    (
        "createTenant",
        "201",
        "createApiKey",
        &[("tenant_id", "$response.body#/id")],
    ),
    (
        "createApiKey",
        "201",
        "rollApiKey",
        &[
            ("tenant_id", "$request.path.tenant_id"),
            ("id", "$response.body#/id"),
        ],
    ),
    (
        "createApiKey",
        "201",
        "updateApiKey",
        &[
            ("tenant_id", "$request.path.tenant_id"),
            ("id", "$response.body#/id"),
        ],
    ),
    (
        "createApiKey",
        "201",
        "revokeApiKey",
        &[
            ("tenant_id", "$request.path.tenant_id"),
            ("id", "$response.body#/id"),
        ],
    ),
];

/// Adds [`LINKS`] to the responses they start from.
pub fn add_links(spec: &mut Value) {
    let Some(paths) = spec["paths"].as_object_mut() else {
        return;
    };
    for (from, status, to, params) in LINKS {
        let op = paths
            .values_mut()
            .flat_map(|ops| ops.as_object_mut().into_iter().flat_map(|o| o.values_mut()))
            .find(|op| op["operationId"] == *from);
        let Some(response) = op.and_then(|op| op["responses"].get_mut(*status)) else {
            continue;
        };
        let parameters: Map<String, Value> = params
            .iter()
            .map(|(name, value)| (name.to_string(), Value::from(*value)))
            .collect();
        response["links"][*to] = json!({ "operationId": to, "parameters": parameters });
    }
}

/// Closes every object reachable from a request body.
pub fn close_request_objects(spec: &mut Value) {
    let mut roots = Vec::new();
    if let Some(paths) = spec["paths"].as_object() {
        for ops in paths.values() {
            for op in ops.as_object().into_iter().flat_map(|o| o.values()) {
                if let Some(content) = op["requestBody"]["content"].as_object() {
                    for media in content.values() {
                        roots.push(media["schema"].clone());
                    }
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut pending: Vec<String> = Vec::new();
    for mut root in roots {
        close(&mut root, &mut pending);
    }
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(mut schema) = spec["components"]["schemas"].get(&name).cloned() else {
            continue;
        };
        merge_all_of(&mut schema, &spec["components"]["schemas"]);
        close(&mut schema, &mut pending);
        spec["components"]["schemas"][&name] = schema;
    }
}

/// Marks `schema` (and what it contains) closed; collects the components it refers to.
fn close(schema: &mut Value, pending: &mut Vec<String>) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        if let Some(name) = r.strip_prefix("#/components/schemas/") {
            pending.push(name.to_owned());
        }
        return;
    }
    if obj.contains_key("properties") && !obj.contains_key("additionalProperties") {
        obj.insert("additionalProperties".into(), Value::Bool(false));
    }
    for key in ["properties"] {
        if let Some(props) = obj.get_mut(key).and_then(Value::as_object_mut) {
            for p in props.values_mut() {
                close(p, pending);
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(inner) = obj.get_mut(key).filter(|v| v.is_object()) {
            close(inner, pending);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = obj.get_mut(key).and_then(Value::as_array_mut) {
            for s in list {
                close(s, pending);
            }
        }
    }
}

/// `allOf` of objects only (inline or referenced) becomes one object with all their
/// properties; anything else is left as it is.
fn merge_all_of(schema: &mut Value, components: &Value) {
    let Some(parts) = schema.get("allOf").and_then(Value::as_array) else {
        return;
    };
    let resolved: Vec<Value> = parts
        .iter()
        .map(|p| match p.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix("#/components/schemas/")
                .and_then(|n| components.get(n))
                .cloned()
                .unwrap_or(Value::Null),
            None => p.clone(),
        })
        .collect();
    if !resolved.iter().all(|p| p.get("properties").is_some()) {
        return;
    }
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    for p in &resolved {
        if let Some(props) = p["properties"].as_object() {
            properties.extend(props.clone());
        }
        for r in p["required"].as_array().into_iter().flatten() {
            if !required.contains(r) {
                required.push(r.clone());
            }
        }
    }
    let mut merged = Map::new();
    merged.insert("type".into(), Value::from("object"));
    if let Some(d) = schema.get("description") {
        merged.insert("description".into(), d.clone());
    }
    merged.insert("required".into(), Value::Array(required));
    merged.insert("properties".into(), Value::Object(properties));
    *schema = Value::Object(merged);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn request_objects_are_closed_and_unions_merged() {
        let mut spec = json!({
            "paths": { "/x": { "post": { "requestBody": { "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/In" } } } } } } },
            "components": { "schemas": {
                "In": { "type": "object", "properties": {
                    "auth": { "$ref": "#/components/schemas/Auth_Basic" },
                    "list": { "type": "array", "items": { "$ref": "#/components/schemas/Item" } }
                } },
                "Auth_Basic": { "allOf": [
                    { "type": "object", "required": ["type"], "properties": { "type": { "enum": ["basic"] } } },
                    { "$ref": "#/components/schemas/Basic" }
                ] },
                "Basic": { "type": "object", "required": ["user"], "properties": { "user": { "type": "string" } } },
                "Item": { "type": "object", "properties": { "a": { "type": "string" } } },
                "Out": { "type": "object", "properties": { "b": { "type": "string" } } }
            } }
        });
        close_request_objects(&mut spec);
        let c = &spec["components"]["schemas"];
        assert_eq!(c["In"]["additionalProperties"], false);
        assert_eq!(c["Item"]["additionalProperties"], false);
        assert_eq!(c["Auth_Basic"]["additionalProperties"], false);
        assert_eq!(c["Auth_Basic"]["required"], json!(["type", "user"]));
        assert!(
            c["Out"].get("additionalProperties").is_none(),
            "responses stay open"
        );
    }

    #[test]
    fn every_link_joins_documented_operations() {
        let spec: Value = serde_json::from_str(&crate::spec_json()).unwrap();
        let ids: BTreeSet<&str> = spec["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|ops| ops.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        for (from, _, to, _) in LINKS {
            assert!(ids.contains(from) && ids.contains(to), "{from} → {to}");
        }
    }
}
