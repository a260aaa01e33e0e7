//! A read-only look at an SDP offer before str0m negotiates it: how many
//! tracks of each kind, in which direction, with which codecs. castgate uses it
//! to refuse offers it will not serve with a readable reason, and to pick the
//! one codec per kind it wants the publisher to send.
//!
//! str0m does the real parsing and negotiation; this scan never decides
//! anything str0m would decide differently, it only adds policy.

use crate::media::{Codec, CodecParams};

/// One `m=` section of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// `audio`, `video`, `application`, or anything else.
    pub kind: String,
    /// Port 0 means the section is rejected/disabled.
    pub disabled: bool,
    /// `a=mid:` value.
    pub mid: Option<String>,
    /// Direction attribute, `sendrecv` when absent.
    pub direction: Direction,
    /// Codecs in the offerer's order of preference.
    pub codecs: Vec<OfferedCodec>,
    /// `a=simulcast:` is present.
    pub simulcast: bool,
    /// The rids of `a=rid:<id> send` lines, in the offer's order: the
    /// simulcast layers the offerer sends (RFC 8851).
    pub send_rids: Vec<String>,
    /// `a=ssrc-group:SIM` is present: simulcast signalled the legacy way,
    /// by munging the SDP (SSRCs instead of rids).
    pub ssrc_simulcast: bool,
}

/// SDP media direction from the offerer's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv`
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

impl Direction {
    /// The offerer will send media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    /// The offerer will receive media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// One payload type from `a=rtpmap` (+ `a=fmtp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedCodec {
    /// Payload type number.
    pub pt: u8,
    /// Encoding name as written (e.g. `VP8`, `H264`, `rtx`).
    pub name: String,
    /// Clock rate.
    pub clock_rate: u32,
    /// Channel count, for audio.
    pub channels: Option<u8>,
    /// Raw `a=fmtp` parameters.
    pub fmtp: Vec<(String, String)>,
}

impl OfferedCodec {
    fn fmtp(&self, key: &str) -> Option<&str> {
        self.fmtp
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// This payload as castgate codec parameters, if castgate handles the codec.
    pub fn params(&self) -> Option<CodecParams> {
        let codec = match self.name.to_ascii_lowercase().as_str() {
            "vp8" => Codec::Vp8,
            "vp9" => Codec::Vp9,
            "h264" => Codec::H264,
            "av1" | "av1x" => Codec::Av1,
            "opus" => Codec::Opus,
            _ => return None,
        };
        let mut p = CodecParams::new(codec, self.clock_rate);
        p.channels = self.channels;
        match codec {
            Codec::H264 => {
                p.profile_level_id = self
                    .fmtp("profile-level-id")
                    .and_then(|v| u32::from_str_radix(v, 16).ok())
                    .or(Some(0x42_00_1f));
                p.packetization_mode = Some(
                    self.fmtp("packetization-mode")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                );
            }
            Codec::Vp9 => {
                p.vp9_profile_id = Some(
                    self.fmtp("profile-id")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                );
            }
            Codec::Av1 => {
                p.av1_profile = Some(
                    self.fmtp("profile")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                );
            }
            Codec::Opus => {
                p.stereo = self.fmtp("stereo").map(|v| v == "1");
                p.use_inband_fec = self.fmtp("useinbandfec").map(|v| v == "1");
            }
            Codec::Vp8 => {}
        }
        Some(p)
    }
}

/// What an offer asks for.
#[derive(Debug, Clone, Default)]
pub struct OfferSummary {
    /// Every `m=` section in order.
    pub media: Vec<MediaSection>,
}

/// Why an offer was refused before negotiation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// Not SDP at all.
    #[error("the body is not an SDP offer: {0}")]
    Malformed(String),
}

