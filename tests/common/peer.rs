//! Real WebRTC test clients for castgate: a WHIP publisher and a WHEP viewer.
//!
//! Each peer is a str0m [`Rtc`] driven by one tokio task that owns a UDP socket
//! bound to `127.0.0.1:0` — or, with [`PeerOptions::over_tcp`], one TCP
//! connection to the server's passive ICE-TCP candidate (RFC 6544, RFC 4571
//! framing) and no UDP at all. The peer is a full ICE agent (controlling); the
//! server answers as ICE-lite. Dropping a [`Publisher`] or [`Viewer`] stops its
//! task and closes its socket without telling the server (like [`Publisher::vanish`]).

use std::fmt;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::media::EncodedFrame;

/// How long `connect` waits for ICE + DTLS to come up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Capacity of a viewer's queue of received frames; frames beyond it are dropped and counted.
pub const FRAME_QUEUE: usize = 4096;

/// Capacity of the command queue into a peer's task.
const COMMAND_QUEUE: usize = 256;
/// The "rid" of the one layer of a publisher without simulcast in
/// [`Publisher::play_layers_answering`]: sent without a rid.
const NO_RID: &str = "";

/// Largest UDP datagram the peer reads.
const RECV_BUF: usize = 2048;

/// How long a graceful close may take to flush RTCP BYE and DTLS close_notify.
const CLOSE_DRAIN: Duration = Duration::from_millis(500);

/// How long stopping a peer waits for its task before aborting it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeout of every HTTP request a peer makes.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of a peer: bearer token and which tracks / codecs it offers.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Sent as `Authorization: Bearer <token>` on POST and DELETE.
    pub token: Option<String>,
    /// Publisher: the one video codec offered (`None`: no video track).
    /// Viewer: the one video codec accepted (`None`: all of VP8, VP9, H.264, AV1).
    pub video: Option<VideoCodec>,
    /// Whether an Opus audio track is offered.
    pub audio: bool,
    /// The address of the peer's host candidate (`127.0.0.1` unless set).
    pub bind: std::net::IpAddr,
    /// ICE-TCP only: one active TCP candidate, connected to the server's
    /// passive TCP candidate; no UDP socket, so UDP candidates cannot be used.
    pub tcp: bool,
    /// Viewer only: throw away every n-th RTP packet of the video's primary
    /// payload type before str0m sees it (a lossy link), so str0m must NACK
    /// and the gateway retransmit.
    pub lose_video_every: Option<u32>,
    /// Publisher only: the video is sent in simulcast layers with these
    /// rids (RFC 8853), written with [`Publisher::play_layers`].
    pub simulcast: Vec<String>,
    /// The network namespace the peer's UDP socket lives in (another host),
    /// `None`: this process's.
    pub netns: Option<String>,
}

impl Default for PeerOptions {
    /// No tracks, no token, on 127.0.0.1.
    fn default() -> Self {
        PeerOptions::new(None, false)
    }
}

impl PeerOptions {
    /// Options with the given video codec and audio, and no token.
    pub fn new(video: Option<VideoCodec>, audio: bool) -> Self {
        PeerOptions {
            token: None,
            video,
            audio,
            bind: std::net::Ipv4Addr::LOCALHOST.into(),
            tcp: false,
            lose_video_every: None,
            simulcast: Vec::new(),
            netns: None,
        }
    }

    /// The same options with the UDP socket in the network namespace `name`.
    pub fn in_netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_string());
        self
    }

    /// The same options for a publisher sending its video in simulcast
    /// layers named `rids`.
    pub fn with_simulcast(mut self, rids: &[&str]) -> Self {
        self.simulcast = rids.iter().map(|r| r.to_string()).collect();
        self
    }

    /// The same options over ICE-TCP only (see [`PeerOptions::tcp`]).
    pub fn over_tcp(mut self) -> Self {
        self.tcp = true;
        self
    }

    /// The same options for a viewer that loses every n-th video packet
    /// (see [`PeerOptions::lose_video_every`]).
    pub fn losing_video_every(mut self, n: u32) -> Self {
        self.lose_video_every = Some(n.max(2));
        self
    }

    /// The same options with the host candidate on `ip` (e.g. `::1`).
    pub fn bound_to(mut self, ip: std::net::IpAddr) -> Self {
        self.bind = ip;
        self
    }

    /// The same options with a bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// A video codec the test peers can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// VP8.
    Vp8,
    /// VP9, profile 0.
    Vp9,
    /// H.264 constrained baseline (42e01f), packetization-mode=1.
    H264,
    /// AV1.
    Av1,
}

impl VideoCodec {
    /// Every codec, in a fixed order.
    pub const ALL: [VideoCodec; 4] = [
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::H264,
        VideoCodec::Av1,
    ];

    /// The str0m codec.
    pub fn codec(self) -> Codec {
        match self {
            VideoCodec::Vp8 => Codec::Vp8,
            VideoCodec::Vp9 => Codec::Vp9,
            VideoCodec::H264 => Codec::H264,
            VideoCodec::Av1 => Codec::Av1,
        }
    }
}

/// Whether a frame is audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Audio (Opus).
    Audio,
    /// Video.
    Video,
}

/// A whole frame received by a [`Viewer`] (str0m frame mode, depacketized).
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    /// Audio or video.
    pub kind: Kind,
    /// The frame's bytes.
    pub data: Vec<u8>,
    /// RTP time (extended, not wrapped) at the codec clock rate: 90 kHz video, 48 kHz Opus.
    #[allow(dead_code, reason = "read by the benchmarks (examples/)")]
    pub rtp_time: u64,
    /// Whether str0m saw a keyframe (VP8/VP9/H.264/AV1; always false for audio).
    pub keyframe: bool,
    /// False when packets were missing between this frame and the previous one.
    pub contiguous: bool,
    /// When the frame left str0m in the viewer's task.
    #[allow(dead_code, reason = "read by the benchmarks (examples/)")]
    pub arrived: Instant,
}

