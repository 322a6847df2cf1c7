//! The overview: every queue's work by state, throughput and failures over the last minute,
//! hour and day, its latency (the oldest due job's wait), and pause/resume — kept live by
//! server-sent events from the shared poller ([`super::live`]).

use std::{fmt::Write, sync::Arc, time::Duration};

use chrono::Utc;
use poem::{
    IntoResponse, Request, Response,
    http::StatusCode,
    web::{
        Data, Form, Path,
        sse::{Event, SSE},
    },
};
use switchyard_shared::{dispatch::pauses, operators::sessions};

use super::{
    CsrfForm,
    html::{self, esc},
    live::{Overview, QueueRow},
    session::{acting, admin_mark, cookie_token, failed, or_failed, signed_in},
};
use crate::AppState;

/// The columns of the queue table: field, heading.
const COLUMNS: &[(&str, &str)] = &[
    ("pending", "pending"),
    ("due", "due"),
    ("redis_ready", "in Redis"),
    ("running", "running"),
    ("waiting", "not due yet"),
    ("dead", "dead"),
    ("latency", "latency"),
    ("lag", "dispatcher lag"),
    ("done_minute", "done 1 min"),
    ("failed_minute", "failed 1 min"),
    ("done_hour", "done 1 h"),
    ("fail_rate_hour", "failure 1 h"),
    ("done_day", "done 24 h"),
    ("fail_rate_day", "failure 24 h"),
];

/// A cell's text; the page script computes the same from each live message.
fn cell(q: &QueueRow, field: &str) -> String {
    let rate = |done: i64, failed: i64| {
        if done + failed == 0 {
            "—".to_owned()
        } else {
            format!("{:.1} %", 100.0 * failed as f64 / (done + failed) as f64)
        }
    };
    match field {
        "pending" => q.pending.to_string(),
        "due" => q.due.to_string(),
        "redis_ready" => q.redis_ready.to_string(),
        "running" => q.running.to_string(),
        "waiting" => q.waiting.to_string(),
        "dead" => q.dead.to_string(),
        "latency" => format!("{:.1} s", q.latency_seconds),
        "lag" => format!("{:.1} s", q.oldest_due_age_seconds),
        "done_minute" => q.done_minute.to_string(),
        "failed_minute" => q.failed_minute.to_string(),
        "done_hour" => q.done_hour.to_string(),
        "fail_rate_hour" => rate(q.done_hour, q.failed_hour),
        "done_day" => q.done_day.to_string(),
        "fail_rate_day" => rate(q.done_day, q.failed_day),
        _ => String::new(),
    }
}

#[poem::handler]
pub async fn page(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    let signed = page_try!(signed_in(req, &state).await);
    let mut rx = state.live.watch(&state.services);
    if rx.borrow().at.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.changed()).await;
    }
    let overview: Arc<Overview> = rx.borrow().clone();
    // Pauses fresh, not from the last poll: this page is where one lands after pausing.
    let paused = page_try!(or_failed(pauses::paused(&state.services.pool).await));
    let can_act = signed.session.role.can_act();
    let mut rows = String::new();
    for q in &overview.queues {
        let name = esc(&q.queue);
        let _ = write!(
            rows,
            "<tr data-q=\"{name}\"><th scope=\"row\"><a href=\"/dashboard/jobs?queue={name}\">{name}</a></th>"
        );
        for (field, _) in COLUMNS {
            let _ = write!(rows, "<td data-f=\"{field}\">{}</td>", cell(q, field));
        }
        let is_paused = paused.iter().any(|p| p.0 == q.queue);
        let status = if is_paused { "paused" } else { "active" };
        let _ = write!(rows, "<td data-f=\"status\">{}</td>", html::badge(status));
        if can_act {
            let (action, label) = if is_paused {
                ("resume", "Resume")
            } else {
                ("pause", "Pause")
            };
            let _ = write!(
                rows,
                "<td><form method=\"post\" action=\"/dashboard/queues/{name}/{action}\">{}\
                 <button type=\"submit\">{label}</button></form></td>",
                html::csrf_field(&signed)
            );
        }
        rows.push_str("</tr>");
    }
    let mut head = String::from("<tr><th scope=\"col\">queue</th>");
    for (_, title) in COLUMNS {
        let _ = write!(head, "<th scope=\"col\">{title}</th>");
    }
    head.push_str("<th scope=\"col\">state</th>");
    if can_act {
        head.push_str("<th scope=\"col\"><span class=\"sr\">action</span></th>");
    }
    head.push_str("</tr>");
    let at = overview.at.map(|t| html::time(&t)).unwrap_or_default();
    let body = format!(
        "<p class=\"live\" aria-live=\"polite\"><span id=\"live-state\">live</span> · updated \
         <span id=\"live-at\">{at}</span></p>\
         <div class=\"scroll\"><table id=\"overview\"><thead>{head}</thead><tbody>{rows}</tbody></table></div>\
         <p class=\"hint\">Latency: how long the oldest ready job (due, or in Redis unclaimed) has waited. \
         Dispatcher lag: how long the oldest due job has waited to be handed to Redis. Not due yet: pending \
         jobs waiting for a retry backoff, a throttled endpoint or their schedule. In Redis: tasks handed to workers, not yet claimed. A paused \
         queue dispatches, claims and starts nothing until resumed; its jobs wait.</p>"
    );
    html::page(&signed, "overview", "Overview", &body)
}

