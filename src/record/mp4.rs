//! A finished recording copied into an MP4 file, for players and editors
//! that open neither WebM nor Matroska (QuickTime, iOS, Windows' player,
//! Premiere, Resolve).
//!
//! Video is copied as it is (no re-encode) where MP4 takes it: H.264 and
//! AV1. VP8 does not fit MP4 (and VP9 in MP4 is opened by browsers only), so
//! those are encoded to H.264 ([`Mp4Video::Encode`], an export job). Audio is copied (Opus in MP4 plays in browsers and on Apple
//! devices from iOS 17 / Safari 17) or re-encoded to AAC ([`Mp4Audio::Aac`])
//! for every other player. The file is written with `faststart` (the index,
//! `moov`, before the media) so it plays while it downloads; that needs a
//! second pass over the file inside FFmpeg's trailer, so the result exists
//! only once the whole file is written.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use ffmpeg_next as ff;
use ffmpeg_sys_next as sys;

use super::muxer::MuxError;
use crate::media::transcode::audio::{AacPacket, Transcoder};
use crate::media::transcode::video::{H264Out, VideoSettings, VideoTranscoder};
use crate::media::{Codec, MediaKind, probe};

/// What happens to a recording's Opus track in the MP4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mp4Audio {
    /// Copied as Opus: smallest and exact, but Windows' players, DaVinci
    /// Resolve, Premiere and Apple devices before iOS 17 play it silent or
    /// refuse the file.
    Opus,
    /// Re-encoded to AAC-LC (FFmpeg's native encoder): plays everywhere.
    Aac,
}

/// AAC bit rate of [`Mp4Audio::Aac`]: transparent for speech and music in stereo.
const AAC_BITRATE: u32 = 160_000;

/// What happens to a recording's video track in the MP4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mp4Video {
    /// Copied (H.264, AV1).
    Copy,
    /// Decoded and encoded to H.264 with libx264 on one thread at constant
    /// quality `crf` (23 is x264's default, visually close to the source),
    /// every picture fitted into the largest size the recording has (a
    /// browser starts small and ramps up; one MP4 track has one size).
    Encode {
        /// x264's constant rate factor (lower is better and bigger).
        crf: u8,
    },
}

/// How far a conversion is, readable from another thread while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Microseconds of the recording written so far.
    pub done_us: AtomicI64,
    /// The recording's length in microseconds (0 until known).
    pub total_us: AtomicI64,
}

impl Progress {
    /// Done, from 0 to 1 (0 while the length is unknown).
    pub fn fraction(&self) -> f64 {
        let total = self.total_us.load(Ordering::Relaxed);
        if total <= 0 {
            return 0.0;
        }
        (self.done_us.load(Ordering::Relaxed) as f64 / total as f64).clamp(0.0, 1.0)
    }
}

/// IDR interval of an encoded MP4 (seeking lands within this).
const EXPORT_KEYINT_US: i64 = 2_000_000;

/// Which recordings can be remuxed into MP4 without encoding.
pub fn remuxable(video: Option<Codec>) -> bool {
    matches!(video, None | Some(Codec::H264) | Some(Codec::Av1))
}

/// What a remux produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mp4Stats {
    /// Video packets written.
    pub video_packets: u64,
    /// Audio packets written (AAC frames with [`Mp4Audio::Aac`]).
    pub audio_packets: u64,
}

fn ff_err(what: &'static str) -> impl FnOnce(ff::Error) -> MuxError {
    move |source| MuxError::Ffmpeg { what, source }
}

/// The ways a remux fails before or while writing.
fn unsupported(msg: impl Into<String>) -> MuxError {
    MuxError::Unsupported(msg.into())
}

