//! Where each frame goes on a recording's timeline, as a sans-IO state machine.
//!
//! Every track runs on its own RTP clock, so within a track the spacing of
//! frames comes from RTP time (no arrival jitter). Tracks are placed relative
//! to each other first by when their first frame arrived and, as soon as both
//! have sent an RTCP sender report, by the sender's own clock (NTP ↔ RTP), which
//! is what keeps lips in sync whatever the network did. Later reports keep
//! correcting the placement, so clock drift over hours and a late first report
//! are absorbed; a jump of more than [`MAX_CORRECTION_US`] is taken for a jump
//! of the sender's wall clock and ignored.
//!
//! [`Interleaver`] then releases frames in timestamp order across tracks,
//! holding none longer than [`Interleaver::new`]'s limit, and never lets a
//! timestamp go backwards in the file.

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use crate::media::{Frame, MediaKind, SenderClock};

/// A sender-report correction larger than this is treated as a jump in the
/// sender's wall clock, not as drift, and ignored.
pub const MAX_CORRECTION_US: i64 = 1_000_000;

/// Corrections smaller than this are not worth a discontinuity.
const MIN_CORRECTION_US: i64 = 2_000;

#[derive(Debug, Clone, Copy)]
struct Anchor {
    rtp: u64,
    us: i64,
}

#[derive(Debug, Clone, Default)]
struct Track {
    clock_rate: u32,
    anchor: Option<Anchor>,
    sender: Option<SenderClock>,
    last_us: Option<i64>,
}

impl Track {
    fn at(&self, rtp: u64) -> Option<i64> {
        let a = self.anchor?;
        let rate = i128::from(self.clock_rate.max(1));
        let delta = i128::from(rtp) - i128::from(a.rtp);
        Some(a.us + (delta * 1_000_000 / rate) as i64)
    }

    /// Sender wall-clock time of this track's anchor, in µs since the epoch.
    fn anchor_ntp_us(&self) -> Option<i128> {
        let a = self.anchor?;
        let sr = self.sender?;
        let ntp = sr.ntp_time.duration_since(SystemTime::UNIX_EPOCH).ok()?;
        let rate = i128::from(self.clock_rate.max(1));
        let delta = i128::from(a.rtp) - i128::from(sr.rtp_time);
        Some(ntp.as_micros() as i128 + delta * 1_000_000 / rate)
    }
}

/// Maps frames of one audio and one video track to microseconds since the
/// start of the recording.
#[derive(Debug, Clone)]
pub struct Timeline {
    origin: Instant,
    video: Track,
    audio: Track,
    /// Number of sender-report corrections applied (for tests and logs).
    pub corrections: u32,
}

impl Timeline {
    /// A timeline whose zero is `origin` (the arrival of the first frame kept).
    pub fn new(origin: Instant) -> Timeline {
        Timeline {
            origin,
            video: Track::default(),
            audio: Track::default(),
            corrections: 0,
        }
    }

    fn track(&mut self, kind: MediaKind) -> &mut Track {
        match kind {
            MediaKind::Video => &mut self.video,
            MediaKind::Audio => &mut self.audio,
        }
    }

    /// Where `frame` would be placed, without placing it (None before its
    /// track's first frame).
    pub fn peek(&self, frame: &Frame) -> Option<i64> {
        let t = match frame.kind() {
            MediaKind::Video => &self.video,
            MediaKind::Audio => &self.audio,
        };
        t.at(frame.rtp_time)
    }

    /// The frame's time in µs from the start, never before the track's previous frame.
    pub fn place(&mut self, frame: &Frame) -> i64 {
        let origin = self.origin;
        let kind = frame.kind();
        let t = self.track(kind);
        t.clock_rate = frame.params.clock_rate;
        if t.anchor.is_none() {
            let us = frame.arrival.saturating_duration_since(origin).as_micros() as i64;
            t.anchor = Some(Anchor {
                rtp: frame.rtp_time,
                us,
            });
        }
        let mut sr_changed = false;
        if let Some(sr) = frame.sender_clock
            && t.sender.is_none_or(|old| sr.ntp_time > old.ntp_time)
        {
            t.sender = Some(sr);
            sr_changed = true;
        }
        if sr_changed {
            self.align();
        }
        let t = self.track(kind);
        let mut us = t.at(frame.rtp_time).unwrap_or(0).max(0);
        if let Some(last) = t.last_us
            && us <= last
        {
            us = last + 1;
        }
        t.last_us = Some(us);
        us
    }

