//! Where castgate may connect on someone else's behalf.
//!
//! Restream targets added through the API, webhooks and the access callback
//! make castgate open connections to addresses that came from a URL. Without
//! a check, anyone who can add a target could make castgate reach services on
//! its own machine or internal network (server-side request forgery) and learn
//! what answers from the target's error. So every such address is classified:
//! loopback, private (RFC 1918, fc00::/7), link-local (cloud metadata lives at
//! 169.254.169.254), shared, multicast, reserved, NAT64, 6to4 and the like are
//! *internal* and refused, unless an operator allowed the network
//! (`outbound.allow_networks`). Every spelling of an address counts: the
//! loose IPv4 forms that the system resolver accepts (`127.1`, `0177.0.0.1`,
//! `2130706433`, `0x7f000001`) and IPv4-mapped IPv6 are read as the address
//! they are before the check.
//!
//! A host name is resolved and refused when *any* of its addresses is
//! internal. Callers then connect to an address that was checked (HTTP
//! clients through [`OutboundPolicy::http_client`], whose resolver checks
//! every answer; RTMP by putting the checked address in the URL), so a name
//! that changes its answer between the check and the connection (DNS
//! rebinding) does not get through.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::address::{canonical, internal_rule, parse_address};
use std::sync::Arc;

use ipnet::IpNet;

/// Why an outbound address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// An address written in the URL is internal.
    #[error(
        "{address} is {rule}: castgate does not connect to internal addresses for a request \
         (an operator can allow the network in outbound.allow_networks)"
    )]
    InternalAddress {
        /// The address, normalised (`127.1` is shown as `127.0.0.1`).
        address: IpAddr,
        /// Which range it is in, in words.
        rule: &'static str,
    },
    /// A host name resolves to an internal address (which one is not said:
    /// that would tell a caller about the internal network).
    #[error(
        "host {host:?} resolves to {rule}: castgate does not connect to internal addresses for \
         a request (an operator can allow the network in outbound.allow_networks)"
    )]
    InternalName {
        /// The host name.
        host: String,
        /// Which range the refused address is in, in words.
        rule: &'static str,
    },
    /// Looks like a numeric address but is not one.
    #[error("{0:?} is not a valid IP address")]
    BadAddress(String),
    /// The name did not resolve.
    #[error("host {0:?} could not be resolved")]
    Unresolved(String),
}

impl OutboundError {
    /// Whether the refusal is about the address itself (it will be refused
    /// again), not a passing resolver failure.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            OutboundError::InternalAddress { .. } | OutboundError::InternalName { .. }
        )
    }
}

/// The rule castgate applies to outbound connections made for a request:
/// internal addresses are refused unless their network is allowed.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allow: Vec<IpNet>,
}

impl OutboundPolicy {
    /// A policy that allows, besides public addresses, the internal networks
    /// in `allow` (`outbound.allow_networks`).
    pub fn new(allow: Vec<IpNet>) -> OutboundPolicy {
        OutboundPolicy { allow }
    }

