//! Jobs: the ledger by queue, state, tenant, time and error text in keyset pages; one job with
//! its attempts and timeline; retry, cancel and discard — one job, or every job the current
//! filter matches after a dry-run count typed back as confirmation.

use std::{fmt::Write, sync::Arc};

use chrono::{DateTime, NaiveDateTime, Utc};
use poem::{
    Request, Response,
    http::StatusCode,
    web::{Data, Form, Path, Query},
};
use serde::Deserialize;
use switchyard_shared::{
    job_actions::{self, JobAction},
    jobs_admin::{self, JobFilter, JobState},
};
use uuid::Uuid;

use super::{
    CsrfForm,
    html::{self, esc},
    session::{Signed, acting, failed, or_failed, signed_in},
};
use crate::AppState;

const PAGE: i64 = 50;

/// The filter as the page's form sends it (every field text, checked here).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    queue: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    error: String,
    /// One dead-job group's fingerprint, exactly (the dead jobs page links with it; the
    /// group of jobs that died with no error has the empty one).
    fingerprint: Option<String>,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    id: String,
    after: Option<String>,
}

/// A time from the form: `datetime-local` (taken as UTC) or RFC 3339.
fn parse_time(s: &str) -> Result<Option<DateTime<Utc>>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").map(|t| t.and_utc()))
        .ok()
        // Postgres holds the years 1 to 9999 of the API's times (`input::Time`), no more.
        .filter(|t| (1..=9999).contains(&chrono::Datelike::year(t)))
        .map(Some)
        .ok_or_else(|| format!("`{s}` is not a time (YYYY-MM-DDTHH:MM, UTC, years 1 to 9999)."))
}

impl Filters {
    /// The ledger filter, or what is wrong with the form.
    fn parse(&self, queues: &[&str]) -> Result<JobFilter, String> {
        let queue = match self.queue.trim() {
            "" => None,
            q if queues.contains(&q) => Some(q.to_owned()),
            q => return Err(format!("There is no queue `{q}`.")),
        };
        let state = match self.state.trim() {
            "" => None,
            s => Some(
                serde_json::from_value::<JobState>(serde_json::Value::String(s.into()))
                    .map_err(|_| format!("There is no job state `{s}`."))?,
            ),
        };
        let tenant_id = match self.tenant.trim() {
            "" => None,
            t => Some(Uuid::parse_str(t).map_err(|_| format!("`{t}` is not a tenant id."))?),
        };
        if self.error.contains('\0') || self.fingerprint.as_ref().is_some_and(|f| f.contains('\0'))
        {
            return Err("The error filter cannot hold NUL characters.".to_owned());
        }
        let error = Some(self.error.trim().to_owned()).filter(|e| !e.is_empty());
        let error_fingerprint = self.fingerprint.clone();
        Ok(JobFilter {
            queue,
            state,
            tenant_id,
            error,
            error_fingerprint,
            created_after: parse_time(&self.from)?,
            created_before: parse_time(&self.to)?,
        })
    }

