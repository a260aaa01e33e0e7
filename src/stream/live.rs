//! One live stream: the publisher's tracks, its sinks, and what it measures.
//!
//! The publisher's session calls [`LiveStream::publish`] for every frame; the
//! frame is wrapped in an `Arc` once and offered to every sink's own bounded
//! queue, so a slow sink never holds up the publisher or the other sinks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use super::sink::{Pushed, SinkQueue};
use crate::config::ViewerStart;
use crate::events::{Event, Events};
use crate::media::frame::{Codec, CodecParams, Frame, MediaKind};
use crate::media::probe;
use crate::names::StreamName;

/// What the hub may ask of a publisher's session, whatever engine runs it.
pub trait PublisherControl: Send + Sync {
    /// Ask the publisher for a keyframe (the session merges and throttles).
    fn request_keyframe(&self);
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
}

struct SinkEntry {
    id: u64,
    kind: SinkKind,
    queue: Arc<SinkQueue>,
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

/// Bytes and frames counted over one-second windows.
#[derive(Debug)]
struct Meter {
    window_start: Instant,
    bytes: u64,
    frames: u64,
    last_bps: f64,
    last_fps: f64,
    last_at: Instant,
}

impl Meter {
    fn new(now: Instant) -> Meter {
        Meter {
            window_start: now,
            bytes: 0,
            frames: 0,
            last_bps: 0.0,
            last_fps: 0.0,
            last_at: now,
        }
    }

    fn add(&mut self, now: Instant, bytes: usize, frames: u64) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            let secs = elapsed.as_secs_f64();
            self.last_bps = self.bytes as f64 * 8.0 / secs;
            self.last_fps = self.frames as f64 / secs;
            self.last_at = now;
            self.window_start = now;
            self.bytes = 0;
            self.frames = 0;
        }
        self.bytes += bytes as u64;
        self.frames += frames;
    }

    /// (bits per second, frames per second), zero when nothing flowed lately.
    fn rates(&self, now: Instant) -> (f64, f64) {
        if now.saturating_duration_since(self.last_at) > Duration::from_secs(3) {
            return (0.0, 0.0);
        }
        (self.last_bps, self.last_fps)
    }
}

#[derive(Default)]
struct KeyframeState {
    outstanding_since: Option<Instant>,
    /// Recent requests: whether each was answered within [`ANSWERED_WITHIN`].
    recent: std::collections::VecDeque<bool>,
    requests: u64,
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
    sinks: Mutex<Vec<SinkEntry>>,
    next_sink_id: AtomicU64,
    gop: Mutex<Gop>,
    video_size: Mutex<Option<(u32, u32)>>,
    meter_in: Mutex<Meter>,
    meter_video: Mutex<Meter>,
    meter_out: Mutex<Meter>,
    keyframes: Mutex<KeyframeState>,
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
}

