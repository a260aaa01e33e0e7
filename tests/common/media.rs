//! Real encoded test media, made with the `ffmpeg` CLI at test time and cached per process.
//!
//! Video is a 320x240, 30 fps `testsrc` pattern; audio a 440 Hz Opus tone in 20 ms packets.
//! Frames come in the shape a WebRTC sender sends them, so that they survive str0m's
//! packetize/depacketize round trip byte for byte: H.264 access units without AUD, with
//! 4-byte start codes (SPS+PPS before every IDR); AV1 temporal units without the temporal
//! delimiter OBU. Encoding blocks the thread for a fraction of a second: call these before
//! starting peers, or from `tokio::task::spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::peer::VideoCodec;

/// Frame rate of the test video.
pub const FPS: u64 = 30;

/// One encoded frame (video) or packet (Opus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The encoded bytes.
    pub data: Vec<u8>,
    /// Timestamp from 0: 90 kHz for video, 48 kHz for audio.
    pub rtp_time: u64,
    /// Whether this is a keyframe (always false for audio).
    pub keyframe: bool,
}

type Cache = Mutex<HashMap<(Option<VideoCodec>, u32), Arc<OnceLock<Vec<EncodedFrame>>>>>;

/// The cache cell for a (codec or audio, seconds) key.
fn cell(key: (Option<VideoCodec>, u32)) -> Arc<OnceLock<Vec<EncodedFrame>>> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(key).or_default().clone()
}

/// `seconds` of 320x240 30 fps test pattern in `codec`, keyframe every 30 frames
/// (the first frame is one), timestamps at 90 kHz from 0. Panics if ffmpeg fails.
pub fn video_frames(codec: VideoCodec, seconds: u32) -> Vec<EncodedFrame> {
    cell((Some(codec), seconds))
        .get_or_init(|| encode_video(codec, seconds))
        .clone()
}

/// `seconds` of a 440 Hz tone as 20 ms Opus packets (48 kHz, mono), timestamps at 48 kHz
/// from 0 (960 per packet). Panics if ffmpeg fails.
pub fn opus_packets(seconds: u32) -> Vec<EncodedFrame> {
    cell((None, seconds))
        .get_or_init(|| encode_opus(seconds))
        .clone()
}

