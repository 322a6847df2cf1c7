//! Message templates: MiniJinja (a Jinja2 subset) in a sandbox — no file or network access, no
//! includes, bounded work (fuel) and bounded output. A template sees one event:
//! `{id, type, timestamp, data, endpoint: {id, description}}`. Undefined values render empty,
//! so a field an event lacks does not fail a delivery. Checked when saved (the line and
//! column of an error), rendered per attempt (README, "Destinations").

use std::{fmt::Write as _, sync::LazyLock};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value;

use crate::error::{Error, Result};

/// Longest template, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;
/// Longest rendered text, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Work one rendering may do (MiniJinja instructions): loops over an event's items fit, a
/// runaway loop stops.
const FUEL: u64 = 200_000;

/// How a rendered template's text is escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// As written (subjects, plain text, chat messages, routing keys).
    None,
    /// Values are HTML-escaped (email HTML bodies).
    Html,
    /// Values are JSON-encoded where they stand (bodies that must be JSON): `{{ data.id }}`
    /// gives `"ord_1"` with its quotes.
    Json,
    /// Values are percent-encoded as one path segment (URL paths): `{{ data.id }}` holding
    /// `../x` gives `..%2Fx`, so event data cannot leave the path the template sets; a value
    /// that is exactly `.` or `..` fails.
    Path,
}

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(32);
    env.set_auto_escape_callback(|name| match name {
        "html" => AutoEscape::Html,
        "json" => AutoEscape::Json,
        "path" => AutoEscape::Custom("path".into()),
        _ => AutoEscape::None,
    });
    env.set_formatter(|out, state, value| {
        if !matches!(state.auto_escape(), AutoEscape::Custom(n) if n == "path") {
            return minijinja::escape_formatter(out, state, value);
        }
        if value.is_undefined() || value.is_none() {
            return Ok(());
        }
        let text = value.to_string();
        if value.is_safe() {
            return Ok(out.write_str(&text)?);
        }
        if text == "." || text == ".." {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "a path segment cannot be `.` or `..`",
            ));
        }
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.write_char(b as char)?;
            } else {
                write!(out, "%{b:02X}")?;
            }
        }
        Ok(())
    });
    env
});

fn name(escape: Escape) -> &'static str {
    match escape {
        Escape::None => "text",
        Escape::Html => "html",
        Escape::Json => "json",
        Escape::Path => "path",
    }
}

/// Checks a template's syntax: a `422 template_invalid` naming `param`, the line and the
/// column of the first error.
pub fn validate(param: &str, source: &str) -> Result<()> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(unprocessable(
            "template_invalid",
            param,
            format!("`{param}` is longer than {MAX_TEMPLATE_BYTES} bytes."),
        ));
    }
    ENV.template_from_named_str("text", source)
        .map(|_| ())
        .map_err(|e| {
            let (line, column) = position(source, &e);
            unprocessable(
                "template_invalid",
                param,
                format!(
                    "`{param}` is not a valid template: {} (line {line}, column {column}).",
                    e.detail()
                        .map_or_else(|| e.kind().to_string(), str::to_owned)
                ),
            )
        })
}

/// A `422`: the request is well-formed, the template in it is not.
pub fn unprocessable(code: &'static str, param: &str, detail: String) -> Error {
    Error::Unprocessable {
        code,
        param: Some(param.to_owned()),
        detail,
    }
}

/// Line and column (1-based) of a template error.
fn position(source: &str, e: &minijinja::Error) -> (usize, usize) {
    let line = e.line().unwrap_or(1);
    let column = e
        .range()
        .map(|r| {
            let start = r.start.min(source.len());
            let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
            source[line_start..start].chars().count() + 1
        })
        .unwrap_or(1);
    (line, column)
}

/// Why a rendering failed: the template is at fault, so every retry would fail the same way.
#[derive(Debug, thiserror::Error)]
#[error("template `{field}` failed: {message}")]
pub struct RenderError {
    pub field: String,
    pub message: String,
}

