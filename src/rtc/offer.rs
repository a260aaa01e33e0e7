//! The offer policy: what a WHIP or WHEP offer gets. Which tracks a session
//! may have and in which direction, which codec a publisher is asked for
//! (the first of `codecs.video` its offer carries, and Opus), what a viewer
//! must be able to receive (exactly the publisher's codecs), which RTP
//! header extensions viewers get, and the answer str0m negotiates from it.
//!
//! Sans-IO: it configures and negotiates a str0m `Rtc`; the engine then
//! claims the name, hands the session to a shard and answers.

use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::media::Mid;
use str0m::{Candidate, Rtc};

use super::sdp::{self, MediaSection, OfferSummary};
use super::{NegotiateError, codecs, payloads};
use crate::config::Config;
use crate::media::{Codec, CodecParams, MediaKind};
use crate::stream::LiveStream;
use crate::stream::layers::MAX_LAYERS;

/// A publisher's negotiated session, not yet running.
pub(super) struct Negotiated {
    /// The configured, negotiated engine.
    pub rtc: Rtc,
    /// The SDP answer (with the bitrate limit, if any).
    pub answer: String,
    /// The tracks as str0m agreed them, to announce to the stream's sinks.
    pub tracks: Vec<CodecParams>,
    /// The video's simulcast layers (rids, in the offer's order); empty
    /// without simulcast.
    pub layers: Vec<String>,
}

/// A viewer's negotiated session, not yet running.
pub(super) struct Viewing {
    /// The configured, negotiated engine.
    pub rtc: Rtc,
    /// The SDP answer.
    pub answer: String,
    /// Whether the stream's payloads are forwarded as shared RTP (str0m's
    /// RTP mode) rather than packetized per viewer.
    pub forward: bool,
}

/// Negotiates a WHIP `offer` on `builder` (one audio and one video track at
/// most, sendonly, video in `config`'s codec preference, in up to
/// [`MAX_LAYERS`] simulcast layers named by rids).
pub(super) fn publisher(
    mut builder: str0m::RtcConfig,
    offer: &str,
    candidates: &[Candidate],
    config: &Config,
) -> Result<Negotiated, NegotiateError> {
    let summary =
        OfferSummary::parse(offer).map_err(|e| NegotiateError::BadOffer(e.to_string()))?;
    let audio = one_section(&summary, "audio")?;
    let video = one_section(&summary, "video")?;
    if audio.is_none() && video.is_none() {
        return Err(NegotiateError::Unsupported(
            "the offer has no audio or video track to publish".into(),
        ));
    }
    for s in audio.iter().chain(video.iter()) {
        if !s.direction.sends() {
            return Err(NegotiateError::Unsupported(format!(
                "the {} track does not send (direction {:?}); a WHIP offer must be sendonly",
                s.kind, s.direction
            )));
        }
    }
    let layers = simulcast_layers(audio, video)?;
    let preference: Vec<Codec> = config
        .codecs
        .video
        .iter()
        .filter_map(|c| Codec::from_name(c))
        .collect();
    let mut tracks: Vec<CodecParams> = Vec::new();
    if let Some(v) = video {
        let picked = codecs::pick_video(v, &preference).map_err(NegotiateError::Unsupported)?;
        codecs::add(
            builder.codec_config(),
            &picked.params,
            picked.pt,
            picked.rtx,
        );
        tracks.push(picked.params);
    }
    if let Some(a) = audio {
        let picked = codecs::pick_audio(a).map_err(NegotiateError::Unsupported)?;
        codecs::add(builder.codec_config(), &picked.params, picked.pt, None);
        tracks.push(picked.params);
    }
    let mut rtc = builder.build(Instant::now());
    let mut answer = negotiate(&mut rtc, offer, candidates)?;
    for s in audio.iter().chain(video.iter()) {
        require_negotiated(&rtc, s)?;
    }
    if config.limits.max_publish_kbps > 0 {
        answer = sdp::limit_video_bitrate(&answer, config.limits.max_publish_kbps);
    }
    // Record what str0m actually agreed (level may differ from the offer).
    let tracks = tracks
        .into_iter()
        .map(|t| negotiated_params(&rtc, t))
        .collect::<Vec<_>>();
    Ok(Negotiated {
        rtc,
        answer,
        tracks,
        layers,
    })
}

