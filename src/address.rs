//! IP addresses as castgate reads them, the bottom floor of every decision
//! about who a client is and where castgate may connect: the canonical form
//! (IPv4-mapped IPv6 is the IPv4 address it is), every spelling of an
//! address that a system resolver accepts (`127.1`, `0177.0.0.1`,
//! `2130706433`, `0x7f000001`), the table of internal (non-public) ranges
//! with their names, and the networks the config lists.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Something numeric that is no IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid IP address")]
pub struct BadAddress(pub String);

/// An IP network in CIDR form (`10.0.0.0/8`, `fd00::/8`) or one address
/// (`127.0.0.1`, read as `/32`). Written and read as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Network(pub ipnet::IpNet);

impl Network {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as
    /// the IPv4 address it is).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let s = s.trim();
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(n) => n,
            Err(_) => s
                .parse::<IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| format!("{s:?} is not a network such as 10.0.0.0/8 or an address"))?,
        };
        Ok(Network(net.trunc()))
    }
}

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(s: String) -> Result<Network, String> {
        s.parse()
    }
}

impl From<Network> for String {
    fn from(n: Network) -> String {
        n.0.to_string()
    }
}

/// Whether `ip` is in any of `networks`.
pub fn in_networks(networks: &[Network], ip: IpAddr) -> bool {
    networks.iter().any(|n| n.contains(ip))
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
pub fn parse_address(host: &str) -> Result<Option<IpAddr>, BadAddress> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        return host
            .parse::<Ipv6Addr>()
            .map(|a| Some(IpAddr::V6(a)))
            .map_err(|_| BadAddress(host.to_string()));
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
        .ok_or_else(|| BadAddress(host.to_string()))
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
            assert!(internal_rule(parsed).unwrap().contains("loopback"));
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
            assert!(matches!(parse_address(bad), Err(BadAddress(_))), "{bad}");
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
    fn networks_read_cidr_or_one_address() {
        let n: Network = "10.1.2.3/8".parse().unwrap();
        assert_eq!(String::from(n), "10.0.0.0/8");
        let one: Network = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("::ffff:127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        assert!("nope".parse::<Network>().unwrap_err().contains("\"nope\""));
    }
}