    /// Sets up both tracks from frames held back at the start of a recording:
    /// anchors from each track's first frame, sender clocks from the newest
    /// report among them, so the very first frames are placed in sync.
    pub fn prime(&mut self, frames: &[std::sync::Arc<Frame>]) {
        let origin = self.origin;
        for f in frames {
            let t = self.track(f.kind());
            t.clock_rate = f.params.clock_rate;
            if t.anchor.is_none() {
                t.anchor = Some(Anchor {
                    rtp: f.rtp_time,
                    us: f.arrival.saturating_duration_since(origin).as_micros() as i64,
                });
            }
            if let Some(sr) = f.sender_clock
                && t.sender.is_none_or(|old| sr.ntp_time > old.ntp_time)
            {
                t.sender = Some(sr);
            }
        }
        self.align();
    }

    /// Whether a track has had a sender report.
    pub fn has_sender_clock(frames: &[std::sync::Arc<Frame>], kind: MediaKind) -> bool {
        frames
            .iter()
            .any(|f| f.kind() == kind && f.sender_clock.is_some())
    }

    /// Moves one track so that both agree with the sender's clock. Only ever
    /// moves a track later (a short gap), never earlier, so no timestamp in
    /// the file goes backwards.
    fn align(&mut self) {
        let (Some(v), Some(a)) = (self.video.anchor_ntp_us(), self.audio.anchor_ntp_us()) else {
            return;
        };
        let (Some(va), Some(aa)) = (self.video.anchor, self.audio.anchor) else {
            return;
        };
        // Where the audio anchor belongs relative to the video anchor.
        let want = va.us as i128 + (a - v);
        let correction = (want - aa.us as i128) as i64;
        if correction.abs() < MIN_CORRECTION_US || correction.abs() > MAX_CORRECTION_US {
            return;
        }
        let (track, shift) = if correction > 0 {
            (&mut self.audio, correction)
        } else {
            (&mut self.video, -correction)
        };
        if let Some(anchor) = track.anchor.as_mut() {
            anchor.us += shift;
            self.corrections += 1;
        }
    }
}

/// A frame with its place on the timeline.
#[derive(Debug, Clone)]
pub struct Placed {
    /// Microseconds since the start of the recording.
    pub us: i64,
    /// The frame.
    pub frame: std::sync::Arc<Frame>,
}

/// Releases frames of both tracks in timestamp order.
#[derive(Debug)]
pub struct Interleaver {
    hold_us: i64,
    video: VecDeque<Placed>,
    audio: VecDeque<Placed>,
    last_out: i64,
}

impl Interleaver {
    /// Holds a frame at most `hold_us` (of timeline time) waiting for the other track.
    pub fn new(hold_us: i64) -> Interleaver {
        Interleaver {
            hold_us,
            video: VecDeque::new(),
            audio: VecDeque::new(),
            last_out: 0,
        }
    }

    /// Adds a placed frame and returns what can be written now, in order.
    pub fn push(&mut self, p: Placed, out: &mut Vec<Placed>) {
        let newest = p.us;
        match p.frame.kind() {
            MediaKind::Video => self.video.push_back(p),
            MediaKind::Audio => self.audio.push_back(p),
        }
        self.release(newest, out);
    }

    fn release(&mut self, newest: i64, out: &mut Vec<Placed>) {
        loop {
            let next = match (self.video.front(), self.audio.front()) {
                (Some(v), Some(a)) => {
                    if v.us <= a.us {
                        &mut self.video
                    } else {
                        &mut self.audio
                    }
                }
                (Some(v), None) if newest - v.us >= self.hold_us => &mut self.video,
                (None, Some(a)) if newest - a.us >= self.hold_us => &mut self.audio,
                _ => return,
            };
            if let Some(mut p) = next.pop_front() {
                p.us = p.us.max(self.last_out);
                self.last_out = p.us;
                out.push(p);
            }
        }
    }

