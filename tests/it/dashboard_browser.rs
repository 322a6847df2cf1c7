//! The dashboard in a real headless Chromium: an operator signs in, watches the overview move
//! while orders come in, retries a failed delivery and sees it succeed, bulk-retries a filtered
//! set after a dry-run count, pauses a queue and sees dispatch stop, resolves a sync conflict;
//! a viewer sees everything and can act on nothing. The pictures in `docs/screenshots/` come
//! from these tests (`SWITCHYARD_SCREENSHOTS=1`). Skipped, saying so, without Chromium.

use std::time::Duration;

use switchyard_tests::{
    ADMIN_TOKEN, Behaviour, PartnerServer, TestApp, TestOptions, browser::Browser, eventually,
};

use super::sync::run;
use super::sync_bidirectional::{
    applied, change_both, conflict_when, erp_row, mes_row, open_conflicts, setup_pair,
};

fn number(text: &str) -> i64 {
    text.trim().parse().unwrap_or(-1)
}

#[tokio::test]
async fn an_operator_watches_retries_and_bulk_retries_in_the_browser() {
    let Some(b) =
        Browser::start("an_operator_watches_retries_and_bulk_retries_in_the_browser").await
    else {
        return;
    };
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "100ms,100ms".into(),
        // Twelve failures in a row must not open the endpoint's breaker here.
        breaker_min_attempts: 1000,
        ..Default::default()
    })
    .await;
    let healthy = PartnerServer::start(Behaviour::Status(200)).await;
    let failing = PartnerServer::start(Behaviour::Status(503)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &healthy.url, &["order.created"])
        .await;

    b.goto(&app.url("/dashboard")).await;
    b.find("form.signin").await;
    b.screenshot("sign-in").await;
    b.sign_in(&app.base, "", ADMIN_TOKEN).await;

    // The overview moves while orders come in, without a reload.
    let done = "tr[data-q=\"webhook_deliveries\"] [data-f=\"done_minute\"]";
    assert_eq!(number(&b.text_of(done).await), 0);
    for i in 0..5 {
        assert_eq!(
            app.post_order(&key, &format!("live-{i}")).await.status(),
            201
        );
    }
    b.wait_text(done, Duration::from_secs(15), |t| number(t) == 5)
        .await;
    assert!(
        b.current_url().await.ends_with("/dashboard"),
        "no navigation happened"
    );
    b.screenshot("overview").await;
    // The theme switch: dark, remembered across pages.
    let theme = b.find("#theme").await;
    b.click(&theme).await;
    b.goto(&app.url("/dashboard")).await;
    let dark = b
        .script("return document.documentElement.getAttribute('data-theme');")
        .await;
    assert_eq!(dark, "dark");
    b.screenshot("overview-dark").await;
    let theme = b.find("#theme").await;
    b.click(&theme).await;

    // Failed deliveries: open one, retry it once the partner is back, see it succeed.
    let (_, other_key) = app.partner_account().await;
    app.create_endpoint(&other_key, &failing.url, &["order.created"])
        .await;
    for i in 0..4 {
        assert_eq!(
            app.post_order(&other_key, &format!("dead-{i}"))
                .await
                .status(),
            201
        );
    }
    eventually(Duration::from_secs(20), "four dead deliveries", || async {
        let (_, list) = app.admin_get_json("/admin/v1/jobs?state=dead").await;
        (list["data"].as_array().unwrap().len() == 4).then_some(())
    })
    .await;
    b.goto(&app.url("/dashboard/jobs")).await;
    b.select("select[name=state]", "dead").await;
    b.select("select[name=queue]", "webhook_deliveries").await;
    let filter = b.find("form.filters button").await;
    b.click(&filter).await;
    b.wait_text("main table tbody", Duration::from_secs(5), |t| {
        t.matches("dead").count() == 4
    })
    .await;
    b.screenshot("jobs").await;
    let first = b.find("main table tbody tr td a").await;
    b.click(&first).await;
    b.wait_text("#job-state", Duration::from_secs(5), |t| t == "dead")
        .await;
    assert_eq!(
        b.count("main table tbody tr").await,
        3,
        "three attempts listed"
    );
    b.screenshot("job").await;
    failing.set_behaviour(Behaviour::Status(200));
    let retry = b.find("form[action$=\"/retry\"] button").await;
    b.click(&retry).await;
    b.wait_text("p.notice", Duration::from_secs(5), |t| t.contains("retry"))
        .await;
    // The page follows the job until it ends, without a reload.
    b.wait_text("#job-state", Duration::from_secs(15), |t| t == "succeeded")
        .await;

    // Bulk: the three left, counted first, then that count typed back.
    b.goto(&app.url("/dashboard/jobs?queue=webhook_deliveries&state=dead"))
        .await;
    b.select("form.bulk select[name=action]", "retry").await;
    let count = b.find("form.bulk button").await;
    b.click(&count).await;
    let counted = b.text_of("#bulk-count").await;
    assert!(counted.starts_with("3 jobs match"), "{counted}");
    b.screenshot("bulk-confirm").await;
    let confirm = b.find("input[name=confirm]").await;
    b.type_into(&confirm, "3").await;
    let go = b.find("form.confirm button").await;
    b.click(&go).await;
    let result = b.text_of("#bulk-result").await;
    assert!(result.contains("retry 3 of 3"), "{result}");
    eventually(
        Duration::from_secs(15),
        "every delivery succeeded",
        || async {
            let (_, list) = app.admin_get_json("/admin/v1/jobs?state=dead").await;
            list["data"].as_array().unwrap().is_empty().then_some(())
        },
    )
    .await;
    assert_eq!(failing.unique_ids().len(), 4);

    // The other pages render with what happened.
    for (path, name, shows) in [
        ("/dashboard/dead", "dead", "No dead job."),
        ("/dashboard/workers", "workers", "running"),
        ("/dashboard/endpoints", "endpoints", "closed"),
    ] {
        b.goto(&app.url(path)).await;
        let text = b.text_of("main").await;
        assert!(text.contains(shows), "{path}: {text}");
        b.screenshot(name).await;
    }
}

