//! Syncs with an ERP's HTTP API (a test server playing a REST/OData ERP): OData pages and
//! `$filter` deltas, `Link`-header and cursor pagination, bearer credentials on every call,
//! `429 Retry-After` waited out, and bidirectional write-back with `If-Match` /
//! `If-None-Match: *`, where a write the ERP refuses because its item changed first leaves the
//! record to the next run.

use serde_json::{Value, json};
use sqlx::{Executor, Row};
use switchyard_tests::{
    TestApp, TestOptions,
    mariadb::MariaDb,
    rest_erp::{RestErp, TOKEN},
};

use super::sync::{all_records, configure, integration, run, setup};

/// Waits into the next second: an HTTP API's clock (its `Date` header) has whole seconds, so
/// a change is below a run's watermark only from the next second on.
async fn next_second() {
    let ms = chrono::Utc::now().timestamp_subsec_millis() as u64;
    tokio::time::sleep(std::time::Duration::from_millis(1_050 - ms)).await;
}

async fn http_integration(app: &TestApp, key: &str, erp: &RestErp) -> String {
    let r = app
        .partner_post(
            key,
            "/v1/integrations",
            json!({"name": "REST ERP", "code": "rest-erp", "type": "erp", "provider": "rest",
                   "base_url": erp.url, "credentials": {"bearer_token": TOKEN}}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_odata_erp_is_read_page_by_page_and_then_by_its_delta_filter() {
    let (app, key) = setup(TestOptions::default()).await;
    let erp = RestErp::start().await;
    for i in 1..=5 {
        erp.put(i, &format!(" Press {i} "), i * 10);
    }
    let source = http_integration(&app, &key, &erp).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Equipment over OData", "entity": "equipment", "mode": "incremental",
            "source": {"integration_id": source, "resource": "/odata/Equipment", "key": ["Id"],
                       "http": {"delta": "odata", "page_size": 2}},
            "target": {"store": "switchyard"},
            "cursor": {"strategy": "timestamp", "column": "ModifiedAt", "lag_seconds": 0,
                       "lookback_seconds": 0},
            "mappings": [{"source": "Name", "target": "name", "transform": {"type": "trim"}},
                         {"source": "Qty", "target": "quantity"}],
            "unmapped": "drop",
        }),
    )
    .await;
    // The ERP throttles the first call: the run waits as Retry-After says and goes on.
    erp.throttle(1);
    let first = run(&app, &key, &config).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["rows_read"], 5, "{first}");
    assert_eq!(first["rows_inserted"], 5, "{first}");
    let calls = erp.calls();
    assert_eq!(calls[0].status, 429);
    assert!(
        calls
            .iter()
            .all(|c| c.authorization.as_deref() == Some(&format!("Bearer {TOKEN}") as &str))
    );
    // Three pages of two, the later ones by the server's own links.
    let pages: Vec<&str> = calls
        .iter()
        .filter(|c| c.status == 200)
        .map(|c| c.uri.as_str())
        .collect();
    assert!(
        pages.iter().filter(|u| u.contains("%24skiptoken=")).count() == 2,
        "{pages:?}"
    );
    let records = all_records(&app, &key, "equipment").await;
    assert_eq!(records.len(), 5);
    assert_eq!(
        records[2]["data"],
        json!({"name": "Press 3", "quantity": 30})
    );

    // One change: the next run asks for what changed since the first run's watermark.
    let before = erp.calls().len();
    erp.put(3, "Lathe", 31);
    next_second().await;
    let second = run(&app, &key, &config).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(
        [
            second["rows_read"].as_i64(),
            second["rows_updated"].as_i64()
        ],
        [Some(1), Some(1)],
        "{second}"
    );
    let delta_call = erp.calls()[before..]
        .iter()
        .find(|c| c.uri.contains("filter"))
        .cloned()
        .expect("a delta read");
    assert!(
        delta_call.uri.contains("ModifiedAt+ge+"),
        "{}",
        delta_call.uri
    );
    assert!(
        delta_call.uri.contains("orderby=ModifiedAt+asc%2CId+asc"),
        "{}",
        delta_call.uri
    );
    let records = all_records(&app, &key, "equipment").await;
    assert_eq!(records[2]["data"], json!({"name": "Lathe", "quantity": 31}));
}