/// A non-2xx/unexpected HTTP answer; reach it with `err.downcast_ref::<HttpError>()`.
#[derive(Debug, Clone)]
pub struct HttpError {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// The response headers (e.g. `Retry-After` on a WHEP 409).
    pub headers: reqwest::header::HeaderMap,
    /// The response body (the server's reason).
    pub body: String,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl std::error::Error for HttpError {}

/// What the server answered to the POST that created a session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Absolute URL of the session resource (`Location` resolved against the POST URL).
    pub resource_url: String,
    /// The `ETag` header of the 201, if any.
    pub etag: Option<String>,
    /// The SDP offer that was sent.
    pub offer_sdp: String,
    /// The SDP answer that came back.
    pub answer_sdp: String,
}

/// An SDP offer with the `Rtc` and socket that made it (see [`make_offer`]).
pub struct Offer {
    /// The peer's engine, with the host candidate added and the offer pending.
    pub rtc: Rtc,
    /// The offer as SDP text.
    pub sdp: String,
    /// What [`Offer::accept_answer`] needs to apply the answer (`None` once applied).
    pub pending: Option<SdpPendingOffer>,
    /// The socket of the host candidate (`127.0.0.1:<port>`), not yet registered with tokio.
    pub socket: PeerSocket,
    /// Mid of the audio m-line, if any.
    pub audio_mid: Option<Mid>,
    /// Mid of the video m-line, if any.
    pub video_mid: Option<Mid>,
    /// The codec a publisher sends (`None` for a viewer or no video).
    pub send_video: Option<VideoCodec>,
}

impl Offer {
    /// Applies the SDP answer text to the pending offer (once).
    pub fn accept_answer(&mut self, answer_sdp: &str) -> anyhow::Result<()> {
        let answer = SdpAnswer::from_sdp_string(answer_sdp)
            .map_err(|e| anyhow!("unparsable SDP answer: {e}"))?;
        let pending = self
            .pending
            .take()
            .context("the answer was already applied")?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .context("SDP answer rejected by str0m")?;
        Ok(())
    }
}

/// The socket behind a peer's one host candidate.
pub enum PeerSocket {
    /// A UDP socket (the default).
    Udp(std::net::UdpSocket),
    /// A bound, not yet connected TCP socket (active ICE-TCP candidate).
    Tcp(TcpSocket),
}

