//! `castgate-load` end to end: the built tool against an in-process gateway (real WHIP
//! publisher, real WHEP viewers over loopback UDP), its JSON report, and its errors.

use crate::common;

use std::process::{Command, Output};

use common::files::{free_port, temp_dir};
use common::gateway::{self, url};
use serde_json::Value;

/// Runs `castgate-load` with `args` off the async runtime (the gateway keeps running).
async fn load(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_castgate-load"))
            .args(&args)
            .output()
            .expect("castgate-load runs")
    })
    .await
    .unwrap()
}

/// Small, fast settings shared by the tests (a 320x240 clip cached per test binary).
fn base(target: &str, fixtures: &str) -> Vec<String> {
    [
        "--url",
        target,
        "--size",
        "320x240",
        "--bitrate-kbps",
        "600",
        "--fixture-dir",
        fixtures,
        "--warmup",
        "0.5",
        "--settle",
        "0.2",
        "--quiet",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_two_viewers_report_real_figures() {
    let server = gateway::start(|_| {}).await;
    let fixtures = temp_dir("load-fixtures");
    let mut args = base(&url(&server, ""), fixtures.to_str().unwrap());
    args.extend(
        [
            "--publishers",
            "1",
            "--viewers-per-stream",
            "2",
            "--duration",
            "3",
            "--json",
            "--server-pid",
        ]
        .map(String::from),
    );
    // The gateway runs in this process: its CPU and memory are ours.
    args.push(std::process::id().to_string());
    let out = load(args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));

    assert_eq!(r["sessions_ok"], 3, "{r:#}");
    assert_eq!(r["sessions_failed"], 0, "{r:#}");
    // 3 s at 2 viewers: ~50 Opus packets/s and 30+ video packets/s each.
    let packets = r["packets_received"].as_u64().unwrap();
    assert!(packets > 300, "only {packets} packets: {r:#}");
    let loss = r["loss_pct"].as_f64().unwrap();
    assert!(loss < 1.0, "loss {loss} %: {r:#}");
    assert!(r["frames_complete"].as_u64().unwrap() > 60, "{r:#}");
    assert!(r["keyframes_received"].as_u64().unwrap() >= 2, "{r:#}");
    for key in ["first_frame_ms", "delay_ms", "connect_ms"] {
        for p in ["p50", "p95", "p99"] {
            assert!(r[key][p].is_number(), "{key}.{p} missing: {r:#}");
        }
    }
    assert_eq!(
        r["first_frame_ms"]["count"], 2,
        "both viewers saw a keyframe"
    );
    assert!(
        r["delay_ms"]["count"].as_u64().unwrap() > 0,
        "frames matched to their send by RTP time: {r:#}"
    );
    for key in [
        "server_cpu_s",
        "server_cpu_us_per_packet",
        "server_peak_rss_kb",
        "server_rss_per_viewer_kb",
    ] {
        assert!(r[key].is_number(), "{key} missing: {r:#}");
    }
    assert!(r["server_cpu_s"].as_f64().unwrap() > 0.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_readable_error() {
    let fixtures = temp_dir("load-fixtures");
    let target = format!("http://127.0.0.1:{}", free_port());
    let mut args = base(&target, fixtures.to_str().unwrap());
    args.extend(["--duration", "1", "--json"].map(String::from));
    let out = load(args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no report when nothing connected");
    assert!(
        stderr.contains("no publisher could connect") && stderr.contains("cannot connect"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_server_is_a_readable_error() {
    let server = gateway::start(|c| c.auth.publish_token = Some("secret".into())).await;
    let fixtures = temp_dir("load-fixtures");
    let mut args = base(&url(&server, ""), fixtures.to_str().unwrap());
    args.extend(["--duration", "1", "--token", "wrong"].map(String::from));
    let out = load(args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        !stderr.contains("wrong"),
        "the token never reaches the output: {stderr}"
    );
    server.shutdown().await;
}