#[tokio::test]
async fn rest_erps_are_paged_by_their_link_headers_and_by_cursor_tokens() {
    let (app, key) = setup(TestOptions::default()).await;
    let erp = RestErp::start().await;
    for i in 1..=5 {
        erp.put(i, &format!("Item {i}"), i);
    }
    let source = http_integration(&app, &key, &erp).await;
    for (entity, resource, http) in [
        (
            "linked",
            "/api/items",
            json!({"page_size": 2, "page_size_param": "limit"}),
        ),
        ("tokens", "/api/feed", json!({"pagination": "cursor"})),
        // Offsets, asking 3 per page of an API that gives 2: a short page is not the last.
        (
            "offsets",
            "/api/items",
            json!({"pagination": "offset", "page_size": 3, "page_size_param": "limit"}),
        ),
    ] {
        let config = configure(
            &app,
            &key,
            json!({
                "name": entity, "entity": entity, "mode": "full",
                "source": {"integration_id": source, "resource": resource, "key": ["id"],
                           "http": http},
                "target": {"store": "switchyard"},
            }),
        )
        .await;
        let done = run(&app, &key, &config).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["rows_inserted"], 5, "{entity}: {done}");
        assert_eq!(all_records(&app, &key, entity).await.len(), 5);
    }
    let calls = erp.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.uri.starts_with("/api/items") && c.uri.contains("limit=2"))
            .count(),
        3,
        "three linked pages: {calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.uri.starts_with("/api/items") && c.uri.contains("limit=3"))
            .count(),
        4,
        "three pages of offsets and an empty one: {calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.uri.contains("cursor=4")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_bidirectional_sync_writes_to_the_erp_under_if_match_and_never_over_a_change_it_did_not_see()
 {
    let (app, key) = setup(TestOptions::default()).await;
    let erp = RestErp::start().await;
    for i in 1..=3 {
        erp.put(i, &format!("Item {i}"), i);
    }
    let maria = MariaDb::create().await;
    let mut mes = maria.connect().await;
    mes.execute(
        "CREATE TABLE parts (part_id int PRIMARY KEY, label varchar(100) NOT NULL, amount int,
                             changed_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
                                 ON UPDATE CURRENT_TIMESTAMP(6))",
    )
    .await
    .unwrap();
    let source = http_integration(&app, &key, &erp).await;
    let target = integration(&app, &key, "mysql", &maria.user_url()).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Parts ERP ⇄ MES", "entity": "parts", "direction": "bidirectional",
            "mode": "incremental",
            "source": {"integration_id": source, "resource": "/api/items", "key": ["id"]},
            "target": {"integration_id": target, "table": "parts",
                       "cursor": {"strategy": "timestamp", "column": "changed_at",
                                  "lag_seconds": 0}},
            "cursor": {"strategy": "timestamp", "column": "updated_at", "lag_seconds": 0},
            "mappings": [{"source": "id", "target": "part_id"},
                         {"source": "name", "target": "label"},
                         {"source": "qty", "target": "amount"}],
            "delete_policy": "ignore",
            "conflict_strategy": "source_wins",
        }),
    )
    .await;
    next_second().await;
    let first = run(&app, &key, &config).await;
    assert_eq!(first["rows_inserted"], 3, "{first}");

    // A MES change goes to the ERP with the item's ETag; a new MES part is created only if the
    // ERP has no item with its id.
    mes.execute("UPDATE parts SET label = 'Bolt' WHERE part_id = 2")
        .await
        .unwrap();
    mes.execute("INSERT INTO parts (part_id, label, amount) VALUES (7, 'Nut', 70)")
        .await
        .unwrap();
    let second = run(&app, &key, &config).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(
        [
            second["rows_updated"].as_i64(),
            second["rows_inserted"].as_i64()
        ],
        [Some(1), Some(1)],
        "{second}"
    );
    assert_eq!(erp.get(2).unwrap().name, "Bolt");
    assert_eq!(erp.get(7).unwrap().qty, 70);
    let writes: Vec<_> = erp
        .calls()
        .into_iter()
        .filter(|c| c.method == "PUT")
        .collect();
    assert_eq!(writes.len(), 2, "{writes:?}");
    let update = writes.iter().find(|c| c.uri == "/api/items/2").unwrap();
    assert!(
        update
            .if_match
            .as_deref()
            .is_some_and(|t| t.starts_with("W/")),
        "{update:?}"
    );
    let create = writes.iter().find(|c| c.uri == "/api/items/7").unwrap();
    assert_eq!(create.if_none_match.as_deref(), Some("*"));

    // Someone edits item 1 in the ERP just before the sync writes the MES's change to it: the
    // ERP refuses the write (412), nothing is overwritten, and the next run finds both changes
    // and settles them by the strategy (source wins: the ERP's edit).
    mes.execute("UPDATE parts SET label = 'Washer' WHERE part_id = 1")
        .await
        .unwrap();
    erp.meddle_before_next_write(1);
    next_second().await;
    let third = run(&app, &key, &config).await;
    assert_eq!(third["status"], "succeeded", "{third}");
    assert_eq!(third["rows_updated"], 0, "{third}");
    assert!(
        erp.calls()
            .iter()
            .any(|c| c.uri == "/api/items/1" && c.status == 412)
    );
    assert_eq!(erp.get(1).unwrap().name, "Item 1 (edited in the ERP)");
    next_second().await;
    let fourth = run(&app, &key, &config).await;
    assert_eq!(fourth["conflicts"], 1, "{fourth}");
    let label: String = sqlx::query("SELECT label FROM parts WHERE part_id = 1")
        .fetch_one(&mut mes)
        .await
        .unwrap()
        .get(0);
    assert_eq!(label, "Item 1 (edited in the ERP)");
}

