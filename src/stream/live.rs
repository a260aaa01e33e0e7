//! One live stream: the publisher's tracks, its sinks, and what it measures.
//!
//! The publisher's session calls [`LiveStream::publish`] for every frame; the
//! frame is wrapped in an `Arc` once and offered to every sink's own bounded
//! queue, so a slow sink never holds up the publisher or the other sinks.
//!
//! A simulcast publisher sends its video as several layers (see
//! [`super::layers`]); each sink receives one of them at a time, the one its
//! [`LayerChoice`] resolves to, and moves to another at a keyframe of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use super::layers::{LayerChoice, LayerId, LayerInfo, LayerTable, Want};
use super::meter::Meter;
use super::sink::{Pushed, SinkQueue};
use crate::config::ViewerStart;
use crate::events::{Event, Events};
use crate::media::frame::{Codec, CodecParams, Frame, MediaKind};
use crate::media::probe;
use crate::names::StreamName;

/// What the hub may ask of a publisher's session, whatever engine runs it.
pub trait PublisherControl: Send + Sync {
    /// Ask the publisher for a keyframe of video layer `layer` (0 without
    /// simulcast); the session merges and throttles.
    fn request_keyframe(&self, layer: LayerId);
    /// Turn periodic keyframe requests on or off.
    fn set_periodic_keyframes(&self, on: bool);
    /// End the publisher's session (takeover, shutdown).
    fn close(&self);
}

/// The kinds of consumer a stream feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// A WHEP viewer.
    Viewer,
    /// A recording.
    Recorder,
    /// A restream target or HLS output.
    Restream,
}

impl SinkKind {
    /// Every kind, in the order of [`SinkKind::index`].
    pub const ALL: [SinkKind; 3] = [SinkKind::Viewer, SinkKind::Recorder, SinkKind::Restream];

    /// Position in [`SinkKind::ALL`] (for per-kind counters).
    pub fn index(self) -> usize {
        match self {
            SinkKind::Viewer => 0,
            SinkKind::Recorder => 1,
            SinkKind::Restream => 2,
        }
    }

    /// `viewer`, `recorder` or `restream` (metric labels).
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Viewer => "viewer",
            SinkKind::Recorder => "recorder",
            SinkKind::Restream => "restream",
        }
    }

    /// Sinks that cut files or segments need keyframes at regular intervals.
    fn needs_periodic_keyframes(self) -> bool {
        !matches!(self, SinkKind::Viewer)
    }
}

/// A consumer's handle on a stream: its queue and its id for unsubscribing.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Identifies the sink within its stream.
    pub id: u64,
    /// Frames for this sink.
    pub queue: Arc<SinkQueue>,
    /// Which video layer it wants and receives (simulcast streams).
    pub layer: Arc<LayerChoice>,
}

struct SinkEntry {
    id: u64,
    kind: SinkKind,
    queue: Arc<SinkQueue>,
    layer: Arc<LayerChoice>,
}

/// What the fan-out walks for every frame, under one lock: the sinks and
/// what decides which layer each gets.
struct Fanout {
    sinks: Vec<SinkEntry>,
    layers: LayerTable,
}

/// Stream-wide settings taken from the config.
#[derive(Debug, Clone)]
pub struct StreamPolicy {
    /// How new viewers start.
    pub viewer_start: ViewerStart,
    /// Largest cached group of pictures, in bytes held: the frames and their
    /// RTP payloads ([`Frame::held_bytes`]).
    pub gop_cache_bytes: usize,
}

#[derive(Default)]
struct Gop {
    frames: Vec<Arc<Frame>>,
    bytes: usize,
    valid: bool,
    /// When its keyframe arrived.
    keyframe_at: Option<Instant>,
}

