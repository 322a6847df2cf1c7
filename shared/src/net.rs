//! Outbound HTTP that cannot be turned against our own network (SSRF).
//!
//! Hosts are resolved by us ([`GuardedResolver`]) and refused if *any* address is not globally
//! routable; the connection then goes to the vetted addresses only (no second lookup, so no DNS
//! rebinding). IP literals are checked by [`check_url`] before every request, since they bypass
//! resolvers. Redirects are never followed. `SWITCHYARD_ALLOW_PRIVATE_TARGETS` opens all of it.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// Why an outbound target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockedTarget {
    #[error("only http and https URLs are allowed")]
    Scheme,
    #[error("URLs must not contain credentials")]
    Credentials,
    #[error("the URL has no host")]
    NoHost,
    #[error("{0} is not a public address")]
    NonPublic(IpAddr),
}

/// True for addresses reachable on the public internet; false for loopback, private,
/// link-local, CGNAT, ULA, multicast, documentation, benchmarking, reserved and unspecified
/// ranges, and for IPv6 forms that embed such an IPv4 address (mapped, compatible, 6to4, NAT64).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                    // "this network"
        || a == 10                              // private
        || a == 127                             // loopback
        || (a == 100 && (64..128).contains(&b)) // CGNAT (also Alibaba metadata 100.100.100.200)
        || (a == 169 && b == 254)               // link-local (cloud metadata 169.254.169.254)
        || (a == 172 && (16..32).contains(&b))  // private
        || (a == 192 && b == 0 && c == 0)       // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)       // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)     // 6to4 relay anycast
        || (a == 192 && b == 168)               // private
        || (a == 198 && (b == 18 || b == 19))   // benchmarking
        || (a == 198 && b == 51 && c == 100)    // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)     // TEST-NET-3
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // NAT64 64:ff9b::/96 and local-use 64:ff9b:1::/48 embed an IPv4 address in the low bits.
    if seg[0] == 0x64 && seg[1] == 0xff9b {
        if seg[2..6] == [0, 0, 0, 0] {
            let [.., a, b] = seg;
            return is_public_v4(Ipv4Addr::new(
                (a >> 8) as u8,
                a as u8,
                (b >> 8) as u8,
                b as u8,
            ));
        }
        return false;
    }
    // The rest of ::/8 (reserved by IANA; NAT64 above lies in it too): ::, ::1, IPv4-compatible
    // ::a.b.c.d, SIIT ::ffff:0:a.b.c.d (::ffff:0:0/96), and everything else there.
    if seg[0] & 0xff00 == 0 {
        return false;
    }
    // 6to4 2002::/16 embeds an IPv4 address in bits 16..48.
    if seg[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ));
    }
    !((seg[0] & 0xfe00) == 0xfc00                  // ULA fc00::/7 (AWS metadata fd00:ec2::254)
        || (seg[0] & 0xffc0) == 0xfe80             // link-local
        || (seg[0] & 0xffc0) == 0xfec0             // site-local (deprecated)
        || (seg[0] & 0xff00) == 0xff00             // multicast
        || (seg[0] == 0x2001 && seg[1] == 0x0db8)  // documentation
        || (seg[0] == 0x2001 && seg[1] < 0x0200)   // IETF protocol assignments 2001::/23
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // discard-only 100::/64
        || seg[0] == 0x3fff && seg[1] < 0x1000) // documentation 3fff::/20
}

/// Where outbound requests may go: public addresses, plus everything when private targets
/// are allowed, plus the networks of the allowlist.
#[derive(Clone, Debug, Default)]
pub struct Egress {
    allow_private: bool,
    allowlist: Arc<[Cidr]>,
}

impl Egress {
    pub fn new(allow_private: bool, allowlist: Vec<Cidr>) -> Self {
        Egress {
            allow_private,
            allowlist: allowlist.into(),
        }
    }

    /// Private targets allowed everywhere (tests, on-prem).
    pub fn open() -> Self {
        Egress::new(true, Vec::new())
    }

    /// Everything is allowed: nothing to check.
    pub fn is_open(&self) -> bool {
        self.allow_private
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip) || self.allowlist.iter().any(|c| c.contains(ip))
    }

    /// Resolves `host` and refuses it if any address is not permitted. The addresses are
    /// returned so the caller can connect to exactly those.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| ResolveError::Lookup {
                host: host.to_owned(),
                source,
            })?
            .collect();
        if let Some(bad) = addrs.iter().find(|a| !self.permits(a.ip())) {
            return Err(ResolveError::Blocked {
                host: host.to_owned(),
                ip: bad.ip(),
            });
        }
        Ok(addrs)
    }
}

