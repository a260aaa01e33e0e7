//! One restream target: its bounded packet queue, its state, and the thread
//! that connects, pushes, and retries with exponential backoff.
//!
//! States: `starting` (connecting, or waiting for the first keyframe) →
//! `live` (header sent, packets flowing) → on an error `retrying` (with the
//! next attempt time and the error) → `starting` … ; `stopped` when removed or
//! when the stream ends; `failed` on an error retrying cannot fix. Every
//! (re)connection starts at a video keyframe, with timestamps from zero.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::RestreamError;
use super::output::{AudioSetup, Interrupt, MuxOutput, OutputOptions, VideoSetup};
use super::url::TargetUrl;
use crate::events::{Event, Events};
use crate::outbound::OutboundPolicy;
use crate::stream::{Doorbell, Keyed, KeyframeQueue, Popped};

/// One packet ready for the FLV muxer, shared by every target of a stream.
#[derive(Debug, Clone)]
pub enum OutPacket {
    /// An H.264 access unit (Annex-B), passed through.
    Video {
        /// µs on the stream timeline.
        us: i64,
        /// IDR access unit.
        keyframe: bool,
        /// The publisher's bytes, not copied.
        data: Arc<[u8]>,
        /// Parameter sets in force.
        setup: Arc<VideoSetup>,
        /// When the frame arrived at the gateway (for the latency figure).
        arrival: Instant,
    },
    /// An AAC frame from the stream's shared encoder.
    Audio {
        /// µs on the stream timeline.
        us: i64,
        /// Duration in µs.
        dur_us: i64,
        /// Raw AAC.
        data: Arc<[u8]>,
    },
}

impl OutPacket {
    /// µs on the stream timeline.
    pub fn us(&self) -> i64 {
        match self {
            OutPacket::Video { us, .. } | OutPacket::Audio { us, .. } => *us,
        }
    }

    /// The parameter sets in force, for a video packet.
    pub fn video_setup(&self) -> Option<Arc<VideoSetup>> {
        match self {
            OutPacket::Video { setup, .. } => Some(setup.clone()),
            OutPacket::Audio { .. } => None,
        }
    }
}

impl Keyed for OutPacket {
    fn is_video(&self) -> bool {
        matches!(self, OutPacket::Video { .. })
    }

    fn is_keyframe(&self) -> bool {
        matches!(self, OutPacket::Video { keyframe: true, .. })
    }
}

/// An output's bounded queue (an RTMP target's, or HLS's): the stream's
/// pipeline never waits on it. On overflow everything queued is dropped
/// (and counted) and the queue resumes at the next keyframe; the output's
/// thread waits on it with a [`Doorbell`].
pub struct TargetQueue {
    queue: KeyframeQueue<OutPacket>,
    bell: Arc<Doorbell>,
    /// Why the stream's pipeline could not feed this queue (it is closed).
    failure: Mutex<Option<String>>,
}

/// What [`TargetQueue::pop`] found.
#[derive(Debug)]
pub enum Pop {
    /// A packet.
    Packet(Arc<OutPacket>),
    /// Nothing within the wait.
    Empty,
    /// The queue was closed (target removed or stream ended).
    Closed,
}

impl TargetQueue {
    /// A queue of at most `capacity` packets; with `has_video` it starts at
    /// a keyframe, audio included (an output begins with a picture).
    pub fn new(capacity: usize, has_video: bool) -> TargetQueue {
        let bell = Doorbell::new();
        TargetQueue {
            queue: KeyframeQueue::new(capacity.max(16), Box::new(bell.clone()))
                .holding_audio(has_video),
            bell,
            failure: Mutex::new(None),
        }
    }

    /// Offers a packet; never blocks beyond a short lock.
    pub fn push(&self, p: &Arc<OutPacket>) {
        let _ = self.queue.push(p);
    }

    /// Waits up to `wait` for a packet.
    pub fn pop(&self, wait: Duration) -> Pop {
        let deadline = Instant::now() + wait;
        loop {
            match self.queue.pop() {
                Popped::Item(p) => return Pop::Packet(p),
                Popped::Closed => return Pop::Closed,
                Popped::Empty => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Pop::Empty;
            }
            self.bell.wait(deadline - now);
        }
    }

    /// The next packet, however long it takes; `None` once the queue is closed.
    pub fn next(&self) -> Option<Arc<OutPacket>> {
        loop {
            match self.pop(Duration::from_millis(500)) {
                Pop::Packet(p) => return Some(p),
                Pop::Empty => continue,
                Pop::Closed => return None,
            }
        }
    }

