//! Session limits against abuse: how many WHIP/WHEP sessions one client
//! address may hold at once (a session holds a [`Lease`] for its whole life;
//! dropping the session, however it ends, gives the slot back), how many
//! viewers one stream may have ([`ViewerLimits`]: the slot is taken in the
//! same step as the check, so concurrent offers cannot overshoot), and how
//! fast a publisher may send ([`RateGuard`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Sessions per client address, counted.
#[derive(Debug)]
pub struct ClientLimits {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One session's slot; frees itself on drop.
#[derive(Debug)]
pub struct Lease {
    owner: Option<Arc<ClientLimits>>,
    ip: IpAddr,
    viewer: Option<ViewerSlot>,
}

impl Lease {
    /// Adds a viewer slot, held (and freed) with the session's lease.
    pub fn with_viewer_slot(mut self, slot: ViewerSlot) -> Lease {
        self.viewer = Some(slot);
        self
    }
}

/// Viewer sessions per stream (by stream id), counted from the moment an
/// offer is accepted until the session is gone.
#[derive(Debug)]
pub struct ViewerLimits {
    max: usize,
    counts: Mutex<HashMap<u64, usize>>,
}

/// One viewer's place on a stream; frees itself on drop.
#[derive(Debug)]
pub struct ViewerSlot {
    owner: Option<Arc<ViewerLimits>>,
    stream: u64,
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        if let Some(owner) = &self.owner {
            let mut counts = owner.counts.lock();
            if let Some(n) = counts.get_mut(&self.stream) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&self.stream);
                }
            }
        }
    }
}