/// Checks scheme, credentials and (for IP literals) the address of an outbound URL.
/// `url` parsing already normalises decimal, octal and hex IPv4 forms (`http://2130706433/`).
pub fn check_url(url: &Url, egress: &Egress) -> Result<(), BlockedTarget> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BlockedTarget::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BlockedTarget::Credentials);
    }
    let ip = match url.host() {
        None => return Err(BlockedTarget::NoHost),
        Some(url::Host::Domain(_)) => return Ok(()),
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
    };
    if egress.permits(ip) {
        Ok(())
    } else {
        Err(BlockedTarget::NonPublic(ip))
    }
}

/// How long vetting a URL waits for DNS.
const DNS_BUDGET: Duration = Duration::from_secs(2);

/// Parses and vets an outbound URL given as `param`: scheme, credentials, length, IP literals
/// in every notation, and what the host name resolves to now (any non-permitted address
/// refuses it; every request checks again). A name that does not resolve yet is accepted.
/// Done before the caller's transaction begins: it may wait on DNS.
pub async fn vet_url(raw: &str, egress: &Egress, param: &str) -> crate::error::Result<Url> {
    use crate::error::Error;
    let invalid = |detail: String| Error::invalid("parameter_invalid", param, detail);
    let not_allowed = |detail: String| Error::invalid("url_not_allowed", param, detail);
    if raw.len() > 2048 {
        return Err(invalid(format!(
            "`{param}` must be at most 2048 characters."
        )));
    }
    let url = Url::parse(raw.trim())
        .map_err(|e| invalid(format!("`{param}` is not a valid URL: {e}.")))?;
    check_url(&url, egress).map_err(|e| match e {
        BlockedTarget::NonPublic(_) => not_allowed(format!("`{param}` is not allowed: {e}.")),
        _ => invalid(format!("`{param}` is not allowed: {e}.")),
    })?;
    if let Some(url::Host::Domain(host)) = url.host().filter(|_| !egress.is_open()) {
        let port = url.port_or_known_default().unwrap_or(443);
        vet_host(host, port, egress, param).await?;
    }
    Ok(url)
}

/// Refuses `host` (`url_not_allowed`, on `param`) if an address it resolves to now is not
/// permitted. A name that does not resolve yet is accepted, and so is one whose resolver does
/// not answer within the budget (it must not hold the request): every connection checks again.
pub async fn vet_host(
    host: &str,
    port: u16,
    egress: &Egress,
    param: &str,
) -> crate::error::Result<()> {
    let lookup = tokio::time::timeout(DNS_BUDGET, egress.resolve(host, port)).await;
    if let Ok(Err(e @ ResolveError::Blocked { .. })) = lookup {
        return Err(crate::error::Error::invalid(
            "url_not_allowed",
            param,
            format!("`{param}` is not allowed: {e}."),
        ));
    }
    Ok(())
}

/// Resolver that refuses a host if any of its addresses is not permitted.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    pub egress: Egress,
}

/// DNS failures and blocked answers, told apart so attempts can be classified.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("dns lookup of {host} failed: {source}")]
    Lookup {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to a non-public address ({ip})")]
    Blocked { host: String, ip: IpAddr },
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.egress.clone();
        Box::pin(async move {
            let addrs = egress
                .resolve(name.as_str(), 0)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

tokio::task_local! {
    /// Set by [`timed`] around one request: how long opening its connection took (µs + 1;
    /// 0 = no new connection, it reused a pooled one).
    static CONNECT_MICROS: Arc<AtomicU64>;
}

/// Runs one request and reports how long opening a new connection took, if it opened one.
pub async fn timed<F: Future>(f: F) -> (F::Output, Option<Duration>) {
    let cell = Arc::new(AtomicU64::new(0));
    let out = CONNECT_MICROS.scope(cell.clone(), f).await;
    let micros = cell.load(Ordering::Relaxed);
    (out, micros.checked_sub(1).map(Duration::from_micros))
}

/// Connector layer that measures connection set-up (TCP + TLS) for [`timed`]. The connect
/// future runs inside the request's task, so the task-local is in scope; a connection raced
/// and finished in the background just goes unmeasured.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectTiming;

impl<S> tower_layer::Layer<S> for ConnectTiming {
    type Service = ConnectTimed<S>;
    fn layer(&self, inner: S) -> ConnectTimed<S> {
        ConnectTimed(inner)
    }
}

#[derive(Clone, Debug)]
pub struct ConnectTimed<S>(S);

impl<S, R> tower_service::Service<R> for ConnectTimed<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let started = std::time::Instant::now();
            let out = fut.await;
            let micros = started.elapsed().as_micros() as u64 + 1;
            let _ = CONNECT_MICROS.try_with(|c| c.store(micros, Ordering::Relaxed));
            out
        })
    }
}