    /// Waits up to `wait` unless the queue is closed first; true if closed.
    pub fn wait_closed(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while !self.queue.is_closed() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.bell.wait(deadline - now);
        }
        true
    }

    /// Stops or resumes taking packets; resuming starts at the next keyframe.
    pub fn set_accepting(&self, on: bool) {
        self.queue.set_accepting(on);
    }

    /// No more packets; wakes the target.
    pub fn close(&self) {
        self.queue.close();
    }

    /// Closes the queue because its source failed (e.g. the stream's video
    /// cannot be transcoded): the output ends in state `failed` with `reason`.
    pub fn fail(&self, reason: &str) {
        self.lock_failure()
            .get_or_insert_with(|| reason.to_string());
        self.queue.close();
    }

    fn lock_failure(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the source failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.lock_failure().clone()
    }

    /// Whether closed.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Packets dropped because the target fell behind.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }
}

/// The parameter sets to announce with this video packet: those of a
/// keyframe that differ from the ones in force (`current`, then updated).
pub fn new_parameter_sets<'a>(
    current: &mut Option<Arc<VideoSetup>>,
    keyframe: bool,
    setup: &'a Arc<VideoSetup>,
) -> Option<&'a [u8]> {
    match current {
        Some(c) if keyframe && c.extradata != setup.extradata => {
            *current = Some(setup.clone());
            Some(setup.extradata.as_slice())
        }
        _ => None,
    }
}

/// A time as the API shows it (RFC 3339, seconds).
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Where a target came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `POST /api/streams/{name}/restreams`.
    Api,
    /// A standing target of `[restream]` in the config.
    Config,
}

/// A target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = TargetState)]
pub enum State {
    /// Waiting for a keyframe or connecting.
    Starting,
    /// Connected and sending.
    Live,
    /// The last attempt failed; the next one is scheduled.
    Retrying,
    /// Given up: an error retrying cannot fix.
    Failed,
    /// Removed, or the stream ended.
    Stopped,
}

impl State {
    /// Every state (metric labels).
    pub const ALL: [State; 5] = [
        State::Starting,
        State::Live,
        State::Retrying,
        State::Failed,
        State::Stopped,
    ];

    /// The lowercase name, as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Live => "live",
            State::Retrying => "retrying",
            State::Failed => "failed",
            State::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone)]
struct Status {
    state: State,
    error: Option<String>,
    next_attempt: Option<SystemTime>,
    attempts: u32,
    connections: u32,
    bytes_done: u64,
    bytes_now: u64,
    video_frames: u64,
    audio_frames: u64,
    live_since: Option<Instant>,
    bitrate_bps: u64,
    rate_mark: Option<(Instant, u64)>,
    latency_us: Option<u64>,
    stopped_at: Option<Instant>,
}

/// A target as the API shows it. The URL is masked: the stream key never leaves.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TargetInfo {
    /// Target id (unique in the process).
    pub id: String,
    /// Stream name.
    pub stream: String,
    /// `rtmp://host/app/****`.
    pub url: String,
    /// Free-form label given when added.
    pub label: Option<String>,
    /// `api` or `config`.
    pub source: Source,
    /// Current state.
    pub state: State,
    /// Last error (kept while retrying; the reason when failed).
    pub error: Option<String>,
    /// When the next attempt happens (RFC 3339), while retrying.
    pub next_attempt_at: Option<String>,
    /// Seconds until the next attempt, while retrying.
    pub next_attempt_in_secs: Option<f64>,
    /// Connection attempts so far.
    pub attempts: u32,
    /// Successful connections so far (more than one means it reconnected).
    pub connections: u32,
    /// Bytes sent over all connections.
    pub bytes_sent: u64,
    /// Video + audio frames sent.
    pub frames_sent: u64,
    /// Video frames sent.
    pub video_frames: u64,
    /// Audio (AAC) frames sent.
    pub audio_frames: u64,
    /// Packets dropped because the network was slower than the stream.
    pub dropped: u64,
    /// Outgoing bitrate over the last seconds.
    pub bitrate_bps: u64,
    /// Seconds live on the current connection.
    pub uptime_secs: Option<f64>,
    /// Milliseconds from a video frame's arrival at the gateway to its
    /// hand-off to the network (smoothed), while live.
    pub latency_ms: Option<f64>,
    /// When the target was added (RFC 3339).
    pub created_at: String,
}

