//! Writes encoded frames into a WebM / Matroska file through FFmpeg's
//! matroska muxer (via `ffmpeg-next`), set up for crash safety:
//!
//! * clusters close every `cluster_ms` and the I/O buffer is flushed after
//!   every frame, so a crash loses at most the open cluster;
//! * `reserve_index_space` keeps room before the first cluster, so at a clean
//!   stop the Cues land at the front without rewriting the file;
//! * frames are written with `av_write_frame` (no muxer-side interleaving):
//!   [`crate::media::timeline::Interleaver`] has already ordered them, so audio is
//!   never held back waiting for video.
//!
//! H.264 can go into fragmented MP4 instead (`record.h264_container =
//! "mp4"`): a fragment per keyframe and at least every `cluster_ms`, the
//! same crash bound; see [`super::fmp4`] for the repair.

use std::path::Path;

use ffmpeg_next as ff;
use ffmpeg_sys_next as sys;

use crate::media::{Codec, CodecParams, extradata, opus};

/// Why writing failed.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// FFmpeg refused (includes I/O errors such as a full disk).
    #[error("{what}: {source}")]
    Ffmpeg {
        /// What was being done.
        what: &'static str,
        /// FFmpeg's error.
        source: ff::Error,
    },
    /// A codec castgate cannot put in this container.
    #[error("{0}")]
    Unsupported(String),
}

fn ff_err(what: &'static str) -> impl FnOnce(ff::Error) -> MuxError {
    move |source| MuxError::Ffmpeg { what, source }
}

/// A video track's setup.
#[derive(Debug, Clone)]
pub struct VideoTrack {
    /// Codec parameters from the stream.
    pub params: CodecParams,
    /// Coded size.
    pub width: u32,
    /// Coded size.
    pub height: u32,
    /// Codec private data source: Annex-B SPS+PPS for H.264, the sequence
    /// header OBU for AV1 (the muxer turns them into avcC / av1C).
    pub extradata: Vec<u8>,
}

/// An audio track's setup.
#[derive(Debug, Clone)]
pub struct AudioTrack {
    /// Codec parameters from the stream.
    pub params: CodecParams,
    /// Channels actually sent (from the first Opus packet's TOC).
    pub channels: u8,
}

/// Muxer settings.
#[derive(Debug, Clone, Copy)]
pub struct MuxOptions {
    /// Longest cluster (MP4: fragment) in milliseconds (bounds what a crash loses).
    pub cluster_ms: u32,
    /// Bytes reserved before the first cluster for the Cues.
    pub reserve_index_bytes: u32,
    /// H.264 into fragmented MP4 instead of Matroska.
    pub h264_mp4: bool,
}

/// Opus encoders' look-ahead at 48 kHz (libopus): signalled as pre-skip and
/// Matroska CodecDelay so players trim it and audio lines up with video.
const OPUS_PRE_SKIP: u16 = 312;

/// An open recording file.
pub struct Muxer {
    octx: ff::format::context::Output,
    video: Option<usize>,
    audio: Option<usize>,
    /// Last timestamp written per stream (in its time base): kept strictly
    /// increasing, since two frames in the same millisecond would otherwise
    /// share one and players refuse non-increasing timestamps.
    last_ts: [Option<i64>; 2],
    bytes: u64,
    /// Fragmented MP4: the last frame of each track, written when the next
    /// one comes (or at the end), and the last duration seen.
    held: Option<[(Option<Held>, i64); 2]>,
}

impl std::fmt::Debug for Muxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxer").field("bytes", &self.bytes).finish()
    }
}

/// WebM for VP8/VP9/AV1 (+Opus), Matroska for H.264 (or fragmented MP4
/// with `h264_mp4`): FFmpeg's format name and the file extension.
pub fn container_for(video: Option<Codec>, h264_mp4: bool) -> (&'static str, &'static str) {
    match video {
        Some(Codec::H264) if h264_mp4 => ("mp4", "mp4"),
        Some(Codec::H264) => ("matroska", "mkv"),
        _ => ("webm", "webm"),
    }
}

/// A frame held back by a fragmented-MP4 muxer until the next one of its
/// track gives its duration (each fragment's last sample needs one).
#[derive(Debug)]
struct Held {
    ts: i64,
    keyframe: bool,
    data: Vec<u8>,
}

fn codec_id(c: Codec) -> sys::AVCodecID {
    match c {
        Codec::Vp8 => sys::AVCodecID::AV_CODEC_ID_VP8,
        Codec::Vp9 => sys::AVCodecID::AV_CODEC_ID_VP9,
        Codec::H264 => sys::AVCodecID::AV_CODEC_ID_H264,
        Codec::Av1 => sys::AVCodecID::AV_CODEC_ID_AV1,
        Codec::Opus => sys::AVCodecID::AV_CODEC_ID_OPUS,
    }
}