impl ViewerLimits {
    /// At most `max` viewers per stream; 0 = no limit (nothing is counted).
    pub fn new(max: usize) -> Arc<ViewerLimits> {
        Arc::new(ViewerLimits {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A place on the stream `stream` (its id), or the limit it would
    /// exceed: checked and taken under one lock.
    pub fn acquire(self: &Arc<Self>, stream: u64) -> Result<ViewerSlot, usize> {
        if self.max == 0 {
            return Ok(ViewerSlot {
                owner: None,
                stream,
            });
        }
        let mut counts = self.counts.lock();
        let n = counts.entry(stream).or_insert(0);
        if *n >= self.max {
            return Err(self.max);
        }
        *n += 1;
        Ok(ViewerSlot {
            owner: Some(self.clone()),
            stream,
        })
    }

    /// Viewer places held on the stream `stream` now (0 when not limited).
    pub fn held(&self, stream: u64) -> usize {
        self.counts.lock().get(&stream).copied().unwrap_or(0)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(owner) = &self.owner {
            let mut counts = owner.counts.lock();
            if let Some(n) = counts.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
    }
}

impl ClientLimits {
    /// At most `max` sessions per address; 0 = no limit (nothing is counted).
    pub fn new(max: usize) -> Arc<ClientLimits> {
        Arc::new(ClientLimits {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a new session from `ip`, or the limit it would exceed.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Lease, usize> {
        if self.max == 0 {
            return Ok(Lease {
                owner: None,
                ip,
                viewer: None,
            });
        }
        let ip = canonical(ip);
        let mut counts = self.counts.lock();
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return Err(self.max);
        }
        *n += 1;
        Ok(Lease {
            owner: Some(self.clone()),
            ip,
            viewer: None,
        })
    }

    /// Sessions held by `ip` now.
    pub fn held(&self, ip: IpAddr) -> usize {
        self.counts.lock().get(&canonical(ip)).copied().unwrap_or(0)
    }
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What one publisher may send: checked as its media arrives.
#[derive(Debug, Default)]
pub struct PublisherLimits {
    /// Its bitrate, if limited.
    pub rate: Option<RateGuard>,
    /// Its picture size (long side, short side), if limited.
    pub max_size: Option<(u32, u32)>,
}

impl PublisherLimits {
    /// From `limits.max_publish_kbps`, `max_publish_width` and `max_publish_height` (0 = none).
    pub fn new(max_kbps: u32, max_width: u32, max_height: u32) -> PublisherLimits {
        PublisherLimits {
            rate: RateGuard::new(max_kbps),
            max_size: (max_width > 0 && max_height > 0)
                .then(|| (max_width.max(max_height), max_width.min(max_height))),
        }
    }

    /// Whether a `w`x`h` picture is too big, in either orientation (a
    /// 1920x1080 limit lets a phone send 1080x1920).
    pub fn too_big(&self, (w, h): (u32, u32)) -> bool {
        self.max_size
            .is_some_and(|(long, short)| w.max(h) > long || w.min(h) > short)
    }
}

/// The window a publisher's rate is averaged over.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// How much over the limit a publisher may go (browsers overshoot briefly).
const RATE_SLACK: f64 = 1.5;

/// Watches a publisher's received bytes against `limits.max_publish_kbps`.
#[derive(Debug)]
pub struct RateGuard {
    limit_bps: f64,
    samples: VecDeque<(Instant, u64)>,
}

impl RateGuard {
    /// A guard for `max_kbps`; `None` when 0 (no limit).
    pub fn new(max_kbps: u32) -> Option<RateGuard> {
        (max_kbps > 0).then(|| RateGuard {
            limit_bps: f64::from(max_kbps) * 1000.0,
            samples: VecDeque::new(),
        })
    }

    /// Takes the publisher's byte count at `now`; true once the last 5 s
    /// averaged more than 1.5 times the limit.
    pub fn exceeded(&mut self, now: Instant, bytes: u64) -> bool {
        if self
            .samples
            .back()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) < Duration::from_millis(500))
        {
            return false;
        }
        self.samples.push_back((now, bytes));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let Some(&(t0, b0)) = self.samples.front() else {
            return false;
        };
        let span = now.saturating_duration_since(t0);
        if span < RATE_WINDOW {
            return false;
        }
        let bps = bytes.saturating_sub(b0) as f64 * 8.0 / span.as_secs_f64();
        bps > self.limit_bps * RATE_SLACK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_guard_trips_only_on_a_sustained_excess() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 1.2 Mbit/s (150 kB/s) against 1 Mbit/s for 10 s: within the slack.
        let mut g = RateGuard::new(1000).unwrap();
        let tripped = (0..=20u64).any(|i| g.exceeded(at(i * 500), i * 75_000));
        assert!(!tripped);
        // 2 Mbit/s sustained: trips once 5 s have been seen, not before.
        let mut g = RateGuard::new(1000).unwrap();
        let first = (0..=20u64).find(|i| g.exceeded(at(i * 500), i * 125_000));
        assert_eq!(first, Some(10));
        assert!(RateGuard::new(0).is_none());
    }

    #[test]
    fn picture_size_limit_allows_either_orientation() {
        let l = PublisherLimits::new(0, 1920, 1080);
        assert!(!l.too_big((1920, 1080)));
        assert!(!l.too_big((1080, 1920)));
        assert!(!l.too_big((1280, 720)));
        assert!(l.too_big((2560, 1440)));
        assert!(l.too_big((1920, 1200)));
        assert!(!PublisherLimits::new(0, 0, 0).too_big((8192, 8192)));
    }

    #[test]
    fn counts_per_address_and_frees_on_drop() {
        let limits = ClientLimits::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a6: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let one = limits.acquire(a).unwrap();
        let two = limits.acquire(a6).unwrap();
        assert_eq!(limits.acquire(a).unwrap_err(), 2);
        let other = limits.acquire(b).unwrap();
        drop(one);
        assert_eq!(limits.held(a), 1);
        let three = limits.acquire(a).unwrap();
        drop((two, three, other));
        assert!(limits.counts.lock().is_empty(), "nothing left behind");
    }

    #[test]
    fn viewer_places_are_checked_and_taken_in_one_step() {
        let limits = ViewerLimits::new(3);
        // 8 threads race for 3 places on stream 1: exactly 3 win.
        let won: Vec<ViewerSlot> = std::thread::scope(|s| {
            let tries: Vec<_> = (0..8).map(|_| s.spawn(|| limits.acquire(1).ok())).collect();
            tries
                .into_iter()
                .filter_map(|t| t.join().ok().flatten())
                .collect()
        });
        assert_eq!(won.len(), 3);
        assert_eq!(limits.acquire(1).unwrap_err(), 3);
        let other = limits
            .acquire(2)
            .expect("another stream has its own places");
        drop(won);
        assert_eq!(limits.held(1), 0);
        let lease = ClientLimits::new(0)
            .acquire("192.0.2.1".parse().unwrap())
            .unwrap()
            .with_viewer_slot(limits.acquire(1).unwrap());
        assert_eq!(limits.held(1), 1);
        drop((lease, other));
        assert!(limits.counts.lock().is_empty(), "nothing left behind");
        assert_eq!(ViewerLimits::new(0).held(1), 0);
    }

    #[test]
    fn zero_means_no_limit() {
        let limits = ClientLimits::new(0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let leases: Vec<Lease> = (0..100).map(|_| limits.acquire(ip).unwrap()).collect();
        assert_eq!(leases.len(), 100);
        assert_eq!(limits.held(ip), 0);
    }
}
