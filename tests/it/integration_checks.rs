//! Connection checks of integrations: HTTP with each authentication convention, Postgres and
//! MariaDB with good and bad credentials, MSSQL without a server, credentials that fail to
//! open, the call log, the audit of every credential use, and the health events.

use serde_json::{Value, json};
use std::time::Duration;
use switchyard_tests::{
    Behaviour, ErpServer, PartnerServer, TestApp, TestOptions, eventually, mariadb::MariaDb,
};

async fn setup() -> (TestApp, String) {
    setup_with(TestOptions::default()).await
}

/// An app and a key that may manage integrations and endpoints and read the audit log.
async fn setup_with(opts: TestOptions) -> (TestApp, String) {
    let app = TestApp::spawn(opts).await;
    let tenant = app.create_tenant("Integrator").await;
    let key = app
        .create_key(
            &tenant,
            Some(&["integrations:write", "webhooks:write", "audit:read"]),
        )
        .await
        .1;
    (app, key)
}

async fn create(app: &TestApp, key: &str, body: Value) -> String {
    let r = app.partner_post(key, "/v1/integrations", body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn test(app: &TestApp, key: &str, id: &str) -> Value {
    let r = app
        .partner_post(key, &format!("/v1/integrations/{id}/test"), json!({}))
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn http_checks_send_exactly_the_configured_authentication() {
    let (app, key) = setup().await;
    let erp = ErpServer::start(200).await;
    let bearer = create(
        &app,
        &key,
        json!({
            "name": "ERP", "code": "erp", "type": "erp", "provider": "http",
            "base_url": format!("{}/api/", erp.url), "config": {"health_path": "/status"},
            "credentials": {"bearer_token": "tok-1234567890"},
        }),
    )
    .await;
    let basic = create(
        &app,
        &key,
        json!({
            "name": "MES", "code": "mes", "type": "mes", "provider": "http", "base_url": erp.url,
            "credentials": {"username": "plant", "password": "pa:ss"},
        }),
    )
    .await;
    let api_key = create(
        &app,
        &key,
        json!({
            "name": "Pay", "code": "pay", "type": "payment_gateway", "provider": "stripe",
            "base_url": erp.url, "config": {"api_key_header": "X-Shop-Key", "health_path": "/ping"},
            "credentials": {"api_key": "ak-0987654321"},
        }),
    )
    .await;

    let r = test(&app, &key, &bearer).await;
    assert_eq!(
        (r["ok"].clone(), r["status_code"].clone()),
        (json!(true), json!(200)),
        "{r}"
    );
    let r = test(&app, &key, &basic).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = test(&app, &key, &api_key).await;
    assert_eq!(r["ok"], true, "{r}");
    let seen = erp.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].path, "/api/status");
    assert_eq!(seen[0].headers["authorization"], "Bearer tok-1234567890");
    assert_eq!(seen[1].path, "/");
    assert_eq!(seen[1].headers["authorization"], "Basic cGxhbnQ6cGE6c3M="); // plant:pa:ss
    assert_eq!(seen[2].path, "/ping");
    assert_eq!(seen[2].headers["x-shop-key"], "ak-0987654321");
    assert!(!seen[2].headers.contains_key("authorization"));

    // A failing health path is a failed check with its status, logged and counted.
    erp.set_status(503);
    let r = test(&app, &key, &bearer).await;
    assert_eq!(
        (r["ok"].clone(), r["status_code"].clone()),
        (json!(false), json!(503))
    );
    assert!(r["error"].as_str().unwrap().contains("503"), "{r}");
    let got = app
        .partner_get(&key, &format!("/v1/integrations/{bearer}"))
        .await;
    assert_eq!(got["connection_status"], "error");
    assert_eq!(
        (got["calls_total"].clone(), got["failures_total"].clone()),
        (json!(2), json!(1))
    );
    assert!(got["last_health_check_at"].is_string());
    let logs = app
        .partner_get(&key, &format!("/v1/integrations/{bearer}/logs"))
        .await;
    let logs = logs["data"].as_array().unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0]["status_code"], 503);
    assert_eq!(logs[0]["ok"], false);
    assert_eq!(logs[1]["ok"], true);
    assert_eq!(logs[1]["kind"], "connection_test");
    assert_eq!(logs[1]["target"], "/api/status");
    assert_eq!(logs[1]["method"], "GET");

    // Each check opened the credentials and said so in the audit log, by name only.
    let audit = app.partner_get(&key, "/v1/audit-events?limit=100").await;
    let text = audit.to_string();
    assert!(
        !text.contains("tok-1234567890") && !text.contains("ak-0987654321"),
        "{text}"
    );
    let opened: Vec<&Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "integration.credentials_opened")
        .collect();
    assert_eq!(opened.len(), 4, "{audit}");
    assert!(
        opened
            .iter()
            .any(|e| e["changes"]["credentials"] == json!(["password", "username"]))
    );
    assert!(
        opened
            .iter()
            .all(|e| e["changes"]["purpose"] == "connection_test")
    );
}

