//! A castgate gateway running in-process on free loopback ports, and the
//! waits tests need around it (always bounded, never a bare sleep).

use std::time::{Duration, Instant};

use castgate::config::Config;
use castgate::names::StreamName;
use castgate::server::Server;
use castgate::stream::SinkKind;

use super::peer::{PeerOptions, Publisher, VideoCodec};

/// Starts a gateway on 127.0.0.1 with free ports, no rate limit to speak of,
/// recording off, and outbound connections allowed to loopback (the tests'
/// RTMP sinks, webhook receivers and callbacks are on this machine; the
/// tests of that rule set it themselves); `tweak` changes anything else.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
    let mut c = Config::default();
    c.outbound.allow_networks = vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.rtc.udp_listen = "127.0.0.1:0".parse().unwrap();
    c.http.rate_limit_per_sec = 10_000;
    c.http.rate_limit_burst = 10_000;
    c.record.enabled = false;
    c.record.min_free_mib = 0;
    tweak(&mut c);
    Server::start(c).await.expect("server starts")
}

/// A gateway as [`start`] makes it, on a runtime of its own, for tests whose
/// client calls block (raw sockets, threads in a network namespace); stop
/// it with [`stop_blocking`].
pub fn start_blocking(
    tweak: impl FnOnce(&mut Config) + Send + 'static,
) -> (tokio::runtime::Runtime, Server) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(start(tweak));
    (rt, server)
}

/// Stops a gateway made by [`start_blocking`].
pub fn stop_blocking(rt: tokio::runtime::Runtime, server: Server) {
    rt.block_on(server.shutdown());
}

/// `GET /metrics` (open): the Prometheus text, checked to be served as such.
pub async fn scrape(server: &Server) -> String {
    let resp = reqwest::get(url(server, "/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    resp.text().await.unwrap()
}

/// The value of the series `series` (name with its labels, exactly as
/// rendered) in a Prometheus text exposition.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `http://ADDR{path}`.
pub fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.http_addr())
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Viewers subscribed to the stream `name`.
pub fn viewers(server: &Server, name: &str) -> usize {
    server
        .hub()
        .get(&StreamName::parse(name).unwrap())
        .map_or(0, |s| s.sink_count(SinkKind::Viewer))
}

/// Connects a publisher of `name` with `video` (and Opus if `audio`).
pub async fn publisher(
    server: &Server,
    name: &str,
    video: Option<VideoCodec>,
    audio: bool,
) -> Publisher {
    Publisher::connect(
        &url(server, &format!("/whip/{name}")),
        PeerOptions::new(video, audio),
    )
    .await
    .unwrap_or_else(|e| panic!("publisher of {name}: {e:#}"))
}

/// Waits until the gateway received `frames` frames on stream `name` (so a
/// DELETE that follows does not race frames still crossing loopback).
pub async fn wait_received(server: &Server, name: &str, frames: usize) {
    let key = StreamName::parse(name).unwrap();
    let done = eventually(Duration::from_secs(5), || {
        server
            .hub()
            .get(&key)
            .is_none_or(|s| s.info().frames_in >= frames as u64)
    })
    .await;
    assert!(done, "the gateway never received {frames} frames on {name}");
}

/// Waits until every recording whose stream ended has been finalized.
pub async fn recordings_idle(server: &Server) {
    let r = server.recorder().clone();
    tokio::task::spawn_blocking(move || r.wait_idle())
        .await
        .unwrap();
}

/// `n` GETs of `url` at once, each required to answer 200 with
/// `content_type`: their `header` values and bodies, in the order sent.
pub async fn get_at_once(
    url: &str,
    n: usize,
    content_type: &str,
    header: &str,
) -> Vec<(String, bytes::Bytes)> {
    let client = reqwest::Client::new();
    let asks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move { client.get(&url).send().await.unwrap() })
        })
        .collect();
    let mut out = Vec::new();
    for a in asks {
        let r = a.await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(r.headers()["content-type"], content_type, "{url}");
        let value = r.headers()[header].to_str().unwrap().to_string();
        out.push((value, r.bytes().await.unwrap()));
    }
    out
}
