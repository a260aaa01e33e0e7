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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
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
        match parse_address(host)? {
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

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) as the IPv4 address they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A host written as an address, in any spelling the system resolver
/// accepts: IPv6 (without brackets), dotted IPv4 and its loose forms (fewer
/// parts, octal and hexadecimal parts). `Ok(None)` for a host name; an error
/// for something numeric that is no address (which no resolver would read as
/// a name either).
pub fn parse_address(host: &str) -> Result<Option<IpAddr>, OutboundError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        return host
            .parse::<Ipv6Addr>()
            .map(|a| Some(IpAddr::V6(a)))
            .map_err(|_| OutboundError::BadAddress(host.to_string()));
    }
    let numeric = host.starts_with(|c: char| c.is_ascii_digit())
        && host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | 'x' | 'X'));
    if !numeric {
        return Ok(None);
    }
    parse_ipv4_loose(host)
        .map(|a| Some(IpAddr::V4(a)))
        .ok_or_else(|| OutboundError::BadAddress(host.to_string()))
}

/// `inet_aton`'s reading of an IPv4 address: one to four parts, each decimal,
/// octal (leading `0`) or hexadecimal (`0x`); the last part fills the bytes
/// the others leave (`127.1` = 127.0.0.1, `2130706433` = 127.0.0.1).
fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let nums = parts
        .iter()
        .map(|p| parse_part(p))
        .collect::<Option<Vec<u64>>>()?;
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    let last_bits = 8 * (4 - init.len() as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut v = *last as u32;
    for (i, &n) in init.iter().enumerate() {
        v |= (n as u32) << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(v))
}

fn parse_part(p: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        // `0x` alone is 0 to inet_aton; an empty part is nothing.
        return (radix == 16).then_some(0);
    }
    if digits.len() > 12 || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// IPv4 ranges that are not public unicast, with their description.
const V4_INTERNAL: &[(u32, u32, &str)] = &[
    (0x0000_0000, 8, "a \"this network\" address (0.0.0.0/8)"),
    (0x0a00_0000, 8, "a private address (10.0.0.0/8, RFC 1918)"),
    (
        0x6440_0000,
        10,
        "a shared address (100.64.0.0/10, carrier-grade NAT)",
    ),
    (0x7f00_0000, 8, "a loopback address (127.0.0.0/8)"),
    (
        0xa9fe_0000,
        16,
        "a link-local address (169.254.0.0/16, where cloud metadata services answer)",
    ),
    (
        0xac10_0000,
        12,
        "a private address (172.16.0.0/12, RFC 1918)",
    ),
    (0xc000_0000, 24, "an IETF protocol address (192.0.0.0/24)"),
    (0xc000_0200, 24, "a documentation address (192.0.2.0/24)"),
    (0xc058_6300, 24, "a 6to4 relay address (192.88.99.0/24)"),
    (
        0xc0a8_0000,
        16,
        "a private address (192.168.0.0/16, RFC 1918)",
    ),
    (0xc612_0000, 15, "a benchmarking address (198.18.0.0/15)"),
    (0xc633_6400, 24, "a documentation address (198.51.100.0/24)"),
    (0xcb00_7100, 24, "a documentation address (203.0.113.0/24)"),
    (0xe000_0000, 4, "a multicast address (224.0.0.0/4)"),
    (
        0xf000_0000,
        4,
        "a reserved address (240.0.0.0/4, broadcast included)",
    ),
];

