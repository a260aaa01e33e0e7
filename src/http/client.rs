//! Who is asking: the client's address, whether it came over HTTPS, and
//! whether it is on this machine. From the connection, or — only when the
//! connection comes from a trusted reverse proxy (`http.trusted_proxies`) —
//! from the `X-Forwarded-For` / `Forwarded` and `X-Forwarded-Proto` headers
//! the proxy adds. Rate limits, access decisions and the access callback all
//! key on this.
//!
//! "On this machine" opens the roles whose access is `local` (the admin role
//! by default), so it is strict: the client's address is loopback (an
//! IPv4-mapped `::ffff:127.0.0.1` counts as 127.0.0.1), the request carries
//! no forwarding header unless a trusted proxy added it (a proxy on this
//! machine would otherwise make every internet client look local), and its
//! `Host` is a loopback name or address (a page that rebinds its own DNS name
//! to 127.0.0.1 still sends its own name, so it cannot pass).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Uri, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::address::canonical;
use crate::address::{Network, in_networks};

/// The client of a request, put in the request's extensions by [`layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's IP address.
    pub ip: IpAddr,
    /// Whether the client reached us (or the proxy) over HTTPS.
    pub https: bool,
    /// Whether the client is on this machine (see the module's notes).
    pub local: bool,
}

/// How [`layer`] reads the client.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// This server itself speaks TLS.
    pub tls: bool,
    /// Networks of the reverse proxies whose forwarding headers are believed.
    pub trusted_proxies: Arc<[Network]>,
}

/// Headers with which a proxy says it forwarded a request. A request from
/// loopback carrying any of them, from a proxy that is not trusted, is not
/// from this machine.
const FORWARDING_HEADERS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "via",
];

/// The client of a request that came on a connection from `peer`.
pub fn resolve(cfg: &ClientConfig, peer: IpAddr, headers: &HeaderMap, uri: &Uri) -> Client {
    let peer = canonical(peer);
    let mut client = Client {
        ip: peer,
        https: cfg.tls,
        local: false,
    };
    let from_proxy = in_networks(&cfg.trusted_proxies, peer);
    if from_proxy {
        if let Some(ip) = forwarded_client(&cfg.trusted_proxies, headers) {
            client.ip = ip;
        }
        if let Some(https) = forwarded_https(headers) {
            client.https = https;
        }
    }
    let forwarded = FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h));
    client.local =
        client.ip.is_loopback() && (from_proxy || !forwarded) && loopback_host(headers, uri);
    client
}

/// The client a trusted proxy names: walking the `X-Forwarded-For` chain
/// (else `Forwarded: for=`) from the right, the first address that is not a
/// trusted proxy itself. Entries left of it were written by the client and
/// can be anything; an unreadable entry ends the walk.
fn forwarded_client(trusted: &[Network], headers: &HeaderMap) -> Option<IpAddr> {
    let mut chain: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if chain.is_empty() {
        chain = headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| forwarded_param(element, "for"))
            .collect();
    }
    let mut client = None;
    for entry in chain.iter().rev() {
        let ip = canonical(parse_ip(entry.trim_matches('"'))?);
        client = Some(ip);
        if !in_networks(trusted, ip) {
            break;
        }
    }
    client
}

/// Whether the proxy says the client came over HTTPS: the last
/// `X-Forwarded-Proto` entry, else the last `Forwarded: proto=`.
fn forwarded_https(headers: &HeaderMap) -> Option<bool> {
    let last = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .map(|s| s.trim().to_string())
    };
    let proto = last("x-forwarded-proto").or_else(|| {
        last("forwarded").and_then(|e| forwarded_param(&e, "proto").map(str::to_string))
    })?;
    Some(proto.trim_matches('"').eq_ignore_ascii_case("https"))
}

/// The value of `name` in one `Forwarded` element (`for=1.2.3.4;proto=https`).
fn forwarded_param<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// An IP, with or without a port (`1.2.3.4:5`, `[::1]:5`, `[::1]`).
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse::<Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })
}

/// Whether the request names this machine: its `Host` (and the URI's
/// authority, if it has one) is `localhost`, a `*.localhost` name or a
/// loopback address. A request without `Host` does not.
fn loopback_host(headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    is_loopback_name(host) && uri.authority().is_none_or(|a| is_loopback_name(a.as_str()))
}

/// `localhost`, `x.localhost`, `127.0.0.1`, `[::1]`, each with an optional port.
fn is_loopback_name(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, port)) if port.is_empty() || port.starts_with(':') => h,
            _ => return false,
        },
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .is_ok_and(|ip| canonical(ip).is_loopback())
}

