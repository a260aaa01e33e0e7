//! Keyframe request pacing for one publisher, as a small sans-IO state machine.
//!
//! Viewers joining together, viewers losing packets and sinks that need
//! regular keyframes all ask for keyframes; the publisher should see at most
//! one request per `min_interval`, and none of the asks may be lost. The
//! owner calls [`KeyframePacer::ask`] for each ask, [`KeyframePacer::poll`] on
//! its timer, and sends a real request whenever one of them says so.
//!
//! A request can go unanswered: RTCP is lost like any packet, and libwebrtc
//! (every browser) drops a request that arrives within 300 ms of the last one
//! it acted on. Whoever asked is still waiting, so a request no keyframe
//! answered within [`RETRY_AFTER`] is sent again, a few times.

use std::time::{Duration, Instant};

/// A request no keyframe answered this long after it was sent is sent again
/// (browsers answer within a round trip and an encode, ~100–200 ms; beyond
/// libwebrtc's 300 ms window in which a second request is dropped).
pub const RETRY_AFTER: Duration = Duration::from_millis(500);

/// How many times an unanswered request is sent again before the pacer
/// gives up (a publisher that ignores requests keeps its own schedule).
pub const RETRIES: u32 = 3;

/// Merges and throttles keyframe requests, and adds periodic ones.
#[derive(Debug, Clone)]
pub struct KeyframePacer {
    min_interval: Duration,
    periodic: Option<Duration>,
    last_sent: Option<Instant>,
    pending: bool,
    /// The last request sent that no keyframe answered yet, and how many
    /// times it was sent again.
    unanswered: Option<(Instant, u32)>,
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
            unanswered: None,
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
                self.unanswered = Some((now, 0));
                true
            }
        }
    }

    /// A keyframe arrived from the publisher: it answers every request, and
    /// a periodic request can wait a full period.
    pub fn keyframe_received(&mut self, now: Instant) {
        self.unanswered = None;
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
        if !due {
            return false;
        }
        let retry = self.retry_deadline().is_some_and(|d| now >= d);
        self.unanswered = match self.unanswered {
            // Someone asked since the last request: a new wait begins.
            _ if self.pending => Some((now, 0)),
            // The last try gives up after it.
            Some((_, n)) if retry => (n + 1 < RETRIES).then_some((now, n + 1)),
            // A periodic request while one is unanswered: the same wait.
            Some((_, n)) => Some((now, n)),
            // A periodic request nobody waits for: not retried.
            None => None,
        };
        self.mark_sent(now);
        true
    }

    /// When an unanswered request is due to be sent again.
    fn retry_deadline(&self) -> Option<Instant> {
        let (sent, _) = self.unanswered?;
        Some(sent + RETRY_AFTER.max(self.min_interval))
    }

    /// When [`KeyframePacer::poll`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let last = self.last_sent?;
        let merged = self.pending.then(|| last + self.min_interval);
        let periodic = self.periodic.map(|p| last + p.max(self.min_interval));
        [merged, periodic, self.retry_deadline()]
            .into_iter()
            .flatten()
            .min()
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
        p.keyframe_received(t0 + 250 * MS);
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.sent_total(), 2);
    }

    #[test]
    fn an_unanswered_request_is_sent_again_a_few_times() {
        let t0 = Instant::now();
        let mut p = KeyframePacer::new(350 * MS);
        assert!(p.ask(t0));
        // No keyframe: sent again after RETRY_AFTER, RETRIES times, then not.
        let mut t = t0;
        for _ in 0..RETRIES {
            t += RETRY_AFTER;
            assert_eq!(p.next_deadline(), Some(t));
            assert!(!p.poll(t - MS));
            assert!(p.poll(t));
        }
        assert_eq!(p.next_deadline(), None, "gave up");
        assert_eq!(p.sent_total(), 1 + u64::from(RETRIES));
        // A keyframe answers it: nothing more to send.
        assert!(p.ask(t + 1000 * MS));
        p.keyframe_received(t + 1100 * MS);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn a_request_merged_into_the_window_a_browser_ignores_is_retried() {
        // Two viewers 100 ms apart: the second ask is merged and sent at
        // min_interval; a browser drops it when that is under 300 ms after
        // the first, and the keyframe that answered the first came before
        // the second viewer joined. Without an answer it is sent again.
        let t0 = Instant::now();
        let mut p = KeyframePacer::new(200 * MS);
        assert!(p.ask(t0));
        p.keyframe_received(t0 + 80 * MS);
        assert!(!p.ask(t0 + 100 * MS));
        assert!(p.poll(t0 + 200 * MS));
        assert_eq!(p.next_deadline(), Some(t0 + 700 * MS));
        assert!(p.poll(t0 + 700 * MS), "sent again");
        p.keyframe_received(t0 + 780 * MS);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn periodic_requests_are_not_retried() {
        let t0 = Instant::now();
        let mut p = KeyframePacer::new(200 * MS);
        p.set_periodic(Some(2000 * MS));
        p.keyframe_received(t0);
        assert!(p.poll(t0 + 2000 * MS));
        assert_eq!(
            p.next_deadline(),
            Some(t0 + 4000 * MS),
            "only the next period"
        );
    }

    #[test]
    fn periodic_requests_and_keyframes_reset_them() {
        let t0 = Instant::now();
        let mut p = KeyframePacer::new(200 * MS);
        p.set_periodic(Some(2000 * MS));
        assert!(p.ask(t0));
        assert_eq!(p.next_deadline(), Some(t0 + RETRY_AFTER), "until answered");
        p.keyframe_received(t0);
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
