//! One WebRTC session (a publisher or a viewer): its str0m [`Rtc`], its role,
//! and how its events turn into hub calls and back.
//!
//! Sessions are owned by a shard and driven only by it; nothing here awaits.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::outbox::Outbox;
use str0m::bwe::{Bitrate, BweKind};
use str0m::media::{
    Frequency, KeyframeRequestKind, MediaData, MediaKind as S0Kind, MediaTime, Mid, Pt, Rid,
};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use super::Counters;
use super::adapt::{Adapter, Candidate, LayerMode};
use super::codecs;
use super::forward::RtpForwarder;
use super::payloads::PayloadCutter;
use super::simulcast::LayerClocks;
use crate::media::{Frame, MediaKind};
use crate::stream::{KeyframePacer, LayerId, LiveStream, SinkKind, SinkQueue, Subscription, Want};

/// What a session does.
pub enum Role {
    /// Sends media in (WHIP).
    Publisher(PublisherState),
    /// Receives media out (WHEP).
    Viewer(ViewerState),
}

/// Publisher bookkeeping.
pub struct PublisherState {
    kinds: HashMap<Mid, MediaKind>,
    /// Keyframe requests per video layer: each layer is its own encoding
    /// with its own keyframes.
    pacers: Vec<KeyframePacer>,
    periodic: Duration,
    video_mid: Option<Mid>,
    limits: super::limits::PublisherLimits,
    /// Per track and layer: cuts its frames into RTP payloads once for
    /// every viewer (`None` for codecs that are not cut once).
    cutters: HashMap<(MediaKind, LayerId), Option<PayloadCutter>>,
    /// The video's simulcast layers by rid (empty without simulcast).
    rids: Vec<Rid>,
    /// Puts every simulcast layer on one timeline (`None` without simulcast).
    clocks: Option<LayerClocks>,
}

impl PublisherState {
    /// A publisher whose keyframe requests are paced by `min_interval`, who
    /// may send within `limits`, its video in the simulcast layers `rids`
    /// (empty without simulcast).
    pub fn new(
        min_interval: Duration,
        periodic: Duration,
        limits: super::limits::PublisherLimits,
        rids: &[String],
    ) -> PublisherState {
        let layers = rids.len().max(1);
        PublisherState {
            kinds: HashMap::new(),
            pacers: vec![KeyframePacer::new(min_interval); layers],
            periodic,
            video_mid: None,
            limits,
            cutters: HashMap::new(),
            rids: rids.iter().map(|r| Rid::from(r.as_str())).collect(),
            clocks: (rids.len() > 1).then(|| LayerClocks::new(rids.len(), 90_000)),
        }
    }

    /// The layer of a frame that came with `rid`: its position among the
    /// offer's rids; 0 without simulcast; `None` for a rid not offered.
    fn layer_of(&self, rid: Option<Rid>) -> Option<LayerId> {
        if self.rids.is_empty() {
            return Some(0);
        }
        let rid = rid?;
        self.rids
            .iter()
            .position(|r| *r == rid)
            .map(|i| i as LayerId)
    }

    /// The rid to name in a keyframe request for `layer` (`None` without simulcast).
    fn rid_of(&self, layer: LayerId) -> Option<Rid> {
        self.rids.get(usize::from(layer)).copied()
    }

    /// When the next paced keyframe request of any layer is due.
    fn next_keyframe_deadline(&self) -> Option<Instant> {
        self.pacers.iter().filter_map(|p| p.next_deadline()).min()
    }
}

/// Viewer bookkeeping.
pub struct ViewerState {
    queue: Arc<SinkQueue>,
    subscription: Option<Subscription>,
    mids: HashMap<MediaKind, Mid>,
    pts: HashMap<MediaKind, Pt>,
    scratch: Vec<Arc<Frame>>,
    last_forwarded_pli: Option<Instant>,
    /// Smallest gap between two of its keyframe requests passed to the
    /// stream ([`VIEWER_PLI_INTERVAL`]; shorter for a cluster relay).
    pli_interval: Duration,
    joined: bool,
    /// Set when the session runs in str0m's RTP mode and forwards the
    /// stream's shared payloads; `None` when str0m packetizes the frames.
    forward: Option<RtpForwarder>,
    /// Most video packets kept for retransmission (`rtc.send_buffer_video`).
    retransmit_packets: usize,
    /// The simulcast layer it asks for when it joins.
    want: Want,
    /// Chooses its layer by its bandwidth estimate (automatic viewers of
    /// simulcast streams, whose `Rtc` runs the estimator).
    adapter: Option<Adapter>,
    /// Its latest bandwidth estimate, bits per second.
    estimate: Option<f64>,
    /// When the adapter last decided.
    adapted_at: Option<Instant>,
    /// Whether the estimator was last told to hold (a congested path).
    held: bool,
    /// When the estimator last gave an estimate.
    estimate_at: Option<Instant>,
    /// When the estimator was last asked for a probe of its own.
    kicked_at: Option<Instant>,
    /// RTP time of the last video frame written in frame mode.
    last_video_time: Option<u64>,
    /// The simulcast layer of the last video frame forwarded.
    forwarded_layer: Option<LayerId>,
}

