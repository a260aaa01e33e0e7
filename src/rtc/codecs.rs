//! Codec policy: which codec a publisher is asked to send, and how castgate's
//! [`CodecParams`] map to str0m's payload parameters for publishers and viewers.

use std::fmt::Write as _;

use str0m::format::{Codec as S0Codec, CodecConfig, FormatParams, PayloadParams};
use str0m::media::{Frequency, MediaKind as S0Kind, Pt};

use super::sdp::{MediaSection, OfferedCodec};
use crate::media::{Codec, CodecParams, MediaKind};

/// H.264 profiles castgate forwards: Constrained Baseline, Baseline, Main,
/// High and Constrained High (all share these `profile_idc` values).
const H264_PROFILE_IDCS: [u32; 3] = [0x42, 0x4d, 0x64];

/// A codec picked from an offer, with its payload type and RTX partner.
#[derive(Debug, Clone)]
pub struct Picked {
    /// castgate parameters.
    pub params: CodecParams,
    /// The offerer's payload type.
    pub pt: u8,
    /// The offerer's RTX payload type for it, if any.
    pub rtx: Option<u8>,
}

/// Picks the most preferred video codec the offer carries (preference is the
/// configured order), or explains what was offered instead.
pub fn pick_video(section: &MediaSection, preference: &[Codec]) -> Result<Picked, String> {
    for want in preference {
        for c in &section.codecs {
            let Some(params) = c.params() else { continue };
            if params.codec != *want || params.clock_rate != 90_000 {
                continue;
            }
            if params.codec == Codec::H264 && !h264_supported(&params) {
                continue;
            }
            return Ok(Picked {
                params,
                pt: c.pt,
                rtx: rtx_for(section, c.pt),
            });
        }
    }
    Err(format!(
        "no supported video codec in the offer (offered: {}; castgate accepts: {})",
        offered_list(&section.codecs),
        preference
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Picks Opus from an audio section.
pub fn pick_audio(section: &MediaSection) -> Result<Picked, String> {
    for c in &section.codecs {
        if let Some(params) = c.params()
            && params.codec == Codec::Opus
            && params.clock_rate == 48_000
        {
            return Ok(Picked {
                params,
                pt: c.pt,
                rtx: None,
            });
        }
    }
    Err(format!(
        "no supported audio codec in the offer (offered: {}; castgate accepts: opus)",
        offered_list(&section.codecs)
    ))
}

fn h264_supported(p: &CodecParams) -> bool {
    let pli = p.profile_level_id.unwrap_or(0x42001f);
    p.packetization_mode == Some(1) && H264_PROFILE_IDCS.contains(&(pli >> 16))
}

fn rtx_for(section: &MediaSection, pt: u8) -> Option<u8> {
    let apt = pt.to_string();
    section
        .codecs
        .iter()
        .find(|c| {
            c.name.eq_ignore_ascii_case("rtx")
                && c.fmtp.iter().any(|(k, v)| k == "apt" && *v == apt)
        })
        .map(|c| c.pt)
}

fn offered_list(codecs: &[OfferedCodec]) -> String {
    let mut out = String::new();
    for c in codecs {
        if matches!(
            c.name.to_ascii_lowercase().as_str(),
            "rtx" | "red" | "ulpfec" | "flexfec-03" | "telephone-event" | "cn"
        ) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{}", c.name);
        if let Some(pli) = c.fmtp.iter().find(|(k, _)| k == "profile-level-id") {
            let _ = write!(out, " {}", pli.1);
        }
        if let Some(pm) = c.fmtp.iter().find(|(k, _)| k == "packetization-mode") {
            let _ = write!(out, " mode {}", pm.1);
        }
    }
    if out.is_empty() {
        out.push_str("nothing usable");
    }
    out
}

/// castgate's codec → str0m's.
pub fn to_str0m_codec(c: Codec) -> S0Codec {
    match c {
        Codec::Vp8 => S0Codec::Vp8,
        Codec::Vp9 => S0Codec::Vp9,
        Codec::H264 => S0Codec::H264,
        Codec::Av1 => S0Codec::Av1,
        Codec::Opus => S0Codec::Opus,
    }
}

/// str0m's codec → castgate's, for the codecs castgate carries.
pub fn from_str0m_codec(c: S0Codec) -> Option<Codec> {
    Some(match c {
        S0Codec::Vp8 => Codec::Vp8,
        S0Codec::Vp9 => Codec::Vp9,
        S0Codec::H264 => Codec::H264,
        S0Codec::Av1 => Codec::Av1,
        S0Codec::Opus => Codec::Opus,
        _ => return None,
    })
}

/// castgate's media kind → str0m's.
pub fn to_str0m_kind(k: MediaKind) -> S0Kind {
    match k {
        MediaKind::Audio => S0Kind::Audio,
        MediaKind::Video => S0Kind::Video,
    }
}

fn format_params(p: &CodecParams) -> FormatParams {
    let mut f = FormatParams::default();
    match p.codec {
        Codec::H264 => {
            f.profile_level_id = p.profile_level_id;
            f.packetization_mode = p.packetization_mode;
            f.level_asymmetry_allowed = Some(true);
        }
        Codec::Vp9 => f.profile_id = p.vp9_profile_id,
        Codec::Av1 => f.profile = p.av1_profile,
        Codec::Opus => {
            f.min_p_time = Some(10);
            f.use_inband_fec = Some(true);
            // Answering stereo=1 lets a stereo publisher keep both channels.
            f.stereo = Some(true);
        }
        Codec::Vp8 => {}
    }
    f
}

fn clock(p: &CodecParams) -> Frequency {
    Frequency::new(p.clock_rate).unwrap_or(if p.codec == Codec::Opus {
        Frequency::FORTY_EIGHT_KHZ
    } else {
        Frequency::NINETY_KHZ
    })
}

fn channels(p: &CodecParams) -> Option<u8> {
    match p.codec {
        Codec::Opus => Some(2),
        _ => None,
    }
}

/// Adds one codec to a str0m codec config.
pub fn add(config: &mut CodecConfig, p: &CodecParams, pt: u8, rtx: Option<u8>) {
    config.add_config(
        Pt::from(pt),
        rtx.map(Pt::from),
        to_str0m_codec(p.codec),
        clock(p),
        channels(p),
        format_params(p),
    );
}

/// Payload parameters that match a castgate track, for `Writer::match_params`.
pub fn payload_params(p: &CodecParams) -> PayloadParams {
    let mut cfg = CodecConfig::empty();
    add(&mut cfg, p, 96, None);
    cfg.params()[0]
}

/// Reads castgate parameters back from what str0m negotiated.
pub fn from_payload_params(p: &PayloadParams) -> Option<CodecParams> {
    let spec = p.spec();
    let codec = from_str0m_codec(spec.codec)?;
    let mut out = CodecParams::new(codec, spec.clock_rate.get());
    out.channels = spec.channels;
    out.profile_level_id = spec.format.profile_level_id;
    out.packetization_mode = spec.format.packetization_mode;
    out.vp9_profile_id = spec.format.profile_id;
    out.av1_profile = spec.format.profile;
    out.stereo = spec.format.stereo;
    out.use_inband_fec = spec.format.use_inband_fec;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtc::sdp::OfferSummary;

    fn video_section(lines: &str) -> MediaSection {
        let sdp = format!("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n{lines}");
        OfferSummary::parse(&sdp).unwrap().media.remove(0)
    }

    #[test]
    fn picks_by_preference_with_rtx() {
        let s = video_section(
            "a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
             a=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=0\r\n",
        );
        let p = pick_video(&s, &[Codec::Vp9, Codec::Vp8]).unwrap();
        assert_eq!((p.params.codec, p.pt, p.rtx), (Codec::Vp9, 98, None));
        let p = pick_video(&s, &[Codec::Vp8]).unwrap();
        assert_eq!((p.params.codec, p.pt, p.rtx), (Codec::Vp8, 96, Some(97)));
    }

    #[test]
    fn h264_profiles_like_obs_and_browsers() {
        // OBS sends High (64001f); Chromium offers 42e01f / 42001f / 4d001f, mode 0 and 1.
        for pli in ["42e01f", "42001f", "4d001f", "64001f", "640c1f", "640034"] {
            let s = video_section(&format!(
                "a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={pli}\r\n"
            ));
            let p = pick_video(&s, &[Codec::H264]).unwrap_or_else(|e| panic!("{pli}: {e}"));
            assert_eq!(
                p.params.profile_level_id,
                Some(u32::from_str_radix(pli, 16).unwrap())
            );
        }
        let s = video_section(
            "a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=0;profile-level-id=42e01f\r\n\
             a=rtpmap:103 H264/90000\r\na=fmtp:103 packetization-mode=1;profile-level-id=f4001f\r\n",
        );
        let err = pick_video(&s, &[Codec::H264]).unwrap_err();
        assert!(err.contains("H264 42e01f mode 0"), "{err}");
    }

    #[test]
    fn round_trips_through_str0m_params() {
        let mut p = CodecParams::new(Codec::H264, 90_000);
        p.profile_level_id = Some(0x640c1f);
        p.packetization_mode = Some(1);
        let back = from_payload_params(&payload_params(&p)).unwrap();
        assert_eq!(back.profile_level_id, p.profile_level_id);
        assert_eq!(back.codec, Codec::H264);
    }
}
