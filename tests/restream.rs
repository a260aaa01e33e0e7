//! Restreaming end to end with real receivers: `ffmpeg -listen 1` as a
//! one-shot RTMP server, files validated with ffprobe / ffmpeg.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::files::{decodes_cleanly, duration, free_port, packets, probe, temp_dir};
use common::gateway::{self, eventually, publisher, url};
use common::media::{EncodedFrame, opus_packets, video_frames};
use common::peer::{VideoCodec, http_client};
use common::rtmp::{
    KEY, Receiver, certificate, get_json, id_of, listening, post_target, target, wait_target,
};
use serde_json::Value;

/// Slice NAL units (no SPS/PPS/AUD/SEI) of Annex-B data.
fn annexb_slices(d: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= d.len() {
        if d[i] == 0 && d[i + 1] == 0 && d[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let mut e = starts.get(k + 1).map_or(d.len(), |&n| n - 3);
        while e > s && d[e - 1] == 0 {
            e -= 1;
        }
        if s < e && matches!(d[s] & 0x1f, 1 | 5) {
            out.push(d[s..e].to_vec());
        }
    }
    out
}

/// Slice NAL units of length-prefixed (AVCC) data.
fn avcc_slices(d: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= d.len() {
        let n = u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]) as usize;
        i += 4;
        if i + n > d.len() {
            break;
        }
        if n > 0 && matches!(d[i] & 0x1f, 1 | 5) {
            out.push(d[i..i + n].to_vec());
        }
        i += n;
    }
    out
}

/// First timestamp (seconds) of the video and of the audio stream.
fn first_pts(file: &Path) -> (f64, f64) {
    ffmpeg_next::init().unwrap();
    let mut ictx = ffmpeg_next::format::input(file).unwrap();
    let mut firsts = [None, None];
    for (s, p) in ictx.packets() {
        let i = usize::from(s.parameters().medium() == ffmpeg_next::media::Type::Audio);
        if firsts[i].is_none() {
            let tb = s.time_base();
            firsts[i] = p.pts().map(|t| t as f64 * f64::from(tb));
        }
        if firsts.iter().all(Option::is_some) {
            break;
        }
    }
    (firsts[0].unwrap_or(f64::NAN), firsts[1].unwrap_or(f64::NAN))
}

fn flv_video_packets(file: &Path) -> Vec<Vec<u8>> {
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

/// CPU seconds used so far by this process's threads whose name starts with `prefix`.
fn thread_cpu_secs(prefix: &str) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for e in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            total += (ut + st) / tick;
        }
    }
    total
}