#[tokio::test]
async fn health_flips_emit_unhealthy_and_recovered_to_operational_endpoints() {
    let (app, key) = setup().await;
    let ops = PartnerServer::start(Behaviour::Status(200)).await;
    app.create_endpoint_with(&key, json!({"url": ops.url, "operational": true}))
        .await;
    let erp = ErpServer::start(500).await;
    let id = create(
        &app,
        &key,
        json!({
            "name": "ERP", "code": "erp", "type": "erp", "provider": "http", "base_url": erp.url,
        }),
    )
    .await;
    assert_eq!(test(&app, &key, &id).await["ok"], false);
    assert_eq!(test(&app, &key, &id).await["ok"], false); // still down: no second notice
    erp.set_status(204);
    assert_eq!(test(&app, &key, &id).await["ok"], true);
    let received = eventually(
        Duration::from_secs(20),
        "two operational notices",
        || async {
            let r = ops.received();
            (r.len() >= 2).then_some(r)
        },
    )
    .await;
    let types: Vec<Value> = received.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(
        types,
        [
            json!("integration.unhealthy"),
            json!("integration.recovered")
        ]
    );
    let data = &received[0].json()["data"];
    assert_eq!(data["integration_id"], id.as_str());
    assert_eq!(data["code"], "erp");
    assert!(data["error"].as_str().unwrap().contains("500"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ops.count(), 2);
}

#[tokio::test]
async fn sql_checks_connect_to_postgres_mariadb_and_report_mssql_cleanly() {
    let (app, key) = setup().await;
    let db = &app.db.name;
    let sql = |code: &str, provider: &str, url: String| {
        json!({
            "name": code, "code": code, "type": "database", "provider": provider,
            "credentials": {"url": url},
        })
    };
    let pg_good = create(
        &app,
        &key,
        sql(
            "pg-good",
            "postgres",
            format!("postgres://postgres@127.0.0.1:5432/{db}?sslmode=disable"),
        ),
    )
    .await;
    // The machine's Postgres trusts local connections, so a wrong password cannot fail here;
    // an unknown role is the credential it refuses.
    let pg_bad = create(
        &app,
        &key,
        sql(
            "pg-bad",
            "postgres",
            format!(
                "postgres://no_such_role:wrong-password-123@127.0.0.1:5432/{db}?sslmode=disable"
            ),
        ),
    )
    .await;
    let maria = MariaDb::create().await;
    let n = &maria.name;
    let my_good = create(
        &app,
        &key,
        sql(
            "my-good",
            "mysql",
            format!("mysql://{n}:right-password@127.0.0.1:3306/{n}?ssl-mode=disabled"),
        ),
    )
    .await;
    let my_bad = create(
        &app,
        &key,
        sql(
            "my-bad",
            "mysql",
            format!("mysql://{n}:wrong-password-456@127.0.0.1:3306/{n}?ssl-mode=disabled"),
        ),
    )
    .await;
    let ms = create(
        &app,
        &key,
        sql(
            "ms",
            "mssql",
            "mssql://sa:Passw0rd-secret@127.0.0.1:1/erp".into(),
        ),
    )
    .await;
    let no_url = create(
        &app,
        &key,
        json!({
            "name": "x", "code": "nourl", "type": "database", "provider": "postgres",
        }),
    )
    .await;

    let r = test(&app, &key, &pg_good).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = test(&app, &key, &pg_bad).await;
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("no_such_role"), "{r}");
    let r = test(&app, &key, &my_good).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = test(&app, &key, &my_bad).await;
    assert_eq!(r["ok"], false);
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("Access denied"), "{r}");
    assert!(!error.contains("wrong-password-456"));
    let r = test(&app, &key, &ms).await;
    assert_eq!(r["ok"], false);
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("connect"), "{r}");
    assert!(!error.contains("Passw0rd-secret"));
    let r = test(&app, &key, &no_url).await;
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("`url`"), "{r}");

    // The log names where the check went, never the URL's credentials.
    let logs = app
        .partner_get(&key, &format!("/v1/integrations/{my_bad}/logs"))
        .await;
    let text = logs.to_string();
    assert!(text.contains(&format!("127.0.0.1:3306/{n}")), "{text}");
    assert!(!text.contains("wrong-password-456"));
}

