//! The dashboard's HTML: escaping, the page frame (navigation, who is signed in, sign-out),
//! and the headers every page carries (no caching, no framing, scripts and styles from this
//! origin only).

use std::fmt::Write;

use poem::{Response, http::StatusCode};

use super::session::Signed;

/// `s` escaped for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` escaped for a URL query value.
pub fn url(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The sections of the navigation.
const NAV: &[(&str, &str)] = &[
    ("overview", "/dashboard"),
    ("jobs", "/dashboard/jobs"),
    ("dead jobs", "/dashboard/dead"),
    ("workers", "/dashboard/workers"),
    ("endpoints", "/dashboard/endpoints"),
    ("events", "/dashboard/events"),
    ("orders", "/dashboard/orders"),
    ("integrations", "/dashboard/integrations"),
    ("inbound", "/dashboard/inbound"),
    ("sync", "/dashboard/sync"),
    ("api keys", "/dashboard/keys"),
];

/// A whole page: `body` in the frame, with `active` marked in the navigation.
pub fn page(signed: &Signed, active: &str, title: &str, body: &str) -> Response {
    frame(signed, active, title, body, false)
}

/// A page showing work in progress (a running job, sync runs): its content is fetched again
/// every two seconds until it shows none.
pub fn moving_page(
    signed: &Signed,
    active: &str,
    title: &str,
    body: &str,
    moving: bool,
) -> Response {
    frame(signed, active, title, body, moving)
}

fn frame(signed: &Signed, active: &str, title: &str, body: &str, moving: bool) -> Response {
    let mut nav = String::new();
    for (name, href) in NAV {
        let current = if *name == active {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{name}</a>");
    }
    let who = esc(&signed.session.who);
    let role = signed.session.role.as_str();
    let csrf = esc(&signed.csrf);
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"csrf\" content=\"{csrf}\">\
         <title>{title} · Switchyard</title>\
         <link rel=\"stylesheet\" href=\"/dashboard/assets/dashboard.css\">\
         <script src=\"/dashboard/assets/dashboard.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><strong class=\"brand\">Switchyard</strong><nav aria-label=\"Sections\">{nav}</nav>\
         <span class=\"who\">{who} · <em data-role=\"{role}\">{role}</em></span>\
         <button type=\"button\" id=\"theme\" aria-label=\"Switch light or dark\">◐</button>\
         <form method=\"post\" action=\"/dashboard/logout\">{}<button>Sign out</button></form>\
         </header><main id=\"main\" tabindex=\"-1\"{refresh}><h1>{title}</h1>{body}</main></body></html>",
        csrf_field(signed),
        title = esc(title),
        refresh = if moving { " data-refresh=\"2000\"" } else { "" },
    );
    respond(StatusCode::OK, html)
}

/// The hidden CSRF field every form of a signed-in page carries.
pub fn csrf_field(signed: &Signed) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&signed.csrf)
    )
}

/// A bare page (sign-in, refusals) with `status`.
pub fn bare(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Switchyard</title>\
         <link rel=\"stylesheet\" href=\"/dashboard/assets/dashboard.css\">\
         <script src=\"/dashboard/assets/dashboard.js\" defer></script></head>\
         <body class=\"bare\"><main id=\"main\"><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
    );
    respond(status, html)
}

/// A refusal or failure, as a page.
pub fn problem(status: StatusCode, detail: &str) -> Response {
    let body = format!(
        "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/dashboard\">Back to the overview</a></p>",
        esc(detail)
    );
    bare(status, status.canonical_reason().unwrap_or("Error"), &body)
}

/// `303 See Other` to `to` (after a form).
pub fn redirect(to: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header("location", to)
        .header("cache-control", "no-store")
        .finish()
}

fn respond(status: StatusCode, html: String) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .header("x-frame-options", "DENY")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "same-origin")
        .header(
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        .body(html)
}

/// A table: `head` the column names, `rows` already-escaped cells; `empty` when none.
pub fn table(head: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", esc(empty));
    }
    let mut out = String::from("<div class=\"scroll\"><table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// A time, short, in UTC.
pub fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        t.to_rfc3339(),
        t.format("%Y-%m-%d %H:%M:%S")
    )
}

/// An optional time, or a dash.
pub fn time_opt(t: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.as_ref().map_or_else(|| "—".into(), time)
}

/// A state badge.
pub fn badge(state: &str) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", esc(state))
}
