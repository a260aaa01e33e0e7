//! Viewers joining together get their first picture from a publisher that
//! behaves like a browser's: it sends a keyframe only when asked, and (as
//! libwebrtc does) drops a request that comes within 300 ms of the last one
//! it acted on. Before castgate knew this, viewers that joined just after
//! another one's keyframe waited for somebody else's request: seconds, or for
//! good.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::gateway::{start, url};
use common::media::video_frames;
use common::peer::{Kind, PeerOptions, Publisher, VideoCodec, Viewer};

/// libwebrtc's `kMinKeyframeSendIntervalMs`.
const BROWSER_WINDOW: Duration = Duration::from_millis(300);

/// A publisher sending 30 fps of VP8 whose keyframes come only on request,
/// at most one per [`BROWSER_WINDOW`]; counts the keyframes it sent.
struct OnRequestPublisher {
    publisher: Arc<Publisher>,
    stop: Arc<AtomicBool>,
    keyframes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl OnRequestPublisher {
    async fn start(server: &castgate::server::Server, name: &str) -> OnRequestPublisher {
        let publisher = Arc::new(
            Publisher::connect(
                &url(server, &format!("/whip/{name}")),
                PeerOptions::new(Some(VideoCodec::Vp8), false),
            )
            .await
            .expect("publisher connects"),
        );
        let frames = video_frames(VideoCodec::Vp8, 2);
        let key = frames[0].data.clone();
        assert!(frames[0].keyframe);
        // The viewers do not decode: any delta frames may follow any keyframe.
        let deltas: Vec<Vec<u8>> = frames
            .iter()
            .filter(|f| !f.keyframe)
            .map(|f| f.data.clone())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let keyframes = Arc::new(AtomicU64::new(0));
        let (p, s, k) = (publisher.clone(), stop.clone(), keyframes.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(33_333));
            let (mut rtp, mut i) = (0u64, 0usize);
            let mut seen = 0;
            let mut acted_on: Option<Instant> = None;
            let mut send_key = true; // the stream's first frame
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let requests = p.keyframe_requests();
                if requests > seen {
                    seen = requests;
                    let now = Instant::now();
                    if acted_on.is_none_or(|t| now.duration_since(t) >= BROWSER_WINDOW) {
                        acted_on = Some(now);
                        send_key = true;
                    }
                }
                let data = if send_key {
                    send_key = false;
                    k.fetch_add(1, Ordering::Relaxed);
                    key.clone()
                } else {
                    i += 1;
                    deltas[i % deltas.len()].clone()
                };
                if p.send_video(data, rtp).await.is_err() {
                    return;
                }
                rtp += 3000;
            }
        });
        OnRequestPublisher {
            publisher,
            stop,
            keyframes,
            task,
        }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        drop(self.publisher);
    }
}

/// Viewer A joins and gets a keyframe; five more join right after it (as a
/// crowd does). Each must start on a keyframe.
async fn crowd_after_one_viewer(server: &castgate::server::Server, name: &str) -> Vec<bool> {
    let publisher = OnRequestPublisher::start(server, name).await;
    // Mid-stream: the keyframe that started it is long gone from "fresh".
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let whep = url(server, &format!("/whep/{name}"));
    let mut first = Viewer::connect(&whep, None).await.unwrap();
    let a = first
        .next_frame_of(Kind::Video, Duration::from_secs(5))
        .await;
    assert!(
        a.is_some_and(|f| f.keyframe),
        "the first viewer starts on a keyframe"
    );
    let crowd = futures_util::future::join_all((0..5).map(|_| {
        let whep = whep.clone();
        async move {
            let mut v = Viewer::connect(&whep, None).await.unwrap();
            let f = v.next_frame_of(Kind::Video, Duration::from_secs(5)).await;
            (v, f.is_some_and(|f| f.keyframe))
        }
    }))
    .await;
    let started: Vec<bool> = crowd.iter().map(|(_, ok)| *ok).collect();
    let keyframes = publisher.keyframes.load(Ordering::Relaxed);
    eprintln!("{name}: crowd started {started:?}; the publisher sent {keyframes} keyframes");
    drop(crowd);
    drop(first);
    publisher.stop().await;
    started
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_joining_just_after_a_keyframe_starts_from_it() {
    let server = start(|_| {}).await;
    let started = crowd_after_one_viewer(&server, "crowd").await;
    assert_eq!(
        started, [true; 5],
        "every viewer of the crowd got a picture"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_browser_dropped_is_sent_again() {
    // Always a fresh keyframe, and requests paced closer than the browser
    // accepts them: the crowd's merged request is dropped by the publisher,
    // and only sending it again brings their keyframe.
    let server = start(|c| {
        c.keyframes.viewer_start = castgate::config::ViewerStart::Fresh;
        c.keyframes.min_interval_ms = 200;
    })
    .await;
    let started = crowd_after_one_viewer(&server, "dropped").await;
    assert_eq!(
        started, [true; 5],
        "every viewer of the crowd got a picture"
    );
    server.shutdown().await;
}
