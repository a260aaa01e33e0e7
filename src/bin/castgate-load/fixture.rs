//! The media publishers send: a short clip encoded ONCE with the ffmpeg CLI at start-up
//! (then cached on disk by its parameters), parsed into frames, and looped.
//!
//! Video is 30 fps with a keyframe every 30 frames (1 s), so a publisher can answer a
//! keyframe request by jumping to the next keyframe; VP8 comes from IVF, H.264 from
//! Annex-B with an AUD before every access unit (AUDs dropped, SPS/PPS repeated on every
//! IDR). Audio is Opus (20 ms packets) from Ogg. Nothing is encoded during a run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::cli::VideoCodec;

/// Frames per second of the clip.
pub const FPS: u64 = 30;
/// Frames between keyframes (1 s).
pub const GOP: u64 = 30;
/// Length of the clip before it loops, in seconds.
pub const CLIP_SECS: u64 = 10;
/// RTP ticks (90 kHz) between two video frames.
pub const VIDEO_TICKS: u64 = 90_000 / FPS;

/// One encoded video frame (an IVF frame or an H.264 access unit in Annex-B).
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// The encoded bytes.
    pub data: Vec<u8>,
    /// Whether the frame is a keyframe (VP8 key frame / H.264 IDR with SPS+PPS).
    pub keyframe: bool,
}

/// One Opus packet and its length in 48 kHz samples.
#[derive(Debug, Clone)]
pub struct AudioPacket {
    /// The encoded bytes.
    pub data: Vec<u8>,
    /// Samples at 48 kHz (from the TOC byte).
    pub samples: u64,
}

/// The looped clip: video frames at [`FPS`] and Opus packets.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Video codec of `video`.
    pub codec: VideoCodec,
    /// Video frames in order; the first is a keyframe.
    pub video: Vec<VideoFrame>,
    /// Opus packets in order.
    pub audio: Vec<AudioPacket>,
    /// Measured video bitrate of the clip (kbit/s).
    pub video_kbps: f64,
    /// Measured audio bitrate of the clip (kbit/s).
    pub audio_kbps: f64,
}

impl Fixture {
    /// Loads the clip for these parameters from `dir`, making it with ffmpeg if missing.
    /// Blocking (runs ffmpeg): call it outside the async runtime or in `spawn_blocking`.
    pub fn load(
        dir: &Path,
        codec: VideoCodec,
        size: (u32, u32),
        kbps: u32,
    ) -> anyhow::Result<Fixture> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the fixture folder {}", dir.display()))?;
        let (w, h) = size;
        let ext = match codec {
            VideoCodec::Vp8 => "ivf",
            VideoCodec::H264 => "h264",
        };
        let video_file = dir.join(format!(
            "{}-{w}x{h}-{kbps}k-{FPS}fps-g{GOP}-{CLIP_SECS}s.{ext}",
            codec.name()
        ));
        let audio_file = dir.join(format!("opus-48k-20ms-{CLIP_SECS}s.ogg"));
        if !video_file.is_file() {
            encode_video(codec, size, kbps, &video_file)?;
        }
        if !audio_file.is_file() {
            encode_audio(&audio_file)?;
        }
        let vbytes = std::fs::read(&video_file)
            .with_context(|| format!("reading {}", video_file.display()))?;
        let abytes = std::fs::read(&audio_file)
            .with_context(|| format!("reading {}", audio_file.display()))?;
        let video = match codec {
            VideoCodec::Vp8 => parse_ivf(&vbytes)?,
            VideoCodec::H264 => parse_h264(&vbytes),
        };
        let audio = opus_from_ogg(&abytes);
        if video.len() < GOP as usize || !video[0].keyframe {
            bail!(
                "the clip {} has {} frames and must start with a keyframe; delete it to remake it",
                video_file.display(),
                video.len()
            );
        }
        if audio.is_empty() {
            bail!("the clip {} has no Opus packets", audio_file.display());
        }
        let vsum: usize = video.iter().map(|f| f.data.len()).sum();
        let asum: usize = audio.iter().map(|p| p.data.len()).sum();
        let vsecs = video.len() as f64 / FPS as f64;
        let asecs = audio.iter().map(|p| p.samples).sum::<u64>().max(1) as f64 / 48_000.0;
        Ok(Fixture {
            codec,
            video_kbps: vsum as f64 * 8.0 / 1000.0 / vsecs,
            audio_kbps: asum as f64 * 8.0 / 1000.0 / asecs,
            video,
            audio,
        })
    }

    /// Index of the first keyframe at or after `from` (wrapping around the clip).
    pub fn next_keyframe(&self, from: usize) -> usize {
        let n = self.video.len();
        (0..n)
            .map(|k| (from + k) % n)
            .find(|&i| self.video[i].keyframe)
            .unwrap_or(0)
    }
}

/// The default cache folder: the OS temp folder + `castgate-load-fixtures`.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("castgate-load-fixtures")
}

