//! Sending a stream's shared RTP payloads to one viewer.
//!
//! A viewer of a stream whose tracks are all cut once ([`super::payloads`])
//! runs its str0m [`Rtc`] in RTP mode and writes those payloads itself: the
//! bytes are the publisher's shared pieces, only the RTP header (sequence
//! number, payload type, SSRC) is the viewer's own. str0m's retransmission
//! buffer then keeps references to the shared pieces, not copies.

use std::ops::Range;
use std::sync::Arc;

use rand::Rng;
use str0m::Rtc;
use str0m::media::{Mid, Pt};
use str0m::rtp::{RtpWrite, SeqNo};

use super::codecs;
use crate::media::{Frame, MediaKind};

/// Per-track sending state of one viewer in RTP mode.
#[derive(Debug)]
struct Track {
    mid: Mid,
    pt: Pt,
    /// Extended sequence number of the next packet.
    next_seq: u64,
    /// RTP time of the last frame written.
    last_time: Option<u64>,
}

/// Writes shared payloads to one viewer's send streams.
#[derive(Debug, Default)]
pub struct RtpForwarder {
    tracks: Vec<Track>,
}

/// Why a frame was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The viewer's session has no send stream for the track (declined or
    /// not negotiated).
    #[error("no send stream for the track")]
    NoStream,
    /// The negotiated payload types do not include the frame's format.
    #[error("the frame's format was not negotiated")]
    NoPayloadType,
    /// The frame has no shared payloads (its codec is not cut once, or the
    /// cutter refused it).
    #[error("the frame has no RTP payloads")]
    NotCut,
}

impl RtpForwarder {
    /// Writes the payloads `pieces` of `frame` (all of them: `0..len`) to
    /// the send stream of `mid`, returning how many payload bytes went out.
    pub fn write(
        &mut self,
        rtc: &mut Rtc,
        mid: Mid,
        frame: &Frame,
        pieces: Range<usize>,
    ) -> Result<usize, ForwardError> {
        let Some(payloads) = frame.rtp_payloads.get(pieces.clone()) else {
            return Err(ForwardError::NotCut);
        };
        if payloads.is_empty() {
            return Err(ForwardError::NotCut);
        }
        let track = match self.tracks.iter().position(|t| t.mid == mid) {
            Some(i) => &mut self.tracks[i],
            None => {
                let pt = rtc
                    .codec_config()
                    .match_params(codecs::payload_params(&frame.params))
                    .map(|p| p.pt())
                    .ok_or(ForwardError::NoPayloadType)?;
                self.tracks.push(Track {
                    mid,
                    pt,
                    // Random, and low enough that the rollover counter starts
                    // at 0, which the receiver assumes (RFC 3711 3.3.1).
                    next_seq: rand::rng().random_range(0..0x8000),
                    last_time: None,
                });
                self.tracks.last_mut().ok_or(ForwardError::NoStream)?
            }
        };
        let mut api = rtc.direct_api();
        let stream = api
            .stream_tx_by_mid(mid, None)
            .ok_or(ForwardError::NoStream)?;
        let video = frame.kind() == MediaKind::Video;
        // RTP time is the low 32 bits of the publisher's extended time,
        // moved on by a tick where it would not advance: at a simulcast
        // switch the new layer's keyframe can be the picture the old layer
        // just sent, and a receiver takes one timestamp for one frame.
        let time = if pieces.start == 0 {
            let t = next_time(track.last_time, frame.rtp_time);
            track.last_time = Some(t);
            t
        } else {
            track.last_time.unwrap_or(frame.rtp_time)
        };
        let time = time as u32;
        let last = frame.rtp_payloads.len() - 1;
        let mut bytes = 0;
        for (i, payload) in payloads.iter().enumerate() {
            let i = pieces.start + i;
            bytes += payload.len();
            let seq = SeqNo::from(track.next_seq);
            track.next_seq += 1;
            stream.write_rtp(
                RtpWrite::new(track.pt, seq, time, frame.arrival, Arc::clone(payload))
                    // As str0m's packetizers mark: the last packet of a
                    // video frame; audio unmarked.
                    .marker(video && i == last)
                    // Video answers NACKs from the retransmission buffer;
                    // audio is not worth resending.
                    .nackable(video),
            );
        }
        Ok(bytes)
    }
}

/// The time to send a frame of time `time` at after a frame sent at `last`:
/// its own, or a tick after `last` if it would not advance.
pub(super) fn next_time(last: Option<u64>, time: u64) -> u64 {
    match last {
        Some(l) if time <= l => l + 1,
        _ => time,
    }
}

#[cfg(test)]
mod tests {
    use super::next_time;

    #[test]
    fn times_always_advance() {
        assert_eq!(next_time(None, 90), 90);
        assert_eq!(next_time(Some(90), 3090), 3090);
        assert_eq!(
            next_time(Some(3090), 3090),
            3091,
            "the same picture on a new layer"
        );
        assert_eq!(next_time(Some(3090), 3000), 3091, "never back");
    }
}
