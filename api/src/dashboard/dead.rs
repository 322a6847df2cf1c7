//! Dead jobs grouped by error fingerprint (the error with its numbers and ids masked), biggest
//! groups first, each linking to its jobs (where a bulk retry or discard acts on the group
//! and on nothing else).

use std::sync::Arc;

use poem::{Request, Response, web::Data};
use switchyard_shared::jobs_admin;

use super::{
    html::{self, esc},
    session::{or_failed, signed_in},
};
use crate::AppState;

#[poem::handler]
pub async fn page(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    let signed = page_try!(signed_in(req, &state).await);
    let groups = page_try!(or_failed(
        jobs_admin::dead_groups(&state.services.pool, None).await
    ));
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            // The group's jobs, exactly: its queue and its fingerprint.
            let link = format!(
                "/dashboard/jobs?queue={}&state=dead&fingerprint={}",
                html::url(&g.queue),
                html::url(&g.fingerprint)
            );
            vec![
                esc(&g.queue),
                format!("<a href=\"{}\">{}</a>", esc(&link), g.count),
                esc(&g.fingerprint),
                format!("<a href=\"/dashboard/jobs/{0}\">{0}</a>", g.example_id),
                html::time(&g.first_at),
                html::time(&g.last_at),
            ]
        })
        .collect();
    let body = html::table(
        &[
            "queue",
            "jobs",
            "error (numbers and ids masked)",
            "newest",
            "first",
            "last",
        ],
        &rows,
        "No dead job.",
    );
    html::page(&signed, "dead jobs", "Dead jobs by error", &body)
}
