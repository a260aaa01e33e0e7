//! A stream pulled from another WHEP server — in a cluster, the stream's
//! origin node — and served here as if it were published here.
//!
//! castgate answers every session as ICE-lite; for a pull it is the client:
//! a full, controlling ICE agent that makes the offer. Each pull has a UDP
//! socket of its own (the engine's router maps sessions by remote address,
//! and two pulls from one origin would share its address), driven by one
//! task: datagrams in, str0m's frames out into a relayed [`LiveStream`] of
//! the hub. Of a simulcast stream each layer is pulled by a session of its
//! own (the main one also carries the audio), so viewers here choose between
//! the layers as they do at the origin. Keyframe requests from local viewers
//! go upstream, to the pull of the layer asked for (the origin merges them
//! with its own); NACKs are answered on each hop by str0m.
//!
//! The HTTP exchange (POST the offer, DELETE at the end) is the caller's:
//! this floor knows no HTTP.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaData, MediaKind as S0Kind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Engine;
use super::payloads::PayloadCutter;
use super::sdp::OfferSummary;
use crate::media::{CodecParams, Frame, MediaKind, SenderClock};
use crate::names::StreamName;
use crate::stream::{KeyframePacer, LayerId, LiveStream, PublishError, PublisherControl};

/// Largest datagram read.
const RECV_BUF: usize = 2048;
/// Commands queued for a pull's task (keyframe requests merge beyond it).
const COMMANDS: usize = 16;
/// How long a pull may take to connect (ICE + DTLS) before it is given up.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// Why a pull could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The pull's UDP socket.
    #[error("cannot open a UDP socket towards the origin ({addr}): {source}")]
    Socket {
        /// The address tried.
        addr: IpAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// str0m would not make or take the SDP.
    #[error("{0}")]
    Sdp(String),
    /// The origin's answer has no track castgate can carry.
    #[error("the origin's answer has no usable audio or video track")]
    NoTracks,
    /// Something here already carries the name.
    #[error("stream {0:?} is already live on this node")]
    Busy(String),
    /// The hub is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// An offer to pull a stream, ready to POST to the origin.
pub struct UpstreamOffer {
    rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    socket: StdUdpSocket,
    local: SocketAddr,
    sdp: String,
    mids: HashMap<Mid, MediaKind>,
}

impl std::fmt::Debug for UpstreamOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamOffer")
            .field("local", &self.local)
            .finish()
    }
}

impl UpstreamOffer {
    /// The SDP offer: receive-only audio and video, every codec castgate
    /// carries.
    pub fn sdp(&self) -> &str {
        &self.sdp
    }
}

/// Counters of every pull of the process, for metrics.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    /// Pulls running now.
    pub running: AtomicU64,
    /// RTP-carried frames received from origins.
    pub frames_in: AtomicU64,
    /// Datagrams received from origins.
    pub datagrams_in: AtomicU64,
}

/// A running pull: its relayed stream in the hub. Dropping it does not stop
/// the pull; [`Upstream::close`] does (or the stream's end).
#[derive(Debug)]
pub struct Upstream {
    stream: Arc<LiveStream>,
    control: Arc<PullControl>,
    task: JoinHandle<()>,
}

/// A pull of one more simulcast layer into an [`Upstream`]'s stream: it
/// ends with that stream (or on its own, its layer then pausing here).
#[derive(Debug)]
pub struct LayerPull {
    task: JoinHandle<()>,
}

impl Drop for LayerPull {
    fn drop(&mut self) {
        // Its owner (the relay) is gone: so is the pull. Normally it has
        // ended already, with its stream.
        self.task.abort();
    }
}

impl Upstream {
    /// The relayed stream, served to local viewers.
    pub fn stream(&self) -> &Arc<LiveStream> {
        &self.stream
    }

    /// Ends the pull (the stream ends here; its viewers see it end).
    pub fn close(&self) {
        self.control.close();
    }