/// Installs str0m's aws-lc-rs crypto as the process default (idempotent).
fn init_crypto() {
    static INIT: Once = Once::new();
    INIT.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// Makes an `Rtc` with a host candidate on a fresh `127.0.0.1:0` socket and an SDP offer.
///
/// `recv == false` (publisher): sendonly audio m-line if `opts.audio`, sendonly video
/// m-line offering only `opts.video` if set. `recv == true` (viewer): recvonly audio
/// m-line if `opts.audio`, and always a recvonly video m-line offering `opts.video`, or
/// VP8, VP9, H.264 and AV1 when `None`. Opus is the only audio codec. The m-lines are in
/// the order audio, video.
pub fn make_offer(opts: &PeerOptions, recv: bool) -> anyhow::Result<Offer> {
    init_crypto();

    // Browsers send their first audio sender report after ~2.5 s (libwebrtc
    // starts at half its 5 s interval); str0m's default would wait 5 s.
    let mut cfg = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .set_rtcp_report_interval_audio(Duration::from_secs(2));
    let video_codecs: Vec<VideoCodec> = match (opts.video, recv) {
        (Some(c), _) => vec![c],
        (None, true) => VideoCodec::ALL.to_vec(),
        (None, false) => vec![],
    };
    for codec in &video_codecs {
        cfg = match codec {
            VideoCodec::Vp8 => cfg.enable_vp8(true),
            VideoCodec::Av1 => cfg.enable_av1(true),
            // A viewer takes any profile; a publisher's encoder makes profile 0 / 42e01f only.
            VideoCodec::Vp9 if recv => cfg.enable_vp9(true),
            VideoCodec::H264 if recv => cfg.enable_h264(true),
            VideoCodec::Vp9 => {
                cfg.codec_config().add_config(
                    98.into(),
                    Some(99.into()),
                    Codec::Vp9,
                    Frequency::NINETY_KHZ,
                    None,
                    FormatParams {
                        profile_id: Some(0),
                        ..Default::default()
                    },
                );
                cfg
            }
            VideoCodec::H264 => {
                cfg.codec_config()
                    .add_h264(108.into(), Some(109.into()), true, 0x42e01f);
                cfg
            }
        };
    }

    let (socket, local) = bind_socket(opts)?;
    let candidate = match socket {
        PeerSocket::Udp(_) => Candidate::host(local, "udp"),
        PeerSocket::Tcp(_) => Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(TcpType::Active)
            .build(),
    }
    .map_err(|e| anyhow!("host candidate: {e}"))?;
    let mut rtc = cfg.build(Instant::now());
    if rtc.add_local_candidate(candidate).is_none() {
        bail!("str0m refused the host candidate {local}");
    }

    let dir = if recv {
        Direction::RecvOnly
    } else {
        Direction::SendOnly
    };
    let mut api = rtc.sdp_api();
    let audio_mid = opts
        .audio
        .then(|| api.add_media(MediaKind::Audio, dir, None, None, None));
    let simulcast = (!recv && !opts.simulcast.is_empty()).then(|| {
        let mut s = str0m::media::Simulcast::new();
        s.send = opts
            .simulcast
            .iter()
            .map(|r| str0m::media::SimulcastLayer::new(r))
            .collect();
        s
    });
    let video_mid = (!video_codecs.is_empty())
        .then(|| api.add_media(MediaKind::Video, dir, None, None, simulcast));
    let (offer, pending) = api
        .apply()
        .context("nothing to offer: no audio and no video")?;

    Ok(Offer {
        rtc,
        sdp: offer.to_sdp_string(),
        pending: Some(pending),
        socket,
        audio_mid,
        video_mid,
        send_video: if recv { None } else { opts.video },
    })
}

/// A socket on `opts.bind` with a free port: UDP, or TCP (bound, not connected).
fn bind_socket(opts: &PeerOptions) -> anyhow::Result<(PeerSocket, std::net::SocketAddr)> {
    let addr = std::net::SocketAddr::new(opts.bind, 0);
    if !opts.tcp {
        let socket = match &opts.netns {
            Some(ns) => super::netns::udp_socket_in(ns, addr),
            None => std::net::UdpSocket::bind(addr),
        }
        .with_context(|| format!("binding {addr}"))?;
        let local = socket.local_addr().context("local address")?;
        return Ok((PeerSocket::Udp(socket), local));
    }
    let socket = if opts.bind.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("TCP socket")?;
    socket
        .bind(addr)
        .with_context(|| format!("binding TCP {addr}"))?;
    let local = socket.local_addr().context("local address")?;
    Ok((PeerSocket::Tcp(socket), local))
}

/// The server's passive ICE-TCP candidates in an SDP answer.
pub fn passive_tcp_candidates(answer_sdp: &str) -> Vec<std::net::SocketAddr> {
    answer_sdp
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"))
        .filter_map(|l| Candidate::from_sdp_string(l).ok())
        .filter(|c| c.proto() == Protocol::Tcp && c.tcptype() == Some(TcpType::Passive))
        .map(|c| c.addr())
        .collect()
}

/// RFC 4571: `packet` behind its 16-bit big-endian length.
pub fn frame_rfc4571(packet: &[u8]) -> Vec<u8> {
    let mut out = (packet.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(packet);
    out
}

/// The transport of a running peer.
enum Link {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
        /// Bytes read that do not make a whole RFC 4571 frame yet.
        pending: Vec<u8>,
    },
}

impl Link {
    /// Registers the socket with tokio; a TCP socket connects to the server's
    /// passive candidate of the same family from the answer.
    async fn open(socket: PeerSocket, answer_sdp: &str) -> anyhow::Result<Link> {
        match socket {
            PeerSocket::Udp(socket) => {
                socket
                    .set_nonblocking(true)
                    .context("socket non-blocking")?;
                Ok(Link::Udp(
                    UdpSocket::from_std(socket).context("registering the socket")?,
                ))
            }
            PeerSocket::Tcp(socket) => {
                let local = socket.local_addr().context("local address")?;
                let remote = passive_tcp_candidates(answer_sdp)
                    .into_iter()
                    .find(|a| a.is_ipv4() == local.is_ipv4())
                    .context("the answer has no passive TCP candidate")?;
                let stream = socket
                    .connect(remote)
                    .await
                    .with_context(|| format!("connecting to {remote}"))?;
                stream.set_nodelay(true).context("nodelay")?;
                Ok(Link::Tcp {
                    stream,
                    local,
                    remote,
                    pending: Vec::new(),
                })
            }
        }
    }

    /// Receives the next packet as str0m input parts (cancel-safe: bytes read
    /// stay in `pending`).
    async fn recv(
        &mut self,
        buf: &mut [u8],
    ) -> std::io::Result<(
        Protocol,
        std::net::SocketAddr,
        std::net::SocketAddr,
        Vec<u8>,
    )> {
        match self {
            Link::Udp(socket) => {
                let local = socket.local_addr()?;
                let (n, source) = socket.recv_from(buf).await?;
                Ok((Protocol::Udp, source, local, buf[..n].to_vec()))
            }
            Link::Tcp {
                stream,
                local,
                remote,
                pending,
            } => loop {
                if pending.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
                    if pending.len() >= 2 + len {
                        let packet = pending[2..2 + len].to_vec();
                        pending.drain(..2 + len);
                        return Ok((Protocol::Tcp, *remote, *local, packet));
                    }
                }
                let n = stream.read(buf).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                pending.extend_from_slice(&buf[..n]);
            },
        }
    }

    /// Sends a str0m transmit; only TCP errors are fatal (a lost datagram is not).
    async fn send(&mut self, t: &Transmit) -> Result<(), String> {
        match self {
            Link::Udp(socket) => {
                let _ = socket.send_to(&t.contents, t.destination).await;
                Ok(())
            }
            Link::Tcp { stream, remote, .. } if t.destination == *remote => stream
                .write_all(&frame_rfc4571(&t.contents))
                .await
                .map_err(|e| format!("TCP write: {e}")),
            Link::Tcp { .. } => Ok(()),
        }
    }
}

/// The value of the first `a=<name>:<value>` line of `sdp` (e.g. `ice-ufrag`, `fingerprint`).
pub fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix("a=")?
            .strip_prefix(name)?
            .strip_prefix(':')
    })
}

/// An HTTP client for the peers: no proxy (tests talk to loopback), 10 s timeout.
///
/// Make one per test / runtime: a client's pooled connections die with the runtime.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