impl ViewerState {
    /// A viewer that will read frames from `queue` once connected, and
    /// forward their shared RTP payloads when `forward` (its `Rtc` must then
    /// be in RTP mode) or have str0m packetize them; it keeps at most
    /// `retransmit_packets` video packets (and [`RETRANSMIT_WINDOW`]) for NACKs.
    pub fn new(queue: Arc<SinkQueue>, forward: bool, retransmit_packets: usize) -> ViewerState {
        ViewerState {
            retransmit_packets,
            forward: forward.then(RtpForwarder::default),
            queue,
            subscription: None,
            mids: HashMap::new(),
            pts: HashMap::new(),
            scratch: Vec::new(),
            last_forwarded_pli: None,
            pli_interval: VIEWER_PLI_INTERVAL,
            joined: false,
            want: Want::Top,
            adapter: None,
            estimate: None,
            adapted_at: None,
            held: false,
            estimate_at: None,
            kicked_at: None,
            last_video_time: None,
            forwarded_layer: None,
        }
    }

    /// The same viewer getting its simulcast layer as `mode` says; `Auto`
    /// needs its `Rtc` built with bandwidth estimation.
    pub fn with_layer(mut self, mode: LayerMode) -> ViewerState {
        match mode {
            LayerMode::Auto => {
                // Until the first estimate: the middle layer, which the
                // estimator's starting rate carries.
                self.want = Want::Mid;
                self.adapter = Some(Adapter::new());
            }
            LayerMode::Pinned(want) => {
                self.want = want;
                self.adapter = None;
            }
        }
        self
    }

    /// The simulcast layer it receives now, once it is on one.
    fn current_layer(&self) -> Option<LayerId> {
        self.subscription.as_ref().and_then(|s| s.layer.current())
    }

    /// The same viewer as another node's relay: it speaks for every viewer
    /// of that node (each joining one needs a keyframe), so its requests
    /// pass as often as the publisher's pacing allows (`min_interval`).
    pub fn for_relay(mut self, min_interval: Duration) -> ViewerState {
        self.pli_interval = min_interval;
        self
    }
}

/// An automatic viewer's estimate that has not changed for this long,
/// below what its next layer needs, is probed for.
const ESTIMATE_STALE: Duration = Duration::from_secs(5);

/// An automatic viewer's layer is reconsidered at most this often.
const ADAPT_EVERY: Duration = Duration::from_millis(200);

/// A viewer's own keyframe requests reach the publisher at most this often, so
/// one viewer on a lossy link cannot make everyone's stream keyframe-heavy.
const VIEWER_PLI_INTERVAL: Duration = Duration::from_secs(2);

/// How long a viewer's video packets are kept to answer NACKs (and at most
/// `rtc.send_buffer_video` of them). A NACK comes a round trip after the
/// loss, and again a round trip later if the resend was lost too; after ~1 s
/// the receiver's jitter buffer has moved on (libwebrtc's sender keeps
/// max(1 s, 3 × RTT)). str0m's default is 3 s: for a 1 Mbit/s stream that
/// held three times the packets (and their memory) for nothing.
pub const RETRANSMIT_WINDOW: Duration = Duration::from_secs(1);

/// str0m's default cap on retransmissions (their share of what is sent),
/// kept: it stops one viewer's NACKs from making castgate resend without bound.
const RTX_RATIO_CAP: Option<f32> = Some(0.15);

