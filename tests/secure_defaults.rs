//! Secure defaults, tried as an outside client would: the admin role only
//! from this machine (another host is a network namespace the test makes),
//! forwarding headers and foreign `Host`s not taken for this machine,
//! `/metrics` with its own token, cross-site calls to the admin API refused,
//! and restream targets that would make castgate connect to internal
//! addresses refused with 422 and no connection attempt.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use castgate::config::Config;
use common::files::temp_dir;
use common::gateway::{self, publisher};
use common::netns::{NetNs, Pair, untouched};
use common::peer::VideoCodec;
use common::rawhttp::{self, Reply};
use common::rtmp::{Receiver, post_target, wait_target};

/// A recording id the catalog does not have: a DELETE that passes the
/// guard gets 404, one refused by it 401 or 403.
const RECORDING: &str = "/api/recordings/demo~2026-01-01T00-00-00Z";

#[test]
fn admin_is_granted_to_this_machine_only() {
    let (rt, server) = gateway::start_blocking(|_| {});
    let addr = server.http_addr();
    let host = format!("127.0.0.1:{}", addr.port());
    let delete = |host: &str, extra: &[(&str, &str)]| {
        rawhttp::exchange(
            addr,
            &rawhttp::request("DELETE", RECORDING, host, extra, ""),
        )
    };
    // This machine: loopback, no forwarding header, a loopback Host.
    for h in [host.clone(), format!("localhost:{}", addr.port())] {
        let r = delete(&h, &[]);
        assert_eq!(r.status, 404, "{h}: {}", r.body);
    }
    // A DNS-rebinding page reaches loopback with its own name as Host.
    let r = delete("evil.example", &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("auth.admin"),
        "names the setting: {}",
        r.body
    );
    // A proxy on this machine that is not trusted: its clients are not local.
    for forwarded in [
        ("X-Forwarded-For", "203.0.113.7"),
        ("Forwarded", "for=203.0.113.7"),
        ("X-Real-IP", "203.0.113.7"),
    ] {
        let r = delete(&host, &[forwarded]);
        assert_eq!(r.status, 403, "{forwarded:?}: {}", r.body);
    }
    // The same rule for /metrics.
    assert_eq!(rawhttp::get(addr, "/metrics", &host, &[]).status, 200);
    let r = rawhttp::get(
        addr,
        "/metrics",
        &host,
        &[("X-Forwarded-For", "203.0.113.7")],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("metrics.token"), "{}", r.body);
    // Publishing and viewing stay open to anyone (the handler answers).
    let r = rawhttp::exchange(
        addr,
        &rawhttp::request(
            "POST",
            "/whep/demo",
            "evil.example",
            &[
                ("Content-Type", "application/sdp"),
                ("X-Forwarded-For", "203.0.113.7"),
            ],
            "v=0",
        ),
    );
    assert!(!matches!(r.status, 401 | 403), "{} {}", r.status, r.body);
    gateway::stop_blocking(rt, server);
}

#[test]
fn a_trusted_proxy_names_the_client() {
    let (rt, server) =
        gateway::start_blocking(|c| c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]);
    let addr = server.http_addr();
    let host = format!("127.0.0.1:{}", addr.port());
    let delete = |xff: &str| {
        rawhttp::exchange(
            addr,
            &rawhttp::request("DELETE", RECORDING, &host, &[("X-Forwarded-For", xff)], ""),
        )
    };
    let r = delete("203.0.113.7");
    assert_eq!(
        r.status, 403,
        "an internet client behind the proxy: {}",
        r.body
    );
    let r = delete("127.0.0.1");
    assert_eq!(
        r.status, 404,
        "a client on this machine behind the proxy: {}",
        r.body
    );
    let r = delete("127.0.0.1, 203.0.113.7");
    assert_eq!(
        r.status, 403,
        "the proxy's own entry is the one believed: {}",
        r.body
    );
    gateway::stop_blocking(rt, server);
}