impl Gop {
    /// Keeps `frame` (a video keyframe starts the group over); a group
    /// grown past `limit` bytes is given up until the next keyframe.
    fn add(&mut self, frame: &Arc<Frame>, video: bool, limit: usize) {
        if video && frame.keyframe {
            self.frames.clear();
            self.bytes = 0;
            self.valid = true;
            self.keyframe_at = Some(Instant::now());
        }
        if !self.valid {
            return;
        }
        self.bytes += frame.held_bytes();
        if self.bytes > limit {
            self.frames.clear();
            self.bytes = 0;
            self.valid = false;
            return;
        }
        self.frames.push(frame.clone());
    }
}

/// What the fan-out does with a simulcast video frame for one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    /// Hand it to the sink.
    deliver: bool,
    /// The sink moved to this frame's layer with it.
    switched: bool,
    /// The sink waits for a keyframe of this layer.
    ask: Option<LayerId>,
}

/// Routes one video frame of a simulcast stream for a sink choosing
/// `choice`: frames of the layer it is on pass; a keyframe of the layer it
/// wants moves it there; everything else is not for it.
fn route(choice: &LayerChoice, frame: &Frame, layers: &LayerTable, now: Instant) -> Route {
    let layer = frame.layer;
    let current = choice.current();
    let want = choice.want();
    if current.is_none() && want == Want::Top && !layers.settled(now) {
        // Which layer is the top one is not known yet.
        return Route {
            deliver: false,
            switched: false,
            ask: None,
        };
    }
    let target = layers.resolve(want);
    if current == Some(layer) {
        return Route {
            deliver: true,
            switched: false,
            ask: target.filter(|t| *t != layer),
        };
    }
    if target == Some(layer) && frame.keyframe {
        choice.set_current(layer);
        return Route {
            deliver: true,
            switched: current.is_some(),
            ask: None,
        };
    }
    Route {
        deliver: false,
        switched: false,
        ask: target.filter(|t| Some(*t) != current),
    }
}

/// Keyframe requests of one layer and how the publisher answers them.
#[derive(Default)]
struct KeyframeState {
    outstanding_since: Option<Instant>,
    /// The latest request (`outstanding_since` is the first unanswered one).
    last_request: Option<Instant>,
    /// Recent requests: whether each was answered within [`ANSWERED_WITHIN`].
    recent: std::collections::VecDeque<bool>,
}

impl KeyframeState {
    /// The publisher ignores keyframe requests: most recent ones went unanswered.
    fn publisher_ignores_requests(&self, now: Instant) -> bool {
        let overdue = self
            .outstanding_since
            .is_some_and(|t| now.saturating_duration_since(t) > IGNORED_AFTER);
        let missed = self.recent.iter().filter(|answered| !**answered).count();
        overdue || (self.recent.len() >= 2 && missed * 2 > self.recent.len())
    }
}

/// A publisher's live stream and its sinks.
pub struct LiveStream {
    id: u64,
    name: StreamName,
    started_at: SystemTime,
    started: Instant,
    tracks: Vec<CodecParams>,
    control: Arc<dyn PublisherControl>,
    policy: StreamPolicy,
    fanout: Mutex<Fanout>,
    next_sink_id: AtomicU64,
    /// The cached group of pictures of each layer.
    gops: Mutex<Vec<Gop>>,
    meter_in: Mutex<Meter>,
    meter_out: Mutex<Meter>,
    /// Per layer.
    keyframes: Mutex<Vec<KeyframeState>>,
    keyframe_requests: AtomicU64,
    layer_switches: AtomicU64,
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Frames dropped by sinks that have left, per [`SinkKind::index`]
    /// (updated under the `sinks` lock, so totals never go backwards).
    departed_dropped: [AtomicU64; 3],
    ended: AtomicBool,
    events: Events,
    /// Relayed from this origin node (a cluster pull), or `None`: published here.
    origin: Option<String>,
}