/// Most shared RTP packets written to a viewer's str0m before they are
/// polled out (see [`Session::forward_frame`]).
const FORWARD_RUN: usize = 16;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// HTTP DELETE of the session resource.
    Deleted,
    /// Nothing heard from the peer for the configured time.
    Silent,
    /// The publisher of the stream left (viewers).
    StreamEnded,
    /// str0m reported a fatal error.
    Failed,
    /// A new publisher took the name over.
    Replaced,
    /// The server is shutting down.
    Shutdown,
    /// The publisher sent far more than `limits.max_publish_kbps`.
    OverLimit,
    /// An operator ended it (`DELETE /api/streams/{name}` or `…/sessions/{id}`).
    Operator,
}

impl EndReason {
    /// `deleted`, `silent`, … (logs and events).
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::Silent => "silent",
            EndReason::StreamEnded => "stream_ended",
            EndReason::Failed => "failed",
            EndReason::Replaced => "replaced",
            EndReason::Shutdown => "shutdown",
            EndReason::OverLimit => "over_limit",
            EndReason::Operator => "ended_by_operator",
        }
    }

    /// Why the stream ended when its publisher's session ended this way.
    pub fn stream_end(self) -> &'static str {
        match self {
            EndReason::Deleted => "publisher_left",
            other => other.name(),
        }
    }
}

/// What one session moved, for its end-of-session log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Figures {
    /// Datagrams accepted from the peer.
    pub datagrams_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Datagrams sent to the peer.
    pub datagrams_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Frames published (publisher) or handed to str0m (viewer).
    pub frames: u64,
}

/// What the API shows of a session (`GET /api/streams/{name}/sessions`),
/// shared with the engine's registry; its shard refreshes the figures about
/// once a second, so the hot path is untouched.
#[derive(Debug)]
pub struct SessionView {
    /// The client's address.
    pub client: IpAddr,
    /// When the session was created.
    pub created: SystemTime,
    connected: AtomicBool,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    bps_in: AtomicU64,
    bps_out: AtomicU64,
    /// A viewer's simulcast layer ([`NO_LAYER`]: none).
    layer: std::sync::atomic::AtomicU8,
}

/// [`SessionView`]'s layer when the viewer is on none.
const NO_LAYER: u8 = 0xff;

impl SessionView {
    /// A new session's view.
    pub fn new(client: IpAddr) -> SessionView {
        SessionView {
            client,
            created: SystemTime::now(),
            connected: AtomicBool::new(false),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            bps_in: AtomicU64::new(0),
            bps_out: AtomicU64::new(0),
            layer: std::sync::atomic::AtomicU8::new(NO_LAYER),
        }
    }

    /// The simulcast layer a viewer receives now.
    pub fn layer(&self) -> Option<LayerId> {
        match self.layer.load(Ordering::Relaxed) {
            NO_LAYER => None,
            l => Some(l),
        }
    }

    /// Whether DTLS is up (media can flow).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Bytes received from and sent to the peer so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }

    /// Bits per second from and to the peer over the last second or so.
    pub fn bitrates(&self) -> (u64, u64) {
        (
            self.bps_in.load(Ordering::Relaxed),
            self.bps_out.load(Ordering::Relaxed),
        )
    }
}

/// How often a session refreshes its [`SessionView`].
const VIEW_EVERY: Duration = Duration::from_secs(1);

/// A live session inside a shard.
pub struct Session {
    /// Key within its shard (routes point here).
    pub key: u64,
    /// Public, unguessable id (the last segment of the resource URL).
    pub id: String,
    /// str0m state machine.
    pub rtc: Rtc,
    /// Publisher or viewer.
    pub role: Role,
    /// The stream published or watched.
    pub stream: Arc<LiveStream>,
    /// Current ETag of the resource (changes on ICE restart).
    pub etag: String,
    /// ICE username fragments routed to this session.
    pub ufrags: Vec<String>,
    /// When str0m next wants a timeout.
    pub next_timeout: Instant,
    /// Last datagram from the peer.
    pub last_heard: Instant,
    /// Silence after which the session ends.
    pub silence_limit: Duration,
    /// Set once the session should be removed.
    pub ended: Option<EndReason>,
    /// Its slot in the per-client session count (freed when dropped).
    pub _lease: super::limits::Lease,
    /// When the session was created.
    pub created: Instant,
    /// What it moved.
    pub figures: Figures,
    /// Last cumulative (packets, NACKs) str0m reported per track and
    /// direction (`true` = ingress), so only increases reach [`Counters`].
    pub rtp_seen: HashMap<(Mid, bool), (u64, u64)>,
    /// The ICE-TCP connections, for transmits over TCP.
    pub tcp: Arc<super::tcp::Connections>,
    /// What the API shows, and when and at which byte counts it was last
    /// refreshed.
    pub view: Arc<SessionView>,
    /// The last refresh of `view`: when, bytes in, bytes out.
    pub view_mark: (Instant, u64, u64),
}