/// How targets connect and retry.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    /// FFmpeg `rw_timeout` in µs.
    pub rw_timeout_us: i64,
    /// CA file for `rtmps://`.
    pub ca_file: String,
    /// First retry delay.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Time allowed for a clean end (trailer) before I/O is abandoned.
    pub stop_grace: Duration,
}

/// One target: owned by the [`super::Restreamer`], run by its own thread.
pub struct Target {
    /// Target id.
    pub id: String,
    /// Stream name.
    pub stream: String,
    /// Id of the stream instance it belongs to.
    pub stream_id: u64,
    url: TargetUrl,
    /// The rule every connection's address is checked against (`None`:
    /// an operator's target, from the config or allowed by name).
    outbound: Option<Arc<OutboundPolicy>>,
    label: Option<String>,
    source: Source,
    created: SystemTime,
    status: Mutex<Status>,
    /// The target's packets.
    pub queue: Arc<TargetQueue>,
    interrupt: Arc<Interrupt>,
    thread: super::worker::Worker,
    /// Keeps the stream key masked in FFmpeg's log messages.
    _secret: crate::ffmpeg_log::SecretGuard,
    /// Set when an operator ended its stream: not to be resumed.
    ended_by_operator: AtomicBool,
    events: Option<Events>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("id", &self.id)
            .field("url", &self.url)
            .finish()
    }
}

impl Target {
    /// A target in state `starting`, not yet running.
    pub fn new(
        id: String,
        stream: String,
        stream_id: u64,
        url: TargetUrl,
        label: Option<String>,
        source: Source,
        queue: Arc<TargetQueue>,
    ) -> Target {
        Target {
            _secret: crate::ffmpeg_log::register_secret(url.secret()),
            id,
            stream,
            stream_id,
            url,
            outbound: None,
            label,
            source,
            created: SystemTime::now(),
            status: Mutex::new(Status {
                state: State::Starting,
                error: None,
                next_attempt: None,
                attempts: 0,
                connections: 0,
                bytes_done: 0,
                bytes_now: 0,
                video_frames: 0,
                audio_frames: 0,
                live_since: None,
                bitrate_bps: 0,
                rate_mark: None,
                latency_us: None,
                stopped_at: None,
            }),
            queue,
            interrupt: Arc::new(Interrupt::default()),
            thread: super::worker::Worker::default(),
            events: None,
            ended_by_operator: AtomicBool::new(false),
        }
    }

    /// Checks the address of every connection against `policy`.
    pub fn with_outbound(mut self, policy: Option<Arc<OutboundPolicy>>) -> Target {
        self.outbound = policy;
        self
    }

    /// Announces state changes on `events`.
    pub fn with_events(mut self, events: Events) -> Target {
        self.events = Some(events);
        self
    }

    /// Moves to `state` (call with the status locked, error already set);
    /// a change is announced as a `restream_state` event.
    fn transition(&self, s: &mut Status, state: State) {
        if s.state == state {
            return;
        }
        s.state = state;
        let Some(events) = &self.events else { return };
        events.emit(Event::RestreamState {
            stream: self.stream.clone(),
            target_id: self.id.clone(),
            url: self.url.masked().to_string(),
            state: state.name().to_string(),
            error: s.error.clone(),
        });
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The masked URL.
    pub fn masked_url(&self) -> &str {
        self.url.masked()
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.status().state
    }

    /// An API target that follows its stream's name to the name's next
    /// stream (same id, same URL), asked when that next stream starts, so
    /// this target's stream is over: it ended less than `within` ago, or is
    /// ending right now (the target still runs, as after a takeover, and
    /// closes its connection first). Not a failed one, nor one an operator
    /// ended.
    pub fn resumable(&self, within: Duration) -> bool {
        let s = self.status();
        if self.source != Source::Api || self.ended_by_operator.load(Ordering::Acquire) {
            return false;
        }
        match s.state {
            State::Stopped => s.stopped_at.is_some_and(|t| t.elapsed() <= within),
            State::Failed => false,
            State::Starting | State::Live | State::Retrying => true,
        }
    }

    /// Marks the target as ended on purpose (its stream was ended by an
    /// operator): it is not resumed on the name's next stream.
    pub fn end_for_good(&self) {
        self.ended_by_operator.store(true, Ordering::Release);
    }

    /// URL and label, to start the same target again on a new stream.
    pub fn resume_parts(&self) -> (TargetUrl, Option<String>) {
        (self.url.clone(), self.label.clone())
    }

    /// What the API shows.
    pub fn info(&self) -> TargetInfo {
        let s = self.status().clone();
        let now = SystemTime::now();
        let retrying = s.state == State::Retrying;
        TargetInfo {
            id: self.id.clone(),
            stream: self.stream.clone(),
            url: self.url.masked().to_string(),
            label: self.label.clone(),
            source: self.source,
            state: s.state,
            error: s.error.clone(),
            next_attempt_at: s.next_attempt.filter(|_| retrying).map(rfc3339),
            next_attempt_in_secs: s.next_attempt.filter(|_| retrying).map(|t| {
                t.duration_since(now)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0)
            }),
            attempts: s.attempts,
            connections: s.connections,
            bytes_sent: s.bytes_done + s.bytes_now,
            frames_sent: s.video_frames + s.audio_frames,
            video_frames: s.video_frames,
            audio_frames: s.audio_frames,
            dropped: self.queue.dropped(),
            bitrate_bps: if s.state == State::Live {
                s.bitrate_bps
            } else {
                0
            },
            uptime_secs: s
                .live_since
                .filter(|_| s.state == State::Live)
                .map(|t| t.elapsed().as_secs_f64()),
            latency_ms: s
                .latency_us
                .filter(|_| s.state == State::Live)
                .map(|us| us as f64 / 1000.0),
            created_at: rfc3339(self.created),
        }
    }