/// How often a live overview looks its session up again.
const SESSION_RECHECK: Duration = Duration::from_secs(3);

/// Server-sent events: the overview as JSON on every poll, until the session ends or the API
/// shuts down.
#[poem::handler]
pub async fn live(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    let signed = match signed_in(req, &state).await {
        Ok(s) => s,
        Err(_) => return StatusCode::UNAUTHORIZED.into_response(),
    };
    let rx = state.live.watch(&state.services);
    let until = signed.session.expires_at;
    let shutdown = state.shutdown.clone();
    let (pool, token, mark) = (
        state.services.pool.clone(),
        cookie_token(req).unwrap_or_default(),
        admin_mark(&state),
    );
    let checked = std::time::Instant::now();
    let stream = futures::stream::unfold((rx, true, checked), move |(mut rx, first, checked)| {
        let (shutdown, pool, token, mark) =
            (shutdown.clone(), pool.clone(), token.clone(), mark.clone());
        async move {
            // The first message is the latest read, if there was one yet. The stream ends with
            // the session (its expiry, a sign-out, its account deleted, the admin token changed:
            // looked up again every few seconds), or when the API shuts down.
            if !first || rx.borrow().at.is_none() {
                let left = (until - Utc::now()).to_std().ok()?;
                tokio::select! {
                    changed = tokio::time::timeout(left, rx.changed()) => changed.ok()?.ok()?,
                    () = shutdown.cancelled() => return None,
                }
            }
            let checked = if checked.elapsed() >= SESSION_RECHECK {
                sessions::find(&pool, &token, &mark).await.ok()??;
                std::time::Instant::now()
            } else {
                checked
            };
            let data = serde_json::to_string(&**rx.borrow_and_update()).ok()?;
            Some((Event::message(data), (rx, false, checked)))
        }
    });
    SSE::new(stream)
        .keep_alive(Duration::from_secs(15))
        .into_response()
}

/// Pauses or resumes a queue cluster-wide.
#[poem::handler]
pub async fn pause(
    req: &Request,
    state: Data<&Arc<AppState>>,
    Path((queue, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let signed = page_try!(acting(req, &state, form.csrf.as_deref()).await);
    let Some(queue) = state.services.queues.names().iter().find(|q| **q == queue) else {
        return html::problem(StatusCode::NOT_FOUND, "No such queue.");
    };
    let who = signed.actor(req);
    let pool = &state.services.pool;
    let done = match action.as_str() {
        "pause" => pauses::pause_audited(pool, &who, queue, &signed.session.who)
            .await
            .map(|_| ()),
        "resume" => pauses::resume_audited(pool, &who, queue).await,
        _ => return html::problem(StatusCode::NOT_FOUND, "No such action."),
    };
    match done {
        Ok(()) => html::redirect("/dashboard"),
        Err(e) => failed(&e),
    }
}
