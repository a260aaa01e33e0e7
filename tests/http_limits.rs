//! HTTP bounded in time and number, as a hostile client would try it: half
//! request heads held open, idle keep-alive connections, bodies that never
//! finish, too many connections from one address, oversized bodies (413
//! with `Connection: close`, and the connection really closed), and a media
//! engine too busy to take a session (503 + Retry-After, the stream name not
//! left claimed).

use crate::common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::files::{free_port, free_udp_port, temp_dir};
use common::gateway;
use common::peer::{PeerOptions, VideoCodec, make_offer};
use common::rawhttp::{self, closed_by_server, read_reply};

fn host(addr: SocketAddr) -> String {
    format!("127.0.0.1:{}", addr.port())
}

fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = rawhttp::get(addr, "/metrics", &host(addr), &[]).body;
    gateway::value(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn an_oversized_body_gets_413_with_connection_close_and_the_connection_ends() {
    let (rt, server) = gateway::start_blocking(|_| {});
    let addr = server.http_addr();
    let mut s = rawhttp::connect(addr);
    // A bad offer first: 400, and the connection stays usable (keep-alive).
    let small = rawhttp::request(
        "POST",
        "/whip/demo",
        &host(addr),
        &[("Content-Type", "application/sdp")],
        "not sdp",
    );
    s.write_all(small.as_bytes()).unwrap();
    let r = read_reply(&mut s).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert_ne!(r.header("connection"), Some("close"));
    let big = "a".repeat(200 * 1024);
    let raw = rawhttp::request(
        "POST",
        "/whip/demo",
        &host(addr),
        &[("Content-Type", "application/sdp")],
        &big,
    );
    // The server may close before the whole body is read: a short write is fine.
    let _ = s.write_all(raw.as_bytes());
    let r = read_reply(&mut s).expect("an answer before the close");
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed_by_server(&mut s), "the server closes the connection");
    gateway::stop_blocking(rt, server);
}

#[test]
fn idle_half_sent_and_slow_body_requests_are_ended_in_time() {
    let (rt, server) = gateway::start_blocking(|c| {
        c.http.header_timeout_secs = 1.0;
        c.http.idle_timeout_secs = 0.5;
        c.http.body_timeout_secs = 1.0;
    });
    let addr = server.http_addr();
    // Idle keep-alive: one answer, then nothing.
    let mut idle = rawhttp::connect(addr);
    idle.write_all(rawhttp::request("GET", "/healthz", &host(addr), &[], "").as_bytes())
        .unwrap();
    assert_eq!(read_reply(&mut idle).unwrap().status, 200);
    // Half a head.
    let mut half = rawhttp::connect(addr);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    // A body that stops after 10 of 1000 bytes.
    let mut slow = rawhttp::connect(addr);
    slow.write_all(
        b"POST /whip/demo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv=0\r\no=- 1",
    )
    .unwrap();
    let r = read_reply(&mut slow).expect("an answer to the stalled body");
    assert_eq!(r.status, 408, "{}", r.body);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed_by_server(&mut slow));
    assert!(closed_by_server(&mut idle), "idle connection closed");
    assert!(closed_by_server(&mut half), "half-sent head closed");
    assert!(metric(addr, "castgate_http_timeouts_total{kind=\"idle\"}") >= 1.0);
    assert!(metric(addr, "castgate_http_timeouts_total{kind=\"header\"}") >= 1.0);
    assert_eq!(
        metric(addr, "castgate_http_timeouts_total{kind=\"body\"}"),
        1.0
    );
    gateway::stop_blocking(rt, server);
}