#[tokio::test]
async fn pausing_a_queue_in_the_browser_stops_dispatch() {
    let Some(b) = Browser::start("pausing_a_queue_in_the_browser_stops_dispatch").await else {
        return;
    };
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["order.created"])
        .await;
    b.sign_in(&app.base, "", ADMIN_TOKEN).await;
    let row = "tr[data-q=\"webhook_deliveries\"]";
    let pause = b
        .find(&format!("{row} form[action$=\"/pause\"] button"))
        .await;
    b.click(&pause).await;
    b.wait_text(
        &format!("{row} [data-f=status]"),
        Duration::from_secs(5),
        |t| t == "paused",
    )
    .await;
    assert_eq!(app.post_order(&key, "held").await.status(), 201);
    // The delivery waits in the ledger and the overview shows it.
    b.wait_text(
        &format!("{row} [data-f=pending]"),
        Duration::from_secs(10),
        |t| number(t) == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(partner.count(), 0, "nothing dispatched while paused");
    b.screenshot("overview-paused").await;
    let resume = b
        .find(&format!("{row} form[action$=\"/resume\"] button"))
        .await;
    b.click(&resume).await;
    eventually(Duration::from_secs(10), "the held delivery", || async {
        (partner.count() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_viewer_sees_everything_and_can_act_on_nothing() {
    let Some(b) = Browser::start("a_viewer_sees_everything_and_can_act_on_nothing").await else {
        return;
    };
    let app = TestApp::spawn(TestOptions {
        retry_schedule: "100ms,100ms".into(),
        ..Default::default()
    })
    .await;
    let partner = PartnerServer::start(Behaviour::Status(500)).await;
    let (_, key) = app.partner_account().await;
    app.create_endpoint(&key, &partner.url, &["order.created"])
        .await;
    assert_eq!(app.post_order(&key, "o-1").await.status(), 201);
    let job = eventually(Duration::from_secs(20), "a dead delivery", || async {
        let (_, list) = app.admin_get_json("/admin/v1/jobs?state=dead").await;
        list["data"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let (_, email, secret) = super::dashboard::operator(&app, "viewer").await;
    b.sign_in(&app.base, &email, &secret).await;
    assert_eq!(b.text_of("header .who em").await, "viewer");
    assert_eq!(
        b.count("form[action*=\"/queues/\"]").await,
        0,
        "no pause buttons"
    );
    b.goto(&app.url(&format!("/dashboard/jobs/{job}"))).await;
    b.wait_text("#job-state", Duration::from_secs(5), |t| t == "dead")
        .await;
    assert_eq!(
        b.count("form[action$=\"/retry\"]").await,
        0,
        "no action buttons"
    );
    b.goto(&app.url("/dashboard/jobs")).await;
    b.find("form.filters").await;
    assert_eq!(b.count("form.bulk").await, 0, "no bulk form");
    // A form made by hand is refused too.
    b.script(&format!(
        "const f = document.createElement('form'); f.method = 'post'; \
         f.action = '/dashboard/jobs/{job}/retry'; const c = document.createElement('input'); \
         c.name = 'csrf'; c.value = document.querySelector('meta[name=csrf]').content; \
         f.appendChild(c); document.body.appendChild(f); f.submit();"
    ))
    .await;
    let refusal = b.text_of("p.error").await;
    assert!(refusal.contains("viewer"), "{refusal}");
    let (_, detail) = app.admin_get_json(&format!("/admin/v1/jobs/{job}")).await;
    assert_eq!(detail["state"], "dead");
}

#[tokio::test]
async fn a_sync_conflict_is_resolved_from_the_browser() {
    let Some(b) = Browser::start("a_sync_conflict_is_resolved_from_the_browser").await else {
        return;
    };
    let (app, key, _db, mut erp, _maria, mut mes, config) = setup_pair().await;
    let first = run(&app, &key, &config).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    // The MES side needs its own run to see the first write as synced.
    run(&app, &key, &config).await;
    change_both(&mut erp, &mut mes, 3, "name = 'ERP 3'", "title = 'MES 3'").await;
    let r = run(&app, &key, &config).await;
    assert_eq!(r["conflicts"], 1, "{r}");
    let open = open_conflicts(&app, &key, &config).await;
    let id = open[0]["id"].as_str().unwrap().to_owned();

    b.sign_in(&app.base, "", ADMIN_TOKEN).await;
    b.goto(&app.url("/dashboard/sync")).await;
    let row = b
        .wait_text("main table tbody", Duration::from_secs(5), |t| {
            t.contains("MES 3")
        })
        .await;
    assert!(row.contains("ERP 3"), "{row}");
    b.screenshot("sync").await;
    let source = b
        .find(&format!(
            "form[action=\"/dashboard/sync/conflicts/{id}/resolve\"] button"
        ))
        .await;
    b.click(&source).await;
    b.find("main h1").await;
    let done = conflict_when(
        &app,
        &key,
        &config,
        &id,
        "the resolution to be written",
        applied,
    )
    .await;
    assert_eq!(done["resolution"], "source");
    assert_eq!(erp_row(&mut erp, 3).await.0, "ERP 3");
    assert_eq!(mes_row(&mut mes, 3).await.unwrap().0, "ERP 3");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'sync_conflict.resolved' AND target_id = $1",
    )
    .bind(uuid::Uuid::parse_str(&id).unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
}
