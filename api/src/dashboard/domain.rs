//! The read-only domain lists: events, integrations with their connection status, inbound
//! webhooks and API keys with their usage — across tenants,
//! newest or unhealthiest first, 200 rows at most (the partner API pages through the rest).

use std::sync::Arc;

use poem::{Request, Response, http::StatusCode, web::Data};
use switchyard_shared::{
    api_keys, events, inbound, integrations,
    tenants::{self, Scope},
};
use uuid::Uuid;

use super::{
    html::{self, esc},
    session::{or_failed, signed_in},
};
use crate::AppState;

pub(super) const ROWS: i64 = 200;

/// Signs the request in, reads the rows, and renders them as one table.
macro_rules! list_page {
    ($req:expr, $state:expr, $read:expr, $nav:expr, $title:expr, $head:expr, $empty:expr, $row:expr) => {{
        let signed = page_try!(signed_in($req, &$state).await);
        let rows = page_try!(or_failed($read.await));
        let cells: Vec<Vec<String>> = rows.iter().map($row).collect();
        html::page(&signed, $nav, $title, &html::table($head, &cells, $empty))
    }};
}

/// The row of `table` the path's `id` names, with its tenant and mode; a "No such `what`" page
/// when the id is malformed or names nothing.
#[allow(clippy::result_large_err)] // answered at once by `page_try!`
pub(super) async fn row_in_path(
    pool: &sqlx::PgPool,
    table: &'static str,
    id: &str,
    what: &str,
) -> Result<(Uuid, Scope), Response> {
    let missing = || html::problem(StatusCode::NOT_FOUND, &format!("No such {what}."));
    let id = Uuid::parse_str(id).map_err(|_| missing())?;
    match or_failed(tenants::scope_of_row(pool, table, id).await)? {
        Some(scope) => Ok((id, scope)),
        None => Err(missing()),
    }
}

pub(super) fn code(id: impl std::fmt::Display) -> String {
    format!("<code>{id}</code>")
}

pub(super) fn opt(s: &Option<String>) -> String {
    esc(s.as_deref().unwrap_or("—"))
}

#[poem::handler]
pub async fn events_page(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    list_page!(
        req,
        state,
        events::dashboard::recent(&state.services.pool, ROWS),
        "events",
        "Events",
        &[
            "event",
            "tenant",
            "mode",
            "type",
            "source",
            "ordering key",
            "occurred",
            "fan-out"
        ],
        "No event.",
        |e: &events::dashboard::EventRow| vec![
            code(e.id),
            code(e.tenant_id),
            esc(&e.mode),
            esc(&e.r#type),
            esc(&e.source),
            opt(&e.ordering_key),
            html::time(&e.occurred_at),
            match &e.fan_out_error {
                Some(err) => format!("{} {}", html::badge("failed"), esc(err)),
                None => "ok".into(),
            },
        ]
    )
}

#[poem::handler]
pub async fn integrations_page(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    list_page!(
        req,
        state,
        integrations::dashboard::integrations(&state.services.pool, ROWS),
        "integrations",
        "Integrations",
        &[
            "integration",
            "tenant",
            "mode",
            "name",
            "type",
            "provider",
            "connection",
            "checked",
            "last error",
            "calls",
            "failures"
        ],
        "No integration.",
        |i: &integrations::dashboard::IntegrationRow| vec![
            code(i.id),
            code(i.tenant_id),
            esc(&i.mode),
            esc(&i.name),
            esc(&i.r#type),
            esc(&i.provider),
            html::badge(&i.connection_status),
            html::time_opt(&i.last_health_check_at),
            opt(&i.last_error),
            i.calls_total.to_string(),
            i.failures_total.to_string(),
        ]
    )
}

#[poem::handler]
pub async fn inbound_page(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    list_page!(
        req,
        state,
        inbound::dashboard::recent(&state.services.pool, ROWS),
        "inbound",
        "Inbound webhooks",
        &[
            "event",
            "tenant",
            "integration",
            "status",
            "verification",
            "reason",
            "runs",
            "error",
            "received",
            "processed"
        ],
        "No inbound webhook.",
        |i: &inbound::dashboard::InboundRow| vec![
            code(i.id),
            code(i.tenant_id),
            code(i.integration_id),
            html::badge(&i.status),
            esc(&i.verification),
            opt(&i.reason),
            i.attempts.to_string(),
            opt(&i.last_error),
            html::time(&i.received_at),
            html::time_opt(&i.processed_at),
        ]
    )
}

#[poem::handler]
pub async fn keys_page(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    list_page!(
        req,
        state,
        api_keys::dashboard::keys(&state.services.pool, ROWS),
        "api keys",
        "API keys",
        &[
            "key",
            "tenant",
            "name",
            "mode",
            "scopes",
            "made",
            "expires",
            "revoked",
            "last used",
            "requests 24 h",
            "errors 24 h"
        ],
        "No API key.",
        |k: &api_keys::dashboard::KeyRow| vec![
            format!("<code>{}…{}</code>", esc(&k.key_id), esc(&k.last4)),
            code(k.tenant_id),
            esc(&k.name),
            esc(&k.mode),
            esc(&k.scopes.join(" ")),
            html::time(&k.created_at),
            html::time_opt(&k.expires_at),
            html::time_opt(&k.revoked_at),
            html::time_opt(&k.last_used_at),
            k.requests_day.to_string(),
            k.errors_day.to_string(),
        ]
    )
}

pub(super) use list_page;
