//! Bidirectional syncs between an ERP (a Postgres database of the test's own) and a MES (a
//! MariaDB database): changes flow both ways with the mappings' inverses, a row the sync wrote
//! is not read back as a change (echo suppression), deletes travel as tombstones, and every
//! conflict strategy settles a record both sides changed — `manual` through the API.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Executor, MySqlConnection, PgConnection, Row};
use switchyard_tests::{TestApp, TestOptions, db::TestDb, eventually, mariadb::MariaDb};

use super::sync::{configure, erp, finished, integration, run, setup};

/// The ERP's equipment table (a trigger keeps `updated_at`) and the MES's, with other names.
async fn tables(erp: &mut PgConnection, mes: &mut MySqlConnection) {
    erp.execute(
        "CREATE TABLE erp.equipment (id integer PRIMARY KEY, name text NOT NULL, qty integer,
                                     site text, status text,
                                     updated_at timestamptz(6) NOT NULL DEFAULT clock_timestamp(),
                                     deleted boolean NOT NULL DEFAULT false);
         CREATE FUNCTION erp.touch() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
         CREATE TRIGGER touch BEFORE UPDATE ON erp.equipment FOR EACH ROW EXECUTE FUNCTION erp.touch();
         INSERT INTO erp.equipment (id, name, qty, site, status)
         SELECT i, 'Press ' || i, i * 10, 'A', 'A' FROM generate_series(1, 5) i;",
    )
    .await
    .unwrap();
    mes.execute(
        "CREATE TABLE equipment (equipment_id int PRIMARY KEY, title varchar(100) NOT NULL,
                                 quantity int, site varchar(20), state varchar(20),
                                 modified_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
                                     ON UPDATE CURRENT_TIMESTAMP(6),
                                 removed tinyint(1) NOT NULL DEFAULT 0)",
    )
    .await
    .unwrap();
}

pub(super) async fn setup_pair() -> (
    TestApp,
    String,
    TestDb,
    PgConnection,
    MariaDb,
    MySqlConnection,
    String,
) {
    let (app, key) = setup(TestOptions::default()).await;
    let (db, mut erp) = erp().await;
    let maria = MariaDb::create().await;
    let mut mes = maria.connect().await;
    tables(&mut erp, &mut mes).await;
    let source = integration(&app, &key, "postgres", &db.url).await;
    let target = integration(&app, &key, "mysql", &maria.user_url()).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Equipment ERP ⇄ MES", "entity": "equipment", "direction": "bidirectional",
            "mode": "incremental",
            "source": {"integration_id": source, "table": "erp.equipment", "key": ["id"],
                       "tombstone": "deleted"},
            "target": {"integration_id": target, "table": "equipment", "tombstone": "removed",
                       "cursor": {"strategy": "timestamp", "column": "modified_at",
                                  "lag_seconds": 0, "lookback_seconds": 60}},
            "cursor": {"strategy": "timestamp", "column": "updated_at", "lag_seconds": 0,
                       "lookback_seconds": 60},
            "mappings": [
                {"source": "id", "target": "equipment_id"},
                {"source": "name", "target": "title", "transform": {"type": "trim"}},
                {"source": "qty", "target": "quantity"},
                {"source": "site", "target": "site"},
                {"source": "status", "target": "state",
                 "transform": {"type": "lookup", "table": {"A": "active", "R": "retired"}}},
            ],
            "conflict_strategy": "manual",
        }),
    )
    .await;
    (app, key, db, erp, maria, mes, config)
}

/// A MES row as `(title, quantity, state, removed)`.
pub(super) async fn mes_row(
    mes: &mut MySqlConnection,
    id: i32,
) -> Option<(String, Option<i32>, Option<String>, bool)> {
    let row =
        sqlx::query("SELECT title, quantity, state, removed FROM equipment WHERE equipment_id = ?")
            .bind(id)
            .fetch_optional(mes)
            .await
            .unwrap()?;
    Some((row.get(0), row.get(1), row.get(2), row.get::<i8, _>(3) != 0))
}

/// An ERP row as `(name, qty, status, deleted)`.
pub(super) async fn erp_row(
    erp: &mut PgConnection,
    id: i32,
) -> (String, Option<i32>, Option<String>, bool) {
    sqlx::query_as("SELECT name, qty, status, deleted FROM erp.equipment WHERE id = $1")
        .bind(id)
        .fetch_one(erp)
        .await
        .unwrap()
}