/// The AV1 encoder this machine's ffmpeg has, in order of preference.
pub fn av1_encoder() -> Option<&'static str> {
    static FOUND: OnceLock<Option<&'static str>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-encoders"])
            .output()
            .ok()?;
        let list = String::from_utf8_lossy(&out.stdout).into_owned();
        ["libaom-av1", "libsvtav1", "librav1e"]
            .into_iter()
            .find(|e| list.split_whitespace().any(|w| w == *e))
    })
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "castgate-media-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("creating a temp dir for test media");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs ffmpeg with `args` (after the common ones) and returns the output file's bytes.
fn ffmpeg(args: &[&str], out: &Path) -> Vec<u8> {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .arg(out)
        .output();
    let output = match status {
        Ok(o) => o,
        Err(e) => panic!("cannot run ffmpeg ({e}); install it with scripts/setup.sh --test"),
    };
    assert!(
        output.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(out).expect("reading ffmpeg's output")
}

/// Like [`video_frames`] at another picture size (not cached).
pub fn video_frames_sized(codec: VideoCodec, seconds: u32, size: &str) -> Vec<EncodedFrame> {
    encode_video_sized(codec, seconds, size)
}

/// `seconds` of a `size` picture in `codec` at a constant `kbps` (a test
/// pattern under moving noise, so the encoder spends what it is given): a
/// simulcast layer of a known bitrate (not cached).
pub fn video_frames_at(
    codec: VideoCodec,
    seconds: u32,
    size: &str,
    kbps: u32,
) -> Vec<EncodedFrame> {
    let rate = format!("{kbps}k");
    encode_video_with(
        codec,
        seconds,
        &format!("testsrc=size={size}:rate=30,noise=alls=40:allf=t+u"),
        &[
            "-b:v", &rate, "-minrate", &rate, "-maxrate", &rate, "-bufsize", &rate,
        ],
    )
}

/// The pictures of [`video_frames_at`] (`kbps` for its rate) with every
/// frame a keyframe, each about four times a frame of that clip (a
/// keyframe is that much larger than the frames between): what a publisher
/// sends when asked for a keyframe at any point.
pub fn intra_frames_at(
    codec: VideoCodec,
    seconds: u32,
    size: &str,
    kbps: u32,
) -> Vec<EncodedFrame> {
    let rate = format!("{}k", kbps * 4);
    encode_video_with(
        codec,
        seconds,
        &format!("testsrc=size={size}:rate=30,noise=alls=40:allf=t+u"),
        &[
            "-b:v",
            &rate,
            "-minrate",
            &rate,
            "-maxrate",
            &rate,
            "-bufsize",
            &rate,
            "-g",
            "1",
            "-keyint_min",
            "1",
        ],
    )
}

/// `seconds` of 640x360 H.264 at 30 fps that compresses badly (a test
/// pattern under moving noise) at about `kbps`: a large recording quickly.
pub fn h264_frames_heavy(seconds: u32, kbps: u32) -> Vec<EncodedFrame> {
    let rate = format!("{kbps}k");
    encode_video_with(
        VideoCodec::H264,
        seconds,
        "testsrc=size=640x360:rate=30,noise=alls=80:allf=t+u",
        &["-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate],
    )
}

/// `seconds` of a 640x360 picture in `codec` whose left half is red for
/// the first second and green after, and whose right half is blue: a
/// picture whose colours say which moment it shows (not cached).
pub fn colour_halves(codec: VideoCodec, seconds: u32) -> Vec<EncodedFrame> {
    encode_video_with(
        codec,
        seconds,
        "color=c=red:size=640x360:rate=30,\
         drawbox=x=0:y=0:w=320:h=360:color=green:t=fill:enable='gte(t,1)',\
         drawbox=x=320:y=0:w=320:h=360:color=blue:t=fill",
        &["-b:v", "500k"],
    )
}

fn encode_video(codec: VideoCodec, seconds: u32) -> Vec<EncodedFrame> {
    encode_video_sized(codec, seconds, "320x240")
}

fn encode_video_sized(codec: VideoCodec, seconds: u32, size: &str) -> Vec<EncodedFrame> {
    let source = format!("testsrc=size={size}:rate=30");
    encode_video_with(codec, seconds, &source, &["-b:v", "500k"])
}

/// `seconds` of the lavfi `source` encoded in `codec` with the rate options
/// `rate` (keyframe every 30 frames, frames as a WebRTC sender sends them).
fn encode_video_with(
    codec: VideoCodec,
    seconds: u32,
    source: &str,
    rate: &[&str],
) -> Vec<EncodedFrame> {
    let dir = TempDir::new();
    let duration = seconds.to_string();
    let mut args: Vec<&str> = vec![
        "-f",
        "lavfi",
        "-i",
        source,
        "-t",
        &duration,
        "-pix_fmt",
        "yuv420p",
        "-g",
        "30",
        "-keyint_min",
        "30",
    ];
    args.extend_from_slice(rate);
    // No alt-ref / lag: one shown frame per packet, in order, as a real-time encoder does.
    let frames = match codec {
        VideoCodec::Vp8 => {
            args.extend([
                "-c:v",
                "libvpx",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-auto-alt-ref",
                "0",
                "-lag-in-frames",
                "0",
                "-f",
                "ivf",
            ]);
            parse_ivf(&ffmpeg(&args, &dir.0.join("v.ivf")), vp8_keyframe)
        }
        VideoCodec::Vp9 => {
            args.extend([
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-auto-alt-ref",
                "0",
                "-lag-in-frames",
                "0",
                "-f",
                "ivf",
            ]);
            parse_ivf(&ffmpeg(&args, &dir.0.join("v.ivf")), vp9_keyframe)
        }
        VideoCodec::H264 => {
            args.extend([
                "-c:v",
                "libx264",
                "-profile:v",
                "baseline",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-sc_threshold",
                "0",
                "-bsf:v",
                "dump_extra=freq=keyframe,h264_metadata=aud=insert",
                "-f",
                "h264",
            ]);
            parse_h264(&ffmpeg(&args, &dir.0.join("v.h264")))
        }
        VideoCodec::Av1 => {
            let encoder = av1_encoder().expect("ffmpeg has no AV1 encoder (libaom/svt/rav1e)");
            args.extend(["-c:v", encoder]);
            match encoder {
                "libaom-av1" => args.extend([
                    "-usage",
                    "realtime",
                    "-cpu-used",
                    "8",
                    "-lag-in-frames",
                    "0",
                    "-row-mt",
                    "1",
                ]),
                "libsvtav1" => args.extend(["-preset", "12", "-svtav1-params", "pred-struct=1"]),
                _ => args.extend(["-speed", "10", "-rav1e-params", "low_latency=true"]),
            }
            args.extend(["-f", "ivf"]);
            parse_ivf(&ffmpeg(&args, &dir.0.join("v.ivf")), av1_keyframe)
                .into_iter()
                .map(|mut f| {
                    f.data = av1_strip_temporal_delimiters(&f.data);
                    f
                })
                .collect()
        }
    };
    assert!(!frames.is_empty(), "ffmpeg made no {codec:?} frames");
    frames
}

fn encode_opus(seconds: u32) -> Vec<EncodedFrame> {
    let dir = TempDir::new();
    let duration = seconds.to_string();
    let args = [
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &duration,
        "-ac",
        "1",
        "-c:a",
        "libopus",
        "-b:a",
        "48k",
        "-frame_duration",
        "20",
        "-f",
        "ogg",
    ];
    let ogg = ffmpeg(&args, &dir.0.join("a.ogg"));
    let packets = opus_from_ogg(&ogg);
    assert!(!packets.is_empty(), "ffmpeg made no Opus packets");
    packets
}

/// A 320x240 VP8 clip whose picture flashes white for 0.1 s at every whole
/// second, and Opus audio that beeps (1 kHz) at the same instants: the A/V
/// sync probe.
pub fn flash_beep(seconds: u32) -> (Vec<EncodedFrame>, Vec<EncodedFrame>) {
    (flash_video(seconds, "320x240"), beep_audio(seconds))
}

/// The picture of [`flash_beep`] at `size`, in VP8 (a simulcast layer of it).
pub fn flash_video(seconds: u32, size: &str) -> Vec<EncodedFrame> {
    let dir = TempDir::new();
    let duration = seconds.to_string();
    let source =
        format!("color=c=black:s={size}:r=30,drawbox=c=white:t=fill:enable='lt(mod(t,1),0.1)'");
    let ivf = ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &source,
            "-t",
            &duration,
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-g",
            "30",
            "-b:v",
            "500k",
            "-f",
            "ivf",
        ],
        &dir.0.join("v.ivf"),
    );
    parse_ivf(&ivf, vp8_keyframe)
}