fn media(secs: u32) -> (Vec<EncodedFrame>, Vec<EncodedFrame>) {
    (video_frames(VideoCodec::H264, secs), opus_packets(secs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_opus_to_rtmp_passes_video_through_and_transcodes_audio() {
    let (video, audio) = tokio::task::spawn_blocking(|| media(8)).await.unwrap();
    let dir = temp_dir("pass");
    let mut rx = Receiver::start(&dir, "out.flv").await;
    let server = gateway::start(|_| {}).await;
    let publisher = publisher(&server, "cam", Some(VideoCodec::H264), true).await;
    let (status, body) = post_target(&server, "cam", &format!(r#"{{"url":"{}"}}"#, rx.url())).await;
    assert_eq!(status, 201, "{body}");
    assert!(!body.contains(KEY), "key leaked: {body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        created["url"],
        format!("rtmp://127.0.0.1:{}/live/****", rx.port)
    );

    publisher.play(&video, &audio).await.unwrap();
    let sent = video.len() as u64;
    let last = wait_target(&server, &id, Duration::from_secs(5), |t| {
        t["video_frames"].as_u64() == Some(sent)
    })
    .await;
    assert_eq!(last["state"], "live", "{last}");
    assert_eq!(last["video_frames"].as_u64(), Some(sent), "{last}");
    assert!(last["bytes_sent"].as_u64().unwrap() > 10_000, "{last}");
    assert!(last["uptime_secs"].as_f64().unwrap() > 5.0, "{last}");
    // Figures (printed, not asserted: shared machines are noisy).
    eprintln!(
        "FIGURES passthrough 8 s H.264 320x240 + Opus→AAC: pipeline thread {:.3} CPU s, target thread {:.3} CPU s, ingest→network latency {:.1} ms",
        thread_cpu_secs("rs-pipe"),
        thread_cpu_secs("rs-") - thread_cpu_secs("rs-pipe"),
        last["latency_ms"].as_f64().unwrap_or(f64::NAN)
    );
    publisher.delete().await.unwrap();
    assert!(
        rx.finished(Duration::from_secs(15)).await,
        "receiver never saw the end"
    );
    let t = target(&server, &id).await;
    assert_eq!(t["state"], "stopped", "{t}");
    server.shutdown().await;

    let file = rx.out.clone();
    let streams = probe(&file, "stream=codec_name");
    assert!(streams.contains("codec_name=h264"), "{streams}");
    assert!(streams.contains("codec_name=aac"), "{streams}");
    decodes_cleanly(&file);
    let d = duration(&file);
    assert!((d - 8.0).abs() <= 1.0, "duration {d}");
    assert_eq!(packets(&file, "v") as u64, sent);
    let a = packets(&file, "a");
    // 8 s of 48 kHz audio in 1024-sample AAC frames: 375, minus the tail the
    // encoder still held and the lead before the first keyframe.
    assert!((350..=380).contains(&a), "{a} AAC packets");
    // Audio and video were sent starting together; they start together.
    let (v0, a0) = first_pts(&file);
    assert!(
        v0.abs() < 0.05 && (a0 - v0).abs() < 0.1,
        "video {v0} audio {a0}"
    );

    // Passthrough: every slice the publisher sent arrives byte for byte.
    let got = flv_video_packets(&file);
    assert_eq!(got.len(), video.len());
    for (i, (g, s)) in got.iter().zip(&video).enumerate() {
        assert_eq!(avcc_slices(g), annexb_slices(&s.data), "frame {i} differs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_retries_without_harming_the_other() {
    let (video, audio) = tokio::task::spawn_blocking(|| media(5)).await.unwrap();
    let dir = temp_dir("two");
    let mut rx = Receiver::start(&dir, "good.flv").await;
    let server = gateway::start(|c| {
        c.restream.backoff_min_secs = 0.5;
        c.restream.backoff_max_secs = 2.0;
    })
    .await;
    let publisher = publisher(&server, "two", Some(VideoCodec::H264), true).await;
    let closed = free_port();
    let (s1, b1) = post_target(
        &server,
        "two",
        &format!(r#"{{"url":"rtmp://127.0.0.1:{closed}/live/{KEY}","label":"bad"}}"#),
    )
    .await;
    assert_eq!(s1, 201, "{b1}");
    let bad: Value = serde_json::from_str(&b1).unwrap();
    let (s2, b2) = post_target(&server, "two", &format!(r#"{{"url":"{}"}}"#, rx.url())).await;
    assert_eq!(s2, 201, "{b2}");
    let good: Value = serde_json::from_str(&b2).unwrap();

    let play = publisher.play(&video, &audio);
    let watch = wait_target(
        &server,
        bad["id"].as_str().unwrap(),
        Duration::from_secs(4),
        |t| t["state"] == "retrying",
    );
    let (played, seen) = tokio::join!(play, watch);
    played.unwrap();
    assert_eq!(seen["state"], "retrying", "{seen}");
    assert!(
        seen["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{seen}"
    );
    assert!(seen["next_attempt_at"].is_string(), "{seen}");
    assert!(!seen.to_string().contains(KEY));
    let sent = video.len() as u64;
    let gid = good["id"].as_str().unwrap().to_string();
    wait_target(&server, &gid, Duration::from_secs(5), |t| {
        t["video_frames"].as_u64() == Some(sent)
    })
    .await;
    let bad_now = target(&server, bad["id"].as_str().unwrap()).await;
    assert!(bad_now["attempts"].as_u64().unwrap() >= 2, "{bad_now}");
    assert_eq!(bad_now["connections"].as_u64(), Some(0), "{bad_now}");
    publisher.delete().await.unwrap();
    assert!(rx.finished(Duration::from_secs(15)).await);
    server.shutdown().await;
    decodes_cleanly(&rx.out);
    assert_eq!(packets(&rx.out, "v") as u64, sent);
    assert!(packets(&rx.out, "a") > 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_bad_input_masks_keys_and_deletes_cleanly() {
    let (video, audio) = tokio::task::spawn_blocking(|| media(3)).await.unwrap();
    let dir = temp_dir("api");
    let mut rx = Receiver::start(&dir, "api.flv").await;
    let server = gateway::start(|_| {}).await;

    // Nothing live yet: 404.
    let (s, _) = post_target(&server, "api", &format!(r#"{{"url":"{}"}}"#, rx.url())).await;
    assert_eq!(s, 404);
    let publisher = publisher(&server, "api", Some(VideoCodec::H264), true).await;
    for bad in [
        "",
        "not json",
        "{}",
        r#"{"url": 5}"#,
        r#"{"url":"http://example.com/live/k"}"#,
        r#"{"url":"file:///etc/passwd"}"#,
        r#"{"url":"rtmp://"}"#,
        r#"{"url":"rtmp://host"}"#,
        r#"{"url":"rtmp://127.0.0.1/live/k","bogus":1}"#,
    ] {
        let (s, reason) = post_target(&server, "api", bad).await;
        assert_eq!(s, 400, "{bad:?} → {s} {reason}");
        assert!(!reason.trim().is_empty());
    }
    let (s, reason) = post_target(&server, "bad name!", r#"{"url":"rtmp://h/a/k"}"#).await;
    assert_eq!(s, 400, "{reason}");

    let (s, body) = post_target(&server, "api", &format!(r#"{{"url":"{}"}}"#, rx.url())).await;
    assert_eq!(s, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    publisher.play(&video, &audio).await.unwrap();

    for path in ["/api/restreams", "/api/streams/api/restreams"] {
        let text = get_json(&server, path).await.to_string();
        assert!(!text.contains(KEY), "{path}: {text}");
        assert!(text.contains("/live/****"), "{path}: {text}");
    }
    let one = get_json(&server, &format!("/api/streams/api/restreams/{id}")).await;
    assert_eq!(one["state"], "live", "{one}");

    let resp = http_client()
        .unwrap()
        .delete(url(&server, &format!("/api/streams/api/restreams/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let gone: Value = resp.json().await.unwrap();
    assert_eq!(gone["state"], "stopped", "{gone}");
    assert!(
        rx.finished(Duration::from_secs(10)).await,
        "receiver still running"
    );
    let list = get_json(&server, "/api/streams/api/restreams").await;
    assert_eq!(list["restreams"].as_array().unwrap().len(), 0, "{list}");
    let resp = http_client()
        .unwrap()
        .delete(url(&server, &format!("/api/streams/api/restreams/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    // The stream itself is untouched.
    assert_eq!(gateway::viewers(&server, "api"), 0);
    assert!(server.hub().len() == 1);
    publisher.delete().await.unwrap();
    server.shutdown().await;
    decodes_cleanly(&rx.out);
    assert!(packets(&rx.out, "v") >= video.len() - 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An `openssl s_server` with a self-signed certificate on a free port.
struct TlsServer {
    child: Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn tls_server(dir: &Path) -> TlsServer {
    let (cert, key) = certificate(dir);
    let port = free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server starts");
    assert!(eventually(Duration::from_secs(10), || listening(port)).await);
    TlsServer { child, port }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmps_verifies_the_server_certificate() {
    let (video, audio) = tokio::task::spawn_blocking(|| media(3)).await.unwrap();
    let dir = temp_dir("tls");
    let tls = tls_server(&dir).await;
    let server = gateway::start(|c| c.restream.backoff_min_secs = 0.5).await;
    let publisher = publisher(&server, "tls", Some(VideoCodec::H264), true).await;
    let (s, body) = post_target(
        &server,
        "tls",
        &format!(r#"{{"url":"rtmps://127.0.0.1:{}/live/{KEY}"}}"#, tls.port),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let id = id_of(&body);
    let play = publisher.play(&video, &audio);
    let watch = wait_target(&server, &id, Duration::from_secs(3), |t| {
        t["state"] == "retrying"
    });
    let (played, seen) = tokio::join!(play, watch);
    played.unwrap();
    // A self-signed certificate is refused: no connection is ever made.
    assert_eq!(seen["state"], "retrying", "{seen}");
    assert!(
        seen["error"].as_str().unwrap_or("").contains("TLS"),
        "{seen}"
    );
    assert_eq!(seen["connections"].as_u64(), Some(0), "{seen}");
    assert_eq!(
        seen["url"],
        format!("rtmps://127.0.0.1:{}/live/****", tls.port)
    );
    publisher.delete().await.unwrap();
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// VP8 (here 1280x720, 30 fps) is transcoded to H.264 once for the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_opus_is_transcoded_to_h264_aac() {
    let secs = 6;
    let (video, audio) = tokio::task::spawn_blocking(move || {
        (
            common::media::video_frames_sized(VideoCodec::Vp8, secs, "1280x720"),
            opus_packets(secs),
        )
    })
    .await
    .unwrap();
    let dir = temp_dir("vp8");
    let mut rx = Receiver::start(&dir, "vp8.flv").await;
    let server = gateway::start(|_| {}).await;
    let publisher = publisher(&server, "vp8", Some(VideoCodec::Vp8), true).await;
    let (s, body) = post_target(&server, "vp8", &format!(r#"{{"url":"{}"}}"#, rx.url())).await;
    assert_eq!(s, 201, "{body}");
    let id = id_of(&body);
    let cpu0 = thread_cpu_secs("rs-pipe");
    publisher.play(&video, &audio).await.unwrap();
    let last = wait_target(&server, &id, Duration::from_secs(5), |t| {
        t["video_frames"].as_u64() >= Some(video.len() as u64 - 2)
    })
    .await;
    eprintln!(
        "FIGURES VP8 1280x720 30 fps → H.264 (libx264 veryfast) + Opus→AAC, {secs} s: pipeline thread {:.2} CPU s = real-time factor {:.2} on one core; latency {:.1} ms",
        thread_cpu_secs("rs-pipe") - cpu0,
        f64::from(secs) / (thread_cpu_secs("rs-pipe") - cpu0).max(1e-3),
        last["latency_ms"].as_f64().unwrap_or(f64::NAN)
    );
    assert_eq!(last["state"], "live", "{last}");
    publisher.delete().await.unwrap();
    assert!(
        rx.finished(Duration::from_secs(15)).await,
        "receiver never saw the end"
    );
    server.shutdown().await;
    let file = rx.out.clone();
    let streams = probe(&file, "stream=codec_name,width,height");
    assert!(streams.contains("codec_name=h264"), "{streams}");
    assert!(streams.contains("width=1280"), "{streams}");
    assert!(streams.contains("codec_name=aac"), "{streams}");
    decodes_cleanly(&file);
    let d = duration(&file);
    assert!((d - f64::from(secs)).abs() <= 1.0, "duration {d}");
    let v = packets(&file, "v");
    assert!(v + 2 >= video.len(), "{v} of {} frames", video.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// VP9 and AV1 (when this machine's ffmpeg can make AV1 test media) take
/// the same transcode path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_and_av1_are_transcoded_too() {
    let mut codecs = vec![VideoCodec::Vp9];
    if common::media::av1_encoder().is_some() {
        codecs.push(VideoCodec::Av1);
    }
    for codec in codecs {
        let (video, audio) =
            tokio::task::spawn_blocking(move || (video_frames(codec, 4), opus_packets(4)))
                .await
                .unwrap();
        let dir = temp_dir("vpx");
        let mut rx = Receiver::start(&dir, "out.flv").await;
        let server = gateway::start(|_| {}).await;
        let publisher = publisher(&server, "tx", Some(codec), true).await;
        let (s, body) = post_target(&server, "tx", &format!(r#"{{"url":"{}"}}"#, rx.url())).await;
        assert_eq!(s, 201, "{codec:?}: {body}");
        publisher.play(&video, &audio).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        publisher.delete().await.unwrap();
        assert!(
            rx.finished(Duration::from_secs(15)).await,
            "{codec:?}: no end"
        );
        server.shutdown().await;
        let streams = probe(&rx.out, "stream=codec_name");
        assert!(streams.contains("codec_name=h264"), "{codec:?}: {streams}");
        assert!(streams.contains("codec_name=aac"), "{codec:?}: {streams}");
        decodes_cleanly(&rx.out);
        let d = duration(&rx.out);
        assert!((d - 4.0).abs() <= 1.0, "{codec:?}: duration {d}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The receiver dies mid-stream: the target retries, and when a receiver is
/// back on the same address it goes live again, starting at a keyframe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_retried_and_resumes_at_a_keyframe() {
    let (video, audio) = tokio::task::spawn_blocking(|| media(8)).await.unwrap();
    let dir = temp_dir("retry");
    let mut first = Receiver::start(&dir, "first.flv").await;
    let port = first.port;
    let server = gateway::start(|c| {
        c.restream.backoff_min_secs = 0.3;
        c.restream.backoff_max_secs = 1.0;
    })
    .await;
    let publisher = publisher(&server, "re", Some(VideoCodec::H264), true).await;
    let (s, body) = post_target(&server, "re", &format!(r#"{{"url":"{}"}}"#, first.url())).await;
    assert_eq!(s, 201, "{body}");
    let id = id_of(&body);
    let play = publisher.play(&video, &audio);
    let control = async {
        let live =
            |t: &Value, n: u64| t["state"] == "live" && t["video_frames"].as_u64() >= Some(n);
        let t = wait_target(&server, &id, Duration::from_secs(3), |t| live(t, 45)).await;
        assert!(live(&t, 45), "{t}");
        let _ = first.child.kill();
        let _ = first.child.wait();
        let t = wait_target(&server, &id, Duration::from_secs(3), |t| {
            t["state"] == "retrying"
        })
        .await;
        assert_eq!(t["state"], "retrying", "{t}");
        assert!(t["error"].is_string(), "{t}");
        let second = Receiver::start_on(&dir, "second.flv", port).await;
        let t = wait_target(&server, &id, Duration::from_millis(4500), |t| {
            t["connections"].as_u64() == Some(2) && t["state"] == "live"
        })
        .await;
        assert_eq!(t["connections"].as_u64(), Some(2), "{t}");
        second
    };
    let (played, mut second) = tokio::join!(play, control);
    played.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher.delete().await.unwrap();
    assert!(
        second.finished(Duration::from_secs(15)).await,
        "second receiver never saw the end"
    );
    server.shutdown().await;
    decodes_cleanly(&second.out);
    let v = packets(&second.out, "v");
    assert!(v >= 30, "{v} video packets after reconnecting");
    let (v0, _) = first_pts(&second.out);
    assert!(v0.abs() < 0.05, "second connection starts at {v0}");
    let flags = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=flags",
        ])
        .args(["-of", "csv=p=0", "-read_intervals", "%+#1"])
        .arg(&second.out)
        .output()
        .unwrap();
    let flags = String::from_utf8_lossy(&flags.stdout);
    assert!(
        flags.trim().starts_with('K'),
        "first packet flags {flags:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that accepts the TCP connection and then never answers: the
/// RTMP handshake stalls. `rw_timeout` turns the stall into a retry, and a
/// DELETE in the middle of a stalled connect returns promptly (interrupt
/// callback) instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_times_out_and_a_stuck_target_can_be_deleted() {
    let (video, audio) = tokio::task::spawn_blocking(|| media(4)).await.unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in silent.incoming().flatten() {
            h.lock().unwrap().push(s); // keep it open, never read or write
        }
    });
    let server = gateway::start(|c| {
        c.restream.rw_timeout_secs = 1.0;
        c.restream.backoff_min_secs = 0.3;
    })
    .await;
    let publisher = publisher(&server, "stall", Some(VideoCodec::H264), true).await;
    let add = |body: String| {
        let server = &server;
        async move {
            let (s, b) = post_target(server, "stall", &body).await;
            assert_eq!(s, 201, "{b}");
            id_of(&b)
        }
    };
    let id = add(format!(r#"{{"url":"rtmp://127.0.0.1:{port}/live/{KEY}"}}"#)).await;
    let play = publisher.play(&video, &audio);
    let watch = async {
        let t = wait_target(&server, &id, Duration::from_millis(4500), |t| {
            t["state"] == "retrying"
        })
        .await;
        assert_eq!(t["state"], "retrying", "{t}");
        assert_eq!(t["connections"].as_u64(), Some(0), "{t}");
        // Now catch it in the middle of a stalled attempt and delete it.
        wait_target(&server, &id, Duration::from_secs(2), |t| {
            t["state"] == "starting" && t["attempts"].as_u64() >= Some(2)
        })
        .await;
        let started = Instant::now();
        let resp = http_client()
            .unwrap()
            .delete(url(&server, &format!("/api/streams/stall/restreams/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let gone: Value = resp.json().await.unwrap();
        assert_eq!(gone["state"], "stopped", "{gone}");
        started.elapsed()
    };
    let (played, took) = tokio::join!(play, watch);
    played.unwrap();
    // Bounded by the 3 s stop grace (and the 1 s rw_timeout): a liveness bound, not a speed test.
    assert!(
        took < Duration::from_secs(30),
        "DELETE took {took:?} (bounded by rw_timeout and the stop grace)"
    );
    assert!(
        !held.lock().unwrap().is_empty(),
        "the silent server saw no connection"
    );
    publisher.delete().await.unwrap();
    server.shutdown().await;
}

/// With a long `rw_timeout`, only the interrupt callback can end a stalled
/// connect: DELETE still returns within the stop grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_interrupts_a_connect_that_would_stall_for_a_minute() {
    let (video, audio) = tokio::task::spawn_blocking(|| media(3)).await.unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in silent.incoming().flatten() {
            h.lock().unwrap().push(s);
        }
    });
    let server = gateway::start(|c| c.restream.rw_timeout_secs = 60.0).await;
    let publisher = publisher(&server, "hang", Some(VideoCodec::H264), true).await;
    let (s, b) = post_target(
        &server,
        "hang",
        &format!(r#"{{"url":"rtmp://127.0.0.1:{port}/live/{KEY}"}}"#),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let id = id_of(&b);
    let play = publisher.play(&video, &audio);
    let stop = async {
        let h = held.clone();
        assert!(
            eventually(Duration::from_secs(5), move || !h
                .lock()
                .unwrap()
                .is_empty())
            .await,
            "never connected"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = target(&server, &id).await;
        assert_eq!(t["state"], "starting", "{t}");
        let started = Instant::now();
        let resp = http_client()
            .unwrap()
            .delete(url(&server, &format!("/api/streams/hang/restreams/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        (started.elapsed(), resp.json::<Value>().await.unwrap())
    };
    let (played, (took, gone)) = tokio::join!(play, stop);
    played.unwrap();
    assert_eq!(gone["state"], "stopped", "{gone}");
    assert!(
        took < Duration::from_secs(30),
        "DELETE took {took:?} (the stall lasts 60 s)"
    );
    publisher.delete().await.unwrap();
    server.shutdown().await;
}

/// A publisher that comes back quickly under the same name gets its API
/// targets back: same id, same URL and key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_targets_resume_when_the_publisher_comes_back() {
    let (video, audio) = tokio::task::spawn_blocking(|| media(3)).await.unwrap();
    let dir = temp_dir("resume");
    let mut first = Receiver::start(&dir, "first.flv").await;
    let port = first.port;
    let server = gateway::start(|_| {}).await;
    let p1 = publisher(&server, "back", Some(VideoCodec::H264), true).await;
    let (s, body) = post_target(&server, "back", &format!(r#"{{"url":"{}"}}"#, first.url())).await;
    assert_eq!(s, 201, "{body}");
    let id = id_of(&body);
    p1.play(&video, &audio).await.unwrap();
    p1.delete().await.unwrap();
    assert!(first.finished(Duration::from_secs(15)).await);
    let t = wait_target(&server, &id, Duration::from_secs(3), |t| {
        t["state"] == "stopped"
    })
    .await;
    assert_eq!(t["state"], "stopped", "{t}");

    let mut second = Receiver::start_on(&dir, "second.flv", port).await;
    let p2 = publisher(&server, "back", Some(VideoCodec::H264), true).await;
    p2.play(&video, &audio).await.unwrap();
    let t = target(&server, &id).await;
    assert_eq!(t["state"], "live", "{t}");
    assert!(!t.to_string().contains(KEY));
    p2.delete().await.unwrap();
    assert!(second.finished(Duration::from_secs(15)).await);
    server.shutdown().await;
    decodes_cleanly(&first.out);
    decodes_cleanly(&second.out);
    assert!(packets(&second.out, "v") >= video.len() - 30);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_targets_follow_the_stream_name_across_a_takeover() {
    let (h264, audio) = tokio::task::spawn_blocking(|| media(3)).await.unwrap();
    let vp8 = tokio::task::spawn_blocking(|| video_frames(VideoCodec::Vp8, 3))
        .await
        .unwrap();
    let dir = temp_dir("takeover");
    let mut first = Receiver::start(&dir, "first.flv").await;
    let port = first.port;
    let server =
        gateway::start(|c| c.whip.on_conflict = castgate::config::OnConflict::Takeover).await;
    let p1 = publisher(&server, "cam", Some(VideoCodec::H264), true).await;
    let (s, body) = post_target(&server, "cam", &format!(r#"{{"url":"{}"}}"#, first.url())).await;
    assert_eq!(s, 201, "{body}");
    let id = id_of(&body);
    p1.play(&h264, &audio).await.unwrap();
    let t = target(&server, &id).await;
    assert_eq!(t["state"], "live", "{t}");
    // A new publisher takes the name over while the first is still connected.
    let p2 = publisher(&server, "cam", Some(VideoCodec::Vp8), true).await;
    // The old push ends (its receiver sees the end of its stream) before the
    // new one connects: a platform takes one push per key.
    assert!(
        first.finished(Duration::from_secs(15)).await,
        "the old push ended"
    );
    let mut second = Receiver::start_on(&dir, "second.flv", port).await;
    p2.play(&vp8, &audio).await.unwrap();
    let t = target(&server, &id).await;
    assert_eq!(t["state"], "live", "the same target carries on: {t}");
    assert_eq!(t["url"].as_str().map(|u| u.contains(KEY)), Some(false));
    let list = get_json(&server, "/api/streams/cam/restreams").await;
    assert_eq!(
        list["restreams"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    p2.delete().await.unwrap();
    assert!(second.finished(Duration::from_secs(15)).await);
    server.shutdown().await;
    decodes_cleanly(&first.out);
    decodes_cleanly(&second.out);
    // The new publisher's VP8 was transcoded: the decision is made again.
    let streams = probe(&second.out, "stream=codec_name");
    assert!(streams.contains("codec_name=h264"), "{streams}");
    assert!(
        packets(&second.out, "v") >= vp8.len() - 45,
        "{}",
        packets(&second.out, "v")
    );
    drop(p1);
    let _ = std::fs::remove_dir_all(&dir);
}
