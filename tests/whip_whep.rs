//! End-to-end tests of the core: real WebRTC peers (str0m over loopback UDP)
//! publish and view through a castgate running in-process.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use castgate::config::OnConflict;
use castgate::names::StreamName;
use common::gateway::{eventually, publisher, start, url, viewers};
use common::media::{opus_packets, video_frames};
use common::peer::{
    HttpError, Kind, PeerOptions, Publisher, VideoCodec, Viewer, assert_same_sequence, collect,
};

/// Viewers of VP8/H.264 + Opus streams send the publisher's shared RTP
/// payloads (str0m's RTP mode): a viewer on a lossy link must still get every
/// frame, resent from those shared payloads on its NACKs, while a clean viewer
/// of the same stream is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_viewer_gets_every_frame_by_retransmission() {
    for codec in [VideoCodec::Vp8, VideoCodec::H264] {
        let video = video_frames(codec, 3);
        let audio = opus_packets(3);
        let server = start(|_| {}).await;
        let name = format!("lossy-{codec:?}").to_lowercase();
        let publisher = Publisher::connect(
            &url(&server, &format!("/whip/{name}")),
            PeerOptions::new(Some(codec), true),
        )
        .await
        .expect("publisher connects");
        let whep = url(&server, &format!("/whep/{name}"));
        let mut lossy = Viewer::connect_with(
            &whep,
            PeerOptions::new(Some(codec), true).losing_video_every(10),
        )
        .await
        .expect("lossy viewer connects");
        let mut clean = Viewer::connect_with(&whep, PeerOptions::new(Some(codec), true))
            .await
            .expect("clean viewer connects");
        assert!(
            eventually(Duration::from_secs(5), || viewers(&server, &name) == 2).await,
            "two viewers subscribed"
        );
        publisher.play(&video, &audio).await.expect("plays");
        // A loss is noticed when a later packet arrives: one more frame, so
        // the last frame's packets are not the last the viewer sees.
        let after = video.last().map_or(0, |f| f.rtp_time) + 3000;
        publisher
            .send_video(video[0].data.clone(), after)
            .await
            .expect("sends");
        for (label, v) in [("lossy", &mut lossy), ("clean", &mut clean)] {
            let (got_video, got_audio) = collect(v, video.len()).await;
            let label = format!("{codec:?} {label} viewer");
            assert_eq!(got_video.len(), video.len(), "{label}: every video frame");
            assert!(
                got_video.iter().all(|f| f.contiguous),
                "{label}: no frame was given up on"
            );
            assert_same_sequence(&format!("{label} video"), &got_video, &video);
            assert_same_sequence(&format!("{label} audio"), &got_audio, &audio);
        }
        let lost = lossy.video_packets_lost();
        assert!(lost >= 5, "{codec:?}: the link lost packets ({lost})");
        assert_eq!(clean.video_packets_lost(), 0);
        // str0m's statistics reach the counters every 2 s.
        assert!(
            eventually(Duration::from_secs(5), || {
                server
                    .engine()
                    .counters()
                    .nacks_received
                    .load(Ordering::Relaxed)
                    > 0
            })
            .await,
            "{codec:?}: the gateway saw the NACKs"
        );
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_viewers_get_every_frame_byte_for_byte() {
    let video = video_frames(VideoCodec::Vp8, 3);
    let audio = opus_packets(3);
    let server = start(|_| {}).await;
    let publisher = Publisher::connect(
        &url(&server, "/whip/fanout"),
        PeerOptions::new(Some(VideoCodec::Vp8), true),
    )
    .await
    .expect("publisher connects");
    let mut vs = Vec::new();
    for _ in 0..3 {
        vs.push(
            Viewer::connect(&url(&server, "/whep/fanout"), None)
                .await
                .expect("viewer connects"),
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || viewers(&server, "fanout") == 3).await,
        "three viewers subscribed"
    );
    // Transport-wide congestion control feeds the publisher's encoder; towards
    // viewers castgate runs no bandwidth estimation, so it is not negotiated.
    const TWCC: &str = "transport-wide-cc-extensions";
    assert!(
        publisher.session().answer_sdp.contains(TWCC),
        "publisher gets TWCC"
    );
    assert!(
        vs[0].session().offer_sdp.contains(TWCC),
        "the viewer offered it"
    );
    assert!(!vs[0].session().answer_sdp.contains(TWCC), "viewers do not");
    publisher.play(&video, &audio).await.expect("plays");
    for (i, v) in vs.iter_mut().enumerate() {
        let (got_video, got_audio) = collect(v, video.len()).await;
        assert_eq!(
            got_video.len(),
            video.len(),
            "viewer {i}: every video frame"
        );
        assert!(got_video[0].keyframe, "viewer {i}: starts on a keyframe");
        assert_same_sequence(&format!("viewer {i} video"), &got_video, &video);
        assert_eq!(
            got_audio.len(),
            audio.len(),
            "viewer {i}: every audio packet"
        );
        assert_same_sequence(&format!("viewer {i} audio"), &got_audio, &audio);
    }
    let info = server
        .hub()
        .get(&StreamName::parse("fanout").unwrap())
        .unwrap()
        .info();
    assert_eq!(info.viewers, 3);
    assert_eq!(info.frames_in as usize, video.len() + audio.len());
    assert_eq!(info.video.as_ref().unwrap().width, Some(320));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_viewer_starts_on_a_keyframe_it_asked_for() {
    let video = video_frames(VideoCodec::Vp8, 4);
    let audio = opus_packets(4);
    let server = start(|_| {}).await;
    let publisher = Arc::new(publisher(&server, "late", Some(VideoCodec::Vp8), true).await);
    let p = publisher.clone();
    let (v2, a2) = (video.clone(), audio.clone());
    let playing = tokio::spawn(async move { p.play(&v2, &a2).await });
    // Join mid-stream, between keyframes (they come every 30 frames = 1 s).
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let before = publisher.keyframe_requests();
    let mut viewer = Viewer::connect(&url(&server, "/whep/late"), None)
        .await
        .unwrap();
    let first = viewer
        .next_frame_of(Kind::Video, Duration::from_secs(5))
        .await
        .expect("a video frame");
    assert!(first.keyframe, "the first video frame is a keyframe");
    assert!(
        eventually(Duration::from_secs(3), || publisher.keyframe_requests()
            > before)
        .await,
        "joining sent a keyframe request to the publisher"
    );
    let (mut rest, _) = collect(&mut viewer, 20).await;
    rest.insert(0, first);
    assert_same_sequence("late viewer", &rest, &video);
    playing.await.unwrap().unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_vanished_viewer_does_not_disturb_the_others() {
    let video = video_frames(VideoCodec::Vp8, 3);
    let audio = opus_packets(3);
    let server = start(|_| {}).await;
    let publisher = publisher(&server, "robust", Some(VideoCodec::Vp8), true).await;
    let mut good = Viewer::connect(&url(&server, "/whep/robust"), None)
        .await
        .unwrap();
    let stalled = Viewer::connect(&url(&server, "/whep/robust"), None)
        .await
        .unwrap();
    let gone = Viewer::connect(&url(&server, "/whep/robust"), None)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || viewers(&server, "robust") == 3).await);
    gone.vanish().await;
    publisher.play(&video, &audio).await.unwrap();
    let (got, _) = collect(&mut good, video.len()).await;
    assert_eq!(got.len(), video.len(), "the healthy viewer got every frame");
    assert_same_sequence("healthy viewer", &got, &video);
    drop(stalled);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ends_the_stream_and_its_viewers() {
    let server = start(|_| {}).await;
    let publisher = publisher(&server, "bye", Some(VideoCodec::H264), true).await;
    let viewer = Viewer::connect(&url(&server, "/whep/bye"), None)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || viewers(&server, "bye") == 1).await);
    let resource = publisher.resource_url().to_string();
    assert_eq!(publisher.delete().await.unwrap(), 200);
    assert!(
        viewer.wait_ended(Duration::from_secs(5)).await,
        "viewer told"
    );
    assert!(server.hub().is_empty());
    let api: serde_json::Value = reqwest::get(url(&server, "/api/streams"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["streams"].as_array().unwrap().len(), 0);
    let again = reqwest::Client::new()
        .delete(&resource)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    assert!(
        eventually(Duration::from_secs(5), || server.engine().session_count()
            == 0)
        .await
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_vanishing_without_delete_ends_the_stream() {
    let server = start(|c| c.whip.publisher_timeout_secs = 1.5).await;
    let publisher = publisher(&server, "ghost", Some(VideoCodec::Vp8), true).await;
    let viewer = Viewer::connect(&url(&server, "/whep/ghost"), None)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || viewers(&server, "ghost") == 1).await);
    publisher.vanish().await;
    assert!(
        viewer.wait_ended(Duration::from_secs(10)).await,
        "viewer closed"
    );
    assert!(server.hub().is_empty(), "stream removed");
    assert!(
        eventually(Duration::from_secs(5), || server.engine().session_count()
            == 0)
        .await
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_flows_to_a_viewer() {
    let server = start(|_| {}).await;
    for codec in VideoCodec::ALL {
        let video = video_frames(codec, 1);
        let name = format!("codec-{codec:?}").to_lowercase();
        let publisher = Publisher::connect(
            &url(&server, &format!("/whip/{name}")),
            PeerOptions::new(Some(codec), true),
        )
        .await
        .unwrap_or_else(|e| panic!("{codec:?}: {e:#}"));
        let mut viewer = Viewer::connect(&url(&server, &format!("/whep/{name}")), None)
            .await
            .unwrap();
        assert!(eventually(Duration::from_secs(5), || viewers(&server, &name) == 1).await);
        publisher.play(&video, &[]).await.unwrap();
        let (got, _) = collect(&mut viewer, video.len()).await;
        assert_eq!(got.len(), video.len(), "{codec:?}: every frame");
        assert_same_sequence(&format!("{codec:?}"), &got, &video);
        let info = server
            .hub()
            .get(&StreamName::parse(&name).unwrap())
            .unwrap()
            .info();
        let v = info.video.unwrap();
        assert_eq!(
            (v.width, v.height),
            (Some(320), Some(240)),
            "{codec:?}: size probed"
        );
        publisher.delete().await.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_per_name_or_takeover() {
    let server = start(|_| {}).await;
    let first = publisher(&server, "solo", Some(VideoCodec::Vp8), true).await;
    let err = Publisher::connect(
        &url(&server, "/whip/solo"),
        PeerOptions::new(Some(VideoCodec::Vp8), true),
    )
    .await
    .err()
    .expect("second publisher refused");
    let http = err.downcast_ref::<HttpError>().expect("an HTTP refusal");
    assert_eq!(http.status, 409);
    assert!(
        http.body.contains("already has a publisher"),
        "{}",
        http.body
    );
    assert_eq!(
        server.engine().session_count(),
        1,
        "refusal left nothing behind"
    );
    drop(first);
    server.shutdown().await;

    let server = start(|c| c.whip.on_conflict = OnConflict::Takeover).await;
    let mut events = server.events().subscribe();
    let first = publisher(&server, "solo", Some(VideoCodec::Vp8), true).await;
    let id1 = server
        .hub()
        .get(&StreamName::parse("solo").unwrap())
        .unwrap()
        .id();
    let _second = publisher(&server, "solo", Some(VideoCodec::Vp8), true).await;
    assert!(
        first.wait_ended(Duration::from_secs(5)).await,
        "old publisher closed"
    );
    let id2 = server
        .hub()
        .get(&StreamName::parse("solo").unwrap())
        .unwrap()
        .id();
    assert_ne!(id1, id2, "a new stream");
    server.shutdown().await;
    // Each stream's end says why: the first was replaced, the second
    // ended with the server.
    let mut reasons = vec![];
    while let Ok(env) = events.try_recv() {
        if let castgate::events::Event::StreamEnded {
            stream_id, reason, ..
        } = &env.event
        {
            reasons.push((*stream_id, reason.clone()));
        }
    }
    assert_eq!(
        reasons,
        [(id1, "replaced".to_string()), (id2, "shutdown".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_before_publisher_gets_409_or_waits() {
    let server = start(|_| {}).await;
    let err = Viewer::connect(&url(&server, "/whep/early"), None)
        .await
        .err()
        .unwrap();
    let http = err.downcast_ref::<HttpError>().unwrap();
    assert_eq!(http.status, 409);
    assert_eq!(http.headers.get("retry-after").unwrap(), "2");
    server.shutdown().await;

    let server = start(|c| c.whep.no_publisher = castgate::config::NoPublisher::Wait).await;
    let whep = url(&server, "/whep/early");
    let whip = url(&server, "/whip/early");
    let (viewer, publisher) = tokio::join!(Viewer::connect(&whep, None), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Publisher::connect(&whip, PeerOptions::new(Some(VideoCodec::Vp8), true)).await
    });
    let publisher = publisher.unwrap();
    let mut viewer = viewer.expect("the held viewer is answered");
    let video = video_frames(VideoCodec::Vp8, 1);
    assert!(eventually(Duration::from_secs(5), || viewers(&server, "early") == 1).await);
    publisher.play(&video, &[]).await.unwrap();
    assert!(
        viewer
            .next_frame_of(Kind::Video, Duration::from_secs(5))
            .await
            .is_some()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_that_cannot_receive_the_codec_gets_422() {
    let server = start(|_| {}).await;
    let _publisher = publisher(&server, "h264only", Some(VideoCodec::H264), false).await;
    let err = Viewer::connect_with(
        &url(&server, "/whep/h264only"),
        PeerOptions::new(Some(VideoCodec::Vp8), false),
    )
    .await
    .err()
    .unwrap();
    let http = err.downcast_ref::<HttpError>().unwrap();
    assert_eq!(http.status, 422, "{}", http.body);
    assert!(
        http.body.contains("h264"),
        "names what is missing: {}",
        http.body
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_publish_and_view() {
    let server = start(|c| {
        c.auth.publish_token = Some("pub-secret".into());
        c.auth.view_token = Some("view-secret".into());
    })
    .await;
    let whip = url(&server, "/whip/guarded");
    for opts in [
        PeerOptions::new(Some(VideoCodec::Vp8), true),
        PeerOptions::new(Some(VideoCodec::Vp8), true).with_token("wrong"),
    ] {
        let err = Publisher::connect(&whip, opts).await.err().unwrap();
        let http = err.downcast_ref::<HttpError>().unwrap();
        assert_eq!(http.status, 401);
        assert_eq!(http.headers.get("www-authenticate").unwrap(), "Bearer");
    }
    let _p = Publisher::connect(
        &whip,
        PeerOptions::new(Some(VideoCodec::Vp8), true).with_token("pub-secret"),
    )
    .await
    .expect("right token publishes");
    let whep = url(&server, "/whep/guarded");
    let err = Viewer::connect(&whep, Some("pub-secret".into()))
        .await
        .err()
        .unwrap();
    assert_eq!(err.downcast_ref::<HttpError>().unwrap().status, 401);
    Viewer::connect(&whep, Some("view-secret".into()))
        .await
        .expect("viewer token works");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_leave_nothing_behind() {
    let server = start(|_| {}).await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let fds = || {
        std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // Warm up once so lazily created things (thread pools, DNS) are counted as baseline.
    let p = publisher(&server, "cycle", Some(VideoCodec::Vp8), true).await;
    p.delete().await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || server.engine().session_count()
            == 0)
        .await
    );
    let (tasks0, fds0) = (tasks(), fds());
    for i in 0..100 {
        let p = Publisher::connect(
            &url(&server, "/whip/cycle"),
            PeerOptions::new(Some(VideoCodec::Vp8), true),
        )
        .await
        .unwrap_or_else(|e| panic!("cycle {i}: {e:#}"));
        let v = Viewer::connect(&url(&server, "/whep/cycle"), None)
            .await
            .unwrap();
        assert_eq!(v.delete().await.unwrap(), 200);
        assert_eq!(p.delete().await.unwrap(), 200);
    }
    assert!(
        eventually(Duration::from_secs(10), || server.engine().session_count()
            == 0)
        .await,
        "sessions: {}",
        server.engine().session_count()
    );
    assert!(server.hub().is_empty());
    assert_eq!(
        server.engine().stats().routes,
        (0, 0),
        "routing table emptied"
    );
    assert!(
        eventually(Duration::from_secs(10), || tasks() <= tasks0).await,
        "tasks: {} then {}",
        tasks0,
        tasks()
    );
    assert!(
        eventually(Duration::from_secs(10), || fds() <= fds0).await,
        "file descriptors: {} then {}",
        fds0,
        fds()
    );
    server.shutdown().await;
}

/// Bound to `[::]`, the one media port is dual-stack: an IPv4 publisher is
/// watched by an IPv4 and an IPv6 viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_media_port_serves_ipv4_and_ipv6_peers() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let server = start(|c| {
        c.rtc.udp_listen = "[::]:0".parse().unwrap();
        c.rtc.auto_detect_addresses = false;
        c.rtc.announce = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    })
    .await;
    let publisher = publisher(&server, "dual", Some(VideoCodec::Vp8), false).await;
    let whep = url(&server, "/whep/dual");
    let mut v4 = Viewer::connect(&whep, None).await.unwrap();
    let mut v6 = Viewer::connect_with(
        &whep,
        PeerOptions::new(None, true).bound_to("::1".parse().unwrap()),
    )
    .await
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || viewers(&server, "dual") == 2).await);
    let frames = video_frames(VideoCodec::Vp8, 1);
    publisher.play(&frames, &[]).await.unwrap();
    for (name, viewer) in [("IPv4", &mut v4), ("IPv6", &mut v6)] {
        let f = viewer
            .next_frame_of(Kind::Video, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("the {name} viewer got no frame"));
        assert!(f.keyframe);
        assert_eq!(f.data, frames[0].data, "{name}: byte for byte");
    }
    publisher.delete().await.unwrap();
    server.shutdown().await;
}
