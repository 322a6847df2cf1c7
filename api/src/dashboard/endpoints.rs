//! Webhook endpoints with their health (status, breaker, failures in a row, success rate and
//! median latency of the last 100 attempts), and one endpoint's newest attempts.

use std::sync::Arc;

use poem::{
    Request, Response,
    web::{Data, Path},
};
use switchyard_shared::webhooks::{self, dashboard::EndpointHealth};

use super::{
    domain::{ROWS, code, list_page, opt, row_in_path},
    html::{self, esc},
    session::{or_failed, signed_in},
};
use crate::AppState;

#[poem::handler]
pub async fn list(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    list_page!(
        req,
        state,
        webhooks::dashboard::endpoints(&state.services.pool, ROWS),
        "endpoints",
        "Webhook endpoints",
        &[
            "endpoint",
            "tenant",
            "kind",
            "destination",
            "status",
            "breaker",
            "failures in a row",
            "success (last 100)",
            "p50",
            "last attempt"
        ],
        "No endpoint.",
        |e: &EndpointHealth| {
            let success = if e.attempts == 0 {
                "—".to_owned()
            } else {
                format!(
                    "{:.0} % of {}",
                    100.0 * e.succeeded as f64 / e.attempts as f64,
                    e.attempts
                )
            };
            let status = match &e.disabled_reason {
                Some(r) => format!("{} ({})", html::badge(&e.status), esc(r)),
                None => html::badge(&e.status),
            };
            vec![
                format!(
                    "<a href=\"/dashboard/endpoints/{0}\"><code>{0}</code></a>",
                    e.id
                ),
                code(e.tenant_id),
                html::badge(&e.kind),
                esc(&e.url),
                status,
                html::badge(&e.breaker),
                e.consecutive_failures.to_string(),
                success,
                e.p50_ms.map_or("—".into(), |p| format!("{p:.0} ms")),
                html::time_opt(&e.last_attempt_at),
            ]
        }
    )
}

/// One endpoint's newest 100 attempts.
#[poem::handler]
pub async fn detail(
    req: &Request,
    state: Data<&Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let signed = page_try!(signed_in(req, &state).await);
    let pool = &state.services.pool;
    let (id, scope) = page_try!(row_in_path(pool, "webhook_endpoints", &id, "endpoint").await);
    let tenant = scope.tenant_id;
    let endpoint = page_try!(or_failed(webhooks::endpoints::get(pool, scope, id).await));
    let attempts = page_try!(or_failed(
        webhooks::attempts::list_for_endpoint(pool, tenant, id, 100, None).await
    ));
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .map(|a| {
            vec![
                html::time(&a.created_at),
                esc(&a.event_type),
                format!("<code>{}</code>", esc(&a.webhook_id)),
                a.attempt.to_string(),
                a.status_code.map_or("—".into(), |c| c.to_string()),
                format!("{} ms", a.duration_ms),
                opt(&a.error_class),
                opt(&a.error_message),
            ]
        })
        .collect();
    let body = format!(
        "<p>Tenant <code>{tenant}</code>. Kind {}, to <code>{}</code>. Newest attempts \
         first.</p>{}",
        html::badge(endpoint.kind.as_str()),
        esc(&endpoint.url),
        html::table(
            &[
                "at",
                "event type",
                "message",
                "attempt",
                "status",
                "took",
                "error class",
                "error"
            ],
            &rows,
            "No attempt yet.",
        )
    );
    html::page(&signed, "endpoints", &format!("Endpoint {id}"), &body)
}
