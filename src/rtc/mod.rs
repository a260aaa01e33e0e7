//! The WebRTC engine: one UDP socket for every session, str0m state machines
//! spread over worker shards, and the negotiation that WHIP and WHEP need.
//!
//! Data flow: [`router`] reads the socket and hands each datagram to the
//! [`shard`] owning its session; a publisher [`session`] turns str0m frames into
//! hub [`Frame`](crate::media::Frame)s, and a viewer session writes the frames
//! its sink queue receives. Nothing above this folder sees str0m.

mod adapt;
pub mod codecs;
mod forward;
pub mod limits;
mod memory;
pub mod net;
mod offer;
mod outbox;
mod payloads;
pub mod router;
pub mod sdp;
mod session;
mod shard;
mod simulcast;

pub use adapt::LayerMode;
pub mod tcp;
pub mod upstream;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rand::Rng;
use serde::Serialize;
use str0m::{Candidate, Rtc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, OnConflict};
use crate::names::StreamName;
use crate::stream::{Hub, LiveStream, PublishError, SinkQueue, Want};
use limits::{ClientLimits, Lease, PublisherLimits, ViewerLimits};
use net::MediaSocket;
use router::{Destinations, Routes};
pub use session::EndReason;
use session::{PublisherState, Role, Session, SessionView, ViewerState};
use shard::{Command, Shard, ShardPublisher, ShardWaker};
pub use shard::{PatchError, PatchOp, PatchReply};

/// Counters of the media transport, for metrics and tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams read from the socket.
    pub datagrams_in: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Datagrams that matched no session.
    pub unrouted: AtomicU64,
    /// Datagrams dropped because a shard's inbox was full.
    pub shard_full_drops: AtomicU64,
    /// Datagrams str0m refused (malformed, unauthenticated, undecryptable).
    pub bad_datagrams: AtomicU64,
    /// Sends that failed (socket buffer full).
    pub send_drops: AtomicU64,
    /// Errors reading the socket.
    pub recv_errors: AtomicU64,
    /// RTP packets received from publishers (str0m statistics, retransmissions
    /// included; updated every [`STATS_INTERVAL`]).
    pub rtp_packets_in: AtomicU64,
    /// RTP packets sent to viewers (retransmissions included; same cadence).
    pub rtp_packets_out: AtomicU64,
    /// NACKs sent to publishers: packets lost on the way in, asked again.
    pub nacks_sent: AtomicU64,
    /// NACKs received from viewers: packets lost on the way out, resent.
    pub nacks_received: AtomicU64,
}

/// How often str0m reports per-track statistics (folded into [`Counters`]).
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);

/// A point-in-time copy of [`Counters`] plus session counts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EngineStats {
    /// Live sessions (publishers + viewers).
    pub sessions: usize,
    /// ICE fragments and remote addresses in the routing table.
    pub routes: (usize, usize),
    /// See [`Counters`].
    pub datagrams_in: u64,
    /// See [`Counters`].
    pub datagrams_out: u64,
    /// See [`Counters`].
    pub unrouted: u64,
    /// See [`Counters`].
    pub shard_full_drops: u64,
    /// See [`Counters`].
    pub bad_datagrams: u64,
    /// See [`Counters`].
    pub send_drops: u64,
}

/// Publisher or viewer, as recorded for a session resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// WHIP session.
    Publisher,
    /// WHEP session.
    Viewer,
}

#[derive(Debug, Clone)]
struct SessionEntry {
    shard: usize,
    key: u64,
    role: RoleKind,
    stream: StreamName,
    view: Arc<SessionView>,
}

/// One WHIP or WHEP session as operators see it
/// (`GET /api/streams/{name}/sessions`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// Session id (the last segment of its resource URL).
    pub id: String,
    /// `publisher` (WHIP) or `viewer` (WHEP).
    pub role: &'static str,
    /// The client's address.
    pub client_address: String,
    /// When the session was created (RFC 3339, UTC).
    pub since: String,
    /// The stream's codecs the session carries (`vp8`, `opus`, …).
    pub codecs: Vec<String>,
    /// `connecting` (ICE, DTLS) or `connected` (media flows).
    pub state: &'static str,
    /// Bits per second from the client over the last second.
    pub bitrate_in_bps: u64,
    /// Bits per second to the client over the last second.
    pub bitrate_out_bps: u64,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// A viewer of a simulcast stream: the rid of the layer it receives
    /// now (refreshed about once a second).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
}