/// Running totals of a stream (or of every stream, see [`super::Hub::counters`]):
/// monotonic, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Frames received from publishers.
    pub frames_in: u64,
    /// Payload bytes received from publishers.
    pub bytes_in: u64,
    /// Payload bytes handed to viewers.
    pub bytes_out: u64,
    /// Keyframe requests made to publishers on behalf of sinks.
    pub keyframe_requests: u64,
    /// Frames dropped because a sink fell behind, per [`SinkKind::index`].
    pub dropped: [u64; 3],
    /// Sinks moved from one simulcast layer to another.
    pub layer_switches: u64,
}

impl std::ops::AddAssign for StreamCounters {
    fn add_assign(&mut self, o: StreamCounters) {
        self.frames_in += o.frames_in;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.keyframe_requests += o.keyframe_requests;
        self.layer_switches += o.layer_switches;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
            *a += b;
        }
    }
}

impl std::fmt::Debug for LiveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStream")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

impl LiveStream {
    /// A stream fed by a publisher whose negotiated tracks are `tracks`,
    /// its video in the simulcast layers `layers` (their rids, in the
    /// publisher's order; empty without simulcast).
    pub fn new(
        id: u64,
        name: StreamName,
        tracks: Vec<CodecParams>,
        layers: &[String],
        control: Arc<dyn PublisherControl>,
        policy: StreamPolicy,
        events: Events,
    ) -> LiveStream {
        let now = Instant::now();
        let table = LayerTable::new(layers, now);
        let count = table.len();
        LiveStream {
            id,
            name,
            started_at: SystemTime::now(),
            started: now,
            tracks,
            control,
            policy,
            fanout: Mutex::new(Fanout {
                sinks: Vec::new(),
                layers: table,
            }),
            next_sink_id: AtomicU64::new(1),
            gops: Mutex::new((0..count).map(|_| Gop::default()).collect()),
            meter_in: Mutex::new(Meter::new(now)),
            meter_out: Mutex::new(Meter::new(now)),
            keyframes: Mutex::new((0..count).map(|_| KeyframeState::default()).collect()),
            keyframe_requests: AtomicU64::new(0),
            layer_switches: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            departed_dropped: Default::default(),
            ended: AtomicBool::new(false),
            events,
            origin: None,
        }
    }

    /// The same stream, marked as relayed from the node `origin` (a pull in
    /// a cluster): not recorded or restreamed here, and its start and end
    /// are not this node's events.
    pub fn relayed_from(mut self, origin: &str) -> LiveStream {
        self.origin = Some(origin.to_string());
        self
    }

    /// The node this stream is relayed from; `None` when published here.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// Unique id of this stream within the process (a new publisher under the
    /// same name gets a new id).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The stream's name.
    pub fn name(&self) -> &StreamName {
        &self.name
    }

    /// The publisher's negotiated tracks.
    pub fn tracks(&self) -> &[CodecParams] {
        &self.tracks
    }

    /// The track of one kind, if the publisher sends it.
    pub fn track(&self, kind: MediaKind) -> Option<CodecParams> {
        self.tracks.iter().copied().find(|t| t.codec.kind() == kind)
    }

