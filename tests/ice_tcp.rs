//! ICE-TCP (RFC 6544): peers whose networks block UDP reach castgate over TCP
//! on the media port's number, with RFC 4571 framing. The TCP peers here have
//! no UDP socket at all, so every byte they get came over TCP.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::gateway::{eventually, start, url, viewers};
use common::media::{opus_packets, video_frames};
use common::peer::{
    PeerOptions, Publisher, VideoCodec, Viewer, assert_same_sequence, collect, frame_rfc4571,
    passive_tcp_candidates,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn tcp_viewer_opts() -> PeerOptions {
    PeerOptions::new(None, true).over_tcp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_crosses_tcp_both_ways_byte_for_byte() {
    let video = video_frames(VideoCodec::Vp8, 2);
    let audio = opus_packets(2);
    let server = start(|_| {}).await;

    // A publisher over UDP, a viewer over TCP.
    let publisher = Publisher::connect(
        &url(&server, "/whip/udp-in"),
        PeerOptions::new(Some(VideoCodec::Vp8), true),
    )
    .await
    .expect("UDP publisher connects");
    let answer = &publisher.session().answer_sdp;
    assert!(
        passive_tcp_candidates(answer).contains(&server.engine().local_addr()),
        "a passive TCP candidate on the media port:\n{answer}"
    );
    let mut viewer = Viewer::connect_with(&url(&server, "/whep/udp-in"), tcp_viewer_opts())
        .await
        .expect("TCP viewer connects");
    assert!(eventually(Duration::from_secs(5), || viewers(&server, "udp-in") == 1).await);
    assert_eq!(server.engine().tcp_stats().1, 1, "one TCP connection open");
    publisher.play(&video, &audio).await.expect("plays");
    let (got_video, got_audio) = collect(&mut viewer, video.len()).await;
    assert_eq!(got_video.len(), video.len(), "every video frame over TCP");
    assert!(got_video[0].keyframe);
    assert_same_sequence("tcp viewer video", &got_video, &video);
    assert_eq!(got_audio.len(), audio.len(), "every audio packet over TCP");
    assert_same_sequence("tcp viewer audio", &got_audio, &audio);

    // A publisher over TCP, a viewer over TCP and one over UDP.
    let tcp_publisher = Publisher::connect(
        &url(&server, "/whip/tcp-in"),
        PeerOptions::new(Some(VideoCodec::Vp8), true).over_tcp(),
    )
    .await
    .expect("TCP publisher connects");
    let mut tcp_viewer = Viewer::connect_with(&url(&server, "/whep/tcp-in"), tcp_viewer_opts())
        .await
        .expect("second TCP viewer connects");
    let mut udp_viewer = Viewer::connect(&url(&server, "/whep/tcp-in"), None)
        .await
        .expect("UDP viewer connects");
    assert!(eventually(Duration::from_secs(5), || viewers(&server, "tcp-in") == 2).await);
    tcp_publisher.play(&video, &audio).await.expect("plays");
    for (label, v) in [("tcp", &mut tcp_viewer), ("udp", &mut udp_viewer)] {
        let (got_video, got_audio) = collect(v, video.len()).await;
        assert_eq!(
            got_video.len(),
            video.len(),
            "{label} viewer: every video frame"
        );
        assert_same_sequence(&format!("{label} viewer video"), &got_video, &video);
        assert_eq!(
            got_audio.len(),
            audio.len(),
            "{label} viewer: every audio packet"
        );
        assert_same_sequence(&format!("{label} viewer audio"), &got_audio, &audio);
    }
    let (counters, open) = server.engine().tcp_stats();
    assert_eq!(open, 3, "three TCP peers");
    assert!(counters.packets_in.load(Ordering::Relaxed) > video.len() as u64);
    assert!(counters.packets_out.load(Ordering::Relaxed) > 2 * video.len() as u64);
    assert_eq!(counters.closed_bad.load(Ordering::Relaxed), 0);

    // Ending sessions closes their connections and leaves nothing behind.
    viewer.delete().await.expect("DELETE");
    assert!(
        eventually(Duration::from_secs(5), || server.engine().tcp_stats().1
            == 2)
        .await
    );
    tcp_publisher.delete().await.expect("DELETE");
    // The publisher's end ends its stream and so its viewers.
    assert!(tcp_viewer.wait_ended(Duration::from_secs(5)).await);
    assert!(
        eventually(Duration::from_secs(5), || server.engine().tcp_stats().1
            == 0)
        .await,
        "every TCP connection closed"
    );
    publisher.delete().await.expect("DELETE");
    drop(udp_viewer);
    server.shutdown().await;
}

/// A STUN binding request naming an ICE username nobody was given.
fn stun_with_unknown_ufrag() -> Vec<u8> {
    let username = b"nope:peer\0\0\0"; // 9 bytes, padded to 12
    let mut m = vec![0x00, 0x01, 0x00, 16, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[7u8; 12]); // transaction id
    m.extend_from_slice(&[0x00, 0x06, 0x00, 9]);
    m.extend_from_slice(username);
    m
}

/// Reads until the server closes the connection; false if it is still open
/// after `limit`.
async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let until = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_tcp_port_closes_only_that_connection() {
    let video = video_frames(VideoCodec::Vp8, 1);
    let audio = opus_packets(1);
    let server = start(|_| {}).await;
    let publisher = Publisher::connect(
        &url(&server, "/whip/steady"),
        PeerOptions::new(Some(VideoCodec::Vp8), true),
    )
    .await
    .unwrap();
    let mut viewer = Viewer::connect(&url(&server, "/whep/steady"), None)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || viewers(&server, "steady") == 1).await);

    let media: SocketAddr = server.engine().local_addr();
    let rtp_like = frame_rfc4571(&[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized length", vec![0xff, 0xff, 1, 2, 3]),
        ("zero length", vec![0, 0, 0, 0]),
        ("first packet not STUN", rtp_like),
        (
            "unknown ICE ufrag",
            frame_rfc4571(&stun_with_unknown_ufrag()),
        ),
        ("silence", vec![]),
    ];
    let mut streams = Vec::new();
    for (label, bytes) in &cases {
        let mut s = TcpStream::connect(media).await.expect("TCP connects");
        s.write_all(bytes).await.unwrap();
        streams.push((label, s));
    }
    for (label, s) in &mut streams {
        // The silent one is closed after the 5 s handshake timeout.
        assert!(
            closed_by_server(s, Duration::from_secs(15)).await,
            "{label}: the server closes the connection"
        );
    }
    let (counters, _) = server.engine().tcp_stats();
    assert_eq!(
        counters.closed_bad.load(Ordering::Relaxed),
        cases.len() as u64
    );
    assert!(
        eventually(Duration::from_secs(5), || server.engine().tcp_stats().1
            == 0)
        .await,
        "nothing left of them"
    );

    // The UDP viewer never noticed.
    publisher.play(&video, &audio).await.expect("plays");
    let (got_video, got_audio) = collect(&mut viewer, video.len()).await;
    assert_eq!(got_video.len(), video.len());
    assert_same_sequence("udp viewer video", &got_video, &video);
    assert_same_sequence("udp viewer audio", &got_audio, &audio);
    assert_eq!(server.engine().session_count(), 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused() {
    let server = start(|c| c.rtc.ice_tcp_max_connections = 2).await;
    let media = server.engine().local_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(media).await.unwrap());
    }
    assert!(
        eventually(Duration::from_secs(5), || server.engine().tcp_stats().1
            == 2)
        .await
    );
    let mut third = TcpStream::connect(media).await.unwrap();
    assert!(
        closed_by_server(&mut third, Duration::from_secs(3)).await,
        "the third connection is closed at once"
    );
    let (counters, open) = server.engine().tcp_stats();
    assert_eq!(counters.refused_full.load(Ordering::Relaxed), 1);
    assert_eq!(open, 2);
    let metrics = reqwest::get(url(&server, "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "castgate_ice_tcp_connections 2",
        "castgate_ice_tcp_refused_total{reason=\"full\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ice_tcp_only_udp_is_offered() {
    let server = start(|c| c.rtc.ice_tcp = false).await;
    let publisher = Publisher::connect(
        &url(&server, "/whip/udp-only"),
        PeerOptions::new(Some(VideoCodec::Vp8), false),
    )
    .await
    .unwrap();
    let answer = &publisher.session().answer_sdp;
    assert!(passive_tcp_candidates(answer).is_empty(), "{answer}");
    assert!(answer.contains(" udp "), "{answer}");
    let refused = TcpStream::connect(server.engine().local_addr()).await;
    assert!(refused.is_err(), "nothing listens on TCP");
    publisher.delete().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_tcp_port_is_a_clear_start_up_error() {
    // Something else holds TCP on the port number the media socket wants.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut c = castgate::config::Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.rtc.udp_listen = SocketAddr::from(([127, 0, 0, 1], port));
    c.record.enabled = false;
    c.record.min_free_mib = 0;
    let Err(e) = castgate::server::Server::start(c).await else {
        panic!("started although TCP {port} is taken");
    };
    let text = format!("{e:#}");
    assert!(
        text.contains(&format!("cannot bind the media TCP port 127.0.0.1:{port}"))
            && text.contains("rtc.ice_tcp = false"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_says_goodbye_over_tcp_too() {
    let server = start(|_| {}).await;
    let publisher = Publisher::connect(
        &url(&server, "/whip/bye"),
        PeerOptions::new(Some(VideoCodec::Vp8), true).over_tcp(),
    )
    .await
    .expect("TCP publisher connects");
    let viewer = Viewer::connect_with(&url(&server, "/whep/bye"), tcp_viewer_opts())
        .await
        .expect("TCP viewer connects");
    assert!(eventually(Duration::from_secs(5), || viewers(&server, "bye") == 1).await);
    server.shutdown().await;
    for (label, ended, reason) in [
        (
            "publisher",
            publisher.wait_ended(Duration::from_secs(5)).await,
            publisher.end_reason(),
        ),
        (
            "viewer",
            viewer.wait_ended(Duration::from_secs(5)).await,
            viewer.end_reason(),
        ),
    ] {
        assert!(ended, "{label} told");
        let reason = reason.unwrap_or_default();
        assert!(
            reason.contains("close_notify"),
            "{label}: the DTLS goodbye arrived before the connection closed, not just the close ({reason})"
        );
    }
}