/// The simulcast layers (rids) of a WHIP offer's video, after checking that
/// simulcast is asked for the way castgate (and str0m) take it: RFC 8853's
/// `a=simulcast` with `a=rid` lines, on video, at most [`MAX_LAYERS`] layers.
fn simulcast_layers(
    audio: Option<&MediaSection>,
    video: Option<&MediaSection>,
) -> Result<Vec<String>, NegotiateError> {
    if audio.is_some_and(|a| a.simulcast) {
        return Err(NegotiateError::Unsupported(
            "simulcast is for video; the audio track must send one stream".into(),
        ));
    }
    let Some(video) = video else {
        return Ok(Vec::new());
    };
    if video.ssrc_simulcast {
        return Err(NegotiateError::Unsupported(
            "simulcast signalled with a=ssrc-group:SIM (a munged SDP) is not supported; \
             send layers with rids (RFC 8853: sendEncodings with a rid each)"
                .into(),
        ));
    }
    if !video.simulcast {
        return Ok(Vec::new());
    }
    match video.send_rids.len() {
        0 => Err(NegotiateError::Unsupported(
            "the offer has a=simulcast but no a=rid lines that send; name each layer with a rid"
                .into(),
        )),
        n if n > MAX_LAYERS => Err(NegotiateError::Unsupported(format!(
            "the offer sends {n} simulcast layers; castgate takes at most {MAX_LAYERS}"
        ))),
        _ => Ok(video.send_rids.clone()),
    }
}