/// One way, the store decides: a write the ERP refuses because its item changed after the read
/// (412) is read again and written once more, over the ERP's edit.
#[tokio::test]
async fn an_outbound_write_refused_for_a_changed_item_is_read_again_and_written() {
    let (app, key) = setup(TestOptions::default()).await;
    let erp = RestErp::start().await;
    erp.put(1, "Old", 1);
    let target = http_integration(&app, &key, &erp).await;
    let r = reqwest::Client::new()
        .put(app.url("/v1/sync/records/items/1"))
        .bearer_auth(&key)
        .json(&json!({"data": {"name": "From the store", "qty": 5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "Items out", "entity": "items", "direction": "outbound", "mode": "incremental",
            "source": {"store": "switchyard"},
            "target": {"integration_id": target, "resource": "/api/items", "key": ["id"]},
            "mappings": [{"source": "name", "target": "name"}, {"source": "qty", "target": "qty"}],
            "delete_policy": "hard",
        }),
    )
    .await;
    erp.meddle_before_next_write(1);
    let done = run(&app, &key, &config).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["rows_updated"], 1, "{done}");
    let item = erp.get(1).unwrap();
    assert_eq!((item.name.as_str(), item.qty), ("From the store", 5));
    let puts: Vec<u16> = erp
        .calls()
        .into_iter()
        .filter(|c| c.method == "PUT" && c.uri == "/api/items/1")
        .map(|c| c.status)
        .collect();
    assert_eq!(puts, [412, 200]);
}

/// An API that ignores the page asked for answers its first page again and again: the run
/// fails and says why, instead of reading (and counting) the same rows without end.
#[tokio::test]
async fn an_api_that_repeats_its_page_fails_the_run_instead_of_looping() {
    let (app, key) = setup(TestOptions {
        args: vec!["--job-retry-delay=50ms".into()],
        ..Default::default()
    })
    .await;
    let erp = RestErp::start().await;
    for i in 1..=5 {
        erp.put(i, &format!("Item {i}"), i);
    }
    let source = http_integration(&app, &key, &erp).await;
    let config = configure(
        &app,
        &key,
        json!({
            "name": "stuck", "entity": "stuck", "mode": "full",
            "source": {"integration_id": source, "resource": "/api/items", "key": ["id"],
                       "http": {"pagination": "page", "page_param": "p", "page_size": 2,
                                "page_size_param": "limit"}},
            "target": {"store": "switchyard"},
        }),
    )
    .await;
    let done = run(&app, &key, &config).await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("does not move on"), "{done}");
}
