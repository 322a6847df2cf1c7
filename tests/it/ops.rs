use switchyard_shared::services::Services;
use switchyard_tests::{
    TestApp, TestOptions,
    app::{cli_args, serve_api},
};

#[tokio::test]
async fn health_readiness_docs_and_metrics_are_served() {
    let app = TestApp::spawn(TestOptions::default()).await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()
            .get("request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["postgres"], "ok");
    assert_eq!(v["redis"], "ok");
    let spec: serde_json::Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/orders",
        "/v1/webhook-endpoints/{id}/attempts",
        "/admin/v1/tenants",
    ] {
        assert!(spec["paths"][path].is_object(), "spec lacks {path}");
    }
    let r = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let metrics = app.get_text(&app.url("/metrics")).await;
    assert!(
        metrics.contains("switchyard_http_request_duration_seconds"),
        "{metrics}"
    );
}

/// Readiness tells the truth when a store is down (here: Redis on a closed port), without
/// handing the driver's error text (addresses, versions) to an unauthenticated caller.
#[tokio::test]
async fn readiness_reports_an_unreachable_store() {
    use clap::Parser;
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let mut args = cli_args(&app.db.url, &app.prefix, &app.opts);
    let at = args.iter().position(|a| a == "--redis-url").unwrap();
    args[at + 1] = "redis://127.0.0.1:1".into();
    let cli = switchyard_api::Cli::try_parse_from(args).unwrap();
    let services = Services::connect(cli.common, &switchyard_worker::QUEUES)
        .await
        .unwrap();
    let (base, stop) = serve_api(services, cli.api.clone()).await;
    let r = app.http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["postgres"], "ok");
    assert_eq!(v["redis"], "unavailable", "{v}");
    assert_eq!(
        v.as_object().unwrap().len(),
        3,
        "status, postgres, redis only: {v}"
    );
    stop.cancel();
}

/// The committed `openapi.json` is the contract partners code against: it must be exactly what
/// the server serves. Regenerate it with `SWITCHYARD_UPDATE_OPENAPI=1 cargo test -p
/// switchyard-tests openapi` after an intended API change.
#[tokio::test]
async fn the_committed_openapi_document_matches_the_served_one() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let served: serde_json::Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.json");
    if std::env::var("SWITCHYARD_UPDATE_OPENAPI").is_ok() {
        let pretty = serde_json::to_string_pretty(&served).unwrap() + "\n";
        std::fs::write(&path, pretty).unwrap();
    }
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("openapi.json is committed at the repository root"),
    )
    .expect("openapi.json is JSON");
    assert!(
        committed == served,
        "openapi.json differs from the served document; if the change is intended, run \
         SWITCHYARD_UPDATE_OPENAPI=1 cargo test -p switchyard-tests openapi"
    );
    // Both partner header styles are documented security schemes, and errors are documented.
    let schemes = &served["components"]["securitySchemes"];
    assert_eq!(schemes["BearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["ApiKeyAuth"]["name"], "X-API-Key");
    let create = &served["paths"]["/v1/orders"]["post"];
    for status in ["201", "400", "401", "403", "409", "422", "429"] {
        assert!(
            create["responses"][status].is_object(),
            "createOrder documents {status}"
        );
    }
    assert!(
        served["components"]["schemas"]["CreateOrder"]["example"].is_object(),
        "CreateOrder has an example"
    );
}

/// SIGTERM stops an API process gracefully: a request in flight (a test send to a partner
/// that takes two seconds) still gets its full answer, and the process then exits cleanly.
#[tokio::test]
async fn an_api_process_finishes_requests_in_flight_on_sigterm() {
    use std::time::{Duration, Instant};
    use switchyard_tests::{Behaviour, PartnerServer, process::Process};

    let app = TestApp::spawn(TestOptions::default()).await;
    let partner = PartnerServer::start(Behaviour::Slow(Duration::from_secs(2))).await;
    let (_, key) = app.partner_account().await;
    let (id, _) = app.create_endpoint(&key, &partner.url, &["*"]).await;
    let (mut api, base) = Process::spawn_api(&app.process_env()).await;

    let request = {
        let (http, url, key) = (
            app.http.clone(),
            format!("{base}/v1/webhook-endpoints/{id}/test"),
            key.clone(),
        );
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<serde_json::Value>().await.unwrap())
        })
    };
    switchyard_tests::eventually(Duration::from_secs(5), "the send to start", || async {
        (partner.count() == 1).then_some(())
    })
    .await;
    let sent = Instant::now();
    let status = api.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "clean exit: {status}");
    let (code, attempt) = request.await.unwrap();
    assert_eq!(code, 200, "{attempt}");
    assert_eq!(
        attempt["status_code"], 200,
        "the partner's answer: {attempt}"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(1500),
        "the process waited for the request"
    );
    // Gone: nothing listens on its port any more.
    assert!(
        app.http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );
}