#[test]
fn one_address_gets_no_more_connections_than_allowed() {
    let (rt, server) = gateway::start_blocking(|c| c.http.max_connections_per_client = 8);
    let addr = server.http_addr();
    let held: Vec<TcpStream> = (0..8).map(|_| rawhttp::connect(addr)).collect();
    // Wait until the server has taken all eight (accepting is asynchronous).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut over = loop {
        let mut s = rawhttp::connect(addr);
        match read_reply(&mut s) {
            Some(r) if r.status == 503 => {
                assert_eq!(r.header("connection"), Some("close"));
                assert_eq!(r.header("retry-after"), Some("5"));
                assert!(r.body.contains("max_connections_per_client"), "{}", r.body);
                break s;
            }
            other => {
                assert!(Instant::now() < deadline, "never refused: {other:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert!(closed_by_server(&mut over));
    drop(held);
    // Places come back when connections close: a request gets through again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = rawhttp::connect(addr);
        s.write_all(rawhttp::request("GET", "/metrics", &host(addr), &[], "").as_bytes())
            .unwrap();
        if let Some(r) = read_reply(&mut s).filter(|r| r.status == 200) {
            let refused = gateway::value(
                &r.body,
                "castgate_http_connections_refused_total{reason=\"per_client\"}",
            );
            assert!(refused >= Some(1.0), "counted: {refused:?}");
            break;
        }
        assert!(Instant::now() < deadline, "places never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    gateway::stop_blocking(rt, server);
}

#[test]
fn a_busy_media_engine_answers_503_and_leaves_the_name_free() {
    let (rt, server) = gateway::start_blocking(|_| {});
    let addr = server.http_addr();
    let offer = make_offer(&PeerOptions::new(Some(VideoCodec::Vp8), true), false).unwrap();
    let post = |sdp: &str| {
        rawhttp::exchange(
            addr,
            &rawhttp::request(
                "POST",
                "/whip/busy",
                &host(addr),
                &[("Content-Type", "application/sdp")],
                sdp,
            ),
        )
    };
    let full = server.engine().saturate_for_test();
    let r = post(&offer.sdp);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert!(r.body.contains("overloaded"), "{}", r.body);
    assert!(
        server
            .hub()
            .get(&castgate::names::StreamName::parse("busy").unwrap())
            .is_none(),
        "the name is not left claimed"
    );
    drop(full);
    let again = make_offer(&PeerOptions::new(Some(VideoCodec::Vp8), true), false).unwrap();
    let r = post(&again.sdp);
    assert_eq!(
        r.status, 201,
        "the same name publishes once the engine has room: {}",
        r.body
    );
    gateway::stop_blocking(rt, server);
}

/// The open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Raises this process's open-file limit to its hard limit (3,000 held
/// connections need more than the common default of 1,024).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= 8192,
        "open-file hard limit {} is too low",
        lim.rlim_max
    );
}

struct Castgate(Child);

impl Drop for Castgate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn three_thousand_half_open_connections_are_closed_and_the_server_keeps_answering() {
    raise_fd_limit();
    let dir = temp_dir("slowloris");
    let config = dir.join("castgate.toml");
    std::fs::write(
        &config,
        // The default header timeout (10 s); caps raised so that one
        // address may hold 3,000.
        "[http]\nmax_connections_per_client = 10000\nmax_connections = 10000\n\
         [record]\nenabled = false\n",
    )
    .unwrap();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(env!("CARGO_BIN_EXE_castgate"))
        .args(["serve", "--http-listen", &addr.to_string()])
        .args(["--udp-listen", &format!("127.0.0.1:{}", free_udp_port())])
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("castgate starts");
    let castgate = Castgate(child);
    let pid = castgate.0.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "castgate never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rawhttp::get(addr, "/healthz", &host(addr), &[]).status, 200);
    // Connections of the warm-up close at once (Connection: close is not
    // sent, but our side closed): let the count settle.
    std::thread::sleep(Duration::from_millis(200));
    let baseline = fds(pid);

    let mut held = Vec::with_capacity(3000);
    for _ in 0..3000 {
        let mut s = TcpStream::connect(addr).expect("connects");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .unwrap();
        held.push(s);
    }
    // The server holds them (each is a descriptor) …
    let deadline = Instant::now() + Duration::from_secs(20);
    while fds(pid) < baseline + 2900 {
        assert!(
            Instant::now() < deadline,
            "the server did not take the connections: {}",
            fds(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // … and still answers.
    let r = rawhttp::get(addr, "/healthz", &host(addr), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    // Past the header timeout every one of them is closed and the
    // descriptors are back to where they were.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fds(pid) > baseline + 2 {
        assert!(
            Instant::now() < deadline,
            "descriptors stayed: {} (baseline {baseline})",
            fds(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(closed_by_server(s), "a half-open connection was left open");
    }
    drop(held);
    let text = rawhttp::get(addr, "/metrics", &host(addr), &[]).body;
    let timeouts = gateway::value(&text, "castgate_http_timeouts_total{kind=\"header\"}");
    assert!(timeouts >= Some(3000.0), "counted: {timeouts:?}");
}
