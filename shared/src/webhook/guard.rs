//! The SSRF guard. A scheduler calls URLs on a stranger's behalf; without this it would call
//! the cloud metadata service, the admin port on localhost or the database next door for
//! anyone who asks.
//!
//! A target is allowed when every address it resolves to is public, or inside a CIDR the
//! operator allowed (`SCHEDULER_ALLOWED_TARGETS`). The check runs at creation (a refused URL is
//! a 400) and again at delivery, where the HTTP client connects only to addresses this guard
//! returned from its own resolver: there is no second lookup an attacker's DNS could answer
//! differently (DNS rebinding). IP literals never reach a resolver, so they are checked from the
//! URL itself, after the URL parser has normalised odd spellings (`0x7f.1`, `2130706433`,
//! `[::ffff:127.0.0.1]`) exactly as the HTTP client sees them.
//!
//! At delivery, a refusal is final, but a name that does not resolve (timeout, SERVFAIL,
//! NXDOMAIN, an empty answer) is not a refusal: it passes, so the attempt is retried
//! ([`ResolveError`]).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use ipnet::IpNet;
use url::{Host, Url};

use crate::ports::{TargetPolicy, TargetRefused};

/// Why the guard refused a target, or could not check it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "{name} resolves to {ip}, which is not a public address (loopback, private, link-local, metadata and other special ranges are refused unless SCHEDULER_ALLOWED_TARGETS allows them)"
    )]
    ResolvesTo { name: String, ip: IpAddr },
    #[error(
        "{0} is not a public address (loopback, private, link-local, metadata and other special ranges are refused unless SCHEDULER_ALLOWED_TARGETS allows them)"
    )]
    NotPublic(IpAddr),
    #[error("the URL names no host")]
    NoHost,
}

/// An entry of an allowed-targets list that is neither a CIDR nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a CIDR such as 10.0.0.0/8")]
pub(crate) struct NotACidr(pub String);

/// Special-purpose IPv4 blocks (IANA registry) that are never "public".
const V4_SPECIAL: [&str; 15] = [
    "0.0.0.0/8",       // "this network", unspecified
    "10.0.0.0/8",      // private
    "100.64.0.0/10",   // carrier-grade NAT
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local, incl. 169.254.169.254 (instance metadata)
    "172.16.0.0/12",   // private
    "192.0.0.0/24",    // IETF protocol assignments
    "192.0.2.0/24",    // documentation (TEST-NET-1)
    "192.88.99.0/24",  // 6to4 relay anycast
    "192.168.0.0/16",  // private
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // documentation (TEST-NET-2)
    "203.0.113.0/24",  // documentation (TEST-NET-3)
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, incl. 255.255.255.255 broadcast
];

/// Special-purpose IPv6 blocks. Forms that embed an IPv4 address (mapped, translated,
/// NAT64, 6to4) are unwrapped first and judged by the IPv4 address.
const V6_SPECIAL: [&str; 12] = [
    "::/128",         // unspecified
    "::1/128",        // loopback
    "::/96",          // IPv4-compatible (deprecated)
    "64:ff9b:1::/48", // local-use NAT64
    "100::/64",       // discard-only
    "2001::/23",      // IETF protocol assignments, incl. Teredo 2001::/32
    "2001:db8::/32",  // documentation
    "3fff::/20",      // documentation
    "fc00::/7",       // unique-local, incl. fd00:ec2::254 (instance metadata over IPv6)
    "fe80::/10",      // link-local
    "fec0::/10",      // site-local (deprecated)
    "ff00::/8",       // multicast
];

/// What the local host allows besides public addresses by default: this machine and the
/// private networks around it (it is your own machine). Not link-local: that is where cloud
/// metadata lives.
pub(crate) const LOCAL_DEFAULT_ALLOWED: &str =
    "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16";

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter()
        .map(|s| s.parse().expect("valid CIDR"))
        .collect()
}

/// Unwraps IPv6 forms that carry an IPv4 address: IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-translated `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:AABB:CCDD::`.
pub(crate) fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

/// Names that mean this machine whatever DNS says (RFC 6761 §6.3), with or without the
/// trailing dot of a fully qualified name.
fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The address judged: an IPv6 address embedding an IPv4 one is judged as that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Looks a host name up: the system resolver ([`SystemLookup`]), or a fake in tests.
#[async_trait]
pub(crate) trait Lookup: std::fmt::Debug + Send + Sync + 'static {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemLookup;

