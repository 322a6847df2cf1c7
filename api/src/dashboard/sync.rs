//! Sync: configurations with their last run and open conflicts, the newest runs with their
//! live counters, and open conflicts with both sides, resolved from the page (source or target
//! wins; a resolution starts a run that applies it, as in the partner API).

use std::{fmt::Write, sync::Arc};

use poem::{
    Request, Response,
    http::StatusCode,
    web::{Data, Form, Path},
};
use serde::Deserialize;
use switchyard_shared::{
    audit,
    queue::SYNC_RUNS,
    sync::{
        conflicts::{self, Choice, Resolve},
        dashboard,
        runs::{self, Trigger, Triggered},
    },
};

use super::{
    domain::row_in_path,
    html::{self, esc},
    session::{acting, failed, signed_in},
};
use crate::AppState;

const ROWS: i64 = 100;

fn json(v: &Option<serde_json::Value>) -> String {
    v.as_ref()
        .map(|v| {
            format!(
                "<pre>{}</pre>",
                esc(&serde_json::to_string_pretty(v).unwrap_or_default())
            )
        })
        .unwrap_or_else(|| "—".into())
}

#[poem::handler]
pub async fn page(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    let signed = page_try!(signed_in(req, &state).await);
    let pool = &state.services.pool;
    let (configs, runs, open) = match tokio::try_join!(
        dashboard::configurations(pool, ROWS),
        dashboard::runs(pool, ROWS),
        dashboard::open_conflicts(pool, ROWS)
    ) {
        Ok(t) => t,
        Err(e) => return failed(&e),
    };
    let mut body = String::from("<h2>Open conflicts</h2>");
    let can_act = signed.session.role.can_act();
    let conflict_rows: Vec<Vec<String>> = open
        .iter()
        .map(|c| {
            let mut actions = String::new();
            if can_act {
                for (choice, label) in [("source", "Use source"), ("target", "Use target")] {
                    let _ = write!(
                        actions,
                        "<form method=\"post\" action=\"/dashboard/sync/conflicts/{}/resolve\">{}\
                         <input type=\"hidden\" name=\"resolution\" value=\"{choice}\">\
                         <button type=\"submit\">{label}</button></form>",
                        c.id,
                        html::csrf_field(&signed)
                    );
                }
            }
            vec![
                format!("<code>{}</code>", c.id),
                format!("<code>{}</code>", c.tenant_id),
                format!("<code>{}</code>", c.configuration_id),
                esc(&c.key),
                esc(&c.reason),
                esc(&c.fields.join(", ")),
                json(&c.source_data),
                json(&c.target_data),
                format!("<div class=\"actions\">{actions}</div>"),
            ]
        })
        .collect();
    body.push_str(&html::table(
        &[
            "conflict",
            "tenant",
            "configuration",
            "key",
            "reason",
            "fields",
            "source",
            "target",
            "",
        ],
        &conflict_rows,
        "No open conflict.",
    ));
    body.push_str("<h2>Configurations</h2>");
    let config_rows: Vec<Vec<String>> = configs
        .iter()
        .map(|c| {
            vec![
                format!("<code>{}</code>", c.id),
                format!("<code>{}</code>", c.tenant_id),
                esc(&c.mode),
                esc(&c.name),
                esc(&c.entity),
                if c.enabled { "yes".into() } else { "no".into() },
                html::time_opt(&c.next_run_at),
                c.last_status.as_deref().map_or("—".into(), html::badge),
                html::time_opt(&c.last_finished_at),
                c.open_conflicts.to_string(),
            ]
        })
        .collect();
    body.push_str(&html::table(
        &[
            "configuration",
            "tenant",
            "mode",
            "name",
            "entity",
            "enabled",
            "next run",
            "last run",
            "ended",
            "open conflicts",
        ],
        &config_rows,
        "No sync configuration.",
    ));
    body.push_str("<h2>Runs</h2>");
    let run_rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.job_id.map_or_else(
                    || format!("<code>{}</code>", r.id),
                    |j| format!("<a href=\"/dashboard/jobs/{j}\"><code>{}</code></a>", r.id),
                ),
                format!("<code>{}</code>", r.configuration_id),
                html::badge(&r.status),
                esc(&r.trigger),
                r.rows_read.to_string(),
                r.rows_inserted.to_string(),
                r.rows_updated.to_string(),
                r.conflicts.to_string(),
                r.rows_failed.to_string(),
                html::time(&r.created_at),
                html::time_opt(&r.finished_at),
                esc(r.error.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    body.push_str(&html::table(
        &[
            "run",
            "configuration",
            "status",
            "trigger",
            "read",
            "inserted",
            "updated",
            "conflicts",
            "failed",
            "made",
            "ended",
            "error",
        ],
        &run_rows,
        "No sync run.",
    ));
    let moving = runs
        .iter()
        .any(|r| r.status == "pending" || r.status == "running");
    html::moving_page(&signed, "sync", "Sync", &body, moving)
}

#[derive(Deserialize)]
pub struct ResolveForm {
    csrf: Option<String>,
    resolution: Option<String>,
}

/// Resolves an open conflict (source or target wins) and starts the run that applies it.
#[poem::handler]
pub async fn resolve(
    req: &Request,
    state: Data<&Arc<AppState>>,
    Path(id): Path<String>,
    Form(form): Form<ResolveForm>,
) -> Response {
    let signed = page_try!(acting(req, &state, form.csrf.as_deref()).await);
    let resolution = match form.resolution.as_deref() {
        Some("source") => Choice::Source,
        Some("target") => Choice::Target,
        _ => return html::problem(StatusCode::BAD_REQUEST, "Choose source or target."),
    };
    let pool = &state.services.pool;
    let (id, scope) = page_try!(row_in_path(pool, "sync_conflicts", &id, "conflict").await);
    let done = async {
        let mut tx = pool.begin().await?;
        let by = format!("dashboard:{}", signed.session.who);
        let body = Resolve {
            resolution,
            data: None,
        };
        let resolved = conflicts::resolve(&mut tx, scope, id, body, &by).await?;
        let entry = audit::Entry {
            tenant_id: Some(scope.tenant_id),
            mode: Some(scope.mode),
            action: "sync_conflict.resolved",
            target_type: "sync_conflict",
            target_id: id,
            changes: serde_json::json!({ "resolution": resolution }),
        };
        audit::record(&mut tx, &signed.actor(req), entry).await?;
        let triggered =
            runs::trigger(&mut tx, scope, resolved.configuration_id, Trigger::Manual).await?;
        tx.commit().await?;
        Ok::<_, switchyard_shared::Error>(triggered)
    }
    .await;
    match done {
        Ok(triggered) => {
            if let Triggered::Started(_, task) = triggered {
                state.fast_path.push(SYNC_RUNS, vec![task]);
            }
            html::redirect("/dashboard/sync")
        }
        Err(e) => failed(&e),
    }
}
