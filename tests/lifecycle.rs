//! Lifecycle edges: offers that arrive while the server stops, concurrent
//! viewers against the per-stream limit, and the cap on event-stream clients.

use crate::common;

use std::time::Duration;

use castgate::events::Event;
use castgate::names::StreamName;
use common::gateway::{self, publisher, url};
use common::peer::{PeerOptions, VideoCodec, http_client, make_offer, post_offer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_during_shutdown_get_503_with_retry_after() {
    let server = gateway::start(|_| {}).await;
    let live = publisher(&server, "closing", Some(VideoCodec::Vp8), false).await;
    // The first step of a stop: sessions end, HTTP still answers.
    server.engine().shutdown().await;
    let client = http_client().unwrap();
    let opts = PeerOptions::new(Some(VideoCodec::Vp8), false);
    for (path, recv) in [("/whep/closing", true), ("/whip/other", false)] {
        let offer = make_offer(&opts, recv).unwrap();
        let resp = post_offer(&client, &url(&server, path), None, &offer.sdp)
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503, "{path}");
        assert!(resp.headers().contains_key("retry-after"), "{path}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("shutting down"), "{path}: {body}");
    }
    drop(live);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_viewers_never_exceed_the_per_stream_limit() {
    const MAX: usize = 3;
    const EXTRA: usize = 5;
    let server = gateway::start(|c| c.limits.max_viewers_per_stream = MAX).await;
    let live = publisher(&server, "crowd", Some(VideoCodec::Vp8), false).await;
    let client = http_client().unwrap();
    let target = url(&server, "/whep/crowd");
    let offers: Vec<_> = (0..MAX + EXTRA)
        .map(|_| make_offer(&PeerOptions::new(None, false), true).unwrap())
        .collect();
    let posts = offers
        .iter()
        .map(|o| post_offer(&client, &target, None, &o.sdp));
    let statuses: Vec<u16> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    let created = statuses.iter().filter(|s| **s == 201).count();
    let full = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!((created, full), (MAX, EXTRA), "{statuses:?}");
    let stream = server
        .hub()
        .get(&StreamName::parse("crowd").unwrap())
        .unwrap();
    assert_eq!(server.engine().viewer_places(&stream), MAX);
    drop(live);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_clients_are_capped() {
    let server = gateway::start(|c| c.events.max_sse_clients = 2).await;
    let client = http_client().unwrap();
    let events = url(&server, "/api/events");
    let one = client.get(&events).send().await.unwrap();
    let two = client.get(&events).send().await.unwrap();
    assert_eq!((one.status().as_u16(), two.status().as_u16()), (200, 200));
    let third = client.get(&events).send().await.unwrap();
    assert_eq!(third.status().as_u16(), 503);
    assert!(third.headers().contains_key("retry-after"));
    assert!(
        third
            .text()
            .await
            .unwrap()
            .contains("events.max_sse_clients")
    );
    // A client leaves: its place is free once the server notices (on its
    // next write).
    drop(one);
    let mut fourth = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fourth.is_none() && std::time::Instant::now() < deadline {
        server.events().emit(Event::ConfigRejected {
            error: "nudge".into(),
        });
        let r = client.get(&events).send().await.unwrap();
        if r.status().as_u16() == 200 {
            fourth = Some(r);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(fourth.is_some(), "a freed place is taken");
    drop((two, fourth));
    server.shutdown().await;
}
