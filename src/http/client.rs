//! Who is asking: the client's address and whether it came over HTTPS, from
//! the connection, or — behind a trusted reverse proxy — from
//! `X-Forwarded-For` / `X-Forwarded-Proto`. Rate limits, access decisions and
//! the access callback all key on this.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

/// The client of a request, put in the request's extensions by [`layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's IP address.
    pub ip: IpAddr,
    /// Whether the client reached us (or the proxy) over HTTPS.
    pub https: bool,
}

/// How [`layer`] reads the client.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// This server itself speaks TLS.
    pub tls: bool,
    /// Believe `X-Forwarded-For` / `X-Forwarded-Proto`.
    pub trust_forwarded: bool,
}

/// The client of a request with the connection's `peer` address.
pub fn resolve(cfg: ClientConfig, peer: IpAddr, headers: &HeaderMap) -> Client {
    let mut client = Client {
        ip: peer,
        https: cfg.tls,
    };
    if !cfg.trust_forwarded {
        return client;
    }
    // The last entry is the one our proxy appended; earlier ones came from
    // the client and can be anything.
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|s| parse_ip(s.trim()));
    if let Some(ip) = forwarded {
        client.ip = ip;
    }
    if let Some(proto) = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        let last = proto.rsplit(',').next().unwrap_or("").trim();
        client.https = last.eq_ignore_ascii_case("https");
    }
    client
}

/// An IP, with or without a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Middleware: resolves the [`Client`] and stores it in the request's
/// extensions. Needs `ConnectInfo<SocketAddr>`; without it (a router served
/// without connect info) the address is 0.0.0.0.
pub async fn layer(State(cfg): State<ClientConfig>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let client = resolve(cfg, peer, req.headers());
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

    #[test]
    fn forwarded_headers_only_when_trusted() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ]);
        let plain = ClientConfig {
            tls: false,
            trust_forwarded: false,
        };
        assert_eq!(
            resolve(plain, peer, &h),
            Client {
                ip: peer,
                https: false
            }
        );
        let trusted = ClientConfig {
            trust_forwarded: true,
            ..plain
        };
        let c = resolve(trusted, peer, &h);
        assert_eq!(c.ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert!(c.https);
        let c = resolve(
            trusted,
            peer,
            &headers(&[("x-forwarded-for", "[2001:db8::1]:443")]),
        );
        assert_eq!(c.ip, "2001:db8::1".parse::<IpAddr>().unwrap());
        let c = resolve(trusted, peer, &headers(&[("x-forwarded-for", "garbage")]));
        assert_eq!(c.ip, peer, "an unreadable header keeps the peer");
        let c = resolve(
            trusted,
            peer,
            &headers(&[("x-forwarded-for", "6.6.6.6, unknown")]),
        );
        assert_eq!(c.ip, peer, "never an earlier, client-written entry");
    }
}
