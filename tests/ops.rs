//! Running castgate for real: Prometheus metrics that move with the media,
//! readiness, server-sent events, signed and retried webhooks, JSON logs, and a
//! clean stop of the real binary on SIGTERM.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use castgate::server::Server;
use common::files::{decodes_cleanly, free_port, free_udp_port, packets, temp_dir};
use common::gateway::{self, publisher, scrape, url, value, wait_received};
use common::hooks::{webhook_receiver, webhook_receiver_answering};
use common::media::{opus_packets, video_frames};
use common::peer::{PeerOptions, Publisher, VideoCodec, Viewer};
use common::process::{signal, wait_exit};
use hmac::{Hmac, KeyInit, Mac};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_present_and_move_while_a_publisher_sends() {
    let dir = temp_dir("metrics");
    let d = dir.to_path_buf();
    let server = gateway::start(move |c| {
        c.record.enabled = true;
        c.record.dir = d;
    })
    .await;
    let mut bus = server.events().subscribe();
    let name = "metrics-secret-name";
    let video = video_frames(VideoCodec::Vp8, 4);
    let audio = opus_packets(4);
    let publisher = publisher(&server, name, Some(VideoCodec::Vp8), true).await;
    let mut viewer = Viewer::connect(&url(&server, &format!("/whep/{name}")), None)
        .await
        .expect("viewer connects");

    publisher.play(&video[..60], &audio[..100]).await.unwrap();
    wait_received(&server, name, 160).await;
    assert!(viewer.next_frame(Duration::from_secs(5)).await.is_some());
    let first = scrape(&server).await;
    publisher.play(&video[60..], &audio[100..]).await.unwrap();
    wait_received(&server, name, video.len() + audio.len()).await;
    let second = scrape(&server).await;

    assert_eq!(value(&first, "castgate_streams"), Some(1.0), "{first}");
    assert_eq!(value(&first, "castgate_publishers"), Some(1.0), "{first}");
    assert_eq!(value(&first, "castgate_viewers"), Some(1.0), "{first}");
    assert_eq!(
        value(&first, "castgate_recordings_active"),
        Some(1.0),
        "{first}"
    );
    for series in [
        "castgate_frames_in_total",
        "castgate_media_bytes_in_total",
        "castgate_media_bytes_out_total",
        "castgate_udp_datagrams_in_total",
        "castgate_udp_datagrams_out_total",
    ] {
        let (a, b) = (value(&first, series), value(&second, series));
        assert!(
            a.is_some_and(|a| a > 0.0) && b > a,
            "{series} moves: {a:?} → {b:?}"
        );
    }
    assert_eq!(
        value(&second, "castgate_frames_in_total"),
        Some((video.len() + audio.len()) as f64)
    );
    assert!(value(&second, "castgate_keyframe_requests_total").is_some_and(|v| v >= 1.0));
    // str0m's RTP statistics (every 2 s; the stream has run for 4 s).
    for series in [
        "castgate_rtp_packets_in_total",
        "castgate_rtp_packets_out_total",
    ] {
        assert!(
            value(&second, series).is_some_and(|v| v >= 30.0),
            "{series}: {second}"
        );
    }
    assert!(value(&second, "castgate_rtp_nacks_received_total").is_some());
    for sink in ["viewer", "recorder", "restream"] {
        let s = format!("castgate_frames_dropped_total{{sink=\"{sink}\"}}");
        assert!(value(&second, &s).is_some(), "{s} in {second}");
    }
    assert!(value(&second, "castgate_restream_targets{state=\"live\"}").is_some());
    // HTTP by route template and status; the stream name never becomes a label.
    assert_eq!(
        value(
            &second,
            "castgate_http_requests_total{method=\"POST\",route=\"/whip/{stream}\",status=\"201\"}"
        ),
        Some(1.0),
        "{second}"
    );
    assert!(
        second.contains(
            "castgate_http_request_duration_seconds_count{method=\"POST\",route=\"/whep/{stream}\",status=\"201\"} 1"
        ),
        "{second}"
    );
    assert!(!second.contains(name), "no per-stream labels by default");

    // The stream ends: totals stay, the recording is finalized and counted.
    assert_eq!(publisher.delete().await.unwrap(), 200);
    viewer.wait_ended(Duration::from_secs(5)).await;
    gateway::recordings_idle(&server).await;
    let after = scrape(&server).await;
    assert_eq!(value(&after, "castgate_streams"), Some(0.0));
    assert_eq!(
        value(&after, "castgate_frames_in_total"),
        value(&second, "castgate_frames_in_total"),
        "counters survive the stream's end"
    );
    assert_eq!(
        value(&after, "castgate_recordings_finalized_total"),
        Some(1.0)
    );
    assert!(value(&after, "castgate_recording_bytes_written_total").is_some_and(|b| b > 10_000.0));
    // The recording's events, the finalized one with the file's real size and hash.
    let events: Vec<serde_json::Value> = std::iter::from_fn(|| bus.try_recv().ok())
        .map(|e| serde_json::to_value(&*e).unwrap())
        .collect();
    let of = |t: &str| events.iter().find(|e| e["type"] == t).cloned();
    let started = of("recording_started").expect("recording_started");
    let done = of("recording_finalized").expect("recording_finalized");
    assert_eq!(started["id"], done["id"]);
    let file = PathBuf::from(done["path"].as_str().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(done["size_bytes"], bytes.len() as u64);
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert_eq!(done["sha256"], hash);
    assert_eq!(packets(&file, "v"), video.len());
    let listed: serde_json::Value = reqwest::get(url(&server, "/api/recordings"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["recordings"][0]["sha256"], hash, "{listed}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_stream_series_only_when_enabled() {
    let server = gateway::start(|c| c.metrics.per_stream = true).await;
    let p = publisher(&server, "labelled", Some(VideoCodec::Vp8), false).await;
    p.play(&video_frames(VideoCodec::Vp8, 1)[..10], &[])
        .await
        .unwrap();
    wait_received(&server, "labelled", 10).await;
    let text = scrape(&server).await;
    assert_eq!(
        value(&text, "castgate_stream_frames_in{stream=\"labelled\"}"),
        Some(10.0),
        "{text}"
    );
    p.delete().await.unwrap();
    server.shutdown().await;
    let off = gateway::start(|c| c.metrics.enabled = false).await;
    let resp = reqwest::get(url(&off, "/metrics")).await.unwrap();
    assert_eq!(resp.status(), 404);
    off.shutdown().await;
}

async fn readyz(server: &Server) -> (u16, serde_json::Value) {
    let resp = reqwest::get(url(server, "/readyz")).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_200_when_ready_and_503_with_the_reason_otherwise() {
    let dir = temp_dir("ready");
    let d = dir.to_path_buf();
    let server = gateway::start(move |c| {
        c.record.enabled = true;
        c.record.dir = d;
    })
    .await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["udp"]["ok"], true);

    // The recordings folder is replaced by a file: nothing can be recorded.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"in the way").unwrap();
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["recordings_dir"]["ok"], false, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with("recordings_dir:"),
        "{body}"
    );
    // Liveness is unaffected.
    let health = reqwest::get(url(&server, "/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    server.shutdown().await;
    std::fs::remove_file(&dir).unwrap();

    // Less free space than record.min_free_mib.
    let dir = temp_dir("ready-disk");
    let d = dir.to_path_buf();
    let server = gateway::start(move |c| {
        c.record.enabled = true;
        c.record.dir = d;
        c.record.min_free_mib = 1 << 40;
    })
    .await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"].as_str().unwrap().starts_with("disk:"),
        "{body}"
    );
    server.shutdown().await;
}

/// Reads an SSE response until `want` event types have all been seen (bounded).
async fn read_events(
    resp: &mut reqwest::Response,
    want: &[&str],
    limit: Duration,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + limit;
    let mut buf = String::new();
    let mut seen: Vec<serde_json::Value> = Vec::new();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Ok(Some(chunk))) = tokio::time::timeout(left, resp.chunk()).await else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let event = block.lines().find_map(|l| l.strip_prefix("event:"));
            let data = block.lines().find_map(|l| l.strip_prefix("data:"));
            if let (Some(event), Some(data)) = (event, data) {
                let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
                assert_eq!(v["type"], event.trim(), "event name is the type");
                seen.push(v);
            }
        }
        if want.iter().all(|w| seen.iter().any(|v| v["type"] == *w)) {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_carry_stream_and_viewer_lifecycle() {
    let server = gateway::start(|_| {}).await;
    let mut resp = reqwest::get(url(&server, "/api/events")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let p = publisher(&server, "sse", Some(VideoCodec::Vp8), false).await;
    let video = video_frames(VideoCodec::Vp8, 1);
    let mut v = Viewer::connect(&url(&server, "/whep/sse"), None)
        .await
        .unwrap();
    p.play(&video, &[]).await.unwrap();
    assert!(v.next_frame(Duration::from_secs(5)).await.is_some());
    wait_received(&server, "sse", video.len()).await;
    assert_eq!(p.delete().await.unwrap(), 200);
    let seen = read_events(
        &mut resp,
        &[
            "stream_started",
            "viewer_joined",
            "viewer_left",
            "stream_ended",
        ],
        Duration::from_secs(10),
    )
    .await;
    let types: Vec<&str> = seen.iter().filter_map(|v| v["type"].as_str()).collect();
    let pos = |t: &str| types.iter().position(|x| *x == t);
    assert!(pos("stream_started") < pos("viewer_joined"), "{types:?}");
    assert!(pos("viewer_joined") < pos("stream_ended"), "{types:?}");
    assert!(pos("viewer_left").is_some(), "{types:?}");
    let started = &seen[pos("stream_started").unwrap()];
    assert_eq!(started["stream"], "sse");
    assert_eq!(started["video"], "vp8");
    let ended = &seen[pos("stream_ended").unwrap()];
    assert_eq!(ended["frames_in"], video.len() as u64, "{ended}");
    assert_eq!(ended["reason"], "publisher_left", "it deleted its session");
    assert!(ended["seq"].as_u64() > started["seq"].as_u64());
    // The stream of events ends with the server.
    server.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the SSE response ends at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restream_target_state_changes_are_events_with_masked_urls() {
    let server = gateway::start(|c| {
        c.restream.backoff_min_secs = 0.2;
        c.restream.backoff_max_secs = 0.2;
    })
    .await;
    let mut bus = server.events().subscribe();
    let p = publisher(&server, "rs", Some(VideoCodec::H264), false).await;
    // Nobody listens on this port: every connection is refused.
    let body = format!(
        "{{\"url\": \"rtmp://127.0.0.1:{}/live/streamkey-secret\"}}",
        free_port()
    );
    let resp = reqwest::Client::new()
        .post(url(&server, "/api/streams/rs/restreams"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let target: serde_json::Value = resp.json().await.unwrap();
    let id = target["id"].as_str().unwrap().to_string();
    let video = video_frames(VideoCodec::H264, 1);
    p.play(&video, &[]).await.unwrap();
    let mut states: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !states.iter().any(|s| s["state"] == "retrying") {
        if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(200), bus.recv()).await
            && e.event.kind() == "restream_state"
        {
            states.push(serde_json::to_value(&*e).unwrap());
        }
    }
    let retrying = states
        .iter()
        .find(|s| s["state"] == "retrying")
        .unwrap_or_else(|| panic!("no retrying event: {states:?}"));
    assert_eq!(retrying["target_id"], id.as_str());
    assert_eq!(retrying["stream"], "rs");
    assert!(retrying["error"].as_str().is_some_and(|e| !e.is_empty()));
    let all = serde_json::to_string(&states).unwrap();
    assert!(!all.contains("streamkey-secret"), "{all}");
    assert!(retrying["url"].as_str().unwrap().ends_with("/live/****"));
    let text = scrape(&server).await;
    assert!(value(&text, "castgate_restream_targets{state=\"retrying\"}").is_some());
    // Removing it ends in `stopped`.
    let resp = reqwest::Client::new()
        .delete(url(&server, &format!("/api/streams/rs/restreams/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stopped = std::iter::from_fn(|| bus.try_recv().ok())
        .any(|e| serde_json::to_value(&*e).unwrap()["state"] == "stopped");
    assert!(stopped, "a stopped event");
    p.delete().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_is_signed_and_retried_after_a_500() {
    let (hook, got) = webhook_receiver().await;
    let secret = "webhook-s3cret";
    let server = gateway::start(move |c| {
        c.events.webhooks.push(castgate::config::WebhookConfig {
            url: hook,
            secret: Some(secret.into()),
            events: vec!["stream_started".into()],
        });
        c.events.webhook_backoff_min_secs = 0.05;
    })
    .await;
    let p = publisher(&server, "hooked", Some(VideoCodec::Vp8), false).await;
    let delivered = gateway::eventually(Duration::from_secs(10), || {
        got.hits.lock().unwrap().len() >= 2
    })
    .await;
    assert!(delivered, "retried after the 500");
    let hits = got.hits.lock().unwrap().clone();
    assert_eq!(hits.len(), 2, "one failure, one success, nothing else");
    let (h1, b1) = &hits[0];
    let (h2, b2) = &hits[1];
    assert_eq!(b1, b2, "the retry carries the same body");
    assert_eq!(h1["x-castgate-delivery"], h2["x-castgate-delivery"]);
    assert_eq!(h2["x-castgate-event"], "stream_started");
    assert_eq!(h2["content-type"], "application/json");
    // The signature, checked the way a receiver would.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(b2);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(h2["x-castgate-signature"].to_str().unwrap(), want);
    let body: serde_json::Value = serde_json::from_slice(b2).unwrap();
    assert_eq!(body["type"], "stream_started");
    assert_eq!(body["stream"], "hooked");
    // A wrong secret would not verify.
    let mut bad = Hmac::<sha2::Sha256>::new_from_slice(b"other").unwrap();
    bad.update(b2);
    assert_ne!(
        format!("sha256={}", hex::encode(bad.finalize().into_bytes())),
        want
    );
    let text = scrape(&server).await;
    assert_eq!(
        value(&text, "castgate_webhook_events_total{result=\"delivered\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "castgate_webhook_failed_attempts_total"),
        Some(1.0)
    );
    p.delete().await.unwrap();
    server.shutdown().await;
    // Filtered: stream_ended was not sent.
    assert_eq!(got.hits.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_are_bounded_and_a_4xx_is_not_retried() {
    let (down, down_got) =
        webhook_receiver_answering(|_| axum::http::StatusCode::SERVICE_UNAVAILABLE).await;
    let (refusing, refusing_got) =
        webhook_receiver_answering(|_| axum::http::StatusCode::FORBIDDEN).await;
    let server = gateway::start(move |c| {
        for url in [down, refusing] {
            c.events.webhooks.push(castgate::config::WebhookConfig {
                url,
                secret: None,
                events: vec!["stream_started".into()],
            });
        }
        c.events.webhook_max_attempts = 3;
        c.events.webhook_backoff_min_secs = 0.02;
        c.events.webhook_backoff_max_secs = 0.05;
    })
    .await;
    let p = publisher(&server, "bounded", Some(VideoCodec::Vp8), false).await;
    let given_up = gateway::eventually(Duration::from_secs(10), || {
        let m = server.metrics().unwrap().render().unwrap();
        value(&m, "castgate_webhook_events_total{result=\"given_up\"}") == Some(2.0)
    })
    .await;
    assert!(given_up, "both events given up");
    assert_eq!(
        down_got.hits.lock().unwrap().len(),
        3,
        "3 attempts, then no more"
    );
    assert_eq!(refusing_got.hits.lock().unwrap().len(), 1, "a 403 is final");
    assert!(
        down_got.hits.lock().unwrap()[0]
            .0
            .get("x-castgate-signature")
            .is_none(),
        "no secret, no signature"
    );
    let m = scrape(&server).await;
    assert_eq!(
        value(&m, "castgate_webhook_failed_attempts_total"),
        Some(4.0)
    );
    assert_eq!(
        value(&m, "castgate_webhook_events_total{result=\"delivered\"}"),
        Some(0.0)
    );
    p.delete().await.unwrap();
    server.shutdown().await;
}

fn recordings_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(s.path()).into_iter().flatten().flatten() {
            let p = f.path();
            let n = p.to_string_lossy().to_string();
            if n.ends_with(".webm") || n.ends_with(".mkv") || n.ends_with(".part") {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_peers_finalizes_the_recording_and_exits_0() {
    let dir = temp_dir("sigterm");
    // As for in-process gateways: this shared machine's free space swings, and
    // the test is not about the free-space floor.
    let config = dir.join("castgate.toml");
    std::fs::write(&config, "[record]\nmin_free_mib = 0\n").unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_castgate"))
        .args(["serve", "--http-listen", &http])
        .arg("--config")
        .arg(&config)
        .args(["--udp-listen", &format!("127.0.0.1:{}", free_udp_port())])
        .arg("--record-dir")
        .arg(dir.path())
        .args(["--log-format", "json", "--shutdown-timeout", "20"])
        .env("RUST_LOG", "castgate=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("castgate starts");
    // Read the logs as they come, so the pipe never fills.
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let base = format!("http://{http}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/readyz")).await.is_err() {
        assert!(Instant::now() < deadline, "castgate never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let video = video_frames(VideoCodec::Vp8, 3);
    let audio = opus_packets(3);
    let publisher = Publisher::connect(
        &format!("{base}/whip/term"),
        PeerOptions::new(Some(VideoCodec::Vp8), true),
    )
    .await
    .unwrap();
    let mut viewer = Viewer::connect(&format!("{base}/whep/term"), None)
        .await
        .unwrap();
    publisher.play(&video, &audio).await.unwrap();
    assert!(viewer.next_frame(Duration::from_secs(5)).await.is_some());
    // Every frame reached the gateway before the signal.
    let all = (video.len() + audio.len()) as u64;
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while received < all && Instant::now() < deadline {
        let s: serde_json::Value = reqwest::get(format!("{base}/api/streams/term"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        received = s["frames_in"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(received, all, "every frame arrived");

    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(30), "SIGTERM").await;
    assert_eq!(status.code(), Some(0), "clean exit");

    // Both peers were told (DTLS close_notify), not left to time out.
    assert!(publisher.wait_ended(Duration::from_secs(5)).await);
    assert!(viewer.wait_ended(Duration::from_secs(5)).await);
    for reason in [publisher.end_reason(), viewer.end_reason()] {
        let reason = reason.unwrap_or_default();
        assert!(reason.contains("close_notify"), "{reason}");
    }

    let logs = logs.join().unwrap();
    // The recording is complete and valid.
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1, "{files:?} {logs}");
    let f = &files[0];
    assert!(f.to_string_lossy().ends_with(".webm"), "{}", f.display());
    assert_eq!(packets(f, "v"), video.len(), "nothing lost");
    decodes_cleanly(f);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.with_extension("json")).unwrap()).unwrap();
    assert_eq!(meta["state"], "finalized");
    assert_eq!(meta["sha256"].as_str().map(str::len), Some(64));

    // JSON logs: one object per line, the session and stream ends with their figures.
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find = |msg: &str, role: Option<&str>| {
        lines
            .iter()
            .find(|l| l["message"] == msg && role.is_none_or(|r| l["role"] == r))
            .unwrap_or_else(|| panic!("no {msg:?} line in {logs}"))
            .clone()
    };
    let ended = find("session ended", Some("publisher"));
    assert_eq!(ended["reason"], "shutdown");
    assert_eq!(ended["frames"], all, "{ended}");
    assert!(ended["bytes_in"].as_u64().unwrap() > 0, "{ended}");
    let viewer_ended = find("session ended", Some("viewer"));
    assert!(
        viewer_ended["frames"].as_u64().unwrap() > 0,
        "{viewer_ended}"
    );
    let stream = find("stream ended", None);
    assert_eq!(stream["frames_in"], all, "{stream}");
    let rec = find("recording finalized", None);
    assert_eq!(rec["sha256"], meta["sha256"]);
    let done = find("shutdown complete", None);
    println!("figure: sigterm_shutdown_secs={}", done["secs"]);
    assert!(
        !logs.contains("webhook-s3cret"),
        "nothing secret in the logs"
    );
}
