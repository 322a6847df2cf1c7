//! Slack: a message by incoming webhook (`POST` the JSON to the webhook URL, answered `ok`) or
//! by bot token (`POST /api/chat.postMessage` with `Authorization: Bearer`, answered
//! `{"ok": true|false, "error"}` with status 200 either way). `429` and `Retry-After` are
//! honoured through the engine's throttling rules.

use serde_json::Value;
use switchyard_shared::{
    destinations::config::SlackConfig,
    webhooks::{credentials::REDACTED, send::AttemptResult},
};

use crate::{Attempt, http};

/// `chat.postMessage` errors no retry mends (Slack's documented error codes).
const FINAL_ERRORS: &[&str] = &[
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "msg_too_long",
    "no_text",
    "invalid_blocks",
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "missing_scope",
    "restricted_action",
    "invalid_arguments",
];

pub(crate) async fn send(
    at: &Attempt<'_>,
    api: &str,
    config: &SlackConfig,
    body: Value,
) -> AttemptResult {
    let (url, token) = match (&config.webhook_url, &config.bot_token) {
        (Some(url), _) => (url.clone(), None),
        (None, Some(token)) => (format!("{api}/chat.postMessage"), Some(token)),
        (None, None) => {
            let mut r = at.failed("config", "neither `webhook_url` nor `bot_token` is set");
            r.permanent = true;
            return r;
        }
    };
    let mut request = http::json_request(&url, &body);
    if let Some(token) = token {
        request
            .headers
            .push(("authorization".into(), format!("Bearer {token}")));
        request
            .logged
            .push(("authorization".into(), REDACTED.into()));
    }
    let mut result = http::exchange(at, request).await;
    if token.is_none() {
        http::final_client_errors(&mut result);
        return result;
    }
    // The Web API answers 200 with `ok: false` on failure.
    if result.succeeded() {
        let answer: Option<Value> = result
            .response_body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok());
        let ok = answer
            .as_ref()
            .and_then(|a| a.get("ok"))
            .and_then(Value::as_bool);
        if ok != Some(true) {
            let error = answer
                .as_ref()
                .and_then(|a| a.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no `ok: true` in the answer")
                .to_owned();
            result.permanent = FINAL_ERRORS.contains(&error.as_str());
            result.error_class = Some("api_error");
            result.error_message = Some(format!("Slack answered: {error}"));
        }
    } else {
        http::final_client_errors(&mut result);
    }
    result
}