#[async_trait]
impl Lookup for SystemLookup {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// Allows public addresses and the operator's allowed CIDRs.
#[derive(Debug, Clone)]
pub(crate) struct TargetGuard {
    special: Arc<Vec<IpNet>>,
    allowed: Arc<Vec<IpNet>>,
    resolve_timeout: Duration,
    lookup: Arc<dyn Lookup>,
}

impl TargetGuard {
    /// Public addresses only (the AWS host's default; `SCHEDULER_ALLOWED_TARGETS=""`).
    #[cfg(test)]
    pub(crate) fn public_only() -> Self {
        Self::allowing(Vec::new())
    }

    pub(crate) fn allowing(allowed: Vec<IpNet>) -> Self {
        let mut special = nets(&V4_SPECIAL);
        special.extend(nets(&V6_SPECIAL));
        Self {
            special: Arc::new(special),
            allowed: Arc::new(allowed),
            resolve_timeout: Duration::from_secs(3),
            lookup: Arc::new(SystemLookup),
        }
    }

    /// The same guard, resolving names with `lookup` (tests put a fake resolver here).
    #[cfg(test)]
    pub(crate) fn with_lookup(mut self, lookup: Arc<dyn Lookup>) -> Self {
        self.lookup = lookup;
        self
    }

    /// Parses `SCHEDULER_ALLOWED_TARGETS`-style text: comma-separated CIDRs (or addresses).
    pub(crate) fn parse_allowed(s: &str) -> Result<Self, NotACidr> {
        let mut allowed = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| NotACidr(item.to_owned()))?;
            allowed.push(net);
        }
        Ok(Self::allowing(allowed))
    }

    pub(crate) fn is_public(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        !self.special.iter().any(|n| n.contains(&ip))
    }

    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        let judged = canonical(ip);
        self.is_public(judged)
            || self
                .allowed
                .iter()
                .any(|n| n.contains(&judged) || n.contains(&ip))
    }

    fn refusal(&self, name: &str, ip: IpAddr) -> Refusal {
        Refusal::ResolvesTo {
            name: name.to_owned(),
            ip,
        }
    }

    /// Resolves `host:port` and keeps only allowed addresses; an error if none is left.
    pub(crate) async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        if is_localhost_name(host) && !self.allows(IpAddr::V4(Ipv4Addr::LOCALHOST)) {
            return Err(ResolveError::Refused(
                self.refusal(host, IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ));
        }
        let found: Vec<SocketAddr> =
            tokio::time::timeout(self.resolve_timeout, self.lookup.lookup(host, port))
                .await
                .map_err(|_| {
                    ResolveError::Unresolved(format!(
                        "{host}: name resolution timed out after {} s",
                        self.resolve_timeout.as_secs()
                    ))
                })?
                .map_err(|e| ResolveError::Unresolved(format!("{host}: cannot resolve ({e})")))?;
        let allowed: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| self.allows(a.ip()))
            .collect();
        match (allowed.is_empty(), found.first()) {
            (true, Some(first)) => Err(ResolveError::Refused(self.refusal(host, first.ip()))),
            (true, None) => Err(ResolveError::Unresolved(format!(
                "{host}: cannot resolve (no address in the answer)"
            ))),
            (false, _) => Ok(allowed),
        }
    }

    /// The creation-time check. A name that does not resolve now is accepted (it is checked
    /// again at delivery); a name that resolves to any refused address is not.
    pub(crate) async fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        let port = url.port_or_known_default().unwrap_or(443);
        match url.host() {
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(Host::Domain(name)) if is_localhost_name(name) => self
                .check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .map_err(|_| self.refusal(name, IpAddr::V4(Ipv4Addr::LOCALHOST))),
            Some(Host::Domain(name)) => {
                let Ok(Ok(found)) =
                    tokio::time::timeout(self.resolve_timeout, self.lookup.lookup(name, port))
                        .await
                else {
                    return Ok(());
                };
                for addr in found {
                    if !self.allows(addr.ip()) {
                        return Err(self.refusal(name, addr.ip()));
                    }
                }
                Ok(())
            }
            None => Err(Refusal::NoHost),
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.allows(ip) {
            Ok(())
        } else {
            Err(Refusal::NotPublic(ip))
        }
    }
}

#[async_trait]
impl TargetPolicy for TargetGuard {
    async fn check(&self, url: &Url) -> Result<(), TargetRefused> {
        self.check_url(url)
            .await
            .map_err(|refusal| TargetRefused(Box::new(refusal)))
    }
}

/// Why [`TargetGuard::resolve`] gave no address.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// Policy: the name is this machine, or resolves only to addresses the guard refuses.
    /// Asking again will not change that, so the attempt fails for good.
    #[error(transparent)]
    Refused(Refusal),
    /// The name did not resolve: a timeout, SERVFAIL, NXDOMAIN or an empty answer. These
    /// pass (a resolver outage, a record not yet propagated), so the attempt is retried.
    #[error("{0}")]
    Unresolved(String),
}

