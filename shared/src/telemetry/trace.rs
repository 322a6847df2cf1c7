//! W3C Trace Context (`traceparent`) carried from a partner's request through the events it
//! causes to the webhooks they become, so a receiver (or a tracing backend) can tie a
//! webhook back to the request that caused it.
//!
//! The API accepts a `traceparent` on every request (or starts a trace) and runs the handler
//! inside [`scope`]; an event written there keeps the request's context (`events.traceparent`),
//! its message copies it, and every attempt sends a child of it (same trace id, a new span id).
//! A message with no stored context (events written by background work) is sent under a
//! trace id derived from its message id, stable across retries.

use std::{fmt, future::Future};

use uuid::Uuid;

/// One `traceparent`: version 00, a trace id, a parent (span) id and the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

tokio::task_local! {
    static CURRENT: TraceParent;
}

fn random_span() -> [u8; 8] {
    let r = Uuid::new_v4();
    let mut s = [0u8; 8];
    s.copy_from_slice(&r.as_bytes()[..8]);
    s
}

/// `bytes` as lower-case hex (how `traceparent` and OTLP write ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_to<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl TraceParent {
    /// Parses a `traceparent` header; `None` unless it is valid (lower-case hex, non-zero ids,
    /// a version other than `ff`; fields past the flags of a future version are ignored).
    pub fn parse(s: &str) -> Option<TraceParent> {
        let mut parts = s.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || hex_to::<1>(version).is_none() {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = hex_to::<16>(trace).filter(|t| t.iter().any(|b| *b != 0))?;
        let span_id = hex_to::<8>(span).filter(|s| s.iter().any(|b| *b != 0))?;
        let flags = hex_to::<1>(flags)?[0];
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace (not sampled: Switchyard records no spans of its own unless exported).
    pub fn root() -> TraceParent {
        TraceParent {
            trace_id: *Uuid::new_v4().as_bytes(),
            span_id: random_span(),
            flags: 0,
        }
    }

    /// The same trace under a new span id: what a hop passes on.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            span_id: random_span(),
            ..*self
        }
    }

    /// The trace of a message sent without a stored context: its id, so every attempt and
    /// retry of the message shares one trace.
    pub fn of_message(message_id: Uuid) -> TraceParent {
        TraceParent {
            trace_id: *message_id.as_bytes(),
            span_id: random_span(),
            flags: 0,
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (trace, span) = (hex(&self.trace_id), hex(&self.span_id));
        write!(f, "00-{trace}-{span}-{:02x}", self.flags)
    }
}

/// The context of the request or job running on this task, if any.
pub fn current() -> Option<TraceParent> {
    CURRENT.try_with(|t| *t).ok()
}

/// Runs `f` with `context` as the current one.
pub async fn scope<F: Future>(context: TraceParent, f: F) -> F::Output {
    CURRENT.scope(context, f).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_headers_round_trip_and_invalid_ones_are_refused() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(s).unwrap();
        assert_eq!(t.to_string(), s);
        assert_eq!(t.flags, 1);
        let child = t.child();
        assert_eq!(child.trace_id, t.trace_id);
        assert_ne!(child.span_id, t.span_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may add fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx")
                .is_some()
        );
        let root = TraceParent::root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
    }

    #[tokio::test]
    async fn the_current_context_is_the_scopes() {
        assert_eq!(current(), None);
        let t = TraceParent::root();
        assert_eq!(scope(t, async { current() }).await, Some(t));
    }
}
