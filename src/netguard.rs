//! Outbound HTTP to URLs a tenant supplies (callback URLs, `say` audio URLs)
//! reaches public addresses only: never loopback, private, link-local (cloud
//! metadata lives there), carrier-grade NAT, multicast, reserved or
//! documentation ranges, in IPv4 or IPv6 (mapped and NAT64 forms included).
//!
//! The check is made on the address actually connected to: the HTTP client's
//! DNS resolver ([`GuardedResolver`]) drops forbidden addresses from every
//! answer, so a name that resolves to a public address at registration and to
//! 127.0.0.1 at call time (DNS rebinding) still cannot reach 127.0.0.1; IP
//! literals never reach a resolver and are checked on the URL
//! ([`NetPolicy::check_url`]). Proxies are off for this client. An explicit
//! allow-list (`callbacks.allow_private_networks`) lets tests and development
//! use loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Which addresses tenant URLs may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    allow: Vec<IpNet>,
}

/// A URL or address that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The URL is not http(s) with a host.
    #[error("not an http(s) URL with a host")]
    BadUrl,
    /// The host is, or resolves only to, an address tenants may not reach.
    #[error("the address is not reachable from callbridge (private, loopback, link-local or reserved)")]
    Forbidden,
}

fn v4_forbidden(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240 // reserved 240/4
}

fn v6_forbidden(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_forbidden(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) embeds an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return v4_forbidden(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
        || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
}

impl NetPolicy {
    /// A policy allowing these networks even though they are private.
    pub fn new(allow: &[String]) -> Result<Self, String> {
        let allow = allow
            .iter()
            .map(|s| s.parse::<IpNet>().map_err(|e| format!("{s:?} is not a network (CIDR): {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { allow })
    }

    /// Whether a tenant URL may reach `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        match ip {
            IpAddr::V4(v4) => !v4_forbidden(v4),
            IpAddr::V6(v6) => !v6_forbidden(v6),
        }
    }

    /// Check a URL before sending to it: http(s), a host, and an allowed
    /// address if the host is an IP literal (names are checked when resolved).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), NetError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(NetError::BadUrl);
        }
        match url.host() {
            None => Err(NetError::BadUrl),
            Some(url::Host::Ipv4(ip)) if !self.allows(IpAddr::V4(ip)) => Err(NetError::Forbidden),
            Some(url::Host::Ipv6(ip)) if !self.allows(IpAddr::V6(ip)) => Err(NetError::Forbidden),
            Some(_) => Ok(()),
        }
    }
}

/// A DNS resolver that answers only with addresses the policy allows.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<NetPolicy>,
}

impl GuardedResolver {
    /// Resolve under `policy`.
    pub fn new(policy: Arc<NetPolicy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| policy.allows(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(NetError::Forbidden) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_loopback_link_local_and_reserved_addresses_are_refused() {
        let p = NetPolicy::default();
        for bad in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!p.allows(ip(bad)), "{bad} must be refused");
        }
        for good in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert!(p.allows(ip(good)), "{good} must be allowed");
        }
        let dev = NetPolicy::new(&["127.0.0.0/8".into()]).unwrap();
        assert!(dev.allows(ip("127.0.0.1")) && !dev.allows(ip("10.0.0.1")));
        assert!(NetPolicy::new(&["not-a-net".into()]).is_err());
    }

    #[test]
    fn ip_literal_urls_are_checked_before_sending() {
        let p = NetPolicy::default();
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(p.check_url(&u("http://127.0.0.1:8080/x")), Err(NetError::Forbidden));
        assert_eq!(p.check_url(&u("http://[::1]/x")), Err(NetError::Forbidden));
        assert_eq!(p.check_url(&u("http://169.254.169.254/latest/meta-data")), Err(NetError::Forbidden));
        assert_eq!(p.check_url(&u("ftp://example.com/x")), Err(NetError::BadUrl));
        assert_eq!(p.check_url(&u("https://example.com/x")), Ok(()));
    }

    #[tokio::test]
    async fn names_resolving_to_forbidden_addresses_get_no_address() {
        use reqwest::dns::Resolve;
        let r = GuardedResolver::new(Arc::new(NetPolicy::default()));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(r.resolve(name).await.is_err(), "localhost resolves to loopback only");
        let open = GuardedResolver::new(Arc::new(NetPolicy::new(&["127.0.0.0/8".into(), "::1/128".into()]).unwrap()));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(open.resolve(name).await.is_ok());
    }
}