/// Names our requests set themselves, or that would break HTTP framing.
pub fn reserved_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-type"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
            | "user-agent"
            | "authorization"
    ) || name.starts_with("webhook-")
        || name.starts_with("proxy-")
}

/// The `user-agent` of outbound requests.
pub const USER_AGENT: &str = concat!("Switchyard-Webhooks/", env!("CARGO_PKG_VERSION"));

/// The HTTP client for partner endpoints: guarded DNS, no redirects, no proxies from the
/// environment, explicit timeouts.
pub fn outbound_client(
    egress: Egress,
    connect_timeout: Duration,
    timeout: Duration,
) -> reqwest::Client {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { egress }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .connector_layer(ConnectTiming)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(32)
        .user_agent(USER_AGENT)
        .build()
        .expect("static client configuration is valid")
}

/// An IPv4 or IPv6 network (`203.0.113.0/24`, `2001:db8::/32`, or a single address), used by
/// API key allowlists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        Some(Cidr {
            net: mask(addr, prefix),
            prefix,
        })
    }

    /// True when every address of `other` is inside this block.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.net.is_ipv4() == self.net.is_ipv4()
            && self.prefix <= other.prefix
            && mask(other.net, self.prefix) == self.net
    }

    /// True when `ip` is inside; IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`) match IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "::ffff:0:7f00:1", // SIIT
            "::ffff:0:a9fe:a9fe",
            "::1:0:0:1", // the rest of ::/8
            "80::1",
        ] {
            assert!(!is_public(s.parse().unwrap()), "{s} must be blocked");
        }
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(s.parse().unwrap()), "{s} must be allowed");
        }
    }

    #[test]
    fn ip_literals_in_every_notation_are_checked() {
        for u in [
            "http://127.0.0.1/",
            "http://2130706433/", // decimal
            "http://0x7f000001/", // hex
            "http://0177.0.0.1/", // octal
            "http://127.1/",      // short form
            "http://[::1]/",
            "http://[::ffff:7f00:1]/",
            "http://[fd00:ec2::254]/",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert!(
                matches!(
                    check_url(&url(u), &Egress::default()),
                    Err(BlockedTarget::NonPublic(_))
                ),
                "{u} must be blocked"
            );
            assert_eq!(
                check_url(&url(u), &Egress::open()),
                Ok(()),
                "{u} allowed when opened"
            );
        }
    }

    #[test]
    fn schemes_and_credentials_are_checked() {
        assert_eq!(
            check_url(&url("ftp://example.com/"), &Egress::open()),
            Err(BlockedTarget::Scheme)
        );
        assert_eq!(
            check_url(&url("https://user:pw@example.com/"), &Egress::open()),
            Err(BlockedTarget::Credentials)
        );
        assert_eq!(
            check_url(&url("https://example.com/hook"), &Egress::default()),
            Ok(())
        );
        // An allowlist opens exactly its networks.
        let some = Egress::new(false, vec![Cidr::parse("10.20.0.0/16").unwrap()]);
        assert_eq!(check_url(&url("http://10.20.1.2/"), &some), Ok(()));
        assert!(check_url(&url("http://10.21.1.2/"), &some).is_err());
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let r = GuardedResolver {
            egress: Egress::default(),
        };
        let err = r
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost must be refused");
        assert!(err.to_string().contains("non-public"), "{err}");
        let open = GuardedResolver {
            egress: Egress::open(),
        };
        assert!(open.resolve("localhost".parse().unwrap()).await.is_ok());
    }

    #[test]
    fn cidr_blocks_match_their_members_in_both_families() {
        let v4 = Cidr::parse("203.0.113.7/24").unwrap();
        assert_eq!(v4.to_string(), "203.0.113.0/24");
        assert!(v4.contains("203.0.113.200".parse().unwrap()));
        assert!(v4.contains("::ffff:203.0.113.9".parse().unwrap()));
        assert!(!v4.contains("203.0.114.1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("203.0.113.1".parse().unwrap()));
        let one = Cidr::parse("198.51.100.4").unwrap();
        assert!(one.contains("198.51.100.4".parse().unwrap()));
        assert!(!one.contains("198.51.100.5".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