    /// The filter's fields as the form names them (the job id and page position aside).
    fn fields(&self) -> [(&'static str, &String); 6] {
        [
            ("queue", &self.queue),
            ("state", &self.state),
            ("tenant", &self.tenant),
            ("error", &self.error),
            ("from", &self.from),
            ("to", &self.to),
        ]
    }

    /// The filter as a query string (for the next page's link), without the page position.
    fn query(&self) -> String {
        self.fields()
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| format!("{k}={}", html::url(v.trim())))
            .chain(
                self.fingerprint
                    .iter()
                    .map(|f| format!("fingerprint={}", html::url(f))),
            )
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The filter as hidden fields (for the bulk forms).
    fn hidden(&self) -> String {
        let mut out = String::new();
        for (k, v) in self.fields() {
            let _ = write!(
                out,
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                esc(v.trim())
            );
        }
        if let Some(f) = &self.fingerprint {
            let _ = write!(
                out,
                "<input type=\"hidden\" name=\"fingerprint\" value=\"{}\">",
                esc(f)
            );
        }
        out
    }

    /// The filter form.
    fn form(&self, queues: &[&str]) -> String {
        let mut queue_opts = String::from("<option value=\"\">any</option>");
        for q in queues {
            let sel = if self.queue == *q { " selected" } else { "" };
            let _ = write!(queue_opts, "<option{sel}>{q}</option>");
        }
        let mut state_opts = String::from("<option value=\"\">any</option>");
        for s in [
            "pending",
            "queued",
            "running",
            "succeeded",
            "dead",
            "cancelled",
        ] {
            let sel = if self.state == s { " selected" } else { "" };
            let _ = write!(state_opts, "<option{sel}>{s}</option>");
        }
        format!(
            "<form method=\"get\" action=\"/dashboard/jobs\" class=\"filters\" role=\"search\">\
             <label>Queue <select name=\"queue\">{queue_opts}</select></label>\
             <label>State <select name=\"state\">{state_opts}</select></label>\
             <label>Tenant <input name=\"tenant\" value=\"{}\" placeholder=\"tenant id\" size=\"36\"></label>\
             <label>Error contains <input name=\"error\" value=\"{}\"></label>\
             <label>Made from <input name=\"from\" type=\"datetime-local\" value=\"{}\"></label>\
             <label>to <input name=\"to\" type=\"datetime-local\" value=\"{}\"></label>\
             <label>Job id <input name=\"id\" value=\"{}\" size=\"36\"></label>{}\
             <button type=\"submit\">Filter</button></form>",
            esc(&self.tenant),
            esc(&self.error),
            esc(&self.from),
            esc(&self.to),
            esc(&self.id),
            self.group(),
        )
    }

    /// The dead-job group the list is narrowed to, kept by the filter form.
    fn group(&self) -> String {
        let Some(f) = &self.fingerprint else {
            return String::new();
        };
        format!(
            "<input type=\"hidden\" name=\"fingerprint\" value=\"{0}\">\
             <p>Error group: <code>{0}</code></p>",
            esc(f)
        )
    }
}

/// The action select of the bulk form.
fn action_select(selected: Option<JobAction>) -> String {
    let mut out = String::from("<select name=\"action\" aria-label=\"Action\">");
    for a in [JobAction::Retry, JobAction::Cancel, JobAction::Discard] {
        let sel = if selected == Some(a) { " selected" } else { "" };
        let _ = write!(out, "<option{sel}>{}</option>", a.as_str());
    }
    out.push_str("</select>");
    out
}

#[poem::handler]
pub async fn list(
    req: &Request,
    state: Data<&Arc<AppState>>,
    Query(f): Query<Filters>,
) -> Response {
    let signed = page_try!(signed_in(req, &state).await);
    let queues = state.services.queues.names();
    let mut body = f.form(queues);
    match f.id.trim() {
        "" => {}
        id => match Uuid::parse_str(id) {
            Ok(id) => return html::redirect(&format!("/dashboard/jobs/{id}")),
            Err(_) => {
                let _ = write!(
                    body,
                    "<p class=\"error\" role=\"alert\">`{}` is not a job id.</p>",
                    esc(id)
                );
                return html::page(&signed, "jobs", "Jobs", &body);
            }
        },
    }
    let filter = match f.parse(queues) {
        Ok(filter) => filter,
        Err(e) => {
            let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(&e));
            return html::page(&signed, "jobs", "Jobs", &body);
        }
    };
    let after = f.after.as_deref().and_then(|a| Uuid::parse_str(a).ok());
    let rows = page_try!(or_failed(
        jobs_admin::list(&state.services.pool, &filter, PAGE + 1, after).await
    ));
    let more = rows.len() as i64 > PAGE;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .take(PAGE as usize)
        .map(|j| {
            vec![
                format!("<a href=\"/dashboard/jobs/{0}\">{0}</a>", j.id),
                esc(&j.queue),
                html::badge(j.state.as_str()),
                format!("{}/{}", j.attempt, j.max_attempts),
                format!("<code>{}</code>", j.tenant_id),
                html::time(&j.created_at),
                html::time_opt(&j.finished_at),
                esc(j.last_error.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    if signed.session.role.can_act() {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/dashboard/jobs/bulk\" class=\"bulk\">{}{}\
             <label>On every job this filter matches: {}</label>\
             <button type=\"submit\">Count matching jobs</button></form>",
            html::csrf_field(&signed),
            f.hidden(),
            action_select(None),
        );
    }
    body.push_str(&html::table(
        &[
            "job",
            "queue",
            "state",
            "runs",
            "tenant",
            "made",
            "finished",
            "last error",
        ],
        &cells,
        "No job matches this filter.",
    ));
    if more && let Some(last) = rows.get(PAGE as usize - 1) {
        let q = f.query();
        let sep = if q.is_empty() { "" } else { "&" };
        let _ = write!(
            body,
            "<p><a rel=\"next\" href=\"/dashboard/jobs?{q}{sep}after={}\">Next page →</a></p>",
            last.id
        );
    }
    html::page(&signed, "jobs", "Jobs", &body)
}

#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
}

#[poem::handler]
pub async fn detail(
    req: &Request,
    state: Data<&Arc<AppState>>,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let signed = page_try!(signed_in(req, &state).await);
    let Ok(id) = Uuid::parse_str(&id) else {
        return html::problem(StatusCode::NOT_FOUND, "No such job.");
    };
    let d = page_try!(or_failed(jobs_admin::get(&state.services.pool, id).await));
    let j = &d.job;
    let mut body = String::new();
    if let Some(done) = done
        .done
        .as_deref()
        .filter(|d| ["retry", "cancel", "discard"].contains(d))
    {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\">Done: {done}.</p>"
        );
    }
    let subject = match &d.subject.path {
        Some(path) => format!(
            "{} <code>{}</code> (partner API: <code>{}</code>)",
            esc(&d.subject.kind),
            d.subject.id,
            esc(path)
        ),
        None => format!("{} <code>{}</code>", esc(&d.subject.kind), d.subject.id),
    };
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>State</dt><dd id=\"job-state\">{}</dd><dt>Queue</dt><dd>{}</dd>\
         <dt>Tenant</dt><dd><code>{}</code></dd><dt>Works on</dt><dd>{subject}</dd>\
         <dt>Runs</dt><dd>{} of {}</dd><dt>Worker</dt><dd>{}</dd><dt>Last error</dt><dd>{}</dd></dl>\
         <h2>Timeline</h2><ol class=\"timeline\"><li>made {}</li><li>due {}</li><li>last change {}</li>{}</ol>",
        html::badge(j.state.as_str()),
        esc(&j.queue),
        j.tenant_id,
        j.attempt,
        j.max_attempts,
        esc(j.lease_owner.as_deref().unwrap_or("—")),
        esc(j.last_error.as_deref().unwrap_or("—")),
        html::time(&j.created_at),
        html::time(&j.run_at),
        html::time(&j.updated_at),
        j.finished_at
            .map(|t| format!("<li>finished {}</li>", html::time(&t)))
            .unwrap_or_default(),
    );
    if signed.session.role.can_act() {
        body.push_str("<div class=\"actions\">");
        for a in ["retry", "cancel", "discard"] {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/dashboard/jobs/{id}/{a}\">{}<button type=\"submit\">{}</button></form>",
                html::csrf_field(&signed),
                a[..1].to_uppercase() + &a[1..],
            );
        }
        body.push_str("</div>");
    }
    let attempts: Vec<Vec<String>> = d
        .attempts
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                html::time(&a.created_at),
                a.status_code.map_or("—".into(), |c| c.to_string()),
                format!("{} ms", a.duration_ms),
                esc(a.error_class.as_deref().unwrap_or("")),
                esc(a.error_message.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    if j.queue == switchyard_shared::queue::WEBHOOK_DELIVERIES {
        body.push_str("<h2>Attempts</h2>");
        body.push_str(&html::table(
            &["#", "at", "status", "took", "error class", "error"],
            &attempts,
            "No attempt yet.",
        ));
    }
    let moving = matches!(
        j.state,
        JobState::Pending | JobState::Queued | JobState::Running
    );
    html::moving_page(&signed, "jobs", &format!("Job {id}"), &body, moving)
}

