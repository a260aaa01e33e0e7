//! The container files: `docker-compose.yml` validates (Debian's
//! `docker-compose` checks it offline; no Docker engine runs here) and publishes
//! what castgate listens on, and the `Dockerfile`'s runtime stage installs every
//! FFmpeg library the built binary links, runs as a non-root user and keeps
//! recordings on a volume.

use std::path::Path;
use std::process::{Command, Output};

use castgate::config::Config;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn compose_config(env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("docker-compose");
    cmd.current_dir(root())
        .args(["-f", "docker-compose.yml", "config"])
        .env_remove("PUBLIC_IP")
        .env_remove("TURN_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .expect("docker-compose runs (scripts/setup.sh --test installs it)")
}

#[test]
fn compose_file_validates_and_publishes_the_media_port_as_udp() {
    let out = compose_config(&[("PUBLIC_IP", "203.0.113.10"), ("TURN_SECRET", "t0ps3cret")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "docker-compose config: {stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    let defaults = Config::default();
    let udp = defaults.rtc.udp_listen.port();
    let http = defaults.http.listen.port();
    assert!(
        text.contains(&format!(
            "- protocol: udp\n      published: {udp}\n      target: {udp}"
        )),
        "media port {udp} published as UDP on the same number:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "- protocol: tcp\n      published: {udp}\n      target: {udp}"
        )),
        "media port {udp} also published as TCP (ICE-TCP):\n{text}"
    );
    assert!(
        text.contains(&format!(
            "- protocol: tcp\n      published: {http}\n      target: {http}"
        )),
        "{text}"
    );
    for want in [
        "CASTGATE_ANNOUNCE: 203.0.113.10",
        "CASTGATE_UDP_LISTEN: 0.0.0.0:8189",
        "recordings:/recordings",
        "stop_grace_period: 40s",
        "--use-auth-secret",
        "--static-auth-secret=t0ps3cret",
        "--external-ip=203.0.113.10",
        "image: tiangolo/nginx-rtmp",
        "published: 1935",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    // The grace period outlasts castgate's own bound on a clean stop.
    assert!(defaults.shutdown.timeout_secs < 40.0);
}

#[test]
fn compose_file_refuses_to_start_without_the_public_address_and_turn_secret() {
    let out = compose_config(&[("TURN_SECRET", "x")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PUBLIC_IP"));
    let out = compose_config(&[("PUBLIC_IP", "203.0.113.10")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TURN_SECRET"));
}

/// The runtime stage of the Dockerfile (after the last `FROM`).
fn runtime_stage() -> String {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let start = text.rfind("\nFROM ").expect("a runtime stage");
    text[start..].to_string()
}

#[test]
fn dockerfile_runtime_has_every_ffmpeg_library_the_binary_links() {
    let stage = runtime_stage();
    assert!(stage.starts_with("\nFROM debian:12-slim"), "{stage}");
    // Every libav*/libsw* the binary needs, by soname → Debian package name
    // (libavcodec.so.59 → libavcodec59).
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_castgate"))
        .output()
        .expect("ldd runs");
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    let needed: Vec<String> = ldd
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|so| so.starts_with("libav") || so.starts_with("libsw"))
        .map(|so| so.replace(".so.", ""))
        .collect();
    assert!(needed.len() >= 3, "FFmpeg libraries linked: {ldd}");
    for pkg in &needed {
        assert!(
            stage.contains(pkg.as_str()),
            "the runtime image lacks {pkg}"
        );
        // … and Debian 12 has it.
        let policy = Command::new("apt-cache")
            .args(["show", "--no-all-versions", pkg])
            .output()
            .unwrap();
        assert!(policy.status.success(), "Debian package {pkg} exists");
    }
    assert!(stage.contains("\nUSER castgate\n"), "non-root");
    assert!(stage.contains("VOLUME [\"/recordings\"]"));
    assert!(stage.contains("EXPOSE 8080/tcp 8189/udp"));
    assert!(stage.contains("CASTGATE_RECORD_DIR=/recordings"));
    // The build stage installs what CI installs.
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(text.contains("RUN bash scripts/setup.sh"));
    assert!(text.contains("cargo build --release --locked --bin castgate"));
}

/// Every way the README starts castgate (and the benchmarks) turns glibc's
/// per-thread caches off, so memory goes back after sessions end (README
/// "Deploying", BENCHMARKS.md "Memory after sessions end").
#[test]
fn every_launcher_turns_glibc_per_thread_caches_off() {
    for file in ["Dockerfile", "scripts/run.sh", "scripts/bench.sh"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            text.contains("GLIBC_TUNABLES") && text.contains("glibc.malloc.tcache_count=0"),
            "{file} does not set GLIBC_TUNABLES=glibc.malloc.tcache_count=0"
        );
    }
    assert!(runtime_stage().contains("GLIBC_TUNABLES=glibc.malloc.tcache_count=0"));
}