impl Session {
    /// Feeds one datagram (or ICE-TCP packet) to str0m.
    pub fn receive(
        &mut self,
        at: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        counters: &Counters,
    ) {
        let Ok(contents) = data.try_into() else {
            counters.bad_datagrams.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let input = Input::Receive(
            at,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        // Only traffic str0m recognises (our ICE credentials, or an address ICE
        // validated) counts as hearing from the peer; the rest is noise.
        if !self.rtc.accepts(&input) {
            counters.bad_datagrams.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.last_heard = at;
        self.figures.datagrams_in += 1;
        self.figures.bytes_in += data.len() as u64;
        if let Err(e) = self.rtc.handle_input(input) {
            counters.bad_datagrams.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(session = %short(&self.id), error = %e, "datagram refused");
        }
    }

    /// Refreshes what the API shows (at most every [`VIEW_EVERY`]).
    fn refresh_view(&mut self, now: Instant) {
        let (at, bytes_in, bytes_out) = self.view_mark;
        let elapsed = now.saturating_duration_since(at);
        if elapsed < VIEW_EVERY {
            return;
        }
        let f = &self.figures;
        let rate = |now: u64, then: u64| {
            (now.saturating_sub(then) as f64 * 8.0 / elapsed.as_secs_f64()) as u64
        };
        let v = &self.view;
        v.bps_in
            .store(rate(f.bytes_in, bytes_in), Ordering::Relaxed);
        v.bps_out
            .store(rate(f.bytes_out, bytes_out), Ordering::Relaxed);
        v.bytes_in.store(f.bytes_in, Ordering::Relaxed);
        v.bytes_out.store(f.bytes_out, Ordering::Relaxed);
        self.view_mark = (now, f.bytes_in, f.bytes_out);
        if let Role::Viewer(viewer) = &self.role {
            let layer = viewer.current_layer().unwrap_or(NO_LAYER);
            v.layer.store(layer, Ordering::Relaxed);
        }
        self.adapt(now);
    }

    /// An automatic viewer follows its bandwidth estimate: it moves to the
    /// layer the estimate carries (the switch happens at that layer's next
    /// keyframe) and tells the estimator which rates to probe for.
    fn adapt(&mut self, now: Instant) {
        let Role::Viewer(v) = &mut self.role else {
            return;
        };
        let (Some(adapter), Some(estimate), Some(sub)) =
            (&mut v.adapter, v.estimate, &v.subscription)
        else {
            return;
        };
        if v.adapted_at
            .is_some_and(|t| now.saturating_duration_since(t) < ADAPT_EVERY)
        {
            return;
        }
        v.adapted_at = Some(now);
        let layers = Candidate::live(&self.stream.live_layer_rates());
        if let Some(layer) = adapter.decide(now, estimate, &layers) {
            tracing::debug!(session = %short(&self.id), layer, estimate, "viewer layer");
            sub.layer.set_want(Want::Layer(layer));
        }
        let congested = adapter.congested(now);
        if let Some(rates) = adapter.probe_rates(now, &layers)
            && !(congested && v.held)
        {
            // Raising `desired` above the estimate asks for a probe: while
            // congested the estimator is told once to hold (and no more).
            v.held = congested;
            let (minimum, mut desired) = rates;
            // An estimate that has not moved for a while below what the next
            // layer needs (the estimator can stall after heavy loss): ask
            // for a probe by raising the rate wanted.
            let stale = |t: Option<Instant>| {
                t.is_none_or(|t| now.saturating_duration_since(t) >= ESTIMATE_STALE)
            };
            if !congested && minimum > estimate && stale(v.estimate_at) && stale(v.kicked_at) {
                v.kicked_at = Some(now);
                desired *= 1.5;
            }
            self.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(minimum as u64), Bitrate::bps(desired as u64));
        }
    }

    /// Moves str0m's clock forward and checks for silence.
    pub fn timeout(&mut self, now: Instant) {
        self.refresh_view(now);
        if now.saturating_duration_since(self.last_heard) > self.silence_limit {
            self.end(EndReason::Silent);
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::warn!(session = %short(&self.id), error = %e, "session failed");
            self.end(EndReason::Failed);
            return;
        }
        if let Role::Publisher(p) = &mut self.role {
            for layer in 0..p.pacers.len() {
                if p.pacers[layer].poll(now) {
                    send_keyframe_request(&mut self.rtc, p.video_mid, p.rid_of(layer as LayerId));
                }
            }
            if let Some(rate) = &mut p.limits.rate
                && rate.exceeded(now, self.stream.bytes_in())
            {
                tracing::warn!(session = %short(&self.id), stream = %self.stream.name(),
                    "publisher ended: it sent more than limits.max_publish_kbps allows");
                self.end(EndReason::OverLimit);
            }
        }
    }

    /// Marks the session for removal.
    pub fn end(&mut self, reason: EndReason) {
        if self.ended.is_none() {
            self.ended = Some(reason);
        }
    }

    /// The hub (or a viewer) wants a keyframe of video layer `layer` from
    /// this publisher.
    pub fn ask_keyframe(&mut self, now: Instant, layer: LayerId) {
        if let Role::Publisher(p) = &mut self.role
            && let Some(pacer) = p.pacers.get_mut(usize::from(layer))
            && pacer.ask(now)
        {
            send_keyframe_request(&mut self.rtc, p.video_mid, p.rid_of(layer));
        }
    }

    /// A sink that needs regular keyframes appeared or left. Every layer
    /// gets them: the sinks that need them follow the top layer, which can
    /// change.
    pub fn set_periodic_keyframes(&mut self, on: bool) {
        if let Role::Publisher(p) = &mut self.role {
            let period = on.then_some(p.periodic);
            for pacer in &mut p.pacers {
                pacer.set_periodic(period);
            }
        }
    }

    /// Sends queued frames to a viewer. What str0m transmits meanwhile goes
    /// to `out` (the caller drives the session afterwards, which flushes it).
    pub fn feed_viewer(&mut self, out: &mut Outbox, counters: &Counters) {
        let Role::Viewer(v) = &mut self.role else {
            return;
        };
        let mut frames = std::mem::take(&mut v.scratch);
        let open = v.queue.drain(&mut frames);
        let mut forward = v.forward.take();
        let mut sent = 0usize;
        for frame in frames.drain(..) {
            sent += match &mut forward {
                Some(f) => self.forward_frame(f, &frame, out, counters),
                None => self.write_frame(&frame),
            };
        }
        if let Role::Viewer(v) = &mut self.role {
            v.scratch = frames;
            v.forward = forward;
        }
        if sent > 0 {
            self.stream.add_bytes_out(sent);
        }
        if !open {
            self.end(EndReason::StreamEnded);
        }
    }

    /// The viewer's track (mid) for frames of `kind`.
    fn viewer_mid(&self, kind: MediaKind) -> Option<Mid> {
        match &self.role {
            Role::Viewer(v) => v.mids.get(&kind).copied(),
            Role::Publisher(_) => None,
        }
    }

    /// Writes one frame's shared RTP payloads (RTP mode) and sends them, in
    /// runs of at most [`FORWARD_RUN`] packets, each sent before the next is
    /// written. str0m's send queue keeps the size it once grew to (≈ 400
    /// bytes of header state per packet) for the session's life, so writing
    /// a keyframe whole would cost every viewer that much for good. Returns
    /// the payload bytes written.
    fn forward_frame(
        &mut self,
        forward: &mut RtpForwarder,
        frame: &Frame,
        out: &mut Outbox,
        counters: &Counters,
    ) -> usize {
        let Some(mid) = self.viewer_mid(frame.kind()) else {
            return 0;
        };
        if frame.kind() == MediaKind::Video {
            self.leave_old_layer(mid, frame.layer);
        }
        let count = frame.rtp_payloads.len();
        let (mut start, mut bytes) = (0, 0);
        loop {
            let end = (start + FORWARD_RUN).min(count);
            match forward.write(&mut self.rtc, mid, frame, start..end) {
                Ok(b) => bytes += b,
                Err(e) => {
                    tracing::debug!(session = %short(&self.id), error = %e, "viewer write failed");
                    return bytes;
                }
            }
            // Packets written to str0m leave on its next clock tick: tick
            // now and send them, rather than on the shard's next timer round.
            if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                tracing::warn!(session = %short(&self.id), error = %e, "session failed");
                self.end(EndReason::Failed);
                return bytes;
            }
            self.poll(out, counters);
            if end >= count {
                break;
            }
            start = end;
        }
        self.figures.frames += 1;
        bytes
    }

    /// Before the first frame of simulcast layer `layer` on the video track
    /// `mid` (the new layer's keyframe): the old layer's packets are of no
    /// more use to the viewer, so its retransmission buffer is emptied and
    /// its requests for them no longer compete with that keyframe on a path
    /// that may be congested (the usual reason to move down).
    fn leave_old_layer(&mut self, mid: Mid, layer: LayerId) {
        let Role::Viewer(v) = &mut self.role else {
            return;
        };
        let switched = v.forwarded_layer.is_some_and(|l| l != layer);
        v.forwarded_layer = Some(layer);
        if switched && let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
            // Setting the cache empties it.
            tx.set_rtx_cache(v.retransmit_packets, RETRANSMIT_WINDOW, RTX_RATIO_CAP);
        }
    }

