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

    /// Claims `name` for a new publisher. With `takeover`, a current publisher
    /// is closed and its stream ended (its viewers' sessions close too).
    pub fn publish(
        &self,
        name: StreamName,
        tracks: Vec<CodecParams>,
        control: Arc<dyn PublisherControl>,
        takeover: bool,
    ) -> Result<Arc<LiveStream>, PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::ShuttingDown);
        }
        let stream = Arc::new(self.new_stream(&name, tracks, control));
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
        control: Arc<dyn PublisherControl>,
    ) -> LiveStream {
        LiveStream::new(
            self.next_id.fetch_add(1, Ordering::Relaxed),
            name.clone(),
            tracks,
            control,
            self.policy.clone(),
            self.events.clone(),
        )
    }

    /// Registers a stream relayed from the node `origin` under `name`: local
    /// viewers find it as any stream, but no observer (recorder, restreamer)
    /// hears of it and no `stream_started` is emitted (its origin did that).
    pub fn relay(
        &self,
        name: StreamName,
        tracks: Vec<CodecParams>,
        control: Arc<dyn PublisherControl>,
        origin: &str,
    ) -> Result<Arc<LiveStream>, PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::ShuttingDown);
        }
        let stream = Arc::new(self.new_stream(&name, tracks, control).relayed_from(origin));
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
    use crate::stream::live::SinkKind;
    use crate::stream::sink::{SinkQueue, Wake};
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    #[derive(Default)]
    struct FakePublisher {
        keyframe_requests: AtomicUsize,
        closed: AtomicUsize,
    }
    impl PublisherControl for FakePublisher {
        fn request_keyframe(&self) {
            self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
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
        hub.publish(StreamName::parse(name).unwrap(), tracks(), publisher, false)
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
            .publish(name.clone(), tracks(), first.clone(), false)
            .unwrap();
        let err = hub
            .publish(
                name.clone(),
                tracks(),
                Arc::new(FakePublisher::default()),
                false,
            )
            .unwrap_err();
        assert_eq!(err, PublishError::Busy("demo".into()));
        let s2 = hub
            .publish(
                name.clone(),
                tracks(),
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
        hub.publish(name, tracks(), Arc::new(FakePublisher::default()), false)
            .unwrap();
        assert!(waiter.await.unwrap().is_some());
    }
}