    /// Asks the target to stop: it ends its stream cleanly, and any I/O
    /// still blocked after `grace` is abandoned.
    pub fn stop(&self, grace: Duration) {
        self.queue.close();
        self.interrupt.set_deadline(grace);
    }

    /// Abandons all I/O at once.
    pub fn abort(&self) {
        self.queue.close();
        self.interrupt.abort();
    }

    /// Stores the thread running this target.
    pub fn set_thread(&self, h: JoinHandle<()>) {
        self.thread.set(h);
    }

    /// Whether its thread has ended (or never started).
    pub fn finished(&self) -> bool {
        self.thread.finished()
    }

    /// Joins its thread (blocks until the target has stopped).
    pub fn join(&self) {
        self.thread.join();
    }
}

/// The target thread: connect, push, retry until stopped.
pub fn run(
    t: Arc<Target>,
    audio: Arc<OnceLock<Option<Arc<AudioSetup>>>>,
    settings: TargetSettings,
    predecessor: Option<Arc<Target>>,
) {
    if let Some(prev) = predecessor {
        // The same push resumed on a new stream (takeover, a publisher's
        // reconnect): the old connection closes first, since platforms
        // refuse a second push on one key. It ends within its stop grace;
        // this thread owns it now and reaps it.
        let deadline = Instant::now() + settings.stop_grace * 3;
        while !prev.finished() && Instant::now() < deadline && !t.queue.is_closed() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if prev.finished() {
            prev.join();
        } else {
            prev.abort();
        }
    }
    let mut backoff = settings.backoff_min;
    let mut first = true;
    loop {
        {
            let mut s = t.status();
            s.next_attempt = None;
            t.transition(&mut s, State::Starting);
        }
        if !std::mem::take(&mut first) {
            // After a failure: resume at the next keyframe. (The first time,
            // the queue already takes packets: clearing it could lose the
            // stream's first keyframe.)
            t.queue.set_accepting(true);
        }
        let result = session(&t, &audio, &settings);
        let live_for = {
            let mut s = t.status();
            s.bytes_done += s.bytes_now;
            s.bytes_now = 0;
            s.live_since.take().map(|l| l.elapsed())
        };
        match result {
            Ok(()) => break,
            Err(_) if t.queue.is_closed() => break,
            Err(e) if e.is_fatal() => {
                tracing::error!(target_id = %t.id, stream = %t.stream, url = %t.url, error = %e, "restream failed");
                t.queue.set_accepting(false);
                let mut s = t.status();
                s.error = Some(e.to_string());
                t.transition(&mut s, State::Failed);
                return;
            }
            Err(e) => {
                if live_for.is_some_and(|d| d >= settings.backoff_max) {
                    backoff = settings.backoff_min;
                }
                t.queue.set_accepting(false);
                tracing::warn!(target_id = %t.id, stream = %t.stream, url = %t.url, error = %e,
                    retry_in_secs = backoff.as_secs_f64(), "restream interrupted; retrying");
                {
                    let mut s = t.status();
                    s.error = Some(e.to_string());
                    s.next_attempt = Some(SystemTime::now() + backoff);
                    t.transition(&mut s, State::Retrying);
                }
                if t.queue.wait_closed(backoff) {
                    break;
                }
                backoff = (backoff * 2).min(settings.backoff_max);
            }
        }
    }
    t.queue.set_accepting(false);
    let mut s = t.status();
    s.next_attempt = None;
    if let Some(reason) = t.queue.failure() {
        tracing::error!(target_id = %t.id, stream = %t.stream, url = %t.url, error = %reason, "restream failed");
        s.error = Some(reason);
        t.transition(&mut s, State::Failed);
        return;
    }
    t.transition(&mut s, State::Stopped);
    s.stopped_at = Some(Instant::now());
    tracing::info!(target_id = %t.id, stream = %t.stream, url = %t.url, "restream stopped");
}

