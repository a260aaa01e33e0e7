//! Sans-IO checks of one received RTP stream, without decoding: sequence gaps (loss),
//! and for video whether each frame arrived whole, and which frames are keyframes.
//!
//! A video frame is the packets of one RTP timestamp; it is complete when its marker
//! packet and every sequence number from the previous frame's marker + 1 up to its own
//! marker arrived (retransmissions included: str0m repairs RTX and drops duplicates
//! before we see a packet). When the previous frame is unknown (the first frame, or after
//! an incomplete one) the frame must begin with a start packet of its codec (VP8 S=1
//! PID=0; H.264 a single NAL / STAP-A / FU-A start). Keyframes are read from the payload
//! headers (VP8 P bit; H.264 IDR or SPS NAL).

use std::collections::BTreeMap;
use std::time::Instant;

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Opus: every packet is a frame.
    Audio,
    /// VP8 video (RFC 7741).
    Vp8,
    /// H.264 video (RFC 6184).
    H264,
}

/// Frames waiting for their missing packets; beyond this the oldest counts as incomplete.
const MAX_PENDING: usize = 24;

/// A frame that just became complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    /// Its RTP timestamp (extended).
    pub rtp_time: u64,
    /// Whether it is a keyframe.
    pub keyframe: bool,
    /// When its last missing packet arrived.
    pub at: Instant,
}

#[derive(Debug)]
struct Pending {
    min_seq: u64,
    count: u64,
    marker: Option<u64>,
    keyframe: bool,
    starts: bool,
    last_at: Instant,
}

/// The checks of one stream (one SSRC).
#[derive(Debug)]
pub struct StreamCheck {
    payload: Payload,
    first_seq: Option<u64>,
    max_seq: u64,
    /// Distinct packets received.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Frames that arrived whole.
    pub frames_complete: u64,
    /// Frames given up on (packets missing).
    pub frames_incomplete: u64,
    /// Complete keyframes.
    pub keyframes: u64,
    /// Packets of a frame whose RTP time is not after a frame already delivered or given
    /// up on (sent out of timestamp order, or repaired too late).
    pub late_packets: u64,
    pending: BTreeMap<u64, Pending>,
    prev_marker: Option<u64>,
    last_done_ts: Option<u64>,
}

impl StreamCheck {
    /// A checker for a stream of `payload`.
    pub fn new(payload: Payload) -> StreamCheck {
        StreamCheck {
            payload,
            first_seq: None,
            max_seq: 0,
            packets: 0,
            bytes: 0,
            frames_complete: 0,
            frames_incomplete: 0,
            keyframes: 0,
            late_packets: 0,
            pending: BTreeMap::new(),
            prev_marker: None,
            last_done_ts: None,
        }
    }

    /// Packets missing so far: the span of sequence numbers seen minus those received.
    pub fn lost(&self) -> u64 {
        match self.first_seq {
            Some(first) => (self.max_seq - first + 1).saturating_sub(self.packets),
            None => 0,
        }
    }

    /// Takes one packet (extended sequence number and RTP time); pushes the video frames
    /// it completed, oldest first, into `done` (audio packets are counted, not pushed).
    pub fn on_packet(
        &mut self,
        seq: u64,
        rtp_time: u64,
        marker: bool,
        payload: &[u8],
        now: Instant,
        done: &mut Vec<Completed>,
    ) {
        self.packets += 1;
        self.bytes += payload.len() as u64;
        self.first_seq = Some(self.first_seq.map_or(seq, |f| f.min(seq)));
        self.max_seq = self.max_seq.max(seq);

        if self.payload == Payload::Audio {
            // Every Opus packet is a whole frame; only video frames are reported.
            self.frames_complete += 1;
            return;
        }
        if self.last_done_ts.is_some_and(|t| rtp_time <= t) {
            // A frame older than one already delivered (sent out of timestamp order):
            // counted, not checked; its marker still ends the sequence range it used.
            self.late_packets += 1;
            if marker && self.prev_marker.is_some_and(|m| seq > m) {
                self.prev_marker = Some(seq);
                self.settle(done);
            }
            return;
        }
        let (keyframe, starts) = match self.payload {
            Payload::Vp8 => vp8_info(payload),
            _ => h264_info(payload),
        };
        let p = self.pending.entry(rtp_time).or_insert(Pending {
            min_seq: seq,
            count: 0,
            marker: None,
            keyframe: false,
            starts: false,
            last_at: now,
        });
        if seq < p.min_seq {
            p.min_seq = seq;
            p.starts = false;
        }
        if seq == p.min_seq {
            p.starts |= starts;
        }
        p.count += 1;
        if marker {
            p.marker = Some(seq);
        }
        p.keyframe |= keyframe;
        p.last_at = now;
        self.settle(done);
    }