/// castgate's codec for one FFmpeg names in a file (`None`: not one of castgate's).
pub(crate) fn codec_of(id: ff::codec::Id) -> Option<Codec> {
    Some(match id {
        ff::codec::Id::VP8 => Codec::Vp8,
        ff::codec::Id::VP9 => Codec::Vp9,
        ff::codec::Id::AV1 => Codec::Av1,
        ff::codec::Id::H264 => Codec::H264,
        ff::codec::Id::OPUS => Codec::Opus,
        _ => return None,
    })
}

impl Muxer {
    /// Creates the file and writes its header.
    pub fn create(
        path: &Path,
        video: Option<&VideoTrack>,
        audio: Option<&AudioTrack>,
        opts: MuxOptions,
    ) -> Result<Muxer, MuxError> {
        ff::init().map_err(ff_err("initialising FFmpeg"))?;
        let (format, _) = container_for(video.map(|v| v.params.codec), opts.h264_mp4);
        let fragmented = format == "mp4";
        let mut octx = ff::format::output_as(path, format).map_err(ff_err("creating the file"))?;
        let mut video_index = None;
        let mut audio_index = None;
        if let Some(v) = video {
            let mut st = octx
                .add_stream(ff::codec::Id::None)
                .map_err(ff_err("adding the video track"))?;
            video_index = Some(st.index());
            // SAFETY: the stream was just created; its codecpar is valid and empty.
            unsafe {
                let par = (*st.as_mut_ptr()).codecpar;
                (*par).codec_type = sys::AVMediaType::AVMEDIA_TYPE_VIDEO;
                (*par).codec_id = codec_id(v.params.codec);
                (*par).width = v.width as i32;
                (*par).height = v.height as i32;
                extradata::set(par, &v.extradata)
                    .map_err(|e| MuxError::Unsupported(e.to_string()))?;
                (*st.as_mut_ptr()).time_base = sys::AVRational { num: 1, den: 1000 };
            }
        }
        if let Some(a) = audio {
            if a.params.codec != Codec::Opus {
                return Err(MuxError::Unsupported(format!(
                    "cannot record {} audio",
                    a.params.codec.name()
                )));
            }
            let mut st = octx
                .add_stream(ff::codec::Id::None)
                .map_err(ff_err("adding the audio track"))?;
            audio_index = Some(st.index());
            // SAFETY: as above.
            unsafe {
                let par = (*st.as_mut_ptr()).codecpar;
                (*par).codec_type = sys::AVMediaType::AVMEDIA_TYPE_AUDIO;
                (*par).codec_id = codec_id(Codec::Opus);
                (*par).sample_rate = 48_000;
                sys::av_channel_layout_default(&mut (*par).ch_layout, i32::from(a.channels));
                (*par).initial_padding = i32::from(OPUS_PRE_SKIP);
                extradata::set(par, &opus::head(a.channels, OPUS_PRE_SKIP))
                    .map_err(|e| MuxError::Unsupported(e.to_string()))?;
                (*st.as_mut_ptr()).time_base = sys::AVRational { num: 1, den: 1000 };
            }
        }
        let mut dict = ff::Dictionary::new();
        if fragmented {
            // ftyp + an empty moov first, then a moof + mdat per fragment: a
            // fragment ends at a keyframe or after `cluster_ms`.
            dict.set("movflags", "+frag_keyframe+empty_moov+default_base_moof");
            dict.set(
                "frag_duration",
                &(u64::from(opts.cluster_ms) * 1000).to_string(),
            );
        } else {
            dict.set("cluster_time_limit", &opts.cluster_ms.to_string());
            dict.set("cluster_size_limit", "4194304");
            dict.set("reserve_index_space", &opts.reserve_index_bytes.to_string());
        }
        octx.write_header_with(dict)
            .map_err(ff_err("writing the file header"))?;
        let mut m = Muxer {
            octx,
            video: video_index,
            audio: audio_index,
            last_ts: [None, None],
            bytes: 0,
            held: fragmented.then_some([(None, 0), (None, 0)]),
        };
        m.flush();
        Ok(m)
    }

    fn time_base(&self, index: usize) -> (i64, i64) {
        self.octx
            .stream(index)
            .map(|s| {
                let tb = s.time_base();
                (
                    i64::from(tb.numerator().max(1)),
                    i64::from(tb.denominator().max(1)),
                )
            })
            .unwrap_or((1, 1000))
    }

    /// Writes one frame at `us` microseconds from the start and flushes it to the OS.
    pub fn write(
        &mut self,
        video: bool,
        keyframe: bool,
        us: i64,
        data: &[u8],
    ) -> Result<(), MuxError> {
        let Some(index) = (if video { self.video } else { self.audio }) else {
            return Ok(());
        };
        if data.is_empty() {
            return Ok(());
        }
        let (num, den) = self.time_base(index);
        let mut ts = (i128::from(us) * i128::from(den) / (1_000_000 * i128::from(num))) as i64;
        let last = &mut self.last_ts[usize::from(!video)];
        if let Some(prev) = *last
            && ts <= prev
        {
            ts = prev + 1;
        }
        *last = Some(ts);
        let Some(held) = self.held.as_mut() else {
            self.write_packet(index, ts, None, keyframe, data)?;
            self.flush();
            return Ok(());
        };
        // Fragmented MP4: write the frame before, now that its duration is known.
        let (slot, last_duration) = &mut held[usize::from(!video)];
        let before = slot.replace(Held {
            ts,
            keyframe,
            data: data.to_vec(),
        });
        if let Some(b) = before {
            *last_duration = ts - b.ts;
            let d = *last_duration;
            self.write_packet(index, b.ts, Some(d), b.keyframe, &b.data)?;
            self.flush();
        }
        Ok(())
    }

