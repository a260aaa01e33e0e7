//! Keyframe request pacing for one publisher, as a small sans-IO state machine.
//!
//! Viewers joining together, viewers losing packets and sinks that need
//! regular keyframes all ask for keyframes; the publisher should see at most
//! one request per `min_interval`, and none of the asks may be lost. The
//! owner calls [`KeyframePacer::ask`] for each ask, [`KeyframePacer::poll`] on
//! its timer, and sends a real request whenever one of them says so.

use std::time::{Duration, Instant};

/// Merges and throttles keyframe requests, and adds periodic ones.
#[derive(Debug, Clone)]
pub struct KeyframePacer {
    min_interval: Duration,
    periodic: Option<Duration>,
    last_sent: Option<Instant>,
    pending: bool,
    sent_total: u64,
}

impl KeyframePacer {
    /// A pacer that sends at most one request per `min_interval`.
    pub fn new(min_interval: Duration) -> KeyframePacer {
        KeyframePacer {
            min_interval,
            periodic: None,
            last_sent: None,
            pending: false,
            sent_total: 0,
        }
    }

    /// Turns periodic requests on (while a sink needs regular keyframes) or off.
    pub fn set_periodic(&mut self, period: Option<Duration>) {
        self.periodic = period;
    }

    /// Someone wants a keyframe. Returns true if a request should go out now;
    /// otherwise it is merged into one that [`KeyframePacer::poll`] will send.
    pub fn ask(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(t) if now.saturating_duration_since(t) < self.min_interval => {
                self.pending = true;
                false
            }
            _ => {
                self.mark_sent(now);
                true
            }
        }
    }

    /// A keyframe arrived from the publisher: a periodic request can wait a full period.
    pub fn keyframe_received(&mut self, now: Instant) {
        if self.periodic.is_some() && !self.pending {
            // Count the keyframe as if we had asked for it, so periodic
            // requests do not pile onto a publisher that sends keyframes itself.
            self.last_sent = Some(self.last_sent.map_or(now, |t| t.max(now)));
        }
    }

    /// Call when [`KeyframePacer::next_deadline`] passes; true means send a request now.
    pub fn poll(&mut self, now: Instant) -> bool {
        let due = match self.next_deadline() {
            Some(d) => now >= d,
            None => false,
        };
        if due {
            self.mark_sent(now);
        }
        due
    }

    /// When [`KeyframePacer::poll`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let last = self.last_sent?;
        let merged = self.pending.then(|| last + self.min_interval);
        let periodic = self.periodic.map(|p| last + p.max(self.min_interval));
        match (merged, periodic) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Requests sent so far.
    pub fn sent_total(&self) -> u64 {
        self.sent_total
    }

    fn mark_sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.pending = false;
        self.sent_total += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn merges_asks_within_interval() {
        let t0 = Instant::now();
        let mut p = KeyframePacer::new(200 * MS);
        assert!(p.ask(t0));
        assert!(!p.ask(t0 + 10 * MS));
        assert!(!p.ask(t0 + 50 * MS));
        assert_eq!(p.next_deadline(), Some(t0 + 200 * MS));
        assert!(!p.poll(t0 + 199 * MS));
        assert!(p.poll(t0 + 200 * MS));
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.sent_total(), 2);
    }

    #[test]
    fn periodic_requests_and_keyframes_reset_them() {
        let t0 = Instant::now();
        let mut p = KeyframePacer::new(200 * MS);
        p.set_periodic(Some(2000 * MS));
        assert!(p.ask(t0));
        assert_eq!(p.next_deadline(), Some(t0 + 2000 * MS));
        p.keyframe_received(t0 + 1500 * MS);
        assert_eq!(p.next_deadline(), Some(t0 + 3500 * MS));
        assert!(p.poll(t0 + 3500 * MS));
        p.set_periodic(None);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn first_periodic_needs_a_start() {
        let t0 = Instant::now();
        let mut p = KeyframePacer::new(200 * MS);
        p.set_periodic(Some(2000 * MS));
        assert_eq!(
            p.next_deadline(),
            None,
            "nothing scheduled before a first request or keyframe"
        );
        p.keyframe_received(t0);
        assert_eq!(p.next_deadline(), Some(t0 + 2000 * MS));
    }
}