    /// Whether the publisher has left.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Hands one frame from the publisher to every sink (to those on its
    /// layer, for a simulcast stream's video).
    pub fn publish(&self, frame: Frame) {
        if self.is_ended() {
            return;
        }
        let now = Instant::now();
        let frame = Arc::new(frame);
        let len = frame.data.len();
        let layer = frame.layer;
        let video = frame.kind() == MediaKind::Video;
        let size = if video && frame.keyframe {
            self.on_keyframe(layer, now);
            probe::picture_size(frame.params.codec, &frame.data)
        } else {
            None
        };
        // Layers whose keyframe a sink needs: after an overflow, or to
        // switch to it.
        let (mut overflowed, mut switching) = (0u8, 0u8);
        {
            // Cache and fan out under the fan-out lock (order: fan-out, then
            // gops, as in `subscribe`): a viewer joining now gets this frame
            // either from the cache or from the fan-out, never from both.
            let mut fanout = self.fanout.lock();
            let Fanout { sinks, layers } = &mut *fanout;
            if usize::from(layer) >= layers.len() {
                return;
            }
            self.frames_in.fetch_add(1, Ordering::Relaxed);
            self.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
            self.meter_in.lock().add(now, len, 1);
            if video {
                layers.on_frame(layer, now, len, size);
            }
            self.cache(&frame, video);
            let simulcast = video && layers.is_simulcast();
            sinks.retain(|s| {
                if simulcast {
                    let route = route(&s.layer, &frame, layers, now);
                    if let Some(l) = route.ask {
                        switching |= 1 << l;
                    }
                    if route.switched {
                        self.layer_switches.fetch_add(1, Ordering::Relaxed);
                    }
                    if !route.deliver {
                        return true;
                    }
                }
                let pushed = s.queue.push(&frame);
                if pushed == Pushed::Overflow {
                    overflowed |= 1 << layer;
                }
                if pushed == Pushed::Closed {
                    self.depart(s);
                }
                pushed != Pushed::Closed
            });
        }
        for l in 0..crate::stream::layers::MAX_LAYERS as LayerId {
            // A switch asks once per outstanding request; an overflow always.
            let overflow = overflowed & (1 << l) != 0;
            let switch = switching & (1 << l) != 0 && !self.keyframe_outstanding(l, now);
            if overflow || switch {
                self.request_keyframe(l);
            }
        }
    }

    /// A keyframe of `layer` arrived: it answers the request outstanding.
    fn on_keyframe(&self, layer: LayerId, now: Instant) {
        let mut all = self.keyframes.lock();
        let Some(k) = all.get_mut(usize::from(layer)) else {
            return;
        };
        if let Some(since) = k.outstanding_since.take() {
            let answered = now.saturating_duration_since(since) <= ANSWERED_WITHIN;
            k.recent.push_back(answered);
            if k.recent.len() > 3 {
                k.recent.pop_front();
            }
        }
    }

    /// Whether a keyframe of `layer` was asked for lately and may still come
    /// (a sink waiting to switch asks again only after that).
    fn keyframe_outstanding(&self, layer: LayerId, now: Instant) -> bool {
        self.keyframes
            .lock()
            .get(usize::from(layer))
            .filter(|k| k.outstanding_since.is_some())
            .and_then(|k| k.last_request)
            .is_some_and(|t| now.saturating_duration_since(t) <= ANSWERED_WITHIN)
    }

    /// Keeps the frame in its layer's group of pictures (audio in every
    /// layer's: a sink starting on any layer gets the sound with it).
    fn cache(&self, frame: &Arc<Frame>, video: bool) {
        let mut gops = self.gops.lock();
        let limit = self.policy.gop_cache_bytes;
        if video {
            if let Some(gop) = gops.get_mut(usize::from(frame.layer)) {
                gop.add(frame, true, limit);
            }
        } else {
            for gop in gops.iter_mut() {
                gop.add(frame, false, limit);
            }
        }
    }

    /// Adds a consumer wanting the top video layer (see [`LiveStream::subscribe_to`]).
    pub fn subscribe(&self, kind: SinkKind, queue: Arc<SinkQueue>) -> Option<Subscription> {
        self.subscribe_to(kind, queue, Want::Top)
    }

