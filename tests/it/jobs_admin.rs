//! Operators browse the ledger: jobs by state, queue, tenant and error text, page by page, and
//! one job in detail with its delivery attempts.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually};

#[tokio::test]
async fn operators_filter_page_and_inspect_jobs() {
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "100ms,100ms".into(),
        ..Default::default()
    })
    .await;
    let failing = PartnerServer::start(Behaviour::Status(503)).await;
    let healthy = PartnerServer::start(Behaviour::Status(200)).await;
    let (tenant, key) = app.partner_account().await;
    let (other_tenant, other_key) = app.partner_account().await;
    app.create_endpoint(&key, &failing.url, &["order.created"])
        .await;
    app.create_endpoint(&other_key, &healthy.url, &["order.created"])
        .await;
    for i in 0..3 {
        assert_eq!(
            app.post_order(&key, &format!("dead-{i}")).await.status(),
            201
        );
    }
    assert_eq!(app.post_order(&other_key, "fine").await.status(), 201);
    let dead = eventually(Duration::from_secs(20), "three dead deliveries", || async {
        let (_, list) = app
            .admin_get_json("/admin/v1/jobs?state=dead&limit=100")
            .await;
        let data = list["data"].as_array().unwrap().clone();
        (data.len() == 3 && healthy.count() == 1).then_some(data)
    })
    .await;
    for job in &dead {
        assert_eq!(job["queue"], "webhook_deliveries");
        assert_eq!(job["state"], "dead");
        assert_eq!(job["tenant_id"], tenant.as_str());
        assert_eq!(job["attempt"], 3);
        assert!(job["finished_at"].is_string());
    }
    let finished: Vec<&str> = dead
        .iter()
        .map(|j| j["finished_at"].as_str().unwrap())
        .collect();
    assert!(
        finished.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {finished:?}"
    );

    // Filters.
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, mine) = app
        .admin_get_json(&format!(
            "/admin/v1/jobs?tenant_id={other_tenant}&queue=webhook_deliveries"
        ))
        .await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 1);
    assert_eq!(mine["data"][0]["state"], "succeeded");
    let error = dead[0]["last_error"].as_str().unwrap();
    let word = error.split_whitespace().next().unwrap().to_lowercase();
    let (_, matched) = app
        .admin_get_json(&format!("/admin/v1/jobs?state=dead&error={}", word))
        .await;
    assert_eq!(
        matched["data"].as_array().unwrap().len(),
        3,
        "{error} / {word}"
    );
    let (_, none) = app
        .admin_get_json("/admin/v1/jobs?state=dead&error=%25_no_such_error")
        .await;
    assert_eq!(none["data"], serde_json::json!([]));
    let (_, fan_outs) = app
        .admin_get_json("/admin/v1/jobs?queue=event_fan_out&state=succeeded")
        .await;
    assert_eq!(fan_outs["data"].as_array().unwrap().len(), 4);

    // Pages: each job once, in the same order.
    let mut paged = vec![];
    let mut after = String::new();
    loop {
        let q = format!("/admin/v1/jobs?state=dead&limit=1{after}");
        let (_, page) = app.admin_get_json(&q).await;
        paged.extend(ids(&page));
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        after = format!("&starting_after={}", paged.last().unwrap());
    }
    let all: Vec<String> = dead
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paged, all);
    let (_, newest) = app.admin_get_json("/admin/v1/jobs?limit=100").await;
    let newest = ids(&newest);
    let mut sorted = newest.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(newest, sorted, "unfiltered: newest made first");

    // One job in detail: the delivery it works on and each attempt.
    let (status, detail) = app
        .admin_get_json(&format!("/admin/v1/jobs/{}", all[0]))
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["subject"]["kind"], "webhook_delivery");
    let path = detail["subject"]["path"].as_str().unwrap();
    assert_eq!(app.partner_get(&key, path).await["status"], "failed");
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a["status_code"] == 503));
    assert_eq!(attempts[0]["attempt"], 1);

    // Dead jobs by error fingerprint: the three failures are one group.
    let (status, groups) = app.admin_get_json("/admin/v1/jobs/dead-groups").await;
    assert_eq!(status, 200, "{groups}");
    let groups = groups["data"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["queue"], "webhook_deliveries");
    assert_eq!(groups[0]["count"], 3);
    assert!(all.contains(&groups[0]["example_id"].as_str().unwrap().to_owned()));
    assert!(!groups[0]["fingerprint"].as_str().unwrap().contains("503"));
    let (_, none) = app
        .admin_get_json("/admin/v1/jobs/dead-groups?queue=sync_runs")
        .await;
    assert_eq!(none["data"], serde_json::json!([]));

    let (status, _) = app
        .admin_get_json(&format!("/admin/v1/jobs/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(status, 404);
    let r = app
        .http
        .get(app.url("/admin/v1/jobs"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn dead_jobs(app: &TestApp, n: usize) -> Vec<String> {
    eventually(Duration::from_secs(20), "dead deliveries", || async {
        let (_, list) = app
            .admin_get_json("/admin/v1/jobs?state=dead&limit=100")
            .await;
        let ids: Vec<String> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect();
        (ids.len() == n).then_some(ids)
    })
    .await
}

/// An app whose partner answers 503 (no breaker in the way) and `n` orders whose deliveries
/// died: the app, the partner, the partner's API key and the dead jobs' ids.
async fn dead_deliveries(n: usize) -> (TestApp, PartnerServer, String, Vec<String>) {
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "100ms,100ms".into(),
        breaker_min_attempts: 1000,
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(503)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["order.created"])
        .await;
    for i in 0..n {
        assert_eq!(app.post_order(&key, &format!("r-{i}")).await.status(), 201);
    }
    let dead = dead_jobs(&app, n).await;
    (app, partner, key, dead)
}

async fn deliveries(app: &TestApp, status: &str) -> i64 {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = $1")
        .bind(status)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn operators_retry_cancel_and_discard_jobs_one_by_one_or_in_bulk() {
    let (app, partner, key, dead) = dead_deliveries(4).await;
    partner.set_behaviour(Behaviour::Status(200));

    // One job: it runs again from its first attempt and its delivery succeeds.
    let (status, body) = app
        .admin_post_json(&format!("/admin/v1/jobs/{}/retry", dead[0]), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(10), "the retried delivery", || async {
        (deliveries(&app, "succeeded").await == 1).then_some(())
    })
    .await;
    let (_, job) = app
        .admin_get_json(&format!("/admin/v1/jobs/{}", dead[0]))
        .await;
    assert_eq!(job["state"], "succeeded");
    let (status, body) = app
        .admin_post_json(&format!("/admin/v1/jobs/{}/retry", dead[0]), json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("job_state_conflict"))
    );

    // In bulk: a dry run counts, a wrong confirmation is refused, the right one acts.
    let filter = json!({"action": "retry", "queue": "webhook_deliveries", "state": "dead"});
    let (status, dry) = app
        .admin_post_json("/admin/v1/jobs/bulk", filter.clone())
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (
            dry["dry_run"].as_bool(),
            dry["matched"].as_i64(),
            dry["done"].as_i64()
        ),
        (Some(true), Some(3), Some(0))
    );
    assert_eq!(
        deliveries(&app, "failed").await,
        3,
        "a dry run changes nothing"
    );
    let mut act = filter.clone();
    act["dry_run"] = json!(false);
    act["confirm"] = json!(2);
    let (status, body) = app
        .admin_post_json("/admin/v1/jobs/bulk", act.clone())
        .await;
    assert_eq!(
        (status, body["code"].as_str(), body["param"].as_str()),
        (409, Some("confirmation_mismatch"), Some("confirm"))
    );
    act["confirm"] = json!(3);
    let (status, done) = app.admin_post_json("/admin/v1/jobs/bulk", act).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["done"].as_i64(), done["remaining"].as_i64()),
        (Some(3), Some(0))
    );
    eventually(
        Duration::from_secs(10),
        "every retried delivery",
        || async { (deliveries(&app, "succeeded").await == 4).then_some(()) },
    )
    .await;

    // Cancel: waiting deliveries (their queue paused) are cancelled with their rows.
    app.admin_post_json("/admin/v1/queues/webhook_deliveries/pause", json!({}))
        .await;
    for i in 0..2 {
        assert_eq!(app.post_order(&key, &format!("c-{i}")).await.status(), 201);
    }
    let cancel = json!({"action": "cancel", "queue": "webhook_deliveries", "state": "pending"});
    let matched = eventually(
        Duration::from_secs(10),
        "two waiting deliveries",
        || async {
            let (_, dry) = app
                .admin_post_json("/admin/v1/jobs/bulk", cancel.clone())
                .await;
            (dry["matched"] == 2).then_some(dry["matched"].clone())
        },
    )
    .await;
    let mut act = cancel.clone();
    act["dry_run"] = json!(false);
    act["confirm"] = matched;
    let (status, done) = app.admin_post_json("/admin/v1/jobs/bulk", act).await;
    assert_eq!((status, done["done"].as_i64()), (200, Some(2)));
    assert_eq!(deliveries(&app, "cancelled").await, 2);
    app.admin_post_json("/admin/v1/queues/webhook_deliveries/resume", json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        deliveries(&app, "succeeded").await,
        4,
        "cancelled deliveries are not sent"
    );

    // Discard: a dead job leaves the ledger; its delivery stays failed.
    partner.set_behaviour(Behaviour::Status(503));
    assert_eq!(app.post_order(&key, "d-1").await.status(), 201);
    let dead = dead_jobs(&app, 1).await;
    let (status, _) = app
        .admin_post_json(&format!("/admin/v1/jobs/{}/discard", dead[0]), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .admin_get_json(&format!("/admin/v1/jobs/{}", dead[0]))
        .await;
    assert_eq!(status, 404);
    assert_eq!(deliveries(&app, "failed").await, 1);
    let (status, _) = app
        .admin_post_json(&format!("/admin/v1/jobs/{}/explode", dead[0]), json!({}))
        .await;
    assert_eq!(status, 404, "no such action");

    // Every action is in the audit log.
    let audited = app
        .count("SELECT count(*) FROM audit_events WHERE target_type = 'job'")
        .await;
    assert_eq!(audited, 4, "retry, bulk retry, bulk cancel, discard");
}

/// An operator's action commits with its audit event: when the event cannot be written, the
/// action does not happen (one job, or a bulk action's batch).
#[tokio::test]
async fn a_job_action_whose_audit_event_cannot_be_written_does_not_happen() {
    let (app, _partner, _, dead) = dead_deliveries(2).await;
    let dead_now = || async {
        app.count("SELECT count(*) FROM jobs WHERE state = 'dead'")
            .await
    };
    sqlx::query(
        "ALTER TABLE audit_events ADD CONSTRAINT no_job_events CHECK (target_type <> 'job')",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let (status, _) = app
        .admin_post_json(&format!("/admin/v1/jobs/{}/retry", dead[0]), json!({}))
        .await;
    assert_eq!(status, 500);
    let bulk = json!({"action": "retry", "queue": "webhook_deliveries", "state": "dead",
                      "dry_run": false, "confirm": 2});
    let (status, _) = app
        .admin_post_json("/admin/v1/jobs/bulk", bulk.clone())
        .await;
    assert_eq!(status, 500);
    assert_eq!(
        dead_now().await,
        2,
        "nothing was retried without its audit event"
    );

    sqlx::query("ALTER TABLE audit_events DROP CONSTRAINT no_job_events")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, done) = app.admin_post_json("/admin/v1/jobs/bulk", bulk).await;
    assert_eq!((status, done["done"].as_i64()), (200, Some(2)), "{done}");
    let audited = app
        .count("SELECT count(*) FROM audit_events WHERE action = 'jobs.bulk_retry'")
        .await;
    assert_eq!(audited, 1, "one batch, one event");
}

/// A delivery that died, was resent by its partner and died again has two dead jobs; a bulk
/// retry of dead jobs revives only the one the delivery names, so it is sent once, not twice
/// at the same time.
#[tokio::test]
async fn a_bulk_retry_revives_a_delivery_by_its_current_job_only() {
    let (app, partner, key, dead) = dead_deliveries(1).await;
    let delivery: uuid::Uuid = sqlx::query_scalar("SELECT subject_id FROM jobs WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&dead[0]).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let r = app
        .partner_post(
            &key,
            &format!("/v1/webhook-deliveries/{delivery}/retry"),
            json!({}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let both = dead_jobs(&app, 2).await;
    let sent = partner.count();
    partner.set_behaviour(Behaviour::Status(200));
    let act = json!({"action": "retry", "queue": "webhook_deliveries", "state": "dead",
                     "dry_run": false, "confirm": 2});
    let (status, done) = app.admin_post_json("/admin/v1/jobs/bulk", act).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["done"], 1, "one job of the two: {done}");
    eventually(Duration::from_secs(10), "the delivery", || async {
        (deliveries(&app, "succeeded").await == 1).then_some(())
    })
    .await;
    let (current, states): (uuid::Uuid, Vec<String>) = sqlx::query_as(
        "SELECT d.job_id, array_agg(j.state ORDER BY j.id)
           FROM webhook_deliveries d JOIN jobs j ON j.subject_id = d.id
          WHERE d.id = $1 GROUP BY d.job_id",
    )
    .bind(delivery)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(states, ["dead", "succeeded"], "the first job stays dead");
    assert!(both.contains(&current.to_string()));
    assert_eq!(partner.count(), sent + 1, "sent once");
}
