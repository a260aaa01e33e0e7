//! Which simulcast layer an automatic viewer gets: the largest one its
//! connection carries, by the bandwidth estimate of its session (str0m's
//! transport-wide congestion control).
//!
//! Down at once when the estimate no longer carries the layer (a queue is
//! building on the viewer's path, a freeze is near), or when the viewer
//! reports heavy loss (a full queue drops packets before the estimate
//! falls: the link then carries about what arrived); up one layer at a
//! time, only after the estimate has carried the next layer with room to
//! spare for [`UP_AFTER`], and not within [`SETTLE`] of going down (so a
//! link at the edge of two layers does not flap between them). The switch
//! itself happens in the stream's fan-out, at a keyframe of the new layer.
//!
//! Sans-IO: estimates and times in, a layer out; tested on virtual time.

use std::time::{Duration, Instant};

use crate::stream::{LayerId, Want};

/// How a viewer of a simulcast stream gets its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerMode {
    /// By its bandwidth estimate (the default).
    Auto,
    /// Always this one (the nearest live one while it is paused).
    Pinned(Want),
}

/// Share of the estimate video may use (the rest: audio, retransmissions,
/// RTP and transport overhead).
const VIDEO_SHARE: f64 = 0.85;

/// Going up needs the next layer to fit this many times over.
const UP_MARGIN: f64 = 1.2;

/// How long the next layer must fit before the viewer goes up.
pub const UP_AFTER: Duration = Duration::from_secs(2);

/// No step up within this long after a step down.
pub const SETTLE: Duration = Duration::from_secs(4);

/// Loss at or above this share of packets means the link no longer carries
/// the layer (GCC's threshold for cutting the rate).
const LOSS_HIGH: f64 = 0.10;

/// Loss above this share holds the viewer where it is (GCC's threshold for
/// raising the rate).
const LOSS_LOW: f64 = 0.02;

/// A loss report is about the layer sent this long before it at most; older
/// ones are not acted on.
const LOSS_FRESH: Duration = Duration::from_secs(2);

/// Loss reported within this long after a switch is the old layer's, not
/// the new one's.
const LOSS_AFTER_SWITCH: Duration = Duration::from_millis(1500);

/// A round trip this much longer than the path's shortest means a queue is
/// building on it (the sender reports the round trip is measured with wait
/// in it): a step down, before the queue overflows into loss.
const QUEUE_DELAY: Duration = Duration::from_millis(150);

/// The path's shortest round trip is the least of this many recent ones.
const RTT_HISTORY: usize = 20;

/// A layer as the adapter sees it: its index and bitrate (bits per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The layer.
    pub id: LayerId,
    /// What it sends now.
    pub bps: f64,
}

impl Candidate {
    /// The candidates from a stream's live layers, smallest first, as
    /// `LiveStream::live_layer_rates` gives them.
    pub fn live(layers: &[(LayerId, f64)]) -> Vec<Candidate> {
        layers
            .iter()
            .map(|&(id, bps)| Candidate { id, bps })
            .collect()
    }
}

/// One automatic viewer's layer choice.
#[derive(Debug, Clone, Default)]
pub struct Adapter {
    target: Option<LayerId>,
    /// Since when the next layer up has fitted.
    fits_since: Option<Instant>,
    last_down: Option<Instant>,
    last_switch: Option<Instant>,
    /// The layer before the last switch.
    previous: Option<LayerId>,
    /// The latest heavy loss the viewer reported: when, the share of
    /// packets lost, and the layer being sent when they were.
    loss: Option<Loss>,
    /// Recent round trips, oldest first.
    rtts: std::collections::VecDeque<Duration>,
    /// When the latest round trip showed a queue.
    queued_at: Option<Instant>,
}

/// A loss report, and the layer it is about.
#[derive(Debug, Clone, Copy)]
struct Loss {
    at: Instant,
    share: f64,
    layer: LayerId,
}

impl Adapter {
    /// An adapter with no layer chosen yet.
    pub fn new() -> Adapter {
        Adapter::default()
    }

    /// The layer chosen last.
    #[cfg(test)]
    pub fn target(&self) -> Option<LayerId> {
        self.target
    }

