//! What the dashboard does with input it cannot use, and with sessions that end: a form too
//! large is refused before it is read to the end (and before sign-in is checked), text or
//! times Postgres cannot hold get the page's explanation or a failed sign-in, never a 500, and
//! a live overview stops with its session.

use std::time::Duration;

use futures::StreamExt;
use reqwest::redirect::Policy;
use switchyard_tests::{ADMIN_TOKEN, TestApp, TestOptions, dashboard::Dashboard};

/// A client that shows redirects instead of following them (sign-in answers with one).
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_form_too_large_is_refused_unread_and_unsigned_in() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let http = no_redirects();
    // Before, the whole body was read into memory first: any size, from anyone.
    let secret = "a".repeat(2 * 1024 * 1024);
    let r = http
        .post(app.url("/dashboard/login"))
        .form(&[("secret", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // An ordinary form still goes through.
    Dashboard::sign_in(&app.base, None, ADMIN_TOKEN).await;
}

#[tokio::test]
async fn text_and_times_postgres_cannot_hold_are_explained_not_a_500() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let http = no_redirects();
    // A NUL in the e-mail is a failed sign-in (it reached Postgres before: a 500).
    let r = http
        .post(app.url("/dashboard/login"))
        .form(&[("email", "a\0@example.com"), ("secret", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap();
    assert!(to.contains("error=invalid"), "{to}");

    let d = Dashboard::sign_in(&app.base, None, ADMIN_TOKEN).await;
    for (query, said) in [
        ("error=%00", "NUL"),
        ("from=-5000-01-01T00:00", "years 1 to 9999"),
        ("to=10000-01-01T00:00:00Z", "years 1 to 9999"),
    ] {
        let r = d.get(&format!("/dashboard/jobs?{query}")).await;
        assert_eq!(r.status(), 200, "{query}");
        let page = r.text().await.unwrap();
        assert!(page.contains(said), "{query}: {page}");
    }
}

/// The live overview ends within seconds of its session's end by sign-out, not at the
/// session's expiry hours later (before, it kept streaming until then).
#[tokio::test]
async fn the_live_overview_ends_with_its_session() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let d = Dashboard::sign_in(&app.base, None, ADMIN_TOKEN).await;
    let csrf = d.csrf().await;
    let mut stream = d.get("/dashboard/live").await.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    assert!(matches!(first, Ok(Some(Ok(_)))), "the overview streams");
    let r = d.post("/dashboard/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream still runs 10 s after sign-out");
}