/// Renders `source` over `context`.
pub fn render(
    field: &str,
    source: &str,
    escape: Escape,
    context: &Value,
) -> Result<String, RenderError> {
    let fail = |message: String| RenderError {
        field: field.to_owned(),
        message,
    };
    let template = ENV
        .template_from_named_str(name(escape), source)
        .map_err(|e| fail(e.to_string()))?;
    let out = template
        .render(minijinja::Value::from(minijinja::value::Serde(context)))
        .map_err(|e| {
            fail(
                e.detail()
                    .map_or_else(|| e.kind().to_string(), str::to_owned),
            )
        })?;
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(fail(format!(
            "the output is longer than {MAX_OUTPUT_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// Renders a template whose output must be JSON, and parses it.
pub fn render_json(field: &str, source: &str, context: &Value) -> Result<Value, RenderError> {
    let text = render(field, source, Escape::Json, context)?;
    serde_json::from_str(&text).map_err(|e| RenderError {
        field: field.to_owned(),
        message: format!("the output is not JSON ({e}): {}", snippet(&text)),
    })
}

fn snippet(text: &str) -> String {
    let s: String = text.chars().take(200).collect();
    if s.len() < text.len() {
        format!("{s}…")
    } else {
        s
    }
}

/// What a template sees of a delivery: the webhook's JSON body (`type`, `timestamp`, `data`),
/// its `id` (the `webhook-id`) and the endpoint.
pub fn context(
    payload: &str,
    webhook_id: &str,
    endpoint_id: uuid::Uuid,
    description: Option<&str>,
) -> Value {
    let mut body: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut body {
        map.insert("id".into(), Value::String(webhook_id.to_owned()));
        map.insert(
            "endpoint".into(),
            serde_json::json!({ "id": endpoint_id, "description": description }),
        );
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({"type": "order.created", "data": {"id": "ord_1", "total": 12.5,
               "note": "<b>\"hi\"</b>", "items": [{"sku": "A"}, {"sku": "B"}]}})
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = validate("config.text", "ok\nHello {{ data.id ").unwrap_err();
        let Error::Unprocessable { param, detail, .. } = e else {
            panic!()
        };
        assert_eq!(param.as_deref(), Some("config.text"));
        assert!(detail.contains("line 2"), "{detail}");
        assert!(validate("x", "{% for i in data.items %}{{ i.sku }}{% endfor %}").is_ok());
        // No other templates exist to include or extend: refused when saved.
        assert!(validate("x", "{% include 'other' %}").is_err());
    }

    #[test]
    fn escaping_follows_the_output() {
        let c = ctx();
        assert_eq!(
            render("t", "{{ data.note }}", Escape::None, &c).unwrap(),
            "<b>\"hi\"</b>"
        );
        assert_eq!(
            render("t", "{{ data.note }}", Escape::Html, &c).unwrap(),
            "&lt;b&gt;&quot;hi&quot;&lt;&#x2f;b&gt;"
        );
        let v = render_json(
            "t",
            r#"{"text": {{ data.note }}, "n": {{ data.total }}, "missing": {{ data.nope or none }}}"#,
            &c,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"text": "<b>\"hi\"</b>", "n": 12.5, "missing": null})
        );
        assert_eq!(
            render(
                "t",
                "{% for i in data.items %}{{ i.sku }},{% endfor %}{{ data.nope }}",
                Escape::None,
                &c
            )
            .unwrap(),
            "A,B,"
        );
    }

    #[test]
    fn path_values_stay_one_segment() {
        let c = json!({"data": {"id": "../../v1/charges?x=1", "dot": "..", "ok": "cus_1"}});
        assert_eq!(
            render("p", "/v1/customers/{{ data.id }}", Escape::Path, &c).unwrap(),
            "/v1/customers/..%2F..%2Fv1%2Fcharges%3Fx%3D1"
        );
        assert_eq!(
            render(
                "p",
                "/v1/customers/{{ data.ok }}/{{ data.missing }}",
                Escape::Path,
                &c
            )
            .unwrap(),
            "/v1/customers/cus_1/"
        );
        assert!(render("p", "/v1/{{ data.dot }}", Escape::Path, &c).is_err());
    }

    #[test]
    fn runaway_templates_stop() {
        let e = render(
            "t",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            Escape::None,
            &ctx(),
        )
        .unwrap_err();
        assert!(e.message.contains("fuel"), "{}", e.message);
    }
}