#[tokio::test]
async fn private_sql_hosts_are_refused_without_the_egress_opening() {
    let (app, key) = setup_with(TestOptions {
        allow_private: false,
        with_worker: false,
        ..Default::default()
    })
    .await;
    let id = create(
        &app,
        &key,
        json!({
            "name": "db", "code": "db", "type": "database", "provider": "postgres",
            "credentials": {"url": "postgres://postgres@127.0.0.1:5432/postgres"},
        }),
    )
    .await;
    let r = test(&app, &key, &id).await;
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("not allowed"), "{r}");
    // An SMTP relay's host is checked when saved.
    let r = app
        .partner_post(
            &key,
            "/v1/integrations",
            json!({"name": "Mail", "code": "mail", "type": "email", "provider": "smtp",
                   "credentials": {"url": "smtp://127.0.0.1:25"}}),
        )
        .await;
    switchyard_tests::problem(r, 400, "url_not_allowed", Some("credentials.url")).await;
}

/// SMTP relays: the check connects and reads the `220` greeting (no mail, no login); a URL
/// the email destination could not use is refused when saved, created or changed.
#[tokio::test]
async fn smtp_checks_greet_the_relay_and_unusable_urls_are_refused() {
    let (app, key) = setup().await;
    let relay = switchyard_tests::smtp::SmtpServer::start(vec![250]).await;
    let smtp = |code: &str, url: Option<&str>| {
        json!({"name": "Mail", "code": code, "type": "email", "provider": "smtp",
               "credentials": url.map(|u| json!({"url": u})).unwrap_or(json!({}))})
    };
    let id = create(&app, &key, smtp("mail", Some(&relay.url()))).await;
    let r = test(&app, &key, &id).await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(relay.mails().is_empty(), "a check sends no mail");
    let closed = create(
        &app,
        &key,
        smtp("closed", Some("smtp://127.0.0.1:1?tls=none")),
    )
    .await;
    let r = test(&app, &key, &closed).await;
    assert_eq!(r["ok"], false);
    assert!(
        r["error"].as_str().unwrap().contains("cannot connect"),
        "{r}"
    );
    for body in [
        smtp("bad", Some("smtp://relay.example.com?tls=maybe")),
        smtp("bad", Some("http://relay.example.com")),
        smtp("bad", None),
    ] {
        let r = app.partner_post(&key, "/v1/integrations", body).await;
        switchyard_tests::problem(r, 400, "parameter_invalid", Some("credentials.url")).await;
    }
    let r = app
        .partner_patch(
            &key,
            &format!("/v1/integrations/{id}"),
            json!({"credentials": {"url": "smtp://relay.example.com?tls=maybe"}}),
        )
        .await;
    switchyard_tests::problem(r, 400, "parameter_invalid", Some("credentials.url")).await;
    assert_eq!(
        test(&app, &key, &id).await["ok"],
        true,
        "the refused change was not kept"
    );
}

