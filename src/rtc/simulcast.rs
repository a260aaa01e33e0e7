//! A simulcast publisher's video layers on one timeline.
//!
//! Each layer is its own RTP stream with its own random timestamp offset
//! (RFC 3550), though every layer encodes the same captured pictures. The
//! hub's sinks switch layers at keyframes, so castgate puts every layer on
//! one timeline once, at ingest: the first layer heard is the reference,
//! and another layer's offset to it comes from the two layers' RTCP sender
//! reports (the same wall clock and capture clock behind both). Until both
//! have reported, the offset is estimated from arrival times, and replaced
//! by the reports' as soon as they are in. Viewers, the recording and the
//! restreams then see one continuous stream whatever layer they are on.
//!
//! Sans-IO: times in, times out; unit-tested on made-up clocks.

use std::time::{Instant, SystemTime};

use crate::media::SenderClock;

/// Added to the reference layer's times so that a layer whose pictures
/// started a little before the reference's first one never goes below zero
/// (times are unsigned); viewers send the low 32 bits, which it leaves as
/// they were.
const BASE: i64 = 1 << 32;

/// An offset that the sender reports put less than this (20 ms at 90 kHz)
/// from the one in use is kept: rounding and jitter, not a change, and a
/// timeline must not wobble. A larger difference (an estimate that was off,
/// a layer whose encoder restarted) is followed, once.
const STEADY_WITHIN: i64 = 1800;

/// An estimated time this close (10 ms) to the reference's last frame is
/// that frame's picture: browsers encode every layer from the same capture
/// and send them together.
const SAME_PICTURE_WITHIN: f64 = 0.010;

#[derive(Debug, Clone, Default)]
struct Layer {
    /// Added to the layer's RTP times.
    offset: Option<i64>,
    /// The layer's last frame: its RTP time and arrival.
    last: Option<(u64, Instant)>,
    /// The layer's latest sender report.
    report: Option<SenderClock>,
}

/// Puts every layer of one simulcast video track on the reference layer's
/// timeline.
#[derive(Debug, Clone)]
pub struct LayerClocks {
    clock_rate: u32,
    layers: Vec<Layer>,
    reference: Option<usize>,
}

impl LayerClocks {
    /// Clocks for `count` layers of a track at `clock_rate` Hz.
    pub fn new(count: usize, clock_rate: u32) -> LayerClocks {
        LayerClocks {
            clock_rate: clock_rate.max(1),
            layers: vec![Layer::default(); count],
            reference: None,
        }
    }

    /// Maps a frame of `layer` (RTP time `rtp`, arrived at `arrival`, the
    /// layer's latest sender report `report`) onto the common timeline: its
    /// time and its report, rebased. `None` for a layer out of range.
    pub fn rebase(
        &mut self,
        layer: usize,
        rtp: u64,
        arrival: Instant,
        report: Option<SenderClock>,
    ) -> Option<(u64, Option<SenderClock>)> {
        if layer >= self.layers.len() {
            return None;
        }
        if report.is_some() {
            self.layers[layer].report = report;
        }
        let reference = *self.reference.get_or_insert(layer);
        let offset = if layer == reference {
            BASE
        } else {
            self.offset_of(layer, reference, rtp, arrival)
        };
        let l = &mut self.layers[layer];
        l.offset = Some(offset);
        l.last = Some((rtp, arrival));
        let shift = |t: u64| (t as i64).saturating_add(offset).max(0) as u64;
        let report = l.report.map(|r| SenderClock {
            ntp_time: r.ntp_time,
            rtp_time: shift(r.rtp_time),
        });
        Some((shift(rtp), report))
    }

    /// The offset of `layer` to the reference's timeline: from the sender
    /// reports of both when they are in, else estimated once from when its
    /// first frame arrived against the reference's last.
    fn offset_of(&mut self, layer: usize, reference: usize, rtp: u64, arrival: Instant) -> i64 {
        let current = self.layers[layer].offset;
        let r = &self.layers[reference];
        if let (Some(mine), Some(theirs)) = (self.layers[layer].report, r.report) {
            // The reference's RTP time at this layer's report instant.
            let secs = signed_secs(mine.ntp_time, theirs.ntp_time);
            let at = theirs.rtp_time as f64 + secs * f64::from(self.clock_rate);
            let offset = (at.round() as i64)
                .saturating_add(BASE)
                .saturating_sub(mine.rtp_time as i64);
            let keep = current.is_some_and(|c| (c - offset).abs() < STEADY_WITHIN);
            if !keep {
                return offset;
            }
        }
        if let Some(c) = current {
            return c;
        }
        match r.last {
            Some((ref_rtp, ref_arrival)) => {
                let mut secs = signed_instants(arrival, ref_arrival);
                if secs.abs() <= SAME_PICTURE_WITHIN {
                    secs = 0.0;
                }
                let at = ref_rtp as f64 + secs * f64::from(self.clock_rate);
                (at.round() as i64)
                    .saturating_add(BASE)
                    .saturating_sub(rtp as i64)
            }
            None => BASE,
        }
    }
}