    /// Completes frames from the oldest pending one while they are whole; gives up on
    /// the oldest while too many wait.
    fn settle(&mut self, done: &mut Vec<Completed>) {
        loop {
            let Some(mut entry) = self.pending.first_entry() else {
                return;
            };
            let ts = *entry.key();
            let p = entry.get_mut();
            let start = match self.prev_marker {
                Some(m) if m < p.min_seq => Some(m + 1),
                _ if p.starts => Some(p.min_seq),
                _ => None,
            };
            let whole = match (start, p.marker) {
                (Some(s), Some(m)) => m >= s && p.count == m - s + 1,
                _ => false,
            };
            if whole {
                let p = entry.remove();
                self.prev_marker = p.marker;
                self.last_done_ts = Some(ts);
                self.frames_complete += 1;
                if p.keyframe {
                    self.keyframes += 1;
                }
                done.push(Completed {
                    rtp_time: ts,
                    keyframe: p.keyframe,
                    at: p.last_at,
                });
                continue;
            }
            if self.pending.len() > MAX_PENDING {
                if let Some((ts, p)) = self.pending.pop_first() {
                    self.prev_marker = p.marker;
                    self.last_done_ts = Some(ts);
                    self.frames_incomplete += 1;
                }
                continue;
            }
            return;
        }
    }
}