/// IPv6 ranges that are not public unicast (IPv4-mapped ones are checked
/// as IPv4), with their description; more specific ranges first.
const V6_INTERNAL: &[(u128, u32, &str)] = &[
    (0, 128, "the unspecified address (::)"),
    (1, 128, "the loopback address (::1)"),
    (0, 96, "an IPv4-compatible address (::/96, deprecated)"),
    (
        0x0064_ff9b_0000_0000_0000_0000_0000_0000,
        96,
        "a NAT64 address (64:ff9b::/96)",
    ),
    (
        0x0064_ff9b_0001_0000_0000_0000_0000_0000,
        48,
        "a local NAT64 address (64:ff9b:1::/48)",
    ),
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        "a discard-only address (100::/64)",
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        "a documentation address (2001:db8::/32)",
    ),
    (
        0x2001_0000_0000_0000_0000_0000_0000_0000,
        32,
        "a Teredo address (2001::/32)",
    ),
    (
        0x2002_0000_0000_0000_0000_0000_0000_0000,
        16,
        "a 6to4 address (2002::/16)",
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        "a unique local (private) address (fc00::/7)",
    ),
    (
        0xfe80_0000_0000_0000_0000_0000_0000_0000,
        10,
        "a link-local address (fe80::/10)",
    ),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        "a site-local address (fec0::/10, deprecated)",
    ),
    (
        0xff00_0000_0000_0000_0000_0000_0000_0000,
        8,
        "a multicast address (ff00::/8)",
    ),
];

/// Which internal range `ip` is in (IPv4-mapped IPv6 read as IPv4), in
/// words; `None` for a public unicast address.
pub fn internal_rule(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let v = u32::from(a);
            V4_INTERNAL
                .iter()
                .find(|(base, len, _)| v & (u32::MAX << (32 - len)) == *base)
                .map(|(_, _, rule)| *rule)
        }
        IpAddr::V6(a) => {
            let v = u128::from(a);
            V6_INTERNAL
                .iter()
                .find(|(base, len, _)| v & (u128::MAX << (128 - len)) == *base)
                .map(|(_, _, rule)| *rule)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_spelling_of_loopback_is_read_as_loopback() {
        for spelling in [
            "127.0.0.1",
            "127.1",
            "127.0.1",
            "0177.0.0.1",
            "0177.1",
            "2130706433",
            "0x7f000001",
            "0X7F.0.0.1",
            "0x7f.0x0.0x0.0x1",
            "::ffff:127.0.0.1",
            "[::ffff:7f00:1]",
        ] {
            let parsed = parse_address(spelling).unwrap().expect(spelling);
            assert_eq!(canonical(parsed), ip("127.0.0.1"), "{spelling}");
            let err = OutboundPolicy::default()
                .check_literal(spelling)
                .unwrap_err();
            assert!(err.to_string().contains("loopback"), "{spelling}: {err}");
        }
        assert_eq!(parse_address("0").unwrap(), Some(ip("0.0.0.0")));
        assert_eq!(parse_address("0x").unwrap(), Some(ip("0.0.0.0")));
    }

    #[test]
    fn numeric_hosts_that_are_no_address_are_refused() {
        for bad in [
            "256.1.1.1",
            "1.2.3.4.5",
            "08.1.1.1",
            "1..2",
            "127.0.0.1.",
            "4294967296",
            "1.16777216",
            "0xfffffffff",
            "1.2.3.256",
            "::gg",
        ] {
            assert!(
                matches!(parse_address(bad), Err(OutboundError::BadAddress(_))),
                "{bad}"
            );
        }
        for name in [
            "example.com",
            "a.rtmp.youtube.com",
            "1e100.net",
            "nginx-rtmp",
        ] {
            assert_eq!(parse_address(name).unwrap(), None, "{name}");
        }
    }

    #[test]
    fn internal_ranges_are_named_and_public_ones_pass() {
        let cases = [
            ("10.0.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared"),
            ("0.0.0.0", "this network"),
            ("0.1.2.3", "this network"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fd00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("64:ff9b::a00:1", "NAT64"),
            ("2002:a00:1::", "6to4"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "IPv4-compatible"),
        ];
        for (addr, word) in cases {
            let rule = internal_rule(ip(addr)).unwrap_or_else(|| panic!("{addr} passed"));
            assert!(rule.contains(word), "{addr}: {rule}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(internal_rule(ip(public)), None, "{public}");
        }
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
