//! The dashboard's domain pages over plain HTTP: orders with their history, endpoints with
//! their attempts, events, integrations (failing ones first), keys and the rest, for every
//! tenant, with no secret on any page.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{
    ADMIN_TOKEN, Behaviour, PartnerServer, TestApp, TestOptions, dashboard::Dashboard, eventually,
};

#[tokio::test]
async fn the_domain_pages_show_every_tenants_work_and_no_secret() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (tenant, key) = app.partner_account().await;
    let (endpoint, _) = app.create_endpoint(&key, &partner.url, &["order.*"]).await;
    let r = app.post_order(&key, "shown-1").await;
    assert_eq!(r.status(), 201);
    let order: Value = r.json().await.unwrap();
    let order_id = order["id"].as_str().unwrap();
    let r = app
        .partner_post(
            &key,
            &format!("/v1/orders/{order_id}/status"),
            json!({"status": "confirmed"}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    eventually(Duration::from_secs(10), "two deliveries", || async {
        (partner.count() == 2).then_some(())
    })
    .await;
    let password = "s3cret-erp-password";
    let (_, integrations_key) = app.create_key(&tenant, Some(&["integrations:write"])).await;
    let failing = super::sync::integration(
        &app,
        &integrations_key,
        "postgres",
        &format!("postgres://erp:{password}@127.0.0.1:1/erp"),
    )
    .await;
    // Its check fails (nothing listens on port 1); a younger one, never checked, lists after it.
    let r = app
        .partner_post(
            &integrations_key,
            &format!("/v1/integrations/{failing}/test"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let unchecked = super::sync::integration(
        &app,
        &integrations_key,
        "mysql",
        "mysql://root@127.0.0.1:1/erp",
    )
    .await;
    let d = Dashboard::sign_in(&app.base, None, ADMIN_TOKEN).await;

    let (status, html) = d.page("/dashboard/orders").await;
    assert_eq!(status, 200);
    assert!(html.contains("shown-1") && html.contains(&tenant), "{html}");
    let (_, html) = d.page(&format!("/dashboard/orders/{order_id}")).await;
    assert!(
        html.contains("order.created") && html.contains("order.confirmed"),
        "the order's history: {html}"
    );
    let (_, html) = d.page("/dashboard/endpoints").await;
    assert!(
        html.contains(&partner.url)
            && html.contains("100 % of 2")
            && html.contains("<span class=\"badge http\">http</span>"),
        "{html}"
    );
    let (_, html) = d.page(&format!("/dashboard/endpoints/{endpoint}")).await;
    assert_eq!(
        html.matches("<td>200</td>").count(),
        2,
        "its attempts: {html}"
    );
    let (_, html) = d.page("/dashboard/events").await;
    assert!(html.contains("order.confirmed"), "{html}");
    let (_, html) = d.page("/dashboard/integrations").await;
    assert!(
        html.contains("postgres") && !html.contains(password),
        "{html}"
    );
    let at = |id: &str| {
        html.find(id)
            .unwrap_or_else(|| panic!("{id} listed: {html}"))
    };
    assert!(at(&failing) < at(&unchecked), "failing first: {html}");
    let (_, html) = d.page("/dashboard/keys").await;
    assert!(html.contains(&tenant) && !html.contains(&key), "{html}");
    for page in [
        "/dashboard/inbound",
        "/dashboard/sync",
        "/dashboard/dead",
        "/dashboard/workers",
    ] {
        assert_eq!(d.page(page).await.0, 200, "{page}");
    }
    // Another tenant's order is there too; unknown ids are a page saying so.
    assert_eq!(
        d.page(&format!("/dashboard/orders/{}", uuid::Uuid::now_v7()))
            .await
            .0,
        404
    );
    assert_eq!(d.page("/dashboard/jobs/not-an-id").await.0, 404);
}
