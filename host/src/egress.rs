//! Egress safety for tool requests: which URLs and addresses a tool may
//! reach.
//!
//! Deny by default ([`EgressPolicy::default`]):
//! - only `https`; plain `http` only to hosts the operator lists in
//!   `allow_http`;
//! - no loopback, private, link-local, shared (CGNAT), multicast,
//!   unspecified or cloud-metadata address, checked on the addresses DNS
//!   actually returned (by the client's resolver, so the address checked is
//!   the address connected to) and on IP literals; the operator may allow
//!   such addresses per host with `allow_private`;
//! - no URL with user information (`https://api.github.com@evil.example`);
//! - no redirects: the client never follows one (a redirect could leave
//!   the granted resource as well as the granted host), and
//!   [`EgressPolicy::check_redirect`] says why one was refused;
//! - response bodies read through [`crate::outbound::read_bounded`] within a size and the
//!   call's time.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

/// Where a tool may connect. Hosts are matched lower-case, without port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow_http: BTreeSet<String>,
    allow_private: BTreeSet<String>,
}

/// A request refused by the egress policy. Its message says why and is safe
/// to show the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct EgressDenied(pub String);

impl EgressPolicy {
    /// A policy that also allows plain http to `allow_http` hosts and
    /// non-public addresses for `allow_private` hosts.
    pub fn new<'a>(
        allow_http: impl IntoIterator<Item = &'a String>,
        allow_private: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        Self {
            allow_http: allow_http.into_iter().map(|h| h.to_lowercase()).collect(),
            allow_private: allow_private
                .into_iter()
                .map(|h| h.to_lowercase())
                .collect(),
        }
    }

    /// Checks a URL before anything is sent: scheme, user information, and
    /// the address when the host is an IP literal (names are checked when
    /// they resolve).
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), EgressDenied> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressDenied(
                "URLs with user information (user@host) are refused".into(),
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| EgressDenied("the URL has no host".into()))?
            .to_lowercase();
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http.contains(&host) => {}
            "http" => {
                return Err(EgressDenied(format!(
                    "plain http to {host} is not allowed; use https"
                )));
            }
            other => {
                return Err(EgressDenied(format!("the {other:?} scheme is not allowed")));
            }
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(&host, IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(&host, IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }

    /// Checks one address `host` resolved to.
    /// Cloud-metadata addresses are refused even for `allow_private`
    /// hosts: nothing a tool needs lives there, and the instance's
    /// credentials do.
    pub(crate) fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), EgressDenied> {
        match non_public(ip) {
            Some(kind)
                if kind == "cloud metadata"
                    || !self.allow_private.contains(&host.to_lowercase()) =>
            {
                Err(EgressDenied(format!(
                    "{host} is at {ip}, a {kind} address, which tools may not reach"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Explains a redirect the client did not follow: refused outright when
    /// its target breaks this policy, otherwise simply not followed.
    pub(crate) fn check_redirect(&self, from: &Url, location: Option<&str>) -> EgressDenied {
        let Some(target) = location.and_then(|l| from.join(l).ok()) else {
            return EgressDenied("the service redirected without a valid Location".into());
        };
        let host = target.host_str().unwrap_or_default().to_string();
        match self.check_url(&target) {
            Err(reason) => EgressDenied(format!("the service redirected to {host}: {reason}")),
            Ok(()) => EgressDenied(format!(
                "the service redirected to {host}{}; redirects are not followed",
                target.path()
            )),
        }
    }
}

/// The kind of a non-public address, or `None` for a public one.
pub(crate) fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, d] = ip.octets();
    Some(match (a, b, c, d) {
        (169, 254, 169, 254) | (100, 100, 100, 200) | (168, 63, 129, 16) => "cloud metadata",
        (127, ..) => "loopback",
        (10, ..) | (192, 168, ..) => "private",
        (172, b, ..) if (16..32).contains(&b) => "private",
        (169, 254, ..) => "link-local",
        (100, b, ..) if (64..128).contains(&b) => "shared (carrier-grade NAT)",
        (0, ..) => "unspecified",
        (192, 0, 0, _) => "IETF protocol",
        (198, b, ..) if b == 18 || b == 19 => "benchmarking",
        (a, ..) if a >= 224 => "multicast or reserved",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let segments = ip.segments();
    Some(match segments {
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback",
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified",
        // NAT64 and 6to4 carry an IPv4 address: judge that one.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            return non_public_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
        }
        [0x2002, hi, lo, ..] => {
            return non_public_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
        }
        // SIIT (::ffff:0:a.b.c.d) carries an IPv4 address too.
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => {
            return non_public_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
        }
        [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254] => "cloud metadata",
        [0x64, 0xff9b, 1, ..] => "local NAT64",
        [0x2001, 0, ..] => "Teredo tunnel",
        [0x2001, 0xdb8, ..] => "documentation",
        [s, ..] if s & 0xffc0 == 0xfec0 => "site-local",
        [s, ..] if s & 0xfe00 == 0xfc00 => "private (unique local)",
        [s, ..] if s & 0xffc0 == 0xfe80 => "link-local",
        [s, ..] if s & 0xff00 == 0xff00 => "multicast",
        // IPv4-compatible (deprecated) ::a.b.c.d
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible",
        _ => return None,
    })
}

/// The client's resolver: resolves with the system resolver, then keeps only
/// the addresses the policy allows, so a name that resolves to a forbidden
/// address (DNS rebinding included) is never connected to.
#[derive(Debug)]
struct GuardedResolver {
    policy: Arc<EgressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_ip(&host, addr.ip()) {
                    Ok(()) => true,
                    Err(denied) => {
                        refusal.get_or_insert(denied);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let denied =
                    refusal.unwrap_or_else(|| EgressDenied(format!("{host} has no addresses")));
                return Err(Box::new(denied) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A client for one tool grant: the providers' TLS settings, no redirects,
/// no proxies, the policy's resolver, and `timeout` for each request.
pub fn client(policy: Arc<EgressPolicy>, timeout: Duration) -> Result<reqwest::Client, String> {
    crate::outbound::client_builder(crate::outbound::DEFAULT_CONNECT_TIMEOUT)?
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .timeout(timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// The egress refusal inside a client error, if that is what it is.
pub(crate) fn denial_in(error: &reqwest::Error) -> Option<EgressDenied> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(denied) = e.downcast_ref::<EgressDenied>() {
            return Some(denied.clone());
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn addresses_that_tools_may_not_reach() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.31.255.1", "private"),
            ("192.168.0.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata"),
            ("2002:a00:1::", "private"),
            ("fd00:ec2::254", "cloud metadata"),
            ("fc00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("168.63.129.16", "cloud metadata"),
            ("::ffff:0:7f00:1", "loopback"),
            ("2001::1", "Teredo tunnel"),
            ("fec0::1", "site-local"),
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for ip in [
            "140.82.112.6",
            "172.32.0.1",
            "2606:4700::1111",
            "100.128.0.1",
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_before_sending() {
        let strict = EgressPolicy::default();
        assert!(strict.check_url(&url("https://api.github.com/x")).is_ok());
        for (bad, why) in [
            ("https://api.github.com@evil.example/", "user information"),
            ("https://user:pw@api.github.com/", "user information"),
            ("http://api.github.com/", "plain http"),
            ("ftp://api.github.com/", "scheme"),
            ("https://127.0.0.1/", "loopback"),
            ("https://[::1]/", "loopback"),
            ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
            ("https://0x7f000001/", "loopback"),
        ] {
            let err = strict.check_url(&url(bad)).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let local = EgressPolicy::new(&["127.0.0.1".to_string()], &["127.0.0.1".to_string()]);
        // allow_private never opens a metadata address.
        let metadata = EgressPolicy::new(&[], &["169.254.169.254".to_string()]);
        assert!(
            metadata
                .check_url(&url("https://169.254.169.254/"))
                .is_err()
        );
        assert!(local.check_url(&url("http://127.0.0.1:8080/")).is_ok());
        assert!(local.check_url(&url("http://localhost:8080/")).is_err());
    }

    #[test]
    fn redirects_are_explained() {
        let policy = EgressPolicy::default();
        let from = url("https://api.github.com/repos/a/b");
        let to_metadata = policy.check_redirect(&from, Some("http://169.254.169.254/latest"));
        assert!(to_metadata.0.contains("plain http"), "{to_metadata}");
        let to_metadata = policy.check_redirect(&from, Some("https://169.254.169.254/latest"));
        assert!(to_metadata.0.contains("cloud metadata"), "{to_metadata}");
        let same_host = policy.check_redirect(&from, Some("/repos/a/c"));
        assert!(same_host.0.contains("not followed"), "{same_host}");
    }
}