/// POSTs `sdp` as `application/sdp` to `url` (with an optional bearer token) and returns
/// the raw response, whatever its status.
pub async fn post_offer(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    sdp: &str,
) -> anyhow::Result<reqwest::Response> {
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/sdp")
        .body(sdp.to_owned());
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.with_context(|| format!("POST {url}"))
}

/// Sends DELETE to a session resource (with an optional bearer token) and returns the status.
pub async fn delete_resource(
    client: &reqwest::Client,
    resource_url: &str,
    token: Option<&str>,
) -> anyhow::Result<reqwest::StatusCode> {
    let mut req = client.delete(resource_url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("DELETE {resource_url}"))?;
    Ok(resp.status())
}

/// Where a peer's connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Connecting,
    Connected,
    Ended(String),
}

/// Counters a peer's task updates.
#[derive(Debug, Default)]
struct Counters {
    keyframe_requests: AtomicU64,
    /// The simulcast layers (rids) asked for a keyframe and not sent one yet.
    keyframes_wanted: std::sync::Mutex<std::collections::HashSet<String>>,
    frames_dropped: AtomicU64,
    video_packets_lost: AtomicU64,
}

/// A simulated lossy link: every `every`-th RTP packet of payload type `pt`.
struct Loss {
    every: u32,
    pt: u8,
    seen: u32,
}

impl Loss {
    /// Whether this datagram is lost (counted among the packets of `pt`).
    fn drops(&mut self, datagram: &[u8]) -> bool {
        let rtp = datagram.len() >= 12 && datagram[0] >> 6 == 2;
        // RTCP's packet types (200–207) never equal a dynamic payload type.
        if !rtp || datagram[1] & 0x7f != self.pt {
            return false;
        }
        self.seen += 1;
        self.seen.is_multiple_of(self.every)
    }
}