fn session(
    t: &Target,
    audio: &OnceLock<Option<Arc<AudioSetup>>>,
    settings: &TargetSettings,
) -> Result<(), RestreamError> {
    // Start at a keyframe (the queue only lets one through first).
    let Some(first) = t.queue.next() else {
        return Ok(());
    };
    let video = first.video_setup();
    let audio_setup = audio.get().cloned().flatten();
    t.status().attempts += 1;
    // Checked again right before every connection: a name may resolve
    // elsewhere now than when the target was added.
    let (url, tcurl) = match &t.outbound {
        Some(policy) => {
            let ip = policy
                .resolve_blocking(t.url.host(), t.url.port())
                .map_err(RestreamError::Outbound)?;
            t.url.connect_to(ip)
        }
        None => (t.url.secret_full().to_string(), None),
    };
    let opts = OutputOptions {
        rw_timeout_us: settings.rw_timeout_us,
        tls_ca_file: (t.url.scheme() == super::url::Scheme::Rtmps)
            .then(|| settings.ca_file.clone()),
        tcurl,
    };
    let mut out = MuxOutput::rtmp(
        &url,
        video.as_deref(),
        audio_setup.as_deref(),
        &opts,
        t.interrupt.clone(),
    )?;
    {
        let mut s = t.status();
        s.error = None;
        t.transition(&mut s, State::Live);
        s.connections += 1;
        s.live_since = Some(Instant::now());
        s.rate_mark = Some((Instant::now(), 0));
    }
    tracing::info!(target_id = %t.id, stream = %t.stream, url = %t.url, "restream live");
    let base = first.us();
    let mut current = video;
    let mut last_ms = [i64::MIN, i64::MIN];
    let mut next = Some(first);
    loop {
        let Some(p) = next.take().or_else(|| t.queue.next()) else {
            t.interrupt.set_deadline(settings.stop_grace);
            return out.finish();
        };
        let (us, dur, data, key, extradata) = match &*p {
            OutPacket::Video {
                us,
                keyframe,
                data,
                setup,
                ..
            } => (
                *us,
                0,
                data,
                *keyframe,
                new_parameter_sets(&mut current, *keyframe, setup),
            ),
            OutPacket::Audio { us, dur_us, data } => (*us, *dur_us, data, true, None),
        };
        if audio_setup.is_none() && !p.is_video() {
            continue;
        }
        let track = usize::from(!p.is_video());
        let mut ts = us - base;
        if ts < 0 {
            if !p.is_video() {
                continue; // audio from before the first keyframe
            }
            ts = 0;
        }
        if ts / 1000 < last_ms[track] {
            ts = last_ms[track] * 1000;
        }
        last_ms[track] = ts / 1000;
        out.write(p.is_video(), key, ts, dur, data, extradata)?;
        let bytes = out.bytes();
        let mut s = t.status();
        if let OutPacket::Video { arrival, .. } = &*p {
            let us = arrival.elapsed().as_micros() as u64;
            s.latency_us = Some(s.latency_us.map_or(us, |l| (l * 7 + us) / 8));
            s.video_frames += 1;
        } else {
            s.audio_frames += 1;
        }
        s.bytes_now = bytes;
        if let Some((at, b)) = s.rate_mark {
            let dt = at.elapsed();
            if dt >= Duration::from_secs(1) {
                s.bitrate_bps = ((bytes - b.min(bytes)) as f64 * 8.0 / dt.as_secs_f64()) as u64;
                s.rate_mark = Some((Instant::now(), bytes));
            }
        }
    }
}
