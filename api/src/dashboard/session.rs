//! Signing in and out of the dashboard, and what every page and action checks first.
//!
//! Sign-in takes the admin token, or an operator account's email and access secret, and sets
//! an HttpOnly, SameSite=Strict cookie (Secure when the request came over TLS) holding the
//! session token. Every state-changing request must carry the session's CSRF token (a hidden
//! form field) and, when the browser names one, an `Origin` of this host; actions also need the
//! `operator` role. Failed sign-ins count against the client address like failed API keys.

use std::sync::Arc;

use poem::{
    Request, Response,
    http::StatusCode,
    web::{Data, Form, Query},
};
use serde::Deserialize;
use switchyard_shared::{
    audit::{Actor, ActorKind},
    crypto::constant_time_eq,
    operators::{self, Role, sessions},
};

use super::html::{self, esc};
use crate::{
    AppState,
    auth::{actor, client_ip, failed_authentication, lockout_left},
};

const COOKIE: &str = "sy_dashboard";

/// A signed-in request.
pub struct Signed {
    pub session: sessions::Session,
    /// This session's CSRF token.
    pub csrf: String,
}

impl Signed {
    /// The audit actor of this session's actions.
    pub fn actor(&self, req: &Request) -> Actor {
        let kind = match self.session.operator_id {
            Some(id) => ActorKind::Operator(id),
            None => ActorKind::Admin,
        };
        actor(req, kind)
    }
}

/// The session token the request's cookie holds.
pub(super) fn cookie_token(req: &Request) -> Option<String> {
    let header = req.headers().get("cookie")?.to_str().ok()?;
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then(|| value.to_owned())
    })
}

/// The signed-in session, or a redirect to the sign-in page (which comes back here after).
pub async fn signed_in(req: &Request, state: &AppState) -> Result<Signed, Response> {
    let back = |why: &str| {
        // After signing in, a page comes back; a form's target cannot be fetched again.
        let next = match req.method() {
            &poem::http::Method::GET => req
                .original_uri()
                .path_and_query()
                .map_or("/dashboard", |p| p.as_str()),
            _ => "/dashboard",
        };
        html::redirect(&format!("/dashboard/login?next={}{why}", html::url(next)))
    };
    let Some(token) = cookie_token(req) else {
        return Err(back(""));
    };
    match sessions::find(&state.services.pool, &token, &admin_mark(state)).await {
        Ok(Some(session)) => Ok(Signed {
            session,
            csrf: sessions::csrf_token(&state.services.secrets.api_key_pepper, &token),
        }),
        Ok(None) => Err(back("&error=expired")),
        Err(e) => Err(failed(&e)),
    }
}

/// A state-changing request: signed in, same origin, the session's CSRF token, and the
/// `operator` role; else the refusal to answer with.
pub async fn acting(
    req: &Request,
    state: &AppState,
    csrf: Option<&str>,
) -> Result<Signed, Response> {
    if !same_origin(req) {
        return Err(html::problem(
            StatusCode::FORBIDDEN,
            "This form was sent from another site; it was refused.",
        ));
    }
    let signed = signed_in(req, state).await?;
    let token = cookie_token(req).unwrap_or_default();
    let pepper = &state.services.secrets.api_key_pepper;
    if !csrf.is_some_and(|c| sessions::csrf_ok(pepper, &token, c)) {
        return Err(html::problem(
            StatusCode::FORBIDDEN,
            "The form's security token is missing or stale; reload the page and try again.",
        ));
    }
    if !signed.session.role.can_act() {
        return Err(html::problem(
            StatusCode::FORBIDDEN,
            "Your role is viewer: you can look at everything but change nothing.",
        ));
    }
    Ok(signed)
}

/// A browser names where a form came from in `Origin`; it must be this host.
fn same_origin(req: &Request) -> bool {
    let Some(origin) = req.headers().get("origin").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest == host)
}

/// `r`, its error as the page that explains it ([`failed`]).
#[allow(clippy::result_large_err)] // answered at once by `page_try!`, never carried along
pub fn or_failed<T>(r: switchyard_shared::Result<T>) -> Result<T, Response> {
    r.map_err(|e| failed(&e))
}

/// The page for a failure of ours (logged; no detail shown).
pub fn failed(e: &switchyard_shared::Error) -> Response {
    match e {
        switchyard_shared::Error::NotFound { detail, .. } => {
            html::problem(StatusCode::NOT_FOUND, detail)
        }
        switchyard_shared::Error::Conflict { detail, .. }
        | switchyard_shared::Error::Invalid { detail, .. } => {
            html::problem(StatusCode::CONFLICT, detail)
        }
        e => {
            tracing::error!(error = %e, "dashboard request failed");
            html::problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something failed on our side; it is in the server's log.",
            )
        }
    }
}

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
    error: Option<String>,
}

