//! Live SQL Server tests. No SQL Server can run on the machines this project is built on, so
//! these run only where one is given: `MSSQL_TEST_URL=mssql://user:password@host:1433/db?trust_server_certificate=true
//! cargo test -p switchyard-tests mssql -- --ignored`. The T-SQL the adapter sends and the
//! type mapping are tested exactly without a server (`shared/src/sync/adapters/tsql.rs`,
//! `mssql_types.rs`).

use serde_json::json;
use switchyard_shared::{integrations::sql::SqlUrl, net::Egress};
use switchyard_tests::TestOptions;

use super::sync::{all_records, configure, integration, run, setup};

/// A connection to the server under test, and a name for this test's tables.
async fn server() -> (
    switchyard_shared::integrations::sql::MsSqlClient,
    String,
    String,
) {
    let url = std::env::var("MSSQL_TEST_URL").expect("MSSQL_TEST_URL names a SQL Server");
    let parsed = SqlUrl::parse("mssql", &url).unwrap();
    let addr = parsed.vet(&Egress::open()).await.unwrap();
    let client = parsed.mssql_connect(&addr).await.unwrap();
    let name = format!("sy_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    (client, url, name)
}

async fn exec(client: &mut switchyard_shared::integrations::sql::MsSqlClient, sql: &str) {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs a SQL Server: set MSSQL_TEST_URL and run with --ignored"]
async fn rowversion_and_change_tracking_reads_and_conditional_writes_on_a_live_server() {
    let (mut sql, url, t) = server().await;
    exec(
        &mut sql,
        &format!(
            "CREATE TABLE dbo.{t} (Id int PRIMARY KEY, Name nvarchar(100) NOT NULL,
                                    Price decimal(10,2), Guid uniqueidentifier,
                                    Seen datetimeoffset, Active bit NOT NULL DEFAULT 1, RV rowversion);
             INSERT INTO dbo.{t} (Id, Name, Price, Guid, Seen) VALUES
               (1, N'Grüße', 12.50, NEWID(), SYSDATETIMEOFFSET()), (2, N'Press', 3.10, NULL, NULL);"
        ),
    )
    .await;
    let (app, key) = setup(TestOptions::default()).await;
    let source = integration(&app, &key, "mssql", &url).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "MSSQL", "entity": "mssql_items", "mode": "incremental",
            "source": {"integration_id": source, "table": format!("dbo.{t}"), "key": ["Id"]},
            "target": {"store": "switchyard"},
            "cursor": {"strategy": "rowversion", "column": "RV"},
        }),
    )
    .await;
    let first = run(&app, &key, &config).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["rows_inserted"], 2, "{first}");
    exec(
        &mut sql,
        &format!("UPDATE dbo.{t} SET Price = 13 WHERE Id = 1"),
    )
    .await;
    let second = run(&app, &key, &config).await;
    assert_eq!(
        [
            second["rows_read"].as_i64(),
            second["rows_updated"].as_i64()
        ],
        [Some(1), Some(1)],
        "{second}"
    );
    let records = all_records(&app, &key, "mssql_items").await;
    let one = records.iter().find(|r| r["key"] == "1").unwrap();
    assert_eq!(one["data"]["Name"], "Grüße");
    assert_eq!(one["data"]["Price"], json!(13.0));
    assert_eq!(one["data"]["Active"], true);

    // Change Tracking: deletes arrive as deletes.
    let ct = format!("{t}_ct");
    exec(
        &mut sql,
        &format!(
            "CREATE TABLE dbo.{ct} (Id int PRIMARY KEY, Name nvarchar(50));
                             INSERT INTO dbo.{ct} VALUES (1, N'a'), (2, N'b');"
        ),
    )
    .await;
    let enabled = match sql
        .simple_query(format!("ALTER TABLE dbo.{ct} ENABLE CHANGE_TRACKING"))
        .await
    {
        Ok(done) => done.into_results().await.is_ok(),
        Err(_) => false,
    };
    if enabled {
        let config = configure(
            &app,
            &key,
            json!({
                "name": "CT", "entity": "mssql_ct", "mode": "incremental",
                "source": {"integration_id": source, "table": format!("dbo.{ct}"), "key": ["Id"]},
                "target": {"store": "switchyard"},
                "cursor": {"strategy": "change_tracking"},
            }),
        )
        .await;
        let r = run(&app, &key, &config).await;
        // A database without Change Tracking refuses; one with it reads the table, then changes.
        if r["status"] == "succeeded" {
            exec(&mut sql, &format!("DELETE FROM dbo.{ct} WHERE Id = 2")).await;
            let r = run(&app, &key, &config).await;
            assert_eq!(r["rows_deleted"], 1, "{r}");
        }
    }

    // Outbound writes: the store's records written to a table, keyed and conditional.
    let out = format!("{t}_out");
    exec(
        &mut sql,
        &format!("CREATE TABLE dbo.{out} (Id nvarchar(20) PRIMARY KEY, Name nvarchar(100))"),
    )
    .await;
    let target = integration(&app, &key, "mssql", &url).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Out", "entity": "mssql_items", "direction": "outbound", "mode": "full",
            "source": {"store": "switchyard"},
            "target": {"integration_id": target, "table": format!("dbo.{out}"), "key": ["Id"]},
            "mappings": [{"source": "Name", "target": "Name"}],
            "delete_policy": "hard",
        }),
    )
    .await;
    let r = run(&app, &key, &config).await;
    assert_eq!(r["rows_inserted"], 2, "{r}");
    let rows = sql
        .simple_query(format!("SELECT Name FROM dbo.{out} WHERE Id = N'1'"))
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.get::<&str, _>(0), Some("Grüße"));
    for table in [&t, &ct, &out] {
        exec(&mut sql, &format!("DROP TABLE IF EXISTS dbo.{table}")).await;
    }
}