/// Negotiates a WHEP `offer` for `stream` on `builder`: recvonly tracks
/// that can take exactly the stream's codecs. With `estimate` (an automatic
/// viewer of a simulcast stream, whose layer follows its bandwidth) the
/// session estimates the bandwidth towards the viewer (transport-wide
/// congestion control); no other viewer pays for that.
pub(super) fn viewer(
    builder: str0m::RtcConfig,
    offer: &str,
    candidates: &[Candidate],
    stream: &LiveStream,
    estimate: bool,
) -> Result<Viewing, NegotiateError> {
    let summary =
        OfferSummary::parse(offer).map_err(|e| NegotiateError::BadOffer(e.to_string()))?;
    let audio = one_section(&summary, "audio")?;
    let video = one_section(&summary, "video")?;
    for s in audio.iter().chain(video.iter()) {
        if !s.direction.receives() {
            return Err(NegotiateError::Unsupported(format!(
                "the {} track does not receive (direction {:?}); a WHEP offer must be recvonly",
                s.kind, s.direction
            )));
        }
    }
    // Streams whose every track is cut once are forwarded as shared RTP
    // payloads (str0m's RTP mode); others are packetized per viewer.
    let forward = stream
        .tracks()
        .iter()
        .all(|t| payloads::is_cut_once(t.codec));
    let mut builder = builder
        .set_extension_map(viewer_extensions(estimate))
        .set_rtp_mode(forward);
    if estimate {
        builder = builder
            .enable_bwe(Some(Bitrate::bps(START_ESTIMATE_BPS)))
            .set_stats_interval(Some(LOSS_REPORTS_EVERY));
    }
    for t in stream.tracks() {
        let (pt, rtx) = match t.codec.kind() {
            MediaKind::Video => (96, Some(97)),
            MediaKind::Audio => (111, None),
        };
        codecs::add(builder.codec_config(), t, pt, rtx);
    }
    let mut rtc = builder.build(Instant::now());
    let answer = negotiate(&mut rtc, offer, candidates)?;
    let mut receivable = 0;
    for t in stream.tracks() {
        let section = match t.codec.kind() {
            MediaKind::Video => video,
            MediaKind::Audio => audio,
        };
        let Some(section) = section else { continue };
        if require_negotiated(&rtc, section).is_err() {
            return Err(NegotiateError::Unsupported(format!(
                "the stream's {} is {} but the offer cannot receive it (offered: {})",
                section.kind,
                describe(t),
                section
                    .codecs
                    .iter()
                    .filter(|c| c.params().is_some())
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        receivable += 1;
    }
    if receivable == 0 {
        return Err(NegotiateError::Unsupported(format!(
            "the offer receives none of the stream's tracks ({})",
            stream
                .tracks()
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(Viewing {
        rtc,
        answer,
        forward,
    })
}

fn one_section<'a>(
    s: &'a OfferSummary,
    kind: &str,
) -> Result<Option<&'a MediaSection>, NegotiateError> {
    let mut it = s.active(kind);
    let first = it.next();
    let extra = it.count();
    if extra > 0 {
        return Err(NegotiateError::Unsupported(format!(
            "the offer has {} {kind} tracks; castgate takes at most one audio and one video track per session",
            extra + 1
        )));
    }
    Ok(first)
}

fn negotiate(
    rtc: &mut Rtc,
    offer: &str,
    candidates: &[Candidate],
) -> Result<String, NegotiateError> {
    for c in candidates {
        rtc.add_local_candidate(c.clone());
    }
    let offer = SdpOffer::from_sdp_string(offer)
        .map_err(|e| NegotiateError::BadOffer(format!("the SDP offer does not parse: {e}")))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| NegotiateError::Unsupported(format!("the offer cannot be answered: {e}")))?;
    Ok(answer.to_sdp_string())
}

fn require_negotiated(rtc: &Rtc, section: &MediaSection) -> Result<(), NegotiateError> {
    let ok = section
        .mid
        .as_deref()
        .map(Mid::from)
        .and_then(|mid| rtc.media(mid))
        .is_some_and(|m| !m.remote_pts().is_empty());
    if ok {
        Ok(())
    } else {
        Err(NegotiateError::Unsupported(format!(
            "no common codec for the {} track",
            section.kind
        )))
    }
}

fn negotiated_params(rtc: &Rtc, want: CodecParams) -> CodecParams {
    rtc.codec_config()
        .params()
        .iter()
        .filter_map(codecs::from_payload_params)
        .find(|p| p.codec == want.codec)
        .map(|p| CodecParams {
            // Keep what the publisher said about itself where str0m has no opinion.
            stereo: want.stereo,
            ..p
        })
        .unwrap_or(want)
}

fn describe(p: &CodecParams) -> String {
    match (p.codec, p.profile_level_id) {
        (Codec::H264, Some(pli)) => format!("h264 profile-level-id {pli:06x}"),
        (Codec::Vp9, Some(_)) | (Codec::Vp9, None) => {
            format!("vp9 profile {}", p.vp9_profile_id.unwrap_or(0))
        }
        (c, _) => c.name().to_string(),
    }
}

/// How often an automatic viewer's loss (its receiver reports) is read: a
/// full queue on its path shows as loss well before the estimate falls.
const LOSS_REPORTS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Where an automatic viewer's bandwidth estimate starts: enough for the
/// middle layer of a 720p simulcast (≈ 500 kbit/s), which it starts on.
const START_ESTIMATE_BPS: u64 = 1_000_000;

/// The RTP header extensions offered to viewers: the standard set, without
/// transport-wide congestion control unless the viewer's bandwidth is
/// `estimated` (automatic layer choice). A viewer of one layer has nothing
/// to choose, so TWCC feedback would go unused while it paid for a
/// 1,000-entry send history (about 90 KB) and an extra header extension on
/// every packet.
fn viewer_extensions(estimated: bool) -> str0m::rtp::ExtensionMap {
    use str0m::rtp::{Extension, ExtensionMap};
    let mut exts = ExtensionMap::empty();
    for (id, ext) in ExtensionMap::standard().iter() {
        if estimated || *ext != Extension::TransportSequenceNumber {
            exts.set(id, ext.clone());
        }
    }
    exts
}
