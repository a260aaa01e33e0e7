//! Limits against abuse: viewers per stream, sessions per client address,
//! and publisher bitrate, each refused or enforced with a clear answer, and
//! each slot given back when its session ends.

use crate::common;

use std::time::Duration;

use castgate::server::Server;
use common::gateway::{self, eventually, publisher, url};
use common::media::video_frames_sized;
use common::peer::{HttpError, VideoCodec, Viewer};

/// A WHEP attempt that must fail: its HTTP error.
async fn refused(server: &Server, name: &str) -> HttpError {
    match Viewer::connect(&url(server, &format!("/whep/{name}")), None).await {
        Ok(_) => panic!("a viewer beyond the limit was let in"),
        Err(e) => e
            .downcast::<HttpError>()
            .expect("refused with an HTTP error"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_takes_no_more_viewers_than_allowed() {
    let server = gateway::start(|c| c.limits.max_viewers_per_stream = 2).await;
    let publisher = publisher(&server, "full", Some(VideoCodec::Vp8), false).await;
    let one = Viewer::connect(&url(&server, "/whep/full"), None)
        .await
        .unwrap();
    let two = Viewer::connect(&url(&server, "/whep/full"), None)
        .await
        .unwrap();
    let e = refused(&server, "full").await;
    assert_eq!(e.status.as_u16(), 503, "{}", e.body);
    assert!(e.body.contains("max_viewers_per_stream"), "{}", e.body);
    assert_eq!(
        e.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("10")
    );
    // A viewer leaves: the next one gets in.
    assert_eq!(one.delete().await.unwrap().as_u16(), 200);
    // The place is given back when the session is gone, just after it
    // leaves the stream.
    let stream = server
        .hub()
        .get(&castgate::names::StreamName::parse("full").unwrap())
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || gateway::viewers(&server, "full")
            == 1
            && server.engine().viewer_places(&stream) == 1)
        .await
    );
    let three = Viewer::connect(&url(&server, "/whep/full"), None)
        .await
        .expect("a freed place is taken");
    drop((two, three));
    publisher.delete().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_address_holds_no_more_sessions_than_allowed() {
    let server = gateway::start(|c| c.limits.max_sessions_per_client = 2).await;
    // Everything here comes from 127.0.0.1: the publisher counts too.
    let publisher = publisher(&server, "mine", Some(VideoCodec::Vp8), false).await;
    let viewer = Viewer::connect(&url(&server, "/whep/mine"), None)
        .await
        .unwrap();
    let e = refused(&server, "mine").await;
    assert_eq!(e.status.as_u16(), 429, "{}", e.body);
    assert!(e.body.contains("max_sessions_per_client"), "{}", e.body);
    // The viewer's session ends (DELETE): its slot is free again.
    assert_eq!(viewer.delete().await.unwrap().as_u16(), 200);
    let again = eventually(Duration::from_secs(5), || {
        server.engine().stats().sessions == 1
    })
    .await;
    assert!(again, "the ended session is gone");
    let viewer = Viewer::connect(&url(&server, "/whep/mine"), None)
        .await
        .expect("the freed slot is usable");
    drop(viewer);
    publisher.delete().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_over_the_bitrate_limit_is_told_and_then_ended() {
    // 640x360 test video is several hundred kbit/s: far over 40.
    let video = tokio::task::spawn_blocking(|| video_frames_sized(VideoCodec::Vp8, 9, "640x360"))
        .await
        .unwrap();
    let server = gateway::start(|c| c.limits.max_publish_kbps = 40).await;
    let publisher = publisher(&server, "hog", Some(VideoCodec::Vp8), false).await;
    let answer = &publisher.session().answer_sdp;
    let video_section = answer.split("m=video").nth(1).unwrap_or("");
    assert!(video_section.contains("b=AS:40\r\n"), "{answer}");
    let play = publisher.play(&video, &[]);
    let ended = async {
        eventually(Duration::from_secs(12), || {
            server
                .hub()
                .get(&castgate::names::StreamName::parse("hog").unwrap())
                .is_none()
        })
        .await
    };
    let (_, ended) = tokio::join!(play, ended);
    assert!(ended, "the publisher was not ended");
    assert!(publisher.wait_ended(Duration::from_secs(5)).await);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_over_the_picture_size_limit_is_ended() {
    let big = tokio::task::spawn_blocking(|| video_frames_sized(VideoCodec::Vp8, 2, "640x360"))
        .await
        .unwrap();
    let server = gateway::start(|c| {
        c.limits.max_publish_width = 480;
        c.limits.max_publish_height = 360;
    })
    .await;
    // 320x240 (the default test size) is within 480x360.
    let small = common::media::video_frames(VideoCodec::Vp8, 1);
    let ok = publisher(&server, "fits", Some(VideoCodec::Vp8), false).await;
    ok.play(&small, &[]).await.unwrap();
    common::gateway::wait_received(&server, "fits", small.len()).await;
    assert!(!ok.ended(), "a picture within the limit is fine");
    // 640x360 is wider than 480: ended at its first keyframe.
    let hog = publisher(&server, "wide", Some(VideoCodec::Vp8), false).await;
    let _ = hog.play(&big, &[]).await;
    assert!(hog.wait_ended(Duration::from_secs(5)).await, "not ended");
    assert!(
        server
            .hub()
            .get(&castgate::names::StreamName::parse("wide").unwrap())
            .is_none()
    );
    ok.delete().await.unwrap();
    server.shutdown().await;
}