    fn write_packet(
        &mut self,
        index: usize,
        ts: i64,
        duration: Option<i64>,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), MuxError> {
        let mut pkt = ff::Packet::copy(data);
        pkt.set_stream(index);
        pkt.set_pts(Some(ts));
        pkt.set_dts(Some(ts));
        if let Some(d) = duration {
            pkt.set_duration(d);
        }
        if keyframe {
            pkt.set_flags(ff::packet::Flags::KEY);
        }
        pkt.write(&mut self.octx)
            .map_err(ff_err("writing a frame"))?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Pushes FFmpeg's I/O buffer to the OS (not to the disk: see fsync).
    fn flush(&mut self) {
        // SAFETY: the context is open, so pb is valid (or null, which we skip).
        unsafe {
            let pb = (*self.octx.as_mut_ptr()).pb;
            if !pb.is_null() {
                sys::avio_flush(pb);
            }
        }
    }

    /// Payload bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes Cues, Duration and the trailer; the file is complete afterwards.
    pub fn finish(mut self) -> Result<(), MuxError> {
        if let Some(held) = self.held.take() {
            for (track, (slot, duration)) in held.into_iter().enumerate() {
                let index = if track == 0 { self.video } else { self.audio };
                if let (Some(h), Some(index)) = (slot, index) {
                    let d = if duration > 0 { duration } else { 20 };
                    self.write_packet(index, h.ts, Some(d), h.keyframe, &h.data)?;
                }
            }
        }
        self.octx
            .write_trailer()
            .map_err(ff_err("finishing the file"))?;
        self.flush();
        Ok(())
    }
}

/// Copies every packet of a (possibly truncated) Matroska/WebM file into a new,
/// complete file with Cues and Duration. Returns the packets copied.
pub fn remux(input: &Path, output: &Path, opts: MuxOptions) -> Result<u64, MuxError> {
    ff::init().map_err(ff_err("initialising FFmpeg"))?;
    let mut ictx = ff::format::input(input).map_err(ff_err("opening the damaged file"))?;
    let video = ictx
        .streams()
        .find(|s| s.parameters().medium() == ff::media::Type::Video)
        .map(|s| s.parameters().id());
    let (format, _) = container_for(video.and_then(codec_of), false);
    let mut octx =
        ff::format::output_as(output, format).map_err(ff_err("creating the repaired file"))?;
    let mut map = Vec::new();
    for st in ictx.streams() {
        let mut out = octx
            .add_stream(ff::codec::Id::None)
            .map_err(ff_err("adding a track"))?;
        out.set_parameters(st.parameters());
        // SAFETY: plain field access on a valid stream.
        unsafe {
            (*(*out.as_mut_ptr()).codecpar).codec_tag = 0;
        }
        out.set_time_base(st.time_base());
        map.push((st.index(), out.index(), st.time_base()));
    }
    let mut dict = ff::Dictionary::new();
    dict.set("reserve_index_space", &opts.reserve_index_bytes.to_string());
    dict.set("cluster_time_limit", &opts.cluster_ms.to_string());
    // Opus CodecDelay makes the demuxer hand out audio starting slightly below
    // zero; shift everything together instead of clamping one track.
    dict.set("avoid_negative_ts", "make_non_negative");
    octx.write_header_with(dict)
        .map_err(ff_err("writing the repaired header"))?;
    let mut count = 0u64;
    let mut last_dts: Vec<Option<i64>> = vec![None; map.len()];
    for (stream, mut packet) in ictx.packets() {
        let Some(&(_, out_index, in_tb)) = map.iter().find(|m| m.0 == stream.index()) else {
            continue;
        };
        let Some(out_tb) = octx.stream(out_index).map(|s| s.time_base()) else {
            continue;
        };
        packet.rescale_ts(in_tb, out_tb);
        // A damaged tail can repeat or reorder timestamps; keep them monotonic.
        if let (Some(d), Some(last)) = (packet.dts(), last_dts[out_index])
            && d < last
        {
            packet.set_dts(Some(last));
            packet.set_pts(Some(last));
        }
        last_dts[out_index] = packet.dts();
        packet.set_stream(out_index);
        packet.set_position(-1);
        if packet.write_interleaved(&mut octx).is_ok() {
            count += 1;
        }
    }
    octx.write_trailer()
        .map_err(ff_err("finishing the repaired file"))?;
    Ok(count)
}
