//! The worker pool: every worker process seen in the last day with its host, pid, version,
//! queues and concurrency, busy jobs and last heartbeat.

use std::{sync::Arc, time::Duration};

use poem::{Request, Response, web::Data};
use switchyard_shared::workers;

use super::{
    html::{self, esc},
    session::{or_failed, signed_in},
};
use crate::AppState;

#[poem::handler]
pub async fn page(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    let signed = page_try!(signed_in(req, &state).await);
    let list = page_try!(or_failed(
        workers::list(&state.services.pool, Duration::from_secs(86_400)).await
    ));
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            let queues = w
                .queues
                .iter()
                .map(|q| format!("{}×{}", esc(&q.queue), q.concurrency))
                .collect::<Vec<_>>()
                .join(", ");
            let status = serde_json::to_value(w.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            vec![
                esc(&w.host),
                w.pid.to_string(),
                esc(&w.version),
                html::badge(&status),
                queues,
                w.busy.to_string(),
                html::time(&w.started_at),
                html::time(&w.last_seen_at),
            ]
        })
        .collect();
    let body = html::table(
        &[
            "host",
            "pid",
            "version",
            "status",
            "queues × concurrency",
            "busy",
            "started",
            "last heartbeat",
        ],
        &rows,
        "No worker reported in the last day.",
    );
    html::page(&signed, "workers", "Workers", &body)
}