/// Copies the recording `input` (WebM / Matroska) into a new MP4 file at
/// `output` with the index first, the video copied or encoded per `video`.
/// Reports how far it is in `progress` and checks `cancel` between packets.
/// On an error or cancel, `output` may hold a partial file: the caller
/// writes to a temporary name and removes it. Blocks (file I/O, encoding):
/// run it off the async runtime.
pub fn convert(
    input: &Path,
    output: &Path,
    video: Mp4Video,
    audio: Mp4Audio,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<Mp4Stats, MuxError> {
    ff::init().map_err(ff_err("initialising FFmpeg"))?;
    let mut ictx = ff::format::input(input).map_err(ff_err("opening the recording"))?;
    if ictx.duration() > 0 {
        progress.total_us.store(
            rescale(
                ictx.duration(),
                ff::Rational::new(1, ff::ffi::AV_TIME_BASE),
                US,
            ),
            Ordering::Relaxed,
        );
    }
    let largest = match video {
        Mp4Video::Copy => None,
        Mp4Video::Encode { .. } => Some(largest_picture(input, cancel)?),
    };
    let mut octx = ff::format::output_as(output, "mp4").map_err(ff_err("creating the MP4"))?;

    // (input index, output index, input time base) of each copied track, and
    // the AAC encoder in place of the Opus track.
    let mut copied: Vec<(usize, usize, ff::Rational)> = Vec::new();
    let mut aac: Option<(usize, usize, ff::Rational, Transcoder)> = None;
    // The H.264 encoder in place of the video track.
    let mut encoder: Option<(usize, usize, ff::Rational, VideoTranscoder)> = None;
    let mut video_out = None;
    let mut audio_taken = false;
    for st in ictx.streams() {
        let par = st.parameters();
        match par.medium() {
            ff::media::Type::Video => {
                if video_out.is_some() {
                    continue;
                }
                if let (Mp4Video::Encode { crf }, Some((codec, size))) = (video, largest) {
                    let t = VideoTranscoder::new(
                        codec,
                        VideoSettings {
                            encoder: "libx264".into(),
                            bitrate: 0,
                            keyint_us: EXPORT_KEYINT_US,
                            size,
                            file_crf: Some(crf),
                        },
                    )
                    .map_err(|e| unsupported(format!("cannot encode H.264: {e}")))?;
                    let mut out = octx
                        .add_stream(ff::codec::Id::None)
                        .map_err(ff_err("adding the video track"))?;
                    // SAFETY: the stream was just created; its codecpar is valid and empty.
                    unsafe {
                        let p = (*out.as_mut_ptr()).codecpar;
                        (*p).codec_type = sys::AVMediaType::AVMEDIA_TYPE_VIDEO;
                        (*p).codec_id = sys::AVCodecID::AV_CODEC_ID_H264;
                        (*p).width = size.0;
                        (*p).height = size.1;
                        crate::media::extradata::set(p, &t.extradata())
                            .map_err(|e| unsupported(e.to_string()))?;
                    }
                    out.set_time_base(ff::Rational::new(1, 90_000));
                    video_out = Some(out.index());
                    encoder = Some((st.index(), out.index(), st.time_base(), t));
                    continue;
                }
                if !matches!(par.id(), ff::codec::Id::H264 | ff::codec::Id::AV1) {
                    return Err(unsupported(format!(
                        "{:?} video cannot go into MP4 without re-encoding; export the recording instead",
                        par.id()
                    )));
                }
            }
            ff::media::Type::Audio => {
                if audio_taken {
                    continue; // one audio track
                }
                audio_taken = true;
                if audio == Mp4Audio::Aac {
                    let t = Transcoder::new(AAC_BITRATE)
                        .map_err(|e| unsupported(format!("cannot encode AAC: {e}")))?;
                    let mut out = octx
                        .add_stream(ff::codec::Id::None)
                        .map_err(ff_err("adding the audio track"))?;
                    // SAFETY: the stream was just created; its codecpar is valid and empty.
                    unsafe {
                        let p = (*out.as_mut_ptr()).codecpar;
                        (*p).codec_type = sys::AVMediaType::AVMEDIA_TYPE_AUDIO;
                        (*p).codec_id = sys::AVCodecID::AV_CODEC_ID_AAC;
                        (*p).sample_rate = 48_000;
                        (*p).frame_size = 1024;
                        (*p).bit_rate = i64::from(AAC_BITRATE);
                        (*p).initial_padding = t.priming() as i32;
                        sys::av_channel_layout_default(&mut (*p).ch_layout, 2);
                        crate::media::extradata::set(p, &t.extradata())
                            .map_err(|e| unsupported(e.to_string()))?;
                    }
                    out.set_time_base(ff::Rational::new(1, 48_000));
                    aac = Some((st.index(), out.index(), st.time_base(), t));
                    continue;
                }
            }
            _ => continue,
        }
        let mut out = octx
            .add_stream(ff::codec::Id::None)
            .map_err(ff_err("adding a track"))?;
        out.set_parameters(par);
        // SAFETY: plain field access on a valid stream; Matroska's codec tags
        // mean nothing to the MP4 muxer, which picks its own.
        unsafe {
            (*(*out.as_mut_ptr()).codecpar).codec_tag = 0;
        }
        out.set_time_base(st.time_base());
        if st.parameters().medium() == ff::media::Type::Video {
            video_out = Some(out.index());
        }
        copied.push((st.index(), out.index(), st.time_base()));
    }
    if copied.is_empty() && aac.is_none() && encoder.is_none() {
        return Err(unsupported("the recording has no audio or video track"));
    }
    let mut dict = ff::Dictionary::new();
    dict.set("movflags", "+faststart");
    octx.write_header_with(dict)
        .map_err(ff_err("writing the MP4 header"))?;

    let mut stats = Mp4Stats {
        video_packets: 0,
        audio_packets: 0,
    };
    let mut last_dts: Vec<Option<i64>> = vec![None; octx.nb_streams() as usize];
    let mut encoded: Vec<AacPacket> = Vec::new();
    let mut pictures: Vec<H264Out> = Vec::new();
    for (stream, mut packet) in ictx.packets() {
        if cancel.load(Ordering::Relaxed) {
            return Err(unsupported("cancelled"));
        }
        if let Some(pts) = packet.pts().or(packet.dts()) {
            progress
                .done_us
                .fetch_max(rescale(pts, stream.time_base(), US), Ordering::Relaxed);
        }
        if let Some((in_index, out_index, in_tb, t)) = encoder.as_mut()
            && stream.index() == *in_index
        {
            let (Some(pts), Some(data)) = (packet.pts().or(packet.dts()), packet.data()) else {
                continue;
            };
            t.push(rescale(pts, *in_tb, US), data, &mut pictures)
                .map_err(|e| unsupported(format!("encoding H.264: {e}")))?;
            let out_index = *out_index;
            stats.video_packets += write_h264(&mut octx, out_index, &mut pictures)?;
            continue;
        }
        if let Some((in_index, out_index, in_tb, t)) = aac.as_mut()
            && stream.index() == *in_index
        {
            let Some(pts) = packet.pts().or(packet.dts()) else {
                continue;
            };
            let pos = rescale(pts, *in_tb, ff::Rational(1, 48_000));
            let Some(data) = packet.data() else { continue };
            t.push(pos, data, &mut encoded)
                .map_err(|e| unsupported(format!("encoding AAC: {e}")))?;
            let out_index = *out_index;
            stats.audio_packets += write_aac(&mut octx, out_index, &mut encoded)?;
            continue;
        }
        let Some(&(_, out_index, in_tb)) = copied.iter().find(|c| c.0 == stream.index()) else {
            continue;
        };
        let Some(out_tb) = octx.stream(out_index).map(|s| s.time_base()) else {
            continue;
        };
        packet.rescale_ts(in_tb, out_tb);
        // The MP4 muxer refuses non-increasing DTS; recordings have none, but
        // a repaired one may.
        if let (Some(d), Some(last)) = (packet.dts(), last_dts[out_index])
            && d <= last
        {
            packet.set_dts(Some(last + 1));
            packet.set_pts(Some(packet.pts().map_or(last + 1, |p| p.max(last + 1))));
        }
        last_dts[out_index] = packet.dts();
        packet.set_stream(out_index);
        packet.set_position(-1);
        packet
            .write_interleaved(&mut octx)
            .map_err(ff_err("writing a frame"))?;
        if Some(out_index) == video_out {
            stats.video_packets += 1;
        } else {
            stats.audio_packets += 1;
        }
    }
    if let Some((_, out_index, _, t)) = encoder.as_mut() {
        t.finish(&mut pictures)
            .map_err(|e| unsupported(format!("encoding H.264: {e}")))?;
        let out_index = *out_index;
        stats.video_packets += write_h264(&mut octx, out_index, &mut pictures)?;
    }
    if let Some((_, out_index, _, t)) = aac.as_mut() {
        t.finish(&mut encoded)
            .map_err(|e| unsupported(format!("encoding AAC: {e}")))?;
        let out_index = *out_index;
        stats.audio_packets += write_aac(&mut octx, out_index, &mut encoded)?;
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(unsupported("cancelled"));
    }
    octx.write_trailer()
        .map_err(ff_err("finishing the MP4 (moving the index to the front)"))?;
    Ok(stats)
}

/// Writes the AAC frames the encoder has made (and empties `encoded`).
fn write_aac(
    octx: &mut ff::format::context::Output,
    index: usize,
    encoded: &mut Vec<AacPacket>,
) -> Result<u64, MuxError> {
    let Some(out_tb) = octx.stream(index).map(|s| s.time_base()) else {
        return Ok(0);
    };
    let mut n = 0;
    for a in encoded.drain(..) {
        let mut pkt = ff::Packet::copy(&a.data);
        let tb48 = ff::Rational::new(1, 48_000);
        let ts = rescale(a.pts, tb48, out_tb);
        pkt.set_pts(Some(ts));
        pkt.set_dts(Some(ts));
        pkt.set_duration(rescale(a.duration, tb48, out_tb));
        pkt.set_stream(index);
        pkt.set_flags(ff::packet::Flags::KEY);
        pkt.write_interleaved(octx)
            .map_err(ff_err("writing an AAC frame"))?;
        n += 1;
    }
    Ok(n)
}

/// Writes the H.264 access units the encoder has made (and empties `pictures`).
fn write_h264(
    octx: &mut ff::format::context::Output,
    index: usize,
    pictures: &mut Vec<H264Out>,
) -> Result<u64, MuxError> {
    let Some(out_tb) = octx.stream(index).map(|s| s.time_base()) else {
        return Ok(0);
    };
    let mut n = 0;
    for p in pictures.drain(..) {
        let mut pkt = ff::Packet::copy(&p.data);
        let ts = rescale(p.us, US, out_tb);
        pkt.set_pts(Some(ts));
        pkt.set_dts(Some(ts));
        pkt.set_stream(index);
        if p.keyframe {
            pkt.set_flags(ff::packet::Flags::KEY);
        }
        pkt.write_interleaved(octx)
            .map_err(ff_err("writing an H.264 frame"))?;
        n += 1;
    }
    Ok(n)
}

/// The video codec of a recording and the largest picture in it (every
/// keyframe's header read, nothing decoded), as an even output size.
fn largest_picture(input: &Path, cancel: &AtomicBool) -> Result<(Codec, (i32, i32)), MuxError> {
    let mut ictx = ff::format::input(input).map_err(ff_err("opening the recording"))?;
    let stream = ictx
        .streams()
        .best(ff::media::Type::Video)
        .ok_or_else(|| unsupported("the recording has no video to encode"))?;
    let index = stream.index();
    let id = stream.parameters().id();
    let codec = super::muxer::codec_of(id)
        .filter(|c| c.kind() == MediaKind::Video)
        .ok_or_else(|| unsupported(format!("cannot decode {id:?} video")))?;
    let (mut w, mut h) = (0u32, 0u32);
    for (s, packet) in ictx.packets() {
        if cancel.load(Ordering::Relaxed) {
            return Err(unsupported("cancelled"));
        }
        if s.index() != index || !packet.is_key() {
            continue;
        }
        if let Some((pw, ph)) = packet.data().and_then(|d| probe::picture_size(codec, d)) {
            w = w.max(pw);
            h = h.max(ph);
        }
    }
    if w < 2 || h < 2 {
        return Err(unsupported("no readable keyframe in the recording"));
    }
    Ok((codec, (even(w), even(h))))
}

/// Rounds down to an even number of at least 2 (4:2:0 needs even sizes).
fn even(v: u32) -> i32 {
    (v.min(16_384) as i32 & !1).max(2)
}

/// Microseconds.
const US: ff::Rational = ff::Rational(1, 1_000_000);

fn rescale(v: i64, from: ff::Rational, to: ff::Rational) -> i64 {
    // SAFETY: pure arithmetic.
    unsafe { sys::av_rescale_q(v, from.into(), to.into()) }
}
