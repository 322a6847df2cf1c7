//! The record store as a side: records partners write (`PUT /v1/sync/records/…`) go out to an
//! ERP table by an outbound sync (inserted, updated, tombstoned, never rewritten when
//! unchanged), and a bidirectional sync keeps an ERP table and the store in step both ways.

use serde_json::{Value, json};
use sqlx::{Executor, PgConnection};
use switchyard_tests::{TestApp, TestOptions};

use super::sync::{configure, erp, integration, run, setup};

async fn put(app: &TestApp, key: &str, entity: &str, k: &str, data: Value) -> reqwest::Response {
    reqwest::Client::new()
        .put(app.url(&format!("/v1/sync/records/{entity}/{k}")))
        .bearer_auth(key)
        .json(&json!({ "data": data }))
        .send()
        .await
        .unwrap()
}

/// Waits out the record store's lag: its changes are read a second after they are written.
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
}

async fn supplier(erp: &mut PgConnection, code: &str) -> Option<(String, Option<String>, bool)> {
    sqlx::query_as("SELECT name, city, deleted FROM erp.suppliers WHERE code = $1")
        .bind(code)
        .fetch_optional(erp)
        .await
        .unwrap()
}

#[tokio::test]
async fn records_partners_write_go_out_to_the_erp_with_their_deletes() {
    let (app, key) = setup(TestOptions::default()).await;
    let (db, mut erp) = erp().await;
    erp.execute(
        "CREATE TABLE erp.suppliers (code text PRIMARY KEY, name text NOT NULL, city text,
                                     deleted boolean NOT NULL DEFAULT false)",
    )
    .await
    .unwrap();
    for (code, name, town) in [
        ("S1", "Acme", "Berlin"),
        ("S2", "Bolt & Co", "Köln"),
        ("S3", "Cog", "Ulm"),
    ] {
        let r = put(
            &app,
            &key,
            "suppliers",
            code,
            json!({"name": name, "town": town, "rating": 3}),
        )
        .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    // Records are validated like any input.
    let bad = put(&app, &key, "suppliers", "S9", json!({"name": "nul\u{0}"})).await;
    assert_eq!(bad.status(), 400);
    let target = integration(&app, &key, "postgres", &db.url).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Suppliers to the ERP", "entity": "suppliers", "direction": "outbound",
            "mode": "incremental",
            "source": {"store": "switchyard"},
            "target": {"integration_id": target, "table": "erp.suppliers", "key": ["code"],
                       "tombstone": "deleted"},
            "mappings": [{"source": "name", "target": "name"},
                         {"source": "town", "target": "city"}],
        }),
    )
    .await;
    let shown = app
        .partner_get(&key, &format!("/v1/sync/configurations/{config}"))
        .await;
    assert_eq!(shown["unmapped"], "drop");
    assert_eq!(shown["delete_policy"], "soft");

    settle().await;
    let first = run(&app, &key, &config).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["rows_inserted"], 3, "{first}");
    assert_eq!(
        supplier(&mut erp, "S2").await,
        Some(("Bolt & Co".into(), Some("Köln".into()), false))
    );

    // Unchanged records re-read are not written again.
    let second = run(&app, &key, &config).await;
    assert_eq!(
        second["rows_inserted"].as_i64().unwrap() + second["rows_updated"].as_i64().unwrap(),
        0,
        "{second}"
    );
    assert_eq!(second["rows_unchanged"], second["rows_read"], "{second}");

    // A change, a delete; the preview shows the change before the run makes it.
    assert_eq!(
        put(
            &app,
            &key,
            "suppliers",
            "S2",
            json!({"name": "Bolt & Co", "town": "Bonn"})
        )
        .await
        .status(),
        200
    );
    let gone = reqwest::Client::new()
        .delete(app.url("/v1/sync/records/suppliers/S3"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    settle().await;
    let delta = app
        .partner_get(&key, &format!("/v1/sync/configurations/{config}/delta"))
        .await;
    let change = |k: &str| {
        delta["sample"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == k)
            .map(|r| r["change"].clone())
    };
    assert_eq!(change("S2"), Some(json!("update")), "{delta}");
    assert_eq!(change("S3"), Some(json!("delete")), "{delta}");
    assert_eq!(change("S1"), Some(json!("unchanged")), "{delta}");
    let third = run(&app, &key, &config).await;
    assert_eq!(
        [
            third["rows_updated"].as_i64(),
            third["rows_deleted"].as_i64()
        ],
        [Some(1), Some(1)],
        "{third}"
    );
    assert_eq!(
        supplier(&mut erp, "S2").await.unwrap().1.as_deref(),
        Some("Bonn")
    );
    assert!(
        supplier(&mut erp, "S3").await.unwrap().2,
        "tombstoned in the ERP"
    );

    // One way: an edit made in the ERP stays until the record changes in the store.
    erp.execute("UPDATE erp.suppliers SET name = 'Acme GmbH' WHERE code = 'S1'")
        .await
        .unwrap();
    let fourth = run(&app, &key, &config).await;
    assert_eq!(fourth["rows_updated"], 0, "{fourth}");
    assert_eq!(supplier(&mut erp, "S1").await.unwrap().0, "Acme GmbH");
}

#[tokio::test]
async fn a_bidirectional_sync_keeps_an_erp_table_and_the_record_store_in_step() {
    let (app, key) = setup(TestOptions::default()).await;
    let (db, mut erp) = erp().await;
    erp.execute(
        "CREATE TABLE erp.products (sku text PRIMARY KEY, title text NOT NULL, price numeric(10,2),
                                    changed timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE FUNCTION erp.touch() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN NEW.changed := clock_timestamp(); RETURN NEW; END $$;
         CREATE TRIGGER touch BEFORE UPDATE ON erp.products FOR EACH ROW EXECUTE FUNCTION erp.touch();
         INSERT INTO erp.products (sku, title, price) VALUES ('P1', 'Bolt', 0.10), ('P2', 'Nut', 0.05);",
    )
    .await
    .unwrap();
    let source = integration(&app, &key, "postgres", &db.url).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Products", "entity": "products", "direction": "bidirectional",
            "mode": "incremental",
            "source": {"integration_id": source, "table": "erp.products", "key": ["sku"]},
            "target": {"store": "switchyard"},
            "cursor": {"strategy": "timestamp", "column": "changed", "lag_seconds": 0},
            "mappings": [{"source": "title", "target": "name"},
                         {"source": "price", "target": "price"}],
            "delete_policy": "hard",
            "conflict_strategy": "target_wins",
        }),
    )
    .await;
    let first = run(&app, &key, &config).await;
    assert_eq!(first["rows_inserted"], 2, "{first}");
    let p1 = app
        .partner_get(&key, "/v1/sync/records?entity=products&key=P1")
        .await;
    assert_eq!(
        p1["data"][0]["data"],
        json!({"sku": "P1", "name": "Bolt", "price": 0.1})
    );

    // A partner's change to the store reaches the ERP.
    assert_eq!(
        put(
            &app,
            &key,
            "products",
            "P1",
            json!({"sku": "P1", "name": "Bolt M6", "price": 0.12})
        )
        .await
        .status(),
        200
    );
    settle().await;
    let second = run(&app, &key, &config).await;
    assert_eq!(second["rows_updated"], 1, "{second}");
    let (title, price): (String, f64) =
        sqlx::query_as("SELECT title, price::float8 FROM erp.products WHERE sku = 'P1'")
            .fetch_one(&mut erp)
            .await
            .unwrap();
    assert_eq!((title.as_str(), price), ("Bolt M6", 0.12));
    // Its echo in the ERP is recognised; nothing goes back to the store.
    let third = run(&app, &key, &config).await;
    assert_eq!(
        [
            third["rows_updated"].as_i64(),
            third["rows_inserted"].as_i64()
        ],
        [Some(0), Some(0)],
        "{third}"
    );
}

