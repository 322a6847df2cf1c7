//! What an attempt's result may keep in the attempt log: no secret of the endpoint, and no NUL.
//! A receiver may echo what it was sent (an `Authorization` header quoted back in the body, a
//! credential in a redirect's `Location`), and any text a server returns may hold a NUL
//! character, which Postgres' `text` refuses: the attempt would not be recorded, and the
//! delivery would be sent again and again. Every transport's result passes here before the
//! engine records it.

use super::{
    credentials::{Credentials, REDACTED},
    send::AttemptResult,
};

/// Replaces every secret value (custom and authorization header values of 8 characters or
/// more, with the credential after an auth scheme on its own; a destination's secret
/// settings, and for those that are URLs their path and password on their own) by
/// `[redacted]`, and NUL by U+FFFD.
pub fn for_log(result: &mut AttemptResult, credentials: &Credentials) {
    let mut secrets: Vec<String> = Vec::new();
    // A header value shorter than 8 characters is hardly a credential and likely a common word
    // (`X-Debug: true`): scrubbing it would blank that word from every answer logged.
    for (_, value) in &credentials.headers {
        let credential = value.split_once(' ').map(|(_, c)| c.trim().to_owned());
        for v in std::iter::once(value.clone()).chain(credential) {
            if v.len() >= 8 {
                secrets.push(v);
            }
        }
    }
    for value in credentials.config.values() {
        secrets.push(value.clone());
        if let Ok(url) = url::Url::parse(value) {
            secrets.push(url.path().to_owned());
            secrets.extend(url.password().map(str::to_owned));
        }
    }
    secrets.retain(|s| s.len() >= 4 && s != "/");
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let scrub = |s: &mut String| {
        for secret in &secrets {
            if s.contains(secret.as_str()) {
                *s = s.replace(secret.as_str(), REDACTED);
            }
        }
        if s.contains('\0') {
            *s = s.replace('\0', "\u{FFFD}");
        }
    };
    if let Some(m) = result.error_message.as_mut() {
        scrub(m);
    }
    if let Some(b) = result.response_body.as_mut() {
        scrub(b);
    }
    for (k, v) in result
        .request_headers
        .iter_mut()
        .chain(result.response_headers.iter_mut())
    {
        scrub(k);
        scrub(v);
    }
    if let Some(ip) = result.remote_ip.as_mut() {
        scrub(ip);
    }
}