    /// Adds a consumer of the video layer `want` resolves to (any want on a
    /// stream without simulcast). It starts at a keyframe: a fresh one asked
    /// of the publisher, or the cached group of pictures, as the policy says.
    pub fn subscribe_to(
        &self,
        kind: SinkKind,
        queue: Arc<SinkQueue>,
        want: Want,
    ) -> Option<Subscription> {
        if self.is_ended() {
            return None;
        }
        let id = self.next_sink_id.fetch_add(1, Ordering::Relaxed);
        let has_video = self.track(MediaKind::Video).is_some();
        let choice = Arc::new(LayerChoice::new(want));
        let periodic_before;
        let mut ask = None;
        {
            // Decided under the fan-out lock, which every frame's fan-out
            // holds: a keyframe cannot slip between the decision and the
            // queue's joining.
            let mut fanout = self.fanout.lock();
            periodic_before = fanout
                .sinks
                .iter()
                .any(|s| s.kind.needs_periodic_keyframes());
            if has_video {
                // No live layer yet: the first keyframe of the one it
                // resolves to starts the sink.
                let layer = fanout.layers.resolve(want).unwrap_or(0);
                ask = match self.start_of_new_sink(Instant::now(), layer) {
                    Start::Cache => {
                        let gops = self.gops.lock();
                        let started = gops
                            .get(usize::from(layer))
                            .is_some_and(|g| g.valid && queue.prefill(&g.frames));
                        if started {
                            choice.set_current(layer);
                        }
                        (!started).then_some(layer)
                    }
                    Start::Wait => None,
                    Start::Ask => Some(layer),
                };
            }
            fanout.sinks.push(SinkEntry {
                id,
                kind,
                queue: queue.clone(),
                layer: choice.clone(),
            });
        }
        if self.is_ended() {
            // The publisher left while we subscribed; do not leave a queue behind.
            queue.close();
            self.unsubscribe(id);
            return None;
        }
        if let Some(layer) = ask {
            self.request_keyframe(layer);
        }
        if kind.needs_periodic_keyframes() && !periodic_before {
            self.control.set_periodic_keyframes(true);
        }
        Some(Subscription {
            id,
            queue,
            layer: choice,
        })
    }

    /// Removes a consumer; its queue is closed.
    pub fn unsubscribe(&self, id: u64) {
        let (removed, periodic_after) = {
            let mut fanout = self.fanout.lock();
            let sinks = &mut fanout.sinks;
            let before = sinks.iter().any(|s| s.kind.needs_periodic_keyframes());
            let mut removed = None;
            sinks.retain(|s| {
                if s.id == id {
                    self.depart(s);
                    removed = Some(s.queue.clone());
                    false
                } else {
                    true
                }
            });
            let after = sinks.iter().any(|s| s.kind.needs_periodic_keyframes());
            (removed, before && !after)
        };
        if let Some(q) = removed {
            q.close();
        }
        if periodic_after && !self.is_ended() {
            self.control.set_periodic_keyframes(false);
        }
    }

    /// Asks the publisher for a keyframe of video layer `layer` (a viewer
    /// joined, lost packets, fell behind or switches layers).
    pub fn request_keyframe(&self, layer: LayerId) {
        if self.is_ended() {
            return;
        }
        {
            let mut all = self.keyframes.lock();
            let Some(k) = all.get_mut(usize::from(layer)) else {
                return;
            };
            let now = Instant::now();
            k.outstanding_since.get_or_insert(now);
            k.last_request = Some(now);
        }
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        self.control.request_keyframe(layer);
    }

    /// How a sink joining at `now` on `layer` gets its first keyframe (see [`Start`]).
    fn start_of_new_sink(&self, now: Instant, layer: LayerId) -> Start {
        match self.policy.viewer_start {
            ViewerStart::Fresh => Start::Ask,
            ViewerStart::Cached => Start::Cache,
            ViewerStart::Auto => {
                let (ignored, outstanding) = {
                    let all = self.keyframes.lock();
                    match all.get(usize::from(layer)) {
                        Some(k) => (k.publisher_ignores_requests(now), k.outstanding_since),
                        None => (false, None),
                    }
                };
                let age = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
                let cached_at = self
                    .gops
                    .lock()
                    .get(usize::from(layer))
                    .and_then(|g| g.keyframe_at);
                if ignored {
                    Start::Cache
                } else if age(outstanding).is_some_and(|a| a <= ANSWERED_WITHIN) {
                    Start::Wait
                } else if age(cached_at).is_some_and(|a| a <= FRESH_CACHE) {
                    Start::Cache
                } else {
                    Start::Ask
                }
            }
        }
    }