    /// Whether the pull's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

enum PullCommand {
    Keyframe,
    Close,
}

/// How the hub reaches the pulls' tasks: the main pull (audio and one video
/// layer) and, of a simulcast stream, one pull per other layer.
#[derive(Debug)]
struct PullControl {
    main: mpsc::Sender<PullCommand>,
    layers: parking_lot::Mutex<Vec<(LayerId, mpsc::Sender<PullCommand>)>>,
}

impl PullControl {
    fn senders(&self) -> Vec<mpsc::Sender<PullCommand>> {
        let mut all = vec![self.main.clone()];
        all.extend(self.layers.lock().iter().map(|(_, tx)| tx.clone()));
        all
    }
}

impl PublisherControl for PullControl {
    fn request_keyframe(&self, layer: LayerId) {
        let tx = self
            .layers
            .lock()
            .iter()
            .find(|(l, _)| *l == layer)
            .map(|(_, tx)| tx.clone());
        let _ = tx
            .as_ref()
            .unwrap_or(&self.main)
            .try_send(PullCommand::Keyframe);
    }

    fn set_periodic_keyframes(&self, _on: bool) {
        // Relayed streams feed no recorder or restream: nothing periodic.
    }

    fn close(&self) {
        for tx in self.senders() {
            if tx.try_send(PullCommand::Close).is_err() {
                tokio::spawn(async move {
                    let _ = tx.send(PullCommand::Close).await;
                });
            }
        }
    }
}

impl Engine {
    /// Makes an offer to pull a stream from a WHEP server at `server`: a
    /// socket of its own (on loopback for a loopback server, else on every
    /// address, announcing the one the kernel routes towards the server).
    pub fn upstream_offer(&self, server: IpAddr) -> Result<UpstreamOffer, UpstreamError> {
        self.offer_to_pull(server, &[S0Kind::Audio, S0Kind::Video])
    }

    /// [`Engine::upstream_offer`] for one more simulcast layer of a pull:
    /// video only.
    pub fn upstream_layer_offer(&self, server: IpAddr) -> Result<UpstreamOffer, UpstreamError> {
        self.offer_to_pull(server, &[S0Kind::Video])
    }

