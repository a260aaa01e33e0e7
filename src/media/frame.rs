//! castgate's own media unit: one encoded frame, independent of the WebRTC
//! engine, shared by every sink without copying.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// A sound track.
    Audio,
    /// A picture track.
    Video,
}

/// Codecs that flow through the hub.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// VP8 (RFC 7741).
    Vp8,
    /// VP9.
    Vp9,
    /// H.264 / AVC, Annex-B access units.
    H264,
    /// AV1, low-overhead OBU temporal units.
    Av1,
    /// Opus audio.
    Opus,
}

impl Codec {
    /// Whether this codec carries audio or video.
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Opus => MediaKind::Audio,
            _ => MediaKind::Video,
        }
    }

    /// Lower-case name as used in config and the API (`vp8`, `h264`, `opus`…).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Vp8 => "vp8",
            Codec::Vp9 => "vp9",
            Codec::H264 => "h264",
            Codec::Av1 => "av1",
            Codec::Opus => "opus",
        }
    }

    /// Parses a config name such as `vp8`.
    pub fn from_name(name: &str) -> Option<Codec> {
        Some(match name {
            "vp8" => Codec::Vp8,
            "vp9" => Codec::Vp9,
            "h264" => Codec::H264,
            "av1" => Codec::Av1,
            "opus" => Codec::Opus,
            _ => return None,
        })
    }
}

/// The negotiated parameters of one codec, enough for a sink to set itself up
/// (a viewer to negotiate the same format, a recorder to write a track header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CodecParams {
    /// Which codec.
    pub codec: Codec,
    /// RTP clock rate in Hz (90000 for video, 48000 for Opus).
    pub clock_rate: u32,
    /// Audio channels as negotiated (Opus always says 2 in SDP).
    pub channels: Option<u8>,
    /// H.264 `profile-level-id`.
    pub profile_level_id: Option<u32>,
    /// H.264 `packetization-mode`.
    pub packetization_mode: Option<u8>,
    /// VP9 `profile-id`.
    pub vp9_profile_id: Option<u32>,
    /// AV1 `profile`.
    pub av1_profile: Option<u8>,
    /// Opus `stereo=1`: the receiver accepts stereo.
    pub stereo: Option<bool>,
    /// Opus `useinbandfec`.
    pub use_inband_fec: Option<bool>,
}

impl CodecParams {
    /// Parameters with only codec and clock rate set.
    pub fn new(codec: Codec, clock_rate: u32) -> CodecParams {
        CodecParams {
            codec,
            clock_rate,
            channels: None,
            profile_level_id: None,
            packetization_mode: None,
            vp9_profile_id: None,
            av1_profile: None,
            stereo: None,
            use_inband_fec: None,
        }
    }
}

/// The last RTCP sender report of a track: maps the sender's RTP clock to its
/// NTP wall clock, which is what aligns audio with video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    /// Sender's wall clock at the report.
    pub ntp_time: SystemTime,
    /// Sender's RTP time (in the track's clock rate) at the same instant.
    pub rtp_time: u64,
}

/// One encoded frame as the publisher sent it.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Codec and format of the payload.
    pub params: CodecParams,
    /// Whether a decoder can start here (always true for audio).
    pub keyframe: bool,
    /// Presentation time on the sender's RTP clock, in `params.clock_rate` units.
    pub rtp_time: u64,
    /// When the last packet of the frame arrived at the gateway.
    pub arrival: Instant,
    /// The most recent sender report for this track, if one has arrived.
    pub sender_clock: Option<SenderClock>,
    /// Whether packets were lost between the previous frame and this one.
    pub after_loss: bool,
    /// The simulcast layer of a video frame (its rid's position in the
    /// publisher's offer); 0 without simulcast, and for audio.
    pub layer: u8,
    /// The encoded bytes (Annex-B for H.264, OBUs for AV1), shared by all sinks.
    pub data: Arc<[u8]>,
    /// The same frame cut into RTP payloads once, for every viewer of the
    /// stream: viewers send (and keep for retransmission) these shared bytes
    /// instead of each cutting and holding its own copy. Empty for codecs
    /// that are not cut once (VP9, AV1): their viewers packetize themselves.
    pub rtp_payloads: Vec<Arc<[u8]>>,
}

impl Frame {
    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.params.codec.kind()
    }

    /// Bytes the frame holds: its data and its RTP payloads (a payload that
    /// is the data itself, as an Opus frame's, counts once). What keeping the
    /// frame costs, e.g. in the GOP cache.
    pub fn held_bytes(&self) -> usize {
        let pieces: usize = self
            .rtp_payloads
            .iter()
            .filter(|p| !Arc::ptr_eq(p, &self.data))
            .map(|p| p.len())
            .sum();
        self.data.len() + pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(codec: Codec, data: &[u8]) -> Frame {
        Frame {
            params: CodecParams::new(codec, 90_000),
            keyframe: true,
            rtp_time: 0,
            arrival: Instant::now(),
            sender_clock: None,
            after_loss: false,
            layer: 0,
            data: Arc::from(data),
            rtp_payloads: Vec::new(),
        }
    }

    #[test]
    fn held_bytes_count_the_data_and_its_pieces_once() {
        let mut vp8 = frame(Codec::Vp8, &[7; 2000]);
        assert_eq!(vp8.held_bytes(), 2000);
        // Cut into two pieces, each with a 1-byte descriptor: held twice over.
        vp8.rtp_payloads = vec![Arc::from(vec![0; 1001]), Arc::from(vec![0; 1001])];
        assert_eq!(vp8.held_bytes(), 4002);
        // An Opus frame is its own payload: the same bytes, counted once.
        let mut opus = frame(Codec::Opus, &[1; 120]);
        opus.rtp_payloads = vec![opus.data.clone()];
        assert_eq!(opus.held_bytes(), 120);
    }
}
