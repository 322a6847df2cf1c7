//! Orders: the newest across tenants, and one order's history — every event it emitted, with
//! what changed.

use std::sync::Arc;

use poem::{
    Request, Response,
    web::{Data, Path},
};
use switchyard_shared::orders::{self, dashboard::OrderRow};

use super::{
    domain::{ROWS, code, list_page, row_in_path},
    html::{self, esc},
    session::{or_failed, signed_in},
};
use crate::AppState;

#[poem::handler]
pub async fn list(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    list_page!(
        req,
        state,
        orders::dashboard::recent(&state.services.pool, ROWS),
        "orders",
        "Orders",
        &[
            "order",
            "tenant",
            "mode",
            "external id",
            "provider",
            "status",
            "total",
            "events",
            "updated"
        ],
        "No order.",
        |o: &OrderRow| vec![
            format!(
                "<a href=\"/dashboard/orders/{0}\"><code>{0}</code></a>",
                o.id
            ),
            code(o.tenant_id),
            esc(&o.mode),
            esc(&o.external_id),
            esc(&o.provider),
            html::badge(&o.status),
            format!("{} {}", o.total, esc(&o.currency)),
            o.event_seq.to_string(),
            html::time(&o.updated_at),
        ]
    )
}

/// One order's history, oldest first (its first 500 events).
#[poem::handler]
pub async fn detail(
    req: &Request,
    state: Data<&Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let signed = page_try!(signed_in(req, &state).await);
    let pool = &state.services.pool;
    let (id, scope) = page_try!(row_in_path(pool, "orders", &id, "order").await);
    let history = page_try!(or_failed(orders::history(pool, scope, id, 500, None).await));
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|h| {
            vec![
                h.seq.to_string(),
                esc(&h.r#type),
                format!("<code>{}</code>", esc(&h.changes.to_string())),
                html::time(&h.created_at),
            ]
        })
        .collect();
    let body = format!(
        "<p>Tenant <code>{}</code>, {} mode.</p><h2>History</h2>{}",
        scope.tenant_id,
        scope.mode.as_str(),
        html::table(&["#", "event", "changes", "at"], &rows, "No event.")
    );
    html::page(&signed, "orders", &format!("Order {id}"), &body)
}
