//! Where a broker connection goes: the URL's host resolved once, every address checked against
//! the egress rules, and the connection made to the checked address only. The client libraries
//! never look the name up again, so a DNS answer that changes after the check (rebinding)
//! cannot steer a connection to an address the rules refuse. Under TLS the certificate must
//! still carry the URL's host name: RabbitMQ's stream sends it as SNI and verifies it; NATS
//! verifies it through [`pinned_tls`] (its client would otherwise check the address).
//! Both trust the public roots plus the CAs of `SWITCHYARD_BROKER_CA_FILE`.
//!
//! Connections are kept per broker URL ([`Slots`]) and closed once unused for [`IDLE`]: a URL
//! no endpoint uses any more (deleted, or its credentials rotated) does not hold a connection
//! for the life of the process.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use switchyard_shared::{
    destinations::config::broker_default_port,
    net::{Egress, ResolveError},
};

/// How long a broker connection may stay unused before it is closed.
pub(crate) const IDLE: Duration = Duration::from_secs(300);

/// One slot per broker URL: a connection, once opened. Connecting to a slow broker holds up
/// only the attempts to that broker (its slot's lock).
pub(crate) type Slot<T> = Arc<tokio::sync::Mutex<Option<T>>>;

/// Slots by broker URL, each with when it was last taken.
pub(crate) struct Slots<T> {
    map: std::sync::Mutex<HashMap<String, (Slot<T>, Instant)>>,
    idle: Duration,
}

impl<T: Send + 'static> Slots<T> {
    pub(crate) fn new(idle: Duration) -> Slots<T> {
        Slots {
            map: Default::default(),
            idle,
        }
    }

    /// The slot of `url`. Slots unused for longer than the idle time are dropped on the way,
    /// their connections handed to `close` in the background.
    pub(crate) fn get(&self, url: &str, close: fn(T)) -> Slot<T> {
        let now = Instant::now();
        let mut map = self.map.lock().expect("slots lock");
        let mut idle = Vec::new();
        map.retain(|u, (slot, used)| {
            let keep = u == url || now.duration_since(*used) < self.idle;
            if !keep {
                idle.push(slot.clone());
            }
            keep
        });
        if !idle.is_empty() {
            tokio::spawn(async move {
                for slot in idle {
                    if let Some(conn) = slot.lock().await.take() {
                        close(conn);
                    }
                }
            });
        }
        let (slot, used) = map
            .entry(url.to_owned())
            .or_insert_with(|| (Slot::default(), now));
        *used = now;
        slot.clone()
    }
}

/// A broker URL whose host passed the egress rules.
#[derive(Clone, Debug)]
pub struct BrokerAddress {
    /// The URL with its host replaced by [`BrokerAddress::addr`]'s address.
    pub url: url::Url,
    /// The URL's host as written: the name a TLS certificate must carry.
    pub host: String,
    /// The checked address every connection goes to.
    pub addr: SocketAddr,
}

impl BrokerAddress {
    /// Resolves `raw`'s host (its scheme's port if none: `broker_default_port`) and checks
    /// every address.
    pub async fn resolve(
        raw: &str,
        egress: &Egress,
    ) -> Result<BrokerAddress, (&'static str, String)> {
        let mut url =
            url::Url::parse(raw).map_err(|e| ("config", format!("invalid broker URL: {e}")))?;
        let host = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .ok_or(("config", "the broker URL has no host".to_owned()))?;
        let port = url.port().unwrap_or(broker_default_port(url.scheme()));
        let addrs = egress.resolve(&host, port).await.map_err(|e| match e {
            ResolveError::Blocked { .. } => ("blocked_address", e.to_string()),
            ResolveError::Lookup { .. } => ("dns", e.to_string()),
        })?;
        let addr = *addrs
            .first()
            .ok_or(("dns", format!("`{host}` has no address")))?;
        url.set_ip_host(addr.ip())
            .map_err(|_| ("config", "the broker URL cannot take an address".to_owned()))?;
        Ok(BrokerAddress { url, host, addr })
    }
}

/// The system's trust roots, read once per process.
static NATIVE_ROOTS: LazyLock<Vec<CertificateDer<'static>>> =
    LazyLock::new(|| rustls_native_certs::load_native_certs().certs);

/// A TLS client configuration that verifies the server's certificate against `host` (the
/// URL's name), whatever address the connection was given, trusting the system's roots and
/// `extra_roots` (PEM).
pub fn pinned_tls(host: &str, extra_roots: Option<&[u8]>) -> Result<ClientConfig, String> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("`{host}` cannot be checked against a certificate: {e}"))?;
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(NATIVE_ROOTS.iter().cloned());
    for cert in CertificateDer::pem_slice_iter(extra_roots.unwrap_or_default()) {
        let cert = cert.map_err(|e| format!("SWITCHYARD_BROKER_CA_FILE: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("SWITCHYARD_BROKER_CA_FILE: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedName { inner, name }))
        .with_no_client_auth();
    Ok(config)
}

/// The public-key infrastructure's verdict for a fixed name instead of the one the client
/// connected to (an address).
#[derive(Debug)]
struct PinnedName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for PinnedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _connected_to: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    static CLOSED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

    #[tokio::test]
    async fn a_url_without_a_port_goes_to_its_schemes_port() {
        let egress = Egress::open();
        for (url, port) in [
            ("amqps://guest:guest@127.0.0.1/%2f", 5671),
            ("amqp://127.0.0.1", 5672),
            ("nats://127.0.0.1", 4222),
            ("tls://127.0.0.1", 4222),
            ("amqps://127.0.0.1:6000", 6000),
        ] {
            let address = BrokerAddress::resolve(url, &egress).await.unwrap();
            assert_eq!(address.addr.port(), port, "{url}");
        }
    }

    #[tokio::test]
    async fn a_connection_unused_for_the_idle_time_is_closed_at_the_next_use_of_the_pool() {
        let slots = Slots::new(Duration::from_secs(2));
        let close = |c: u32| CLOSED.lock().unwrap().push(c);
        *slots.get("amqp://a", close).lock().await = Some(1);
        *slots.get("amqp://b", close).lock().await = Some(2);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        // Both idle for longer than 2 s: taking `a` keeps it and closes `b`; `c`, just used,
        // stays.
        assert_eq!(slots.get("amqp://a", close).lock().await.as_ref(), Some(&1));
        *slots.get("amqp://c", close).lock().await = Some(3);
        assert_eq!(slots.get("amqp://a", close).lock().await.as_ref(), Some(&1));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*CLOSED.lock().unwrap(), vec![2]);
        assert!(
            slots.get("amqp://b", close).lock().await.is_none(),
            "b opens anew"
        );
        assert_eq!(slots.get("amqp://c", close).lock().await.as_ref(), Some(&3));
    }
}