/// What shards share with the engine.
struct Shared {
    socket: Arc<MediaSocket>,
    routes: Arc<Routes>,
    counters: Arc<Counters>,
    hub: Arc<Hub>,
    sessions: Mutex<HashMap<String, SessionEntry>>,
    candidates: Vec<SocketAddr>,
    /// Every session's local ICE candidates (UDP, and passive TCP with ICE-TCP).
    ice_candidates: Vec<Candidate>,
    /// Open ICE-TCP connections.
    tcp: Arc<tcp::Connections>,
}

struct ShardHandle {
    commands: mpsc::Sender<Command>,
    wakes: mpsc::UnboundedSender<u64>,
}

/// Why an offer was not answered.
#[derive(Debug, thiserror::Error)]
pub enum NegotiateError {
    /// The body is not a usable SDP offer (400).
    #[error("{0}")]
    BadOffer(String),
    /// The offer is valid SDP but asks for something castgate does not do (422).
    #[error("{0}")]
    Unsupported(String),
    /// The stream name already has a publisher (409).
    #[error("{0}")]
    Busy(String),
    /// The stream ended while the viewer was being set up (409).
    #[error("stream {0:?} ended")]
    Ended(String),
    /// Shutting down (503).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// This client address holds as many sessions as it may (429).
    #[error(
        "this address already has {0} sessions, the most allowed (limits.max_sessions_per_client)"
    )]
    TooManySessions(usize),
    /// The stream has as many viewers as it may (503).
    #[error("stream {0:?} has {1} viewers, the most allowed (limits.max_viewers_per_stream)")]
    StreamFull(String, usize),
    /// The media engine did not take the session within [`ENGINE_DEADLINE`] (503).
    #[error("the media engine is overloaded and could not take the session in time; retry shortly")]
    Overloaded,
}

/// Inbox places held by [`Engine::saturate_for_test`]; given back on drop.
#[doc(hidden)]
pub struct Saturation {
    _permits: Vec<mpsc::OwnedPermit<Command>>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The UDP port could not be bound.
    #[error("cannot bind the media UDP port {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The ICE-TCP port (the UDP port's number) could not be bound.
    #[error(
        "cannot bind the media TCP port {addr} for ICE-TCP: {source} (free the port, or set rtc.ice_tcp = false)"
    )]
    TcpBind {
        /// Address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No address to announce in ICE candidates.
    #[error("no IP address to announce in ICE candidates; set rtc.announce")]
    NoAddress,
    /// The crypto provider could not make a DTLS certificate.
    #[error("cannot generate the DTLS certificate for WebRTC sessions")]
    Certificate,
}

/// A negotiated session: what the HTTP layer sends back.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Unguessable id for the resource URL.
    pub session_id: String,
    /// The SDP answer.
    pub sdp: String,
    /// The first ETag of the resource (unquoted).
    pub etag: String,
}

