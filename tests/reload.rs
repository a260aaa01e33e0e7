//! Config reload (SIGHUP, or `Server::reload` in-process): tokens, webhooks,
//! recording and restream rules change live; an invalid config is refused
//! whole and the old one stays; keys that need a restart are named.

use crate::common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use castgate::config::{Config, WebhookConfig};
use castgate::events::Event;
use castgate::server::Server;
use common::files::{free_port, free_udp_port, temp_dir};
use common::gateway::{self, eventually, publisher, url};
use common::hooks::webhook_receiver_answering;
use common::peer::VideoCodec;
use common::process::{signal, wait_exit};

/// `GET /metrics` (admin only once `admin_token` is set) with `token`: the status.
async fn metrics_status(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the gateway answers")
        .status()
        .as_u16()
}

/// Waits (bounded) until the logs hold `n` lines containing `needle`.
async fn wait_log(logs: &Arc<Mutex<String>>, needle: &str, n: usize) -> bool {
    eventually(Duration::from_secs(15), || {
        logs.lock().unwrap().matches(needle).count() >= n
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_tokens_and_an_invalid_file_keeps_the_old_config() {
    let dir = temp_dir("sighup");
    let config = dir.join("castgate.toml");
    let write = |token: &str, extra: &str| {
        std::fs::write(
            &config,
            format!(
                "[auth]\nadmin_token = \"{token}\"\nfailure_burst = 10000\n\
                 failures_per_min = 100000\n[record]\nenabled = false\n{extra}"
            ),
        )
        .unwrap()
    };
    write("first-token", "");
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_castgate"))
        .args(["serve", "--http-listen", &http])
        .arg("--config")
        .arg(&config)
        .args(["--udp-listen", &format!("127.0.0.1:{}", free_udp_port())])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "castgate=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("castgate starts");
    // Read the logs as they come, so the pipe never fills.
    let logs = Arc::new(Mutex::new(String::new()));
    let reader = {
        let logs = logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = logs.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };
    let base = format!("http://{http}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/readyz")).await.is_err() {
        assert!(Instant::now() < deadline, "castgate never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics_status(&base, "first-token").await, 200);
    assert_eq!(metrics_status(&base, "second-token").await, 401);

    // A new token, and a key that needs a restart.
    write("second-token", "[http]\nrate_limit_burst = 77\n");
    signal(&child, libc::SIGHUP);
    assert!(
        wait_log(&logs, "\"config reloaded\"", 1).await,
        "{}",
        logs.lock().unwrap()
    );
    assert_eq!(metrics_status(&base, "second-token").await, 200);
    assert_eq!(metrics_status(&base, "first-token").await, 401);
    {
        let l = logs.lock().unwrap();
        let warned = l
            .lines()
            .any(|line| line.contains("needs a restart") && line.contains("http.rate_limit_burst"));
        assert!(warned, "the restart-only key is named: {l}");
    }

    // An invalid value: refused whole, the second token stays.
    write("third-token", "[http]\nmax_body_bytes = 10\n");
    signal(&child, libc::SIGHUP);
    assert!(wait_log(&logs, "config reload rejected", 1).await);
    assert!(logs.lock().unwrap().contains("http.max_body_bytes"));
    // A malformed file: the same.
    std::fs::write(&config, "[auth\nadmin_token = \"third-token\"\n").unwrap();
    signal(&child, libc::SIGHUP);
    assert!(wait_log(&logs, "config reload rejected", 2).await);
    assert!(child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(metrics_status(&base, "second-token").await, 200);
    assert_eq!(metrics_status(&base, "third-token").await, 401);

    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(30), "SIGTERM").await;
    assert_eq!(status.code(), Some(0), "clean exit");
    reader.join().unwrap();
    let l = logs.lock().unwrap();
    assert!(
        !l.contains("second-token") && !l.contains("third-token"),
        "no token in the logs"
    );
}

fn hook(url: &str) -> WebhookConfig {
    WebhookConfig {
        url: url.into(),
        ..WebhookConfig::default()
    }
}

fn with(server: &Server, change: impl FnOnce(&mut Config)) -> Config {
    let mut c = (*server.config()).clone();
    change(&mut c);
    c
}

/// Stream names of the `stream_started` events a receiver got.
fn started(got: &common::hooks::Received) -> Vec<String> {
    got.hits
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, body)| serde_json::from_slice::<serde_json::Value>(body).ok())
        .filter(|v| v["type"] == "stream_started")
        .filter_map(|v| v["stream"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_added_by_reload_deliver_and_removed_ones_stop() {
    let server = gateway::start(|_| {}).await;
    let ok = |_| axum::http::StatusCode::OK;
    let (url_a, got_a) = webhook_receiver_answering(ok).await;
    let (url_b, got_b) = webhook_receiver_answering(ok).await;

    let report = server
        .reload(with(&server, |c| c.events.webhooks = vec![hook(&url_a)]))
        .await
        .unwrap();
    assert_eq!(report.applied, ["events.webhooks"]);
    assert_eq!(report.webhooks.started, 1);
    let one = publisher(&server, "hooked-1", Some(VideoCodec::Vp8), false).await;
    assert!(
        eventually(Duration::from_secs(10), || started(&got_a) == ["hooked-1"]).await,
        "{:?}",
        got_a.event_types()
    );

    // Adding B keeps A running; then A is removed.
    let report = server
        .reload(with(&server, |c| {
            c.events.webhooks = vec![hook(&url_a), hook(&url_b)]
        }))
        .await
        .unwrap();
    assert_eq!((report.webhooks.kept, report.webhooks.started), (1, 1));
    let report = server
        .reload(with(&server, |c| c.events.webhooks = vec![hook(&url_b)]))
        .await
        .unwrap();
    assert_eq!((report.webhooks.kept, report.webhooks.stopped), (1, 1));
    // B saw that last reload (so A, stopped before it, has drained too).
    assert!(
        eventually(Duration::from_secs(10), || {
            got_b
                .event_types()
                .iter()
                .filter(|t| *t == "config_reloaded")
                .count()
                >= 2
        })
        .await
    );
    let two = publisher(&server, "hooked-2", Some(VideoCodec::Vp8), false).await;
    assert!(eventually(Duration::from_secs(10), || started(&got_b) == ["hooked-2"]).await);
    assert_eq!(
        started(&got_a),
        ["hooked-1"],
        "a removed webhook gets nothing new"
    );
    // Deliveries of webhooks that came with a reload are counted too.
    let delivered = gateway::value(
        &gateway::scrape(&server).await,
        "castgate_webhook_events_total{result=\"delivered\"}",
    );
    assert!(delivered.is_some_and(|n| n >= 2.0), "{delivered:?}");
    drop((one, two));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_and_restream_rules_apply_to_streams_started_after_reload() {
    let dir = temp_dir("reload-rules");
    let server = gateway::start(|c| {
        c.record.enabled = true;
        c.record.dir = dir.join("rec");
        c.record.streams = vec!["none-*".into()];
        c.restream.hls_dir = dir.join("hls");
    })
    .await;
    let before = publisher(&server, "cam-a", Some(VideoCodec::Vp8), false).await;
    assert_eq!(server.recorder().active_count(), 0);
    assert!(server.restreamer().hls_info("cam-a").is_none());

    let report = server
        .reload(with(&server, |c| {
            c.record.streams = vec!["cam-*".into()];
            c.restream.hls_streams = vec!["cam-*".into()];
        }))
        .await
        .unwrap();
    assert_eq!(report.applied, ["record.streams", "restream.hls_streams"]);
    assert!(
        report.needs_restart.is_empty(),
        "{:?}",
        report.needs_restart
    );

    let after = publisher(&server, "cam-b", Some(VideoCodec::Vp8), false).await;
    assert!(
        eventually(Duration::from_secs(5), || server.recorder().active_count()
            == 1)
        .await
    );
    assert!(
        server.restreamer().hls_info("cam-b").is_some(),
        "HLS for the new stream"
    );
    // The stream that was already live keeps what it started with.
    assert!(server.restreamer().hls_info("cam-a").is_none());
    assert_eq!(server.recorder().active_count(), 1);
    drop((before, after));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_changes_nothing_and_restart_keys_are_named() {
    let server = gateway::start(|c| {
        c.auth.admin_token = Some("old-admin".into());
        c.auth.failure_burst = 10_000;
    })
    .await;
    let base = url(&server, "");
    let mut events = server.events().subscribe();

    let err = server
        .reload(with(&server, |c| {
            c.auth.admin_token = Some("new-admin".into());
            c.http.max_body_bytes = 10;
        }))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("http.max_body_bytes:"), "{err}");
    match &events.recv().await.unwrap().event {
        Event::ConfigRejected { error } => assert!(error.contains("http.max_body_bytes")),
        other => panic!("expected config_rejected, got {other:?}"),
    }
    assert_eq!(metrics_status(&base, "old-admin").await, 200);
    assert_eq!(metrics_status(&base, "new-admin").await, 401);

    let report = server
        .reload(with(&server, |c| {
            c.auth.admin_token = Some("new-admin".into());
            c.http.listen = "127.0.0.1:1".parse().unwrap();
            c.rtc.workers = 7;
        }))
        .await
        .unwrap();
    assert_eq!(report.applied, ["auth.admin_token"]);
    assert_eq!(report.needs_restart, ["http.listen", "rtc.workers"]);
    match &events.recv().await.unwrap().event {
        Event::ConfigReloaded {
            applied,
            needs_restart,
        } => {
            assert_eq!(applied, &report.applied);
            assert_eq!(needs_restart, &report.needs_restart);
        }
        other => panic!("expected config_reloaded, got {other:?}"),
    }
    // Still on the old address, with the new token.
    assert_eq!(metrics_status(&base, "new-admin").await, 200);
    assert_eq!(metrics_status(&base, "old-admin").await, 401);
    assert_eq!(
        server.config().rtc.workers,
        0,
        "restart-only keys keep their value"
    );
    server.shutdown().await;
}