/// Record keys a target cannot hold are poison records, not a stuck sync; keys with NUL are
/// refused by the API.
#[tokio::test]
async fn a_record_key_the_erp_cannot_hold_fails_alone() {
    let (app, key) = setup(TestOptions::default()).await;
    let (db, mut erp) = erp().await;
    erp.execute("CREATE TABLE erp.machines (id integer PRIMARY KEY, name text NOT NULL)")
        .await
        .unwrap();
    for k in ["1", "2", "abc"] {
        assert_eq!(
            put(&app, &key, "machines", k, json!({"name": format!("M {k}")}))
                .await
                .status(),
            200
        );
    }
    let nul = put(&app, &key, "machines", "a%00b", json!({"name": "x"}))
        .await
        .status();
    assert!(nul.is_client_error(), "{nul}");
    let nul = reqwest::Client::new()
        .delete(app.url("/v1/sync/records/machines/a%00b"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(nul, 404, "a key no record can have: none is found, no 500");
    settle().await;
    let target = integration(&app, &key, "postgres", &db.url).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Machines", "entity": "machines", "direction": "outbound", "mode": "incremental",
            "source": {"store": "switchyard"},
            "target": {"integration_id": target, "table": "erp.machines", "key": ["id"]},
            "mappings": [{"source": "name", "target": "name"}],
            "delete_policy": "hard",
        }),
    )
    .await;
    let r = run(&app, &key, &config).await;
    assert_eq!(r["status"], "partial", "{r}");
    assert_eq!(
        [r["rows_inserted"].as_i64(), r["rows_failed"].as_i64()],
        [Some(2), Some(1)],
        "{r}"
    );
    let names: Vec<(i32, String)> = sqlx::query_as("SELECT id, name FROM erp.machines ORDER BY id")
        .fetch_all(&mut erp)
        .await
        .unwrap();
    assert_eq!(names, vec![(1, "M 1".into()), (2, "M 2".into())]);
}