/// The WebRTC engine of one castgate process.
pub struct Engine {
    shared: Arc<Shared>,
    shards: Vec<ShardHandle>,
    next_shard: AtomicUsize,
    next_key: AtomicU64,
    config: Arc<Config>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    local_addr: SocketAddr,
    crypto: Arc<str0m::config::CryptoProvider>,
    /// One DTLS certificate for every session of this process (as most
    /// WebRTC servers do): generating one per session was a measurable part
    /// of a WHEP setup.
    dtls_cert: str0m::config::DtlsCert,
    client_limits: Arc<ClientLimits>,
    viewer_limits: Arc<ViewerLimits>,
    /// Counters of the streams pulled from other servers ([`upstream`]).
    upstream: Arc<upstream::UpstreamCounters>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// Capacity of each shard's inbox (datagrams and commands).
const SHARD_INBOX: usize = 8192;

/// How long an HTTP request waits for a shard to take its command (a new
/// session, a PATCH, a DELETE). A shard whose inbox stays full that long is
/// overloaded: the request gets 503 + Retry-After instead of hanging.
pub const ENGINE_DEADLINE: Duration = Duration::from_secs(2);

impl Engine {
    /// Binds the media socket and starts the router and worker shards.
    pub async fn start(config: Arc<Config>, hub: Arc<Hub>) -> Result<Engine, EngineError> {
        let (socket, listener) = bind_media(&config)?;
        let addr = config.rtc.udp_listen;
        let local_addr = socket
            .local_addr()
            .map_err(|source| EngineError::Bind { addr, source })?;
        let candidates = candidate_addresses(&config, local_addr);
        if candidates.is_empty() {
            return Err(EngineError::NoAddress);
        }
        let tcp_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        tracing::info!(udp = %local_addr, tcp = ?tcp_addr, candidates = ?candidates, "media socket bound");
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let dtls_cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or(EngineError::Certificate)?;
        let socket = Arc::new(socket);
        let shared = Arc::new(Shared {
            socket: socket.clone(),
            routes: Arc::new(Routes::default()),
            counters: Arc::new(Counters::default()),
            hub,
            sessions: Mutex::new(HashMap::new()),
            ice_candidates: tcp::local_candidates(&candidates, listener.is_some()),
            candidates: candidates.clone(),
            tcp: Arc::new(tcp::Connections::default()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut shards = Vec::new();
        let mut tasks = Vec::new();
        for index in 0..config.worker_count() {
            let (commands, inbox) = mpsc::channel(SHARD_INBOX);
            let (wakes, wake_rx) = mpsc::unbounded_channel();
            let shard = Shard::new(index, shared.clone(), inbox, wake_rx);
            tasks.push(tokio::spawn(shard.run(shutdown_rx.clone())));
            shards.push(ShardHandle { commands, wakes });
        }
        tasks.push(tokio::spawn(memory::run(
            shared.clone(),
            shutdown_rx.clone(),
        )));
        if let Some(listener) = listener {
            let ctx = tcp::Context {
                routes: shared.routes.clone(),
                shards: shards.iter().map(|s| s.commands.clone()).collect(),
                conns: shared.tcp.clone(),
                counters: shared.counters.clone(),
                bound: tcp_addr.unwrap_or(local_addr),
                announced: candidates.clone(),
            };
            let max = config.rtc.ice_tcp_max_connections;
            tasks.push(tokio::spawn(tcp::run(
                listener,
                ctx,
                max,
                shutdown_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(router::run(
            socket,
            shared.routes.clone(),
            shards.iter().map(|s| s.commands.clone()).collect(),
            Destinations::new(local_addr, candidates),
            shared.counters.clone(),
            shutdown_rx,
        )));
        Ok(Engine {
            shared,
            shards,
            next_shard: AtomicUsize::new(0),
            next_key: AtomicU64::new(1),
            shutdown,
            tasks: Mutex::new(tasks),
            local_addr,
            crypto,
            dtls_cert,
            client_limits: ClientLimits::new(config.limits.max_sessions_per_client),
            viewer_limits: ViewerLimits::new(config.limits.max_viewers_per_stream),
            upstream: Arc::default(),
            config,
        })
    }

    /// Viewer sessions holding a place on `stream` (counted only when
    /// `limits.max_viewers_per_stream` is set): from the accepted offer
    /// until the session is gone.
    pub fn viewer_places(&self, stream: &LiveStream) -> usize {
        self.viewer_limits.held(stream.id())
    }

    /// The bound media address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The addresses announced as ICE host candidates.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.shared.candidates
    }

    fn pick_shard(&self) -> usize {
        self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len()
    }

    fn rtc_builder(&self) -> str0m::RtcConfig {
        Rtc::builder()
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.dtls_cert.clone())
            .set_ice_lite(true)
            .clear_codecs()
            .set_send_buffer_video(self.config.rtc.send_buffer_video)
            .set_stats_interval(Some(STATS_INTERVAL))
    }

    /// Answers a WHIP offer from `client`: claims the stream name and starts
    /// the publisher session.
    pub async fn publish(
        &self,
        name: StreamName,
        offer: &str,
        client: IpAddr,
    ) -> Result<Answer, NegotiateError> {
        if self.shared.hub.is_closed() {
            return Err(NegotiateError::ShuttingDown);
        }
        let lease = self
            .client_limits
            .acquire(client)
            .map_err(NegotiateError::TooManySessions)?;
        let offer::Negotiated {
            rtc,
            answer,
            tracks,
            layers,
        } = offer::publisher(
            self.rtc_builder(),
            offer,
            &self.shared.ice_candidates,
            &self.config,
        )?;
        let shard = self.pick_shard();
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let control = Arc::new(ShardPublisher {
            tx: self.shards[shard].commands.clone(),
            key,
        });
        let takeover = self.config.whip.on_conflict == OnConflict::Takeover;
        let stream = self
            .shared
            .hub
            .publish(name.clone(), tracks, &layers, control, takeover)
            .map_err(|e| match e {
                PublishError::Busy(n) => NegotiateError::Busy(format!(
                    "stream {n:?} already has a publisher; stop it first or use another name"
                )),
                PublishError::ShuttingDown => NegotiateError::ShuttingDown,
            })?;
        let role = Role::Publisher(PublisherState::new(
            self.config.keyframes.min_interval(),
            Duration::from_secs_f64(self.config.keyframes.periodic_secs),
            PublisherLimits::new(
                self.config.limits.max_publish_kbps,
                self.config.limits.max_publish_width,
                self.config.limits.max_publish_height,
            ),
            &layers,
        ));
        let result = self
            .start_session(
                shard,
                key,
                rtc,
                role,
                stream.clone(),
                RoleKind::Publisher,
                answer,
                lease,
                client,
            )
            .await;
        if result.is_err() {
            self.shared.hub.remove(&stream, "failed");
        }
        result
    }

    /// Answers a WHEP offer from `client` for a live stream and starts the
    /// viewer session; of a simulcast stream it gets the layer `layer` says.
    pub async fn view(
        &self,
        stream: Arc<LiveStream>,
        offer: &str,
        client: IpAddr,
        layer: LayerMode,
    ) -> Result<Answer, NegotiateError> {
        self.view_as(stream, offer, client, false, layer).await
    }

    /// [`Engine::view`] for another node's relay (a cluster) of the layer
    /// `want` (one session per simulcast layer): its keyframe requests,
    /// made for all of that node's viewers, are paced like the publisher's
    /// rather than like one viewer's.
    pub async fn view_for_relay(
        &self,
        stream: Arc<LiveStream>,
        offer: &str,
        client: IpAddr,
        want: Want,
    ) -> Result<Answer, NegotiateError> {
        self.view_as(stream, offer, client, true, LayerMode::Pinned(want))
            .await
    }

    async fn view_as(
        &self,
        stream: Arc<LiveStream>,
        offer: &str,
        client: IpAddr,
        relay: bool,
        layer: LayerMode,
    ) -> Result<Answer, NegotiateError> {
        if self.shared.hub.is_closed() {
            return Err(NegotiateError::ShuttingDown);
        }
        // Checked and taken in one step: concurrent offers cannot overshoot.
        let slot = self
            .viewer_limits
            .acquire(stream.id())
            .map_err(|max| NegotiateError::StreamFull(stream.name().to_string(), max))?;
        let lease = self
            .client_limits
            .acquire(client)
            .map_err(NegotiateError::TooManySessions)?
            .with_viewer_slot(slot);
        // Only a simulcast stream has layers to choose between: its automatic
        // viewers estimate their bandwidth; everyone else gets the one layer.
        let mode = match layer {
            LayerMode::Auto if !stream.is_simulcast() => LayerMode::Pinned(Want::Top),
            mode => mode,
        };
        let offer::Viewing {
            rtc,
            answer,
            forward,
        } = offer::viewer(
            self.rtc_builder(),
            offer,
            &self.shared.ice_candidates,
            &stream,
            mode == LayerMode::Auto,
        )?;
        if stream.is_ended() {
            if self.shared.hub.is_closed() {
                return Err(NegotiateError::ShuttingDown);
            }
            return Err(NegotiateError::Ended(stream.name().to_string()));
        }
        let shard = self.pick_shard();
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(SinkQueue::new(
            self.config.whep.viewer_queue_frames,
            Box::new(ShardWaker {
                tx: self.shards[shard].wakes.clone(),
                key,
            }),
        ));
        let mut viewer =
            ViewerState::new(queue, forward, self.config.rtc.send_buffer_video).with_layer(mode);
        if relay {
            viewer = viewer.for_relay(self.config.keyframes.min_interval());
        }
        let role = Role::Viewer(viewer);
        self.start_session(
            shard,
            key,
            rtc,
            role,
            stream,
            RoleKind::Viewer,
            answer,
            lease,
            client,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_session(
        &self,
        shard: usize,
        key: u64,
        mut rtc: Rtc,
        role: Role,
        stream: Arc<LiveStream>,
        kind: RoleKind,
        answer: String,
        lease: Lease,
        client: IpAddr,
    ) -> Result<Answer, NegotiateError> {
        let id = random_hex();
        let etag = new_etag();
        let view = Arc::new(SessionView::new(client));
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let now = Instant::now();
        let session = Session {
            key,
            id: id.clone(),
            rtc,
            role,
            stream: stream.clone(),
            etag: etag.clone(),
            ufrags: vec![ufrag],
            next_timeout: now,
            last_heard: now,
            silence_limit: Duration::from_secs_f64(self.config.whip.publisher_timeout_secs),
            ended: None,
            _lease: lease,
            created: now,
            figures: Default::default(),
            rtp_seen: Default::default(),
            tcp: self.shared.tcp.clone(),
            view: view.clone(),
            view_mark: (now, 0, 0),
        };
        self.shared.sessions.lock().insert(
            id.clone(),
            SessionEntry {
                shard,
                key,
                role: kind,
                stream: stream.name().clone(),
                view,
            },
        );
        // Routed before the answer goes out: an ICE-TCP connection's first
        // STUN request must find the session even if the shard has not taken
        // it yet (its packets then wait in the shard's inbox behind `Add`).
        let target = router::Target { shard, key };
        for ufrag in &session.ufrags {
            self.shared.routes.add_ufrag(ufrag, target);
        }
        if let Err(e) = self.shards[shard]
            .commands
            .send_timeout(Command::Add(Box::new(session)), ENGINE_DEADLINE)
            .await
        {
            // The session (its lease, its viewer place) goes with the command.
            self.shared.routes.remove_target(target);
            self.shared.sessions.lock().remove(&id);
            return Err(match e {
                mpsc::error::SendTimeoutError::Timeout(_) => {
                    tracing::warn!(shard, stream = %stream.name(), "media shard overloaded: session refused");
                    NegotiateError::Overloaded
                }
                mpsc::error::SendTimeoutError::Closed(_) => NegotiateError::ShuttingDown,
            });
        }
        tracing::info!(
            session = %session::short(&id),
            stream = %stream.name(),
            role = ?kind,
            shard,
            "session created"
        );
        Ok(Answer {
            session_id: id,
            sdp: answer,
            etag,
        })
    }

    fn entry(&self, id: &str, role: RoleKind, stream: &StreamName) -> Option<SessionEntry> {
        let sessions = self.shared.sessions.lock();
        let e = sessions.get(id)?;
        (e.role == role && &e.stream == stream).then(|| e.clone())
    }

    /// Trickle ICE or ICE restart on a session resource.
    pub async fn patch(
        &self,
        id: &str,
        role: RoleKind,
        stream: &StreamName,
        op: PatchOp,
    ) -> Result<PatchReply, PatchError> {
        let e = self.entry(id, role, stream).ok_or(PatchError::NotFound)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Patch {
            key: e.key,
            op,
            reply,
        };
        let asked = async {
            self.shards[e.shard]
                .commands
                .send(cmd)
                .await
                .map_err(|_| PatchError::NotFound)?;
            rx.await.map_err(|_| PatchError::NotFound)?
        };
        tokio::time::timeout(ENGINE_DEADLINE, asked)
            .await
            .unwrap_or(Err(PatchError::Overloaded))
    }

    /// Ends a session (HTTP DELETE): `Ok(false)` if there is no such session;
    /// an error if its shard did not take the request in time.
    pub async fn delete(
        &self,
        id: &str,
        role: RoleKind,
        stream: &StreamName,
    ) -> Result<bool, NegotiateError> {
        match self.entry(id, role, stream) {
            Some(e) => self.close(e, EndReason::Deleted).await,
            None => Ok(false),
        }
    }

    /// Ends one session of `stream`, publisher or viewer, for an operator:
    /// `Ok(false)` if there is no such session.
    pub async fn end_session(&self, id: &str, stream: &StreamName) -> Result<bool, NegotiateError> {
        let entry = {
            let sessions = self.shared.sessions.lock();
            sessions.get(id).filter(|e| &e.stream == stream).cloned()
        };
        match entry {
            Some(e) => self.close(e, EndReason::Operator).await,
            None => Ok(false),
        }
    }

    /// Ends `stream` for an operator: its publisher's session is closed
    /// (its viewers' end with the stream). `Ok(false)` if it has none.
    pub async fn end_stream(&self, stream: &StreamName) -> Result<bool, NegotiateError> {
        let entry = {
            let sessions = self.shared.sessions.lock();
            sessions
                .values()
                .find(|e| e.role == RoleKind::Publisher && &e.stream == stream)
                .cloned()
        };
        match entry {
            Some(e) => self.close(e, EndReason::Operator).await,
            None => Ok(false),
        }
    }

    /// Every session of `live` (of the stream's `codecs`), oldest first.
    pub fn sessions(&self, live: &LiveStream, codecs: &[String]) -> Vec<SessionInfo> {
        let stream = live.name();
        let sessions = self.shared.sessions.lock();
        let mut out: Vec<(SessionInfo, SystemTime)> = sessions
            .iter()
            .filter(|(_, e)| &e.stream == stream)
            .map(|(id, e)| {
                let v = &e.view;
                let (bytes_in, bytes_out) = v.bytes();
                let (bitrate_in_bps, bitrate_out_bps) = v.bitrates();
                let info = SessionInfo {
                    id: id.clone(),
                    role: match e.role {
                        RoleKind::Publisher => "publisher",
                        RoleKind::Viewer => "viewer",
                    },
                    client_address: v.client.to_string(),
                    since: humantime::format_rfc3339_seconds(v.created).to_string(),
                    codecs: codecs.to_vec(),
                    state: if v.connected() {
                        "connected"
                    } else {
                        "connecting"
                    },
                    bitrate_in_bps,
                    bitrate_out_bps,
                    bytes_in,
                    bytes_out,
                    layer: v.layer().and_then(|l| live.layer_rid(l)),
                };
                (info, v.created)
            })
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.id.cmp(&b.0.id)));
        out.into_iter().map(|(info, _)| info).collect()
    }

    /// Asks the session's shard to end it (`reason`), bounded by [`ENGINE_DEADLINE`].
    async fn close(&self, e: SessionEntry, reason: EndReason) -> Result<bool, NegotiateError> {
        let (done, rx) = oneshot::channel();
        let cmd = Command::Close {
            key: e.key,
            reason,
            done: Some(done),
        };
        let asked = async {
            if self.shards[e.shard].commands.send(cmd).await.is_err() {
                return false;
            }
            rx.await.is_ok()
        };
        tokio::time::timeout(ENGINE_DEADLINE, asked)
            .await
            .map_err(|_| NegotiateError::Overloaded)
    }

    /// Takes every free place of every shard's inbox and holds them while
    /// the returned value lives, as an overloaded engine would: for tests of
    /// what requests get then (503 within [`ENGINE_DEADLINE`]). Datagrams
    /// that arrive meanwhile are dropped and counted, as in real overload.
    #[doc(hidden)]
    pub fn saturate_for_test(&self) -> Saturation {
        let mut permits = Vec::new();
        for shard in &self.shards {
            while let Ok(p) = shard.commands.clone().try_reserve_owned() {
                permits.push(p);
            }
        }
        Saturation { _permits: permits }
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.lock().len()
    }

    /// Whether the router and every shard are still running (the media
    /// socket is bound and read).
    pub fn is_running(&self) -> bool {
        let tasks = self.tasks.lock();
        !tasks.is_empty() && tasks.iter().all(|t| !t.is_finished())
    }

    /// Live sessions by role: (publishers, viewers).
    pub fn role_counts(&self) -> (usize, usize) {
        let sessions = self.shared.sessions.lock();
        let publishers = sessions
            .values()
            .filter(|e| e.role == RoleKind::Publisher)
            .count();
        (publishers, sessions.len() - publishers)
    }

    /// The transport's raw counters (monotonic, for metrics).
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// ICE-TCP counters (monotonic) and the connections open now.
    pub fn tcp_stats(&self) -> (&tcp::TcpCounters, usize) {
        (&self.shared.tcp.counters, self.shared.tcp.len())
    }

    /// Transport counters.
    pub fn stats(&self) -> EngineStats {
        let c = &self.shared.counters;
        EngineStats {
            sessions: self.session_count(),
            routes: self.shared.routes.len(),
            datagrams_in: c.datagrams_in.load(Ordering::Relaxed),
            datagrams_out: c.datagrams_out.load(Ordering::Relaxed),
            unrouted: c.unrouted.load(Ordering::Relaxed),
            shard_full_drops: c.shard_full_drops.load(Ordering::Relaxed),
            bad_datagrams: c.bad_datagrams.load(Ordering::Relaxed),
            send_drops: c.send_drops.load(Ordering::Relaxed),
        }
    }

    /// Ends every session and stops the router and shards.
    pub async fn shutdown(&self) {
        self.shared.hub.close_all();
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Binds the media UDP socket and, with ICE-TCP, the TCP listener on the
/// same address and port number. With port 0 (tests) the OS picks the UDP
/// port, and a few picks are tried until TCP has that number free too.
fn bind_media(
    config: &Config,
) -> Result<(MediaSocket, Option<tokio::net::TcpListener>), EngineError> {
    let addr = config.rtc.udp_listen;
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let socket =
            MediaSocket::bind(addr).map_err(|source| EngineError::Bind { addr, source })?;
        if !config.rtc.ice_tcp {
            return Ok((socket, None));
        }
        let port = socket
            .local_addr()
            .map_err(|source| EngineError::Bind { addr, source })?
            .port();
        let tcp_addr = SocketAddr::new(addr.ip(), port);
        match tcp::bind(tcp_addr) {
            Ok(listener) => return Ok((socket, Some(listener))),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < attempts => {}
            Err(source) => {
                return Err(EngineError::TcpBind {
                    addr: tcp_addr,
                    source,
                });
            }
        }
    }
}

/// 128 random bits as 32 hex characters: session ids and ETags.
fn random_hex() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

/// A fresh ETag value (unquoted).
fn new_etag() -> String {
    random_hex()
}

/// The ICE host candidates to announce: configured public IPs first, then the
/// machine's interface addresses of the socket's family (loopback last).
fn candidate_addresses(config: &Config, local: SocketAddr) -> Vec<SocketAddr> {
    let port = local.port();
    let mut ips: Vec<IpAddr> = config.rtc.announce.clone();
    if !local.ip().is_unspecified() {
        ips.push(local.ip());
    } else if config.rtc.auto_detect_addresses {
        let v6_ok = local.is_ipv6();
        let mut found: Vec<IpAddr> = if_addrs::get_if_addrs()
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.ip())
            .filter(|ip| match ip {
                IpAddr::V4(v4) => !v4.is_link_local(),
                IpAddr::V6(v6) => v6_ok && !v6.is_unicast_link_local(),
            })
            .collect();
        found.sort_by_key(|ip| ip.is_loopback());
        ips.extend(found);
    }
    let mut out: Vec<SocketAddr> = Vec::new();
    for ip in ips {
        let a = SocketAddr::new(ip, port);
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}
