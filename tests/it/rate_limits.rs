//! Rate limits: enforced across API replicas through Redis, announced on every response, and
//! failing open (never closed) when Redis is gone.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use clap::Parser;
use serde_json::json;
use switchyard_shared::services::Services;
use switchyard_tests::{TestApp, TestOptions, app::cli_args, app::serve_api, problem};

async fn list(app: &TestApp, base: &str, key: &str) -> reqwest::Response {
    app.http
        .get(format!("{base}/v1/webhook-endpoints"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_limit_holds_across_two_replicas_and_every_response_says_so() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (other, stop) = app.replica(app.api_config.clone()).await;
    let tenant = app.create_tenant("Acme").await;
    let key = app
        .create_key_with(&tenant, json!({ "name": "k", "rate_limit_per_minute": 10 }))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut statuses = Vec::new();
    for i in 0..12 {
        let base = if i % 2 == 0 { &app.base } else { &other };
        let r = list(&app, base, &key).await;
        let policy = r.headers()["ratelimit-policy"].to_str().unwrap().to_owned();
        assert!(policy.contains("\"key-minute\";q=10;w=60"), "{policy}");
        assert!(
            policy.contains("\"key-hour\";q=10000000;w=3600"),
            "{policy}"
        );
        let state = r.headers()["ratelimit"].to_str().unwrap().to_owned();
        let status = r.status().as_u16();
        if status == 200 {
            assert!(
                state.starts_with(&format!("\"key-minute\";r={};t=", 9 - i)),
                "request {i}: {state}"
            );
        } else {
            assert!(state.starts_with("\"key-minute\";r=0;"), "{state}");
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=6).contains(&retry), "retry-after {retry}");
            let v = problem(r, 429, "rate_limited", None).await;
            assert!(v["detail"].as_str().unwrap().contains("retry in"), "{v}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses[..10], [200; 10]);
    assert_eq!(statuses[10..], [429; 2]);

    // Another key of the tenant has its own budget; errors carry the headers too.
    let (_, fresh) = app.create_key(&tenant, None).await;
    let r = app
        .http
        .get(app.url("/v1/orders/00000000-0000-0000-0000-000000000000"))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("ratelimit"));
    assert!(r.headers().contains_key("ratelimit-policy"));
    stop.cancel();
}

#[tokio::test]
async fn a_tenant_limit_spans_all_its_keys() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let r = app
        .admin_post(
            "/admin/v1/tenants",
            json!({ "name": "Small", "rate_limit_per_minute": 4 }),
        )
        .await;
    assert_eq!(r.status(), 201);
    let tenant = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, a) = app.create_key(&tenant, None).await;
    let (_, b) = app.create_key(&tenant, None).await;
    let mut statuses = Vec::new();
    for key in [&a, &b, &a, &b, &a, &b] {
        statuses.push(list(&app, &app.base, key).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
}

/// A Redis server of the test's own, so it can be stopped without touching anyone else's.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed with the machine's Redis");
        let redis = OwnRedis { child, port };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn when_redis_stops_limits_fail_open_to_per_process_limits() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let mut redis = OwnRedis::start().await;
    let mut args = cli_args(&app.db.url, &app.prefix, &app.opts);
    let at = args.iter().position(|a| a == "--redis-url").unwrap();
    args[at + 1] = format!("redis://127.0.0.1:{}", redis.port);
    let cli = switchyard_api::Cli::try_parse_from(args).unwrap();
    let services = Services::connect(cli.common.clone(), &switchyard_worker::QUEUES)
        .await
        .unwrap();
    let (base, stop) = serve_api(services, cli.api.clone()).await;

    let tenant = app.create_tenant("Acme").await;
    let key = app
        .create_key_with(&tenant, json!({ "name": "k", "rate_limit_per_minute": 3 }))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // Two of three requests spent while Redis is up.
    for _ in 0..2 {
        assert_eq!(list(&app, &base, &key).await.status(), 200);
    }
    redis.stop();
    // Redis is gone: partner traffic is still served (never 5xx because of the limiter), and
    // the per-process limiter still caps the key at its quota.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(list(&app, &base, &key).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    stop.cancel();
}