/// Retry, cancel or discard one job.
#[poem::handler]
pub async fn act(
    req: &Request,
    state: Data<&Arc<AppState>>,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let signed = page_try!(acting(req, &state, form.csrf.as_deref()).await);
    let (Ok(id), Some(action)) = (Uuid::parse_str(&id), parse_action(&action)) else {
        return html::problem(StatusCode::NOT_FOUND, "No such job or action.");
    };
    match job_actions::act(&state.services.pool, &signed.actor(req), action, id).await {
        Ok(_) => {
            state.services.dispatcher.wake();
            html::redirect(&format!("/dashboard/jobs/{id}?done={}", action.as_str()))
        }
        Err(e) => failed(&e),
    }
}

fn parse_action(s: &str) -> Option<JobAction> {
    [JobAction::Retry, JobAction::Cancel, JobAction::Discard]
        .into_iter()
        .find(|a| a.as_str() == s)
}

#[derive(Deserialize)]
pub struct BulkForm {
    csrf: Option<String>,
    action: Option<String>,
    /// Absent: count only (the dry run).
    confirm: Option<String>,
    #[serde(flatten)]
    filters: Filters,
}

/// The bulk action: first a count (dry run) and a confirmation form asking for that count
/// typed back; then the action, refused if the count moved meanwhile.
#[poem::handler]
pub async fn bulk(
    req: &Request,
    state: Data<&Arc<AppState>>,
    Form(form): Form<BulkForm>,
) -> Response {
    let signed = page_try!(acting(req, &state, form.csrf.as_deref()).await);
    let Some(action) = form.action.as_deref().and_then(parse_action) else {
        return html::problem(StatusCode::BAD_REQUEST, "Choose retry, cancel or discard.");
    };
    let filter = match form.filters.parse(state.services.queues.names()) {
        Ok(f) => f,
        Err(e) => return html::problem(StatusCode::BAD_REQUEST, &e),
    };
    let pool = &state.services.pool;
    let who = signed.actor(req);
    let typed = form
        .confirm
        .as_deref()
        .map(|c| c.trim().parse::<i64>().ok());
    let dry_run = typed.is_none();
    let confirm = typed.flatten();
    match job_actions::bulk(pool, &who, action, &filter, dry_run, confirm).await {
        Ok(out) if out.dry_run => confirm_page(&signed, &form.filters, action, out.matched, None),
        Ok(out) => {
            state.services.dispatcher.wake();
            let back = format!("/dashboard/jobs?{}", form.filters.query());
            let body = format!(
                "<p class=\"notice\" role=\"status\" id=\"bulk-result\">{} {} of {} matching jobs \
                 ({} were not in a state it applies to{}).</p><p><a href=\"{}\">Back to the jobs</a></p>",
                action.as_str(),
                out.done,
                out.matched,
                out.seen - out.done,
                if out.remaining > 0 {
                    format!("; {} not looked at yet: run it again", out.remaining)
                } else {
                    String::new()
                },
                esc(&back),
            );
            html::page(&signed, "jobs", "Bulk action done", &body)
        }
        Err(switchyard_shared::Error::Conflict { detail: why, .. }) => {
            let matched = jobs_admin::count(pool, &filter).await.unwrap_or(0);
            confirm_page(&signed, &form.filters, action, matched, Some(&why))
        }
        Err(e) => failed(&e),
    }
}

fn confirm_page(
    signed: &Signed,
    filters: &Filters,
    action: JobAction,
    matched: i64,
    error: Option<&str>,
) -> Response {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let a = action.as_str();
    let body = format!(
        "{error}<p id=\"bulk-count\"><strong>{matched}</strong> jobs match this filter \
         (<code>{}</code>).</p>\
         <form method=\"post\" action=\"/dashboard/jobs/bulk\" class=\"confirm\">{}{}\
         <input type=\"hidden\" name=\"action\" value=\"{a}\">\
         <label><span>Type <strong>{matched}</strong> to {a} them</span>\
         <input name=\"confirm\" inputmode=\"numeric\" autocomplete=\"off\" required autofocus></label>\
         <button type=\"submit\" class=\"danger\">{a} {matched} jobs</button></form>\
         <p><a href=\"/dashboard/jobs?{}\">Cancel</a></p>",
        esc(&filters.query()),
        html::csrf_field(signed),
        filters.hidden(),
        esc(&filters.query()),
    );
    html::page(
        signed,
        "jobs",
        &format!("Confirm: {a} {matched} jobs"),
        &body,
    )
}
