//! Benchmark of issue 20's file work: MP4 copies, exports and pictures.
//! It prints figures; it asserts nothing.
//!
//! ```sh
//! cargo run --release --example bench_pictures              # about 5 minutes
//! cargo run --release --example bench_pictures -- --minutes 10 --export-secs 20
//! ```
//!
//! In a temporary folder it makes, with the ffmpeg CLI:
//! * an H.264 + Opus Matroska recording of `--minutes` (60) minutes, 1280x720
//!   30 fps at about 2.5 Mbit/s (one minute encoded, then repeated without
//!   re-encoding), and times [`castgate::record::mp4::convert`] copying it
//!   into a faststart MP4, with Opus copied and with AAC: wall time, CPU
//!   time of the thread, × real time;
//! * a VP8 + Opus WebM of `--export-secs` (30) seconds at 1280x720 30 fps
//!   and times an export (VP8 → H.264, one x264 thread, AAC): × real time;
//! * 1280x720 VP8 and H.264 streams, and times
//!   [`castgate::media::snapshot::jpeg_of`] on a keyframe alone and on a
//!   keyframe with the 59 frames after it (a 2 s group of pictures), scaled
//!   to 640x360: p50 / p99 latency and CPU per picture over 50 runs, as a
//!   snapshot request pays them;
//! * the poster and strip of the hour-long recording (seeks + keyframe decodes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, bail};
use castgate::media::Codec;
use castgate::media::snapshot;
use castgate::record::mp4::{self, Mp4Audio, Mp4Video, Progress};
use castgate::record::pictures;

struct Args {
    minutes: u32,
    export_secs: u32,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        minutes: 60,
        export_secs: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().context("a value after each option")?;
        match k.as_str() {
            "--minutes" => a.minutes = v.parse()?,
            "--export-secs" => a.export_secs = v.parse()?,
            other => bail!("unknown option {other} (--minutes, --export-secs)"),
        }
    }
    Ok(a)
}

