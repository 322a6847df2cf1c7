//! The dashboard over plain HTTP: signing in and out, session expiry, CSRF and same-origin
//! checks, roles, the audit trail of every action, and one overview poll however many
//! browsers watch. (What a person sees and clicks: `dashboard_browser`.)

use std::time::Duration;

use futures::StreamExt;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use switchyard_tests::{
    ADMIN_TOKEN, Behaviour, PartnerServer, TestApp, TestOptions, dashboard::Dashboard, eventually,
};

/// Creates an operator account; returns `(id, email, secret)`.
pub(super) async fn operator(app: &TestApp, role: &str) -> (String, String, String) {
    let email = format!("{role}-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, body) = app
        .admin_post_json(
            "/admin/v1/operators",
            json!({"email": email, "name": "Pat Operator", "role": role}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["secret"].as_str().unwrap().starts_with("syop_"));
    (
        body["id"].as_str().unwrap().to_owned(),
        email,
        body["secret"].as_str().unwrap().to_owned(),
    )
}

/// The audit entries of operators' actions, oldest first: `(actor_type, actor_id, action,
/// changes)`.
async fn audit(app: &TestApp) -> Vec<(String, Option<uuid::Uuid>, String, Value)> {
    sqlx::query_as(
        "SELECT actor_type, actor_id, action, changes FROM audit_events
          WHERE action LIKE 'job%' OR action LIKE 'queue.%' OR action LIKE 'sync_conflict.%'
          ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn sign_in_takes_valid_credentials_only_and_sessions_end() {
    let mut app = TestApp::spawn(TestOptions {
        args: vec![
            "--dashboard-session-ttl=2s".into(),
            "--trusted-proxies=127.0.0.1/32".into(),
        ],
        ..TestOptions::no_worker()
    })
    .await;
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    // Signed out: to the sign-in page, which comes back here after.
    let r = http
        .get(app.url("/dashboard/jobs?state=dead"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        location(&r),
        "/dashboard/login?next=%2Fdashboard%2Fjobs%3Fstate%3Ddead"
    );
    // Wrong credentials: no session.
    let r = http
        .post(app.url("/dashboard/login"))
        .form(&[("secret", "not-the-token"), ("next", "/dashboard")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).contains("error=invalid"));
    assert!(r.headers().get("set-cookie").is_none());
    let (_, email, secret) = operator(&app, "operator").await;
    let r = http
        .post(app.url("/dashboard/login"))
        .form(&[("email", email.as_str()), ("secret", "syop_wrong")])
        .send()
        .await
        .unwrap();
    assert!(location(&r).contains("error=invalid"));
    // Sign-in from another site is refused; `next` never leaves the dashboard.
    let r = http
        .post(app.url("/dashboard/login"))
        .header("origin", "https://evil.example")
        .form(&[("secret", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(app.url("/dashboard/login"))
        .form(&[
            ("email", email.as_str()),
            ("secret", secret.as_str()),
            ("next", "//evil.example/x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r), "/dashboard");

    // Behind a TLS-terminating proxy the cookie is Secure; over plain HTTP it cannot be.
    let r = http
        .post(app.url("/dashboard/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("secret", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let r = http
        .post(app.url("/dashboard/login"))
        .form(&[("secret", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(
        !r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
    let d = Dashboard::sign_in(&app.base, None, ADMIN_TOKEN).await;
    let (status, html) = d.page("/dashboard").await;
    assert_eq!(status, 200);
    assert!(html.contains("admin token"), "{html}");
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM dashboard_sessions")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let token = d.cookie.split_once('=').unwrap().1;
    assert!(
        stored.iter().all(|h| h.as_slice() != token.as_bytes()),
        "only the token's hash is stored"
    );
    // Two seconds later the session is over, the live stream too.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = d.get("/dashboard").await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).contains("error=expired"), "{}", location(&r));
    assert_eq!(d.get("/dashboard/live").await.status(), 401);
    // A form sent after the end comes back to the overview after signing in, not to itself.
    let r = d
        .post(
            "/dashboard/queues/webhook_deliveries/pause",
            &[("csrf", "x")],
        )
        .await;
    assert_eq!(
        location(&r),
        "/dashboard/login?next=%2Fdashboard&error=expired"
    );
    // The janitor removes expired sessions (a worker runs it).
    app.start_worker();
    eventually(
        Duration::from_secs(15),
        "expired sessions purged",
        || async {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM dashboard_sessions WHERE expires_at < now()",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (left == 0).then_some(())
        },
    )
    .await;

    // Signing out ends a session at once.
    let d = Dashboard::sign_in(&app.base, Some(&email), &secret).await;
    let csrf = d.csrf().await;
    let r = d.post("/dashboard/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(d.get("/dashboard").await.status(), 303);
}

#[tokio::test]
async fn too_many_failed_sign_ins_lock_the_address_out() {
    let app = TestApp::spawn(TestOptions {
        args: vec!["--auth-failures-per-minute=2".into()],
        ..TestOptions::no_worker()
    })
    .await;
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let sign_in = |secret: &'static str| {
        http.post(app.url("/dashboard/login"))
            .form(&[("secret", secret)])
            .send()
    };
    for _ in 0..2 {
        let r = sign_in("wrong-token").await.unwrap();
        assert!(location(&r).contains("error=invalid"));
    }
    // The third failure is one too many; then even the right token waits.
    assert_eq!(sign_in("wrong-token").await.unwrap().status(), 429);
    let r = sign_in(ADMIN_TOKEN).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn actions_need_the_csrf_token_the_same_origin_and_the_operator_role() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let pause = "/dashboard/queues/webhook_deliveries/pause";
    let paused = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM queue_pauses")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let (operator_id, email, secret) = operator(&app, "operator").await;
    let d = Dashboard::sign_in(&app.base, Some(&email), &secret).await;
    let other = Dashboard::sign_in(&app.base, None, ADMIN_TOKEN).await;
    // No token, another session's token, another site: refused, nothing changed.
    assert_eq!(d.post(pause, &[]).await.status(), 403);
    let foreign = other.csrf().await;
    assert_eq!(d.post(pause, &[("csrf", &foreign)]).await.status(), 403);
    let csrf = d.csrf().await;
    let r = d
        .http
        .post(format!("{}{pause}", app.base))
        .header("cookie", &d.cookie)
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(paused().await, 0);
    assert!(audit(&app).await.is_empty());

    // A viewer sees the page without its buttons, and is refused with a valid token.
    let (_, viewer_email, viewer_secret) = operator(&app, "viewer").await;
    let v = Dashboard::sign_in(&app.base, Some(&viewer_email), &viewer_secret).await;
    let (status, html) = v.page("/dashboard").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("viewer") && !html.contains("/pause\""),
        "{html}"
    );
    let viewer_csrf = v.csrf().await;
    let r = v.post(pause, &[("csrf", &viewer_csrf)]).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("viewer"));
    assert_eq!(paused().await, 0);

    // The operator, with the token: done, and audited as theirs.
    let r = d.post(pause, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(paused().await, 1);
    let entries = audit(&app).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].0, "operator");
    assert_eq!(entries[0].1.unwrap().to_string(), operator_id);
    assert_eq!(entries[0].2, "queue.paused");
    assert_eq!(entries[0].3["queue"], "webhook_deliveries");

    // Accounts are listed without secrets; a deleted account's sessions end at once.
    let (_, list) = app.admin_get_json("/admin/v1/operators").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains("syop_"));
    let r = app
        .http
        .delete(app.url(&format!("/admin/v1/operators/{operator_id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(d.get("/dashboard").await.status(), 303);
    let (status, _) = app
        .admin_post_json(
            "/admin/v1/operators",
            json!({"email": viewer_email.to_uppercase(), "name": "Again", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 409, "emails are unique whatever their case");
}

#[tokio::test]
async fn every_action_from_the_dashboard_is_audited() {
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "100ms,100ms".into(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(503)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["order.created"])
        .await;
    for i in 0..3 {
        assert_eq!(app.post_order(&key, &format!("o-{i}")).await.status(), 201);
    }
    let dead = eventually(Duration::from_secs(20), "three dead deliveries", || async {
        let (_, list) = app
            .admin_get_json("/admin/v1/jobs?state=dead&queue=webhook_deliveries")
            .await;
        let data = list["data"].as_array().unwrap().clone();
        (data.len() == 3).then_some(data)
    })
    .await;
    let (operator_id, email, secret) = operator(&app, "operator").await;
    let d = Dashboard::sign_in(&app.base, Some(&email), &secret).await;
    let csrf = d.csrf().await;

    // A dead job's page: its attempts, each with its answer.
    let first = dead[0]["id"].as_str().unwrap();
    let (status, html) = d.page(&format!("/dashboard/jobs/{first}")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<h2>Attempts</h2>") && html.contains("503"),
        "{html}"
    );
    // The jobs list filters (an unknown tenant id is explained, not a failure).
    let (_, html) = d
        .page("/dashboard/jobs?state=dead&queue=webhook_deliveries")
        .await;
    assert_eq!(html.matches("href=\"/dashboard/jobs/").count(), 3, "{html}");
    let (status, html) = d.page("/dashboard/jobs?tenant=nope").await;
    assert_eq!(status, 200);
    assert!(html.contains("is not a tenant id"));
    let (_, html) = d.page("/dashboard/jobs?id=nope").await;
    assert!(html.contains("is not a job id"));
    let r = d.get(&format!("/dashboard/jobs?id={first}")).await;
    assert_eq!(location(&r), format!("/dashboard/jobs/{first}"));

    // Discard one.
    let r = d
        .post(
            &format!("/dashboard/jobs/{first}/discard"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        location(&r),
        format!("/dashboard/jobs/{first}?done=discard")
    );
    // Bulk retry the others: a count first, then that count typed back.
    partner.set_behaviour(Behaviour::Status(200));
    let filter = [("queue", "webhook_deliveries"), ("state", "dead")];
    let mut form = vec![("csrf", csrf.as_str()), ("action", "retry")];
    form.extend(filter);
    let (status, html) = {
        let r = d.post("/dashboard/jobs/bulk", &form).await;
        (r.status(), r.text().await.unwrap())
    };
    assert_eq!(status, 200);
    assert!(html.contains("<strong>2</strong> jobs match"), "{html}");
    let mut wrong = form.clone();
    wrong.push(("confirm", "3"));
    let html = d
        .post("/dashboard/jobs/bulk", &wrong)
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("matches 2 jobs now"), "{html}");
    assert_eq!(partner.count(), 9, "nothing retried on a wrong count");
    let mut right = form.clone();
    right.push(("confirm", "2"));
    let html = d
        .post("/dashboard/jobs/bulk", &right)
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("retry 2 of 2 matching jobs"), "{html}");
    eventually(
        Duration::from_secs(10),
        "two retried deliveries",
        || async { (partner.count() == 11).then_some(()) },
    )
    .await;

    // Cancel a delivery held by a paused queue, then resume.
    let r = d
        .post(
            "/dashboard/queues/webhook_deliveries/pause",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.post_order(&key, "held").await.status(), 201);
    let held = eventually(Duration::from_secs(10), "a held delivery", || async {
        let (_, list) = app
            .admin_get_json("/admin/v1/jobs?state=pending&queue=webhook_deliveries")
            .await;
        list["data"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let r = d
        .post(
            &format!("/dashboard/jobs/{held}/cancel"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);
    // Acting twice is explained: the job is no longer in a state the action applies to.
    let r = d
        .post(
            &format!("/dashboard/jobs/{held}/cancel"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 409);
    let r = d
        .post(
            "/dashboard/queues/webhook_deliveries/resume",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);

    let entries = audit(&app).await;
    let actions: Vec<&str> = entries.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(
        actions,
        [
            "job.discard",
            "jobs.bulk_retry",
            "queue.paused",
            "job.cancel",
            "queue.resumed"
        ]
    );
    for (actor_type, actor_id, _, _) in &entries {
        assert_eq!(actor_type, "operator");
        assert_eq!(actor_id.unwrap().to_string(), operator_id);
    }
    assert_eq!(entries[1].3["matched"], 2);
    assert_eq!(entries[1].3["done"], 2);
    assert_eq!(entries[1].3["filter"]["state"], "dead");
}

#[tokio::test]
async fn the_overview_is_read_once_a_second_however_many_watch() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (mut api, base) = app.api_with_worker().await;
    let d = Dashboard::sign_in(&base, None, ADMIN_TOKEN).await;
    let polls = || async {
        let text = app.get_text(&format!("{base}/metrics")).await;
        super::metrics::value(&text, "switchyard_dashboard_overview_polls_total", &[])
            .unwrap_or(0.0)
    };
    assert_eq!(polls().await, 0.0, "nobody watches: no reads");
    let watchers: Vec<_> = (0..3)
        .map(|_| {
            let d = &d;
            async move {
                let mut stream = d.get("/dashboard/live").await.bytes_stream();
                let mut messages = 0;
                let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
                while let Ok(Some(Ok(chunk))) =
                    tokio::time::timeout_at(deadline, stream.next()).await
                {
                    let text = String::from_utf8_lossy(&chunk).to_string();
                    messages += text.matches("\"queues\":[{").count();
                }
                messages
            }
        })
        .collect();
    let counts = futures::future::join_all(watchers).await;
    for c in &counts {
        assert!(
            *c >= 2,
            "every watcher gets the overview each second: {counts:?}"
        );
    }
    let read = polls().await;
    assert!(
        (2.0..=5.0).contains(&read),
        "three watchers for 3.5 s cost one read a second, not three: {read}"
    );
    // Nobody watches any more: the reads stop (five seconds later, so that moving between
    // pages finds the poller running).
    tokio::time::sleep(Duration::from_millis(7000)).await;
    let settled = polls().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(polls().await, settled);

    // A watcher's stream ends when the API shuts down: it does not hold the drain (20 s).
    let mut stream = d.get("/dashboard/live").await.bytes_stream();
    assert!(stream.next().await.is_some());
    let started = std::time::Instant::now();
    let status = api.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A session opened with the admin token ends when the deployment's admin token changes (a
/// leaked token is rotated to shut its holders out); operator accounts' sessions go on.
#[tokio::test]
async fn admin_token_sessions_end_when_the_admin_token_changes() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_, email, secret) = operator(&app, "operator").await;
    let admin = Dashboard::sign_in(&app.base, None, ADMIN_TOKEN).await;
    let account = Dashboard::sign_in(&app.base, Some(&email), &secret).await;
    assert_eq!(admin.page("/dashboard/workers").await.0, 200);
    // The same database, served by an API whose admin token was rotated.
    let new_token = "a-rotated-admin-token-0123456789";
    let mut env = app.process_env();
    env.retain(|(k, _)| k != "SWITCHYARD_ADMIN_TOKEN");
    env.push(("SWITCHYARD_ADMIN_TOKEN".into(), new_token.into()));
    let (_api, base) = switchyard_tests::process::Process::spawn_api(&env).await;
    let on_new = |d: &Dashboard| Dashboard {
        base: base.clone(),
        http: d.http.clone(),
        cookie: d.cookie.clone(),
    };
    let r = on_new(&admin).get("/dashboard/workers").await;
    assert_eq!(r.status(), 303, "the old token's session is over");
    assert!(location(&r).contains("error=expired"), "{}", location(&r));
    assert_eq!(on_new(&account).page("/dashboard/workers").await.0, 200);
    let renewed = Dashboard::sign_in(&base, None, new_token).await;
    assert_eq!(renewed.page("/dashboard/workers").await.0, 200);
}