impl std::ops::AddAssign for StreamCounters {
    fn add_assign(&mut self, o: StreamCounters) {
        self.frames_in += o.frames_in;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.keyframe_requests += o.keyframe_requests;
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
    /// A stream fed by a publisher whose negotiated tracks are `tracks`.
    pub fn new(
        id: u64,
        name: StreamName,
        tracks: Vec<CodecParams>,
        control: Arc<dyn PublisherControl>,
        policy: StreamPolicy,
        events: Events,
    ) -> LiveStream {
        let now = Instant::now();
        LiveStream {
            id,
            name,
            started_at: SystemTime::now(),
            started: now,
            tracks,
            control,
            policy,
            sinks: Mutex::new(Vec::new()),
            next_sink_id: AtomicU64::new(1),
            gop: Mutex::new(Gop::default()),
            video_size: Mutex::new(None),
            meter_in: Mutex::new(Meter::new(now)),
            meter_video: Mutex::new(Meter::new(now)),
            meter_out: Mutex::new(Meter::new(now)),
            keyframes: Mutex::new(KeyframeState::default()),
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

    /// Hands one frame from the publisher to every sink.
    pub fn publish(&self, frame: Frame) {
        if self.is_ended() {
            return;
        }
        let now = Instant::now();
        let frame = Arc::new(frame);
        let len = frame.data.len();
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        self.meter_in.lock().add(now, len, 1);
        let video = frame.kind() == MediaKind::Video;
        if video {
            self.meter_video.lock().add(now, len, 1);
            if frame.keyframe {
                self.on_keyframe(&frame, now);
            }
        }
        let mut want_keyframe = false;
        {
            // Cache and fan out under the sinks lock (order: sinks, then gop,
            // as in `subscribe`): a viewer joining now gets this frame either
            // from the cache or from the fan-out, never from both.
            let mut sinks = self.sinks.lock();
            self.cache(&frame, video);
            sinks.retain(|s| {
                let pushed = s.queue.push(&frame);
                want_keyframe |= pushed == Pushed::Overflow;
                if pushed == Pushed::Closed {
                    self.depart(s);
                }
                pushed != Pushed::Closed
            });
        }
        if want_keyframe {
            self.request_keyframe();
        }
    }

    fn on_keyframe(&self, frame: &Frame, now: Instant) {
        {
            let mut k = self.keyframes.lock();
            if let Some(since) = k.outstanding_since.take() {
                let answered = now.saturating_duration_since(since) <= ANSWERED_WITHIN;
                k.recent.push_back(answered);
                if k.recent.len() > 3 {
                    k.recent.pop_front();
                }
            }
        }
        let size = probe::picture_size(frame.params.codec, &frame.data);
        if size.is_some() {
            *self.video_size.lock() = size;
        }
    }

    fn cache(&self, frame: &Arc<Frame>, video: bool) {
        let mut gop = self.gop.lock();
        if video && frame.keyframe {
            gop.frames.clear();
            gop.bytes = 0;
            gop.valid = true;
            gop.keyframe_at = Some(Instant::now());
        }
        if !gop.valid {
            return;
        }
        gop.bytes += frame.held_bytes();
        if gop.bytes > self.policy.gop_cache_bytes {
            gop.frames.clear();
            gop.bytes = 0;
            gop.valid = false;
            return;
        }
        gop.frames.push(frame.clone());
    }

    /// Adds a consumer. A viewer starts at a keyframe: a fresh one asked of the
    /// publisher, or the cached group of pictures, as the policy says.
    pub fn subscribe(&self, kind: SinkKind, queue: Arc<SinkQueue>) -> Option<Subscription> {
        if self.is_ended() {
            return None;
        }
        let id = self.next_sink_id.fetch_add(1, Ordering::Relaxed);
        let has_video = self.track(MediaKind::Video).is_some();
        let periodic_before;
        let mut ask = false;
        {
            // Decided under the sinks lock, which every frame's fan-out
            // holds: a keyframe cannot slip between the decision and the
            // queue's joining.
            let mut sinks = self.sinks.lock();
            periodic_before = sinks.iter().any(|s| s.kind.needs_periodic_keyframes());
            if has_video {
                ask = match self.start_of_new_sink(Instant::now()) {
                    Start::Cache => {
                        let gop = self.gop.lock();
                        !(gop.valid && queue.prefill(&gop.frames))
                    }
                    Start::Wait => false,
                    Start::Ask => true,
                };
            }
            sinks.push(SinkEntry {
                id,
                kind,
                queue: queue.clone(),
            });
        }
        if self.is_ended() {
            // The publisher left while we subscribed; do not leave a queue behind.
            queue.close();
            self.unsubscribe(id);
            return None;
        }
        if ask {
            self.request_keyframe();
        }
        if kind.needs_periodic_keyframes() && !periodic_before {
            self.control.set_periodic_keyframes(true);
        }
        Some(Subscription { id, queue })
    }

    /// Removes a consumer; its queue is closed.
    pub fn unsubscribe(&self, id: u64) {
        let (removed, periodic_after) = {
            let mut sinks = self.sinks.lock();
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

    /// Asks the publisher for a keyframe (a viewer joined, lost packets or fell behind).
    pub fn request_keyframe(&self) {
        if self.is_ended() {
            return;
        }
        {
            let mut k = self.keyframes.lock();
            k.requests += 1;
            k.outstanding_since.get_or_insert_with(Instant::now);
        }
        self.control.request_keyframe();
    }

    /// How a sink joining at `now` gets its first keyframe (see [`Start`]).
    fn start_of_new_sink(&self, now: Instant) -> Start {
        match self.policy.viewer_start {
            ViewerStart::Fresh => Start::Ask,
            ViewerStart::Cached => Start::Cache,
            ViewerStart::Auto => {
                let (ignored, outstanding) = {
                    let k = self.keyframes.lock();
                    (k.publisher_ignores_requests(now), k.outstanding_since)
                };
                let age = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
                if ignored {
                    Start::Cache
                } else if age(outstanding).is_some_and(|a| a <= ANSWERED_WITHIN) {
                    Start::Wait
                } else if age(self.gop.lock().keyframe_at).is_some_and(|a| a <= FRESH_CACHE) {
                    Start::Cache
                } else {
                    Start::Ask
                }
            }
        }
    }

    /// The picture size of the latest video keyframe, once one was probed.
    pub fn video_size(&self) -> Option<(u32, u32)> {
        *self.video_size.lock()
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
            let mut sinks = self.sinks.lock();
            for s in sinks.iter() {
                self.depart(s);
            }
            for s in std::mem::take(&mut *sinks) {
                s.queue.close();
            }
        }
        {
            let mut gop = self.gop.lock();
            gop.frames.clear();
            gop.valid = false;
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
            let sinks = self.sinks.lock();
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
            keyframe_requests: self.keyframes.lock().requests,
            dropped,
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
        self.sinks
            .lock()
            .iter()
            .any(|s| s.kind.needs_periodic_keyframes())
    }

    /// Number of consumers of one kind.
    pub fn sink_count(&self, kind: SinkKind) -> usize {
        self.sinks.lock().iter().filter(|s| s.kind == kind).count()
    }

    /// A snapshot for the API.
    pub fn info(&self) -> StreamInfo {
        let now = Instant::now();
        let (bps_in, _) = self.meter_in.lock().rates(now);
        let (_, fps) = self.meter_video.lock().rates(now);
        let (bps_out, _) = self.meter_out.lock().rates(now);
        let size = *self.video_size.lock();
        let (dropped, skipped) = self.sinks.lock().iter().fold((0, 0), |(d, k), s| {
            (d + s.queue.dropped(), k + s.queue.skipped())
        });
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
            keyframe_requests: self.keyframes.lock().requests,
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
