//! Every job has an attempt cap: a poison event dies visibly (counted `dead` with its reason)
//! instead of retrying forever, and the order's later events go on without it.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{
    ADMIN_TOKEN, Behaviour, PartnerServer, TestApp, TestOptions, dashboard::Dashboard, eventually,
};

#[tokio::test]
async fn a_poison_event_dies_visibly_and_does_not_block_its_order() {
    let app = TestApp::spawn(TestOptions {
        args: vec![
            "--job-retry-delay=20ms".into(),
            "--job-retry-max-delay=50ms".into(),
        ],
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["*"]).await;
    // Every fan-out of an `order.created` fails (a poison event, as a bug would make it).
    sqlx::raw_sql(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.event_type = 'order.created' THEN RAISE EXCEPTION 'poisoned event'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER poison BEFORE INSERT ON webhook_messages
           FOR EACH ROW EXECUTE FUNCTION poison();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let order: Value = app.post_order(&key, "poison-1").await.json().await.unwrap();
    let queues = || async {
        let v: Value = app
            .http
            .get(app.url("/admin/v1/queues"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == "event_fan_out")
            .cloned()
            .unwrap()
    };
    let q = eventually(
        Duration::from_secs(30),
        "the event's job to die",
        || async {
            let q = queues().await;
            (q["dead"] == 1).then_some(q)
        },
    )
    .await;
    assert_eq!(q["pending"], 0, "{q}");
    let (attempt, error): (i32, String) = sqlx::query_as(
        "SELECT attempt, last_error FROM jobs WHERE queue = 'event_fan_out' AND state = 'dead'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempt, switchyard_shared::events::FAN_OUT_MAX_ATTEMPTS);
    assert!(
        error.contains("gave up after") && error.contains("poisoned event"),
        "{error}"
    );
    // The order goes on: its next event is delivered.
    let r = app
        .partner_post(
            &key,
            &format!("/v1/orders/{}/status", order["id"].as_str().unwrap()),
            json!({ "status": "confirmed" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(10), "order.confirmed", || async {
        partner
            .received()
            .iter()
            .any(|r| r.json()["type"] == "order.confirmed")
            .then_some(())
    })
    .await;
    assert_eq!(
        partner.count(),
        1,
        "the poisoned order.created never went out"
    );
}

/// A dead-job group is exactly its fingerprint: the dead jobs page links to that group's jobs
/// only, and a bulk action from there (or through the admin API) reaches no other group.
/// Before, the link filtered by the error's text up to its first masked part (`HTTP` for
/// `HTTP #`), which matched `HTTP # with a response body over # bytes` too, and the group of
/// jobs that died with no error matched every dead job of its queue.
#[tokio::test]
async fn a_dead_job_group_reaches_its_own_jobs_only() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    sqlx::raw_sql(
        "INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, last_error)
         SELECT gen_random_uuid(), 'event_fan_out', gen_random_uuid(), gen_random_uuid(), 1, e
           FROM UNNEST(ARRAY['HTTP 503', 'HTTP 502',
                             'HTTP 500 with a response body over 1048576 bytes', NULL]) AS e;
         UPDATE jobs SET state = 'dead', finished_at = now() WHERE queue = 'event_fan_out';
         -- Retried since it died: it keeps its old fingerprint, and is in no group.
         INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, last_error,
                           error_fingerprint)
         VALUES (gen_random_uuid(), 'event_fan_out', gen_random_uuid(), gen_random_uuid(), 1,
                 'HTTP 503', 'HTTP #')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (_, groups) = app.admin_get_json("/admin/v1/jobs/dead-groups").await;
    let mut groups: Vec<(String, i64)> = groups["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["fingerprint"].as_str().unwrap().to_owned(),
                g["count"].as_i64().unwrap(),
            )
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            (String::new(), 1),
            ("HTTP #".to_owned(), 2),
            ("HTTP # with a response body over # bytes".to_owned(), 1)
        ]
    );
    let d = Dashboard::sign_in(&app.base, None, ADMIN_TOKEN).await;
    let (_, dead_page) = d.page("/dashboard/dead").await;
    let csrf = d.csrf().await;
    for (fingerprint, count) in &groups {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'dead' AND error_fingerprint = $1",
        )
        .bind(fingerprint)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let query = format!(
            "queue=event_fan_out&amp;state=dead&amp;fingerprint={}",
            url::form_urlencoded::byte_serialize(fingerprint.as_bytes()).collect::<String>()
        );
        assert!(dead_page.contains(&query), "{query}: {dead_page}");
        let (_, jobs_page) = d
            .page(&format!("/dashboard/jobs?{}", query.replace("&amp;", "&")))
            .await;
        let listed = jobs_page.matches("<a href=\"/dashboard/jobs/").count();
        assert_eq!(listed as i64, *count, "{fingerprint}: {jobs_page}");
        assert!(ids.iter().all(|id| jobs_page.contains(&id.to_string())));
        // A bulk action from that page counts the group's jobs and no others.
        let form = [
            ("csrf", csrf.as_str()),
            ("action", "discard"),
            ("queue", "event_fan_out"),
            ("state", "dead"),
            ("fingerprint", fingerprint.as_str()),
        ];
        let html = d
            .post("/dashboard/jobs/bulk", &form)
            .await
            .text()
            .await
            .unwrap();
        assert!(
            html.contains(&format!("<strong>{count}</strong> job")),
            "{html}"
        );
        let r = app
            .admin_post(
                "/admin/v1/jobs/bulk",
                json!({ "action": "cancel", "queue": "event_fan_out",
                        "error_fingerprint": fingerprint }),
            )
            .await;
        let counted: Value = r.json().await.unwrap();
        assert_eq!(counted["matched"], *count, "{counted}");
    }
}
