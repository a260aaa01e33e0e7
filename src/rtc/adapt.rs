//! Which simulcast layer an automatic viewer gets: the largest one its
//! connection carries, by the bandwidth estimate of its session (str0m's
//! transport-wide congestion control).
//!
//! Down at once when the estimate no longer carries the layer (a queue is
//! building on the viewer's path, a freeze is near); up one layer at a
//! time, only after the estimate has carried the next layer with room to
//! spare for [`UP_AFTER`], and not within [`SETTLE`] of going down (so a
//! link at the edge of two layers does not flap between them). The switch
//! itself happens in the stream's fan-out, at a keyframe of the new layer.
//!
//! Sans-IO: estimates and times in, a layer out; tested on virtual time.

use std::time::{Duration, Instant};

use crate::stream::{LayerId, LayerInfo, Want};

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

/// A layer as the adapter sees it: its index and bitrate (bits per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The layer.
    pub id: LayerId,
    /// What it sends now.
    pub bps: f64,
}

impl Candidate {
    /// The live layers of a stream, smallest first.
    pub fn live(layers: &[LayerInfo]) -> Vec<Candidate> {
        layers
            .iter()
            .filter(|l| l.active)
            .map(|l| Candidate {
                id: l.id,
                bps: l.bitrate_kbps * 1000.0,
            })
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
        let budget = estimate_bps * VIDEO_SHARE;
        // The largest layer the budget carries (the smallest if none).
        let fitting = layers.iter().rposition(|l| l.bps <= budget).unwrap_or(0);
        let Some(at) = self
            .target
            .and_then(|t| layers.iter().position(|l| l.id == t))
        else {
            // First choice, or the layer we were on is gone: what fits now.
            return self.switch(now, layers[fitting].id, false);
        };
        if fitting < at {
            self.fits_since = None;
            return self.switch(now, layers[fitting].id, true);
        }
        let Some(next) = layers.get(at + 1) else {
            self.fits_since = None;
            return None;
        };
        if next.bps * UP_MARGIN > budget {
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

    fn switch(&mut self, now: Instant, to: LayerId, down: bool) -> Option<LayerId> {
        if down {
            self.last_down = Some(now);
        }
        if self.target == Some(to) {
            return None;
        }
        self.target = Some(to);
        Some(to)
    }

    /// The rates to tell the bandwidth estimator, in bits per second:
    /// (`minimum`: the next layer up, which padding keeps the path probed
    /// for; `desired`: the top layer with the same margin as going up).
    pub fn probe_rates(&self, layers: &[Candidate]) -> Option<(f64, f64)> {
        let top = layers.last()?;
        let desired = top.bps * UP_MARGIN / VIDEO_SHARE;
        let at = self
            .target
            .and_then(|t| layers.iter().position(|l| l.id == t))
            .unwrap_or(0);
        let next = layers.get(at + 1).unwrap_or(&layers[at]);
        let minimum = (next.bps * UP_MARGIN / VIDEO_SHARE).min(desired);
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
        a.decide(Instant::now(), 400e3, &layers());
        let (minimum, desired) = a.probe_rates(&layers()).unwrap();
        assert_eq!(minimum.round(), (500e3 * UP_MARGIN / VIDEO_SHARE).round());
        assert_eq!(desired.round(), (1500e3 * UP_MARGIN / VIDEO_SHARE).round());
    }
}
