//! The sync API: every rule of a configuration that no schema states answers `400` with the
//! offending parameter and writes nothing; `delta` previews a run, `stats` sums runs up.

use serde_json::{Value, json};
use sqlx::Executor;
use switchyard_tests::{TestOptions, problem};

use crate::sync::{configure, erp, full_sync, integration, setup};

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
    let both = |extra: Value| {
        let mut body = with_field(&valid, "direction", json!("bidirectional"));
        body["mappings"] = json!([{"source": "name", "target": "name"}]);
        body["delete_policy"] = json!("hard");
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let outbound = json!({
        "name": "Out", "entity": "equipment", "direction": "outbound", "mode": "incremental",
        "source": {"store": "switchyard"},
        "target": {"integration_id": sql, "table": "erp.equipment", "key": ["id"]},
        "mappings": [{"source": "name", "target": "name"}],
    });
    let scheduled = |schedule: Value| {
        let mut body = valid.clone();
        body["schedule"] = schedule;
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a conflict strategy on a one-way sync",
            with_field(&valid, "conflict_strategy", json!("source_wins")),
            "conflict_strategy",
        ),
        (
            "a bidirectional sync without mappings",
            with_field(&valid, "direction", json!("bidirectional")),
            "mappings",
        ),
        (
            "a bidirectional sync passing unmapped fields",
            both(json!({"unmapped": "pass"})),
            "unmapped",
        ),
        (
            "a one-way transform both ways",
            both(json!({"mappings": [{"source": "a", "target": "b",
                                       "transform": {"type": "constant", "value": 1}}]})),
            "mappings[0].transform",
        ),
        (
            "a lookup that cannot be read backwards",
            both(json!({"mappings": [{"source": "a", "target": "b",
                                       "transform": {"type": "lookup", "table": {"A": 1, "B": 1}}}]})),
            "mappings[0].transform",
        ),
        (
            "newest wins without the source's change times",
            both(json!({"conflict_strategy": "newest_wins",
                        "cursor": {"strategy": "id", "column": "id"}})),
            "conflict_strategy",
        ),
        (
            "writing the change column",
            both(json!({"mappings": [{"source": "updated_at", "target": "changed"}]})),
            "mappings[0].source",
        ),
        (
            "an outbound sync from an integration",
            with_field(&valid, "direction", json!("outbound")),
            "direction",
        ),
        (
            "an outbound sync's soft deletes without a tombstone column",
            outbound.clone(),
            "delete_policy",
        ),
        (
            "a cursor on the record store",
            with_field(
                &with_field(&outbound, "delete_policy", json!("hard")),
                "cursor",
                json!({"strategy": "id", "column": "id"}),
            ),
            "cursor",
        ),
        (
            "the store side with a table",
            with("/target", json!({"store": "switchyard", "table": "t"})),
            "target.table",
        ),
        (
            "a SQL integration read by resource",
            with(
                "/source",
                json!({"integration_id": sql, "resource": "/x", "key": ["id"]}),
            ),
            "source.table",
        ),
        (
            "a rowversion cursor on Postgres",
            with("/cursor", json!({"strategy": "rowversion", "column": "rv"})),
            "cursor",
        ),
        (
            "a hash cursor with a column",
            with("/cursor", json!({"strategy": "hash", "column": "id"})),
            "cursor",
        ),
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
            "an HTTP integration read by table",
            with("/source/integration_id", http["id"].clone()),
            "source.resource",
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

/// `delta` shows what the next run would read — a count and a mapped sample, each row with
/// what it would do to the store — and writes nothing; `stats` sums the runs up.
#[tokio::test]
async fn delta_previews_the_next_run_and_stats_sum_up_the_runs() {
    let (app, key) = setup(TestOptions::default()).await;
    let (db, mut erp) = erp().await;
    erp.execute(
        "CREATE TABLE erp.equipment (id int PRIMARY KEY, name text NOT NULL, status text NOT NULL,
                                     updated_at timestamptz NOT NULL);
         INSERT INTO erp.equipment
         SELECT i, 'Press ' || i, CASE WHEN i = 5 THEN 'X' ELSE 'A' END, now() - interval '1 hour'
           FROM generate_series(1, 5) i;",
    )
    .await
    .unwrap();
    let source = integration(&app, &key, "postgres", &db.url).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Equipment", "entity": "equipment", "mode": "incremental",
            "source": {"integration_id": source, "table": "erp.equipment", "key": ["id"]},
            "target": {"store": "switchyard"},
            "cursor": {"strategy": "timestamp", "column": "updated_at", "lag_seconds": 0},
            "mappings": [
                {"source": "name", "target": "name"},
                {"source": "status", "target": "status",
                 "transform": {"type": "lookup", "table": {"A": "active"}}},
            ],
            "unmapped": "drop",
        }),
    )
    .await;
    let delta_path = format!("/v1/sync/configurations/{config}/delta");
    let changes = |d: &Value| -> Vec<(String, String)> {
        d["sample"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let key = r["key"].as_str().unwrap_or("?").to_owned();
                (key, r["change"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let first = app.partner_get(&key, &delta_path).await;
    assert!(first["error"].is_null(), "{first}");
    assert_eq!(first["rows"], 5);
    assert!(first["cursor"].is_null());
    assert!(first["watermark"].is_string());
    let expected: Vec<(String, String)> = (1..=5)
        .map(|i| {
            (
                i.to_string(),
                if i == 5 { "invalid" } else { "insert" }.to_owned(),
            )
        })
        .collect();
    assert_eq!(changes(&first), expected);
    assert_eq!(
        first["sample"][0]["data"],
        json!({"name": "Press 1", "status": "active"})
    );
    assert!(
        first["sample"][4]["error"].as_str().unwrap().contains("X"),
        "{first}"
    );
    let sampled = app
        .partner_get(&key, &format!("{delta_path}?limit=2"))
        .await;
    assert_eq!(sampled["rows"], 5);
    assert_eq!(sampled["sample"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.count("SELECT count(*) FROM sync_runs").await,
        0,
        "a preview runs nothing"
    );

    let run = crate::sync::run(&app, &key, &config).await;
    assert_eq!(run["status"], "partial", "{run}");
    // One row changes, one is touched with equal content.
    erp.execute(
        "UPDATE erp.equipment SET name = 'Press 2b', updated_at = now() - interval '1 second'
          WHERE id = 2;
         UPDATE erp.equipment SET updated_at = now() - interval '1 second' WHERE id = 3;",
    )
    .await
    .unwrap();
    let next = app.partner_get(&key, &delta_path).await;
    assert_eq!(next["cursor"], run["cursor_after"], "{next}");
    assert_eq!(next["rows"], 2, "{next}");
    assert_eq!(
        changes(&next),
        [
            ("2".into(), "update".into()),
            ("3".into(), "unchanged".into())
        ]
    );
    let stored = app
        .count("SELECT count(*) FROM sync_records WHERE data ->> 'name' = 'Press 2b'")
        .await;
    assert_eq!(stored, 0, "a preview writes nothing");

    // An unreachable source is an answer, not a failure.
    let down = integration(&app, &key, "mysql", "mysql://root@127.0.0.1:1/erp").await;
    let down_config = configure(
        &app,
        &key,
        json!({
            "name": "Down", "entity": "down", "mode": "full",
            "source": {"integration_id": down, "table": "t", "key": ["id"]},
            "target": {"store": "switchyard"},
        }),
    )
    .await;
    let d = app
        .partner_get(
            &key,
            &format!("/v1/sync/configurations/{down_config}/delta"),
        )
        .await;
    assert!(d["rows"].is_null() && d["error"].is_string(), "{d}");

    // Every session with a source is in its integration's log, credentials redacted.
    let calls = |id: String| {
        let (app, key) = (&app, &key);
        async move {
            let log = app
                .partner_get(key, &format!("/v1/integrations/{id}/logs"))
                .await;
            log["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        l["kind"].clone(),
                        l["method"].clone(),
                        l["ok"].clone(),
                        l["response_body"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let erp_calls = calls(source.clone()).await;
    assert_eq!(
        erp_calls,
        [
            (
                json!("sync"),
                json!("PREVIEW"),
                json!(true),
                json!("2 rows to read; a sample of 2")
            ),
            (
                json!("sync"),
                json!("READ"),
                json!(true),
                json!("5 rows in 1 batch")
            ),
            (
                json!("sync"),
                json!("PREVIEW"),
                json!(true),
                json!("5 rows to read; a sample of 2")
            ),
            (
                json!("sync"),
                json!("PREVIEW"),
                json!(true),
                json!("5 rows to read; a sample of 5")
            ),
        ]
    );
    // Each preview opened the credential for use, and the audit log says so, with why.
    let previews = app
        .count(
            "SELECT count(*) FROM audit_events WHERE action = 'integration.credentials_opened'
                AND changes ->> 'purpose' = 'sync_preview'",
        )
        .await;
    assert_eq!(
        previews, 4,
        "three previews of the ERP, one of the unreachable source"
    );
    let down_calls = calls(down.clone()).await;
    assert_eq!(down_calls.len(), 1);
    assert_eq!(
        (&down_calls[0].1, &down_calls[0].2),
        (&json!("PREVIEW"), &json!(false))
    );

    let stats = app
        .partner_get(&key, &format!("/v1/sync/configurations/{config}/stats"))
        .await;
    let windows: Vec<&str> = stats["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["window"].as_str().unwrap())
        .collect();
    assert_eq!(windows, ["1h", "24h", "7d", "30d"]);
    for w in stats["windows"].as_array().unwrap() {
        assert_eq!(
            (
                &w["runs"],
                &w["partial"],
                &w["failed"],
                &w["rows_read"],
                &w["rows_inserted"],
                &w["rows_failed"]
            ),
            (
                &json!(1),
                &json!(1),
                &json!(0),
                &json!(5),
                &json!(4),
                &json!(1)
            ),
            "{w}"
        );
        assert!(w["duration_ms_avg"].as_f64().unwrap() >= 0.0, "{w}");
    }
    assert_eq!(stats["last_succeeded_at"], run["finished_at"]);
    assert!(stats["last_failed_at"].is_null());
}

/// An integration a sync configuration uses cannot be deleted: its runs would fail, and its
/// configurations (with their runs and conflicts) would go with it when it is purged.
#[tokio::test]
async fn an_integration_in_use_by_a_sync_is_not_deleted() {
    let (app, key) = setup(TestOptions::no_worker()).await;
    let (db, _erp) = erp().await;
    let source = integration(&app, &key, "postgres", &db.url).await;
    let config = full_sync(&app, &key, &source, "public.sites", "code").await;
    let delete = |path: String| {
        let (app, key) = (&app, &key);
        async move {
            app.http
                .delete(app.url(&path))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
        }
    };
    let r = delete(format!("/v1/integrations/{source}")).await;
    let p = problem(r, 409, "integration_in_use", None).await;
    assert!(p["detail"].as_str().unwrap().contains(&config), "{p}");
    assert_eq!(
        delete(format!("/v1/sync/configurations/{config}"))
            .await
            .status(),
        204
    );
    assert_eq!(
        delete(format!("/v1/integrations/{source}")).await.status(),
        204
    );
}
