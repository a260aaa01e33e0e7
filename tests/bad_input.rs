//! Hostile and broken input: every bad request gets a 4xx with a reason, bad
//! datagrams are dropped and counted, and the server keeps serving.

use crate::common;

use std::time::{Duration, Instant};

use castgate::names::StreamName;
use castgate::server::Server;
use castgate::stream::SinkKind;
use common::gateway::{publisher, start, url};
use common::media::video_frames;
use common::peer::{Kind, PeerOptions, Publisher, VideoCodec, Viewer, make_offer, sdp_attr};
use reqwest::StatusCode;

async fn post_sdp(
    server: &Server,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, String) {
    let r = reqwest::Client::new()
        .post(url(server, path))
        .header("content-type", "application/sdp")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// Proves the server still works: a publisher and a viewer exchange a frame.
async fn still_serves(server: &Server, name: &str) {
    let publisher = Publisher::connect(
        &url(server, &format!("/whip/{name}")),
        PeerOptions::new(Some(VideoCodec::Vp8), false),
    )
    .await
    .expect("publishing still works");
    let mut viewer = Viewer::connect(&url(server, &format!("/whep/{name}")), None)
        .await
        .expect("viewing still works");
    let deadline = Instant::now() + Duration::from_secs(5);
    let key = StreamName::parse(name).unwrap();
    while server
        .hub()
        .get(&key)
        .map_or(0, |s| s.sink_count(SinkKind::Viewer))
        == 0
    {
        assert!(Instant::now() < deadline, "viewer never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publisher
        .play(&video_frames(VideoCodec::Vp8, 1), &[])
        .await
        .unwrap();
    let f = viewer
        .next_frame_of(Kind::Video, Duration::from_secs(5))
        .await;
    assert!(f.is_some_and(|f| f.keyframe), "a keyframe arrived");
    publisher.delete().await.unwrap();
}

fn sendonly_offer(codec: VideoCodec) -> String {
    make_offer(&PeerOptions::new(Some(codec), true), false)
        .unwrap()
        .sdp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unsupported_offers_are_refused_with_reasons() {
    let server = start(|_| {}).await;

    let (s, body) = post_sdp(&server, "/whip/x", "hello").await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("not an SDP offer"), "{body}");

    let (s, body) = post_sdp(&server, "/whip/x", "v=0\r\nthis is = not sdp\r\n").await;
    assert_eq!(s, 400, "{body}");

    // Valid shape, nonsense inside: str0m's parser refuses it.
    let (s, body) = post_sdp(
        &server,
        "/whip/x",
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n",
    )
    .await;
    assert!(s == 400 || s == 422, "{s} {body}");

    // Only a codec castgate does not take.
    let offer = sendonly_offer(VideoCodec::Vp8).replace("VP8/90000", "H263/90000");
    let (s, body) = post_sdp(&server, "/whip/x", offer).await;
    assert_eq!(s, 422, "{body}");
    assert!(
        body.contains("no supported video codec") && body.contains("H263"),
        "{body}"
    );

    // Three video tracks.
    let offer = sendonly_offer(VideoCodec::Vp8);
    let video_at = offer.find("m=video").unwrap();
    let video = offer[video_at..].to_string();
    let three = format!(
        "{}{}{}",
        offer,
        video.replace("a=mid:1", "a=mid:2"),
        video.replace("a=mid:1", "a=mid:3")
    );
    let (s, body) = post_sdp(&server, "/whip/x", three).await;
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("3 video tracks"), "{body}");

    // A WHIP offer that only receives.
    let recv = make_offer(&PeerOptions::new(Some(VideoCodec::Vp8), true), true)
        .unwrap()
        .sdp;
    let (s, body) = post_sdp(&server, "/whip/x", recv).await;
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("sendonly"), "{body}");

    // Bytes that are not UTF-8.
    let (s, _) = post_sdp(&server, "/whip/x", vec![0xff, 0xfe, 0x00]).await;
    assert_eq!(s, 400);

    assert!(server.hub().is_empty(), "no refused offer left a stream");
    assert_eq!(server.engine().session_count(), 0);
    still_serves(&server, "after-offers").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_level_refusals() {
    let server = start(|_| {}).await;
    let client = reqwest::Client::new();

    // Huge body → 413.
    let (s, _) = post_sdp(&server, "/whip/big", vec![b'a'; 1 << 20]).await;
    assert_eq!(s, 413);

    // Wrong or missing content type → 415.
    let r = client
        .post(url(&server, "/whip/ct"))
        .header("content-type", "text/plain")
        .body(sendonly_offer(VideoCodec::Vp8))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(r.text().await.unwrap().contains("application/sdp"));
    let r = client
        .post(url(&server, "/whep/ct"))
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // Bad stream names → 400 (a path separator cannot even reach the handler).
    for name in ["a..b%2Fc", ".hidden", &"x".repeat(200), "sp%20ace"] {
        let (s, body) = post_sdp(
            &server,
            &format!("/whip/{name}"),
            sendonly_offer(VideoCodec::Vp8),
        )
        .await;
        assert_eq!(s, 400, "{name}: {body}");
        assert!(body.contains("invalid stream name"), "{body}");
    }
    let (s, _) = post_sdp(&server, "/whip/a/b/c", "v=0").await;
    assert!(s == 404 || s == 405, "{s}");

    // Unknown sessions → 404.
    for path in [
        "/whip/demo/0123456789abcdef0123456789abcdef",
        "/whep/demo/nope",
    ] {
        let r = client.delete(url(&server, path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let r = client
            .patch(url(&server, path))
            .header("content-type", "application/trickle-ice-sdpfrag")
            .header("if-match", "\"x\"")
            .body("a=end-of-candidates\r\n")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }

    // OPTIONS advertises what POST takes; CORS preflight is answered.
    let r = client
        .request(reqwest::Method::OPTIONS, url(&server, "/whip/demo"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["accept-post"], "application/sdp");
    let r = client
        .request(reqwest::Method::OPTIONS, url(&server, "/whip/demo"))
        .header("origin", "https://example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    for m in ["POST", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }

    // Unknown stream in the API → 404.
    let r = client
        .get(url(&server, "/api/streams/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    still_serves(&server, "after-http").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_per_address() {
    let server = start(|c| {
        c.http.rate_limit_per_sec = 1;
        c.http.rate_limit_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(post_sdp(&server, "/whip/flood", "x").await.0);
    }
    assert_eq!(&statuses[..3], &[400, 400, 400], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // Reads are not limited.
    let r = reqwest::get(url(&server, "/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_trickle_and_ice_restart_follow_rfc_9725() {
    let server = start(|_| {}).await;
    let publisher = publisher(&server, "patchy", Some(VideoCodec::Vp8), true).await;
    let resource = publisher.resource_url().to_string();
    let etag = publisher
        .session()
        .etag
        .clone()
        .expect("201 carries an ETag");
    assert!(
        etag.starts_with('"') && etag.len() > 20,
        "strong, unguessable: {etag}"
    );
    let client = reqwest::Client::new();
    let patch = |if_match: Option<&str>, body: &str| {
        let mut r = client
            .patch(&resource)
            .header("content-type", "application/trickle-ice-sdpfrag")
            .body(body.to_string());
        if let Some(m) = if_match {
            r = r.header("if-match", m);
        }
        r.send()
    };
    let candidate = "a=candidate:1 1 udp 2122260223 127.0.0.1 61764 typ host\r\n";

    let r = patch(None, candidate).await.unwrap();
    assert_eq!(r.status(), 428);
    let r = patch(Some("\"stale\""), candidate).await.unwrap();
    assert_eq!(r.status(), 412);
    let r = patch(Some(&etag), candidate).await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        r.headers().get("etag").is_none(),
        "trickle answers carry no ETag"
    );
    let r = patch(Some(&etag), "a=candidate:garbage\r\n").await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .patch(&resource)
        .header("content-type", "application/sdp")
        .header("if-match", &etag)
        .body(candidate)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // ICE restart.
    let r = patch(Some("*"), "a=ice-options:trickle\r\n").await.unwrap();
    assert_eq!(r.status(), 400, "restart without credentials");
    let r = patch(
        Some("*"),
        "a=ice-ufrag:newU\r\na=ice-pwd:newpasswordnewpassword12\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/trickle-ice-sdpfrag"
    );
    let new_etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(new_etag, etag);
    let body = r.text().await.unwrap();
    let ufrag = sdp_attr(&body, "ice-ufrag").expect("new ufrag");
    let old_ufrag = sdp_attr(&publisher.session().answer_sdp, "ice-ufrag").unwrap();
    assert_ne!(ufrag, old_ufrag);
    assert!(sdp_attr(&body, "ice-pwd").is_some());
    assert!(body.contains("a=candidate:"), "{body}");
    let r = patch(Some(&etag), candidate).await.unwrap();
    assert_eq!(r.status(), 412, "the old ETag is stale after a restart");
    let r = patch(Some(&new_etag), candidate).await.unwrap();
    assert_eq!(r.status(), 204);
    server.shutdown().await;
}

/// A STUN binding request carrying `username` and a forged MESSAGE-INTEGRITY:
/// the router learns the sender's address from it (str0m then refuses the
/// request), so what follows from that address reaches the session.
fn stun_with_username(username: &str) -> Vec<u8> {
    let mut attr = Vec::new();
    attr.extend_from_slice(&0x0006u16.to_be_bytes());
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    attr.extend_from_slice(&0x0024u16.to_be_bytes()); // PRIORITY
    attr.extend_from_slice(&4u16.to_be_bytes());
    attr.extend_from_slice(&0x6e00_1effu32.to_be_bytes());
    attr.extend_from_slice(&0x0008u16.to_be_bytes()); // MESSAGE-INTEGRITY (forged)
    attr.extend_from_slice(&20u16.to_be_bytes());
    attr.extend_from_slice(&[0xab; 20]);
    let mut msg = Vec::new();
    msg.extend_from_slice(&0x0001u16.to_be_bytes());
    msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    msg.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    msg.extend_from_slice(&[7u8; 12]);
    msg.extend_from_slice(&attr);
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped_and_counted() {
    let server = start(|_| {}).await;
    let publisher = publisher(&server, "noisy", Some(VideoCodec::Vp8), true).await;
    let mut viewer = Viewer::connect(&url(&server, "/whep/noisy"), None)
        .await
        .unwrap();
    let udp = server.engine().local_addr();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let before = server.engine().stats();

    // Unroutable noise of every shape.
    let mut seed = 0x1234_5678u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for i in 0..300 {
        let len = 1 + (next() % 1400) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        buf[0] = match i % 4 {
            0 => 0x00, // STUN-looking
            1 => 22,   // DTLS-looking
            2 => 0x80, // RTP-looking
            _ => buf[0],
        };
        socket.send_to(&buf, udp).await.unwrap();
        if i % 20 == 0 {
            // Stay under the kernel's socket buffer: this test is about what the
            // gateway does with noise, not about the kernel dropping it.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // Noise addressed to a live session: bogus STUN with its ufrag, then
    // RTP/RTCP/DTLS-shaped garbage from the same address.
    let ufrag = sdp_attr(&publisher.session().answer_sdp, "ice-ufrag")
        .unwrap()
        .to_string();
    socket
        .send_to(&stun_with_username(&format!("{ufrag}:evil")), udp)
        .await
        .unwrap();
    for i in 0..200u32 {
        let mut buf = vec![0u8; 200];
        buf[0] = [0x80, 0x81, 22, 0x90][i as usize % 4];
        buf[1] = [96, 200, 254, 111][i as usize % 4];
        for b in buf.iter_mut().skip(2) {
            *b = next() as u8;
        }
        socket.send_to(&buf, udp).await.unwrap();
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = server.engine().stats();
        if s.unrouted >= before.unrouted + 250 && s.bad_datagrams > before.bad_datagrams {
            break;
        }
        assert!(Instant::now() < deadline, "noise not counted: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The targeted session and its viewer carry on.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server
        .hub()
        .get(&StreamName::parse("noisy").unwrap())
        .map_or(0, |s| s.sink_count(SinkKind::Viewer))
        == 0
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let frames = video_frames(VideoCodec::Vp8, 1);
    publisher.play(&frames, &[]).await.unwrap();
    let mut got = 0;
    while let Some(f) = viewer.next_frame(Duration::from_secs(3)).await {
        if f.kind == Kind::Video {
            got += 1;
            if got == frames.len() {
                break;
            }
        }
    }
    assert_eq!(
        got,
        frames.len(),
        "the noisy session still delivers every frame"
    );
    still_serves(&server, "after-noise").await;
    server.shutdown().await;
}
