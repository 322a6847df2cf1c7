//! The destination boundary: what the delivery engine calls to make one attempt. The engine
//! (load the target, the breaker, ordering, [`super::delivery::decide`], [`super::record`])
//! knows nothing of the wire; a transport knows nothing of retries or the ledger. Signed HTTP
//! webhooks are the first transport; another destination is one more implementation chosen by
//! the endpoint, with the engine untouched (docs/architecture.md §4).

use std::time::Duration;

use futures::future::BoxFuture;

use super::{credentials::Credentials, delivery::Target, send, send::AttemptResult};
use crate::net::{self, Egress};

/// Makes one attempt of a message to an endpoint. Never fails: every failure (refused address,
/// timeout, an error answer) is a classified [`AttemptResult`] for the engine to log and decide on.
pub trait Transport: Send + Sync {
    fn send<'a>(
        &'a self,
        target: &'a Target,
        credentials: &'a Credentials,
        timeout: Duration,
    ) -> BoxFuture<'a, AttemptResult>;
}

/// Standard Webhooks over HTTP: a signed POST through the SSRF-guarded client.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    egress: Egress,
}

impl HttpTransport {
    /// `max_timeout` bounds every request; each attempt sets its endpoint's own, shorter one.
    pub fn new(egress: Egress, connect_timeout: Duration, max_timeout: Duration) -> Self {
        HttpTransport {
            client: net::outbound_client(egress.clone(), connect_timeout, max_timeout),
            egress,
        }
    }

    /// The egress rules this transport enforces (endpoint URLs are checked against them when
    /// saved, too).
    pub fn egress(&self) -> &Egress {
        &self.egress
    }
}

impl Transport for HttpTransport {
    fn send<'a>(
        &'a self,
        target: &'a Target,
        credentials: &'a Credentials,
        timeout: Duration,
    ) -> BoxFuture<'a, AttemptResult> {
        Box::pin(send::send(
            &self.client,
            target,
            credentials,
            &self.egress,
            timeout,
        ))
    }
}
