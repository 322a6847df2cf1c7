//! Where a broker connection goes: the URL's host resolved once, every address checked against
//! the egress rules, and the connection made to the checked address only. The client libraries
//! never look the name up again, so a DNS answer that changes after the check (rebinding)
//! cannot steer a connection to an address the rules refuse. Under TLS the certificate must
//! still carry the URL's host name: RabbitMQ's stream sends it as SNI and verifies it; NATS
//! verifies it through [`pinned_tls`] (its client would otherwise check the address).
//! Both trust the public roots plus the CAs of `SWITCHYARD_BROKER_CA_FILE`.

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use switchyard_shared::net::{Egress, ResolveError};

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
    /// Resolves `raw`'s host (port `default_port` if none) and checks every address.
    pub async fn resolve(
        raw: &str,
        default_port: u16,
        egress: &Egress,
    ) -> Result<BrokerAddress, (&'static str, String)> {
        let mut url =
            url::Url::parse(raw).map_err(|e| ("config", format!("invalid broker URL: {e}")))?;
        let host = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .ok_or(("config", "the broker URL has no host".to_owned()))?;
        let port = url.port().unwrap_or(default_port);
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
