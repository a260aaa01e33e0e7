//! Per-client-address rate limiting: a token bucket per IP address. One
//! limiter caps the requests that create or change sessions (POST, PATCH,
//! DELETE); another (in `auth`) caps failed authentication attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::client::Client;
use super::error::ApiError;

/// Addresses tracked at most; beyond this, idle buckets are forgotten.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by client IP.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// `per_sec` sustained, `burst` at once, per address.
    pub fn new(per_sec: u32, burst: u32) -> RateLimiter {
        RateLimiter::with_rate(f64::from(per_sec), f64::from(burst))
    }

    /// `per_sec` sustained (may be below 1), `burst` at once, per address.
    pub fn with_rate(per_sec: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            per_sec: per_sec.max(1e-3),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Without taking a token: how long until `ip` has one again, or `None`
    /// when it has one now.
    pub fn wait(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let ip = bucket_key(ip);
        let buckets = self.buckets.lock();
        let b = buckets.get(&ip)?;
        let tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
    }

    /// Takes one token for `ip`; false when the address is over its rate.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let ip = bucket_key(ip);
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec < burst
            });
            if buckets.len() >= MAX_TRACKED {
                // Still full: forget the address seen longest ago rather than
                // refusing every new client (which an attacker with many
                // addresses could otherwise arrange).
                if let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k) {
                    buckets.remove(&oldest);
                }
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.per_sec;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Middleware: 429 with `Retry-After` for POST/PATCH/DELETE over the limit.
/// Needs the [`Client`] extension (the `client` layer runs first).
pub async fn limit(State(limiter): State<Arc<RateLimiter>>, req: Request, next: Next) -> Response {
    let limited = matches!(*req.method(), Method::POST | Method::PATCH | Method::DELETE);
    let ip = req
        .extensions()
        .get::<Client>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.ip);
    if limited && !limiter.allow(ip, Instant::now()) {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests; slow down",
        )
        .with_header(header::RETRY_AFTER, "1")
        .into_response();
    }
    next.run(req).await
}

/// The key an address is limited under: IPv6 clients by their /64 (one
/// subscriber's network hands out a whole /64), IPv4 (and IPv4-mapped) by
/// address.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills() {
        let l = RateLimiter::new(2, 3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(l.allow(ip, t0));
        assert!(l.allow(ip, t0));
        assert!(l.allow(ip, t0));
        assert!(!l.allow(ip, t0));
        assert!(l.allow(ip, t0 + Duration::from_millis(500)));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(l.allow(other, t0), "other addresses are not affected");
    }

    #[test]
    fn slow_rates_and_waits() {
        let l = RateLimiter::with_rate(0.1, 2.0);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(l.wait(ip, t0), None, "unknown addresses need not wait");
        assert!(l.allow(ip, t0) && l.allow(ip, t0));
        let w = l.wait(ip, t0).expect("empty bucket waits");
        assert!((9.9..=10.1).contains(&w.as_secs_f64()), "{w:?}");
        assert_eq!(l.wait(ip, t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn ipv6_clients_share_their_64_and_a_full_table_still_admits() {
        let l = RateLimiter::with_rate(0.001, 1.0);
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(l.allow(a, now));
        assert!(!l.allow(b, now), "same /64, same bucket");
        // Fill the table with spent buckets: a new client is still admitted.
        let l = RateLimiter::with_rate(0.001, 1.0);
        for i in 0..MAX_TRACKED as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.allow(ip, now));
        }
        assert!(l.allow("192.0.2.1".parse().unwrap(), now));
        assert!(l.buckets.lock().len() <= MAX_TRACKED);
    }
}