/// VP8 (RFC 7741): (keyframe, first packet of a frame) from the payload descriptor.
pub fn vp8_info(p: &[u8]) -> (bool, bool) {
    let Some(&b0) = p.first() else {
        return (false, false);
    };
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(1) else {
            return (false, false);
        };
        at = 2;
        if x & 0x80 != 0 {
            // PictureID: 15 bits if M is set, else 7.
            at += if p.get(2).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    let keyframe = start && p.get(at).is_some_and(|b| b & 1 == 0);
    (keyframe, start)
}

/// H.264 (RFC 6184): (keyframe, may begin an access unit) from the NAL headers.
pub fn h264_info(p: &[u8]) -> (bool, bool) {
    let Some(&b0) = p.first() else {
        return (false, false);
    };
    let key = |t: u8| t == 5 || t == 7;
    match b0 & 0x1f {
        24 => {
            // STAP-A: 16-bit size, NAL, …
            let mut at = 1;
            let mut keyframe = false;
            while let (Some(&hi), Some(&lo)) = (p.get(at), p.get(at + 1)) {
                let size = usize::from(u16::from_be_bytes([hi, lo]));
                if let Some(&h) = p.get(at + 2) {
                    keyframe |= key(h & 0x1f);
                }
                at += 2 + size;
            }
            (keyframe, true)
        }
        28 => {
            let Some(&fu) = p.get(1) else {
                return (false, false);
            };
            (key(fu & 0x1f), fu & 0x80 != 0)
        }
        t => (key(t), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[0x10, 0x00]; // S=1, PID 0, P=0: keyframe start
    const DELTA_START: &[u8] = &[0x10, 0x01];
    const MIDDLE: &[u8] = &[0x00, 0xff];

    fn feed(c: &mut StreamCheck, pkts: &[(u64, u64, bool, &[u8])]) -> Vec<Completed> {
        let mut done = Vec::new();
        for &(seq, ts, m, p) in pkts {
            c.on_packet(seq, ts, m, p, Instant::now(), &mut done);
        }
        done
    }

    #[test]
    fn whole_frames_complete_in_order() {
        let mut c = StreamCheck::new(Payload::Vp8);
        let done = feed(
            &mut c,
            &[
                (10, 0, false, KEY),
                (11, 0, true, MIDDLE),
                (12, 3000, false, DELTA_START),
                (13, 3000, false, MIDDLE),
                (14, 3000, true, MIDDLE),
            ],
        );
        assert_eq!(done.len(), 2);
        assert!(done[0].keyframe && !done[1].keyframe);
        assert_eq!(done[1].rtp_time, 3000);
        assert_eq!((c.lost(), c.frames_complete, c.keyframes), (0, 2, 1));
    }

    #[test]
    fn a_retransmitted_packet_completes_the_frame_late() {
        let mut c = StreamCheck::new(Payload::Vp8);
        let done = feed(
            &mut c,
            &[
                (10, 0, true, KEY),
                (11, 3000, false, DELTA_START),
                (13, 3000, true, MIDDLE),
                (14, 6000, true, DELTA_START),
            ],
        );
        assert_eq!(done.len(), 1);
        assert_eq!(c.lost(), 1);
        let done = feed(&mut c, &[(12, 3000, false, MIDDLE)]);
        assert_eq!(done.len(), 2, "the repaired frame and the one behind it");
        assert_eq!(c.lost(), 0);
    }

    #[test]
    fn a_lost_packet_makes_an_incomplete_frame_and_counts_loss() {
        let mut c = StreamCheck::new(Payload::Vp8);
        let mut pkts: Vec<(u64, u64, bool, &[u8])> = vec![(1, 0, true, KEY)];
        // Frame at 3000 loses seq 3; many frames follow.
        pkts.push((2, 3000, false, DELTA_START));
        pkts.push((4, 3000, true, MIDDLE));
        for i in 0..30u64 {
            pkts.push((5 + i, 6000 + i * 3000, true, DELTA_START));
        }
        let done = feed(&mut c, &pkts);
        assert_eq!(c.frames_incomplete, 1);
        assert_eq!(c.lost(), 1);
        assert!(done.iter().all(|d| d.rtp_time != 3000));
        assert!(c.frames_complete >= 30 - MAX_PENDING as u64);
        // The missing packet arriving after the frame was given up on is late.
        feed(&mut c, &[(3, 3000, false, MIDDLE)]);
        assert_eq!(c.late_packets, 1);
    }

    #[test]
    fn a_frame_sent_out_of_timestamp_order_is_counted_and_does_not_break_the_next() {
        let mut c = StreamCheck::new(Payload::Vp8);
        feed(&mut c, &[(1, 9000, true, KEY)]);
        // An older frame (6000) sent after 9000, then the next frame in order.
        let done = feed(
            &mut c,
            &[
                (2, 6000, false, DELTA_START),
                (3, 6000, true, MIDDLE),
                (4, 12000, true, DELTA_START),
            ],
        );
        assert_eq!(c.late_packets, 2);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].rtp_time, 12000);
        assert_eq!((c.frames_incomplete, c.lost()), (0, 0));
    }

    #[test]
    fn a_first_frame_without_its_start_is_not_complete() {
        let mut c = StreamCheck::new(Payload::Vp8);
        let done = feed(&mut c, &[(5, 0, true, MIDDLE)]);
        assert!(done.is_empty());
    }

    #[test]
    fn vp8_descriptor_with_picture_id() {
        // X=1 S=1; I=1; 15-bit picture id; then P=0.
        assert_eq!(vp8_info(&[0x90, 0x80, 0x81, 0x23, 0x00]), (true, true));
        assert_eq!(vp8_info(&[0x90, 0x80, 0x81, 0x23, 0x01]), (false, true));
        assert_eq!(vp8_info(&[0x80, 0x80, 0x05, 0x00]), (false, false));
        assert_eq!(vp8_info(&[]), (false, false));
    }

    #[test]
    fn h264_keyframes_in_stap_a_and_fu_a() {
        assert_eq!(
            h264_info(&[0x78, 0, 2, 0x67, 1, 0, 2, 0x68, 2]),
            (true, true)
        );
        assert_eq!(h264_info(&[0x7c, 0x85, 9]), (true, true));
        assert_eq!(h264_info(&[0x7c, 0x05, 9]), (true, false));
        assert_eq!(h264_info(&[0x41, 9]), (false, true));
    }

    #[test]
    fn audio_counts_packets_as_frames() {
        let mut c = StreamCheck::new(Payload::Audio);
        let done = feed(&mut c, &[(1, 0, true, &[1]), (3, 1920, true, &[1])]);
        assert!(done.is_empty());
        assert_eq!((c.frames_complete, c.lost()), (2, 1));
    }
}