    fn offer_to_pull(
        &self,
        server: IpAddr,
        kinds: &[S0Kind],
    ) -> Result<UpstreamOffer, UpstreamError> {
        let bind_ip: IpAddr = if server.is_loopback() {
            server
        } else if server.is_ipv6() {
            IpAddr::from([0u16; 8])
        } else {
            IpAddr::from([0u8; 4])
        };
        let socket_error = |source| UpstreamError::Socket {
            addr: server,
            source,
        };
        let socket = StdUdpSocket::bind(SocketAddr::new(bind_ip, 0)).map_err(socket_error)?;
        let mut local = socket.local_addr().map_err(socket_error)?;
        if local.ip().is_unspecified() {
            let probe = StdUdpSocket::bind(SocketAddr::new(bind_ip, 0)).map_err(socket_error)?;
            probe
                .connect(SocketAddr::new(server, 9))
                .map_err(socket_error)?;
            local.set_ip(probe.local_addr().map_err(socket_error)?.ip());
        }
        let mut builder = Rtc::builder()
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.dtls_cert.clone())
            .set_stats_interval(Some(super::STATS_INTERVAL));
        // Every codec str0m knows but H.265 (castgate carries none of it).
        builder.codec_config().enable_h265(false);
        // Nominate as fast as browsers do (str0m waits one RTO by default).
        builder.set_initial_stun_rto(Duration::from_millis(50));
        let mut rtc = builder.build(Instant::now());
        let candidate =
            Candidate::host(local, "udp").map_err(|e| UpstreamError::Sdp(e.to_string()))?;
        if rtc.add_local_candidate(candidate).is_none() {
            return Err(UpstreamError::Sdp(format!(
                "str0m refused the host candidate {local}"
            )));
        }
        let mut api = rtc.sdp_api();
        let mut mids = HashMap::new();
        for &kind in kinds {
            let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
            let kind = match kind {
                S0Kind::Audio => MediaKind::Audio,
                S0Kind::Video => MediaKind::Video,
            };
            mids.insert(mid, kind);
        }
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| UpstreamError::Sdp("nothing to offer".into()))?;
        Ok(UpstreamOffer {
            rtc,
            pending: Some(pending),
            socket,
            local,
            sdp: offer.to_sdp_string(),
            mids,
        })
    }

    /// Applies the origin's `answer` to `offer` and starts the pull: the
    /// stream `name` is relayed here (marked as carried by `origin`) until
    /// the pull is closed, the origin closes it, or nothing arrives for
    /// `silence`. Of a simulcast stream, `layers` are the origin's rids,
    /// smallest first, and this pull carries the top layer's video (the
    /// others come with [`Engine::upstream_add_layer`]); `layers` is empty
    /// otherwise.
    pub fn upstream_start(
        &self,
        offer: UpstreamOffer,
        answer: &str,
        name: StreamName,
        origin: &str,
        silence: Duration,
        layers: &[String],
    ) -> Result<Upstream, UpstreamError> {
        let tracks = answer_tracks(answer);
        if tracks.is_empty() {
            return Err(UpstreamError::NoTracks);
        }
        let accepted = accept(offer, answer)?;
        let (tx, rx) = mpsc::channel(COMMANDS);
        let control = Arc::new(PullControl {
            main: tx,
            layers: parking_lot::Mutex::new(Vec::new()),
        });
        let stream = self
            .shared
            .hub
            .relay(name, tracks, layers, control.clone(), origin)
            .map_err(|e| match e {
                PublishError::Busy(n) => UpstreamError::Busy(n),
                PublishError::ShuttingDown => UpstreamError::ShuttingDown,
            })?;
        let top = layers.len().saturating_sub(1) as LayerId;
        let pull = self.pull(accepted, stream.clone(), rx, silence, top, true);
        let task = tokio::spawn(pull.run());
        Ok(Upstream {
            stream,
            control,
            task,
        })
    }

    /// Applies the origin's `answer` to a [`Engine::upstream_layer_offer`]
    /// and pulls simulcast layer `layer` into `upstream`'s stream, until that
    /// stream ends (or the origin ends this pull, or is silent for
    /// `silence`).
    pub fn upstream_add_layer(
        &self,
        upstream: &Upstream,
        offer: UpstreamOffer,
        answer: &str,
        layer: LayerId,
        silence: Duration,
    ) -> Result<LayerPull, UpstreamError> {
        let accepted = accept(offer, answer)?;
        let (tx, rx) = mpsc::channel(COMMANDS);
        upstream.control.layers.lock().push((layer, tx));
        let pull = self.pull(accepted, upstream.stream.clone(), rx, silence, layer, false);
        Ok(LayerPull {
            task: tokio::spawn(pull.run()),
        })
    }

    fn pull(
        &self,
        accepted: Accepted,
        stream: Arc<LiveStream>,
        commands: mpsc::Receiver<PullCommand>,
        silence: Duration,
        layer: LayerId,
        main: bool,
    ) -> Pull {
        Pull {
            rtc: accepted.rtc,
            socket: accepted.socket,
            local: accepted.local,
            stream,
            hub: self.shared.hub.clone(),
            kinds: accepted.mids,
            video_mid: None,
            layer,
            main,
            cutters: HashMap::new(),
            commands,
            silence,
            pacer: KeyframePacer::new(self.config.keyframes.min_interval()),
            counters: self.upstream.clone(),
        }
    }

    /// Counters of every pull of the process.
    pub fn upstream_counters(&self) -> &Arc<UpstreamCounters> {
        &self.upstream
    }
}

/// An offer the origin answered: what a pull's task runs on.
struct Accepted {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mids: HashMap<Mid, MediaKind>,
}