    /// Hands one frame to str0m to packetize (frame mode). Returns its bytes.
    fn write_frame(&mut self, frame: &Frame) -> usize {
        let kind = frame.kind();
        let Role::Viewer(v) = &mut self.role else {
            return 0;
        };
        let Some(mid) = v.mids.get(&kind).copied() else {
            return 0;
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return 0;
        };
        let pt = match v.pts.get(&kind) {
            Some(pt) => *pt,
            None => match writer.match_params(codecs::payload_params(&frame.params)) {
                Some(pt) => {
                    v.pts.insert(kind, pt);
                    pt
                }
                None => return 0,
            },
        };
        let Some(freq) = Frequency::new(frame.params.clock_rate) else {
            return 0;
        };
        let mut rtp_time = frame.rtp_time;
        if kind == MediaKind::Video {
            // As in RTP mode: a simulcast switch must not repeat a time.
            rtp_time = super::forward::next_time(v.last_video_time, rtp_time);
            v.last_video_time = Some(rtp_time);
        }
        let time = MediaTime::new(rtp_time, freq);
        self.figures.frames += 1;
        if let Err(e) = writer.write(pt, frame.arrival, time, frame.data.clone()) {
            tracing::debug!(session = %short(&self.id), error = %e, "viewer write failed");
        }
        frame.data.len()
    }

