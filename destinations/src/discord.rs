//! Discord: execute a webhook with `?wait=true`, so the answer is the created message (or the
//! error). A `429` carries `retry_after` (seconds, fractional) in its JSON body; it is honoured
//! like `Retry-After`.

use std::time::Duration;

use serde_json::Value;
use switchyard_shared::webhooks::send::AttemptResult;

use crate::{Attempt, http};

pub(crate) async fn send(at: &Attempt<'_>, webhook_url: &str, body: Value) -> AttemptResult {
    let mut url = match url::Url::parse(webhook_url) {
        Ok(u) => u,
        Err(e) => {
            let mut r = at.failed("config", format!("`webhook_url` is not a URL: {e}"));
            r.permanent = true;
            return r;
        }
    };
    if !url.query_pairs().any(|(k, _)| k == "wait") {
        url.query_pairs_mut().append_pair("wait", "true");
    }
    let mut result = http::exchange(at, http::json_request(url.as_str(), &body)).await;
    if result.status_code == Some(429) {
        let asked = result
            .response_body
            .as_deref()
            .and_then(|b| serde_json::from_str::<Value>(b).ok())
            .and_then(|v| v.get("retry_after").and_then(Value::as_f64))
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0)));
        if let Some(asked) = asked {
            result.retry_after = Some(result.retry_after.map_or(asked, |h| h.max(asked)));
        }
    }
    http::final_client_errors(&mut result);
    result
}