fn counts(run: &Value) -> [i64; 7] {
    [
        "rows_read",
        "rows_inserted",
        "rows_updated",
        "rows_unchanged",
        "rows_deleted",
        "conflicts",
        "rows_failed",
    ]
    .map(|f| run[f].as_i64().unwrap())
}

async fn set_strategy(app: &TestApp, key: &str, config: &str, strategy: &str) {
    let r = app
        .partner_patch(
            key,
            &format!("/v1/sync/configurations/{config}"),
            json!({"conflict_strategy": strategy}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn changes_flow_both_ways_and_the_syncs_own_writes_are_not_read_back() {
    let (app, key, _db, mut erp, _maria, mut mes, config) = setup_pair().await;
    let first = run(&app, &key, &config).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    // Five new ERP rows reach the MES, mapped; the MES rows written after the run's start
    // wait for the next run.
    assert_eq!(counts(&first), [5, 5, 0, 0, 0, 0, 0]);
    assert_eq!(
        mes_row(&mut mes, 2).await.unwrap(),
        ("Press 2".into(), Some(20), Some("active".into()), false)
    );
    let erp_stamp: String =
        sqlx::query_scalar("SELECT updated_at::text FROM erp.equipment WHERE id = 2")
            .fetch_one(&mut erp)
            .await
            .unwrap();

    // Nothing changed: both sides' re-reads are recognised, nothing is written either way.
    let second = run(&app, &key, &config).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(counts(&second), [10, 0, 0, 10, 0, 0, 0], "{second}");
    let again: String =
        sqlx::query_scalar("SELECT updated_at::text FROM erp.equipment WHERE id = 2")
            .fetch_one(&mut erp)
            .await
            .unwrap();
    assert_eq!(
        again, erp_stamp,
        "the MES echo must not be written back to the ERP"
    );

    // A MES change goes to the ERP through the inverse mappings (lookup read backwards).
    mes.execute("UPDATE equipment SET title = 'Lathe', state = 'retired' WHERE equipment_id = 2")
        .await
        .unwrap();
    let third = run(&app, &key, &config).await;
    assert_eq!(third["rows_updated"], 1, "{third}");
    assert_eq!(
        erp_row(&mut erp, 2).await,
        ("Lathe".into(), Some(20), Some("R".into()), false)
    );
    let mes_stamp: String = sqlx::query_scalar(
        "SELECT CAST(modified_at AS CHAR) FROM equipment WHERE equipment_id = 2",
    )
    .fetch_one(&mut mes)
    .await
    .unwrap();
    // The ERP's write (its trigger moved `updated_at`) is read back next run and skipped.
    let fourth = run(&app, &key, &config).await;
    assert_eq!(fourth["rows_updated"], 0, "{fourth}");
    assert_eq!(fourth["rows_inserted"], 0, "{fourth}");
    let mes_again: String = sqlx::query_scalar(
        "SELECT CAST(modified_at AS CHAR) FROM equipment WHERE equipment_id = 2",
    )
    .fetch_one(&mut mes)
    .await
    .unwrap();
    assert_eq!(mes_again, mes_stamp, "no ping-pong between the two systems");

    // Deletes travel as tombstones, both ways; a new MES row reaches the ERP.
    erp.execute("UPDATE erp.equipment SET deleted = true WHERE id = 3")
        .await
        .unwrap();
    mes.execute("UPDATE equipment SET removed = 1 WHERE equipment_id = 4")
        .await
        .unwrap();
    mes.execute(
        "INSERT INTO equipment (equipment_id, title, quantity, site, state) VALUES (9, 'Saw', 1, 'B', 'active')",
    )
    .await
    .unwrap();
    let fifth = run(&app, &key, &config).await;
    assert_eq!(fifth["status"], "succeeded", "{fifth}");
    assert_eq!(fifth["rows_deleted"], 2, "{fifth}");
    assert_eq!(fifth["rows_inserted"], 1, "{fifth}");
    assert!(mes_row(&mut mes, 3).await.unwrap().3);
    assert!(erp_row(&mut erp, 4).await.3);
    assert_eq!(
        erp_row(&mut erp, 9).await,
        ("Saw".into(), Some(1), Some("A".into()), false)
    );
    let sixth = run(&app, &key, &config).await;
    assert_eq!(
        [
            sixth["rows_inserted"].as_i64(),
            sixth["rows_updated"].as_i64(),
            sixth["rows_deleted"].as_i64()
        ],
        [Some(0), Some(0), Some(0)],
        "{sixth}"
    );
}

/// Changes the same record on both sides: the ERP's `name` (and `qty` when given), the MES's
/// `title` or `quantity`.
pub(super) async fn change_both(
    erp: &mut PgConnection,
    mes: &mut MySqlConnection,
    id: i32,
    erp_set: &str,
    mes_set: &str,
) {
    erp.execute(sqlx::AssertSqlSafe(format!(
        "UPDATE erp.equipment SET {erp_set} WHERE id = {id}"
    )))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    mes.execute(sqlx::AssertSqlSafe(format!(
        "UPDATE equipment SET {mes_set} WHERE equipment_id = {id}"
    )))
    .await
    .unwrap();
}

#[tokio::test]
async fn every_conflict_strategy_settles_a_record_changed_on_both_sides() {
    let (app, key, _db, mut erp, _maria, mut mes, config) = setup_pair().await;
    assert_eq!(run(&app, &key, &config).await["rows_inserted"], 5);

    set_strategy(&app, &key, &config, "source_wins").await;
    change_both(&mut erp, &mut mes, 1, "name = 'ERP 1'", "title = 'MES 1'").await;
    let r = run(&app, &key, &config).await;
    assert_eq!(r["conflicts"], 1, "{r}");
    assert_eq!(erp_row(&mut erp, 1).await.0, "ERP 1");
    assert_eq!(mes_row(&mut mes, 1).await.unwrap().0, "ERP 1");

    set_strategy(&app, &key, &config, "target_wins").await;
    change_both(&mut erp, &mut mes, 2, "name = 'ERP 2'", "title = 'MES 2'").await;
    let r = run(&app, &key, &config).await;
    assert_eq!(r["conflicts"], 1, "{r}");
    assert_eq!(erp_row(&mut erp, 2).await.0, "MES 2");
    assert_eq!(mes_row(&mut mes, 2).await.unwrap().0, "MES 2");

    // Newest wins by the times each side wrote: the MES changed last.
    set_strategy(&app, &key, &config, "newest_wins").await;
    change_both(&mut erp, &mut mes, 3, "name = 'ERP 3'", "title = 'MES 3'").await;
    let r = run(&app, &key, &config).await;
    assert_eq!(r["conflicts"], 1, "{r}");
    assert_eq!(erp_row(&mut erp, 3).await.0, "MES 3");
    // … and now the ERP changed last.
    mes.execute("UPDATE equipment SET title = 'MES 3b' WHERE equipment_id = 3")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    erp.execute("UPDATE erp.equipment SET name = 'ERP 3b' WHERE id = 3")
        .await
        .unwrap();
    let r = run(&app, &key, &config).await;
    assert_eq!(r["conflicts"], 1, "{r}");
    assert_eq!(mes_row(&mut mes, 3).await.unwrap().0, "ERP 3b");

    // Field merge: different fields are merged into both sides…
    set_strategy(&app, &key, &config, "field_merge").await;
    change_both(&mut erp, &mut mes, 4, "name = 'ERP 4'", "quantity = 444").await;
    let r = run(&app, &key, &config).await;
    assert_eq!(r["conflicts"], 1, "{r}");
    assert_eq!(
        erp_row(&mut erp, 4).await,
        ("ERP 4".into(), Some(444), Some("A".into()), false)
    );
    assert_eq!(
        mes_row(&mut mes, 4).await.unwrap(),
        ("ERP 4".into(), Some(444), Some("active".into()), false)
    );
    // … the same field changed on both waits for a person.
    change_both(&mut erp, &mut mes, 4, "qty = 1", "quantity = 2").await;
    let r = run(&app, &key, &config).await;
    assert_eq!(r["conflicts"], 1, "{r}");
    let open = open_conflicts(&app, &key, &config).await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["reason"], "same_fields_changed");
    assert_eq!(open[0]["fields"], json!(["quantity"]));
    let merge_conflict = open[0]["id"].as_str().unwrap().to_owned();

    // Manual: the record waits, the rest of the stream moves on.
    set_strategy(&app, &key, &config, "manual").await;
    change_both(&mut erp, &mut mes, 5, "name = 'ERP 5'", "title = 'MES 5'").await;
    erp.execute("UPDATE erp.equipment SET site = 'Z' WHERE id = 1")
        .await
        .unwrap();
    let r = run(&app, &key, &config).await;
    assert_eq!(r["conflicts"], 1, "{r}");
    assert_eq!(erp_row(&mut erp, 5).await.0, "ERP 5");
    assert_eq!(mes_row(&mut mes, 5).await.unwrap().0, "MES 5");
    let site: Option<String> =
        sqlx::query_scalar("SELECT site FROM equipment WHERE equipment_id = 1")
            .fetch_one(&mut mes)
            .await
            .unwrap();
    assert_eq!(
        site.as_deref(),
        Some("Z"),
        "the rest of the stream keeps moving"
    );
    let manual = open_conflict(&app, &key, &config, "5").await;
    assert_eq!(manual["reason"], "both_changed");
    assert_eq!(manual["source_data"]["title"], "ERP 5");
    assert_eq!(manual["target_data"]["title"], "MES 5");
    assert_eq!(manual["base"]["title"], "Press 5");
    // Another run leaves it waiting (and counts it once).
    let r = run(&app, &key, &config).await;
    assert_eq!(r["conflicts"], 0, "{r}");
    assert_eq!(mes_row(&mut mes, 5).await.unwrap().0, "MES 5");
    // A person merges: both sides get it, from a run started by the resolution.
    let id = manual["id"].as_str().unwrap();
    let bad = json!({"resolution": "merged", "data": {"color": "red"}});
    assert_eq!(resolve(&app, &key, id, bad).await, 400);
    let merged = json!({"resolution": "merged", "data": {"title": "Merged 5"}});
    // Two people at the same moment (both past the open check while the row is held): one
    // resolution is stored, the other is told it came second.
    let mut held = app.pool.begin().await.unwrap();
    sqlx::query("UPDATE sync_conflicts SET updated_at = now() WHERE id = $1::uuid")
        .bind(id)
        .execute(&mut *held)
        .await
        .unwrap();
    let release = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        held.commit().await.unwrap();
    };
    let (a, b, ()) = tokio::join!(
        resolve(&app, &key, id, merged.clone()),
        resolve(&app, &key, id, merged.clone()),
        release
    );
    let mut both = [a.as_u16(), b.as_u16()];
    both.sort();
    assert_eq!(both, [200, 409]);
    assert_eq!(
        resolve(&app, &key, id, json!({"resolution": "source"})).await,
        409
    );
    let done = conflict_when(
        &app,
        &key,
        &config,
        id,
        "the resolution to be written",
        applied,
    )
    .await;
    assert_eq!(done["status"], "resolved");
    assert_eq!(done["resolution"], "merged");
    assert_eq!(erp_row(&mut erp, 5).await.0, "Merged 5");
    assert_eq!(mes_row(&mut mes, 5).await.unwrap().0, "Merged 5");
    // The field-merge conflict resolved for the target's side.
    let target = json!({"resolution": "target"});
    assert_eq!(resolve(&app, &key, &merge_conflict, target).await, 200);
    let second = "the second resolution to be written";
    conflict_when(&app, &key, &config, &merge_conflict, second, applied).await;
    assert_eq!(erp_row(&mut erp, 4).await.1, Some(2));
    // Settled records sync as before.
    let last = run(&app, &key, &config).await;
    assert_eq!(last["conflicts"], 0, "{last}");
    assert_eq!(last["rows_updated"], 0, "{last}");
    // Each conflict left for a person announced itself through the outbox.
    let events = app
        .partner_get(&key, "/v1/events?type=sync.conflict.created")
        .await;
    assert_eq!(events["data"].as_array().unwrap().len(), 2, "{events}");
}

/// The configuration's open conflicts.
pub(super) async fn open_conflicts(app: &TestApp, key: &str, config: &str) -> Vec<Value> {
    let page = app
        .partner_get(
            key,
            &format!("/v1/sync/conflicts?configuration_id={config}&status=open"),
        )
        .await;
    page["data"].as_array().unwrap().clone()
}

/// The open conflict of record `k`.
async fn open_conflict(app: &TestApp, key: &str, config: &str, k: &str) -> Value {
    open_conflicts(app, key, config)
        .await
        .into_iter()
        .find(|c| c["key"] == k)
        .unwrap_or_else(|| panic!("no open conflict for record {k}"))
}

/// Resolves conflict `id` with `body`; the status of the answer.
async fn resolve(app: &TestApp, key: &str, id: &str, body: Value) -> reqwest::StatusCode {
    app.partner_post(key, &format!("/v1/sync/conflicts/{id}/resolve"), body)
        .await
        .status()
}

/// Waits until conflict `id` satisfies `done`, then for the run the resolution started.
pub(super) async fn conflict_when(
    app: &TestApp,
    key: &str,
    config: &str,
    id: &str,
    what: &str,
    done: fn(&Value) -> bool,
) -> Value {
    let c = eventually(Duration::from_secs(30), what, || async {
        let c = app
            .partner_get(key, &format!("/v1/sync/conflicts/{id}"))
            .await;
        done(&c).then_some(c)
    })
    .await;
    idle(app, key, config).await;
    c
}

pub(super) fn applied(c: &Value) -> bool {
    !c["applied_at"].is_null()
}

/// Waits for the configuration's newest run to end.
async fn idle(app: &TestApp, key: &str, config: &str) {
    let runs = app
        .partner_get(
            key,
            &format!("/v1/sync/runs?configuration_id={config}&limit=1"),
        )
        .await;
    let newest = runs["data"][0]["id"].as_str().unwrap().to_owned();
    finished(app, key, &newest).await;
}

/// What must never happen to a record: a side's record that cannot be mapped is not taken for
/// deleted (the other side keeps its record; the change is a poison record), a resolution the
/// ERP refuses opens its conflict again with why, and a resolution that would delete under
/// `delete_policy: ignore` settles without deleting.
#[tokio::test]
async fn unmappable_records_and_unwritable_resolutions_delete_nothing() {
    let (app, key, _db, mut erp, _maria, mut mes, config) = setup_pair().await;
    assert_eq!(run(&app, &key, &config).await["rows_inserted"], 5);
    // The ERP's status leaves the lookup table; the MES then edits the record.
    erp.execute("UPDATE erp.equipment SET status = 'Z' WHERE id = 1")
        .await
        .unwrap();
    let r = run(&app, &key, &config).await;
    // The ERP's change is a poison record (and so is the MES's echo of the record, which
    // cannot be compared with it).
    assert!(r["rows_failed"].as_i64().unwrap() >= 1, "{r}");
    assert_eq!(r["rows_deleted"], 0, "{r}");
    // With the source winning conflicts, an unreadable ERP record must not read as deleted.
    set_strategy(&app, &key, &config, "source_wins").await;
    mes.execute("UPDATE equipment SET quantity = 11 WHERE equipment_id = 1")
        .await
        .unwrap();
    let r = run(&app, &key, &config).await;
    assert_eq!(r["rows_deleted"], 0, "{r}");
    assert!(r["rows_failed"].as_i64().unwrap() >= 1, "{r}");
    let errors = app
        .partner_get(
            &key,
            &format!("/v1/sync/runs/{}/errors", r["id"].as_str().unwrap()),
        )
        .await;
    assert!(errors.to_string().contains("cannot be mapped"), "{errors}");
    assert!(!mes_row(&mut mes, 1).await.unwrap().3, "not deleted");
    assert!(!erp_row(&mut erp, 1).await.3);
    set_strategy(&app, &key, &config, "manual").await;

    // A merged resolution the ERP refuses (quantity is an integer there): open again, with why.
    change_both(&mut erp, &mut mes, 2, "name = 'ERP 2'", "title = 'MES 2'").await;
    run(&app, &key, &config).await;
    let id = open_conflict(&app, &key, &config, "2").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = json!({"resolution": "merged", "data": {"quantity": "twenty"}});
    assert_eq!(resolve(&app, &key, &id, refused).await, 200);
    let reopened = conflict_when(
        &app,
        &key,
        &config,
        &id,
        "the conflict to open again",
        |c| c["status"] == "open" && !c["error"].is_null(),
    )
    .await;
    assert!(
        reopened["error"].as_str().unwrap().contains("refused"),
        "{reopened}"
    );

    // Deleted in the ERP, changed in the MES, resolved for the ERP under `ignore`: settled,
    // nothing deleted.
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/sync/configurations/{config}"),
            json!({"delete_policy": "ignore"}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    change_both(&mut erp, &mut mes, 3, "deleted = true", "title = 'MES 3'").await;
    run(&app, &key, &config).await;
    let deleted = open_conflict(&app, &key, &config, "3").await;
    assert_eq!(deleted["reason"], "deleted_and_changed");
    let id = deleted["id"].as_str().unwrap();
    assert_eq!(
        resolve(&app, &key, id, json!({"resolution": "source"})).await,
        200
    );
    conflict_when(
        &app,
        &key,
        &config,
        id,
        "the resolution to be settled",
        applied,
    )
    .await;
    assert_eq!(
        mes_row(&mut mes, 3).await.unwrap(),
        ("MES 3".into(), Some(30), Some("active".into()), false)
    );
}
