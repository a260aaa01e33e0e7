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
        .env_remove("TURN_SECRET")
        .env_remove("ADMIN_TOKEN")
        .env_remove("PUBLISH_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .expect("docker-compose runs (scripts/setup.sh --test installs it)")
}

/// Every value the compose file needs from `.env`.
const ENV: [(&str, &str); 4] = [
    ("PUBLIC_IP", "203.0.113.10"),
    ("TURN_SECRET", "t0ps3cret"),
    ("ADMIN_TOKEN", "adm1n-t0ken"),
    ("PUBLISH_TOKEN", "pub-t0ken"),
];

#[test]
fn compose_file_validates_and_publishes_the_media_port_as_udp() {
    let out = compose_config(&ENV);
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
        "CASTGATE_ADMIN_TOKEN: adm1n-t0ken",
        "CASTGATE_PUBLISH_TOKEN: pub-t0ken",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    // The RTMP sink's fixed address is the one internal network castgate
    // may restream to, so `rtmp://nginx-rtmp:1935/…` works and nothing else
    // internal does.
    let sink = text
        .split("ipv4_address:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("the sink has a fixed address");
    let allowed = text
        .split("CASTGATE_OUTBOUND_ALLOW_NETWORKS:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("castgate allows the sink's network");
    let net: castgate::config::Network = allowed.trim_matches('\'').parse().unwrap();
    assert!(net.contains(sink.parse().unwrap()), "{sink} in {allowed}");
    assert_eq!(
        net.0.prefix_len(),
        32,
        "only the sink, not the whole network"
    );
    // The grace period outlasts castgate's own bound on a clean stop.
    assert!(defaults.shutdown.timeout_secs < 40.0);
}

#[test]
fn compose_file_refuses_to_start_without_its_address_and_secrets() {
    for (missing, _) in ENV {
        let rest: Vec<(&str, &str)> = ENV.into_iter().filter(|(k, _)| *k != missing).collect();
        let out = compose_config(&rest);
        assert!(!out.status.success(), "starts without {missing}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // docker-compose ends with the message of the variable it missed.
        let reason = stderr.trim_end().rsplit("\": ").next().unwrap_or("");
        assert!(
            reason.starts_with(&format!("set {missing}")),
            "names {missing}: {stderr}"
        );
    }
}

/// The image's entry point refuses `serve` without an admin token (or a
/// JWT secret or config file that can hold one) and runs castgate otherwise.
#[test]
fn the_image_requires_an_admin_token() {
    let dir = std::env::temp_dir().join(format!("castgate-entry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A stand-in castgate that shows how it was called.
    let stub = dir.join("castgate");
    std::fs::write(&stub, "#!/bin/sh\necho \"ran castgate $*\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new("sh");
        c.arg(root().join("scripts/docker-entrypoint.sh"))
            .args(args)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", dir.display()));
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(&["serve"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CASTGATE_ADMIN_TOKEN"));
    for (args, env) in [
        (&["serve"][..], &[("CASTGATE_ADMIN_TOKEN", "t")][..]),
        (&["serve", "-c", "/etc/castgate.toml"][..], &[][..]),
        (&["repair", "f.webm"][..], &[][..]),
    ] {
        let out = run(args, env);
        assert!(out.status.success(), "{args:?} {env:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("ran castgate {}", args.join(" "))
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let stage = runtime_stage();
    assert!(
        stage.contains("COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh")
    );
    assert!(stage.contains("ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]"));
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

#[test]
fn cluster_compose_file_validates_with_redis_and_two_nodes() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(root())
            .args(["-f", "docker-compose.cluster.yml", "config"]);
        for k in [
            "PUBLIC_IP",
            "CLUSTER_SECRET",
            "REDIS_PASSWORD",
            "ADMIN_TOKEN",
            "PUBLISH_TOKEN",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output()
            .expect("docker-compose runs (scripts/setup.sh --test installs it)")
    };
    let env = [
        ("PUBLIC_IP", "203.0.113.10"),
        ("CLUSTER_SECRET", "c1uster-secret-c1uster-secret-c1uster"),
        ("REDIS_PASSWORD", "r3dis"),
        ("ADMIN_TOKEN", "adm1n-t0ken"),
        ("PUBLISH_TOKEN", "pub-t0ken"),
    ];
    let out = run(&env);
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "image: redis:7-alpine",
        "CASTGATE_CLUSTER_REDIS: redis://:r3dis@redis:6379",
        "CASTGATE_CLUSTER_SECRET: c1uster-secret-c1uster-secret-c1uster",
        "CASTGATE_CLUSTER_NODE_ID: node-a",
        "CASTGATE_CLUSTER_NODE_ID: node-b",
        "CASTGATE_PUBLIC_URL: http://203.0.113.10:8080",
        "CASTGATE_PUBLIC_URL: http://203.0.113.10:8081",
        "CASTGATE_UDP_LISTEN: 0.0.0.0:8190",
        "recordings-a:/recordings",
        "recordings-b:/recordings",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    // Each value is required: without one, nothing starts.
    for skip in 0..env.len() {
        let partial: Vec<(&str, &str)> = env
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, kv)| *kv)
            .collect();
        let out = run(&partial);
        assert!(!out.status.success(), "{} is required", env[skip].0);
    }
}