    /// Everything still held, in order (end of recording).
    pub fn drain(&mut self, out: &mut Vec<Placed>) {
        self.release(i64::MAX, out);
        while let Some(mut p) = self.video.pop_front().or_else(|| self.audio.pop_front()) {
            p.us = p.us.max(self.last_out);
            self.last_out = p.us;
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Codec, CodecParams};
    use std::sync::Arc;
    use std::time::Duration;

    fn frame(codec: Codec, rtp: u64, arrival: Instant, sr: Option<SenderClock>) -> Frame {
        let rate = if codec == Codec::Opus { 48_000 } else { 90_000 };
        Frame {
            params: CodecParams::new(codec, rate),
            keyframe: true,
            rtp_time: rtp,
            arrival,
            sender_clock: sr,
            after_loss: false,
            layer: 0,
            data: Arc::from(vec![0u8]),
            rtp_payloads: Vec::new(),
        }
    }

    #[test]
    fn rtp_spacing_ignores_arrival_jitter() {
        let t0 = Instant::now();
        let mut tl = Timeline::new(t0);
        assert_eq!(tl.place(&frame(Codec::Vp8, 1000, t0, None)), 0);
        // Arrives 70 ms late, but RTP says 33.3 ms.
        let us = tl.place(&frame(
            Codec::Vp8,
            4000,
            t0 + Duration::from_millis(70),
            None,
        ));
        assert_eq!(us, 33_333);
    }

    #[test]
    fn sender_reports_fix_a_delayed_audio_path() {
        let t0 = Instant::now();
        let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut tl = Timeline::new(t0);
        // Video and audio captured at the same instant (sender time `epoch`),
        // but audio arrives 120 ms later than video.
        let v_sr = SenderClock {
            ntp_time: epoch,
            rtp_time: 90_000,
        };
        let a_sr = SenderClock {
            ntp_time: epoch,
            rtp_time: 48_000,
        };
        assert_eq!(tl.place(&frame(Codec::Vp8, 90_000, t0, Some(v_sr))), 0);
        let a0 = tl.place(&frame(
            Codec::Opus,
            48_000,
            t0 + Duration::from_millis(120),
            None,
        ));
        assert_eq!(a0, 120_000, "before a sender report, arrival decides");
        // The first audio report arrives: audio moves to where the sender says.
        let a1 = tl.place(&frame(
            Codec::Opus,
            48_000 + 960,
            t0 + Duration::from_millis(140),
            Some(a_sr),
        ));
        assert_eq!(a1, 140_000, "audio kept its place…");
        let v1 = tl.place(&frame(
            Codec::Vp8,
            93_000,
            t0 + Duration::from_millis(150),
            Some(v_sr),
        ));
        assert_eq!(
            v1 - a1,
            33_333 - 20_000,
            "…and video moved later to line up with it"
        );
        assert_eq!(tl.corrections, 1);
        // A later, wildly different report (NTP jump) is ignored.
        let jumped = SenderClock {
            ntp_time: epoch + Duration::from_secs(3600),
            rtp_time: 48_000,
        };
        let a2 = tl.place(&frame(Codec::Opus, 48_000 + 1920, t0, Some(jumped)));
        assert_eq!(a2, 160_000);
        assert_eq!(tl.corrections, 1);
    }

    #[test]
    fn interleaver_orders_and_never_goes_back() {
        let t0 = Instant::now();
        let mut il = Interleaver::new(300_000);
        let mut out = Vec::new();
        let v = |us| Placed {
            us,
            frame: Arc::new(frame(Codec::Vp8, 0, t0, None)),
        };
        let a = |us| Placed {
            us,
            frame: Arc::new(frame(Codec::Opus, 0, t0, None)),
        };
        il.push(v(0), &mut out);
        il.push(v(33_000), &mut out);
        assert!(out.is_empty(), "waits for audio");
        il.push(a(10_000), &mut out);
        assert_eq!(
            out.iter().map(|p| p.us).collect::<Vec<_>>(),
            vec![0, 10_000]
        );
        out.clear();
        // Video stops; audio alone flows after the hold.
        for i in 1..40 {
            il.push(a(10_000 + i * 20_000), &mut out);
        }
        let times: Vec<i64> = out.iter().map(|p| p.us).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert!(times.len() > 5, "audio is not held back forever: {times:?}");
        // A straggler older than what was written is clamped, not written backwards.
        out.clear();
        il.push(v(1_000), &mut out);
        il.drain(&mut out);
        let times: Vec<i64> = out.iter().map(|p| p.us).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    }
}