    /// The top video layer's latest keyframe and the video frames cached
    /// after it, in order (at most `max` frames), with when that keyframe
    /// arrived; `None` before the first keyframe, or while the group of
    /// pictures is too big to cache. Cheap: clones `Arc`s under the lock.
    pub fn latest_pictures(&self, max: usize) -> Option<(Instant, Vec<Arc<Frame>>)> {
        let top = self.resolve_layer(Want::Top).unwrap_or(0);
        let gops = self.gops.lock();
        let gop = gops.get(usize::from(top))?;
        let at = gop.keyframe_at?;
        if !gop.valid {
            return None;
        }
        let frames: Vec<Arc<Frame>> = gop
            .frames
            .iter()
            .filter(|f| f.kind() == MediaKind::Video && f.layer == top)
            .take(max)
            .cloned()
            .collect();
        (!frames.is_empty()).then_some((at, frames))
    }

    /// The picture size of the top video layer's latest keyframe, once one
    /// was probed.
    pub fn video_size(&self) -> Option<(u32, u32)> {
        let fanout = self.fanout.lock();
        let top = fanout.layers.resolve(Want::Top).unwrap_or(0);
        fanout.layers.size(top)
    }

    /// The layer a sink wanting `want` is on now (`None` while no layer is
    /// live).
    pub fn resolve_layer(&self, want: Want) -> Option<LayerId> {
        self.fanout.lock().layers.resolve(want)
    }

    /// The simulcast layers, smallest first (empty without simulcast).
    pub fn layers(&self) -> Vec<LayerInfo> {
        let fanout = self.fanout.lock();
        if fanout.layers.is_simulcast() {
            fanout.layers.infos(Instant::now())
        } else {
            Vec::new()
        }
    }

    /// The live simulcast layers, smallest first, with their bitrates (bits
    /// per second); empty without simulcast.
    pub fn live_layer_rates(&self) -> Vec<(LayerId, f64)> {
        let fanout = self.fanout.lock();
        if fanout.layers.is_simulcast() {
            fanout.layers.live_rates(Instant::now())
        } else {
            Vec::new()
        }
    }

    /// The index of the simulcast layer named `rid`.
    pub fn layer_by_rid(&self, rid: &str) -> Option<LayerId> {
        let fanout = self.fanout.lock();
        if fanout.layers.is_simulcast() {
            fanout.layers.by_rid(rid)
        } else {
            None
        }
    }

    /// The rid of simulcast layer `layer` (`None` without simulcast).
    pub fn layer_rid(&self, layer: LayerId) -> Option<String> {
        let fanout = self.fanout.lock();
        if !fanout.layers.is_simulcast() {
            return None;
        }
        fanout.layers.rid(layer).map(str::to_string)
    }

    /// Whether the publisher sends several video layers.
    pub fn is_simulcast(&self) -> bool {
        self.fanout.lock().layers.is_simulcast()
    }

    /// Bytes received from the publisher so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Counts bytes a sink sent onward (for the outgoing bitrate).
    pub fn add_bytes_out(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        self.meter_out.lock().add(Instant::now(), bytes, 0);
    }

    /// Keeps a leaving sink's drops in the stream's totals (call under the `sinks` lock).
    fn depart(&self, s: &SinkEntry) {
        self.departed_dropped[s.kind.index()].fetch_add(s.queue.dropped(), Ordering::Relaxed);
    }