/// Only paths of the dashboard itself are followed after sign-in.
fn safe_next(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with("/dashboard") && !n.contains("//") && !n.contains('\\'))
        .unwrap_or("/dashboard")
}

#[poem::handler]
pub async fn login_form(Query(q): Query<Next>) -> Response {
    let error = match q.error.as_deref() {
        Some("invalid") => "<p class=\"error\" role=\"alert\">Those credentials are not valid.</p>",
        Some("expired") => {
            "<p class=\"error\" role=\"alert\">Your session ended; sign in again.</p>"
        }
        _ => "",
    };
    let next = esc(safe_next(q.next.as_deref()));
    let body = format!(
        "{error}<form method=\"post\" action=\"/dashboard/login\" class=\"signin\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label>Email <small>(leave empty to use the admin token)</small>\
         <input name=\"email\" type=\"email\" autocomplete=\"username\" autofocus></label>\
         <label>Access secret or admin token\
         <input name=\"secret\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form>"
    );
    html::bare(StatusCode::OK, "Sign in", &body)
}

#[derive(Deserialize)]
pub struct Credentials {
    email: Option<String>,
    secret: Option<String>,
    next: Option<String>,
}

#[poem::handler]
pub async fn login(
    req: &Request,
    state: Data<&Arc<AppState>>,
    Form(form): Form<Credentials>,
) -> Response {
    if !same_origin(req) {
        return html::problem(
            StatusCode::FORBIDDEN,
            "Sign-in from another site was refused.",
        );
    }
    let ip = client_ip(req, &state.config.trusted_proxies);
    let locked_out = |secs: u64| {
        html::problem(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many failed sign-ins from this address; retry in {secs} s."),
        )
    };
    if let Some(secs) = lockout_left(&state, ip) {
        return locked_out(secs);
    }
    let secret = form.secret.unwrap_or_default();
    let email = form.email.unwrap_or_default();
    let pool = &state.services.pool;
    let pepper = &state.services.secrets.api_key_pepper;
    let who = if email.contains('\0') || secret.contains('\0') {
        // No account has one (Postgres text cannot hold it): a failed sign-in like any other.
        None
    } else if email.trim().is_empty() {
        let admin = state.services.secrets.admin_token.as_bytes();
        constant_time_eq(secret.trim().as_bytes(), admin).then_some((None, Role::Operator))
    } else {
        match operators::verify(pool, pepper, &email, &secret).await {
            Ok(op) => op.map(|o| (Some(o.id), o.role)),
            Err(e) => return failed(&e),
        }
    };
    let next = safe_next(form.next.as_deref()).to_owned();
    let Some((operator_id, role)) = who else {
        if let Some(secs) = failed_authentication(&state, ip).await {
            return locked_out(secs);
        }
        tracing::warn!(?ip, "dashboard sign-in refused");
        return html::redirect(&format!(
            "/dashboard/login?error=invalid&next={}",
            html::url(&next)
        ));
    };
    let ttl = state.config.dashboard_session_ttl;
    let (token, _) = page_try!(or_failed(
        sessions::start(pool, operator_id, role, ttl, &admin_mark(&state)).await
    ));
    let mut resp = html::redirect(&next);
    let secure = if over_tls(req, &state) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs()
    );
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().insert("set-cookie", v);
    }
    resp
}

/// The mark of this deployment's admin token that admin-token sessions hold: they end when
/// the token changes.
pub fn admin_mark(state: &AppState) -> Vec<u8> {
    let secrets = &state.services.secrets;
    sessions::admin_token_mark(&secrets.api_key_pepper, &secrets.admin_token)
}

/// Whether the browser reached us over TLS: directly, or through a trusted proxy that says so.
fn over_tls(req: &Request, state: &AppState) -> bool {
    if req.scheme().as_str() == "https" {
        return true;
    }
    let peer = req
        .remote_addr()
        .as_socket_addr()
        .map(|a| a.ip().to_canonical());
    let trusted = peer.is_some_and(|p| state.config.trusted_proxies.iter().any(|c| c.contains(p)));
    trusted
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

#[poem::handler]
pub async fn logout(
    req: &Request,
    state: Data<&Arc<AppState>>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let token = cookie_token(req).unwrap_or_default();
    let pepper = &state.services.secrets.api_key_pepper;
    if !same_origin(req)
        || !form
            .csrf
            .is_some_and(|c| sessions::csrf_ok(pepper, &token, &c))
    {
        return html::problem(StatusCode::FORBIDDEN, "The sign-out form was refused.");
    }
    if let Err(e) = sessions::end(&state.services.pool, &token).await {
        return failed(&e);
    }
    let mut resp = html::redirect("/dashboard/login");
    if let Ok(v) =
        format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0").parse()
    {
        resp.headers_mut().insert("set-cookie", v);
    }
    resp
}