/// The error the guarded resolver fails a connection with when the guard refuses the
/// target; the webhook client recognises it and fails the attempt for good instead of
/// retrying.
#[derive(Debug, thiserror::Error)]
#[error("target refused: {0}")]
pub(crate) struct Refused(pub Refusal);

/// The error the guarded resolver fails a connection with when the name did not resolve:
/// an ordinary connection error, retried. Deliberately not an `io::Error` of kind
/// `TimedOut`, which reqwest would report as the whole call timing out.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unresolved(pub(crate) String);

/// reqwest's resolver, filtered by the guard: the client connects only to addresses the
/// guard returned.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver(pub TargetGuard);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let addrs = guard.resolve(name.as_str(), 0).await.map_err(|e| match e {
                ResolveError::Refused(why) => {
                    Box::new(Refused(why)) as Box<dyn std::error::Error + Send + Sync>
                }
                ResolveError::Unresolved(why) => Box::new(Unresolved(why)),
            })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::WebhookUrl;

    /// Hostile targets, written the ways an attacker would, as the URL parser normalises them.
    const HOSTILE: [&str; 27] = [
        "http://127.0.0.1/",
        "http://127.1/",
        "http://0x7f.1/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://017700000001/",
        "http://0/",
        "http://0.0.0.0:8080/",
        "http://[::1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:0:127.0.0.1]/",
        "http://[64:ff9b::127.0.0.1]/",
        "http://[2002:7f00:1::]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://192.0.2.10/",
        "http://[fe80::1]/",
        "http://[ff02::1]/",
    ];

    #[tokio::test]
    async fn public_only_refuses_every_hostile_spelling() {
        let guard = TargetGuard::public_only();
        for raw in HOSTILE {
            let url = WebhookUrl::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            let err = guard.check_url(url.as_url()).await.expect_err(raw);
            assert!(
                err.to_string().contains("not a public address"),
                "{raw}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_with_trailing_dots_too() {
        let guard = TargetGuard::public_only();
        for raw in [
            "http://localhost/",
            "http://localhost./",
            "http://LOCALHOST:3000/x",
            "http://api.localhost/",
            "http://localhost.:80/",
        ] {
            let url = WebhookUrl::parse(raw).unwrap();
            assert!(guard.check_url(url.as_url()).await.is_err(), "{raw}");
        }
        assert!(guard.resolve("localhost", 80).await.is_err());
    }

    #[tokio::test]
    async fn public_addresses_pass() {
        let guard = TargetGuard::public_only();
        for raw in [
            "https://93.184.215.14/",
            "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
            "http://8.8.8.8:8080/x",
            "http://[::ffff:8.8.8.8]/",
        ] {
            let url = WebhookUrl::parse(raw).unwrap();
            assert!(guard.check_url(url.as_url()).await.is_ok(), "{raw}");
        }
    }

    #[tokio::test]
    async fn allowed_cidrs_open_exactly_their_ranges() {
        let local = TargetGuard::parse_allowed(LOCAL_DEFAULT_ALLOWED).unwrap();
        for ok in [
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://10.1.2.3/",
            "http://192.168.0.10/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost/",
        ] {
            assert!(
                local
                    .check_url(WebhookUrl::parse(ok).unwrap().as_url())
                    .await
                    .is_ok(),
                "{ok}"
            );
        }
        // Link-local metadata stays refused on the local host too.
        for bad in [
            "http://169.254.169.254/",
            "http://[fd00:ec2::254]/",
            "http://100.64.0.1/",
        ] {
            assert!(
                local
                    .check_url(WebhookUrl::parse(bad).unwrap().as_url())
                    .await
                    .is_err(),
                "{bad}"
            );
        }
        assert!(local.resolve("localhost", 80).await.is_ok());
        let narrow = TargetGuard::parse_allowed("10.9.0.0/16").unwrap();
        assert!(narrow.allows("10.9.200.1".parse().unwrap()));
        assert!(!narrow.allows("10.8.0.1".parse().unwrap()));
        assert!(TargetGuard::parse_allowed("10.0.0.0/33").is_err());
        assert!(TargetGuard::parse_allowed("").unwrap().allowed.is_empty());
    }

    #[test]
    fn embedded_ipv4_forms_unwrap() {
        let v4 = |s: &str| embedded_v4(s.parse().unwrap());
        assert_eq!(v4("::ffff:10.0.0.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(v4("64:ff9b::a00:1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            v4("2002:a9fe:a9fe::1"),
            Some(Ipv4Addr::new(169, 254, 169, 254))
        );
        assert_eq!(v4("2606:4700::1111"), None);
    }
}
