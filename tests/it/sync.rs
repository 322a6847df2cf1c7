//! Sync runs against real databases playing the ERP (a Postgres database of the test's own)
//! and the MES (a MariaDB database): full and incremental runs, ties on the cursor across
//! batch boundaries, a row in the lag window, a row committed late inside the lookback, deletes
//! by tombstone and by absence, mappings, poison records and the error threshold.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use switchyard_tests::{TestApp, TestOptions, db::TestDb, eventually, mariadb::MariaDb};

/// An app and a key that may manage integrations and syncs.
pub async fn setup(opts: TestOptions) -> (TestApp, String) {
    let app = TestApp::spawn(opts).await;
    let tenant = app.create_tenant("Plant").await;
    let key = app
        .create_key(
            &tenant,
            Some(&[
                "integrations:write",
                "sync:write",
                "sync:read",
                "webhooks:write",
                "events:read",
            ]),
        )
        .await
        .1;
    (app, key)
}

/// A Postgres database playing the ERP, with a connection to it and its URL.
pub async fn erp() -> (TestDb, PgConnection) {
    let db = TestDb::create().await;
    let mut c = PgConnection::connect(&db.url).await.unwrap();
    c.execute("CREATE SCHEMA erp").await.unwrap();
    (db, c)
}

pub async fn integration(app: &TestApp, key: &str, provider: &str, url: &str) -> String {
    let r = app
        .partner_post(
            key,
            "/v1/integrations",
            json!({"name": "ERP", "code": format!("erp-{provider}"), "type": "erp",
                   "provider": provider, "credentials": {"url": url}}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn configure(app: &TestApp, key: &str, body: Value) -> String {
    let r = app.partner_post(key, "/v1/sync/configurations", body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A full sync of `table` (keyed by `column`) from integration `source` into the record store,
/// every column passed through, the table's name as the entity; returns the configuration.
pub async fn full_sync(
    app: &TestApp,
    key: &str,
    source: &str,
    table: &str,
    column: &str,
) -> String {
    let entity = table.rsplit('.').next().unwrap();
    let body = json!({"name": entity, "entity": entity, "mode": "full",
                      "source": {"integration_id": source, "table": table, "key": [column]},
                      "target": {"store": "switchyard"}});
    configure(app, key, body).await
}

/// Starts a run and returns its id.
pub async fn start(app: &TestApp, key: &str, config: &str) -> String {
    let r = app
        .partner_post(
            key,
            &format!("/v1/sync/configurations/{config}/runs"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let run: Value = r.json().await.unwrap();
    assert_eq!(run["status"], "pending");
    assert_eq!(run["trigger"], "manual");
    run["id"].as_str().unwrap().to_owned()
}

/// Waits for run `id` to finish and returns it.
pub async fn finished(app: &TestApp, key: &str, id: &str) -> Value {
    eventually(
        Duration::from_secs(60),
        "the sync run to finish",
        || async {
            let run = app.partner_get(key, &format!("/v1/sync/runs/{id}")).await;
            let active = ["pending", "running"].contains(&run["status"].as_str().unwrap());
            (!active).then_some(run)
        },
    )
    .await
}

/// Runs configuration `config` once, to its end.
pub async fn run(app: &TestApp, key: &str, config: &str) -> Value {
    let id = start(app, key, config).await;
    finished(app, key, &id).await
}

fn counts(run: &Value) -> [i64; 6] {
    [
        "rows_read",
        "rows_inserted",
        "rows_updated",
        "rows_unchanged",
        "rows_deleted",
        "rows_failed",
    ]
    .map(|f| run[f].as_i64().unwrap())
}

async fn record(app: &TestApp, key: &str, entity: &str, k: &str) -> Option<Value> {
    let page = app
        .partner_get(key, &format!("/v1/sync/records?entity={entity}&key={k}"))
        .await;
    page["data"].as_array().unwrap().first().cloned()
}

/// Every record of an entity, through the API's pages.
pub async fn all_records(app: &TestApp, key: &str, entity: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let mut path = format!("/v1/sync/records?entity={entity}&limit=100");
        if !after.is_empty() {
            path.push_str(&format!("&starting_after={after}"));
        }
        let page = app.partner_get(key, &path).await;
        let data = page["data"].as_array().unwrap().clone();
        if let Some(last) = data.last() {
            after = last["key"].as_str().unwrap().to_owned();
        }
        out.extend(data);
        if page["has_more"] != true {
            return out;
        }
    }
}

#[tokio::test]
async fn incremental_runs_from_postgres_keep_ties_late_rows_and_tombstones() {
    let (app, key) = setup(TestOptions::default()).await;
    let (db, mut erp) = erp().await;
    erp.execute(
        "CREATE TABLE erp.equipment (id integer PRIMARY KEY, name text NOT NULL, status text,
                                     updated_at timestamptz NOT NULL, deleted boolean NOT NULL DEFAULT false);
         -- 1,200 rows, 300 of them sharing one change time, so ties cross batch boundaries.
         INSERT INTO erp.equipment
         SELECT i, ' Press ' || i || ' ', CASE WHEN i % 2 = 0 THEN 'A' ELSE 'R' END,
                now() - interval '2 hours' + CASE WHEN i <= 300 THEN interval '0' ELSE i * interval '1 second' END,
                false
           FROM generate_series(1, 1200) i;",
    )
    .await
    .unwrap();
    let source = integration(&app, &key, "postgres", &db.url).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Equipment", "entity": "equipment", "mode": "incremental",
            "source": {"integration_id": source, "table": "erp.equipment", "key": ["id"],
                       "tombstone": "deleted"},
            "target": {"store": "switchyard"},
            "cursor": {"strategy": "timestamp", "column": "updated_at"},
            "mappings": [
                {"source": "name", "target": "name", "transform": {"type": "trim"}},
                {"source": "status", "target": "status",
                 "transform": {"type": "lookup", "table": {"A": "active", "R": "retired"}}},
            ],
            "batch_size": 128,
        }),
    )
    .await;
    let stored = app
        .partner_get(&key, &format!("/v1/sync/configurations/{config}"))
        .await;
    // Every default is filled in and shown.
    assert_eq!(stored["cursor"]["lag_seconds"], 30);
    assert_eq!(stored["cursor"]["lookback_seconds"], 300);
    assert_eq!(stored["delete_policy"], "soft");
    assert_eq!(stored["direction"], "inbound");

    let first = run(&app, &key, &config).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(counts(&first), [1200, 1200, 0, 0, 0, 0]);
    assert_eq!(first["batches"], 10);
    assert!(first["cursor_before"].is_null());
    let watermark = first["watermark"].as_str().unwrap().to_owned();
    assert_eq!(first["cursor_after"], json!({ "value": watermark }));
    let r = record(&app, &key, "equipment", "42").await.unwrap();
    assert_eq!(r["data"]["name"], "Press 42");
    assert_eq!(r["data"]["status"], "active");
    assert_eq!(r["data"]["deleted"], false);
    assert!(r["deleted_at"].is_null());
    assert_eq!(all_records(&app, &key, "equipment").await.len(), 1200);

    // Changes since: 10 updates, 3 tombstones, a row committed late with a change time before
    // the first run's watermark (inside the lookback), and a row still in the lag window.
    erp.execute(
        "UPDATE erp.equipment SET name = 'Lathe ' || id, updated_at = now() - interval '1 minute'
          WHERE id BETWEEN 101 AND 110;
         UPDATE erp.equipment SET deleted = true, updated_at = now() - interval '1 minute'
          WHERE id IN (5, 6, 7);",
    )
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO erp.equipment VALUES
            (5000, 'Late', 'A', CAST($1 AS timestamptz) - interval '100 seconds', false),
            (5001, 'Fresh', 'A', now(), false)",
    )
    .bind(&watermark)
    .execute(&mut erp)
    .await
    .unwrap();
    let second = run(&app, &key, &config).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(second["cursor_before"], json!({ "value": watermark }));
    // Read: 10 updated, 3 deleted, the late row; nothing else was in the lookback.
    assert_eq!(counts(&second), [14, 1, 10, 0, 3, 0]);
    assert_eq!(
        record(&app, &key, "equipment", "105").await.unwrap()["data"]["name"],
        "Lathe 105"
    );
    assert!(!record(&app, &key, "equipment", "6").await.unwrap()["deleted_at"].is_null());
    assert_eq!(
        record(&app, &key, "equipment", "5000").await.unwrap()["data"]["name"],
        "Late"
    );
    assert!(record(&app, &key, "equipment", "5001").await.is_none());

    // With no lag, the row that was in the lag window comes; the lookback re-reads the rest as
    // unchanged (an equal hash is not rewritten).
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/sync/configurations/{config}"),
            json!({"cursor": {"strategy": "timestamp", "column": "updated_at", "lag_seconds": 0}}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let before = record(&app, &key, "equipment", "105").await.unwrap();
    let third = run(&app, &key, &config).await;
    assert_eq!(third["status"], "succeeded", "{third}");
    let [read, inserted, updated, unchanged, deleted, failed] = counts(&third);
    assert_eq!((inserted, updated, deleted, failed), (1, 0, 0, 0));
    assert_eq!(unchanged, read - 1);
    assert!(
        read >= 14,
        "the lookback re-reads the recent changes: {third}"
    );
    assert_eq!(
        record(&app, &key, "equipment", "105").await.unwrap()["updated_at"],
        before["updated_at"]
    );
    assert_eq!(all_records(&app, &key, "equipment").await.len(), 1202);

    let logs = app
        .partner_get(
            &key,
            &format!("/v1/sync/runs/{}/logs", third["id"].as_str().unwrap()),
        )
        .await;
    let messages: Vec<&str> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["started", "succeeded: done"]);

    // A cursor of another strategy cannot go on from the timestamp's position: the position
    // is dropped and the next run reads from the start (everything unchanged), then by id.
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/sync/configurations/{config}"),
            json!({"cursor": {"strategy": "id", "column": "id"}}),
        )
        .await;
    let changed: Value = r.json().await.unwrap();
    assert!(changed["state"].is_null(), "{changed}");
    let fourth = run(&app, &key, &config).await;
    assert_eq!(fourth["status"], "succeeded", "{fourth}");
    assert!(fourth["cursor_before"].is_null(), "{fourth}");
    let [read, inserted, updated, _, deleted, failed] = counts(&fourth);
    assert_eq!(
        (inserted, updated, deleted, failed),
        (0, 0, 0, 0),
        "{fourth}"
    );
    assert!(read >= 1200, "{fourth}");
}

