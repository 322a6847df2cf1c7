//! The sync API's refusals: every rule of a configuration that no schema states answers `400`
//! with the offending parameter, and writes nothing.

use serde_json::{Value, json};
use switchyard_tests::{TestOptions, problem};

use crate::sync::{integration, setup};

#[tokio::test]
async fn bad_configurations_are_refused_with_the_offending_parameter() {
    let (app, key) = setup(TestOptions::no_worker()).await;
    let sql = integration(&app, &key, "postgres", "postgres://erp.example/erp").await;
    let http: Value = app
        .partner_post(
            &key,
            "/v1/integrations",
            json!({"name": "CRM", "code": "crm", "type": "crm", "provider": "http",
                   "base_url": "https://crm.example"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let valid = json!({
        "name": "Equipment", "entity": "equipment", "mode": "incremental",
        "source": {"integration_id": sql, "table": "erp.equipment", "key": ["id"]},
        "target": {"store": "switchyard"},
        "cursor": {"strategy": "timestamp", "column": "updated_at"},
    });
    let with = |pointer: &str, value: Value| {
        let mut body = valid.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    let mut full_with_cursor = with("/mode", json!("full"));
    full_with_cursor["cursor"] = json!({"strategy": "id", "column": "id"});
    let mut no_cursor = valid.clone();
    no_cursor.as_object_mut().unwrap().remove("cursor");
    let mapped = |mappings: Value| {
        let mut body = valid.clone();
        body["mappings"] = mappings;
        body
    };
    let two_targets =
        mapped(json!([{"source": "a", "target": "x"}, {"source": "b", "target": "x"}]));
    let cast_without_type =
        mapped(json!([{"source": "a", "target": "x", "transform": {"type": "cast"}}]));
    let lookup_without_table =
        mapped(json!([{"source": "a", "target": "x", "transform": {"type": "lookup"}}]));
    let scheduled = |schedule: Value| {
        let mut body = valid.clone();
        body["schedule"] = schedule;
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no cursor", no_cursor, "cursor"),
        ("a cursor on a full sync", full_with_cursor, "cursor"),
        (
            "lag on an id cursor",
            with(
                "/cursor",
                json!({"strategy": "id", "column": "id", "lag_seconds": 5}),
            ),
            "cursor",
        ),
        (
            "a key column twice",
            with("/source/key", json!(["id", "id"])),
            "source.key",
        ),
        (
            "no key column",
            with("/source/key", json!([])),
            "source.key",
        ),
        (
            "five key columns",
            with("/source/key", json!(["a", "b", "c", "d", "e"])),
            "source.key",
        ),
        (
            "201 mappings",
            mapped(json!(
                (0..201)
                    .map(|i| json!({"source": "a", "target": format!("f{i}")}))
                    .collect::<Vec<_>>()
            )),
            "mappings",
        ),
        (
            "a missing integration",
            with(
                "/source/integration_id",
                json!("01900000-0000-7000-8000-000000000000"),
            ),
            "source.integration_id",
        ),
        (
            "an HTTP integration",
            with("/source/integration_id", http["id"].clone()),
            "source.integration_id",
        ),
        (
            "two mappings to one field",
            two_targets,
            "mappings[1].target",
        ),
        (
            "a cast without a type",
            cast_without_type,
            "mappings[0].transform",
        ),
        (
            "a lookup without a table",
            lookup_without_table,
            "mappings[0].transform",
        ),
        (
            "an interval and a cron",
            scheduled(json!({"interval_seconds": 60, "cron": "0 * * * *"})),
            "schedule",
        ),
        ("an empty schedule", scheduled(json!({})), "schedule"),
        (
            "a bad cron",
            scheduled(json!({"cron": "61 * * * *"})),
            "schedule",
        ),
        (
            "an unknown time zone",
            scheduled(json!({"cron": "0 2 * * *", "timezone": "Mars/Olympus"})),
            "schedule",
        ),
        (
            "a time zone for an interval",
            scheduled(json!({"interval_seconds": 60, "timezone": "UTC"})),
            "schedule",
        ),
    ];
    for (what, body, param) in cases {
        let r = app
            .partner_post(&key, "/v1/sync/configurations", body)
            .await;
        assert_eq!(r.status(), 400, "{what}");
        let p = problem(r, 400, "parameter_invalid", Some(param)).await;
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{what}");
    }
    // What is not built is refused, not ignored.
    for (field, value) in [
        ("conflict_strategy", json!("source_wins")),
        ("direction", json!("bidirectional")),
    ] {
        let r = app
            .partner_post(
                &key,
                "/v1/sync/configurations",
                with_field(&valid, field, value),
            )
            .await;
        assert_eq!(r.status(), 400, "{field}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM sync_configurations").await,
        0
    );

    // A change is checked as a whole: a cursor cannot be given to a full sync.
    let created = app
        .partner_post(
            &key,
            "/v1/sync/configurations",
            with("/mode", json!("full")),
        )
        .await;
    assert_eq!(created.status(), 400, "the valid body still has its cursor");
    let mut full = with("/mode", json!("full"));
    full.as_object_mut().unwrap().remove("cursor");
    let created: Value = app
        .partner_post(&key, "/v1/sync/configurations", full)
        .await
        .json()
        .await
        .unwrap();
    let path = format!(
        "/v1/sync/configurations/{}",
        created["id"].as_str().unwrap()
    );
    let r = app
        .partner_patch(
            &key,
            &path,
            json!({"cursor": {"strategy": "id", "column": "id"}}),
        )
        .await;
    problem(r, 400, "parameter_invalid", Some("cursor")).await;
    let r = app
        .partner_patch(&key, &path, json!({"schedule": {"cron": "nope"}}))
        .await;
    problem(r, 400, "parameter_invalid", Some("schedule")).await;
    let stored = app.partner_get(&key, &path).await;
    assert_eq!(stored, created, "the refused changes changed nothing");
    assert!(
        stored["schedule"].is_null() && stored["cursor"].is_null(),
        "{stored}"
    );
}

fn with_field(body: &Value, field: &str, value: Value) -> Value {
    let mut body = body.clone();
    body[field] = value;
    body
}