/// The sound of [`flash_beep`].
fn beep_audio(seconds: u32) -> Vec<EncodedFrame> {
    let dir = TempDir::new();
    let duration = seconds.to_string();
    let ogg = ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "aevalsrc='if(lt(mod(t,1),0.1),0.8*sin(2*PI*1000*t),0)':s=48000",
            "-t",
            &duration,
            "-ac",
            "1",
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            "-frame_duration",
            "20",
            "-f",
            "ogg",
        ],
        &dir.0.join("a.ogg"),
    );
    opus_from_ogg(&ogg)
}

/// The Opus packets of an Ogg file, timestamped at 48 kHz from 0.
fn opus_from_ogg(ogg: &[u8]) -> Vec<EncodedFrame> {
    let mut rtp_time = 0;
    parse_ogg_packets(ogg)
        .into_iter()
        .filter(|p| !p.starts_with(b"OpusHead") && !p.starts_with(b"OpusTags"))
        .map(|data| {
            let frame = EncodedFrame {
                rtp_time,
                keyframe: false,
                data,
            };
            rtp_time += opus_samples(&frame.data);
            frame
        })
        .collect()
}

fn le_u32(d: &[u8], at: usize) -> Option<u64> {
    let b = d.get(at..at + 4)?;
    Some(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
}

/// Frames of an IVF file; timestamps converted from the file's time base to 90 kHz.
fn parse_ivf(d: &[u8], keyframe: fn(&[u8]) -> bool) -> Vec<EncodedFrame> {
    assert!(d.starts_with(b"DKIF"), "not an IVF file");
    let header_len = d.get(6..8).map_or(32, |b| u16::from_le_bytes([b[0], b[1]])) as usize;
    let rate = le_u32(d, 16).unwrap_or(FPS).max(1);
    let scale = le_u32(d, 20).unwrap_or(1);
    let mut frames = Vec::new();
    let mut at = header_len;
    while let (Some(size), Some(lo), Some(hi)) =
        (le_u32(d, at), le_u32(d, at + 4), le_u32(d, at + 8))
    {
        let pts = lo | (hi << 32);
        let start = at + 12;
        let Some(data) = d.get(start..start + size as usize) else {
            break;
        };
        frames.push(EncodedFrame {
            data: data.to_vec(),
            rtp_time: pts * 90_000 * scale / rate,
            keyframe: keyframe(data),
        });
        at = start + size as usize;
    }
    frames
}

/// VP8: bit 0 of the first byte is 0 on a keyframe.
fn vp8_keyframe(d: &[u8]) -> bool {
    d.first().is_some_and(|b| b & 1 == 0)
}

/// VP9: frame_type of the uncompressed header is 0 (and not show_existing_frame).
fn vp9_keyframe(d: &[u8]) -> bool {
    let Some(&b) = d.first() else { return false };
    let bit = |i: u32| (b >> (7 - i)) & 1;
    if (b >> 6) != 0b10 {
        return false; // frame_marker
    }
    let profile = (bit(3) << 1) | bit(2);
    let mut i = 4;
    if profile == 3 {
        i += 1; // reserved_zero
    }
    let show_existing_frame = bit(i);
    show_existing_frame == 0 && bit(i + 1) == 0
}

/// One OBU of an AV1 low-overhead bitstream: (type, whole OBU bytes, payload bytes).
fn av1_obus(d: &[u8]) -> Vec<(u8, &[u8], &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(&h) = d.get(at) {
        let obu_type = (h >> 3) & 0x0f;
        let ext = h & 0x04 != 0;
        let has_size = h & 0x02 != 0;
        let mut p = at + 1 + usize::from(ext);
        let size = if has_size {
            let mut v = 0usize;
            let mut shift = 0;
            loop {
                let Some(&b) = d.get(p) else { return out };
                p += 1;
                v |= usize::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 || shift > 56 {
                    break;
                }
            }
            v
        } else {
            d.len().saturating_sub(p)
        };
        let (Some(whole), Some(payload)) = (d.get(at..p + size), d.get(p..p + size)) else {
            return out;
        };
        out.push((obu_type, whole, payload));
        at = p + size;
    }
    out
}

/// AV1: the temporal unit has a frame (header) OBU with show_existing_frame = 0 and
/// frame_type = KEY_FRAME (assumes reduced_still_picture_header = 0, as encoders emit).
fn av1_keyframe(d: &[u8]) -> bool {
    av1_obus(d)
        .into_iter()
        .find(|(t, _, _)| *t == 3 || *t == 6)
        .and_then(|(_, _, payload)| payload.first().copied())
        .is_some_and(|b| b & 0x80 == 0 && (b >> 5) & 0x03 == 0)
}

/// Drops temporal delimiter OBUs (type 2), which RTP senders must not send (RFC AV1 RTP §5).
pub fn av1_strip_temporal_delimiters(d: &[u8]) -> Vec<u8> {
    av1_obus(d)
        .into_iter()
        .filter(|(t, _, _)| *t != 2)
        .flat_map(|(_, whole, _)| whole.iter().copied())
        .collect()
}

/// The NAL units of an Annex-B stream, without start codes.
fn annexb_nals(d: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new(); // (start code position, payload position)
    let mut i = 0;
    while i + 3 <= d.len() {
        if d[i] == 0 && d[i + 1] == 0 && d[i + 2] == 1 {
            let sc = if i > 0 && d[i - 1] == 0 { i - 1 } else { i };
            starts.push((sc, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &(_, p))| {
            let end = starts.get(n + 1).map_or(d.len(), |&(sc, _)| sc);
            &d[p..end.max(p)]
        })
        .filter(|nal| !nal.is_empty())
        .collect()
}

/// Access units of an Annex-B stream with an AUD (type 9) before each; AUDs dropped,
/// NALs re-joined with 4-byte start codes; keyframe = contains an IDR slice (type 5).
fn parse_h264(d: &[u8]) -> Vec<EncodedFrame> {
    let mut frames: Vec<EncodedFrame> = Vec::new();
    let mut current: Option<EncodedFrame> = None;
    for nal in annexb_nals(d) {
        let nal_type = nal[0] & 0x1f;
        if nal_type == 9 {
            frames.extend(current.take());
            let rtp_time = frames.len() as u64 * (90_000 / FPS);
            current = Some(EncodedFrame {
                data: Vec::new(),
                rtp_time,
                keyframe: false,
            });
            continue;
        }
        let frame = current.get_or_insert_with(|| EncodedFrame {
            data: Vec::new(),
            rtp_time: 0,
            keyframe: false,
        });
        frame.data.extend_from_slice(&[0, 0, 0, 1]);
        frame.data.extend_from_slice(nal);
        frame.keyframe |= nal_type == 5;
    }
    frames.extend(current);
    frames.retain(|f| !f.data.is_empty());
    frames
}

/// Packets of an Ogg stream (single logical stream), in order.
fn parse_ogg_packets(d: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut partial = Vec::new();
    let mut at = 0;
    while d.get(at..at + 4) == Some(b"OggS") {
        let Some(&nseg) = d.get(at + 26) else { break };
        let table_start = at + 27;
        let Some(table) = d.get(table_start..table_start + usize::from(nseg)) else {
            break;
        };
        let mut p = table_start + usize::from(nseg);
        for &lace in table {
            let Some(seg) = d.get(p..p + usize::from(lace)) else {
                return packets;
            };
            partial.extend_from_slice(seg);
            p += usize::from(lace);
            if lace < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        at = p;
    }
    packets
}

/// Samples (at 48 kHz) in an Opus packet, from its TOC byte (RFC 6716 §3.1).
fn opus_samples(p: &[u8]) -> u64 {
    let Some(&toc) = p.first() else { return 0 };
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let count = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => p.get(1).map_or(1, |b| u64::from(b & 0x3f)),
    };
    frame * count
}
