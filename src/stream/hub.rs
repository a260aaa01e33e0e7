//! The registry of live streams: who publishes under which name, and where
//! viewers find them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::live::{LiveStream, PublisherControl, StreamCounters, StreamInfo, StreamPolicy};
use crate::events::{Event, Events};
use crate::media::frame::CodecParams;
use crate::names::StreamName;

/// Why a publisher could not claim a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Someone already publishes under this name and takeover is off.
    #[error("stream {0:?} already has a publisher")]
    Busy(String),
    /// The hub is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Told about every new stream (the recorder starts recording here).
pub trait StreamObserver: Send + Sync {
    /// A publisher's stream went live. Called once, before its first frame;
    /// must not block (start threads or tasks for real work).
    fn stream_started(&self, stream: &Arc<LiveStream>);
}

/// Live streams by name, and the totals of those that ended (folded in under
/// the same lock as they leave, so [`Hub::counters`] never goes backwards).
#[derive(Default)]
struct Registry {
    live: HashMap<StreamName, Arc<LiveStream>>,
    ended: StreamCounters,
    started: u64,
}

impl Registry {
    fn take(&mut self, name: &StreamName) -> Option<Arc<LiveStream>> {
        let s = self.live.remove(name)?;
        self.ended += s.counters();
        Some(s)
    }
}

/// All live streams of the process, by name.
pub struct Hub {
    observers: parking_lot::RwLock<Vec<Arc<dyn StreamObserver>>>,
    streams: Mutex<Registry>,
    events: Events,
    changed: Notify,
    next_id: AtomicU64,
    policy: StreamPolicy,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("streams", &self.len()).finish()
    }
}

impl Hub {
    /// An empty hub whose streams follow `policy`, with an event bus of its own.
    pub fn new(policy: StreamPolicy) -> Hub {
        Hub::with_events(policy, Events::default())
    }

    /// An empty hub whose streams follow `policy` and report on `events`.
    pub fn with_events(policy: StreamPolicy, events: Events) -> Hub {
        Hub {
            observers: parking_lot::RwLock::new(Vec::new()),
            streams: Mutex::new(Registry::default()),
            events,
            changed: Notify::new(),
            next_id: AtomicU64::new(1),
            policy,
            closed: Default::default(),
        }
    }

