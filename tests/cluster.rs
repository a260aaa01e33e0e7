//! Several castgate nodes as one (issue 17), on loopback: a real
//! `redis-server`, three castgate processes with their own ports and
//! folders. Publish on one node, find and watch the stream from any node;
//! one origin per name, through Redis outages, a node killed and a node
//! frozen past its claim's expiry.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{Node, Redis, node, within};
use common::media::{opus_packets, video_frames};
use common::peer::{HttpError, Kind, PeerOptions, Publisher, VideoCodec, Viewer};

use crate::simulcast::{next_keyframe_size, until_keyframe_width, video_for};

const BIN: &str = env!("CARGO_BIN_EXE_castgate");

/// Generous caps for what the cluster does within a few heartbeats.
const SOON: Duration = Duration::from_secs(15);

/// Publishes `name` on `node` and keeps sending a minute of VP8 + Opus in
/// the background (longer than any test here, even on a loaded machine);
/// the video frames sent (to check received ones against).
async fn publish(
    node: &Node,
    name: &str,
) -> (Arc<Publisher>, tokio::task::JoinHandle<()>, Vec<Vec<u8>>) {
    publish_codec(node, name, VideoCodec::Vp8).await
}

/// [`publish`] with `codec` for the video.
async fn publish_codec(
    node: &Node,
    name: &str,
    codec: VideoCodec,
) -> (Arc<Publisher>, tokio::task::JoinHandle<()>, Vec<Vec<u8>>) {
    let publisher = Arc::new(
        Publisher::connect(
            &node.url(&format!("/whip/{name}")),
            PeerOptions::new(Some(codec), true),
        )
        .await
        .unwrap_or_else(|e| panic!("publishing {name} on {}: {e:#}", node.id)),
    );
    let video = video_frames(codec, 60);
    let sent = video.iter().map(|f| f.data.clone()).collect();
    let p = publisher.clone();
    let task = tokio::spawn(async move {
        let _ = p.play(&video, &opus_packets(60)).await;
    });
    (publisher, task, sent)
}

/// POSTs the SDP `sdp` to `url` (with `token` if any) and does not follow a
/// redirect: the status and the `Location`.
async fn post_sdp(url: &str, token: Option<&str>, sdp: &str) -> (u16, Option<String>) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let mut req = client
        .post(url)
        .header("content-type", "application/sdp")
        .body(sdp.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), location)
}

/// The next `n` video frames a viewer receives (panics after 10 s without one).
async fn video(viewer: &mut Viewer, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = viewer
            .next_frame(Duration::from_secs(10))
            .await
            .expect("a frame within 10 s");
        if f.kind == Kind::Video {
            out.push(f.data);
        }
    }
    out
}