    /// Whether `ip` may be connected to; the error says which rule refused it.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), OutboundError> {
        let ip = canonical(ip);
        match internal_rule(ip) {
            Some(rule) if !self.allows(ip) => {
                Err(OutboundError::InternalAddress { address: ip, rule })
            }
            _ => Ok(()),
        }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Checks every address `host` resolved to; returns the first, which is
    /// the one to connect to.
    pub fn check_resolved(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Result<IpAddr, OutboundError> {
        let mut first = None;
        for ip in addrs.into_iter().map(canonical) {
            if let Some(rule) = internal_rule(ip).filter(|_| !self.allows(ip)) {
                return Err(OutboundError::InternalName {
                    host: host.to_string(),
                    rule,
                });
            }
            first.get_or_insert(ip);
        }
        first.ok_or_else(|| OutboundError::Unresolved(host.to_string()))
    }

    /// Checks a host written as an address; `Ok(None)` for a host name
    /// (which must be resolved with [`resolve`](Self::resolve) or
    /// [`resolve_blocking`](Self::resolve_blocking)).
    pub fn check_literal(&self, host: &str) -> Result<Option<IpAddr>, OutboundError> {
        let parsed = parse_address(host).map_err(|e| OutboundError::BadAddress(e.0))?;
        match parsed {
            Some(ip) => self.check_ip(ip).map(|()| Some(canonical(ip))),
            None => Ok(None),
        }
    }

    /// The checked address to connect to for `host` (an address or a name,
    /// resolved without blocking the runtime).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<IpAddr, OutboundError> {
        if let Some(ip) = self.check_literal(host)? {
            return Ok(ip);
        }
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| OutboundError::Unresolved(host.to_string()))?;
        self.check_resolved(host, addrs.map(|a| a.ip()))
    }

    /// As [`resolve`](Self::resolve), for threads that may block (the
    /// system resolver runs on the calling thread).
    pub fn resolve_blocking(&self, host: &str, port: u16) -> Result<IpAddr, OutboundError> {
        if let Some(ip) = self.check_literal(host)? {
            return Ok(ip);
        }
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|_| OutboundError::Unresolved(host.to_string()))?;
        self.check_resolved(host, addrs.map(|a| a.ip()))
    }

    /// Checks an `http(s)://` URL's host when it is an address (names are
    /// checked by the resolver of [`http_client`](Self::http_client) when
    /// the request is made). A URL that does not parse passes: the request
    /// itself fails.
    pub fn check_url(&self, url: &str) -> Result<(), OutboundError> {
        let Ok(u) = reqwest::Url::parse(url) else {
            return Ok(());
        };
        match u.host_str() {
            Some(host) => self.check_literal(host).map(|_| ()),
            None => Ok(()),
        }
    }

    /// An HTTP client builder whose connections go only where this policy
    /// allows: its resolver refuses names with an internal address, it
    /// follows no redirects (a redirect could name any address) and uses no
    /// proxy from the environment. Callers still check address URLs with
    /// [`check_url`](Self::check_url), which no resolver sees.
    pub fn http_client(self: &Arc<Self>) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckingResolver {
                policy: self.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
    }
}

/// The resolver of [`OutboundPolicy::http_client`].
struct CheckingResolver {
    policy: Arc<OutboundPolicy>,
}

impl reqwest::dns::Resolve for CheckingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            policy.check_resolved(&host, addrs.iter().map(|a| a.ip()))?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
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
    fn every_spelling_of_an_internal_address_is_refused() {
        for spelling in [
            "127.1",
            "0177.0.0.1",
            "2130706433",
            "0x7f000001",
            "[::ffff:7f00:1]",
        ] {
            let err = OutboundPolicy::default()
                .check_literal(spelling)
                .unwrap_err();
            assert!(err.to_string().contains("loopback"), "{spelling}: {err}");
        }
        assert!(matches!(
            OutboundPolicy::default().check_literal("999.1.1.1"),
            Err(OutboundError::BadAddress(_))
        ));
    }

    #[test]
    fn allowed_networks_let_internal_addresses_through() {
        let p = OutboundPolicy::new(vec![
            "10.1.0.0/16".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(p.check_ip(ip("10.1.2.3")).is_ok());
        assert!(
            p.check_ip(ip("::ffff:10.1.2.3")).is_ok(),
            "mapped form of an allowed address"
        );
        assert!(p.check_ip(ip("::1")).is_ok());
        assert!(p.check_ip(ip("10.2.0.1")).is_err());
        assert!(p.check_ip(ip("127.0.0.1")).is_err());
    }

    #[test]
    fn a_name_is_refused_when_any_address_is_internal() {
        let p = OutboundPolicy::default();
        let err = p
            .check_resolved("mixed.example", [ip("8.8.8.8"), ip("10.0.0.7")])
            .unwrap_err();
        assert!(err.is_internal());
        let shown = err.to_string();
        assert!(
            shown.contains("private") && !shown.contains("10.0.0.7"),
            "{shown}"
        );
        assert_eq!(
            p.check_resolved("ok.example", [ip("::ffff:8.8.4.4"), ip("8.8.8.8")]),
            Ok(ip("8.8.4.4"))
        );
        assert!(matches!(
            p.check_resolved("none.example", []),
            Err(OutboundError::Unresolved(_))
        ));
    }

    #[test]
    fn urls_with_address_hosts_are_checked() {
        let p = OutboundPolicy::default();
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://0x7f000001/hook",
            "http://127.1/",
            "https://[::1]/x",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert!(p.check_url(url).is_err(), "{url}");
        }
        assert!(p.check_url("https://hooks.example.com/in").is_ok());
        assert!(p.check_url("http://8.8.8.8/").is_ok());
    }

    #[test]
    fn localhost_resolves_to_loopback_and_is_refused() {
        let p = OutboundPolicy::default();
        let err = p.resolve_blocking("localhost", 1935).unwrap_err();
        assert!(err.is_internal(), "{err}");
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}