    /// Polls str0m until it wants a timeout, sending what it transmits and
    /// acting on its events.
    /// What it transmits goes out in GSO runs ([`Outbox`]), all of it sent
    /// before this returns.
    pub fn drive(&mut self, out: &mut Outbox, counters: &Counters) {
        self.poll(out, counters);
        out.flush();
    }

    fn poll(&mut self, out: &mut Outbox, counters: &Counters) {
        loop {
            if self.ended.is_some() {
                return;
            }
            if !self.rtc.is_alive() {
                self.end(EndReason::Failed);
                return;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    // The keyframe pacer's next request (merged, periodic or
                    // a retry) is due on time, not at str0m's next wake-up.
                    let pacer = match &self.role {
                        Role::Publisher(p) => p.next_keyframe_deadline(),
                        Role::Viewer(_) => None,
                    };
                    self.next_timeout = pacer.map_or(t, |d| d.min(t));
                    return;
                }
                Ok(Output::Transmit(t)) if t.proto != Protocol::Udp => self.send_tcp(&t),
                Ok(Output::Transmit(t)) => {
                    // Counted as handed to the socket; the socket's own drops
                    // are counted by the outbox (`send_drops`).
                    self.figures.datagrams_out += 1;
                    self.figures.bytes_out += t.contents.len() as u64;
                    out.push(t.destination, &t.contents);
                }
                Ok(Output::Event(e)) => self.on_event(e, counters),
                Err(e) => {
                    tracing::warn!(session = %short(&self.id), error = %e, "session failed");
                    self.end(EndReason::Failed);
                    return;
                }
            }
        }
    }

    /// Sends an ICE-TCP transmit through its connection's queue (never waits).
    fn send_tcp(&mut self, t: &str0m::net::Transmit) {
        if self.tcp.send(self.key, t.destination, &t.contents) {
            self.figures.datagrams_out += 1;
            self.figures.bytes_out += t.contents.len() as u64;
        }
    }

    /// Adds what a track's cumulative statistics grew by since last time.
    fn fold_stats(&mut self, key: (Mid, bool), packets: u64, nacks: u64, counters: &Counters) {
        let last = self
            .rtp_seen
            .insert(key, (packets, nacks))
            .unwrap_or((0, 0));
        let (p, n) = (packets.saturating_sub(last.0), nacks.saturating_sub(last.1));
        let (pc, nc) = if key.1 {
            (&counters.rtp_packets_in, &counters.nacks_sent)
        } else {
            (&counters.rtp_packets_out, &counters.nacks_received)
        };
        pc.fetch_add(p, Ordering::Relaxed);
        nc.fetch_add(n, Ordering::Relaxed);
    }

    fn on_event(&mut self, event: Event, counters: &Counters) {
        match event {
            Event::MediaIngressStats(st) => {
                self.fold_stats((st.mid, true), st.packets, st.nacks, counters)
            }
            Event::MediaEgressStats(st) => {
                self.fold_stats((st.mid, false), st.packets, st.nacks, counters);
                if let Role::Viewer(v) = &mut self.role
                    && let Some(adapter) = &mut v.adapter
                    && v.mids.get(&MediaKind::Video) == Some(&st.mid)
                {
                    let now = Instant::now();
                    if let Some(loss) = st.loss {
                        adapter.on_loss(now, f64::from(loss));
                    }
                    if let Some(rtt) = st.rtt {
                        adapter.on_rtt(now, rtt);
                    }
                    self.adapt(now);
                }
            }
            Event::Connected => {
                self.view.connected.store(true, Ordering::Relaxed);
                tracing::info!(
                    session = %short(&self.id),
                    stream = %self.stream.name(),
                    role = self.role_name(),
                    "connected"
                );
                if let Role::Viewer(v) = &mut self.role {
                    match self
                        .stream
                        .subscribe_to(SinkKind::Viewer, v.queue.clone(), v.want)
                    {
                        Some(sub) => {
                            v.subscription = Some(sub);
                            if !v.joined {
                                v.joined = true;
                                self.stream
                                    .events()
                                    .emit(crate::events::Event::ViewerJoined {
                                        stream: self.stream.name().to_string(),
                                        stream_id: self.stream.id(),
                                        session: short(&self.id).to_string(),
                                    });
                            }
                        }
                        None => self.end(EndReason::StreamEnded),
                    }
                }
            }
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(session = %short(&self.id), ?state, "ice state");
                if state == IceConnectionState::Disconnected {
                    // Consent lapsed; the silence timer decides, so an ICE
                    // restart over PATCH can still rescue the session.
                }
            }
            Event::MediaAdded(m) => {
                let kind = match m.kind {
                    S0Kind::Audio => MediaKind::Audio,
                    S0Kind::Video => MediaKind::Video,
                };
                match &mut self.role {
                    Role::Publisher(p) => {
                        p.kinds.insert(m.mid, kind);
                        if kind == MediaKind::Video {
                            p.video_mid = Some(m.mid);
                        }
                    }
                    Role::Viewer(v) => {
                        v.mids.entry(kind).or_insert(m.mid);
                        if kind == MediaKind::Video
                            && let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(m.mid, None)
                        {
                            // Before the first packet: setting it empties the buffer.
                            tx.set_rtx_cache(
                                v.retransmit_packets,
                                RETRANSMIT_WINDOW,
                                RTX_RATIO_CAP,
                            );
                        }
                    }
                }
            }
            Event::MediaData(data) => self.on_media(data),
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                if let Role::Viewer(v) = &mut self.role {
                    v.estimate = Some(estimate.as_f64());
                    v.estimate_at = Some(Instant::now());
                }
                self.adapt(Instant::now());
            }
            Event::KeyframeRequest(_) => {
                if let Role::Viewer(v) = &mut self.role {
                    let now = Instant::now();
                    let due = v
                        .last_forwarded_pli
                        .is_none_or(|t| now.saturating_duration_since(t) >= v.pli_interval);
                    // While it moves to another layer, that layer's keyframe
                    // (already asked for) is the one it gets next.
                    let switching = v.subscription.as_ref().is_some_and(|s| {
                        matches!(s.layer.want(), Want::Layer(l) if Some(l) != s.layer.current())
                    });
                    if due && !switching {
                        v.last_forwarded_pli = Some(now);
                        // The layer the viewer is on (the one it decodes).
                        let layer = v.current_layer().unwrap_or(0);
                        self.stream.request_keyframe(layer);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_media(&mut self, data: MediaData) {
        let Role::Publisher(p) = &mut self.role else {
            return;
        };
        if data.data.is_empty() {
            // Padding (bandwidth probes) depacketizes to nothing: not a frame.
            return;
        }
        let Some(kind) = p.kinds.get(&data.mid).copied() else {
            return;
        };
        let Some(params) = self.stream.track(kind) else {
            return;
        };
        let video = kind == MediaKind::Video;
        let layer = if video { p.layer_of(data.rid) } else { Some(0) };
        let Some(layer) = layer else {
            // str0m binds only the offer's rids; anything else is not ours.
            return;
        };
        let keyframe = !video || data.is_keyframe();
        let now = Instant::now();
        let rid = p.rid_of(layer);
        if let Some(pacer) = p.pacers.get_mut(usize::from(layer))
            && video
        {
            if keyframe {
                pacer.keyframe_received(now);
            }
            if !data.contiguous && pacer.ask(now) {
                // Lost packets we could not recover: the picture is broken until
                // the next keyframe, so ask for one (paced with everyone else's).
                send_keyframe_request(&mut self.rtc, p.video_mid, rid);
            }
        }
        let mut frame = super::upstream::frame_of(params, data, layer, &mut p.cutters);
        if video && let Some(clocks) = &mut p.clocks {
            let Some((time, report)) = clocks.rebase(
                usize::from(layer),
                frame.rtp_time,
                frame.arrival,
                frame.sender_clock,
            ) else {
                return;
            };
            frame.rtp_time = time;
            frame.sender_clock = report;
        }
        self.figures.frames += 1;
        self.stream.publish(frame);
        if video
            && keyframe
            && let Some(size) = self.stream.video_size()
            && p.limits.too_big(size)
        {
            tracing::warn!(session = %short(&self.id), stream = %self.stream.name(), width = size.0, height = size.1,
                "publisher ended: its picture is larger than limits.max_publish_width x max_publish_height");
            self.end(EndReason::OverLimit);
        }
    }

    /// Leaves the hub: a publisher ends its stream, a viewer unsubscribes.
    pub fn detach(&mut self, hub: &crate::stream::Hub) {
        match &mut self.role {
            Role::Publisher(_) => hub.remove(
                &self.stream,
                self.ended.unwrap_or(EndReason::Failed).stream_end(),
            ),
            Role::Viewer(v) => {
                if let Some(sub) = v.subscription.take() {
                    self.stream.unsubscribe(sub.id);
                }
                v.queue.close();
            }
        }
        if self.rtc.is_alive() {
            // Schedules RTCP BYE and DTLS close_notify, so the peer learns at
            // once that the session is over.
            let _ = self.rtc.close();
        }
    }

    /// Sends what str0m still has to say after [`Session::detach`] (goodbyes),
    /// then drops the state machine's remaining output.
    pub fn flush(&mut self, out: &mut Outbox) {
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        for _ in 0..64 {
            if !self.rtc.is_alive() {
                break;
            }
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) if t.proto != Protocol::Udp => self.send_tcp(&t),
                Ok(Output::Transmit(t)) => out.push(t.destination, &t.contents),
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => break,
            }
        }
        out.flush();
        self.rtc.disconnect();
    }

    /// Whether this is a viewer whose media started (a `viewer_joined` was emitted).
    pub fn viewer_joined(&self) -> bool {
        matches!(&self.role, Role::Viewer(v) if v.joined)
    }

    /// `publisher` or `viewer`, for logs.
    pub fn role_name(&self) -> &'static str {
        match self.role {
            Role::Publisher(_) => "publisher",
            Role::Viewer(_) => "viewer",
        }
    }
}

pub(super) fn frequency(rate: u32) -> Frequency {
    Frequency::new(rate).unwrap_or(Frequency::NINETY_KHZ)
}

/// Asks the peer for a keyframe on the track `mid` (of the simulcast layer
/// `rid`: without one str0m picks any layer), by PLI or else FIR.
pub(super) fn send_keyframe_request(rtc: &mut Rtc, mid: Option<Mid>, rid: Option<Rid>) {
    let Some(mid) = mid else { return };
    let Some(mut writer) = rtc.writer(mid) else {
        return;
    };
    let kind = if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
        KeyframeRequestKind::Pli
    } else if writer.is_request_keyframe_possible(KeyframeRequestKind::Fir) {
        KeyframeRequestKind::Fir
    } else {
        return;
    };
    if let Err(e) = writer.request_keyframe(rid, kind) {
        tracing::debug!(error = %e, "keyframe request failed");
    }
}

/// The first 8 characters of a session id: enough for logs, useless to an attacker.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