/// The status a publish of `name` on `node` gets (201 when it connects).
async fn publish_status(node: &Node, name: &str) -> (u16, String, Option<String>) {
    match Publisher::connect(
        &node.url(&format!("/whip/{name}")),
        PeerOptions::new(Some(VideoCodec::Vp8), false),
    )
    .await
    {
        Ok(p) => {
            let _ = p.delete().await;
            (201, String::new(), None)
        }
        Err(e) => {
            let e = e.downcast::<HttpError>().expect("an HTTP refusal");
            let retry = e
                .headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (e.status.as_u16(), e.body, retry)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_published_on_one_node_is_found_and_watched_from_every_node() {
    let redis = Redis::start();
    let redirect = ["--view-token", "see", "--cluster-whep", "redirect"];
    let a = node(BIN, &redis, "a", &redirect).await;
    let b = node(BIN, &redis, "b", &redirect).await;
    let c = node(BIN, &redis, "c", &redirect).await;
    let (_publisher, _feed, sent) = publish(&a, "show").await;
    let sent: HashSet<Vec<u8>> = sent.into_iter().collect();

    // Every node lists it, with the node that carries it.
    for n in [&a, &b, &c] {
        let seen = within(SOON, || async {
            n.lists("show").await.as_deref() == Some("a")
        })
        .await;
        assert!(seen.is_some(), "node {} lists show on a", n.id);
    }
    let one = b.get("/api/streams/show").await;
    assert_eq!(one["node"], "a", "{one}");
    // Every node knows every node, with its load.
    let nodes = within(SOON, || async {
        let v = c.get("/api/cluster").await;
        let ids: Vec<String> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect();
        let a_load = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "a")
            .map(|n| n["load"]["publishers"].as_u64().unwrap_or(0));
        ids == ["a", "b", "c"] && a_load == Some(1)
    })
    .await;
    assert!(nodes.is_some(), "{}", c.get("/api/cluster").await);

    // B answers a viewer with 307 to A, carrying a ticket.
    let offer = common::peer::make_offer(&PeerOptions::new(None, true), true).unwrap();
    let (status, location) = post_sdp(&b.url("/whep/show"), Some("see"), &offer.sdp).await;
    assert_eq!(status, 307);
    let location = location.unwrap();
    assert!(
        location.starts_with(&a.url("/whep/show?cluster_ticket=v1.")),
        "{location}"
    );
    // The ticket is what lets the redirected request in (the client drops
    // Authorization on the way to another port), for that stream only.
    let forged = post_sdp(&format!("{location}x"), None, &offer.sdp).await;
    assert_eq!(forged.0, 401, "a forged ticket is refused");
    let other = post_sdp(
        &location.replace("/whep/show?", "/whep/other?"),
        None,
        &offer.sdp,
    )
    .await;
    assert_eq!(other.0, 401, "a ticket is for one stream");
    let bare = post_sdp(&a.url("/whep/show"), None, &offer.sdp).await;
    assert_eq!(bare.0, 401, "no token, no ticket: refused");
    // The viewer's choice of layer goes along.
    let (status, pinned) = post_sdp(&b.url("/whep/show?layer=low"), Some("see"), &offer.sdp).await;
    assert_eq!(status, 307);
    let pinned = pinned.unwrap();
    assert!(
        pinned.starts_with(&a.url("/whep/show?cluster_ticket=v1."))
            && pinned.ends_with("&layer=low"),
        "{pinned}"
    );

    // Viewers through B and C (following the redirect) get what A's own
    // viewer gets: the publisher's frames, byte for byte.
    let mut on_a = Viewer::connect(&a.url("/whep/show"), Some("see".into()))
        .await
        .expect("a viewer on a");
    let mut via_b = Viewer::connect(&b.url("/whep/show"), Some("see".into()))
        .await
        .expect("a viewer through b");
    let mut via_c = Viewer::connect(&c.url("/whep/show"), Some("see".into()))
        .await
        .expect("a viewer through c");
    assert!(
        via_b.resource_url().starts_with(&a.gw.http),
        "{}",
        via_b.resource_url()
    );
    for (who, v) in [("a", &mut on_a), ("b", &mut via_b), ("c", &mut via_c)] {
        let frames = video(v, 30).await;
        for f in &frames {
            assert!(
                sent.contains(f),
                "viewer via {who}: a frame that was not sent"
            );
        }
    }

    // What B counted: the nodes it sees, the viewers it sent on.
    let metrics = reqwest::get(b.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| common::gateway::value(&metrics, series);
    assert_eq!(value("castgate_cluster_nodes"), Some(3.0), "{metrics}");
    assert_eq!(value("castgate_cluster_redis_up"), Some(1.0));
    assert!(
        value("castgate_cluster_redirects_total").unwrap_or(0.0) >= 2.0,
        "{metrics}"
    );

    // The same name on another node: 409, naming the node that has it.
    let (status, body, _) = publish_status(&b, "show").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("\"a\""), "{body}");
    assert_eq!(redis.cli(&["EXISTS", "castgate:stream:show"]), "1");
}

/// Waits for a viewer's session to be ended by its server (RTCP BYE,
/// DTLS close_notify, or ICE gone); how long that took, or `None` if it
/// still runs after `limit`.
async fn until_ended(viewer: &Viewer, limit: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    viewer.wait_ended(limit).await.then(|| start.elapsed())
}

/// A node's figure `series` (`None` if absent).
async fn figure(node: &Node, series: &str) -> Option<f64> {
    let text = reqwest::get(node.url("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    common::gateway::value(&text, series)
}

/// Viewer sessions of `stream` on `node` (its operator's session list).
async fn viewer_sessions(node: &Node, stream: &str) -> usize {
    let v = node.get(&format!("/api/streams/{stream}/sessions")).await;
    v["sessions"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|s| s["role"] == "viewer").count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_other_nodes_are_served_through_one_relay_per_node() {
    let redis = Redis::start();
    let a = node(BIN, &redis, "a", &[]).await;
    let b = node(BIN, &redis, "b", &["--cluster-relay-linger", "1"]).await;
    let c = node(BIN, &redis, "c", &[]).await;
    let (_p1, _f1, sent_vp8) = publish(&a, "one").await;
    let (_p2, _f2, sent_h264) = publish_codec(&a, "two", VideoCodec::H264).await;
    let sent_vp8: HashSet<Vec<u8>> = sent_vp8.into_iter().collect();
    let sent_h264: HashSet<Vec<u8>> = sent_h264.into_iter().collect();
    for n in [&b, &c] {
        let seen = within(SOON, || async {
            n.lists("two").await.as_deref() == Some("a")
        })
        .await;
        assert!(seen.is_some(), "node {} lists two on a", n.id);
    }

    // Three viewers of "one" on B, one on C, one on A; two of "two" on B.
    let mut viewers = Vec::new();
    for (n, name) in [
        (&b, "one"),
        (&b, "one"),
        (&b, "one"),
        (&c, "one"),
        (&a, "one"),
        (&b, "two"),
        (&b, "two"),
    ] {
        let v = Viewer::connect(&n.url(&format!("/whep/{name}")), None)
            .await
            .unwrap_or_else(|e| panic!("a viewer of {name} on {}: {e:#}", n.id));
        assert!(
            v.resource_url().starts_with(&n.gw.http),
            "served by {} itself",
            n.id
        );
        viewers.push((n.id.clone(), name, v));
    }
    // Each gets its stream's frames, byte for byte.
    for (node_id, name, v) in &mut viewers {
        let sent = if *name == "one" {
            &sent_vp8
        } else {
            &sent_h264
        };
        let frames = video(v, 30).await;
        for f in &frames {
            assert!(
                sent.contains(f),
                "viewer of {name} on {node_id}: a frame that was not sent"
            );
        }
    }
    // A serves B once per stream and C once, however many viewers they have:
    // its own viewer + B's relay + C's relay.
    assert_eq!(viewer_sessions(&a, "one").await, 3);
    assert_eq!(viewer_sessions(&a, "two").await, 1);
    assert_eq!(figure(&b, "castgate_cluster_relays").await, Some(2.0));
    assert!(
        figure(&b, "castgate_cluster_upstream_frames_total")
            .await
            .unwrap_or(0.0)
            > 0.0
    );
    // B lists the stream as A's (with A's figures), not as its own.
    assert_eq!(b.get("/api/streams/one").await["node"], "a");
    // Only the origin records.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !common::files::recordings_in(a.dir.path()).is_empty(),
        "a records"
    );
    assert!(
        common::files::recordings_in(b.dir.path()).is_empty(),
        "b does not record"
    );
    assert!(
        common::files::recordings_in(c.dir.path()).is_empty(),
        "c does not record"
    );
    // Node to node only: the relay path wants the cluster's ticket.
    let offer = common::peer::make_offer(&PeerOptions::new(None, true), true).unwrap();
    for token in [None, Some("v1.99999999999.forged"), Some("see")] {
        let (status, _) = post_sdp(&a.url("/cluster/relay/one"), token, &offer.sdp).await;
        assert_eq!(status, 401, "{token:?}");
    }

    // When B's viewers of "two" leave, its relay ends (linger 1 s here) and
    // A's session for it goes.
    let mut kept = Vec::new();
    for (node_id, name, v) in viewers {
        if name == "two" {
            assert_eq!(v.delete().await.unwrap(), 200);
        } else {
            kept.push((node_id, name, v));
        }
    }
    let ended = within(SOON, || async {
        viewer_sessions(&a, "two").await == 0
            && figure(&b, "castgate_cluster_relays").await == Some(1.0)
    })
    .await;
    assert!(ended.is_some(), "an idle relay ends");
    // "one" still plays through B.
    for (_, _, v) in &mut kept {
        video(v, 5).await;
    }

    // The origin dies: relayed viewers see the stream end.
    a.signal(libc::SIGKILL);
    let (_, _, on_b) = kept.remove(0);
    let ended = until_ended(&on_b, Duration::from_secs(30))
        .await
        .expect("a relayed viewer sees the stream end when its origin dies");
    println!(
        "figure: kill -9 of the origin → a relayed viewer's stream ended in {:.2} s",
        ended.as_secs_f64()
    );
    assert!(
        within(SOON, || async { b.lists("one").await.is_none() })
            .await
            .is_some(),
        "b forgets one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_at_the_origin_is_pulled_anew() {
    let redis = Redis::start();
    let a = node(BIN, &redis, "a", &["--on-conflict", "takeover"]).await;
    let b = node(BIN, &redis, "b", &[]).await;
    let (_p1, _f1, _) = publish(&a, "swap").await;
    assert!(
        within(SOON, || async { b.lists("swap").await.is_some() })
            .await
            .is_some(),
        "b lists swap"
    );
    let mut first = Viewer::connect(&b.url("/whep/swap"), None)
        .await
        .expect("a viewer on b");
    video(&mut first, 5).await;
    // A new publisher takes the name at A, with another codec.
    let (_p2, _f2, sent) = publish_codec(&a, "swap", VideoCodec::H264).await;
    let sent: HashSet<Vec<u8>> = sent.into_iter().collect();
    let ended = until_ended(&first, SOON).await;
    assert!(
        ended.is_some(),
        "the first publisher's viewers see its stream end"
    );
    // A viewer on B now gets the new stream through a new pull.
    let deadline = std::time::Instant::now() + SOON;
    let mut viewer = loop {
        match Viewer::connect(&b.url("/whep/swap"), None).await {
            Ok(v) => break v,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "a viewer on b: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    for f in video(&mut viewer, 20).await {
        assert!(sent.contains(&f), "a frame of the new publisher");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_origin_is_forgotten_and_its_name_can_be_published_again() {
    let redis = Redis::start();
    let a = node(BIN, &redis, "a", &[]).await;
    let b = node(BIN, &redis, "b", &[]).await;
    let c = node(BIN, &redis, "c", &[]).await;
    let (_publisher, _feed, _) = publish(&a, "gone").await;
    assert!(
        within(SOON, || async { b.lists("gone").await.is_some() })
            .await
            .is_some(),
        "b lists gone"
    );
    a.signal(libc::SIGKILL);
    let forgotten = within(Duration::from_secs(30), || async {
        b.lists("gone").await.is_none()
            && c.get("/api/cluster").await["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().all(|n| n["id"] != "a"))
    })
    .await
    .expect("the directory forgets a killed origin and its node");
    // A figure, not an assertion (expiry 2 s, heartbeat 0.5 s here).
    println!(
        "figure: kill -9 of the origin → gone from another node's listing in {:.2} s",
        forgotten.as_secs_f64()
    );
    assert_eq!(redis.cli(&["EXISTS", "castgate:stream:gone"]), "0");
    let (status, body, _) = publish_status(&c, "gone").await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_local_viewers_refuses_new_publishes_and_heals() {
    let mut redis = Redis::start();
    let a = node(BIN, &redis, "a", &[]).await;
    let b = node(BIN, &redis, "b", &[]).await;
    let (_publisher, _feed, sent) = publish(&a, "steady").await;
    let sent: HashSet<Vec<u8>> = sent.into_iter().collect();
    let mut viewer = Viewer::connect(&a.url("/whep/steady"), None)
        .await
        .expect("a viewer on a");
    video(&mut viewer, 5).await;
    assert!(
        within(SOON, || async { b.lists("steady").await.is_some() })
            .await
            .is_some(),
        "b lists steady"
    );

    redis.stop();
    // The local viewer never notices: frames keep coming, all of them sent ones.
    let during = video(&mut viewer, 60).await;
    assert!(during.iter().all(|f| sent.contains(f)));
    // A new publish cannot be made safe: 503 with Retry-After.
    let (status, body, retry) = publish_status(&b, "fresh").await;
    assert_eq!(status, 503, "{body}");
    assert!(retry.is_some(), "Retry-After on 503");
    assert!(body.contains("Redis"), "{body}");
    let ready = reqwest::get(b.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let r: serde_json::Value = ready.json().await.unwrap();
    assert!(r["reason"].as_str().unwrap().starts_with("cluster:"), "{r}");
    // A viewer of another node's stream: 503 too (nobody can say where it is).
    let (status, _, _) = {
        let offer = common::peer::make_offer(&PeerOptions::new(None, true), true).unwrap();
        let resp = reqwest::Client::new()
            .post(b.url("/whep/elsewhere"))
            .header("content-type", "application/sdp")
            .body(offer.sdp)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), (), ())
    };
    assert_eq!(status, 503);

    // Redis comes back empty: the claims are put back, the directory is whole.
    redis.resume();
    let healed = within(SOON, || async {
        b.lists("steady").await.as_deref() == Some("a")
            && reqwest::get(b.url("/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(healed.is_some(), "the directory is whole again");
    video(&mut viewer, 5).await;
    let (status, body, _) = publish_status(&b, "fresh").await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_origin_gives_up_a_name_that_another_node_took_meanwhile() {
    let redis = Redis::start();
    let a = node(BIN, &redis, "a", &[]).await;
    let b = node(BIN, &redis, "b", &[]).await;
    let (_pa, _feed_a, _) = publish(&a, "split").await;
    assert!(
        within(SOON, || async { b.lists("split").await.is_some() })
            .await
            .is_some(),
        "b lists split"
    );
    a.signal(libc::SIGSTOP);
    // Past the claim's expiry (2 s), the name is free: B takes it.
    let freed = within(SOON, || async {
        redis.cli(&["EXISTS", "castgate:stream:split"]) == "0"
    })
    .await;
    assert!(freed.is_some(), "a frozen node's claim expires");
    let (_pb, _feed_b, _) = publish(&b, "split").await;
    a.signal(libc::SIGCONT);
    // A wakes up, finds B's claim and ends its own stream: one origin.
    let settled = within(SOON, || async {
        a.lists("split").await.as_deref() == Some("b")
            && a.get("/api/streams/split").await["node"] == "b"
    })
    .await;
    assert!(settled.is_some(), "{}", a.get("/api/streams").await);
    let claim = redis.cli(&["GET", "castgate:stream:split"]);
    assert!(claim.contains("\"node\":\"b\""), "{claim}");
    let health = a.get("/healthz").await;
    assert_eq!(health["streams"], 0, "a carries nothing: {health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_across_nodes_moves_the_stream() {
    let redis = Redis::start();
    let a = node(BIN, &redis, "a", &["--on-conflict", "takeover"]).await;
    let b = node(BIN, &redis, "b", &["--on-conflict", "takeover"]).await;
    let (_pa, _feed_a, _) = publish(&a, "moved").await;
    assert!(
        within(SOON, || async { b.lists("moved").await.is_some() })
            .await
            .is_some(),
        "b lists moved"
    );
    let (_pb, _feed_b, _) = publish(&b, "moved").await;
    let moved = within(SOON, || async {
        a.get("/healthz").await["streams"] == 0 && a.lists("moved").await.as_deref() == Some("b")
    })
    .await;
    assert!(moved.is_some(), "{}", a.get("/api/streams").await);
}

#[test]
fn check_config_shows_neither_the_redis_password_nor_the_cluster_secret() {
    let out = std::process::Command::new(BIN)
        .args([
            "check-config",
            "--cluster-redis",
            "redis://:hunter2@127.0.0.1:6379",
        ])
        .args(["--cluster-secret", common::cluster::SECRET])
        .env_remove("CASTGATE_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("redis://****@127.0.0.1:6379"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains(common::cluster::SECRET),
        "{text}"
    );
}

/// `method path` on `node` with the admin token `token` (if any): status,
/// JSON body (null if none), and the node that answered (`x-castgate-node`
/// when it was passed on).
async fn admin(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value, Option<String>) {
    let mut req = reqwest::Client::new()
        .request(method, node.url(path))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let by = resp
        .headers()
        .get("x-castgate-node")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, body, by)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_controls_and_hls_reach_its_origin_from_any_node() {
    let redis = Redis::start();
    let token = ["--admin-token", "adm1n-t0ken-for-the-cluster-test"];
    let a = node(BIN, &redis, "a", &token).await;
    let b = node(BIN, &redis, "b", &token).await;
    let t = Some(token[1]);
    // A's events name the node they happened on.
    let mut events = reqwest::Client::new()
        .get(a.url("/api/events"))
        .bearer_auth(token[1])
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let (_publisher, _feed, _) = publish_codec(&a, "ctl", VideoCodec::H264).await;
    // HLS started through B (first: its segments take a few seconds).
    let (status, body, by) = admin(&b, reqwest::Method::POST, "/api/streams/ctl/hls", t).await;
    assert_eq!((status, by.as_deref()), (201, Some("a")), "{body}");
    let mut seen = String::new();
    while !seen.contains("stream_started") {
        let chunk = tokio::time::timeout(SOON, events.chunk())
            .await
            .expect("an event within the cap")
            .unwrap()
            .expect("the event stream goes on");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let started = seen
        .lines()
        .find(|l| l.starts_with("data:") && l.contains("stream_started"))
        .unwrap();
    assert!(started.contains("\"node\":\"a\""), "{started}");
    assert!(
        within(SOON, || async { b.lists("ctl").await.is_some() })
            .await
            .is_some(),
        "b lists ctl"
    );

    // Asked of B, answered by A (with A's rules: a token is needed, since a
    // request passed on is never "from A's own machine").
    let (status, _, by) = admin(&b, reqwest::Method::GET, "/api/streams/ctl/sessions", None).await;
    assert_eq!((status, by.as_deref()), (401, Some("a")));
    let (status, body, by) = admin(&b, reqwest::Method::GET, "/api/streams/ctl/sessions", t).await;
    assert_eq!((status, by.as_deref()), (200, Some("a")), "{body}");
    assert_eq!(body["sessions"][0]["role"], "publisher", "{body}");
    let (status, body, by) = admin(&b, reqwest::Method::GET, "/api/streams/ctl/recording", t).await;
    assert_eq!((status, by.as_deref()), (200, Some("a")), "{body}");
    assert_eq!(body["recording"], true, "{body}");

    // HLS files served through B.
    let playlist = within(Duration::from_secs(30), || async {
        let r = reqwest::get(b.url("/hls/ctl/index.m3u8")).await.unwrap();
        r.status() == 200 && r.text().await.unwrap().contains("#EXTINF")
    })
    .await;
    assert!(playlist.is_some(), "the playlist through b");
    let text = reqwest::get(b.url("/hls/ctl/index.m3u8"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let segment = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap();
    let seg = reqwest::get(b.url(&format!("/hls/ctl/{segment}")))
        .await
        .unwrap();
    assert_eq!(seg.status(), 200);
    assert!(seg.bytes().await.unwrap().len() > 1000, "a real segment");

    // Ending the stream through B ends it at A.
    let (status, body, by) = admin(&b, reqwest::Method::DELETE, "/api/streams/ctl", t).await;
    assert_eq!((status, by.as_deref()), (200, Some("a")), "{body}");
    let gone = within(SOON, || async { a.get("/healthz").await["streams"] == 0 }).await;
    assert!(gone.is_some(), "a no longer carries ctl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restream_targets_and_recording_follow_a_publisher_that_reconnects_to_another_node() {
    use common::rtmp::{KEY, Receiver};
    let redis = Redis::start();
    let dir = common::files::temp_dir("follow");
    let mut first = Receiver::start(&dir, "first.flv").await;
    let port = first.port;
    // Nothing is recorded by rule here: only on an operator's request.
    let config = dir.join("castgate.toml");
    std::fs::write(&config, "[record]\nstreams = [\"rec-*\"]\n").unwrap();
    let config = config.to_str().unwrap().to_string();
    // The RTMP sink is on loopback: allowed for targets added through the API.
    let allow = [
        "--outbound-allow-networks",
        "127.0.0.1",
        "--config",
        &config,
    ];
    let a = node(BIN, &redis, "a", &allow).await;
    let b = node(BIN, &redis, "b", &allow).await;
    let video = video_frames(VideoCodec::H264, 3);
    let audio = opus_packets(3);
    let connect = |n: &Node| {
        let url = n.url("/whip/follow");
        async move {
            Publisher::connect(&url, PeerOptions::new(Some(VideoCodec::H264), true))
                .await
                .expect("the publisher connects")
        }
    };

    let p1 = connect(&a).await;
    let added = reqwest::Client::new()
        .post(a.url("/api/streams/follow/restreams"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"url":"{}"}}"#, first.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let id = added.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body, _) = admin(
        &a,
        reqwest::Method::POST,
        "/api/streams/follow/recording",
        None,
    )
    .await;
    assert_eq!(status, 201, "recording on request: {body}");
    p1.play(&video, &audio).await.unwrap();
    // The publisher leaves A; A's push ends before another may start.
    p1.delete().await.unwrap();
    assert!(
        first.finished(Duration::from_secs(15)).await,
        "a's push ended"
    );

    // It comes back on B within restream.resume_secs: B pushes again, same id.
    let mut second = Receiver::start_on(&dir, "second.flv", port).await;
    let p2 = connect(&b).await;
    p2.play(&video, &audio).await.unwrap();
    let listed = b.get("/api/streams/follow/restreams").await;
    let text = listed.to_string();
    assert!(!text.contains(KEY), "the key never leaves: {text}");
    let t = listed["restreams"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("target {id} on b: {listed}"));
    assert_eq!(t["state"], "live", "{t}");
    // B records it too, though no rule says so: A did, on request.
    let (status, body, _) = admin(
        &b,
        reqwest::Method::GET,
        "/api/streams/follow/recording",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recording"], true, "{body}");
    p2.delete().await.unwrap();
    assert!(
        second.finished(Duration::from_secs(15)).await,
        "b's push ended"
    );
    let recorded = within(SOON, || async {
        !common::files::recordings_in(b.dir.path()).is_empty()
    })
    .await;
    assert!(recorded.is_some(), "b recorded follow");
    common::files::decodes_cleanly(&second.out);
    assert!(common::files::packets(&second.out, "v") >= video.len() - 30);
}

/// A simulcast stream is relayed with every layer (one pull per layer):
/// viewers on another node pin each layer and get its frames byte for
/// byte, and an automatic viewer there climbs to the top layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_stream_is_relayed_with_every_layer() {
    const LAYERS: [(&str, &str, u32); 3] = [
        ("l", "320x180", 320),
        ("m", "640x360", 640),
        ("h", "1280x720", 1280),
    ];
    let (layers, audio) = tokio::task::spawn_blocking(|| {
        let layers: Vec<(&str, Vec<common::media::EncodedFrame>)> = LAYERS
            .iter()
            .map(|(rid, size, _)| {
                (
                    *rid,
                    common::media::video_frames_sized(VideoCodec::Vp8, 10, size),
                )
            })
            .collect();
        (layers, opus_packets(10))
    })
    .await
    .unwrap();
    let sent: Vec<HashSet<Vec<u8>>> = layers
        .iter()
        .map(|(_, frames)| frames.iter().map(|f| f.data.clone()).collect())
        .collect();
    let redis = Redis::start();
    let a = node(BIN, &redis, "a", &[]).await;
    let b = node(BIN, &redis, "b", &[]).await;
    let rids: Vec<&str> = LAYERS.iter().map(|l| l.0).collect();
    let publisher = Publisher::connect(
        &a.url("/whip/sim"),
        PeerOptions::new(Some(VideoCodec::Vp8), true).with_simulcast(&rids),
    )
    .await
    .expect("a simulcast publisher on a");
    let _playing = tokio::spawn(async move {
        let refs: Vec<(&str, &[common::media::EncodedFrame])> =
            layers.iter().map(|(r, f)| (*r, f.as_slice())).collect();
        let _ = publisher.play_layers(&refs, &audio, 6).await;
        publisher
    });
    let measured = within(SOON, || async {
        let layers = a.get("/api/streams/sim").await["layers"].clone();
        let sized = layers
            .as_array()
            .map_or(0, |l| l.iter().filter(|l| l["width"].is_u64()).count());
        sized == 3 && b.lists("sim").await.is_some()
    })
    .await;
    assert!(
        measured.is_some(),
        "a measures three layers, b lists the stream"
    );

    // An automatic viewer on b (the first: it starts the relay) estimates its
    // bandwidth (the relayed stream has layers to choose from) and climbs to
    // the top one, through the others. (A viewer pinned in the relay's first
    // moments, before b has seen each layer's keyframe, starts on the nearest
    // layer seen and moves to its own once ranked: the pinned ones below come
    // after.)
    let mut auto = Viewer::connect(&b.url("/whep/sim"), None)
        .await
        .expect("an automatic viewer on b");
    assert!(
        auto.session().answer_sdp.contains("transport-wide-cc"),
        "{}",
        auto.session().answer_sdp
    );
    let top = until_keyframe_width(&mut auto, Duration::from_secs(40), |w| w == 1280).await;
    assert!(top.is_some(), "on the top layer within 40 s");
    // Pinned viewers on b get their layer, each frame one the publisher sent
    // in that layer.
    let mut pinned = Vec::new();
    for (i, (quality, width)) in [("low", 320), ("mid", 640), ("high", 1280)]
        .into_iter()
        .enumerate()
    {
        let mut v = Viewer::connect(&b.url(&format!("/whep/sim?layer={quality}")), None)
            .await
            .unwrap_or_else(|e| panic!("a {quality} viewer on b: {e:#}"));
        let got = next_keyframe_size(&mut v, VideoCodec::Vp8, Duration::from_secs(10)).await;
        assert_eq!(got.map(|(w, _)| w), Some(width), "{quality}");
        let frames = video_for(&mut v, Duration::from_secs(1)).await;
        assert!(frames.len() >= 10, "{quality}: {} frames", frames.len());
        for f in &frames {
            assert!(
                sent[i].contains(&f.data),
                "{quality}: a frame not sent in that layer"
            );
        }
        pinned.push(v);
    }

    // a serves b's three layers through three sessions, however many
    // viewers b has.
    assert_eq!(viewer_sessions(&a, "sim").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_and_av1_streams_are_relayed_too() {
    let redis = Redis::start();
    let a = node(BIN, &redis, "a", &[]).await;
    let b = node(BIN, &redis, "b", &[]).await;
    let mut codecs = vec![VideoCodec::Vp9];
    if common::media::av1_encoder().is_some() {
        codecs.push(VideoCodec::Av1);
    }
    for codec in codecs {
        let name = format!("{codec:?}").to_lowercase();
        let (_p, _feed, sent) = publish_codec(&a, &name, codec).await;
        let sent: HashSet<Vec<u8>> = sent.into_iter().collect();
        assert!(
            within(SOON, || async { b.lists(&name).await.is_some() })
                .await
                .is_some(),
            "b lists {name}"
        );
        let mut viewer = Viewer::connect(&b.url(&format!("/whep/{name}")), None)
            .await
            .unwrap_or_else(|e| panic!("a viewer of {name} on b: {e:#}"));
        let frames = video(&mut viewer, 30).await;
        let sent_ones = frames.iter().filter(|f| sent.contains(*f)).count();
        // AV1 frames may come without the temporal delimiter the encoder wrote.
        let stripped: HashSet<Vec<u8>> = sent
            .iter()
            .map(|f| common::media::av1_strip_temporal_delimiters(f))
            .collect();
        let matching = frames
            .iter()
            .filter(|f| sent.contains(*f) || stripped.contains(*f))
            .count();
        assert_eq!(
            matching,
            frames.len(),
            "{name}: every frame relayed whole ({sent_ones} exact)"
        );
        assert_eq!(viewer_sessions(&a, &name).await, 1, "{name}: one pull");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_node_places_a_new_publisher_on_the_least_loaded_one() {
    let redis = Redis::start();
    let publish = ["--publish-token", "pub-t0ken"];
    let a = node(
        BIN,
        &redis,
        "a",
        &[
            publish[0],
            publish[1],
            "--cluster-placement-max-sessions",
            "1",
        ],
    )
    .await;
    let b = node(BIN, &redis, "b", &publish).await;
    let opts = || PeerOptions::new(Some(VideoCodec::Vp8), true).with_token("pub-t0ken");
    let _first = Publisher::connect(&a.url("/whip/first"), opts())
        .await
        .expect("the first publisher stays on a");
    assert!(
        within(SOON, || async {
            a.get("/api/cluster").await["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 2)
        })
        .await
        .is_some(),
        "a sees b"
    );
    // A has one session, its most: the next publisher is sent to B.
    let offer = common::peer::make_offer(&opts(), false).unwrap();
    let (status, location) = post_sdp(&a.url("/whip/second"), Some("pub-t0ken"), &offer.sdp).await;
    assert_eq!(status, 307);
    let location = location.unwrap();
    assert!(
        location.starts_with(&b.url("/whip/second?cluster_ticket=v1.")),
        "{location}"
    );
    // The ticket is for that stream only.
    let other = post_sdp(
        &location.replace("/whip/second?", "/whip/third?"),
        None,
        &offer.sdp,
    )
    .await;
    assert_eq!(other.0, 401);
    // A publisher that follows it (as WHIP clients do) publishes on B.
    let second = Publisher::connect(&a.url("/whip/second"), opts())
        .await
        .expect("placed on b");
    assert!(
        second.resource_url().starts_with(&b.gw.http),
        "{}",
        second.resource_url()
    );
    assert!(
        within(SOON, || async {
            a.lists("second").await.as_deref() == Some("b")
        })
        .await
        .is_some(),
        "second is carried by b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_nodes_with_one_id_are_told_and_not_ready() {
    let redis = Redis::start();
    let one = node(BIN, &redis, "twin", &[]).await;
    let two = node(BIN, &redis, "twin", &[]).await;
    for n in [&one, &two] {
        let told = within(SOON, || async {
            let r = reqwest::get(n.url("/readyz")).await.unwrap();
            r.status() == 503
                && r.json::<serde_json::Value>().await.unwrap()["reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("another live node uses the node id twin"))
        })
        .await;
        assert!(
            told.is_some(),
            "{}: not ready, naming the duplicate id",
            n.gw.http
        );
    }
    // One of them stops: the other is ready again.
    drop(two);
    let ready = within(SOON, || async {
        reqwest::get(one.url("/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready.is_some(), "ready once the other is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_its_id_is_not_taken_for_a_duplicate() {
    let redis = Redis::start();
    let first = node(BIN, &redis, "again", &[]).await;
    first.signal(libc::SIGKILL);
    drop(first);
    // Its record is still fresh in Redis when the same node comes back.
    let again = node(BIN, &redis, "again", &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = reqwest::get(again.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// A lease (bucket retention runs on one node at a time): taken when free,
/// kept by its holder, refused to the others, free again once it lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_held_by_one_node_at_a_time() {
    use castgate::cluster::directory::Directory;
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = redis::aio::ConnectionManager::new(client).await.unwrap();
    let a = Directory::new("a", "1", "http://127.0.0.1:1");
    let b = Directory::new("b", "1", "http://127.0.0.1:2");
    assert!(a.lease(&mut con, "bucket-retention", 400).await.unwrap());
    assert!(
        !b.lease(&mut con, "bucket-retention", 400).await.unwrap(),
        "a holds it"
    );
    assert!(
        a.lease(&mut con, "bucket-retention", 400).await.unwrap(),
        "kept by a"
    );
    assert!(
        b.lease(&mut con, "other", 400).await.unwrap(),
        "another lease is free"
    );
    // a stops extending it: it lapses, and b takes it.
    let mut taken = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if b.lease(&mut con, "bucket-retention", 400).await.unwrap() {
            taken = true;
            break;
        }
    }
    assert!(taken, "b takes the lease once a's lapsed");
    assert!(
        !a.lease(&mut con, "bucket-retention", 400).await.unwrap(),
        "b holds it now"
    );
}
