//! Inbound webhooks: every verification scheme with a valid, a tampered, an expired (where the
//! scheme signs a timestamp) and a replayed request, signatures made in the test from each
//! provider's published algorithm (Standard Webhooks by its reference library); storage and
//! redaction; an inbound event re-emitted to another partner's endpoint, signed.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use switchyard_tests::{Behaviour, PartnerServer, TestApp, TestOptions, eventually, problem};

fn hmac256(key: &[u8], content: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(content);
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A Standard Webhooks signature made by the reference library (Python `standardwebhooks`).
fn reference_sign(secret: &str, id: &str, ts: i64, body: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, datetime\n\
             from standardwebhooks.webhooks import Webhook\n\
             secret, msg_id, ts, body = sys.argv[1:5]\n\
             t = datetime.datetime.fromtimestamp(int(ts), tz=datetime.timezone.utc)\n\
             print(Webhook(secret).sign(msg_id, t, body))",
            secret,
            id,
            &ts.to_string(),
            body,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Inbound {
    app: TestApp,
    key: String,
}

impl Inbound {
    async fn new() -> Inbound {
        let app = TestApp::spawn(TestOptions::default()).await;
        let tenant = app.create_tenant("Receiver").await;
        let key = app
            .create_key(
                &tenant,
                Some(&["integrations:write", "webhooks:write", "events:write"]),
            )
            .await
            .1;
        Inbound { app, key }
    }

    /// Creates an integration receiving with `inbound`; returns its id and inbound path.
    async fn integration(&self, code: &str, inbound: Value) -> (String, String) {
        let r = self
            .app
            .partner_post(
                &self.key,
                "/v1/integrations",
                json!({"name": code, "code": code, "type": "webhook", "provider": code,
                       "inbound": inbound}),
            )
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        let text = v.to_string();
        assert!(!text.contains("secret-value"), "no secret in {text}");
        (
            v["id"].as_str().unwrap().to_owned(),
            v["inbound_url"].as_str().unwrap().to_owned(),
        )
    }

    async fn post(&self, path: &str, headers: &[(&str, String)], body: &str) -> reqwest::Response {
        let mut req = self
            .app
            .http
            .post(self.app.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send().await.unwrap()
    }

    /// Valid → 202; the same again → 200 duplicate; tampered → 401; each rejected one stored.
    async fn exercise(&self, path: &str, sign: impl Fn(&str, i64) -> Vec<(&'static str, String)>) {
        let now = chrono::Utc::now().timestamp();
        let body = r#"{"id":"evt_42","total":1250}"#;
        let r = self.post(path, &sign(body, now), body).await;
        assert_eq!(r.status(), 202, "{path}: {}", r.text().await.unwrap());
        let first: Value = r.json().await.unwrap();
        assert_eq!(first["duplicate"], false);
        let r = self.post(path, &sign(body, now), body).await;
        assert_eq!(r.status(), 200, "{path}: a replay");
        let again: Value = r.json().await.unwrap();
        assert_eq!(
            (again["id"].clone(), again["duplicate"].clone()),
            (first["id"].clone(), json!(true))
        );
        let r = self
            .post(path, &sign(body, now), r#"{"id":"evt_42","total":1}"#)
            .await;
        let p = problem(r, 401, "signature_invalid", None).await;
        assert!(
            p["detail"].as_str().unwrap().contains("does not match"),
            "{p}"
        );
    }
}

#[tokio::test]
async fn every_scheme_accepts_valid_refuses_tampered_and_expired_and_suppresses_replays() {
    let t = Inbound::new().await;
    let whsec = format!(
        "whsec_{}",
        STANDARD.encode(b"standard-webhooks-secret-value!!")
    );
    let (_, sw) = t
        .integration(
            "sw",
            json!({"scheme": "standard_webhooks", "secret": whsec, "action": {"type": "store"}}),
        )
        .await;
    let sw_sign = |body: &str, ts: i64| {
        vec![
            ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W".to_owned()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                reference_sign(&whsec, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", ts, body),
            ),
        ]
    };
    t.exercise(&sw, sw_sign).await;
    let old = chrono::Utc::now().timestamp() - 600;
    let r = t.post(&sw, &sw_sign("{}", old), "{}").await;
    let p = problem(r, 401, "signature_invalid", None).await;
    assert!(p["detail"].as_str().unwrap().contains("tolerance"), "{p}");

    let stripe_secret = "whsec_stripe-secret-value";
    let (_, st) = t
        .integration(
            "stripe",
            json!({"scheme": "stripe", "secret": stripe_secret, "action": {"type": "store"}}),
        )
        .await;
    let st_sign = |body: &str, ts: i64| {
        let sig = hex(&hmac256(
            stripe_secret.as_bytes(),
            format!("{ts}.{body}").as_bytes(),
        ));
        vec![("stripe-signature", format!("t={ts},v1={sig}"))]
    };
    t.exercise(&st, st_sign).await;
    let r = t.post(&st, &st_sign("{}", old), "{}").await;
    problem(r, 401, "signature_invalid", None).await;

    let (_, gh) = t
        .integration(
            "github",
            json!({"scheme": "github", "secret": "gh-secret-value", "action": {"type": "store"}}),
        )
        .await;
    t.exercise(&gh, |body, _| {
        vec![
            (
                "x-hub-signature-256",
                format!(
                    "sha256={}",
                    hex(&hmac256(b"gh-secret-value", body.as_bytes()))
                ),
            ),
            (
                "x-github-delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
            ),
        ]
    })
    .await;

    let (_, sh) = t
        .integration("shopify", json!({"scheme": "shopify", "secret": "shpss_secret-value", "action": {"type": "store"}}))
        .await;
    t.exercise(&sh, |body, _| {
        vec![
            (
                "x-shopify-hmac-sha256",
                STANDARD.encode(hmac256(b"shpss_secret-value", body.as_bytes())),
            ),
            (
                "x-shopify-webhook-id",
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".to_owned(),
            ),
        ]
    })
    .await;

    let (_, hm) = t
        .integration(
            "erp",
            json!({"scheme": "hmac", "secret": "erp-secret-value", "header": "X-ERP-Signature",
                   "timestamp_header": "X-ERP-Timestamp", "dedupe": "/id",
                   "action": {"type": "store"}}),
        )
        .await;
    let hm_sign = |body: &str, ts: i64| {
        let sig = hex(&hmac256(
            b"erp-secret-value",
            format!("{ts}.{body}").as_bytes(),
        ));
        vec![
            ("x-erp-signature", format!("sha256={sig}")),
            ("x-erp-timestamp", ts.to_string()),
        ]
    };
    t.exercise(&hm, hm_sign).await;
    let r = t.post(&hm, &hm_sign("{}", old), "{}").await;
    problem(r, 401, "signature_invalid", None).await;

    // `none` must be chosen explicitly, and then takes anything.
    let (_, open) = t
        .integration(
            "open",
            json!({"scheme": "none", "action": {"type": "store"}}),
        )
        .await;
    let r = t.post(&open, &[], r#"{"id": 1}"#).await;
    assert_eq!(r.status(), 202);

    // Every request is on record: 6 stored and processed, the refused ones rejected with why.
    let key = &t.key;
    let done = eventually(Duration::from_secs(20), "all processed", || async {
        let v = t
            .app
            .partner_get(key, "/v1/inbound-events?status=completed&limit=100")
            .await;
        (v["data"].as_array().unwrap().len() == 6).then_some(v)
    })
    .await;
    assert!(
        done["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["verification"] != "rejected")
    );
    let rejected = t
        .app
        .partner_get(key, "/v1/inbound-events?status=rejected&limit=100")
        .await;
    let rejected = rejected["data"].as_array().unwrap();
    assert_eq!(rejected.len(), 5 + 3, "five tampered, three expired");
    assert!(rejected.iter().all(|e| e["reason"].is_string()));
    let one = t
        .app
        .partner_get(
            key,
            &format!(
                "/v1/inbound-events/{}",
                done["data"][0]["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(one["body"], r#"{"id": 1}"#);
    assert_eq!(t.app.count("SELECT count(*) FROM inbound_events").await, 14);
}

#[tokio::test]
async fn refused_bodies_are_recorded_headers_redacted_and_unknown_urls_are_404() {
    let t = Inbound::new().await;
    let (id, path) = t
        .integration(
            "open",
            json!({"scheme": "none", "action": {"type": "store"}}),
        )
        .await;
    let r = t
        .app
        .http
        .post(t.app.url(&path))
        .header("content-type", "text/plain")
        .header("authorization", "Bearer secret-value-of-sender")
        .body("hello")
        .send()
        .await
        .unwrap();
    problem(r, 415, "unsupported_media_type", None).await;
    let r = t
        .post(
            &path,
            &[("authorization", "Bearer secret-value-of-sender".into())],
            "{not json",
        )
        .await;
    problem(r, 400, "body_invalid", Some("body")).await;
    // Unknown, or not even a token (a NUL, percent-encoded): 404, never a 500.
    for url in [
        "/inbound/in_unknown",
        "/inbound/in_%00",
        "/inbound/in_%C3%A9",
    ] {
        let r = t.post(url, &[], "{}").await;
        problem(r, 404, "resource_not_found", None).await;
    }
    let list = t
        .app
        .partner_get(&t.key, &format!("/v1/inbound-events?integration_id={id}"))
        .await;
    let text = list.to_string();
    assert!(!text.contains("secret-value-of-sender"), "{text}");
    let events = list["data"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["status"], "failed");
    assert_eq!(events[0]["headers"]["authorization"], "[redacted]");
    assert_eq!(events[1]["status"], "rejected");
    assert!(events[1]["reason"].as_str().unwrap().contains("JSON"));
    // A rejected request is never processed, not even by request.
    let r = t
        .app
        .partner_post(
            &t.key,
            &format!(
                "/v1/inbound-events/{}/retry",
                events[1]["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    problem(r, 409, "inbound_event_rejected", None).await;
    // A failed one is, and the answer shows it waiting again (what the retry did).
    let r = t
        .app
        .partner_post(
            &t.key,
            &format!(
                "/v1/inbound-events/{}/retry",
                events[0]["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    let retried: Value = r.json().await.unwrap();
    assert_eq!(retried["status"], "pending", "{retried}");
    assert!(retried["last_error"].is_null(), "{retried}");
    // A new URL: the old one stops at once.
    let r = t
        .app
        .partner_post(
            &t.key,
            &format!("/v1/integrations/{id}/inbound/rotate-url"),
            json!({}),
        )
        .await;
    let rotated: Value = r.json().await.unwrap();
    assert_ne!(rotated["inbound_url"], path.as_str());
    let r = t.post(&path, &[], "{}").await;
    problem(r, 404, "resource_not_found", None).await;
    let r = t
        .post(rotated["inbound_url"].as_str().unwrap(), &[], "{}")
        .await;
    assert_eq!(r.status(), 202);
}

/// Inbound event `id` ends `failed` within seconds (not after the job's attempts), and why.
async fn fails_at_once(t: &Inbound, id: &str, why: &str) {
    let failed = eventually(Duration::from_secs(5), "the refusal", || async {
        let e = t
            .app
            .partner_get(&t.key, &format!("/v1/inbound-events/{id}"))
            .await;
        (e["status"] == "failed").then_some(e)
    })
    .await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains(why), "{failed}");
}

#[tokio::test]
async fn an_inbound_emit_event_reaches_another_endpoint_signed() {
    let t = Inbound::new().await;
    let key = &t.key;
    let r = t
        .app
        .partner_post(key, "/v1/event-types", json!({"name": "shipment.updated"}))
        .await;
    assert_eq!(r.status(), 201);
    let partner = PartnerServer::start(Behaviour::Status(200)).await;
    let (_, secret) = t
        .app
        .create_endpoint(key, &partner.url, &["shipment.*"])
        .await;
    let (_, path) = t
        .integration(
            "carrier",
            json!({"scheme": "github", "secret": "carrier-secret-value",
                   "action": {"type": "emit_event", "event_type": "shipment.updated"}}),
        )
        .await;
    let body = r#"{"shipment":"SH-1","state":"delivered"}"#;
    let sig = format!(
        "sha256={}",
        hex(&hmac256(b"carrier-secret-value", body.as_bytes()))
    );
    let r = t
        .post(
            &path,
            &[
                ("x-hub-signature-256", sig),
                ("x-github-delivery", "d-1".into()),
            ],
            body,
        )
        .await;
    assert_eq!(r.status(), 202);
    let inbound_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = eventually(Duration::from_secs(20), "the re-emitted event", || async {
        partner.received().into_iter().next()
    })
    .await;
    let payload = got.json();
    assert_eq!(payload["type"], "shipment.updated");
    assert_eq!(
        payload["data"],
        json!({"shipment": "SH-1", "state": "delivered"})
    );
    assert!(switchyard_tests::verify_signature(
        &secret,
        got.header("webhook-id"),
        got.header("webhook-timestamp"),
        &got.body,
        got.header("webhook-signature"),
    ));
    let stored = t
        .app
        .partner_get(key, &format!("/v1/inbound-events/{inbound_id}"))
        .await;
    assert_eq!(stored["status"], "completed");
    let event = t
        .app
        .partner_get(
            key,
            &format!(
                "/v1/events/{}",
                stored["result"]["event_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(event["source"], "inbound");

    // A body that breaks the type's schema fails at once, with the reason: no retry can fix it.
    let r = t
        .app
        .partner_post(
            key,
            "/v1/event-types",
            json!({"name": "shipment.checked",
                   "schema": {"type": "object", "required": ["shipment"]}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let (checker, path) = t
        .integration(
            "checker",
            json!({"scheme": "none",
                   "action": {"type": "emit_event", "event_type": "shipment.checked"}}),
        )
        .await;
    let r = t.post(&path, &[], r#"{"state":"delivered"}"#).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    fails_at_once(&t, &id, "schema").await;
    // A body refused on arrival (JSON Postgres cannot hold), retried by request: it fails
    // again at once, not after every attempt of the job.
    let r = t.post(&path, &[], r#"{"shipment":"a\u0000b"}"#).await;
    problem(r, 400, "body_invalid", Some("body")).await;
    let list = t
        .app
        .partner_get(key, &format!("/v1/inbound-events?integration_id={checker}"))
        .await;
    let refused = list["data"][0]["id"].as_str().unwrap().to_owned();
    let retry = format!("/v1/inbound-events/{refused}/retry");
    assert_eq!(
        t.app.partner_post(key, &retry, json!({})).await.status(),
        200
    );
    fails_at_once(&t, &refused, "u0000").await;
}

/// A sender's event id too long for the dedupe index still deduplicates (by its digest); a
/// body Postgres' JSON cannot hold (a `\u0000`, in an id or anywhere) is refused with a
/// reason, not stored to fail on every attempt. Never a 500.
#[tokio::test]
async fn long_event_ids_deduplicate_and_unstorable_bodies_are_refused() {
    let t = Inbound::new().await;
    let (_, path) = t
        .integration(
            "odd",
            json!({"scheme": "none", "dedupe": "/id", "action": {"type": "store"}}),
        )
        .await;
    // Random, so it does not compress below the index's limit (about 2.7 KB).
    let long: String = (0..300)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let body = json!({"id": long}).to_string();
    let r = t.post(&path, &[], &body).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let first: Value = r.json().await.unwrap();
    let r = t.post(&path, &[], &body).await;
    assert_eq!(r.status(), 200, "the same id again: a duplicate");
    let again: Value = r.json().await.unwrap();
    assert_eq!(
        (&again["id"], &again["duplicate"]),
        (&first["id"], &json!(true))
    );
    // Another long id, sharing its first 9,600 characters: another event.
    let other = json!({"id": format!("{long}y")}).to_string();
    assert_eq!(t.post(&path, &[], &other).await.status(), 202);

    for body in [r#"{"id": "a\u0000b"}"#, r#"{"note": ["a\u0000b"]}"#] {
        let r = t.post(&path, &[], body).await;
        let p = problem(r, 400, "body_invalid", Some("body")).await;
        assert!(p["detail"].as_str().unwrap().contains("u0000"), "{p}");
    }
}

/// An inbound URL's token is a credential: the API's log keeps only its first characters.
#[tokio::test]
async fn the_api_log_keeps_no_inbound_token() {
    let t = Inbound::new().await;
    let (_, path) = t
        .integration(
            "logged",
            json!({"scheme": "none", "action": {"type": "store"}}),
        )
        .await;
    let token = path.strip_prefix("/inbound/").unwrap().to_owned();
    let (api, base) = switchyard_tests::process::Process::spawn_api(&t.app.process_env()).await;
    let r = t
        .app
        .http
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let shown = format!("/inbound/{}…", &token[..7]);
    eventually(
        Duration::from_secs(10),
        "the request's log line",
        || async { api.log_text().contains(&shown).then_some(()) },
    )
    .await;
    assert!(!api.log_text().contains(&token), "{}", api.log_text());
}