/// `a − b` in seconds, negative when `a` is earlier.
fn signed_secs(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// `a − b` in seconds, negative when `a` is earlier.
fn signed_instants(a: Instant, b: Instant) -> f64 {
    if a >= b {
        a.duration_since(b).as_secs_f64()
    } else {
        -b.duration_since(a).as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A layer's stream: its random RTP offset on a shared capture clock.
    struct Sender {
        offset: u64,
    }

    impl Sender {
        fn rtp(&self, capture_ms: u64) -> u64 {
            self.offset + capture_ms * 90
        }
        fn report(&self, epoch: SystemTime, capture_ms: u64) -> SenderClock {
            SenderClock {
                ntp_time: epoch + Duration::from_millis(capture_ms),
                rtp_time: self.rtp(capture_ms),
            }
        }
    }

    #[test]
    fn layers_share_the_reference_timeline_once_both_have_reported() {
        let t0 = Instant::now();
        let epoch = SystemTime::now();
        let (a, b) = (
            Sender {
                offset: 3_000_000_000,
            },
            Sender { offset: 17 },
        );
        let mut clocks = LayerClocks::new(2, 90_000);
        // Frame captured at 0 ms on both layers, b arriving 3 ms later.
        let (ta, _) = clocks.rebase(0, a.rtp(0), t0, None).unwrap();
        let (tb, _) = clocks
            .rebase(1, b.rtp(0), t0 + Duration::from_millis(3), None)
            .unwrap();
        // Estimated from arrival: within 10 ms, the same picture.
        assert_eq!(tb, ta);
        // Both report: the same capture instant gets the same time.
        let at = |ms| t0 + Duration::from_millis(ms);
        clocks
            .rebase(0, a.rtp(1000), at(1000), Some(a.report(epoch, 990)))
            .unwrap();
        let (tb, report) = clocks
            .rebase(1, b.rtp(1000), at(1004), Some(b.report(epoch, 995)))
            .unwrap();
        let (ta, _) = clocks.rebase(0, a.rtp(1000), at(1000), None).unwrap();
        assert_eq!(ta, tb);
        let report = report.unwrap();
        assert_eq!(report.rtp_time, ta - 5 * 90, "the report is rebased too");
        // The reference keeps its own times, lifted by BASE.
        assert_eq!(ta, a.rtp(1000) + (1 << 32));
    }

    #[test]
    fn a_steady_offset_does_not_wobble_with_report_rounding() {
        let t0 = Instant::now();
        let epoch = SystemTime::now();
        let (a, b) = (
            Sender { offset: 5 },
            Sender {
                offset: 4_000_000_000,
            },
        );
        let mut clocks = LayerClocks::new(2, 90_000);
        clocks
            .rebase(0, a.rtp(0), t0, Some(a.report(epoch, 0)))
            .unwrap();
        let (first, _) = clocks
            .rebase(1, b.rtp(0), t0, Some(b.report(epoch, 0)))
            .unwrap();
        // A later report 2 ms off (rounding, jitter): the offset stays.
        let mut late = b.report(epoch, 500);
        late.ntp_time += Duration::from_millis(2);
        let (t, _) = clocks.rebase(1, b.rtp(0), t0, Some(late)).unwrap();
        assert_eq!(t, first);
        // A jump (the layer's encoder restarted with a new offset) is followed.
        let c = Sender { offset: 1_000 };
        let (t, _) = clocks
            .rebase(1, c.rtp(600), t0, Some(c.report(epoch, 600)))
            .unwrap();
        let (ta, _) = clocks.rebase(0, a.rtp(600), t0, None).unwrap();
        assert_eq!(t, ta);
    }

    #[test]
    fn an_estimate_that_was_off_is_corrected_by_the_reports() {
        let t0 = Instant::now();
        let epoch = SystemTime::now();
        let (a, b) = (Sender { offset: 90_000 }, Sender { offset: 2_000_000 });
        let mut clocks = LayerClocks::new(2, 90_000);
        let at = |ms| t0 + Duration::from_millis(ms);
        clocks.rebase(0, a.rtp(0), at(0), None).unwrap();
        // Picture 0 of layer b arrives 40 ms late (a slow encoder): taken
        // for a later picture.
        let (tb, _) = clocks.rebase(1, b.rtp(0), at(40), None).unwrap();
        let (ta, _) = clocks.rebase(0, a.rtp(0), at(0), None).unwrap();
        assert_eq!(tb - ta, 40 * 90);
        // The reports put it right.
        clocks
            .rebase(0, a.rtp(33), at(33), Some(a.report(epoch, 33)))
            .unwrap();
        let (tb, _) = clocks
            .rebase(1, b.rtp(33), at(73), Some(b.report(epoch, 33)))
            .unwrap();
        let (ta, _) = clocks.rebase(0, a.rtp(33), at(33), None).unwrap();
        assert_eq!(tb, ta);
    }

    #[test]
    fn a_layer_out_of_range_is_refused() {
        let mut clocks = LayerClocks::new(2, 90_000);
        assert!(clocks.rebase(2, 0, Instant::now(), None).is_none());
    }
}