/// The first payload type of the answer's video section (its primary codec).
fn video_payload_type(answer_sdp: &str) -> Option<u8> {
    answer_sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=video "))?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// A request to a peer's task.
enum Command {
    Write {
        kind: Kind,
        data: Vec<u8>,
        rtp_time: u64,
        captured: Option<Instant>,
        /// The simulcast layer of a video frame.
        rid: Option<String>,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    Stop {
        graceful: bool,
    },
}

/// The shared part of a publisher and a viewer: HTTP session plus the running task.
struct Peer {
    info: SessionInfo,
    token: Option<String>,
    client: reqwest::Client,
    cmd: mpsc::Sender<Command>,
    state: watch::Receiver<State>,
    counters: Arc<Counters>,
    task: Option<JoinHandle<()>>,
}

impl Peer {
    /// POSTs the offer, applies the answer, starts the task, waits for `Event::Connected`.
    async fn connect(
        url: &str,
        opts: &PeerOptions,
        recv: bool,
        frames: Option<mpsc::Sender<ReceivedFrame>>,
    ) -> anyhow::Result<Peer> {
        let client = http_client()?;
        let mut offer = make_offer(opts, recv)?;
        let resp = post_offer(&client, url, opts.token.as_deref(), &offer.sdp).await?;

        let status = resp.status();
        let headers = resp.headers().clone();
        // After a redirect (a cluster node sending the viewer to the stream's
        // origin), the session resource is relative to where the answer came from.
        let answered_at = resp.url().clone();
        let body = resp.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::CREATED {
            return Err(HttpError {
                status,
                headers,
                body,
            }
            .into());
        }
        let location = headers
            .get(reqwest::header::LOCATION)
            .context("201 without Location")?
            .to_str()
            .context("Location is not ASCII")?;
        let resource_url = answered_at
            .join(location)
            .with_context(|| format!("bad Location {location}"))?
            .to_string();
        let header_strings = |name: reqwest::header::HeaderName| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect::<Vec<_>>()
        };
        let info = SessionInfo {
            resource_url,
            etag: header_strings(reqwest::header::ETAG).into_iter().next(),
            offer_sdp: offer.sdp.clone(),
            answer_sdp: body,
        };

        let started = match offer.accept_answer(&info.answer_sdp) {
            Ok(()) => {
                let loss = opts
                    .lose_video_every
                    .zip(video_payload_type(&info.answer_sdp))
                    .map(|(every, pt)| Loss { every, pt, seen: 0 });
                Peer::spawn(offer, &info.answer_sdp, frames, loss).await
            }
            Err(e) => Err(e),
        };
        let (cmd, state, counters, task) = match started {
            Ok(v) => v,
            Err(e) => {
                // Best effort: do not leave the server's session behind.
                let _ = delete_resource(&client, &info.resource_url, opts.token.as_deref()).await;
                return Err(e);
            }
        };

        let mut peer = Peer {
            info,
            token: opts.token.clone(),
            client,
            cmd,
            state,
            counters,
            task: Some(task),
        };

        let mut rx = peer.state.clone();
        let waited = tokio::time::timeout(
            CONNECT_TIMEOUT,
            rx.wait_for(|s| !matches!(s, State::Connecting)),
        )
        .await;
        let outcome = match waited {
            Ok(Ok(s)) => s.clone(),
            Ok(Err(_)) => State::Ended("peer task gone".into()),
            Err(_) => State::Connecting,
        };
        match outcome {
            State::Connected => Ok(peer),
            other => {
                let _ = peer.delete().await;
                match other {
                    State::Ended(reason) => bail!("connection failed: {reason}"),
                    _ => bail!("not connected (ICE + DTLS) within {CONNECT_TIMEOUT:?}"),
                }
            }
        }
    }

    /// Starts the peer task for an offer whose answer has been applied.
    #[allow(clippy::type_complexity)]
    async fn spawn(
        offer: Offer,
        answer_sdp: &str,
        frames: Option<mpsc::Sender<ReceivedFrame>>,
        loss: Option<Loss>,
    ) -> anyhow::Result<(
        mpsc::Sender<Command>,
        watch::Receiver<State>,
        Arc<Counters>,
        JoinHandle<()>,
    )> {
        let link = Link::open(offer.socket, answer_sdp).await?;
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (state_tx, state_rx) = watch::channel(State::Connecting);
        let counters = Arc::new(Counters::default());
        let task = PeerTask {
            rtc: offer.rtc,
            link,
            audio_mid: offer.audio_mid,
            video_mid: offer.video_mid,
            send_video: offer.send_video,
            state: state_tx,
            frames,
            counters: counters.clone(),
            loss,
        };
        let handle = tokio::spawn(task.run(cmd_rx));
        Ok((cmd_tx, state_rx, counters, handle))
    }

    async fn write(&self, kind: Kind, data: Vec<u8>, rtp_time: u64) -> anyhow::Result<()> {
        self.write_captured(kind, data, rtp_time, None, None).await
    }

    async fn write_captured(
        &self,
        kind: Kind,
        data: Vec<u8>,
        rtp_time: u64,
        captured: Option<Instant>,
        rid: Option<String>,
    ) -> anyhow::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Write {
                kind,
                data,
                rtp_time,
                captured,
                rid,
                reply,
            })
            .await
            .map_err(|_| anyhow!("peer stopped: {}", self.end_reason().unwrap_or_default()))?;
        rx.await
            .map_err(|_| anyhow!("peer stopped: {}", self.end_reason().unwrap_or_default()))?
    }

    fn end_reason(&self) -> Option<String> {
        match &*self.state.borrow() {
            State::Ended(r) => Some(r.clone()),
            _ => None,
        }
    }

    async fn wait_ended(&self, timeout: Duration) -> bool {
        let mut rx = self.state.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| matches!(s, State::Ended(_))))
            .await
            .is_ok()
    }

    /// Stops the task (optionally after a DTLS close) and waits for it to end.
    async fn stop(&mut self, graceful: bool) {
        let _ = self.cmd.try_send(Command::Stop { graceful });
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err()
        {
            task.abort();
        }
    }

    async fn delete(&mut self) -> anyhow::Result<reqwest::StatusCode> {
        let status =
            delete_resource(&self.client, &self.info.resource_url, self.token.as_deref()).await;
        self.stop(false).await;
        status
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The task that owns one peer's `Rtc` and socket.
struct PeerTask {
    rtc: Rtc,
    link: Link,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    send_video: Option<VideoCodec>,
    state: watch::Sender<State>,
    frames: Option<mpsc::Sender<ReceivedFrame>>,
    counters: Arc<Counters>,
    loss: Option<Loss>,
}

impl PeerTask {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>) {
        let reason = match self.run_loop(&mut cmds).await {
            Ok(reason) | Err(reason) => reason,
        };
        self.set_ended(reason);
        // Answer queued writes so no caller waits on a dropped reply forever.
        cmds.close();
        while let Ok(cmd) = cmds.try_recv() {
            if let Command::Write { reply, .. } = cmd {
                let _ = reply.send(Err(anyhow!("peer stopped")));
            }
        }
    }

    fn set_ended(&self, reason: String) {
        self.state.send_if_modified(|s| {
            if matches!(s, State::Ended(_)) {
                false
            } else {
                *s = State::Ended(reason);
                true
            }
        });
    }

    /// Runs until the session ends (`Err`) or the owner stops it (`Ok`).
    async fn run_loop(&mut self, cmds: &mut mpsc::Receiver<Command>) -> Result<String, String> {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let deadline = self.drain().await?;
            tokio::select! {
                res = self.link.recv(&mut buf) => {
                    let (proto, source, destination, data) = match res {
                        Ok(v) => v,
                        // A closed TCP connection is the end of this peer.
                        Err(e) if matches!(self.link, Link::Tcp { .. }) => {
                            return Err(format!("TCP connection: {e}"));
                        }
                        // UDP errors are transient (e.g. ICMP port unreachable): ignore them.
                        Err(_) => continue,
                    };
                    if self.loss.as_mut().is_some_and(|l| l.drops(&data)) {
                        self.counters.video_packets_lost.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // Datagrams that are not STUN/DTLS/RTP are not ours: ignore them.
                    let Ok(contents) = data.as_slice().try_into() else { continue };
                    let input = Input::Receive(
                        Instant::now(),
                        Receive { proto, source, destination, contents },
                    );
                    self.rtc.handle_input(input).map_err(|e| format!("str0m input: {e}"))?;
                }
                cmd = cmds.recv() => match cmd {
                    None => return Ok("owner dropped".into()),
                    Some(Command::Stop { graceful }) => {
                        if graceful {
                            self.close_gracefully().await;
                        }
                        return Ok("stopped by the test".into());
                    }
                    Some(Command::Write { kind, data, rtp_time, captured, rid, reply }) => {
                        let _ = reply.send(self.write(kind, data, rtp_time, captured, rid));
                    }
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.rtc
                        .handle_input(Input::Timeout(Instant::now()))
                        .map_err(|e| format!("str0m timeout: {e}"))?;
                }
            }
        }
    }

    /// Polls str0m until it wants to wait: sends datagrams, handles events.
    /// Returns the next timeout, or `Err(reason)` when the session is over.
    async fn drain(&mut self) -> Result<Instant, String> {
        loop {
            if !self.rtc.is_alive() {
                return Err(self.closed_reason());
            }
            let output = self
                .rtc
                .poll_output()
                .map_err(|e| format!("str0m poll: {e}"))?;
            match output {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => self.link.send(&t).await?,
                Output::Event(e) => self.on_event(e)?,
            }
        }
    }

    fn closed_reason(&self) -> String {
        match &*self.state.borrow() {
            State::Ended(r) => r.clone(),
            _ => "str0m closed the session".into(),
        }
    }

    fn on_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Connected => {
                self.state.send_if_modified(|s| {
                    let changed = *s == State::Connecting;
                    if changed {
                        *s = State::Connected;
                    }
                    changed
                });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                return Err("ICE disconnected".into());
            }
            Event::Closed => {
                // Keep polling: str0m drains its own close output, then is_alive() turns false.
                self.set_ended("server closed the session (DTLS close_notify / SCTP)".into());
            }
            Event::KeyframeRequest(r) => {
                self.counters
                    .keyframe_requests
                    .fetch_add(1, Ordering::Relaxed);
                if let (Some(rid), Ok(mut wanted)) = (r.rid, self.counters.keyframes_wanted.lock())
                {
                    wanted.insert(rid.to_string());
                }
            }
            Event::MediaData(d) => {
                let Some(frames) = &self.frames else {
                    return Ok(());
                };
                let codec = d.params.spec().codec;
                let frame = ReceivedFrame {
                    kind: match codec.kind() {
                        MediaKind::Audio => Kind::Audio,
                        MediaKind::Video => Kind::Video,
                    },
                    keyframe: d.is_keyframe(),
                    contiguous: d.contiguous,
                    rtp_time: d.time.numer(),
                    data: d.data.to_vec(),
                    arrived: Instant::now(),
                };
                if frames.try_send(frame).is_err() {
                    self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn write(
        &mut self,
        kind: Kind,
        data: Vec<u8>,
        rtp_time: u64,
        captured: Option<Instant>,
        rid: Option<String>,
    ) -> anyhow::Result<()> {
        if !self.rtc.is_connected() {
            bail!("not connected (str0m would drop the frame)");
        }
        let (mid, codec, freq) = match kind {
            Kind::Audio => (self.audio_mid, Codec::Opus, Frequency::FORTY_EIGHT_KHZ),
            Kind::Video => (
                self.video_mid,
                self.send_video.map_or(Codec::Vp8, VideoCodec::codec),
                Frequency::NINETY_KHZ,
            ),
        };
        let mid = mid.with_context(|| format!("no {kind:?} track was offered"))?;
        let writer = self
            .rtc
            .writer(mid)
            .with_context(|| format!("no writer for {kind:?} (mid {mid})"))?;
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .with_context(|| format!("{codec:?} was not negotiated"))?;
        let writer = match rid {
            Some(rid) => writer.rid(str0m::media::Rid::from(rid.as_str())),
            None => writer,
        };
        writer
            .write(
                pt,
                captured.unwrap_or_else(Instant::now),
                MediaTime::new(rtp_time, freq),
                data,
            )
            .context("str0m write")?;
        Ok(())
    }

    /// Sends RTCP BYE and DTLS close_notify, polling until drained (bounded).
    async fn close_gracefully(&mut self) {
        if self.rtc.close().is_err() {
            return;
        }
        let until = Instant::now() + CLOSE_DRAIN;
        loop {
            // str0m emits the BYE / close_notify on the next timeout, not on close() itself.
            if self
                .rtc
                .handle_input(Input::Timeout(Instant::now()))
                .is_err()
            {
                return;
            }
            // Done once str0m has drained its close output (the Rtc is no longer alive).
            let Ok(deadline) = self.drain().await else {
                return;
            };
            if !self.rtc.is_alive() || Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(deadline.min(until).into()).await;
        }
    }
}

/// A WHIP publisher: POSTs a sendonly offer (audio and/or video as chosen), expects
/// `201` + answer + `Location`, then sends media over real loopback UDP.
pub struct Publisher {
    peer: Peer,
}

impl Publisher {
    /// Publishes to `whip_url`; returns once ICE + DTLS are up (error after 10 s).
    /// A non-201 answer is an [`HttpError`].
    pub async fn connect(whip_url: &str, opts: PeerOptions) -> anyhow::Result<Publisher> {
        let peer = Peer::connect(whip_url, &opts, false, None).await?;
        Ok(Publisher { peer })
    }

    /// Absolute URL of the session resource (from `Location`).
    pub fn resource_url(&self) -> &str {
        &self.peer.info.resource_url
    }

    /// Headers and SDP of the session's creation.
    pub fn session(&self) -> &SessionInfo {
        &self.peer.info
    }

    /// Sends one encoded video frame; `rtp_time_90khz` is its timestamp at 90 kHz.
    pub async fn send_video(&self, data: Vec<u8>, rtp_time_90khz: u64) -> anyhow::Result<()> {
        self.peer.write(Kind::Video, data, rtp_time_90khz).await
    }

    /// Sends one encoded video frame of the simulcast layer `rid`.
    #[allow(dead_code, reason = "used by the benchmarks (examples/)")]
    pub async fn send_video_layer(
        &self,
        rid: &str,
        data: Vec<u8>,
        rtp_time_90khz: u64,
    ) -> anyhow::Result<()> {
        self.peer
            .write_captured(
                Kind::Video,
                data,
                rtp_time_90khz,
                None,
                Some(rid.to_string()),
            )
            .await
    }

    /// Sends one Opus packet; `rtp_time_48khz` is its timestamp at 48 kHz.
    pub async fn send_audio(&self, data: Vec<u8>, rtp_time_48khz: u64) -> anyhow::Result<()> {
        self.peer.write(Kind::Audio, data, rtp_time_48khz).await
    }

    /// Sends a frame that was captured at `captured` (what the sender reports
    /// map its RTP time to), however late it is sent: a delayed network path.
    pub async fn send_captured(
        &self,
        video: bool,
        data: Vec<u8>,
        rtp_time: u64,
        captured: Instant,
    ) -> anyhow::Result<()> {
        let kind = if video { Kind::Video } else { Kind::Audio };
        self.peer
            .write_captured(kind, data, rtp_time, Some(captured), None)
            .await
    }

    /// Sends each simulcast layer's video (`(rid, frames)`, the same pictures
    /// at several sizes, frame for frame) and `audio`, paced in real time,
    /// `loops` times over (times running on). Each layer gets its own RTP
    /// time offset, as a browser's layers have. Keyframe requests are
    /// ignored: each layer's keyframes come as its clip has them.
    pub async fn play_layers(
        &self,
        layers: &[(&str, &[EncodedFrame])],
        audio: &[EncodedFrame],
        loops: u32,
    ) -> anyhow::Result<()> {
        self.play_layers_answering(layers, &[], audio, loops).await
    }

    /// [`Publisher::play_layers`] answering keyframe requests as a browser
    /// does: a layer asked for one sends, as its next frame, that frame of
    /// its `intra` clip (`(rid, frames)`: the same pictures, every one a
    /// keyframe); layers without an intra clip ignore requests.
    pub async fn play_layers_answering(
        &self,
        layers: &[(&str, &[EncodedFrame])],
        intra: &[(&str, &[EncodedFrame])],
        audio: &[EncodedFrame],
        loops: u32,
    ) -> anyhow::Result<()> {
        let start = tokio::time::Instant::now();
        let started = Instant::now();
        let frames = layers.iter().map(|l| l.1.len()).min().unwrap_or(0);
        let v0 = layers
            .first()
            .and_then(|l| l.1.first())
            .map_or(0, |f| f.rtp_time);
        let a0 = audio.first().map_or(0, |f| f.rtp_time);
        // One pass of the clip, in each clock.
        let video_span = match (layers.first(), frames) {
            (Some(l), n) if n > 0 => l.1[n - 1].rtp_time.saturating_sub(v0) + 3000,
            _ => 0,
        };
        let audio_span = audio
            .last()
            .map_or(0, |f| f.rtp_time.saturating_sub(a0) + 960);
        let total_video = frames * loops as usize;
        let total_audio = audio.len() * loops as usize;
        let (mut vi, mut ai) = (0, 0);
        loop {
            let vt = (vi < total_video).then(|| {
                let round = (vi / frames) as u64;
                let t = layers[0].1[vi % frames].rtp_time.saturating_sub(v0) + round * video_span;
                Duration::from_micros(t * 1000 / 90)
            });
            let at = (ai < total_audio).then(|| {
                let round = (ai / audio.len()) as u64;
                let t = audio[ai % audio.len()].rtp_time.saturating_sub(a0) + round * audio_span;
                Duration::from_micros(t * 1000 / 48)
            });
            let audio_next = match (vt, at) {
                (Some(v), Some(a)) => a < v,
                (None, Some(_)) => true,
                _ => false,
            };
            if let (true, Some(a)) = (audio_next, at) {
                tokio::time::sleep_until(start + a).await;
                let round = (ai / audio.len()) as u64;
                let f = &audio[ai % audio.len()];
                self.send_audio(f.data.clone(), f.rtp_time + round * audio_span)
                    .await?;
                ai += 1;
                continue;
            }
            let Some(v) = vt else { return Ok(()) };
            tokio::time::sleep_until(start + v).await;
            let round = (vi / frames) as u64;
            for (i, (rid, clip)) in layers.iter().enumerate() {
                let mut f = &clip[vi % frames];
                let asked = self
                    .peer
                    .counters
                    .keyframes_wanted
                    .lock()
                    .is_ok_and(|mut w| w.remove(*rid));
                if asked
                    && !f.keyframe
                    && let Some((_, keyframes)) = intra.iter().find(|(r, _)| r == rid)
                    && let Some(k) = keyframes.get(vi % frames)
                {
                    f = k;
                }
                // A random-looking offset per simulcast layer (RFC 3550); a
                // single layer keeps the clip's times.
                let (offset, rid) = match *rid {
                    NO_RID => (0, None),
                    rid => (
                        1_234_567 * (i as u64 + 1) + 7_000_000 * i as u64,
                        Some(rid.to_string()),
                    ),
                };
                self.peer
                    .write_captured(
                        Kind::Video,
                        f.data.clone(),
                        f.rtp_time + round * video_span + offset,
                        Some(started + v),
                        rid,
                    )
                    .await?;
            }
            vi += 1;
        }
    }

    /// Sends `video` (90 kHz) and `audio` (48 kHz) frames interleaved in timestamp order,
    /// paced in real time from the first frame. Either slice may be empty.
    pub async fn play(&self, video: &[EncodedFrame], audio: &[EncodedFrame]) -> anyhow::Result<()> {
        self.play_layers_answering(&[(NO_RID, video)], &[], audio, 1)
            .await
    }

    /// Number of keyframe requests (PLI or FIR) received from the server so far.
    pub fn keyframe_requests(&self) -> u64 {
        self.peer.counters.keyframe_requests.load(Ordering::Relaxed)
    }

    /// True once the session is over (server closed it, ICE failed, or it was stopped).
    pub fn ended(&self) -> bool {
        self.peer.end_reason().is_some()
    }

    /// Why the session ended, once it has.
    pub fn end_reason(&self) -> Option<String> {
        self.peer.end_reason()
    }

    /// Waits up to `timeout` for the session to end; true if it did.
    pub async fn wait_ended(&self, timeout: Duration) -> bool {
        self.peer.wait_ended(timeout).await
    }

    /// HTTP DELETE of the resource, then stops the task. Returns the DELETE's status.
    pub async fn delete(mut self) -> anyhow::Result<reqwest::StatusCode> {
        self.peer.delete().await
    }

    /// Stops the task and closes the socket WITHOUT DELETE and without any goodbye
    /// (like a crashed or unplugged client).
    pub async fn vanish(mut self) {
        self.peer.stop(false).await;
    }

    /// Closes the peer connection as a browser's `pc.close()` does (RTCP BYE + DTLS
    /// close_notify) WITHOUT DELETE, then stops the task.
    pub async fn close(mut self) {
        self.peer.stop(true).await;
    }
}

/// A WHEP viewer: POSTs a recvonly offer and queues the frames it receives.
pub struct Viewer {
    peer: Peer,
    frames: mpsc::Receiver<ReceivedFrame>,
}

impl Viewer {
    /// Views `whep_url` with audio + video, accepting VP8, VP9, H.264, AV1 and Opus;
    /// returns once ICE + DTLS are up (error after 10 s). A non-201 answer is an [`HttpError`].
    pub async fn connect(whep_url: &str, token: Option<String>) -> anyhow::Result<Viewer> {
        let opts = PeerOptions {
            token,
            ..PeerOptions::new(None, true)
        };
        Viewer::connect_with(whep_url, opts).await
    }

    /// Like [`Viewer::connect`] with chosen options (see [`make_offer`] for `video`/`audio`).
    pub async fn connect_with(whep_url: &str, opts: PeerOptions) -> anyhow::Result<Viewer> {
        let (tx, frames) = mpsc::channel(FRAME_QUEUE);
        let peer = Peer::connect(whep_url, &opts, true, Some(tx)).await?;
        Ok(Viewer { peer, frames })
    }

    /// The next received frame, or `None` on timeout or once the session ended and the
    /// queue is empty.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<ReceivedFrame> {
        tokio::time::timeout(timeout, self.frames.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next frame of `kind` within `timeout` (frames of the other kind are discarded).
    pub async fn next_frame_of(&mut self, kind: Kind, timeout: Duration) -> Option<ReceivedFrame> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next_frame(left).await?;
            if frame.kind == kind {
                return Some(frame);
            }
        }
    }

    /// Absolute URL of the session resource (from `Location`).
    pub fn resource_url(&self) -> &str {
        &self.peer.info.resource_url
    }

    /// Headers and SDP of the session's creation.
    pub fn session(&self) -> &SessionInfo {
        &self.peer.info
    }

    /// Frames dropped because the queue ([`FRAME_QUEUE`]) was full.
    #[allow(dead_code, reason = "read by the benchmarks (examples/)")]
    pub fn frames_dropped(&self) -> u64 {
        self.peer.counters.frames_dropped.load(Ordering::Relaxed)
    }

    /// Video packets thrown away by [`PeerOptions::losing_video_every`].
    pub fn video_packets_lost(&self) -> u64 {
        self.peer
            .counters
            .video_packets_lost
            .load(Ordering::Relaxed)
    }

    /// True once the server closed the session (DTLS close_notify, ICE gone, or the
    /// `Rtc` is no longer alive), or the viewer was stopped.
    pub fn ended(&self) -> bool {
        self.peer.end_reason().is_some()
    }

    /// Why the session ended, once it has.
    pub fn end_reason(&self) -> Option<String> {
        self.peer.end_reason()
    }

    /// Waits up to `timeout` for the session to end; true if it did.
    pub async fn wait_ended(&self, timeout: Duration) -> bool {
        self.peer.wait_ended(timeout).await
    }

    /// HTTP DELETE of the resource, then stops the task. Returns the DELETE's status.
    pub async fn delete(mut self) -> anyhow::Result<reqwest::StatusCode> {
        self.peer.delete().await
    }

    /// Stops the task and closes the socket WITHOUT DELETE and without any goodbye.
    pub async fn vanish(mut self) {
        self.peer.stop(false).await;
    }
}

/// Receives until `want_video` video frames arrived or nothing came for 3 s.
pub async fn collect(
    viewer: &mut Viewer,
    want_video: usize,
) -> (Vec<ReceivedFrame>, Vec<ReceivedFrame>) {
    let (mut video, mut audio) = (Vec::new(), Vec::new());
    while video.len() < want_video {
        let Some(f) = viewer.next_frame(Duration::from_secs(3)).await else {
            break;
        };
        match f.kind {
            Kind::Video => video.push(f),
            Kind::Audio => audio.push(f),
        }
    }
    // Let the audio that belongs to the last video frames arrive too.
    while let Some(f) = viewer.next_frame(Duration::from_millis(300)).await {
        if f.kind == Kind::Audio {
            audio.push(f);
        }
    }
    (video, audio)
}

/// Asserts that `got` is a run of `sent`, byte for byte, from wherever it starts.
pub fn assert_same_sequence(label: &str, got: &[ReceivedFrame], sent: &[EncodedFrame]) {
    assert!(!got.is_empty(), "{label}: received nothing");
    let start = sent
        .iter()
        .position(|s| s.data == got[0].data)
        .unwrap_or_else(|| panic!("{label}: first received frame was never sent"));
    for (i, g) in got.iter().enumerate() {
        let s = sent
            .get(start + i)
            .unwrap_or_else(|| panic!("{label}: more frames than sent"));
        assert_eq!(g.data, s.data, "{label}: frame {} differs", start + i);
    }
}