/// Middleware: resolves the [`Client`] and stores it in the request's
/// extensions. Needs `ConnectInfo<SocketAddr>`; without it (a router served
/// without connect info) the address is 0.0.0.0.
pub async fn layer(State(cfg): State<ClientConfig>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let client = resolve(&cfg, peer, req.headers(), req.uri());
    req.extensions_mut().insert(client);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn trusting(nets: &[&str]) -> ClientConfig {
        ClientConfig {
            tls: false,
            trusted_proxies: nets.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LOCAL_HOST: (&str, &str) = ("host", "127.0.0.1:8080");
    fn root() -> Uri {
        "/".parse().unwrap()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("x-forwarded-proto", "https"),
            LOCAL_HOST,
        ]);
        let c = resolve(&trusting(&[]), ip("10.0.0.1"), &h, &root());
        assert_eq!((c.ip, c.https), (ip("10.0.0.1"), false), "untrusted peer");
        let c = resolve(&trusting(&["10.0.0.0/8"]), ip("10.0.0.1"), &h, &root());
        assert_eq!((c.ip, c.https), (ip("203.0.113.7"), true));
        let c = resolve(
            &trusting(&["10.0.0.0/8"]),
            ip("10.0.0.1"),
            &headers(&[("x-forwarded-for", "[2001:db8::1]:443")]),
            &root(),
        );
        assert_eq!(c.ip, ip("2001:db8::1"));
        let c = resolve(
            &trusting(&["10.0.0.0/8"]),
            ip("10.0.0.1"),
            &headers(&[("x-forwarded-for", "garbage")]),
            &root(),
        );
        assert_eq!(c.ip, ip("10.0.0.1"), "an unreadable header keeps the peer");
    }

    #[test]
    fn the_chain_is_walked_past_trusted_proxies_only() {
        let cfg = trusting(&["10.0.0.0/8"]);
        // client-written, real client, inner proxy
        let h = headers(&[("x-forwarded-for", "127.0.0.1, 198.51.100.9, 10.1.1.1")]);
        assert_eq!(
            resolve(&cfg, ip("10.0.0.1"), &h, &root()).ip,
            ip("198.51.100.9")
        );
        let h = headers(&[("x-forwarded-for", "6.6.6.6, unknown")]);
        assert_eq!(
            resolve(&cfg, ip("10.0.0.1"), &h, &root()).ip,
            ip("10.0.0.1"),
            "never an entry left of an unreadable one"
        );
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https",
        )]);
        let c = resolve(&cfg, ip("10.0.0.1"), &h, &root());
        assert_eq!((c.ip, c.https), (ip("2001:db8::7"), true));
    }

    #[test]
    fn this_machine_means_loopback_unforwarded_and_a_loopback_host() {
        let none = trusting(&[]);
        for (peer, host) in [
            ("127.0.0.1", "127.0.0.1:8080"),
            ("::1", "[::1]:8080"),
            ("::ffff:127.0.0.1", "localhost:8080"),
            ("127.0.0.2", "app.localhost"),
            ("127.0.0.1", "LOCALHOST"),
        ] {
            let c = resolve(&none, ip(peer), &headers(&[("host", host)]), &root());
            assert!(c.local, "{peer} {host}");
            assert!(c.ip.is_loopback(), "mapped address canonicalized: {}", c.ip);
        }
        for (peer, extra) in [
            ("10.0.0.2", ("host", "127.0.0.1:8080")),
            ("127.0.0.1", ("host", "evil.example")),
            ("127.0.0.1", ("host", "127.0.0.1.evil.example")),
            ("127.0.0.1", ("host", "localhost.evil.example:80")),
        ] {
            let c = resolve(&none, ip(peer), &headers(&[extra]), &root());
            assert!(!c.local, "{peer} {extra:?}");
        }
        assert!(
            !resolve(&none, ip("127.0.0.1"), &HeaderMap::new(), &root()).local,
            "no Host header"
        );
        for forwarding in FORWARDING_HEADERS {
            let h = headers(&[LOCAL_HOST, (forwarding, "203.0.113.7")]);
            assert!(
                !resolve(&none, ip("127.0.0.1"), &h, &root()).local,
                "{forwarding} from an untrusted loopback peer"
            );
        }
        // Behind a trusted proxy: local only when the proxy names a loopback client.
        let proxy = trusting(&["127.0.0.1"]);
        let h = headers(&[LOCAL_HOST, ("x-forwarded-for", "203.0.113.7")]);
        assert!(!resolve(&proxy, ip("127.0.0.1"), &h, &root()).local);
        let h = headers(&[LOCAL_HOST, ("x-forwarded-for", "127.0.0.1")]);
        assert!(resolve(&proxy, ip("127.0.0.1"), &h, &root()).local);
        // A spoofed X-Forwarded-For from elsewhere changes nothing.
        let h = headers(&[LOCAL_HOST, ("x-forwarded-for", "127.0.0.1")]);
        let c = resolve(&proxy, ip("192.0.2.1"), &h, &root());
        assert!(!c.local && c.ip == ip("192.0.2.1"));
        let absolute: Uri = "http://evil.example/api/x".parse().unwrap();
        let c = resolve(&none, ip("127.0.0.1"), &headers(&[LOCAL_HOST]), &absolute);
        assert!(!c.local, "absolute-form request naming another host");
    }
}