#[test]
fn metrics_take_their_own_token_which_grants_nothing_else() {
    let (rt, server) = gateway::start_blocking(|c| c.metrics.token = Some("scrape-token".into()));
    let addr = server.http_addr();
    let forwarded = [("X-Forwarded-For", "203.0.113.7")];
    let host = format!("127.0.0.1:{}", addr.port());
    let r = rawhttp::get(addr, "/metrics", &host, &forwarded);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let with_token = [forwarded[0], ("Authorization", "Bearer scrape-token")];
    let r = rawhttp::get(addr, "/metrics", &host, &with_token);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("castgate_http_connections "),
        "Prometheus text"
    );
    let r = rawhttp::exchange(
        addr,
        &rawhttp::request("DELETE", RECORDING, &host, &with_token, ""),
    );
    assert_eq!(
        r.status, 401,
        "the scraper's token is no admin token: {}",
        r.body
    );
    gateway::stop_blocking(rt, server);
}

#[test]
fn cross_site_calls_to_the_admin_api_are_refused() {
    let (rt, server) =
        gateway::start_blocking(|c| c.http.admin_origins = vec!["https://dash.example".into()]);
    let addr = server.http_addr();
    let host = format!("127.0.0.1:{}", addr.port());
    let call = |method: &str, path: &str, headers: &[(&str, &str)], body: &str| {
        rawhttp::exchange(addr, &rawhttp::request(method, path, &host, headers, body))
    };
    let evil = ("Origin", "http://evil.example");
    // A preflight for a DELETE from another site: no CORS grant.
    let r = call(
        "OPTIONS",
        RECORDING,
        &[evil, ("Access-Control-Request-Method", "DELETE")],
        "",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert!(r.body.contains("http.admin_origins"), "{}", r.body);
    // A "simple" cross-site form post needs no preflight: refused itself.
    let plain = ("Content-Type", "text/plain");
    let r = call("POST", "/api/streams/demo/restreams", &[evil, plain], "{}");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(
        "POST",
        "/api/streams/demo/hls",
        &[("Sec-Fetch-Site", "cross-site"), plain],
        "x",
    );
    assert_eq!(r.status, 403, "Fetch Metadata alone marks it: {}", r.body);
    let r = call("GET", "/metrics", &[("Sec-Fetch-Site", "cross-site")], "");
    assert_eq!(r.status, 403, "a page may not read the metrics either");
    // Same-site but not JSON: refused for its type.
    let r = call("POST", "/api/streams/demo/restreams", &[plain], "{}");
    assert_eq!(r.status, 415, "{}", r.body);
    // castgate's own pages: same-origin.
    let r = call(
        "DELETE",
        RECORDING,
        &[
            ("Sec-Fetch-Site", "same-origin"),
            ("Origin", &format!("http://{host}")),
        ],
        "",
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // Players and publishers on any site keep CORS.
    let r = call(
        "OPTIONS",
        "/whip/demo",
        &[evil, ("Access-Control-Request-Method", "POST")],
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = call("GET", "/api/streams", &[evil], "");
    assert_eq!(
        (r.status, r.header("access-control-allow-origin")),
        (200, Some("*"))
    );
    // A configured origin may.
    let dash = ("Origin", "https://dash.example");
    let r = call(
        "OPTIONS",
        RECORDING,
        &[dash, ("Access-Control-Request-Method", "DELETE")],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("access-control-allow-origin").is_some());
    let r = call(
        "DELETE",
        RECORDING,
        &[dash, ("Sec-Fetch-Site", "cross-site")],
        "",
    );
    assert_eq!(r.status, 404, "{}", r.body);
    gateway::stop_blocking(rt, server);
}

/// The castgate binary running in a namespace; killed on drop.
struct Running {
    child: Child,
    _dir: common::files::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the castgate binary inside `ns` on 0.0.0.0:`port` (UDP too) with
/// `args`, once `/healthz` answers on the namespace's loopback.
fn castgate_in(ns: &NetNs, port: u16, args: &[&str]) -> Running {
    let dir = temp_dir("netns-rec");
    let child = ns
        .command(env!("CARGO_BIN_EXE_castgate"))
        .args(["serve", "--http-listen", &format!("0.0.0.0:{port}")])
        .args(["--udp-listen", &format!("0.0.0.0:{}", port + 1)])
        .arg("--record-dir")
        .arg(dir.path())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("castgate starts");
    let up = ns.run(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(addr).is_ok() {
                return rawhttp::get(addr, "/healthz", "127.0.0.1", &[]).status == 200;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    let running = Running { child, _dir: dir };
    assert!(up, "castgate did not come up in {}", ns.name());
    running
}

#[test]
fn another_host_gets_no_admin_and_no_metrics_without_a_token() {
    let net = Pair::new("adm");
    let port = 18080;
    let _castgate = castgate_in(&net.a, port, &["--metrics-token", "scrape-token"]);
    let server = SocketAddr::from((Pair::A, port));
    let from_b = net.b.run(move || {
        let host = format!("{}:{port}", Pair::A);
        let spoofed = format!("127.0.0.1:{port}");
        let delete = |host: &str, extra: &[(&str, &str)]| {
            rawhttp::exchange(
                server,
                &rawhttp::request("DELETE", RECORDING, host, extra, ""),
            )
        };
        (
            delete(&host, &[]),
            // Claiming to be loopback changes nothing: no trusted proxy.
            delete(&spoofed, &[("X-Forwarded-For", "127.0.0.1")]),
            rawhttp::get(server, "/metrics", &host, &[]),
            rawhttp::get(
                server,
                "/metrics",
                &host,
                &[("Authorization", "Bearer scrape-token")],
            ),
            rawhttp::get(server, "/api/streams", &host, &[]),
        )
    });
    let (plain, spoofed, metrics, scraped, reads): (Reply, Reply, Reply, Reply, Reply) = from_b;
    assert_eq!(plain.status, 403, "{}", plain.body);
    assert!(plain.body.contains("auth.admin"), "{}", plain.body);
    assert_eq!(spoofed.status, 403, "{}", spoofed.body);
    assert_eq!(metrics.status, 401, "{}", metrics.body);
    assert_eq!(
        scraped.status, 200,
        "the scraper's token works from anywhere"
    );
    assert_eq!(reads.status, 200, "reads stay open");
    // On host A itself (its loopback): allowed.
    let (local, local_metrics) = net.a.run(move || {
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        let host = format!("127.0.0.1:{port}");
        (
            rawhttp::exchange(
                local,
                &rawhttp::request("DELETE", RECORDING, &host, &[], ""),
            ),
            rawhttp::get(local, "/metrics", &host, &[]),
        )
    });
    assert_eq!(local.status, 404, "{}", local.body);
    assert_eq!(
        local_metrics.status, 200,
        "this machine keeps the admin role, which reads the metrics: {}",
        local_metrics.status
    );
}

/// Every spelling of an internal address, and names that resolve to one.
const INTERNAL_TARGETS: &[(&str, &str)] = &[
    ("rtmp://127.0.0.1:1935/live/k", "loopback"),
    ("rtmp://127.1:1935/live/k", "loopback"),
    ("rtmp://0177.0.0.1:1935/live/k", "loopback"),
    ("rtmp://2130706433:1935/live/k", "loopback"),
    ("rtmp://0x7f000001:1935/live/k", "loopback"),
    ("rtmp://[::1]:1935/live/k", "loopback"),
    ("rtmp://[::ffff:127.0.0.1]:1935/live/k", "loopback"),
    ("rtmp://localhost:1935/live/k", "loopback"),
    ("rtmp://0.0.0.0:1935/live/k", "this network"),
    ("rtmp://10.0.0.1:1935/live/k", "private"),
    ("rtmp://[::ffff:10.0.0.1]:1935/live/k", "private"),
    ("rtmp://internal.test:1935/live/k", "private"),
    ("rtmps://internal.test:1935/live/k", "private"),
    ("rtmp://169.254.169.254:1935/live/k", "link-local"),
    ("rtmp://0xa9fea9fe:1935/live/k", "link-local"),
    ("rtmp://metadata.test:1935/live/k", "link-local"),
    ("rtmp://192.168.1.1/live/k", "private"),
    ("rtmp://172.16.0.1/live/k", "private"),
    ("rtmp://100.64.0.1/live/k", "shared"),
    ("rtmp://224.0.0.1/live/k", "multicast"),
    ("rtmp://[fd00::1]/live/k", "unique local"),
    ("rtmp://[fe80::1]/live/k", "link-local"),
    ("rtmp://[64:ff9b::a00:1]/live/k", "NAT64"),
    ("rtmp://[2002:a00:1::]/live/k", "6to4"),
];

#[test]
fn restream_targets_at_internal_addresses_are_refused_without_connecting() {
    // 10.0.0.1 and 169.254.169.254 exist here only on the namespace's own
    // loopback, with listeners on them: nothing leaves the machine.
    let ns = NetNs::new("ssrf");
    ns.add_loopback_address("10.0.0.1/32");
    ns.add_loopback_address("169.254.169.254/32");
    ns.hosts_file(
        "127.0.0.1 localhost\n::1 localhost\n10.0.0.1 internal.test\n169.254.169.254 metadata.test\n",
    );
    let listeners = ns.listeners(&[
        "127.0.0.1:1935",
        "[::1]:1935",
        "10.0.0.1:1935",
        "169.254.169.254:1935",
    ]);
    let port = 18090;
    let _castgate = castgate_in(&ns, port, &[]);
    let answers: Vec<(String, Reply)> = ns.run(move || {
        let api = SocketAddr::from(([127, 0, 0, 1], port));
        let host = format!("127.0.0.1:{port}");
        INTERNAL_TARGETS
            .iter()
            .map(|(url, _)| {
                let body = format!(r#"{{"url": "{url}"}}"#);
                let raw = rawhttp::request(
                    "POST",
                    "/api/streams/demo/restreams",
                    &host,
                    &[("Content-Type", "application/json")],
                    &body,
                );
                (url.to_string(), rawhttp::exchange(api, &raw))
            })
            .collect()
    });
    for ((url, r), (_, rule)) in answers.iter().zip(INTERNAL_TARGETS) {
        assert_eq!(r.status, 422, "{url}: {}", r.body);
        assert!(
            r.body.contains(rule),
            "{url}: the rule is named: {}",
            r.body
        );
        assert!(
            r.body.contains("outbound.allow_networks"),
            "{url}: {}",
            r.body
        );
    }
    assert!(
        !answers[11].1.body.contains("10.0.0.1"),
        "a name's internal address is not disclosed: {}",
        answers[11].1.body
    );
    for l in &listeners {
        assert!(
            untouched(l),
            "{:?} saw a connection attempt",
            l.local_addr().unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_named_in_allowed_hosts_still_restreams_even_when_internal() {
    let dir = temp_dir("allowed-host");
    let mut rx = Receiver::start(&dir, "allowed.flv").await;
    let server = gateway::start(|c| {
        c.outbound.allow_networks.clear();
        c.restream.allowed_hosts = vec!["localhost".into()];
    })
    .await;
    let publisher = publisher(&server, "ok", Some(VideoCodec::H264), false).await;
    // By address: not named, so internal and refused; by the allowed name: fine.
    let (s, body) = post_target(&server, "ok", &format!(r#"{{"url":"{}"}}"#, rx.url())).await;
    assert_eq!(s, 400, "127.0.0.1 is not in allowed_hosts: {body}");
    let named = rx.url().replace("127.0.0.1", "localhost");
    let (s, body) = post_target(&server, "ok", &format!(r#"{{"url":"{named}"}}"#)).await;
    assert_eq!(s, 201, "{body}");
    let id = common::rtmp::id_of(&body);
    let frames = common::media::video_frames(VideoCodec::H264, 2);
    publisher.play(&frames, &[]).await.unwrap();
    let t = wait_target(&server, &id, Duration::from_secs(10), |t| {
        t["video_frames"].as_u64() >= Some(frames.len() as u64 - 2)
    })
    .await;
    assert_eq!(t["state"], "live", "{t}");
    publisher.delete().await.unwrap();
    assert!(
        rx.finished(Duration::from_secs(15)).await,
        "the receiver got the whole push"
    );
    assert!(
        common::files::packets(&rx.out, "v") > 0,
        "video reached the receiver"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_and_the_callback_do_not_reach_internal_addresses() {
    // Refused at start-up when written as an address …
    let check = |c: &Config| castgate::server::check(c, &castgate::server::outbound_policy(c));
    let mut c = Config::default();
    c.events.webhooks.push(castgate::config::WebhookConfig {
        url: "http://169.254.169.254/latest".into(),
        ..Default::default()
    });
    let e = check(&c).unwrap_err().to_string();
    assert!(
        e.starts_with("events.webhooks") && e.contains("link-local"),
        "{e}"
    );
    let mut c = Config::default();
    c.auth.callback_url = Some("http://0x7f000001:9000/decide".into());
    let e = check(&c).unwrap_err().to_string();
    assert!(
        e.starts_with("auth.callback_url") && e.contains("loopback"),
        "{e}"
    );
    // … and, for a name, when it resolves: the callback is never asked, the
    // session refused (fail closed).
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counter = seen.clone();
    let accept = tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let server = gateway::start(move |c| {
        c.outbound.allow_networks.clear();
        c.auth.callback_url = Some(format!("http://localhost:{port}/decide"));
    })
    .await;
    let r = common::peer::http_client()
        .unwrap()
        .post(gateway::url(&server, "/whip/cb"))
        .header("content-type", "application/sdp")
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection"
    );
    accept.abort();
    server.shutdown().await;
}

#[test]
fn a_target_is_checked_again_before_every_connection() {
    // "flip.test" first resolves to an allowed address, whose listener takes
    // each connection and drops it (so the target reconnects), then — as a
    // rebinding DNS server would make it — to an internal one.
    let ns = NetNs::new("flip");
    ns.add_loopback_address("10.0.0.1/32");
    ns.add_loopback_address("10.0.0.2/32");
    let hosts = |addr: &str| format!("127.0.0.1 localhost\n{addr} flip.test\n");
    ns.hosts_file(&hosts("10.0.0.2"));
    let [allowed, internal]: [TcpListener; 2] = ns
        .listeners(&["10.0.0.2:1935", "10.0.0.1:1935"])
        .try_into()
        .unwrap();
    let port = 18100;
    let _castgate = castgate_in(&ns, port, &["--outbound-allow-networks", "10.0.0.2/32"]);
    let frames = common::media::video_frames(VideoCodec::H264, 4);
    let flip = move || {
        // Takes (and drops) connections on the allowed address until one came.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match allowed.accept() {
                Ok((s, _)) => {
                    drop(s);
                    return true;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => return false,
            }
        }
    };
    let hosts_path = std::path::PathBuf::from("/etc/netns")
        .join(ns.name())
        .join("hosts");
    let last = ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let base = format!("http://127.0.0.1:{port}");
            let publisher = common::peer::Publisher::connect(
                &format!("{base}/whip/flip"),
                common::peer::PeerOptions::new(Some(VideoCodec::H264), false),
            )
            .await
            .expect("publishes");
            let client = common::peer::http_client().unwrap();
            let r = client
                .post(format!("{base}/api/streams/flip/restreams"))
                .header("content-type", "application/json")
                .body(r#"{"url": "rtmp://flip.test:1935/live/k"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "an allowed address is accepted");
            let id = r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            let playing = tokio::spawn(async move {
                loop {
                    if publisher.play(&frames, &[]).await.is_err() {
                        return;
                    }
                }
            });
            let connected = tokio::task::spawn_blocking(flip).await.unwrap();
            assert!(connected, "the target connected to the allowed address");
            std::fs::write(&hosts_path, hosts("10.0.0.1")).unwrap();
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                let t: serde_json::Value = client
                    .get(format!("{base}/api/streams/flip/restreams/{id}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if t["state"] == "failed" || Instant::now() > deadline {
                    playing.abort();
                    return t;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    assert_eq!(last["state"], "failed", "{last}");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(error.contains("private"), "{error}");
    assert!(
        untouched(&internal),
        "the internal address saw a connection attempt"
    );
}
