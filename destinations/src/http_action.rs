//! Templated API calls to an HTTP integration: its `base_url` plus the rendered path, its
//! credentials as authentication (`bearer_token`, `username` + `password`, `api_key`), the
//! rendered headers and a JSON or form-encoded body, and an `Idempotency-Key` that is the same
//! on every retry of a delivery, so an API that honours it (Stripe does) acts once.

use switchyard_shared::{
    destinations::render::ActionBody,
    integrations::connection,
    net,
    webhooks::{credentials::REDACTED, send::AttemptResult},
};

use crate::{Attempt, http, integrations::Integration};

/// A rendered action.
pub(crate) struct Action {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub idempotency_key: String,
    pub body: ActionBody,
}

/// Whether `url` (the base joined with a rendered path, `..` resolved) stays at the base's
/// origin and under its path, a whole segment at a time: `/api` holds `/api/orders`, not
/// `/api-admin`.
fn within(base: &str, url: &str) -> bool {
    match (url::Url::parse(base), url::Url::parse(url)) {
        (Ok(b), Ok(u)) => {
            let root = b.path().trim_end_matches('/');
            b.origin() == u.origin()
                && u.path()
                    .strip_prefix(root)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
        _ => false,
    }
}

pub(crate) async fn send(at: &Attempt<'_>, integration: &Integration, a: Action) -> AttemptResult {
    let Some(base) = integration.base_url.as_deref() else {
        return at.failed(
            "integration",
            format!("integration {} has no `base_url`", integration.id),
        );
    };
    let url = format!("{}{}", base.trim_end_matches('/'), a.path);
    if !within(base, &url) {
        let mut r = at.failed(
            "config",
            format!("the action's URL leaves the integration's base URL ({base})"),
        );
        r.permanent = true;
        return r;
    }
    let (content_type, body) = match a.body {
        ActionBody::None => (None, Vec::new()),
        ActionBody::Json(v) => (
            Some("application/json; charset=utf-8"),
            serde_json::to_vec(&v).unwrap_or_default(),
        ),
        ActionBody::Form(fields) => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &fields {
                form.append_pair(k, v);
            }
            (
                Some("application/x-www-form-urlencoded"),
                form.finish().into_bytes(),
            )
        }
    };
    let mut headers = vec![
        ("user-agent".to_owned(), net::USER_AGENT.to_owned()),
        ("idempotency-key".to_owned(), a.idempotency_key),
    ];
    if let Some(ct) = content_type {
        headers.push(("content-type".to_owned(), ct.to_owned()));
    }
    headers.extend(a.headers);
    let mut logged = headers.clone();
    for (name, value) in connection::auth_headers(
        &integration.credentials,
        integration.api_key_header.as_deref(),
    ) {
        logged.push((name.clone(), REDACTED.to_owned()));
        headers.push((name, value));
    }
    let method = reqwest::Method::from_bytes(a.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let request = http::Request {
        method,
        url,
        headers,
        logged,
        body,
    };
    let mut result = http::exchange(at, request).await;
    http::final_client_errors(&mut result);
    // What the integration's server sends back may echo its credentials.
    let redact = |text: &mut String| *text = connection::redact(text, &integration.credentials);
    let texts = result
        .response_body
        .iter_mut()
        .chain(result.error_message.iter_mut());
    texts
        .chain(result.response_headers.iter_mut().map(|(_, v)| v))
        .for_each(redact);
    result
}

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn an_action_stays_under_its_base_path_a_segment_at_a_time() {
        let base = "https://erp.example/api";
        assert!(within(base, "https://erp.example/api"));
        assert!(within(base, "https://erp.example/api/orders/1"));
        assert!(within(
            "https://erp.example/",
            "https://erp.example/anything"
        ));
        assert!(!within(base, "https://erp.example/api-admin/users"));
        assert!(!within(base, "https://erp.example/api/../admin"));
        assert!(!within(base, "https://other.example/api/orders"));
        assert!(!within(base, "http://erp.example/api/orders"));
    }
}