    /// The publisher left (`reason`, as `stream_ended` says it:
    /// `publisher_left`, `replaced`, `ended_by_operator`, …): every sink's
    /// queue is closed and consumers are told.
    pub fn end(&self, reason: &str) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut fanout = self.fanout.lock();
            for s in fanout.sinks.iter() {
                self.depart(s);
            }
            for s in std::mem::take(&mut fanout.sinks) {
                s.queue.close();
            }
        }
        {
            for gop in self.gops.lock().iter_mut() {
                gop.frames.clear();
                gop.valid = false;
            }
        }
        let c = self.counters();
        let duration_secs = round1(self.started.elapsed().as_secs_f64());
        tracing::info!(
            stream = %self.name,
            stream_id = self.id,
            duration_secs,
            frames_in = c.frames_in,
            bytes_in = c.bytes_in,
            bytes_out = c.bytes_out,
            dropped_viewer = c.dropped[0],
            dropped_recorder = c.dropped[1],
            dropped_restream = c.dropped[2],
            keyframe_requests = c.keyframe_requests,
            reason,
            "stream ended"
        );
        if self.origin.is_some() {
            // A relay ending is not the stream ending (its origin says that).
            return;
        }
        self.events.emit(Event::StreamEnded {
            stream: self.name.to_string(),
            stream_id: self.id,
            reason: reason.to_string(),
            duration_secs,
            frames_in: c.frames_in,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
        });
    }

    /// The event bus this stream reports to (viewer sessions, recordings and
    /// restream targets of this stream emit on it too).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The stream's running totals (drops include sinks that have left).
    pub fn counters(&self) -> StreamCounters {
        let mut dropped = [0u64; 3];
        {
            let fanout = self.fanout.lock();
            let sinks = &fanout.sinks;
            for (i, d) in dropped.iter_mut().enumerate() {
                *d = self.departed_dropped[i].load(Ordering::Relaxed);
            }
            for s in sinks.iter() {
                dropped[s.kind.index()] += s.queue.dropped();
            }
        }
        StreamCounters {
            frames_in: self.frames_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
            dropped,
            layer_switches: self.layer_switches.load(Ordering::Relaxed),
        }
    }

    /// Closes the publisher's session and ends the stream (`reason`:
    /// `replaced` on a takeover, `shutdown`).
    pub fn close_publisher(&self, reason: &str) {
        self.control.close();
        self.end(reason);
    }

    /// Whether a sink that needs regular keyframes is attached.
    pub fn wants_periodic_keyframes(&self) -> bool {
        self.fanout
            .lock()
            .sinks
            .iter()
            .any(|s| s.kind.needs_periodic_keyframes())
    }

    /// Number of consumers of one kind.
    pub fn sink_count(&self, kind: SinkKind) -> usize {
        self.fanout
            .lock()
            .sinks
            .iter()
            .filter(|s| s.kind == kind)
            .count()
    }

    /// A snapshot for the API.
    pub fn info(&self) -> StreamInfo {
        let now = Instant::now();
        let (bps_in, _) = self.meter_in.lock().rates(now);
        let (bps_out, _) = self.meter_out.lock().rates(now);
        let (size, fps, layers, dropped, skipped) = {
            let fanout = self.fanout.lock();
            let infos = fanout.layers.infos(now);
            let top = fanout.layers.resolve(Want::Top).unwrap_or(0);
            let top = infos.iter().find(|l| l.id == top);
            let size = top.and_then(|l| l.width.zip(l.height));
            let fps = top.map_or(0.0, |l| l.fps);
            let layers = if fanout.layers.is_simulcast() {
                infos
            } else {
                Vec::new()
            };
            let (dropped, skipped) = fanout.sinks.iter().fold((0, 0), |(d, k), s| {
                (d + s.queue.dropped(), k + s.queue.skipped())
            });
            (size, fps, layers, dropped, skipped)
        };
        StreamInfo {
            node: self.origin.clone(),
            name: self.name.to_string(),
            id: self.id,
            started_at: humantime::format_rfc3339_seconds(self.started_at).to_string(),
            uptime_secs: round1(now.saturating_duration_since(self.started).as_secs_f64()),
            video: self.track(MediaKind::Video).map(|p| VideoInfo {
                codec: p.codec,
                width: size.map(|s| s.0),
                height: size.map(|s| s.1),
                fps: round1(fps),
                profile_level_id: p.profile_level_id.map(|v| format!("{v:06x}")),
            }),
            audio: self.track(MediaKind::Audio).map(|p| AudioInfo {
                codec: p.codec,
                clock_rate: p.clock_rate,
                channels: p.channels,
            }),
            bitrate_in_kbps: round1(bps_in / 1000.0),
            bitrate_out_kbps: round1(bps_out / 1000.0),
            viewers: self.sink_count(SinkKind::Viewer),
            frames_in: self.frames_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            frames_dropped: dropped,
            frames_skipped: skipped,
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
            layer_switches: self.layer_switches.load(Ordering::Relaxed),
            layers,
        }
    }
}