/// Runs ffmpeg writing to a temporary name next to `out`, then renames it into place (so
/// concurrent runs never read a half-written clip).
fn ffmpeg(args: &[String], out: &Path) -> anyhow::Result<()> {
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .arg(&tmp)
        .output()
        .context("running ffmpeg (install it with scripts/setup.sh)")?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "ffmpeg failed making {}: {}",
            out.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    std::fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn encode_video(
    codec: VideoCodec,
    (w, h): (u32, u32),
    kbps: u32,
    out: &Path,
) -> anyhow::Result<()> {
    let mut args = strings(&["-f", "lavfi", "-i"]);
    args.push(format!("testsrc2=size={w}x{h}:rate={FPS}"));
    args.extend(strings(&[
        "-t",
        &CLIP_SECS.to_string(),
        "-pix_fmt",
        "yuv420p",
    ]));
    args.extend(strings(&[
        "-g",
        &GOP.to_string(),
        "-keyint_min",
        &GOP.to_string(),
    ]));
    let rate = format!("{kbps}k");
    let buf = format!("{}k", kbps / 2);
    match codec {
        // CBR realtime, no alt-ref / lag: one shown frame per packet, as a live encoder.
        VideoCodec::Vp8 => args.extend(strings(&[
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            &rate,
            "-minrate",
            &rate,
            "-maxrate",
            &rate,
            "-auto-alt-ref",
            "0",
            "-lag-in-frames",
            "0",
            "-f",
            "ivf",
        ])),
        VideoCodec::H264 => args.extend(strings(&[
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-b:v",
            &rate,
            "-maxrate",
            &rate,
            "-bufsize",
            &buf,
            "-sc_threshold",
            "0",
            "-bsf:v",
            "dump_extra=freq=keyframe,h264_metadata=aud=insert",
            "-f",
            "h264",
        ])),
    }
    ffmpeg(&args, out)
}

fn encode_audio(out: &Path) -> anyhow::Result<()> {
    let args = strings(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &CLIP_SECS.to_string(),
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
    ]);
    ffmpeg(&args, out)
}

fn le_u32(d: &[u8], at: usize) -> Option<usize> {
    let b = d.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// VP8 frames of an IVF file (keyframe: bit 0 of the first byte is 0).
pub fn parse_ivf(d: &[u8]) -> anyhow::Result<Vec<VideoFrame>> {
    if !d.starts_with(b"DKIF") || d.len() < 32 {
        bail!("not an IVF file");
    }
    let header_len = usize::from(u16::from_le_bytes([d[6], d[7]]));
    let mut frames = Vec::new();
    let mut at = header_len;
    while let Some(size) = le_u32(d, at) {
        let start = at + 12;
        let Some(data) = d.get(start..start + size) else {
            break;
        };
        frames.push(VideoFrame {
            data: data.to_vec(),
            keyframe: data.first().is_some_and(|b| b & 1 == 0),
        });
        at = start + size;
    }
    Ok(frames)
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

/// H.264 access units of an Annex-B stream with an AUD (type 9) before each; AUDs
/// dropped, NALs re-joined with 4-byte start codes; keyframe = has an IDR slice (type 5).
pub fn parse_h264(d: &[u8]) -> Vec<VideoFrame> {
    let mut frames: Vec<VideoFrame> = Vec::new();
    let mut current: Option<VideoFrame> = None;
    for nal in annexb_nals(d) {
        let nal_type = nal[0] & 0x1f;
        if nal_type == 9 {
            frames.extend(current.take());
            current = Some(VideoFrame {
                data: Vec::new(),
                keyframe: false,
            });
            continue;
        }
        let frame = current.get_or_insert_with(|| VideoFrame {
            data: Vec::new(),
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

/// Packets of an Ogg stream (one logical stream), in order.
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

/// The Opus packets of an Ogg file (headers dropped).
pub fn opus_from_ogg(ogg: &[u8]) -> Vec<AudioPacket> {
    parse_ogg_packets(ogg)
        .into_iter()
        .filter(|p| !p.starts_with(b"OpusHead") && !p.starts_with(b"OpusTags") && !p.is_empty())
        .map(|data| AudioPacket {
            samples: opus_samples(&data),
            data,
        })
        .collect()
}

/// Samples (at 48 kHz) in an Opus packet, from its TOC byte (RFC 6716 §3.1).
pub fn opus_samples(p: &[u8]) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ivf_frames_and_keyframes() {
        let mut d = b"DKIF".to_vec();
        d.extend_from_slice(&[0, 0, 32, 0]);
        d.resize(32, 0);
        for first in [0x10u8, 0x11] {
            d.extend_from_slice(&3u32.to_le_bytes());
            d.extend_from_slice(&[0; 8]);
            d.extend_from_slice(&[first, 2, 3]);
        }
        let f = parse_ivf(&d).unwrap();
        assert_eq!(f.len(), 2);
        assert!(f[0].keyframe && !f[1].keyframe);
        assert_eq!(f[1].data, vec![0x11, 2, 3]);
        assert!(parse_ivf(b"nope").is_err());
    }

    #[test]
    fn h264_access_units_split_on_aud() {
        let d = [
            0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65,
            3, // AU 1
            0, 0, 0, 1, 9, 0xf0, 0, 0, 1, 0x41, 4, // AU 2
        ];
        let f = parse_h264(&d);
        assert_eq!(f.len(), 2);
        assert!(f[0].keyframe && !f[1].keyframe);
        assert_eq!(f[1].data, vec![0, 0, 0, 1, 0x41, 4]);
    }

    #[test]
    fn opus_toc_durations() {
        assert_eq!(opus_samples(&[0xfc]), 960); // CELT FB 20 ms, one frame
        assert_eq!(opus_samples(&[0x09]), 1920); // SILK NB 40 ms
        assert_eq!(opus_samples(&[0xfd]), 1920); // two 20 ms frames
        assert_eq!(opus_samples(&[]), 0);
    }

    #[test]
    fn next_keyframe_wraps() {
        let f = |k| VideoFrame {
            data: vec![0],
            keyframe: k,
        };
        let fx = Fixture {
            codec: VideoCodec::Vp8,
            video: vec![f(true), f(false), f(true), f(false)],
            audio: vec![],
            video_kbps: 0.0,
            audio_kbps: 0.0,
        };
        assert_eq!(fx.next_keyframe(1), 2);
        assert_eq!(fx.next_keyframe(3), 0);
        assert_eq!(fx.next_keyframe(2), 2);
    }
}