fn ffmpeg(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .context("running ffmpeg")?;
    if !out.status.success() {
        bail!("ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// CPU seconds this thread has used.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Times `f`: (wall seconds, CPU seconds of this thread).
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (w, c) = (Instant::now(), thread_cpu());
    let out = f();
    (out, w.elapsed().as_secs_f64(), thread_cpu() - c)
}

fn duration_of(file: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0.0)
}

/// The frames of an IVF file (VP8), in order.
fn ivf_frames(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 32;
    while at + 12 <= data.len() {
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let Some(frame) = data.get(at + 12..at + 12 + len) else {
            break;
        };
        out.push(frame.to_vec());
        at += 12 + len;
    }
    out
}

/// The access units of an Annex-B H.264 stream with access unit delimiters.
fn h264_units(data: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 4 < data.len() {
        if data[i..i + 4] == [0, 0, 0, 1] && data[i + 4] & 0x1f == 9 {
            starts.push(i);
        }
        i += 1;
    }
    starts.push(data.len());
    starts
        .windows(2)
        .map(|w| data[w[0]..w[1]].to_vec())
        .collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn snapshot_figures(label: &str, codec: Codec, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    for (what, n) in [("keyframe alone", 1), ("keyframe + 59 frames", 60)] {
        let refs: Vec<&[u8]> = frames.iter().take(n).map(Vec::as_slice).collect();
        let (mut walls, mut cpus) = (Vec::new(), Vec::new());
        let mut size = (0, 0);
        for _ in 0..50 {
            let (pic, wall, cpu) = timed(|| snapshot::jpeg_of(codec, &refs, (640, 360), 4));
            let pic = pic?;
            size = (pic.width, pic.height);
            walls.push(wall * 1e3);
            cpus.push(cpu * 1e3);
        }
        println!(
            "snapshot {label} 1280x720, {what}: p50 {:.1} ms, p99 {:.1} ms, CPU p50 {:.1} ms → {}x{} JPEG",
            percentile(&mut walls, 0.5),
            percentile(&mut walls, 0.99),
            percentile(&mut cpus, 0.5),
            size.0,
            size.1
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = std::env::temp_dir().join(format!("castgate-bench-pictures-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let p = |n: &str| -> PathBuf { dir.join(n) };
    let s = |p: &PathBuf| p.to_string_lossy().to_string();
    let result = run(&a, &p, &s);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(
    a: &Args,
    p: &dyn Fn(&str) -> PathBuf,
    s: &dyn Fn(&PathBuf) -> String,
) -> anyhow::Result<()> {
    eprintln!("making the clips with ffmpeg…");
    let minute = p("minute.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "60",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-b:v",
        "2500k",
        "-g",
        "60",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
        &s(&minute),
    ])?;
    let long = p("long.mkv");
    let loops = (a.minutes.max(1) - 1).to_string();
    ffmpeg(&[
        "-stream_loop",
        &loops,
        "-i",
        &s(&minute),
        "-c",
        "copy",
        &s(&long),
    ])?;
    let secs = duration_of(&long);
    let size = std::fs::metadata(&long)?.len();
    println!(
        "recording: H.264 1280x720 + Opus, {:.0} s, {:.0} MB",
        secs,
        size as f64 / 1e6
    );
    let never = AtomicBool::new(false);
    for audio in [Mp4Audio::Opus, Mp4Audio::Aac] {
        let out = p("copy.mp4");
        let (made, wall, cpu) = timed(|| {
            mp4::convert(
                &long,
                &out,
                Mp4Video::Copy,
                audio,
                &Progress::default(),
                &never,
            )
        });
        made?;
        println!(
            "MP4 copy, audio {audio:?}: {wall:.1} s wall ({:.0}× real time), {cpu:.1} s CPU, {:.0} MB",
            secs / wall,
            std::fs::metadata(&out)?.len() as f64 / 1e6
        );
        std::fs::remove_file(&out)?;
    }
    let (poster, wall, _) = timed(|| pictures::poster(&long));
    println!(
        "poster of the recording: {:.0} ms ({} bytes)",
        wall * 1e3,
        poster?.jpeg.len()
    );
    let (strip, wall, cpu) = timed(|| pictures::strip(&long));
    let strip = strip?;
    println!(
        "strip of the recording: {:.0} ms wall, {:.0} ms CPU ({} pictures, {} bytes)",
        wall * 1e3,
        cpu * 1e3,
        strip.width / pictures::STRIP_CELL.0,
        strip.jpeg.len()
    );
    std::fs::remove_file(&long)?;

    let vp8 = p("vp8.webm");
    let es = a.export_secs.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &es,
        "-c:v",
        "libvpx",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-b:v",
        "2500k",
        "-g",
        "60",
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
        &s(&vp8),
    ])?;
    let secs = duration_of(&vp8);
    let out = p("export.mp4");
    let progress = Progress::default();
    let (made, wall, cpu) = timed(|| {
        mp4::convert(
            &vp8,
            &out,
            Mp4Video::Encode { crf: 23 },
            Mp4Audio::Aac,
            &progress,
            &never,
        )
    });
    made?;
    println!(
        "export VP8 1280x720 → H.264 (CRF 23, one x264 thread) + AAC: {secs:.0} s in {wall:.1} s wall ({:.2}× real time), {cpu:.1} s CPU, {:.1} MB",
        secs / wall,
        std::fs::metadata(&out)?.len() as f64 / 1e6
    );

    let ivf = p("v.ivf");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-t",
        "2",
        "-c:v",
        "libvpx",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-b:v",
        "2500k",
        "-g",
        "60",
        "-auto-alt-ref",
        "0",
        "-lag-in-frames",
        "0",
        &s(&ivf),
    ])?;
    snapshot_figures("VP8", Codec::Vp8, &ivf_frames(&std::fs::read(&ivf)?))?;
    let h264 = p("v.h264");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-b:v",
        "2500k",
        "-g",
        "60",
        "-bsf:v",
        "h264_metadata=aud=insert",
        "-f",
        "h264",
        &s(&h264),
    ])?;
    snapshot_figures("H.264", Codec::H264, &h264_units(&std::fs::read(&h264)?))?;
    Ok(())
}