/// Applies the origin's `answer` to `offer` and hands its socket to the
/// runtime.
fn accept(mut offer: UpstreamOffer, answer: &str) -> Result<Accepted, UpstreamError> {
    let parsed =
        SdpAnswer::from_sdp_string(answer).map_err(|e| UpstreamError::Sdp(e.to_string()))?;
    let pending = offer
        .pending
        .take()
        .ok_or_else(|| UpstreamError::Sdp("answer already applied".into()))?;
    offer
        .rtc
        .sdp_api()
        .accept_answer(pending, parsed)
        .map_err(|e| UpstreamError::Sdp(format!("the origin's answer was refused: {e}")))?;
    let local = offer.local;
    let socket_error = |source| UpstreamError::Socket {
        addr: local.ip(),
        source,
    };
    offer.socket.set_nonblocking(true).map_err(socket_error)?;
    let socket = UdpSocket::from_std(offer.socket).map_err(socket_error)?;
    Ok(Accepted {
        rtc: offer.rtc,
        socket,
        local,
        mids: offer.mids,
    })
}

/// The codecs the origin answered with, one per kind (the first castgate
/// carries in each active section).
fn answer_tracks(answer: &str) -> Vec<CodecParams> {
    let Ok(summary) = OfferSummary::parse(answer) else {
        return Vec::new();
    };
    let mut tracks = Vec::new();
    for kind in ["audio", "video"] {
        if let Some(p) = summary
            .active(kind)
            .next()
            .and_then(|s| s.codecs.iter().find_map(|c| c.params()))
        {
            tracks.push(p);
        }
    }
    tracks
}

/// One pull's state, owned by its task.
struct Pull {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    stream: Arc<LiveStream>,
    hub: Arc<crate::stream::Hub>,
    kinds: HashMap<Mid, MediaKind>,
    video_mid: Option<Mid>,
    /// The simulcast layer its video is (0 without simulcast).
    layer: LayerId,
    /// Whether it is the stream's main pull (its end ends the stream) rather
    /// than one more layer's.
    main: bool,
    cutters: HashMap<(MediaKind, LayerId), Option<PayloadCutter>>,
    commands: mpsc::Receiver<PullCommand>,
    silence: Duration,
    /// Keyframe requests upstream, paced and re-sent when unanswered, as a
    /// publisher session's are (the origin's browser drops requests that
    /// come too close together).
    pacer: KeyframePacer,
    counters: Arc<UpstreamCounters>,
}

impl Pull {
    async fn run(mut self) {
        self.counters.running.fetch_add(1, Ordering::Relaxed);
        let reason = self.drive().await;
        self.counters.running.fetch_sub(1, Ordering::Relaxed);
        if self.rtc.is_alive() {
            // RTCP BYE and DTLS close_notify: the origin ends its session at once.
            self.rtc.disconnect();
        }
        if self.main {
            tracing::info!(stream = %self.stream.name(), reason, "relay ended");
            self.hub.remove(&self.stream, reason);
        } else {
            tracing::info!(stream = %self.stream.name(), layer = self.layer, reason, "relay of a layer ended");
        }
    }