#[tokio::test]
async fn tampered_or_moved_credentials_fail_closed() {
    let (app, key) = setup().await;
    let erp = ErpServer::start(200).await;
    let body = |code: &str, token: &str| {
        json!({
            "name": code, "code": code, "type": "api", "provider": "http", "base_url": erp.url,
            "credentials": {"bearer_token": token},
        })
    };
    let a = create(&app, &key, body("a", "token-of-a-123456")).await;
    let b = create(&app, &key, body("b", "token-of-b-123456")).await;
    // B's ciphertext copied onto A: it was sealed for B, so it does not open as A's.
    sqlx::query(
        "UPDATE integration_credentials SET sealed = (SELECT sealed FROM integration_credentials
                                                       WHERE integration_id = $2::uuid)
          WHERE integration_id = $1::uuid",
    )
    .bind(&a)
    .bind(&b)
    .execute(&app.pool)
    .await
    .unwrap();
    let r = test(&app, &key, &a).await;
    assert_eq!(r["ok"], false);
    assert!(
        r["error"].as_str().unwrap().contains("cannot be opened"),
        "{r}"
    );
    // One flipped bit in B's own ciphertext.
    sqlx::query(
        "UPDATE integration_credentials
            SET sealed = overlay(sealed placing decode(lpad(to_hex(get_byte(sealed, 20) # 1), 2, '0'), 'hex') from 21 for 1)
          WHERE integration_id = $1::uuid",
    )
    .bind(&b)
    .execute(&app.pool)
    .await
    .unwrap();
    let r = test(&app, &key, &b).await;
    assert_eq!(r["ok"], false);
    assert!(
        r["error"].as_str().unwrap().contains("cannot be opened"),
        "{r}"
    );
    // Nothing was sent with a value that did not open.
    assert!(erp.seen().is_empty());
}

#[tokio::test]
async fn scheduled_health_checks_keep_the_status_and_announce_both_changes() {
    let (app, key) = setup_with(TestOptions {
        args: vec!["--integration-health-interval=1s".into()],
        ..Default::default()
    })
    .await;
    let ops = PartnerServer::start(Behaviour::Status(200)).await;
    app.create_endpoint_with(&key, json!({"url": ops.url, "operational": true}))
        .await;
    let erp = ErpServer::start(500).await;
    let id = create(
        &app,
        &key,
        json!({
            "name": "ERP", "code": "erp", "type": "erp", "provider": "http",
            "base_url": erp.url, "config": {"health_interval": "30s"},
            "credentials": {"bearer_token": "tok-1234567890"},
        }),
    )
    .await;
    let off = create(
        &app,
        &key,
        json!({
            "name": "Quiet", "code": "quiet", "type": "erp", "provider": "http",
            "base_url": erp.url, "config": {"health_interval": "0"},
        }),
    )
    .await;
    // Make both due now, as if 30 s had passed.
    let due = "UPDATE integrations SET next_health_check_at = now()";
    sqlx::query(due).execute(&app.pool).await.unwrap();
    let status = |want: &'static str| {
        let (app, key, id) = (&app, &key, &id);
        async move {
            eventually(Duration::from_secs(20), want, || async {
                let got = app
                    .partner_get(key, &format!("/v1/integrations/{id}"))
                    .await;
                (got["connection_status"] == want).then_some(got)
            })
            .await
        }
    };
    let got = status("error").await;
    assert!(got["last_error"].as_str().unwrap().contains("500"));
    erp.set_status(200);
    sqlx::query(due).execute(&app.pool).await.unwrap();
    status("connected").await;
    let received = eventually(Duration::from_secs(20), "both notices", || async {
        let r = ops.received();
        (r.len() >= 2).then_some(r)
    })
    .await;
    let types: Vec<Value> = received.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(
        types,
        [
            json!("integration.unhealthy"),
            json!("integration.recovered")
        ]
    );
    // Checks are the system's: the audit names the job, the log the kind.
    let audit = app.partner_get(&key, "/v1/audit-events?limit=100").await;
    let opened = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "integration.credentials_opened")
        .expect("an audited open")
        .clone();
    assert_eq!(opened["actor_type"], "system");
    assert_eq!(opened["changes"]["purpose"], "health_check");
    let logs = app
        .partner_get(&key, &format!("/v1/integrations/{id}/logs"))
        .await;
    assert_eq!(logs["data"][0]["kind"], "health_check");
    // `health_interval: "0"` turns scheduled checks off.
    let quiet = app
        .partner_get(&key, &format!("/v1/integrations/{off}"))
        .await;
    assert_eq!(quiet["calls_total"], 0);
    assert_eq!(quiet["connection_status"], "unknown");
}