    /// The viewer reported losing `share` of the video packets (its receiver
    /// reports, averaged since the last call) at `now`.
    pub fn on_loss(&mut self, now: Instant, share: f64) {
        let after_switch = self
            .last_switch
            .is_some_and(|t| now.saturating_duration_since(t) < LOSS_AFTER_SWITCH);
        // Shortly after a switch the reports still count the old layer's packets.
        let layer = if after_switch {
            self.previous
        } else {
            self.target
        };
        self.loss = layer.map(|layer| Loss {
            at: now,
            share,
            layer,
        });
    }

    /// The viewer's latest receiver report measured a round trip of `rtt`
    /// (read at `now`).
    pub fn on_rtt(&mut self, now: Instant, rtt: Duration) {
        if self.rtts.back() == Some(&rtt) {
            // The same report again (stats come more often than reports).
            return;
        }
        let shortest = self.rtts.iter().min().copied();
        if self.rtts.len() == RTT_HISTORY {
            self.rtts.pop_front();
        }
        self.rtts.push_back(rtt);
        if shortest.is_some_and(|s| rtt > s + QUEUE_DELAY) {
            self.queued_at = Some(now);
        }
    }

    /// Whether a queue showed in the round trip since the last switch, recently.
    fn queued(&self, now: Instant) -> bool {
        self.queued_at.is_some_and(|t| {
            now.saturating_duration_since(t) < LOSS_FRESH && self.last_switch.is_none_or(|s| t > s)
        })
    }

    /// The latest loss report, if recent.
    fn recent_loss(&self, now: Instant) -> Option<Loss> {
        self.loss
            .filter(|l| now.saturating_duration_since(l.at) < LOSS_FRESH)
    }

    /// Whether the path is congested now: heavy loss, or a step down shortly
    /// before (not the moment to probe for more).
    pub fn congested(&self, now: Instant) -> bool {
        let lossy = self.recent_loss(now).is_some_and(|l| l.share > LOSS_LOW) || self.queued(now);
        let stepped_down = self
            .last_down
            .is_some_and(|t| now.saturating_duration_since(t) < SETTLE);
        lossy || stepped_down
    }

    /// The bandwidth estimate is `estimate_bps` at `now` and the stream's live
    /// layers are `layers` (smallest first): the layer to be on, when it
    /// changes.
    pub fn decide(
        &mut self,
        now: Instant,
        estimate_bps: f64,
        layers: &[Candidate],
    ) -> Option<LayerId> {
        if layers.is_empty() {
            return None;
        }
        let mut budget = estimate_bps * VIDEO_SHARE;
        let at = self.position(layers);
        let loss = self.recent_loss(now);
        if let Some(l) = loss
            && l.share >= LOSS_HIGH
            && let Some(sent) = layers.iter().find(|c| c.id == l.layer)
        {
            // What arrives of the layer that was sent is what the link carries.
            budget = budget.min(sent.bps * (1.0 - l.share));
        }
        let loss = loss.map_or(0.0, |l| l.share);
        if let Some(at) = at
            && at > 0
            && self.queued(now)
        {
            // A queue is building: at most the layer below.
            budget = budget.min(layers[at - 1].bps);
        }
        // The largest layer the budget carries (the smallest if none).
        let fitting = layers.iter().rposition(|l| l.bps <= budget).unwrap_or(0);
        let Some(at) = at else {
            // First choice, or the layer we were on is gone: what fits now.
            return self.switch(now, layers[fitting].id, false);
        };
        if fitting < at {
            // Acted on: the next report is about the layer switched to.
            self.loss = None;
            self.fits_since = None;
            return self.switch(now, layers[fitting].id, true);
        }
        let Some(next) = layers.get(at + 1) else {
            self.fits_since = None;
            return None;
        };
        if next.bps * UP_MARGIN > budget || loss > LOSS_LOW {
            self.fits_since = None;
            return None;
        }
        let since = *self.fits_since.get_or_insert(now);
        let settled = self
            .last_down
            .is_none_or(|t| now.saturating_duration_since(t) >= SETTLE);
        if now.saturating_duration_since(since) >= UP_AFTER && settled {
            self.fits_since = None;
            return self.switch(now, next.id, false);
        }
        None
    }

