//! The operator dashboard at `/dashboard`: server-rendered HTML with one small script (live
//! overview, theme), no CDN and no build step. It reads the same domain functions as the admin
//! API, and every action it offers also exists there (`/admin/v1/jobs…`,
//! `/admin/v1/queues/{queue}/pause`). Signing in, sessions, CSRF and roles: [`session`].
//! How it is built and measured: `docs/architecture.md` ("Dashboard").

/// The value of `$e` (a `Result<T, Response>`), or that response answered at once: a page's
/// way of stopping at a refusal (not signed in, no right to act) or a failure.
macro_rules! page_try {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(answer_now) => return answer_now,
        }
    };
}

pub mod dead;
pub mod domain;
pub mod endpoints;
pub mod html;
pub mod jobs;
pub mod live;
pub mod orders;
pub mod overview;
pub mod session;
pub mod sync;
pub mod workers;

use poem::{EndpointExt, Response, Route, get, handler, post};

use serde::Deserialize;

/// A form that carries nothing but its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

/// Every dashboard route.
pub fn routes() -> impl poem::Endpoint {
    Route::new()
        .at("/", get(overview::page))
        .at("/live", get(overview::live))
        .at("/login", get(session::login_form).post(session::login))
        .at("/logout", post(session::logout))
        .at("/queues/:queue/:action", post(overview::pause))
        .at("/jobs", get(jobs::list))
        .at("/jobs/bulk", post(jobs::bulk))
        .at("/jobs/:id", get(jobs::detail))
        .at("/jobs/:id/:action", post(jobs::act))
        .at("/dead", get(dead::page))
        .at("/workers", get(workers::page))
        .at("/endpoints", get(endpoints::list))
        .at("/endpoints/:id", get(endpoints::detail))
        .at("/orders", get(orders::list))
        .at("/orders/:id", get(orders::detail))
        .at("/events", get(domain::events_page))
        .at("/integrations", get(domain::integrations_page))
        .at("/inbound", get(domain::inbound_page))
        .at("/keys", get(domain::keys_page))
        .at("/sync", get(sync::page))
        .at("/sync/conflicts/:id/resolve", post(sync::resolve))
        .at("/assets/dashboard.css", get(css))
        .at("/assets/dashboard.js", get(js))
        .with(poem::middleware::SetHeader::new().overriding("x-robots-tag", "noindex"))
        .around(limit_form)
}

/// The largest form the dashboard reads: its forms hold a token and a few fields.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Reads a request's body up to [`MAX_FORM_BYTES`] before any handler (and before sign-in is
/// checked): a larger one, or one that never ends, gets a 413 instead of filling memory.
async fn limit_form<E: poem::Endpoint>(
    ep: std::sync::Arc<E>,
    mut req: poem::Request,
) -> poem::Result<Response> {
    let body = req.take_body().into_bytes_limit(MAX_FORM_BYTES).await;
    match body {
        Ok(bytes) => {
            req.set_body(bytes);
            ep.call(req).await.map(poem::IntoResponse::into_response)
        }
        Err(_) => Ok(Response::builder()
            .status(poem::http::StatusCode::PAYLOAD_TOO_LARGE)
            .content_type("text/plain; charset=utf-8")
            .body(format!(
                "A dashboard form is at most {MAX_FORM_BYTES} bytes."
            ))),
    }
}

fn asset(content_type: &str, body: &'static str) -> Response {
    Response::builder()
        .content_type(content_type)
        .header("cache-control", "public, max-age=300")
        .header("x-content-type-options", "nosniff")
        .body(body)
}

#[handler]
fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/dashboard.css"),
    )
}

#[handler]
fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    )
}
