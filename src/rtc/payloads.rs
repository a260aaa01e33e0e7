//! Cutting a publisher's frames into RTP payloads once per stream.
//!
//! Left to itself, str0m packetizes every frame again for every viewer and
//! keeps each viewer's copy of every video packet for retransmission: at 300
//! viewers that is 300 copies of the same bytes. The publisher's session
//! instead cuts each VP8, H.264 and Opus frame here, once, with str0m's own
//! packetizers (so the payloads are exactly what str0m would have sent), and
//! the [`Frame`](crate::media::Frame) carries the pieces as shared bytes.
//! Viewers then forward them ([`super::forward`]).
//!
//! VP9 and AV1 are not cut here (str0m 0.25 has no public packetizer for
//! them): their viewers packetize themselves, as before.

use std::sync::Arc;

use str0m::unversioned::{H264Packetizer, OpusPacketizer, Packetizer, Vp8Packetizer};

use crate::media::Codec;

/// Largest RTP payload, in bytes: what str0m cuts to by default (its 1150-byte
/// datagram target, less the 16-byte SRTP tag, rounded down to the 16-byte
/// SRTP block), so shared payloads fit the same datagrams as str0m's own.
pub const PAYLOAD_MTU: usize = {
    let rtp = 1150 - 16;
    rtp - rtp % 16
};

/// Whether frames of `codec` are cut once per stream (and their viewers
/// forward the shared payloads).
pub fn is_cut_once(codec: Codec) -> bool {
    matches!(codec, Codec::Vp8 | Codec::H264 | Codec::Opus)
}

/// Cuts one track's frames into RTP payloads. Stateful like str0m's own
/// packetizer for the track (H.264 parameter sets), so there is one per
/// publisher track.
#[derive(Debug)]
pub enum PayloadCutter {
    /// RFC 7741, without picture ids (as str0m sends VP8).
    Vp8(Vp8Packetizer),
    /// RFC 6184, single NAL units, STAP-A for parameter sets, FU-A above the MTU.
    H264(H264Packetizer),
    /// RFC 7587: one frame per packet.
    Opus(OpusPacketizer),
}

impl PayloadCutter {
    /// A cutter for `codec`, or `None` when its frames are not cut once.
    pub fn for_codec(codec: Codec) -> Option<PayloadCutter> {
        Some(match codec {
            Codec::Vp8 => PayloadCutter::Vp8(Vp8Packetizer::default()),
            Codec::H264 => PayloadCutter::H264(H264Packetizer::default()),
            Codec::Opus => PayloadCutter::Opus(OpusPacketizer),
            Codec::Vp9 | Codec::Av1 => return None,
        })
    }

    /// The RTP payloads of one frame, in order. Empty when the frame cannot
    /// be cut (str0m refused it); its viewers then skip that frame, as
    /// str0m's writer would have.
    pub fn cut(&mut self, frame: &Arc<[u8]>) -> Vec<Arc<[u8]>> {
        let packetizer: &mut dyn Packetizer = match self {
            // An Opus frame that fits is its own payload: nothing to copy.
            PayloadCutter::Opus(_) if frame.len() <= PAYLOAD_MTU => return vec![frame.clone()],
            PayloadCutter::Opus(p) => p,
            PayloadCutter::Vp8(p) => p,
            PayloadCutter::H264(p) => p,
        };
        match packetizer.packetize(PAYLOAD_MTU, frame) {
            Ok(pieces) => pieces.into_iter().map(Arc::from).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "frame not cut into RTP payloads");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(b: &[u8]) -> Arc<[u8]> {
        Arc::from(b.to_vec())
    }

    #[test]
    fn payload_mtu_matches_str0m() {
        assert_eq!(PAYLOAD_MTU, 1120);
        assert_eq!(str0m::Rtc::builder().mtu(), 1150, "str0m's default changed");
    }

    #[test]
    fn vp8_frames_are_cut_into_pieces_that_carry_every_byte() {
        let frame: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut cut = PayloadCutter::for_codec(Codec::Vp8).unwrap();
        let pieces = cut.cut(&bytes(&frame));
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.len() <= PAYLOAD_MTU));
        // One-byte descriptor; S=1 only on the frame's first packet.
        assert_eq!(pieces[0][0], 0x10);
        assert_eq!(pieces[1][0], 0x00);
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p[1..].to_vec()).collect();
        assert_eq!(joined, frame);
    }

    #[test]
    fn h264_parameter_sets_go_in_one_stap_a_and_large_slices_in_fu_a() {
        let mut au = vec![
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
        ];
        au.extend([0, 0, 0, 1, 0x65]);
        au.extend((0..2500u32).map(|i| (i % 200 + 1) as u8));
        let mut cut = PayloadCutter::for_codec(Codec::H264).unwrap();
        let pieces = cut.cut(&bytes(&au));
        assert_eq!(pieces[0][0] & 0x1f, 24, "STAP-A first");
        assert!(pieces[1..].iter().all(|p| p[0] & 0x1f == 28), "then FU-A");
        assert!(pieces.iter().all(|p| p.len() <= PAYLOAD_MTU));
    }

    #[test]
    fn opus_frames_are_shared_not_copied() {
        let frame = bytes(&[0xfc, 1, 2, 3]);
        let mut cut = PayloadCutter::for_codec(Codec::Opus).unwrap();
        let pieces = cut.cut(&frame);
        assert_eq!(pieces.len(), 1);
        assert!(Arc::ptr_eq(&pieces[0], &frame));
    }

    #[test]
    fn vp9_and_av1_are_left_to_their_viewers() {
        assert!(PayloadCutter::for_codec(Codec::Vp9).is_none());
        assert!(PayloadCutter::for_codec(Codec::Av1).is_none());
        assert!(!is_cut_once(Codec::Av1));
        assert!(is_cut_once(Codec::H264));
    }

    #[test]
    fn an_empty_frame_has_no_payloads() {
        let mut cut = PayloadCutter::for_codec(Codec::Vp8).unwrap();
        assert!(cut.cut(&bytes(&[])).is_empty());
    }
}
