//! HLS output end to end: a publisher's stream muxed to HLS by the gateway,
//! fetched over HTTP and validated with ffprobe / ffmpeg.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use castgate::server::Server;
use common::files::temp_dir;
use common::gateway::{self, eventually, publisher, url};
use common::media::{opus_packets, video_frames};
use common::peer::{VideoCodec, http_client};
use serde_json::Value;

/// Segment files in every per-stream folder under `dir`.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
            if f.path().extension().is_some_and(|x| x == "ts") {
                out.push(f.path());
            }
        }
    }
    out
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

async fn get(server: &Server, path: &str) -> (u16, String, String, String) {
    let resp = http_client()
        .unwrap()
        .get(url(server, path))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (ct, cc) = (h("content-type"), h("cache-control"));
    (status, ct, cc, resp.text().await.unwrap_or_default())
}

async fn api(server: &Server, method: reqwest::Method, path: &str) -> (u16, Value) {
    let resp = http_client()
        .unwrap()
        .request(method, url(server, path))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Runs a command off the runtime; (success, stdout, stderr).
async fn run(cmd: &'static str, args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(cmd)
            .args(&args)
            .output()
            .expect("ffmpeg tools run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_window_slides_decodes_and_is_removed() {
    let (video, audio) =
        tokio::task::spawn_blocking(|| (video_frames(VideoCodec::H264, 8), opus_packets(8)))
            .await
            .unwrap();
    let dir = temp_dir("live");
    // A folder left by a "previous run" is cleaned at startup.
    std::fs::create_dir_all(dir.join("s999")).unwrap();
    std::fs::write(dir.join("s999/seg1.ts"), b"x").unwrap();
    let d2 = dir.to_path_buf();
    let server = gateway::start(move |c| {
        c.restream.hls_dir = d2;
        c.restream.hls_time_secs = 1.0;
        c.restream.hls_list_size = 3;
    })
    .await;
    assert!(is_empty(&dir), "stale folder not cleaned");
    let (status, _) = api(&server, reqwest::Method::POST, "/api/streams/cam/hls").await;
    assert_eq!(status, 404, "HLS for a stream that is not live");

    let publisher = publisher(&server, "cam", Some(VideoCodec::H264), true).await;
    let (status, body) = api(&server, reqwest::Method::POST, "/api/streams/cam/hls").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["playlist"], "/hls/cam/index.m3u8");
    let (status, _) = api(&server, reqwest::Method::POST, "/api/streams/cam/hls").await;
    assert_eq!(status, 200, "a second start answers the running output");

    publisher.play(&video, &audio).await.unwrap();
    let (status, state) = api(&server, reqwest::Method::GET, "/api/streams/cam/hls").await;
    assert_eq!(status, 200);
    assert_eq!(state["state"], "live", "{state}");
    assert_eq!(state["source"], "api", "{state}");

    let (status, ct, cc, playlist) = get(&server, "/hls/cam/index.m3u8").await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/vnd.apple.mpegurl");
    assert_eq!(cc, "no-cache");
    assert!(!playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    assert!(
        playlist.contains("#EXT-X-INDEPENDENT-SEGMENTS"),
        "{playlist}"
    );
    let listed: Vec<String> = playlist
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(listed.len(), 3, "{playlist}");
    assert!(
        !listed.iter().any(|s| s == "seg0.ts"),
        "the window slid: {playlist}"
    );

    // The window slid and old segments were deleted.
    let on_disk = segment_files(&dir);
    assert!(
        (3..=5).contains(&on_disk.len()),
        "{} segments on disk: {on_disk:?}",
        on_disk.len()
    );

    // ffprobe reads the live playlist over HTTP.
    let (ok, out, err) = run(
        "ffprobe",
        vec![
            "-v".into(),
            "error".into(),
            "-rw_timeout".into(),
            "5000000".into(),
            "-show_entries".into(),
            "stream=codec_name".into(),
            "-of".into(),
            "default=nw=1".into(),
            url(&server, "/hls/cam/index.m3u8"),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("codec_name=h264"), "{out}");
    assert!(out.contains("codec_name=aac"), "{out}");

    // Every listed segment decodes cleanly, served as MPEG-TS.
    for seg in &listed {
        let (status, ct, _, _) = get(&server, &format!("/hls/cam/{seg}")).await;
        assert_eq!((status, ct.as_str()), (200, "video/mp2t"), "{seg}");
        let (ok, _, err) = run(
            "ffmpeg",
            vec![
                "-v".into(),
                "error".into(),
                "-nostdin".into(),
                "-i".into(),
                url(&server, &format!("/hls/cam/{seg}")),
                "-f".into(),
                "null".into(),
                "-".into(),
            ],
        )
        .await;
        assert!(ok && err.trim().is_empty(), "{seg}: {err}");
    }

    // Only the muxer's own names are served.
    for bad in [
        "/hls/cam/..%2F..%2F..%2Fetc%2Fpasswd",
        "/hls/cam/index.m3u8.tmp",
        "/hls/cam/seg1.ts%2F..%2Findex.m3u8",
        "/hls/..%2Fcam/index.m3u8",
        "/hls/cam/%2Fetc%2Fpasswd",
        "/hls/other/index.m3u8",
        "/hls/cam/seg99999.ts",
    ] {
        let (status, _, _, _) = get(&server, bad).await;
        assert_eq!(status, 404, "{bad}");
    }

    publisher.delete().await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || is_empty(&dir)).await,
        "HLS folder left after the stream ended"
    );
    let (status, _, _, _) = get(&server, "/hls/cam/index.m3u8").await;
    assert_eq!(status, 404);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_from_config_starts_with_the_stream_and_api_delete_removes_it() {
    let (video, audio) =
        tokio::task::spawn_blocking(|| (video_frames(VideoCodec::H264, 3), opus_packets(3)))
            .await
            .unwrap();
    let dir = temp_dir("config");
    let d2 = dir.to_path_buf();
    let server = gateway::start(move |c| {
        c.restream.hls_dir = d2;
        c.restream.hls_time_secs = 1.0;
        c.restream.hls_streams = vec!["auto*".into()];
    })
    .await;
    let other = publisher(&server, "manual", Some(VideoCodec::H264), true).await;
    let publisher = publisher(&server, "auto1", Some(VideoCodec::H264), true).await;
    let (status, state) = api(&server, reqwest::Method::GET, "/api/streams/auto1/hls").await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["source"], "config", "{state}");
    let (status, _) = api(&server, reqwest::Method::GET, "/api/streams/manual/hls").await;
    assert_eq!(status, 404, "no pattern matches");
    publisher.play(&video, &audio).await.unwrap();
    let (status, _, _, playlist) = get(&server, "/hls/auto1/index.m3u8").await;
    assert_eq!(status, 200);
    assert!(playlist.contains("seg"), "{playlist}");

    let (status, state) = api(&server, reqwest::Method::DELETE, "/api/streams/auto1/hls").await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["state"], "stopped", "{state}");
    assert!(is_empty(&dir), "HLS folder left after DELETE");
    let (status, _, _, _) = get(&server, "/hls/auto1/index.m3u8").await;
    assert_eq!(status, 404);
    let (status, _) = api(&server, reqwest::Method::DELETE, "/api/streams/auto1/hls").await;
    assert_eq!(status, 404);
    publisher.delete().await.unwrap();
    other.delete().await.unwrap();
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