    /// Where the layer it is on stands in `layers` (`None` before its first
    /// choice, or once that layer is gone).
    fn position(&self, layers: &[Candidate]) -> Option<usize> {
        self.target
            .and_then(|t| layers.iter().position(|l| l.id == t))
    }

    fn switch(&mut self, now: Instant, to: LayerId, down: bool) -> Option<LayerId> {
        if down {
            self.last_down = Some(now);
        }
        if self.target == Some(to) {
            return None;
        }
        self.previous = self.target;
        self.target = Some(to);
        self.last_switch = Some(now);
        Some(to)
    }

    /// The rates to tell the bandwidth estimator at `now`, in bits per
    /// second: (`minimum`: the next layer up, which padding keeps the path
    /// probed for, none on the top layer; `desired`: the top layer with the
    /// same margin as going up). While the path is congested: no padding
    /// and no more than the layer being sent (a probe or padding would only
    /// add to the queue, and the estimate lags behind it).
    pub fn probe_rates(&self, now: Instant, layers: &[Candidate]) -> Option<(f64, f64)> {
        let top = layers.last()?;
        let desired = top.bps * UP_MARGIN / VIDEO_SHARE;
        let at = self.position(layers).unwrap_or(0);
        if self.congested(now) {
            return Some((0.0, layers[at].bps / VIDEO_SHARE));
        }
        // On the top layer there is nothing to pad for: padding would only
        // take the room a slower link needs to show it is slower.
        let minimum = layers.get(at + 1).map_or(0.0, |next| {
            (next.bps * UP_MARGIN / VIDEO_SHARE).min(desired)
        });
        Some((minimum, desired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three layers as a browser sends them from 720p: 150, 500, 1,500 kbit/s.
    fn layers() -> Vec<Candidate> {
        [(2, 150e3), (1, 500e3), (0, 1500e3)]
            .map(|(id, bps)| Candidate { id, bps })
            .to_vec()
    }

    /// Feeds one estimate per 100 ms of virtual time for `secs`; the layer
    /// the adapter is on at the end and when it got there.
    fn run(a: &mut Adapter, t: &mut Instant, secs: f64, estimate: f64) -> Vec<(f64, LayerId)> {
        let mut changes = Vec::new();
        let start = *t;
        for _ in 0..(secs * 10.0) as usize {
            *t += Duration::from_millis(100);
            if let Some(l) = a.decide(*t, estimate, &layers()) {
                changes.push((t.duration_since(start).as_secs_f64(), l));
            }
        }
        changes
    }

    #[test]
    fn starts_on_what_fits_and_climbs_one_layer_at_a_time() {
        let mut a = Adapter::new();
        let mut t = Instant::now();
        assert_eq!(
            a.decide(t, 1_000e3, &layers()),
            Some(1),
            "850 kbit/s fits mid"
        );
        let changes = run(&mut a, &mut t, 5.0, 3_000e3);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let (when, layer) = changes[0];
        assert_eq!(layer, 0);
        assert!((2.0..=2.15).contains(&when), "after UP_AFTER: {when}");
    }

    #[test]
    fn goes_down_at_once_and_waits_to_come_back() {
        let mut a = Adapter::new();
        let mut t = Instant::now();
        assert_eq!(a.decide(t, 5_000e3, &layers()), Some(0));
        // The link drops to 400 kbit/s: straight to the low layer.
        let changes = run(&mut a, &mut t, 0.1, 400e3);
        assert_eq!(changes, [(0.1, 2)]);
        // It recovers: mid after SETTLE (not UP_AFTER), then high UP_AFTER later.
        let changes = run(&mut a, &mut t, 10.0, 5_000e3);
        let layers: Vec<LayerId> = changes.iter().map(|c| c.1).collect();
        assert_eq!(layers, [1, 0], "{changes:?}");
        assert!(
            changes[0].0 >= SETTLE.as_secs_f64() - 0.1 - 1e-9,
            "{changes:?}"
        );
        assert!(changes[1].0 - changes[0].0 >= UP_AFTER.as_secs_f64() - 1e-9);
    }

    #[test]
    fn heavy_loss_moves_down_before_the_estimate_falls() {
        let mut a = Adapter::new();
        let mut t = Instant::now();
        assert_eq!(a.decide(t, 5_000e3, &layers()), Some(0));
        t += Duration::from_secs(3);
        // Half the top layer's packets are lost: the link carries ~750 kbit/s.
        a.on_loss(t, 0.5);
        assert_eq!(a.decide(t, 5_000e3, &layers()), Some(1));
        // While congested, no padding and no probing beyond the layer sent.
        assert_eq!(
            a.probe_rates(t, &layers()),
            Some((0.0, 500e3 / VIDEO_SHARE))
        );
        // The next report is still about the top layer: 40 % of it lost
        // leaves 900 kbit/s, which carries mid.
        t += Duration::from_millis(500);
        a.on_loss(t, 0.4);
        assert_eq!(a.decide(t, 5_000e3, &layers()), None);
        // 80 % of it lost: not even mid fits.
        t += Duration::from_millis(500);
        a.on_loss(t, 0.8);
        assert_eq!(a.decide(t, 5_000e3, &layers()), Some(2));
        // Light loss is no reason to go down, but holds the viewer where it is.
        t += Duration::from_secs(10);
        a.on_loss(t, 0.05);
        for _ in 0..30 {
            t += Duration::from_millis(100);
            assert_eq!(a.decide(t, 5_000e3, &layers()), None);
        }
        // Once the loss is gone, up again, a layer at a time.
        t += Duration::from_secs(3);
        let changes = run(&mut a, &mut t, 5.0, 5_000e3);
        assert_eq!(changes.iter().map(|c| c.1).collect::<Vec<_>>(), [1, 0]);
    }

    #[test]
    fn a_queue_in_the_round_trip_steps_down_once() {
        let mut a = Adapter::new();
        let mut t = Instant::now();
        assert_eq!(a.decide(t, 5_000e3, &layers()), Some(0));
        for _ in 0..5 {
            t += Duration::from_millis(500);
            a.on_rtt(
                t,
                Duration::from_millis(20 + (t.elapsed().as_millis() % 30) as u64),
            );
            assert_eq!(a.decide(t, 5_000e3, &layers()), None, "jitter is no queue");
        }
        t += Duration::from_millis(500);
        a.on_rtt(t, Duration::from_millis(260));
        assert_eq!(a.decide(t, 5_000e3, &layers()), Some(1));
        // The same report is not held against the new layer.
        t += Duration::from_millis(200);
        assert_eq!(a.decide(t, 5_000e3, &layers()), None);
        // A queue still there later: one more step.
        t += Duration::from_millis(800);
        a.on_rtt(t, Duration::from_millis(300));
        assert_eq!(a.decide(t, 5_000e3, &layers()), Some(2));
    }

    #[test]
    fn an_estimate_at_the_edge_does_not_flap() {
        let mut a = Adapter::new();
        let mut t = Instant::now();
        // 700 kbit/s carries mid (500 ≤ 595) but not mid with margin to high.
        a.decide(t, 700e3, &layers());
        let mut changes = Vec::new();
        for i in 0..200 {
            // ±10 % around 700 kbit/s.
            let e = if i % 2 == 0 { 770e3 } else { 630e3 };
            t += Duration::from_millis(100);
            changes.extend(a.decide(t, e, &layers()));
        }
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(a.target(), Some(1));
    }

    #[test]
    fn a_layer_that_disappears_is_left_for_what_fits() {
        let mut a = Adapter::new();
        let t = Instant::now();
        a.decide(t, 5_000e3, &layers());
        let without_top: Vec<Candidate> = layers().into_iter().take(2).collect();
        assert_eq!(a.decide(t, 5_000e3, &without_top), Some(1));
    }

    #[test]
    fn the_estimator_is_asked_for_the_next_layer_and_the_top() {
        let mut a = Adapter::new();
        let t = Instant::now();
        a.decide(t, 400e3, &layers());
        let (minimum, desired) = a.probe_rates(t, &layers()).unwrap();
        assert_eq!(minimum.round(), (500e3 * UP_MARGIN / VIDEO_SHARE).round());
        assert_eq!(desired.round(), (1500e3 * UP_MARGIN / VIDEO_SHARE).round());
        // On the top layer: no padding.
        let mut top = Adapter::new();
        assert_eq!(top.decide(t, 5_000e3, &layers()), Some(0));
        assert_eq!(top.probe_rates(t, &layers()).map(|r| r.0), Some(0.0));
    }
}
