//! Restreaming against the receivers people really use and the failures they
//! really have: an nginx-rtmp server that goes away and comes back, RTMPS
//! through a TLS terminator (socat), a browser that changes its picture size,
//! and an encoder FFmpeg does not have.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::files::{decodes_cleanly, duration, free_port, packets, probe, temp_dir};
use common::gateway::{self, eventually, publisher, recordings_idle, wait_received};
use common::media::{EncodedFrame, opus_packets, video_frames, video_frames_sized};
use common::peer::{Kind, VideoCodec, Viewer};
use common::rtmp::{
    KEY, Receiver, certificate, id_of, listening, post_target, target, wait_target,
};

/// nginx with the RTMP module, recording every publish to its own file
/// (`record_unique`), run in the foreground from a scratch folder.
struct Nginx {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    async fn start(dir: &Path, port: u16) -> Nginx {
        let rec = dir.join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        // Root's workers would run as `nobody` and could not write here.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root root;"
        } else {
            ""
        };
        let conf = format!(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
             {user}\n\
             worker_processes 1;\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port};\n\
               application live {{ live on; record all; record_path {rec}; record_unique on; }} }} }}\n",
            dir = dir.display(),
            rec = rec.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts (scripts/setup.sh --test installs nginx and libnginx-mod-rtmp)");
        let n = Nginx {
            child: Some(child),
            dir: dir.to_path_buf(),
            port,
        };
        assert!(
            eventually(Duration::from_secs(10), || listening(port)).await,
            "nginx never listened on {port}: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        n
    }

    /// Stops nginx (fast shutdown: connections are closed).
    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let done = tokio::task::spawn_blocking(move || c.wait()).await;
            assert!(matches!(done, Ok(Ok(_))), "nginx did not exit");
        }
        let port = self.port;
        assert!(eventually(Duration::from_secs(10), || !listening(port)).await);
    }

    /// The files recorded so far, oldest first.
    fn recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("rec"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        files
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// nginx-rtmp goes away for 5 s mid-stream: the target retries with backoff
/// and goes live again on its own; nginx records a second file that decodes;
/// the gateway's recording and a WebRTC viewer of the same stream saw every
/// frame, uninterrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nginx_rtmp_outage_is_ridden_out_without_touching_recording_or_viewers() {
    let secs = 14;
    let (video, audio) = tokio::task::spawn_blocking(move || {
        (video_frames(VideoCodec::H264, secs), opus_packets(secs))
    })
    .await
    .unwrap();
    let dir = temp_dir("nginx");
    let port = free_port();
    let mut nginx = Nginx::start(&dir.join("n1"), port).await;
    let record_dir = dir.join("recordings");
    let rd = record_dir.clone();
    let server = gateway::start(move |c| {
        c.record.enabled = true;
        c.record.dir = rd;
        c.restream.backoff_min_secs = 0.5;
        c.restream.backoff_max_secs = 2.0;
    })
    .await;
    let publisher = publisher(&server, "show", Some(VideoCodec::H264), true).await;
    let mut viewer = Viewer::connect(&gateway::url(&server, "/whep/show"), None)
        .await
        .unwrap();
    let watching = tokio::spawn(async move {
        let (mut frames, mut breaks) = (0usize, 0usize);
        while let Some(f) = viewer.next_frame(Duration::from_secs(4)).await {
            if f.kind == Kind::Video {
                frames += 1;
                if !f.contiguous && frames > 1 {
                    breaks += 1;
                }
            }
        }
        (frames, breaks)
    });
    let (s, body) = post_target(
        &server,
        "show",
        &format!(r#"{{"url":"rtmp://127.0.0.1:{port}/live/{KEY}"}}"#),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let id = id_of(&body);

    let play = publisher.play(&video, &audio);
    let control = async {
        let t = wait_target(&server, &id, Duration::from_secs(10), |t| {
            t["state"] == "live" && t["video_frames"].as_u64() >= Some(60)
        })
        .await;
        assert_eq!(t["state"], "live", "{t}");
        nginx.stop().await;
        let t = wait_target(&server, &id, Duration::from_secs(10), |t| {
            t["state"] == "retrying"
        })
        .await;
        assert_eq!(t["state"], "retrying", "{t}");
        assert!(t["error"].is_string(), "{t}");
        assert!(t["next_attempt_in_secs"].is_number(), "{t}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let t = target(&server, &id).await;
        assert!(t["attempts"].as_u64() >= Some(3), "retried while down: {t}");
        assert_eq!(t["connections"].as_u64(), Some(1), "{t}");
        let back = Nginx::start(&dir.join("n2"), port).await;
        let t = wait_target(&server, &id, Duration::from_secs(10), |t| {
            t["state"] == "live" && t["connections"].as_u64() == Some(2)
        })
        .await;
        assert_eq!(t["state"], "live", "{t}");
        assert_eq!(t["connections"].as_u64(), Some(2), "{t}");
        back
    };
    let (played, mut back) = tokio::join!(play, control);
    played.unwrap();
    wait_received(&server, "show", video.len()).await;
    publisher.delete().await.unwrap();
    let t = wait_target(&server, &id, Duration::from_secs(10), |t| {
        t["state"] == "stopped"
    })
    .await;
    assert_eq!(t["state"], "stopped", "{t}");
    recordings_idle(&server).await;
    let (seen, breaks) = watching.await.unwrap();
    server.shutdown().await;
    let second = back.recordings();
    back.stop().await;

    // The viewer saw every frame, with no loss.
    assert_eq!(seen, video.len(), "the viewer missed frames");
    assert_eq!(breaks, 0, "the viewer saw gaps");
    // The recording is one file with every frame.
    let recorded: Vec<PathBuf> = walk(&record_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "mkv" || e == "webm"))
        .collect();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(packets(&recorded[0], "v"), video.len());
    decodes_cleanly(&recorded[0]);
    // nginx's second life recorded the resumed push, which starts at a
    // keyframe, has both tracks and decodes.
    assert_eq!(second.len(), 1, "{second:?}");
    let streams = probe(&second[0], "stream=codec_name");
    assert!(streams.contains("codec_name=h264"), "{streams}");
    assert!(streams.contains("codec_name=aac"), "{streams}");
    decodes_cleanly(&second[0]);
    let d = duration(&second[0]);
    assert!(d > 2.0, "second file lasts {d} s");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `rtmps://` to a TLS terminator (socat, as in front of a real RTMP
/// server) whose certificate the gateway trusts through `restream.ca_file`:
/// the push arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmps_through_a_tls_terminator_delivers_the_stream() {
    let (video, audio) =
        tokio::task::spawn_blocking(|| (video_frames(VideoCodec::H264, 4), opus_packets(4)))
            .await
            .unwrap();
    let dir = temp_dir("rtmps");
    let (cert, key) = certificate(&dir);
    let mut rx = Receiver::start(&dir, "out.flv").await;
    let tls_port = free_port();
    let mut socat = Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,verify=0,cert={},key={}",
            cert.display(),
            key.display()
        ))
        .arg(format!("TCP:127.0.0.1:{}", rx.port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat starts (scripts/setup.sh --test installs it)");
    assert!(eventually(Duration::from_secs(10), || listening(tls_port)).await);
    let ca = cert.clone();
    let server = gateway::start(move |c| c.restream.ca_file = ca).await;
    let publisher = publisher(&server, "sec", Some(VideoCodec::H264), true).await;
    let (s, body) = post_target(
        &server,
        "sec",
        &format!(r#"{{"url":"rtmps://127.0.0.1:{tls_port}/live/{KEY}"}}"#),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    assert!(!body.contains(KEY), "key leaked: {body}");
    let id = id_of(&body);
    publisher.play(&video, &audio).await.unwrap();
    let t = wait_target(&server, &id, Duration::from_secs(5), |t| {
        t["video_frames"].as_u64() == Some(video.len() as u64)
    })
    .await;
    assert_eq!(t["state"], "live", "{t}");
    assert_eq!(t["connections"].as_u64(), Some(1), "{t}");
    publisher.delete().await.unwrap();
    assert!(rx.finished(Duration::from_secs(15)).await, "no end");
    server.shutdown().await;
    let _ = socat.kill();
    let _ = socat.wait();
    let streams = probe(&rx.out, "stream=codec_name");
    assert!(streams.contains("codec_name=h264"), "{streams}");
    assert!(streams.contains("codec_name=aac"), "{streams}");
    assert_eq!(packets(&rx.out, "v"), video.len());
    decodes_cleanly(&rx.out);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Frames of `parts` played one after the other on one timeline.
fn concat(parts: Vec<Vec<EncodedFrame>>) -> Vec<EncodedFrame> {
    let mut out: Vec<EncodedFrame> = Vec::new();
    for mut part in parts {
        let offset = out.last().map_or(0, |f| f.rtp_time + 3000);
        for f in &mut part {
            f.rtp_time += offset;
        }
        out.extend(part);
    }
    out
}

/// A VP8 publisher that starts small and ramps up (320x240 → 640x360 →
/// 1280x720), as browsers do in their first seconds: the transcoded output
/// has the configured size (`restream.video_width` x `video_height`, default
/// 1280x720) from the first frame to the last, not the first picture's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoded_video_keeps_the_configured_size_while_the_publisher_ramps_up() {
    let video = tokio::task::spawn_blocking(|| {
        concat(vec![
            video_frames_sized(VideoCodec::Vp8, 2, "320x240"),
            video_frames_sized(VideoCodec::Vp8, 2, "640x360"),
            video_frames_sized(VideoCodec::Vp8, 2, "1280x720"),
        ])
    })
    .await
    .unwrap();
    let dir = temp_dir("size");
    let mut rx = Receiver::start(&dir, "out.flv").await;
    let server = gateway::start(|_| {}).await;
    let publisher = publisher(&server, "size", Some(VideoCodec::Vp8), false).await;
    let (s, body) = post_target(&server, "size", &format!(r#"{{"url":"{}"}}"#, rx.url())).await;
    assert_eq!(s, 201, "{body}");
    publisher.play(&video, &[]).await.unwrap();
    wait_received(&server, "size", video.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    publisher.delete().await.unwrap();
    assert!(rx.finished(Duration::from_secs(15)).await, "no end");
    server.shutdown().await;
    let sizes = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v"])
        .args(["-show_entries", "frame=width,height", "-of", "csv=p=0"])
        .arg(&rx.out)
        .output()
        .unwrap();
    let sizes = String::from_utf8_lossy(&sizes.stdout).to_string();
    // One "width,height" per frame (ffprobe may add an empty field).
    let frames: Vec<String> = sizes
        .lines()
        .map(|l| l.trim_end_matches(',').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(frames.len() + 2 >= video.len(), "{} frames", frames.len());
    let distinct: std::collections::BTreeSet<&String> = frames.iter().collect();
    assert_eq!(
        distinct.into_iter().collect::<Vec<_>>(),
        vec!["1280,720"],
        "every frame at the configured size"
    );
    decodes_cleanly(&rx.out);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An encoder FFmpeg does not have: the target fails with the reason instead
/// of streaming without video; an H.264 stream (no encoder needed) is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_encoder_fails_the_target_with_the_reason() {
    let server = gateway::start(|c| {
        c.restream.video_encoder = "no_such_h264_encoder".into();
    })
    .await;
    let publisher = publisher(&server, "vp8", Some(VideoCodec::Vp8), true).await;
    let port = free_port();
    let (s, body) = post_target(
        &server,
        "vp8",
        &format!(r#"{{"url":"rtmp://127.0.0.1:{port}/live/{KEY}"}}"#),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let id = id_of(&body);
    let t = wait_target(&server, &id, Duration::from_secs(5), |t| {
        t["state"] == "failed"
    })
    .await;
    assert_eq!(t["state"], "failed", "{t}");
    let error = t["error"].as_str().unwrap_or("");
    assert!(
        error.contains("no_such_h264_encoder") && error.contains("vp8"),
        "{t}"
    );
    // A second target on the same stream fails at once, for the same reason.
    let (s, body) = post_target(
        &server,
        "vp8",
        &format!(r#"{{"url":"rtmp://127.0.0.1:{port}/live/other"}}"#),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let t = wait_target(&server, &id_of(&body), Duration::from_secs(5), |t| {
        t["state"] == "failed"
    })
    .await;
    assert_eq!(t["state"], "failed", "{t}");
    publisher.delete().await.unwrap();
    server.shutdown().await;
}

/// FLV tags as an `ffmpeg -listen` receiver writes them to its stdout:
/// (tag type, timestamp in ms, when the tag was read).
fn flv_tags(
    mut out: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<(u8, u32, std::time::Instant)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut header = [0u8; 13]; // FLV header + first PreviousTagSize
        if out.read_exact(&mut header).is_err() {
            return;
        }
        let mut tag = [0u8; 11];
        while out.read_exact(&mut tag).is_ok() {
            let at = std::time::Instant::now();
            let size = u32::from_be_bytes([0, tag[1], tag[2], tag[3]]) as usize;
            let ts = u32::from_be_bytes([tag[7], tag[4], tag[5], tag[6]]);
            let mut body = vec![0u8; size + 4];
            if out.read_exact(&mut body).is_err() || tx.send((tag[0], ts, at)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Figure (printed, not asserted): the delay a restream adds, from a frame's
/// arrival over WebRTC to its receipt by an RTMP server on the same machine
/// (passthrough H.264 + Opus → AAC). Asserted: every frame arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_added_latency_from_webrtc_ingest_to_rtmp_receipt() {
    let secs = 8;
    let (video, audio) = tokio::task::spawn_blocking(move || {
        (video_frames(VideoCodec::H264, secs), opus_packets(secs))
    })
    .await
    .unwrap();
    let port = free_port();
    let mut rx = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-fflags", "nobuffer"])
        .args([
            "-analyzeduration",
            "0",
            "-probesize",
            "32",
            "-listen",
            "1",
            "-i",
        ])
        .arg(format!("rtmp://127.0.0.1:{port}/live/{KEY}"))
        .args(["-c", "copy", "-flush_packets", "1", "-f", "flv", "pipe:1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg starts");
    assert!(eventually(Duration::from_secs(10), || listening(port)).await);
    let tags = flv_tags(rx.stdout.take().unwrap());
    let server = gateway::start(|_| {}).await;
    let publisher = publisher(&server, "lat", Some(VideoCodec::H264), true).await;
    let (s, body) = post_target(
        &server,
        "lat",
        &format!(r#"{{"url":"rtmp://127.0.0.1:{port}/live/{KEY}"}}"#),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let id = id_of(&body);
    // The target is connected before the first frame: frame i's FLV time
    // is its RTP time, and it was sent at `start` + that time.
    let start = std::time::Instant::now();
    publisher.play(&video, &audio).await.unwrap();
    let t = wait_target(&server, &id, Duration::from_secs(5), |t| {
        t["video_frames"].as_u64() == Some(video.len() as u64)
    })
    .await;
    publisher.delete().await.unwrap();
    let received: Vec<(u8, u32, std::time::Instant)> = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        while let Ok(t) = tags.recv_timeout(Duration::from_secs(10)) {
            all.push(t);
        }
        all
    })
    .await
    .unwrap();
    server.shutdown().await;
    let _ = rx.kill();
    let _ = rx.wait();
    let frames: Vec<&(u8, u32, std::time::Instant)> =
        received.iter().filter(|(kind, ..)| *kind == 9).collect();
    assert_eq!(t["video_frames"].as_u64(), Some(video.len() as u64), "{t}");
    // Every frame from the receiver's second second on (its first second
    // goes to its own start-up), in order.
    let later: std::collections::BTreeSet<u32> = frames
        .iter()
        .map(|f| f.1)
        .filter(|ts| *ts >= 1000)
        .collect();
    let sent_later = video.iter().filter(|f| f.rtp_time >= 90_000).count();
    assert_eq!(later.len(), sent_later, "frames lost on the way");
    assert!(frames.windows(2).all(|w| w[0].1 <= w[1].1), "out of order");
    // The receiver's first second is its start-up (stream probing): skip it.
    let mut delays: Vec<f64> = frames
        .iter()
        .filter(|(_, ts, _)| *ts >= 1000)
        .map(|(_, ts, at)| {
            let sent = start + Duration::from_millis(u64::from(*ts));
            at.saturating_duration_since(sent).as_secs_f64() * 1000.0
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    let pct = |p: f64| delays[((delays.len() - 1) as f64 * p) as usize];
    eprintln!(
        "FIGURES WebRTC ingest → RTMP receipt (H.264 passthrough + AAC, loopback, {} frames): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; gateway-reported arrival → network {:.1} ms",
        delays.len(),
        pct(0.5),
        pct(0.95),
        pct(1.0),
        t["latency_ms"].as_f64().unwrap_or(f64::NAN)
    );
}