    /// Runs until the pull ends; why.
    async fn drive(&mut self) -> &'static str {
        let mut buf = vec![0u8; RECV_BUF];
        let started = Instant::now();
        let mut heard = Instant::now();
        let mut connected = false;
        loop {
            let timeout = match self.drain(&mut connected) {
                Ok(t) => t,
                Err(reason) => return reason,
            };
            if self.stream.is_ended() {
                return "stream_ended";
            }
            let now = Instant::now();
            if !connected && now.saturating_duration_since(started) > CONNECT_WITHIN {
                return "connect_timeout";
            }
            if now.saturating_duration_since(heard) > self.silence {
                return "origin_silent";
            }
            let mut wake = timeout.min(heard + self.silence);
            if let Some(d) = self.pacer.next_deadline() {
                wake = wake.min(d);
            }
            let wake = wake.max(now);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = r else { continue };
                    heard = Instant::now();
                    self.counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
                    let Some(data) = buf.get(..n) else { continue };
                    let Ok(contents) = data.try_into() else { continue };
                    let input = Input::Receive(
                        heard,
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.local,
                            contents,
                        },
                    );
                    if self.rtc.handle_input(input).is_err() {
                        // A datagram str0m could not take (not ours, garbled): drop it.
                        continue;
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                        return "failed";
                    }
                    if self.pacer.poll(now) {
                        self.send_keyframe_request();
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(PullCommand::Keyframe) => {
                        if self.pacer.ask(Instant::now()) {
                            self.send_keyframe_request();
                        }
                    }
                    Some(PullCommand::Close) | None => return "closed",
                },
            }
        }
    }

    /// Sends what str0m has to send and handles its events; the next timeout.
    fn drain(&mut self, connected: &mut bool) -> Result<Instant, &'static str> {
        loop {
            if !self.rtc.is_alive() {
                return Err("origin_closed");
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => {
                    // A full socket buffer drops the datagram: UDP semantics.
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        *connected = true;
                        tracing::info!(stream = %self.stream.name(), "relay connected to the origin");
                    }
                    Event::MediaAdded(m) if m.kind == S0Kind::Video => {
                        self.video_mid = Some(m.mid);
                    }
                    Event::MediaData(data) => self.on_media(data),
                    _ => {}
                },
                Err(_) => return Err("failed"),
            }
        }
    }

    fn send_keyframe_request(&mut self) {
        let mid = self.video_mid.or_else(|| {
            self.kinds
                .iter()
                .find(|(_, k)| **k == MediaKind::Video)
                .map(|(m, _)| *m)
        });
        super::session::send_keyframe_request(&mut self.rtc, mid, None);
    }

    fn on_media(&mut self, data: MediaData) {
        if data.data.is_empty() {
            return;
        }
        let Some(kind) = self.kinds.get(&data.mid).copied() else {
            return;
        };
        let Some(params) = self.stream.track(kind) else {
            return;
        };
        self.counters.frames_in.fetch_add(1, Ordering::Relaxed);
        let frame = frame_of(params, data, self.layer, &mut self.cutters);
        if kind == MediaKind::Video && frame.keyframe {
            self.pacer.keyframe_received(Instant::now());
        }
        if kind == MediaKind::Video && frame.after_loss && self.pacer.ask(Instant::now()) {
            // Lost upstream packets we could not recover: the picture is
            // broken here until the next keyframe, so ask for one.
            self.send_keyframe_request();
        }
        self.stream.publish(frame);
    }
}

/// A hub frame of simulcast layer `layer` (0 without simulcast) from what
/// str0m depacketized, with its RTP payloads cut once for every viewer
/// (shared with the publisher sessions; one cutter per track and layer, as
/// H.264's keeps each layer's parameter sets).
pub(super) fn frame_of(
    params: CodecParams,
    data: MediaData,
    layer: LayerId,
    cutters: &mut HashMap<(MediaKind, LayerId), Option<PayloadCutter>>,
) -> Frame {
    let kind = params.codec.kind();
    let keyframe = kind != MediaKind::Video || data.is_keyframe();
    let clock = super::session::frequency(params.clock_rate);
    let time = data.time.rebase(clock);
    let rtp_payloads = cutters
        .entry((kind, layer))
        .or_insert_with(|| PayloadCutter::for_codec(params.codec))
        .as_mut()
        .map(|c| c.cut(&data.data))
        .unwrap_or_default();
    Frame {
        params,
        keyframe,
        rtp_time: time.numer(),
        arrival: data.network_time,
        sender_clock: data.last_sender_info.map(|s| SenderClock {
            ntp_time: s.ntp_time,
            rtp_time: s.rtp_time.rebase(clock).numer(),
        }),
        after_loss: !data.contiguous,
        layer: if kind == MediaKind::Video { layer } else { 0 },
        data: data.data,
        rtp_payloads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Codec;

    #[test]
    fn the_answer_names_the_stream_codecs() {
        let answer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
            a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";
        let tracks = answer_tracks(answer);
        let codecs: Vec<Codec> = tracks.iter().map(|t| t.codec).collect();
        assert_eq!(codecs, [Codec::Opus, Codec::Vp8]);
        assert!(answer_tracks("not sdp").is_empty());
    }
}