/// How a new sink gets its first keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// From the cached group of pictures, at once (asking if it does not fit).
    Cache,
    /// The keyframe a request still outstanding will bring (asking again
    /// would only be merged, or dropped by the browser).
    Wait,
    /// Ask the publisher for a fresh keyframe.
    Ask,
}

/// In `auto`, a cached group of pictures whose keyframe is at most this old
/// starts a new viewer at once: the burst is short (8 frames at 30 fps, which
/// the viewer decodes before it shows the newest), and a fresh request now
/// would fall within the pacing interval (libwebrtc drops a request within
/// 300 ms of the last one), so the viewer would wait out the interval and an
/// encode instead. (500 ms measured worse: the longer burst's decoding cost
/// more than the wait it saved; BENCHMARKS.md.)
const FRESH_CACHE: Duration = Duration::from_millis(250);

/// A request unanswered this long means the publisher ignores keyframe requests.
const IGNORED_AFTER: Duration = Duration::from_millis(1500);

/// Browsers answer a keyframe request within a round trip and an encode
/// (~100–200 ms); a keyframe later than this was the publisher's own schedule.
const ANSWERED_WITHIN: Duration = Duration::from_millis(350);

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// What `GET /api/streams` says about one stream.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// In a cluster: the id of the node that carries the stream (its
    /// origin); absent on a single node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Process-unique id; changes when a new publisher takes the name.
    pub id: u64,
    /// When the publisher arrived (RFC 3339, UTC).
    pub started_at: String,
    /// Seconds since then.
    pub uptime_secs: f64,
    /// The video track, if any.
    pub video: Option<VideoInfo>,
    /// The audio track, if any.
    pub audio: Option<AudioInfo>,
    /// Incoming media bitrate over the last second.
    pub bitrate_in_kbps: f64,
    /// Outgoing media bitrate to all viewers over the last second.
    pub bitrate_out_kbps: f64,
    /// Connected WHEP viewers.
    pub viewers: usize,
    /// Frames received from the publisher.
    pub frames_in: u64,
    /// Payload bytes received from the publisher.
    pub bytes_in: u64,
    /// Payload bytes handed to viewers.
    pub bytes_out: u64,
    /// Frames dropped for current sinks that could not keep up.
    pub frames_dropped: u64,
    /// Video frames current sinks passed over while waiting for a keyframe.
    pub frames_skipped: u64,
    /// Keyframe requests made to the publisher on behalf of sinks.
    pub keyframe_requests: u64,
    /// Sinks moved from one simulcast layer to another.
    #[serde(default)]
    pub layer_switches: u64,
    /// A simulcast publisher's video layers, smallest first (absent without
    /// simulcast).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerInfo>,
}

/// Video track details.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct VideoInfo {
    /// Codec.
    pub codec: Codec,
    /// Coded width from the last keyframe.
    pub width: Option<u32>,
    /// Coded height from the last keyframe.
    pub height: Option<u32>,
    /// Frames per second over the last second.
    pub fps: f64,
    /// H.264 profile-level-id, hex.
    pub profile_level_id: Option<String>,
}

/// Audio track details.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AudioInfo {
    /// Codec.
    pub codec: Codec,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Channels as negotiated.
    pub channels: Option<u8>,
}