impl OfferSummary {
    /// Scans an SDP offer.
    pub fn parse(sdp: &str) -> Result<OfferSummary, OfferError> {
        let mut lines = sdp.lines().map(|l| l.trim_end_matches('\r'));
        match lines.next() {
            Some(l) if l.starts_with("v=0") => {}
            _ => return Err(OfferError::Malformed("it does not start with v=0".into())),
        }
        let mut out = OfferSummary::default();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            let Some((typ, value)) = line.split_once('=') else {
                return Err(OfferError::Malformed(format!(
                    "line {:?} is not of the form x=value",
                    truncate(line)
                )));
            };
            if typ.len() != 1 {
                return Err(OfferError::Malformed(format!(
                    "line {:?} is not of the form x=value",
                    truncate(line)
                )));
            }
            if typ == "m" {
                let mut parts = value.split_whitespace();
                let kind = parts.next().unwrap_or_default().to_string();
                let port = parts.next().unwrap_or_default();
                out.media.push(MediaSection {
                    kind,
                    disabled: port == "0",
                    mid: None,
                    direction: Direction::SendRecv,
                    codecs: Vec::new(),
                    simulcast: false,
                    send_rids: Vec::new(),
                    ssrc_simulcast: false,
                });
                continue;
            }
            let Some(m) = out.media.last_mut() else {
                continue;
            };
            if typ != "a" {
                continue;
            }
            let (attr, arg) = value.split_once(':').unwrap_or((value, ""));
            match attr {
                "mid" => m.mid = Some(arg.trim().to_string()),
                "sendrecv" => m.direction = Direction::SendRecv,
                "sendonly" => m.direction = Direction::SendOnly,
                "recvonly" => m.direction = Direction::RecvOnly,
                "inactive" => m.direction = Direction::Inactive,
                "simulcast" => m.simulcast = true,
                "rid" => {
                    let mut parts = arg.split_whitespace();
                    if let (Some(id), Some("send")) = (parts.next(), parts.next())
                        && !m.send_rids.iter().any(|r| r == id)
                    {
                        m.send_rids.push(id.to_string());
                    }
                }
                "ssrc-group" if arg.split_whitespace().next() == Some("SIM") => {
                    m.ssrc_simulcast = true
                }
                "rtpmap" => {
                    let Some((pt, enc)) = arg.split_once(' ') else {
                        continue;
                    };
                    let Ok(pt) = pt.trim().parse::<u8>() else {
                        continue;
                    };
                    let mut enc = enc.trim().split('/');
                    let name = enc.next().unwrap_or_default().to_string();
                    let clock_rate = enc.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                    let channels = enc.next().and_then(|c| c.parse().ok());
                    m.codecs.push(OfferedCodec {
                        pt,
                        name,
                        clock_rate,
                        channels,
                        fmtp: Vec::new(),
                    });
                }
                "fmtp" => {
                    let Some((pt, params)) = arg.split_once(' ') else {
                        continue;
                    };
                    let Ok(pt) = pt.trim().parse::<u8>() else {
                        continue;
                    };
                    if let Some(c) = m.codecs.iter_mut().find(|c| c.pt == pt) {
                        c.fmtp = params
                            .split(';')
                            .filter_map(|kv| {
                                let (k, v) = kv.split_once('=')?;
                                Some((k.trim().to_string(), v.trim().to_string()))
                            })
                            .collect();
                    }
                }
                _ => {}
            }
        }
        if out.media.is_empty() {
            return Err(OfferError::Malformed("it has no m= section".into()));
        }
        Ok(out)
    }

    /// Active (not disabled) sections of one kind.
    pub fn active(&self, kind: &str) -> impl Iterator<Item = &MediaSection> {
        let kind = kind.to_string();
        self.media
            .iter()
            .filter(move |m| !m.disabled && m.kind == kind)
    }
}

/// The answer with a bandwidth limit on its video section (`b=AS` in kbit/s,
/// which browsers obey), so a publisher encodes within
/// `limits.max_publish_kbps`. One `b=` line only: some SDP parsers (str0m's
/// among them) take no more than one per section.
pub fn limit_video_bitrate(answer: &str, kbps: u32) -> String {
    let mut out = String::with_capacity(answer.len() + 48);
    let mut in_video = false;
    let mut added = false;
    for line in answer.split_inclusive('\n') {
        let text = line.trim_end();
        if text.starts_with("m=") {
            in_video = text.starts_with("m=video");
            added = false;
        } else if in_video && !added && !text.starts_with("i=") && !text.starts_with("c=") {
            // b= lines go after m=, i= and c= (RFC 8866 §5).
            out.push_str(&format!("b=AS:{kbps}\r\n"));
            added = true;
        }
        if in_video && text.starts_with("b=") {
            continue; // ours replace any other
        }
        out.push_str(line);
    }
    out
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1;stereo=1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\na=mid:1\r\na=sendonly\r\n\
a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn reads_sections_and_codecs() {
        let s = OfferSummary::parse(OFFER).unwrap();
        assert_eq!(s.media.len(), 2);
        let audio = s.active("audio").next().unwrap();
        assert_eq!(audio.direction, Direction::SendOnly);
        let opus = audio.codecs[0].params().unwrap();
        assert_eq!(opus.codec, Codec::Opus);
        assert_eq!(opus.stereo, Some(true));
        let video = s.active("video").next().unwrap();
        assert_eq!(video.mid.as_deref(), Some("1"));
        let h264 = video.codecs[2].params().unwrap();
        assert_eq!(h264.profile_level_id, Some(0x42e01f));
        assert_eq!(h264.packetization_mode, Some(1));
        assert!(
            video.codecs[1].params().is_none(),
            "rtx is not a media codec"
        );
    }

    #[test]
    fn refuses_non_sdp() {
        assert!(OfferSummary::parse("hello").is_err());
        assert!(OfferSummary::parse("v=0\r\nbroken line\r\n").is_err());
        assert!(OfferSummary::parse("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n").is_err());
        assert!(OfferSummary::parse("").is_err());
    }

    #[test]
    fn video_bitrate_limit_goes_after_the_connection_line() {
        let answer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                      m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:9999\r\na=mid:1\r\n";
        let limited = limit_video_bitrate(answer, 1500);
        assert!(
            limited.contains(
                "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:1500\r\na=mid:1\r\n"
            ),
            "{limited}"
        );
        assert!(!limited.contains("9999"));
        assert_eq!(limited.matches("b=AS").count(), 1, "audio untouched");
    }
}