#[tokio::test]
async fn full_runs_delete_by_absence() {
    let (app, key) = setup(TestOptions::default()).await;
    let (db, mut erp) = erp().await;
    erp.execute(
        "CREATE TABLE erp.suppliers (region text, code integer, name text,
                                     PRIMARY KEY (region, code));
         INSERT INTO erp.suppliers SELECT r, i, 'Supplier ' || i
           FROM unnest(ARRAY['eu', 'us']) r, generate_series(1, 150) i;",
    )
    .await
    .unwrap();
    let source = integration(&app, &key, "postgres", &db.url).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Suppliers", "entity": "suppliers", "mode": "full", "delete_policy": "hard",
            "source": {"integration_id": source, "table": "erp.suppliers", "key": ["region", "code"]},
            "target": {"store": "switchyard"}, "batch_size": 64, "unmapped": "drop",
            "mappings": [{"source": "name", "target": "supplier_name"},
                         {"source": "code", "target": "code", "transform": {"type": "cast", "to": "string"}}],
        }),
    )
    .await;
    let first = run(&app, &key, &config).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(counts(&first), [300, 300, 0, 0, 0, 0]);
    let r = record(&app, &key, "suppliers", r#"%5B%22eu%22,%227%22%5D"#)
        .await
        .unwrap();
    assert_eq!(
        r["data"],
        json!({"supplier_name": "Supplier 7", "code": "7"})
    );

    erp.execute(
        "DELETE FROM erp.suppliers WHERE code <= 5 AND region = 'us';
         UPDATE erp.suppliers SET name = 'Renamed' WHERE code = 150;",
    )
    .await
    .unwrap();
    let second = run(&app, &key, &config).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(counts(&second), [295, 0, 2, 293, 5, 0]);
    assert_eq!(all_records(&app, &key, "suppliers").await.len(), 295);

    // More than half gone at once looks like a read cut short: nothing is deleted until a run
    // is started with confirm_deletes.
    erp.execute("DELETE FROM erp.suppliers WHERE region = 'us' OR code <= 10")
        .await
        .unwrap();
    let third = run(&app, &key, &config).await;
    assert_eq!(third["status"], "partial", "{third}");
    assert_eq!(counts(&third), [140, 0, 0, 140, 0, 0]);
    let error = third["error"].as_str().unwrap();
    assert!(
        error.contains("155 of 295") && error.contains("confirm_deletes"),
        "{error}"
    );
    assert_eq!(all_records(&app, &key, "suppliers").await.len(), 295);
    let r = app
        .partner_post(
            &key,
            &format!("/v1/sync/configurations/{config}/runs?confirm_deletes=true"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let confirmed: Value = r.json().await.unwrap();
    assert_eq!(confirmed["confirm_deletes"], true);
    let fourth = finished(&app, &key, confirmed["id"].as_str().unwrap()).await;
    assert_eq!(fourth["status"], "succeeded", "{fourth}");
    assert_eq!(counts(&fourth), [140, 0, 0, 140, 155, 0]);
    assert_eq!(all_records(&app, &key, "suppliers").await.len(), 140);

    let listed = app
        .partner_get(&key, &format!("/v1/sync/runs?configuration_id={config}"))
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn mariadb_sources_sync_and_poison_records_are_skipped_up_to_the_threshold() {
    let (app, key) = setup(TestOptions::default()).await;
    let mes = MariaDb::create().await;
    let mut c = mes.connect().await;
    c.execute(
        "CREATE TABLE inspections (id INT PRIMARY KEY, line VARCHAR(20), result VARCHAR(10),
                                   inspected_at DATETIME(6) NOT NULL)",
    )
    .await
    .unwrap();
    for i in 1..=400 {
        // 100 rows per second of change time: ties cross every batch boundary.
        let result = match i {
            13 | 77 => "??", // not in the lookup table
            _ if i % 3 == 0 => "fail",
            _ => "pass",
        };
        sqlx::query(
            "INSERT INTO inspections VALUES (?, ?, ?, NOW(6) - INTERVAL 1 HOUR + INTERVAL ? SECOND)",
        )
        .bind(i)
        .bind(if i == 200 { "L\0NUL" } else { "L1" })
        .bind(result)
        .bind(i / 100)
        .execute(&mut c)
        .await
        .unwrap();
    }
    let source = integration(&app, &key, "mysql", &mes.user_url()).await;
    let body = |threshold: i64, entity: &str| {
        json!({
            "name": "Inspections", "entity": entity, "mode": "incremental",
            "source": {"integration_id": source, "table": "inspections", "key": ["id"]},
            "target": {"store": "switchyard"},
            "cursor": {"strategy": "timestamp", "column": "inspected_at"},
            "mappings": [{"source": "result", "target": "passed",
                          "transform": {"type": "lookup", "table": {"pass": true, "fail": false}}}],
            "batch_size": 50, "error_threshold": threshold,
        })
    };
    let tolerant = configure(&app, &key, body(5, "inspections")).await;
    let strict = configure(&app, &key, body(2, "inspections_strict")).await;

    let done = run(&app, &key, &tolerant).await;
    assert_eq!(done["status"], "partial", "{done}");
    // Two rows fail the mapping, one the store (a NUL character `jsonb` cannot hold).
    assert_eq!(counts(&done), [400, 397, 0, 0, 0, 3]);
    let errors = app
        .partner_get(
            &key,
            &format!("/v1/sync/runs/{}/errors", done["id"].as_str().unwrap()),
        )
        .await;
    let mut failed: Vec<(String, String)> = errors["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["record_key"].as_str().unwrap().to_owned(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    failed.sort();
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0].0, "13");
    assert!(
        failed[0].1.contains("not in the lookup table"),
        "{failed:?}"
    );
    assert_eq!(failed[1].0, "200");
    assert!(failed[1].1.contains("record store refused"), "{failed:?}");
    assert_eq!(failed[2].0, "77");
    let r = record(&app, &key, "inspections", "9").await.unwrap();
    assert_eq!(r["data"]["passed"], false);
    assert_eq!(r["data"]["line"], "L1");
    assert_eq!(all_records(&app, &key, "inspections").await.len(), 397);

    // Beyond its threshold, a run fails where it is, and says why.
    let stopped = run(&app, &key, &strict).await;
    assert_eq!(stopped["status"], "failed", "{stopped}");
    assert!(
        stopped["error"]
            .as_str()
            .unwrap()
            .contains("error threshold of 2"),
        "{stopped}"
    );
    assert_eq!(stopped["rows_failed"], 3);
    assert!(stopped["rows_read"].as_i64().unwrap() < 400);
    // A failed run does not move the cursor: the retry reads from where the stream was.
    let cfg = app
        .partner_get(&key, &format!("/v1/sync/configurations/{strict}"))
        .await;
    assert!(cfg["state"].is_null());
    let r = app
        .partner_post(
            &key,
            &format!("/v1/sync/runs/{}/retry", stopped["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let retry: Value = r.json().await.unwrap();
    assert_eq!(retry["trigger"], "retry");
    finished(&app, &key, retry["id"].as_str().unwrap()).await;
}

/// A source without a change column: a `hash` cursor reads every row, writes only what
/// changed, and finds deletes by absence.
#[tokio::test]
async fn a_hash_cursor_reads_every_row_writes_only_changes_and_finds_deletes_by_absence() {
    let (app, key) = setup(TestOptions::default()).await;
    let (db, mut erp) = erp().await;
    erp.execute(
        "CREATE TABLE erp.sites (code text PRIMARY KEY, name text NOT NULL);
         INSERT INTO erp.sites SELECT 'S' || i, 'Site ' || i FROM generate_series(1, 20) i;",
    )
    .await
    .unwrap();
    let source = integration(&app, &key, "postgres", &db.url).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Sites", "entity": "sites", "mode": "incremental",
            "source": {"integration_id": source, "table": "erp.sites", "key": ["code"]},
            "target": {"store": "switchyard"},
            "cursor": {"strategy": "hash"},
            "batch_size": 7,
        }),
    )
    .await;
    let first = run(&app, &key, &config).await;
    assert_eq!(counts(&first), [20, 20, 0, 0, 0, 0], "{first}");
    erp.execute(
        "UPDATE erp.sites SET name = name || ' (new)' WHERE code IN ('S1', 'S2');
         DELETE FROM erp.sites WHERE code IN ('S3', 'S4', 'S5');
         INSERT INTO erp.sites VALUES ('S21', 'Site 21');",
    )
    .await
    .unwrap();
    let second = run(&app, &key, &config).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(counts(&second), [18, 1, 2, 15, 3, 0], "{second}");
    let s3 = record(&app, &key, "sites", "S3").await.unwrap();
    assert!(!s3["deleted_at"].is_null(), "{s3}");
    assert_eq!(
        record(&app, &key, "sites", "S1").await.unwrap()["data"]["name"],
        "Site 1 (new)"
    );
    // Nothing changed: nothing written, every row counted unchanged.
    let third = run(&app, &key, &config).await;
    assert_eq!(counts(&third), [18, 0, 0, 18, 0, 0], "{third}");
}

/// A source's own names are names: columns with a quote, a backtick or a double quote in them
/// sync like any other (passed through unmapped), in MariaDB and in Postgres: never a syntax
/// error, never SQL.
#[tokio::test]
async fn column_names_with_quotes_sync_as_names() {
    let (app, key) = setup(TestOptions::default()).await;
    let mes = MariaDb::create().await;
    let mut my = mes.connect().await;
    for sql in [
        "CREATE TABLE my_odd (id INT PRIMARY KEY, `it's` VARCHAR(9), `back``tick` VARCHAR(9),
                              `a\"b\\c` VARCHAR(9))",
        "INSERT INTO my_odd VALUES (1, 'one', 'two', 'three')",
    ] {
        my.execute(sql).await.unwrap();
    }
    let (db, mut pg) = erp().await;
    pg.execute(
        r#"CREATE TABLE erp.pg_odd (id integer PRIMARY KEY, "it's" text, "say ""hi""" text);
           INSERT INTO erp.pg_odd VALUES (1, 'one', 'two')"#,
    )
    .await
    .unwrap();
    let my_fields = json!({"it's": "one", "back`tick": "two", "a\"b\\c": "three"});
    let pg_fields = json!({"it's": "one", "say \"hi\"": "two"});
    let sources = [
        ("mysql", mes.user_url(), "my_odd", my_fields),
        ("postgres", db.url.clone(), "erp.pg_odd", pg_fields),
    ];
    for (provider, url, table, expected) in sources {
        let source = integration(&app, &key, provider, &url).await;
        let config = full_sync(&app, &key, &source, table, "id").await;
        let done = run(&app, &key, &config).await;
        assert_eq!(done["status"], "succeeded", "{provider}: {done}");
        let entity = table.rsplit('.').next().unwrap();
        let r = record(&app, &key, entity, "1").await.unwrap();
        for (field, value) in expected.as_object().unwrap() {
            assert_eq!(&r["data"][field], value, "{provider}: {r}");
        }
    }
}
