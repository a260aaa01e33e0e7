//! Recording end to end: real publishers, real files, validated with FFmpeg's
//! own tools (ffprobe, ffmpeg) and mkvinfo, plus crash and shutdown behaviour
//! of the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use castgate::config::Config;
use castgate::server::Server;
use common::media::{EncodedFrame, opus_packets, video_frames};
use common::peer::{PeerOptions, Publisher, VideoCodec};

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "castgate-rec-{label}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_u64() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn start(dir: &Path) -> Server {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.rtc.udp_listen = "127.0.0.1:0".parse().unwrap();
    c.record.dir = dir.to_path_buf();
    c.record.min_free_mib = 0;
    Server::start(c).await.expect("server starts")
}

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.http_addr())
}

/// `ffprobe` packet count of one stream kind ("v" or "a").
fn packets(file: &Path, kind: &str) -> usize {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", kind, "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn probe(file: &Path, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            entries,
            "-of",
            "default=nw=1",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn duration(file: &Path) -> f64 {
    probe(file, "format=duration")
        .trim()
        .trim_start_matches("duration=")
        .parse()
        .unwrap_or(0.0)
}

/// Decodes the whole file; any stderr output is a failure (exit codes lie).
fn decodes_cleanly(file: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "{}: {err}",
        file.display()
    );
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

fn recordings_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(s.path()).into_iter().flatten().flatten() {
            let p = f.path();
            let name = p.to_string_lossy().to_string();
            if name.ends_with(".webm") || name.ends_with(".mkv") || name.ends_with(".part") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

async fn record(
    codec: Option<VideoCodec>,
    audio: bool,
    seconds: u32,
) -> (PathBuf, Vec<EncodedFrame>, usize) {
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
    let name = castgate::stream::StreamName::parse("rec").unwrap();
    let sent = (video.len() + sound.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while server
        .hub()
        .get(&name)
        .is_some_and(|s| s.info().frames_in < sent)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(publisher.delete().await.unwrap(), 200);
    let r = server.recorder().clone();
    tokio::task::spawn_blocking(move || r.wait_idle())
        .await
        .unwrap();
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1, "one recording: {files:?}");
    server.shutdown().await;
    (files[0].clone(), video, sound.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_seconds_of_vp8_and_opus_become_a_complete_webm() {
    let (file, video, audio) = record(Some(VideoCodec::Vp8), true, 10).await;
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
        let (file, video, _) = record(Some(codec), true, 3).await;
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
    let (file, _, audio) = record(None, true, 3).await;
    assert_eq!(packets(&file, "v"), 0);
    let a = packets(&file, "a");
    assert!(a + 2 >= audio && a <= audio, "audio-only: {a} of {audio}");
    decodes_cleanly(&file);
    let (file, video, _) = record(Some(VideoCodec::Vp8), false, 2).await;
    assert_eq!(packets(&file, "v"), video.len(), "video-only");
    decodes_cleanly(&file);
}

/// A castgate child process recording into `dir`.
struct Child {
    child: std::process::Child,
    http: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn_castgate(dir: &Path) -> Child {
    let http = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_castgate"))
        .args(["serve", "--http-listen", &http])
        .args(["--udp-listen", &format!("127.0.0.1:{}", free_udp_port())])
        .arg("--record-dir")
        .arg(dir)
        .env("RUST_LOG", "castgate=warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("castgate starts");
    let base = format!("http://{http}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "castgate never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Child { child, http: base }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leaves_a_playable_file_that_restart_repairs() {
    let dir = temp_dir("crash");
    let mut gw = spawn_castgate(&dir).await;
    let video = video_frames(VideoCodec::Vp8, 8);
    let audio = opus_packets(8);
    let publisher = Publisher::connect(
        &format!("{}/whip/crash", gw.http),
        PeerOptions::new(Some(VideoCodec::Vp8), true),
    )
    .await
    .unwrap();
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
    let mut gw = spawn_castgate(&dir).await;
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
    let mut gw = spawn_castgate(&dir).await;
    let video = video_frames(VideoCodec::Vp8, 3);
    let audio = opus_packets(3);
    let publisher = Publisher::connect(
        &format!("{}/whip/term", gw.http),
        PeerOptions::new(Some(VideoCodec::Vp8), true),
    )
    .await
    .unwrap();
    publisher.play(&video, &audio).await.unwrap();
    // Let the last packets cross loopback before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = gw.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = gw.child.wait().unwrap();
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
    let publisher = Publisher::connect(
        &url(&server, "/whip/cat"),
        PeerOptions::new(Some(VideoCodec::Vp8), true),
    )
    .await
    .unwrap();
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
    let r = server.recorder().clone();
    tokio::task::spawn_blocking(move || r.wait_idle())
        .await
        .unwrap();

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