    /// Claims `name` for a new publisher of `tracks`, its video in the
    /// simulcast layers `layers` (rids; empty without simulcast). With
    /// `takeover`, a current publisher is closed and its stream ended (its
    /// viewers' sessions close too).
    pub fn publish(
        &self,
        name: StreamName,
        tracks: Vec<CodecParams>,
        layers: &[String],
        control: Arc<dyn PublisherControl>,
        takeover: bool,
    ) -> Result<Arc<LiveStream>, PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::ShuttingDown);
        }
        let stream = Arc::new(self.new_stream(&name, tracks, layers, control));
        let old = {
            let mut streams = self.streams.lock();
            if streams.live.contains_key(&name) && !takeover {
                return Err(PublishError::Busy(name.to_string()));
            }
            let current = streams.take(&name);
            streams.live.insert(name, stream.clone());
            streams.started += 1;
            current
        };
        if let Some(old) = old {
            tracing::info!(stream = %old.name(), "publisher taken over by a new one");
            old.close_publisher("replaced");
        }
        tracing::info!(stream = %stream.name(), stream_id = stream.id(), "stream started");
        self.events.emit(Event::StreamStarted {
            stream: stream.name().to_string(),
            stream_id: stream.id(),
            video: stream
                .track(crate::media::MediaKind::Video)
                .map(|t| t.codec.name().to_string()),
            audio: stream
                .track(crate::media::MediaKind::Audio)
                .map(|t| t.codec.name().to_string()),
        });
        for o in self.observers.read().iter() {
            o.stream_started(&stream);
        }
        self.changed.notify_waiters();
        Ok(stream)
    }

    /// A new stream of this hub (its id, policy and event bus), not yet registered.
    fn new_stream(
        &self,
        name: &StreamName,
        tracks: Vec<CodecParams>,
        layers: &[String],
        control: Arc<dyn PublisherControl>,
    ) -> LiveStream {
        LiveStream::new(
            self.next_id.fetch_add(1, Ordering::Relaxed),
            name.clone(),
            tracks,
            layers,
            control,
            self.policy.clone(),
            self.events.clone(),
        )
    }

    /// Registers a stream relayed from the node `origin` under `name` (with
    /// the origin's simulcast `layers`, their rids; empty without
    /// simulcast): local viewers find it as any stream, but no observer
    /// (recorder, restreamer) hears of it and no `stream_started` is emitted
    /// (its origin did that).
    pub fn relay(
        &self,
        name: StreamName,
        tracks: Vec<CodecParams>,
        layers: &[String],
        control: Arc<dyn PublisherControl>,
        origin: &str,
    ) -> Result<Arc<LiveStream>, PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::ShuttingDown);
        }
        let stream = Arc::new(
            self.new_stream(&name, tracks, layers, control)
                .relayed_from(origin),
        );
        {
            let mut streams = self.streams.lock();
            if streams.live.contains_key(&name) {
                return Err(PublishError::Busy(name.to_string()));
            }
            streams.live.insert(name, stream.clone());
        }
        tracing::info!(stream = %stream.name(), stream_id = stream.id(), origin, "relaying a stream of another node");
        self.changed.notify_waiters();
        Ok(stream)
    }

    /// Registers an observer of new streams.
    pub fn add_observer(&self, observer: Arc<dyn StreamObserver>) {
        self.observers.write().push(observer);
    }

    /// The live stream under `name`.
    pub fn get(&self, name: &StreamName) -> Option<Arc<LiveStream>> {
        self.streams.lock().live.get(name).cloned()
    }

    /// The event bus of this hub's streams.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Totals over every stream since start (ended and live), and the number
    /// of streams started.
    pub fn counters(&self) -> (StreamCounters, u64) {
        let streams = self.streams.lock();
        let mut c = streams.ended;
        for s in streams.live.values() {
            c += s.counters();
        }
        (c, streams.started)
    }

    /// The live streams (for per-stream figures).
    pub fn streams(&self) -> Vec<Arc<LiveStream>> {
        self.streams.lock().live.values().cloned().collect()
    }

    /// Waits up to `timeout` for a publisher to appear under `name`.
    pub async fn wait_for(&self, name: &StreamName, timeout: Duration) -> Option<Arc<LiveStream>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(s) = self.get(name) {
                return Some(s);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.get(name);
            }
        }
    }

    /// The publisher of `stream` left: remove it (if still registered) and end it.
    pub fn remove(&self, stream: &LiveStream, reason: &str) {
        self.unregister(stream);
        stream.end(reason);
        self.changed.notify_waiters();
    }

    /// Ends `stream` from outside its publisher (e.g. the name now belongs
    /// to another node): it leaves the registry if still there, its
    /// publisher is closed, and it ends with `reason`.
    pub fn end(&self, stream: &LiveStream, reason: &str) {
        self.unregister(stream);
        stream.close_publisher(reason);
        self.changed.notify_waiters();
    }

    /// Takes `stream` out of the registry if it is still the one under its
    /// name (a newer stream of the name stays).
    fn unregister(&self, stream: &LiveStream) {
        let mut streams = self.streams.lock();
        if streams
            .live
            .get(stream.name())
            .is_some_and(|s| s.id() == stream.id())
        {
            streams.take(stream.name());
        }
    }

    /// Snapshots of every live stream, sorted by name.
    pub fn list(&self) -> Vec<StreamInfo> {
        let streams = self.streams();
        let mut infos: Vec<StreamInfo> = streams.iter().map(|s| s.info()).collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// Number of live streams.
    pub fn len(&self) -> usize {
        self.streams.lock().live.len()
    }

    /// Whether nothing is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the hub refuses new publishers (shutting down).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Refuses new publishers and closes every current one (shutdown).
    pub fn close_all(&self) {
        self.closed.store(true, Ordering::Release);
        let all: Vec<Arc<LiveStream>> = {
            let mut streams = self.streams.lock();
            let names: Vec<StreamName> = streams.live.keys().cloned().collect();
            names.iter().filter_map(|n| streams.take(n)).collect()
        };
        for s in all {
            s.close_publisher("shutdown");
        }
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ViewerStart;
    use crate::media::frame::{Codec, Frame};
    use crate::stream::Want;
    use crate::stream::live::SinkKind;
    use crate::stream::sink::{SinkQueue, Wake};
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use std::time::Instant;

    #[derive(Default)]
    struct FakePublisher {
        keyframe_requests: AtomicUsize,
        closed: AtomicUsize,
        /// The layer of every keyframe request, in order.
        asked_layers: parking_lot::Mutex<Vec<crate::stream::LayerId>>,
    }
    impl PublisherControl for FakePublisher {
        fn request_keyframe(&self, layer: crate::stream::LayerId) {
            self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            self.asked_layers.lock().push(layer);
        }
        fn set_periodic_keyframes(&self, _on: bool) {}
        fn close(&self) {
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
    }
    struct NoWake;
    impl Wake for NoWake {
        fn wake(&self) {}
    }

    fn hub(start: ViewerStart) -> Hub {
        Hub::new(StreamPolicy {
            viewer_start: start,
            gop_cache_bytes: 1 << 20,
        })
    }

    fn tracks() -> Vec<CodecParams> {
        vec![
            CodecParams::new(Codec::Vp8, 90_000),
            CodecParams::new(Codec::Opus, 48_000),
        ]
    }

    /// Starts stream `name` on `hub` for `publisher` (no takeover).
    fn start(hub: &Hub, name: &str, publisher: Arc<FakePublisher>) -> Arc<LiveStream> {
        hub.publish(
            StreamName::parse(name).unwrap(),
            tracks(),
            &[],
            publisher,
            false,
        )
        .unwrap()
    }

    fn video(keyframe: bool, t: u64) -> Frame {
        Frame {
            params: CodecParams::new(Codec::Vp8, 90_000),
            keyframe,
            rtp_time: t,
            arrival: Instant::now(),
            sender_clock: None,
            after_loss: false,
            layer: 0,
            data: Arc::from(vec![1u8, 2, 3]),
            rtp_payloads: Vec::new(),
        }
    }

    #[test]
    fn second_publisher_is_refused_or_takes_over() {
        let hub = hub(ViewerStart::Fresh);
        let name = StreamName::parse("demo").unwrap();
        let first = Arc::new(FakePublisher::default());
        let s1 = hub
            .publish(name.clone(), tracks(), &[], first.clone(), false)
            .unwrap();
        let err = hub
            .publish(
                name.clone(),
                tracks(),
                &[],
                Arc::new(FakePublisher::default()),
                false,
            )
            .unwrap_err();
        assert_eq!(err, PublishError::Busy("demo".into()));
        let s2 = hub
            .publish(
                name.clone(),
                tracks(),
                &[],
                Arc::new(FakePublisher::default()),
                true,
            )
            .unwrap();
        assert!(s1.is_ended());
        assert_eq!(first.closed.load(Ordering::Relaxed), 1);
        assert_eq!(hub.get(&name).unwrap().id(), s2.id());
        // Removing the old stream must not remove the new one.
        hub.remove(&s1, "publisher_left");
        assert!(hub.get(&name).is_some());
        hub.remove(&s2, "publisher_left");
        assert!(hub.get(&name).is_none());
    }

    #[test]
    fn viewer_join_asks_for_keyframe_and_end_closes_queues() {
        let hub = hub(ViewerStart::Fresh);
        let publisher = Arc::new(FakePublisher::default());
        let s = start(&hub, "a", publisher.clone());
        let q = Arc::new(SinkQueue::new(16, Box::new(NoWake)));
        let sub = s.subscribe(SinkKind::Viewer, q.clone()).unwrap();
        assert_eq!(publisher.keyframe_requests.load(Ordering::Relaxed), 1);
        assert_eq!(s.sink_count(SinkKind::Viewer), 1);
        s.publish(video(false, 1));
        s.publish(video(true, 2));
        let mut out = vec![];
        q.drain(&mut out);
        assert_eq!(out.len(), 1, "starts at the keyframe");
        hub.remove(&s, "publisher_left");
        assert!(q.is_closed());
        assert!(s.subscribe(SinkKind::Viewer, q).is_none());
        s.unsubscribe(sub.id);
    }

    #[test]
    fn cached_start_replays_the_gop() {
        let hub = hub(ViewerStart::Cached);
        let publisher = Arc::new(FakePublisher::default());
        let s = start(&hub, "a", publisher.clone());
        s.publish(video(true, 1));
        s.publish(video(false, 2));
        s.publish(video(false, 3));
        let q = Arc::new(SinkQueue::new(16, Box::new(NoWake)));
        s.subscribe(SinkKind::Viewer, q.clone()).unwrap();
        let mut out = vec![];
        q.drain(&mut out);
        let times: Vec<u64> = out.iter().map(|f| f.rtp_time).collect();
        assert_eq!(times, vec![1, 2, 3]);
        assert_eq!(publisher.keyframe_requests.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_gop_cache_counts_the_rtp_payloads_it_holds() {
        let hub = Hub::new(StreamPolicy {
            viewer_start: ViewerStart::Cached,
            gop_cache_bytes: 100,
        });
        let publisher = Arc::new(FakePublisher::default());
        let s = start(&hub, "g", publisher.clone());
        // Two frames of 40 bytes fit in 100 bytes; with their pieces they do not.
        for (keyframe, t) in [(true, 1), (false, 2)] {
            let mut f = video(keyframe, t);
            f.data = Arc::from(vec![5u8; 40]);
            f.rtp_payloads = vec![Arc::from(vec![0u8; 41])];
            s.publish(f);
        }
        let q = Arc::new(SinkQueue::new(16, Box::new(NoWake)));
        s.subscribe(SinkKind::Viewer, q.clone()).unwrap();
        let mut out = vec![];
        q.drain(&mut out);
        assert!(out.is_empty(), "the oversized cache was dropped");
        assert_eq!(publisher.keyframe_requests.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn totals_keep_ended_streams_and_drops_per_sink_kind() {
        let hub = hub(ViewerStart::Fresh);
        let mut rx = hub.events().subscribe();
        let s = start(&hub, "t", Arc::new(FakePublisher::default()));
        // A recorder queue of 16 frames that nobody drains overflows.
        let q = Arc::new(SinkQueue::new(16, Box::new(NoWake)));
        let sub = s.subscribe(SinkKind::Recorder, q).unwrap();
        s.publish(video(true, 0));
        for t in 1..40 {
            s.publish(video(false, t));
        }
        let (live, started) = hub.counters();
        assert_eq!(started, 1);
        assert_eq!(live.frames_in, 40);
        assert_eq!(live.bytes_in, 120);
        assert!(live.dropped[SinkKind::Recorder.index()] > 0, "{live:?}");
        assert_eq!(live.dropped[SinkKind::Viewer.index()], 0);
        // The sink leaves, then the stream: nothing is forgotten.
        s.unsubscribe(sub.id);
        assert_eq!(hub.counters().0, live);
        hub.remove(&s, "publisher_left");
        assert_eq!(hub.counters().0, live);
        assert!(hub.is_empty());
        let kinds: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.event.kind())
            .collect();
        assert_eq!(kinds, ["stream_started", "stream_ended"]);
    }

    #[tokio::test]
    async fn wait_for_sees_a_later_publisher() {
        let hub = Arc::new(hub(ViewerStart::Fresh));
        let name = StreamName::parse("later").unwrap();
        let h = hub.clone();
        let n = name.clone();
        let waiter = tokio::spawn(async move { h.wait_for(&n, Duration::from_secs(10)).await });
        tokio::task::yield_now().await;
        hub.publish(
            name,
            tracks(),
            &[],
            Arc::new(FakePublisher::default()),
            false,
        )
        .unwrap();
        assert!(waiter.await.unwrap().is_some());
    }

    /// A simulcast stream of three layers (rids `h`, `l`, `m`: the names say
    /// nothing, the sizes do).
    fn simulcast(hub: &Hub, publisher: Arc<FakePublisher>) -> Arc<LiveStream> {
        let rids = ["h", "l", "m"].map(String::from);
        hub.publish(
            StreamName::parse("sim").unwrap(),
            tracks(),
            &rids,
            publisher,
            false,
        )
        .unwrap()
    }

    /// A VP8 frame of `layer` at `t`; a keyframe carries its picture size.
    fn layer_frame(layer: u8, keyframe: bool, t: u64) -> Frame {
        let (w, h): (u16, u16) = match layer {
            0 => (1280, 720),
            1 => (320, 180),
            _ => (640, 360),
        };
        let mut f = video(keyframe, t);
        f.layer = layer;
        if keyframe {
            let [w0, w1] = w.to_le_bytes();
            let [h0, h1] = h.to_le_bytes();
            f.data = Arc::from(vec![0, 0, 0, 0x9d, 0x01, 0x2a, w0, w1, h0, h1, 0]);
        }
        f
    }

    /// One picture on every layer at `t`.
    fn all_layers(s: &LiveStream, keyframe: bool, t: u64) {
        for l in 0..3 {
            s.publish(layer_frame(l, keyframe, t));
        }
    }

    fn drained(q: &SinkQueue) -> Vec<(u8, u64)> {
        let mut out = vec![];
        q.drain(&mut out);
        out.iter().map(|f| (f.layer, f.rtp_time)).collect()
    }

    #[test]
    fn simulcast_sinks_get_the_layer_they_want_and_switch_at_its_keyframe() {
        let hub = hub(ViewerStart::Fresh);
        let publisher = Arc::new(FakePublisher::default());
        let s = simulcast(&hub, publisher.clone());
        all_layers(&s, true, 0);
        let low = Arc::new(SinkQueue::new(64, Box::new(NoWake)));
        let top = Arc::new(SinkQueue::new(64, Box::new(NoWake)));
        let low_sub = s
            .subscribe_to(SinkKind::Viewer, low.clone(), Want::Low)
            .unwrap();
        s.subscribe_to(SinkKind::Recorder, top.clone(), Want::Top)
            .unwrap();
        // Each joining sink asked for a keyframe of its own layer.
        assert_eq!(*publisher.asked_layers.lock(), [1, 0]);
        all_layers(&s, true, 3000);
        all_layers(&s, false, 6000);
        assert_eq!(drained(&low), [(1, 3000), (1, 6000)]);
        assert_eq!(drained(&top), [(0, 3000), (0, 6000)]);
        assert_eq!(low_sub.layer.current(), Some(1));
        // The viewer wants the middle layer now: it stays on its own until
        // a keyframe of the middle one, which is asked for.
        low_sub.layer.set_want(Want::Mid);
        let asked = publisher.asked_layers.lock().len();
        for t in [9000, 10_000, 11_000] {
            all_layers(&s, false, t);
        }
        assert_eq!(drained(&low), [(1, 9000), (1, 10_000), (1, 11_000)]);
        // Asked once for the wait, not once per frame.
        assert_eq!(publisher.asked_layers.lock()[asked..], [2]);
        s.publish(layer_frame(2, true, 12_000));
        s.publish(layer_frame(1, false, 12_000));
        assert_eq!(
            drained(&low),
            [(2, 12_000)],
            "switched at the keyframe, nothing of the old layer after"
        );
        assert_eq!(low_sub.layer.current(), Some(2));
        assert_eq!(s.counters().layer_switches, 1);
        let layers = s.layers();
        let widths: Vec<Option<u32>> = layers.iter().map(|l| l.width).collect();
        assert_eq!(widths, [Some(320), Some(640), Some(1280)]);
        assert_eq!(s.video_size(), Some((1280, 720)));
    }

    #[test]
    fn sinks_of_a_paused_layer_move_to_the_nearest_live_one() {
        let hub = hub(ViewerStart::Fresh);
        let publisher = Arc::new(FakePublisher::default());
        let s = simulcast(&hub, publisher.clone());
        all_layers(&s, true, 0);
        let top = Arc::new(SinkQueue::new(64, Box::new(NoWake)));
        let sub = s
            .subscribe_to(SinkKind::Recorder, top.clone(), Want::Top)
            .unwrap();
        all_layers(&s, true, 3000);
        assert_eq!(drained(&top), [(0, 3000)]);
        // The top layer stops (the browser paused it): once it counts as
        // paused, the next keyframe of the middle layer takes over.
        std::thread::sleep(crate::stream::layers::PAUSED_AFTER + Duration::from_millis(50));
        s.publish(layer_frame(1, false, 6000));
        s.publish(layer_frame(2, false, 6000));
        assert_eq!(drained(&top), []);
        assert_eq!(
            publisher.asked_layers.lock().last(),
            Some(&2),
            "the middle layer is asked"
        );
        s.publish(layer_frame(2, true, 9000));
        assert_eq!(drained(&top), [(2, 9000)]);
        assert_eq!(sub.layer.current(), Some(2));
    }
}
