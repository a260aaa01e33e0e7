//! Recording end to end: real publishers, real files, validated with FFmpeg's
//! own tools (ffprobe, ffmpeg) and mkvinfo, plus crash and shutdown behaviour
//! of the real binary.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use castgate::config::Config;
use castgate::server::Server;
use common::files::{TempDir, decodes_cleanly, duration, packets, probe, recordings_in, temp_dir};
use common::gateway::{self, publisher, recordings_idle, url, wait_received};
use common::media::{EncodedFrame, opus_packets, video_frames};
use common::peer::{PeerOptions, Publisher, VideoCodec};
use common::process::{serve_recordings, signal, wait_exit};

/// A gateway recording into `dir`.
pub(crate) async fn start(dir: &Path) -> Server {
    start_with(dir, |_| {}).await
}

/// A gateway recording into `dir`, with more settings from `tweak`.
pub(crate) async fn start_with(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Server {
    let dir = dir.to_path_buf();
    gateway::start(move |c| {
        c.record.enabled = true;
        c.record.dir = dir;
        tweak(c);
    })
    .await
}

fn has_cues(file: &Path) -> bool {
    let out = Command::new("mkvinfo")
        .arg(file)
        .output()
        .expect("mkvinfo runs");
    String::from_utf8_lossy(&out.stdout).contains("Cues")
}

/// The video packets of a file, as FFmpeg demuxes them.
fn video_packets(file: &Path) -> Vec<Vec<u8>> {
    ffmpeg_next::init().unwrap();
    let mut ictx = ffmpeg_next::format::input(file).unwrap();
    let v = ictx
        .streams()
        .best(ffmpeg_next::media::Type::Video)
        .map(|s| s.index());
    ictx.packets()
        .filter(|(s, _)| Some(s.index()) == v)
        .map(|(_, p)| p.data().unwrap_or_default().to_vec())
        .collect()
}

/// Publishes `seconds` of media to a recording gateway and returns its one
/// recording, with the scratch folder that holds it (removed when dropped).
async fn record(
    codec: Option<VideoCodec>,
    audio: bool,
    seconds: u32,
) -> (TempDir, PathBuf, Vec<EncodedFrame>, usize) {
    let video = codec.map(|c| video_frames(c, seconds)).unwrap_or_default();
    let sound = if audio { opus_packets(seconds) } else { vec![] };
    let dir = temp_dir("codec");
    let server = start(&dir).await;
    let publisher = Publisher::connect(&url(&server, "/whip/rec"), PeerOptions::new(codec, audio))
        .await
        .expect("publisher connects");
    publisher.play(&video, &sound).await.unwrap();
    // Stop only once every frame crossed loopback: this test is about what is
    // recorded, not about packets still in flight when the publisher leaves.
    wait_received(&server, "rec", video.len() + sound.len()).await;
    assert_eq!(publisher.delete().await.unwrap(), 200);
    recordings_idle(&server).await;
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1, "one recording: {files:?}");
    server.shutdown().await;
    let file = files[0].clone();
    (dir, file, video, sound.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_seconds_of_vp8_and_opus_become_a_complete_webm() {
    let (_dir, file, video, audio) = record(Some(VideoCodec::Vp8), true, 10).await;
    assert!(
        file.to_string_lossy().ends_with(".webm"),
        "{}",
        file.display()
    );
    assert_eq!(packets(&file, "v"), video.len(), "every video frame");
    let a = packets(&file, "a");
    assert!(a + 2 >= audio && a <= audio, "audio packets {a} of {audio}");
    let d = duration(&file);
    assert!((d - 10.0).abs() <= 0.5, "duration {d}");
    decodes_cleanly(&file);
    assert!(has_cues(&file), "Cues for seeking");
    let streams = probe(&file, "stream=codec_name,width,height");
    assert!(
        streams.contains("codec_name=vp8") && streams.contains("codec_name=opus"),
        "{streams}"
    );
    assert!(
        streams.contains("width=320") && streams.contains("height=240"),
        "{streams}"
    );
    // Byte-for-byte: the file holds exactly the frames the publisher sent.
    let got = video_packets(&file);
    assert_eq!(got.len(), video.len());
    for (i, (g, s)) in got.iter().zip(&video).enumerate() {
        assert_eq!(g, &s.data, "video frame {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_av1_h264_and_audio_only_record_too() {
    for codec in [VideoCodec::Vp9, VideoCodec::Av1, VideoCodec::H264] {
        let (_dir, file, video, _) = record(Some(codec), true, 3).await;
        let ext = if codec == VideoCodec::H264 {
            ".mkv"
        } else {
            ".webm"
        };
        assert!(
            file.to_string_lossy().ends_with(ext),
            "{codec:?}: {}",
            file.display()
        );
        assert_eq!(
            packets(&file, "v"),
            video.len(),
            "{codec:?}: every video frame"
        );
        assert!(packets(&file, "a") > 100, "{codec:?}: audio");
        let d = duration(&file);
        assert!((d - 3.0).abs() <= 0.5, "{codec:?}: duration {d}");
        decodes_cleanly(&file);
        assert!(has_cues(&file), "{codec:?}: Cues");
        let streams = probe(&file, "stream=width,height");
        assert!(
            streams.contains("width=320") && streams.contains("height=240"),
            "{codec:?}: {streams}"
        );
    }
    let (_dir, file, _, audio) = record(None, true, 3).await;
    assert_eq!(packets(&file, "v"), 0);
    let a = packets(&file, "a");
    assert!(a + 2 >= audio && a <= audio, "audio-only: {a} of {audio}");
    decodes_cleanly(&file);
    let (_dir, file, video, _) = record(Some(VideoCodec::Vp8), false, 2).await;
    assert_eq!(packets(&file, "v"), video.len(), "video-only");
    decodes_cleanly(&file);
}

/// A castgate child process recording into `dir`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leaves_a_playable_file_that_restart_repairs() {
    let dir = temp_dir("crash");
    let mut gw = serve_recordings(env!("CARGO_BIN_EXE_castgate"), &dir, &[]).await;
    let video = video_frames(VideoCodec::Vp8, 8);
    let audio = opus_packets(8);
    let publisher = gw.publisher("crash").await;
    // Send 6 s, then kill the gateway without warning.
    let n = 180;
    publisher.play(&video[..n], &audio[..300]).await.unwrap();
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    publisher.vanish().await;

    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let part = files[0].clone();
    assert!(
        part.to_string_lossy().ends_with(".webm.part"),
        "{}",
        part.display()
    );
    let kept = packets(&part, "v");
    println!(
        "figure: frames_kept_after_sigkill={kept} of {n} ({:.2} s lost)",
        (n - kept) as f64 / 30.0
    );
    assert!(kept >= 150, "the crashed file holds ≥ 5 s: {kept} frames");
    assert!(n - kept <= 30, "at most ~1 s lost: {} frames", n - kept);

    // Restart: the file is repaired (Cues, Duration) and listed.
    let started = Instant::now();
    let mut gw = serve_recordings(env!("CARGO_BIN_EXE_castgate"), &dir, &[]).await;
    println!(
        "figure: restart_with_repair_ms={}",
        started.elapsed().as_millis()
    );
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let fixed = &files[0];
    assert!(
        fixed.to_string_lossy().ends_with(".webm"),
        "{}",
        fixed.display()
    );
    assert_eq!(packets(fixed, "v"), kept);
    assert!(has_cues(fixed), "Cues after repair");
    assert!(
        duration(fixed) >= 5.0,
        "Duration after repair: {}",
        duration(fixed)
    );
    decodes_cleanly(fixed);
    let list: serde_json::Value = reqwest::get(format!("{}/api/recordings", gw.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["recordings"][0]["state"], "repaired", "{list}");
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finalizes_without_losing_frames() {
    let dir = temp_dir("term");
    let mut gw = serve_recordings(env!("CARGO_BIN_EXE_castgate"), &dir, &[]).await;
    let video = video_frames(VideoCodec::Vp8, 3);
    let audio = opus_packets(3);
    let publisher = gw.publisher("term").await;
    publisher.play(&video, &audio).await.unwrap();
    // Let the last packets cross loopback before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&gw.child, libc::SIGTERM);
    let status = wait_exit(&mut gw.child, Duration::from_secs(30), "SIGTERM").await;
    assert!(status.success(), "clean exit: {status}");
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let f = &files[0];
    assert!(
        f.to_string_lossy().ends_with(".webm"),
        "finalized: {}",
        f.display()
    );
    assert_eq!(packets(f, "v"), video.len(), "nothing lost");
    assert!(has_cues(f));
    decodes_cleanly(f);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.with_extension("json")).unwrap()).unwrap();
    assert_eq!(meta["state"], "finalized");
    drop(publisher);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lists_serves_ranges_and_deletes() {
    let dir = temp_dir("catalog");
    let server = start(&dir).await;
    let publisher = publisher(&server, "cat", Some(VideoCodec::Vp8), true).await;
    publisher
        .play(&video_frames(VideoCodec::Vp8, 2), &opus_packets(2))
        .await
        .unwrap();
    // While recording: listed as recording, downloadable as far as written.
    let list: serde_json::Value = reqwest::get(url(&server, "/api/recordings?stream=cat"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["recordings"][0]["state"], "recording");
    let id = list["recordings"][0]["id"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let r = client
        .delete(url(&server, &format!("/api/recordings/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "cannot delete while recording");
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;

    let one: serde_json::Value = reqwest::get(url(&server, &format!("/api/recordings/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["state"], "finalized", "{one}");
    assert_eq!(one["video"]["codec"], "vp8");
    let size = one["size_bytes"].as_u64().unwrap();
    assert!(size > 1000);

    let download = url(&server, &format!("/recordings/{id}/download"));
    let full = client.get(&download).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["content-type"], "video/webm");
    assert!(
        full.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("cat-")
    );
    let body = full.bytes().await.unwrap();
    assert_eq!(body.len() as u64, size);
    let part = client
        .get(&download)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{size}").as_str()
    );
    assert_eq!(part.bytes().await.unwrap(), body.slice(100..200));

    for bad in [
        "nope",
        "cat~..%2F..%2Fetc%2Fpasswd",
        "..%2Fcat~2026-01-01T00-00-00Z",
        "cat~2026-01-01T00-00-00Z",
    ] {
        let r = client
            .get(url(&server, &format!("/recordings/{bad}/download")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{bad}");
        let r = client
            .get(url(&server, &format!("/api/recordings/{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{bad}");
    }
    let r = client
        .get(url(&server, "/api/recordings?since=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = client
        .delete(url(&server, &format!("/api/recordings/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = client.get(&download).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(recordings_in(&dir).is_empty());
    server.shutdown().await;
}

/// Asserts that a recording of a [`flash_beep`] clip has each beep within
/// 40 ms of its flash, and prints the worst offset as a figure (`what`
/// describes the case).
///
/// [`flash_beep`]: common::media::flash_beep
pub(crate) fn assert_in_sync(file: &std::path::Path, what: &str) {
    let (worst, flashes, beeps) = av_offset(file);
    println!(
        "figure: av_sync_worst_offset_ms={:.1} ({what}, flashes={}, beeps={})",
        worst * 1000.0,
        flashes.len(),
        beeps.len()
    );
    assert!(
        worst.abs() <= 0.040,
        "flash/beep offset {:.1} ms; flashes {flashes:?} beeps {beeps:?}",
        worst * 1000.0
    );
}

/// How far a recording's beeps are from its flashes: the worst offset in
/// seconds (audio late: positive), and the flash and beep times found.
fn av_offset(file: &std::path::Path) -> (f64, Vec<f64>, Vec<f64>) {
    let file = file.to_string_lossy();
    let luma = lavfi_series(
        &format!("movie={file},signalstats"),
        "lavfi.signalstats.YAVG",
    );
    let flashes = onsets(&luma, 100.0, 50.0);
    let level = lavfi_series(
        &format!("amovie={file},asetnsamples=n=48,astats=metadata=1:reset=1"),
        "lavfi.astats.Overall.RMS_level",
    );
    let beeps = onsets(&level, -30.0, -60.0);
    assert!(flashes.len() >= 6, "flashes {flashes:?}");
    assert!(beeps.len() >= 6, "beeps {beeps:?}");
    let mut worst: f64 = 0.0;
    for f in &flashes {
        let nearest = beeps
            .iter()
            .map(|b| b - f)
            .min_by(|a, b| a.abs().total_cmp(&b.abs()))
            .unwrap();
        worst = if nearest.abs() > worst.abs() {
            nearest
        } else {
            worst
        };
    }
    (worst, flashes, beeps)
}

/// Onsets (seconds) where a per-frame level first rises above `on` after
/// having been below `off`.
fn onsets(samples: &[(f64, f64)], on: f64, off: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut armed = true;
    for &(t, level) in samples {
        if armed && level > on {
            out.push(t);
            armed = false;
        } else if level < off {
            armed = true;
        }
    }
    out
}

/// (pts, value) pairs from an ffprobe lavfi graph's per-frame metadata tag.
fn lavfi_series(graph: &str, tag: &str) -> Vec<(f64, f64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-f", "lavfi", "-i", graph])
        .args(["-show_entries", &format!("frame=pts_time:frame_tags={tag}")])
        .args(["-of", "csv=p=0"])
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (t, v) = l.split_once(',')?;
            Some((t.parse().ok()?, v.parse().unwrap_or(-200.0)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_and_video_stay_in_sync_despite_a_delayed_audio_path() {
    const AUDIO_DELAY: Duration = Duration::from_millis(150);
    let (video, audio) = common::media::flash_beep(7);
    let dir = temp_dir("sync");
    let server = start(&dir).await;
    let publisher = publisher(&server, "sync", Some(VideoCodec::Vp8), true).await;
    // Capture times are shared; audio travels 150 ms longer (plus jitter).
    let start = Instant::now() + Duration::from_millis(100);
    let mut schedule: Vec<(Instant, bool, &EncodedFrame, Instant)> = Vec::new();
    for f in &video {
        let captured = start + Duration::from_micros(f.rtp_time * 1_000_000 / 90_000);
        schedule.push((captured, true, f, captured));
    }
    for (i, f) in audio.iter().enumerate() {
        let captured = start + Duration::from_micros(f.rtp_time * 1_000_000 / 48_000);
        let jitter = Duration::from_millis((i as u64 * 7) % 25);
        schedule.push((captured + AUDIO_DELAY + jitter, false, f, captured));
    }
    schedule.sort_by_key(|s| s.0);
    for (at, is_video, f, captured) in schedule {
        tokio::time::sleep_until(at.into()).await;
        publisher
            .send_captured(is_video, f.data.clone(), f.rtp_time, captured)
            .await
            .unwrap();
    }
    wait_received(&server, "sync", video.len() + audio.len()).await;
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;
    server.shutdown().await;
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1);
    assert_in_sync(&files[0], "audio path +150 ms, jitter 0–24 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_splits_at_keyframes_without_losing_a_frame() {
    let dir = temp_dir("rotate");
    let server = start_with(&dir, |c| c.record.max_file_secs = 5.0).await;
    let video = video_frames(VideoCodec::Vp8, 12);
    let audio = opus_packets(12);
    let publisher = publisher(&server, "rot", Some(VideoCodec::Vp8), true).await;
    publisher.play(&video, &audio).await.unwrap();
    wait_received(&server, "rot", video.len() + audio.len()).await;
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 3, "{files:?}");
    let mut total = 0.0;
    let mut frames = 0;
    for f in &files {
        decodes_cleanly(f);
        assert!(has_cues(f), "{}", f.display());
        total += duration(f);
        frames += packets(f, "v");
        let first = video_packets(f);
        let idx = video
            .iter()
            .position(|v| v.data == first[0])
            .expect("starts with a sent frame");
        assert!(video[idx].keyframe, "{} starts on a keyframe", f.display());
    }
    assert_eq!(frames, video.len(), "no frame lost between files");
    assert!((total - 12.0).abs() <= 0.2, "durations add up to {total}");
    let list: serde_json::Value = reqwest::get(url(&server, "/api/recordings?stream=rot"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 3, "{list}");
    server.shutdown().await;
}

/// One finished one-second recording per name, in order, with distinct
/// start times (file names are per second).
async fn record_one_after_another(server: &Server, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let publisher = publisher(server, name, Some(VideoCodec::Vp8), false).await;
        publisher
            .play(&video_frames(VideoCodec::Vp8, 1), &[])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        publisher.delete().await.unwrap();
        let r = server.recorder().clone();
        tokio::task::spawn_blocking(move || r.wait_idle())
            .await
            .unwrap();
        if i + 1 < names.len() {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_the_oldest_beyond_the_limit() {
    let dir = temp_dir("retain");
    // Three finished recordings, then a limit that only the newest fits in.
    let server = start(&dir).await;
    record_one_after_another(&server, &["old", "old", "old"]).await;
    server.shutdown().await;
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 3);
    let newest = files.last().unwrap().clone();
    let size = std::fs::metadata(&newest).unwrap().len() as f64;
    let limit_gib = size * 1.5 / (1024.0 * 1024.0 * 1024.0);
    // The retention pass runs at start-up (then every minute).
    let server = start_with(&dir, |c| c.record.retention_max_gib = limit_gib).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while recordings_in(&dir).len() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        recordings_in(&dir),
        vec![newest.clone()],
        "the newest stays"
    );
    assert!(newest.with_extension("json").exists(), "its sidecar stays");
    let again = {
        let r = server.recorder().clone();
        tokio::task::spawn_blocking(move || r.enforce_retention())
            .await
            .unwrap()
    };
    assert_eq!(again, 0, "nothing more to delete");
    server.shutdown().await;
}

/// The per-stream quota deletes a stream's oldest recordings and leaves other
/// streams alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_quota_deletes_only_that_streams_oldest() {
    let dir = temp_dir("quota");
    let server = start(&dir).await;
    record_one_after_another(&server, &["busy", "quiet", "busy"]).await;
    server.shutdown().await;
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 3);
    let biggest = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .max()
        .unwrap() as f64;
    // Room for one recording per stream, not two.
    let quota = biggest * 1.5 / (1024.0 * 1024.0 * 1024.0);
    let server = start_with(&dir, |c| c.record.stream_quota_gib = quota).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while recordings_in(&dir).len() > 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = recordings_in(&dir);
    let of = |list: &[PathBuf], stream: &str| -> Vec<PathBuf> {
        list.iter()
            .filter(|f| {
                f.parent()
                    .and_then(|p| p.file_name())
                    .is_some_and(|n| n == stream)
            })
            .cloned()
            .collect()
    };
    // Sorted by path: busy's two (oldest first), then quiet's one.
    let busy = of(&files, "busy");
    assert_eq!(busy.len(), 2, "{files:?}");
    assert_eq!(
        of(&left, "busy"),
        vec![busy[1].clone()],
        "busy keeps its newest"
    );
    assert_eq!(
        of(&left, "quiet"),
        of(&files, "quiet"),
        "quiet is untouched"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_recording_but_not_the_stream() {
    let dir = temp_dir("full");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=400k", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        // Mounting a small file system needs root (CI runs as root).
        println!("skipped: cannot mount a tmpfs here (not root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(dir.to_path_buf());
    let server = start(&dir).await;
    let publisher = publisher(&server, "full", Some(VideoCodec::Vp8), true).await;
    let mut viewer = common::peer::Viewer::connect(&url(&server, "/whep/full"), None)
        .await
        .unwrap();
    let name = castgate::names::StreamName::parse("full").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server
        .hub()
        .get(&name)
        .is_none_or(|s| s.sink_count(castgate::stream::SinkKind::Viewer) == 0)
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ~8 s of 320x240 VP8 is far more than 400 KiB.
    let video = video_frames(VideoCodec::Vp8, 8);
    let audio = opus_packets(8);
    let playing = publisher.play(&video, &audio);
    let receiving = async {
        let mut n = 0;
        while n < video.len() {
            match viewer.next_frame(Duration::from_secs(3)).await {
                Some(f) if f.kind == common::peer::Kind::Video => n += 1,
                Some(_) => {}
                None => break,
            }
        }
        n
    };
    let (played, received) = tokio::join!(playing, receiving);
    played.unwrap();
    assert_eq!(
        received,
        video.len(),
        "the viewer saw every frame while the disk was full"
    );
    let list: serde_json::Value = reqwest::get(url(&server, "/api/recordings?stream=full"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["recordings"][0]["state"], "failed", "{list}");
    assert!(
        server.hub().get(&name).is_some(),
        "the stream is still live"
    );
    publisher.delete().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_resolution_change_starts_a_new_file() {
    let dir = temp_dir("sps");
    let server = start(&dir).await;
    let small = video_frames(VideoCodec::H264, 2);
    let mut big = common::media::video_frames_sized(VideoCodec::H264, 2, "480x270");
    let offset = small.last().unwrap().rtp_time + 3000;
    for f in &mut big {
        f.rtp_time += offset;
    }
    let publisher = publisher(&server, "sps", Some(VideoCodec::H264), false).await;
    publisher.play(&small, &[]).await.unwrap();
    publisher.play(&big, &[]).await.unwrap();
    wait_received(&server, "sps", small.len() + big.len()).await;
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;
    server.shutdown().await;
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let sizes: Vec<String> = files
        .iter()
        .map(|f| probe(f, "stream=width,height"))
        .collect();
    assert!(sizes[0].contains("width=320"), "{sizes:?}");
    assert!(sizes[1].contains("width=480"), "{sizes:?}");
    assert_eq!(
        packets(&files[0], "v") + packets(&files[1], "v"),
        small.len() + big.len()
    );
    for f in &files {
        decodes_cleanly(f);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_same_instant_frames_do_not_break_a_recording() {
    // Seen from Chromium: padding that depacketizes to nothing, and frames a
    // fraction of a millisecond apart.
    let dir = temp_dir("odd");
    let server = start(&dir).await;
    let video = video_frames(VideoCodec::Vp8, 2);
    let publisher = publisher(&server, "odd", Some(VideoCodec::Vp8), false).await;
    let mut sent = 0;
    for (i, f) in video.iter().enumerate() {
        publisher
            .send_video(f.data.clone(), f.rtp_time)
            .await
            .unwrap();
        sent += 1;
        if i % 10 == 5 {
            publisher
                .send_video(Vec::new(), f.rtp_time + 10)
                .await
                .unwrap();
            publisher
                .send_video(f.data.clone(), f.rtp_time + 20)
                .await
                .unwrap();
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(33)).await;
    }
    wait_received(&server, "odd", sent).await;
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;
    server.shutdown().await;
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].to_string_lossy().ends_with(".webm"),
        "finalized: {files:?}"
    );
    decodes_cleanly(&files[0]);
    assert_eq!(packets(&files[0], "v"), sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vp8_resolution_change_records_on_in_one_file() {
    let dir = temp_dir("vp8size");
    let server = start(&dir).await;
    let small = video_frames(VideoCodec::Vp8, 2);
    let mut big = common::media::video_frames_sized(VideoCodec::Vp8, 2, "480x270");
    let offset = small.last().unwrap().rtp_time + 3000;
    for f in &mut big {
        f.rtp_time += offset;
    }
    let publisher = publisher(&server, "grow", Some(VideoCodec::Vp8), false).await;
    publisher.play(&small, &[]).await.unwrap();
    publisher.play(&big, &[]).await.unwrap();
    wait_received(&server, "grow", small.len() + big.len()).await;
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;
    let list: serde_json::Value = reqwest::get(url(&server, "/api/recordings?stream=grow"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    server.shutdown().await;
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1, "VP8 changes size in band: {files:?}");
    assert_eq!(packets(&files[0], "v"), small.len() + big.len());
    decodes_cleanly(&files[0]);
    let v = &list["recordings"][0]["video"];
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(480), Some(270)),
        "{list}"
    );
}
