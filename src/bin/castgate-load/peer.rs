//! What a WHIP publisher and a WHEP viewer share: a str0m [`Rtc`] with a host candidate
//! on its own loopback-or-any UDP socket, the SDP offer, the HTTP exchange (POST offer →
//! 201 + answer + Location; DELETE at the end) and the loop that drives str0m over the
//! socket ([`Conn`]).
//!
//! The peer is a full ICE agent (controlling), as browsers are; any standard server
//! answers it. Nothing here is castgate-specific.

use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

use crate::cli::VideoCodec;

/// Initial STUN retransmission timeout of our ICE agent (see `make_offer`).
const STUN_RTO: Duration = Duration::from_millis(50);

/// Largest UDP datagram read.
const RECV_BUF: usize = 2048;

/// Payload type of Opus in our offers (viewers map received packets by it).
pub const PT_OPUS: u8 = 111;
/// Payload type of VP8 (and 97 its RTX).
pub const PT_VP8: u8 = 96;
/// Payload type of H.264 42e01f packetization-mode 1 (and 103 its RTX).
pub const PT_H264: u8 = 102;

/// Installs str0m's aws-lc-rs crypto as the process default (idempotent).
fn init_crypto() {
    static INIT: Once = Once::new();
    INIT.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// An offer ready to POST, with the `Rtc` and socket that made it.
pub struct Offer {
    /// The engine, with the host candidate added and the offer pending.
    pub rtc: Rtc,
    /// The SDP offer text.
    pub sdp: String,
    pending: Option<SdpPendingOffer>,
    socket: StdUdpSocket,
    /// Mid of the audio m-line.
    pub audio_mid: Mid,
    /// Mid of the video m-line.
    pub video_mid: Mid,
}

/// Makes an offer with one audio (Opus) and one video m-line.
///
/// Publisher (`recv == false`): sendonly, the one video codec given, frame mode (str0m
/// packetizes). Viewer (`recv == true`): recvonly, VP8 and H.264 42e01f, RTP mode (the
/// viewer sees every packet, decrypted, with RTX already repaired and NACKs sent by
/// str0m, and checks them itself without depacketizing), stats every second for NACK
/// counts. The socket binds to the IP of the server (`server_ip`), so a loopback server
/// gets a loopback candidate.
pub fn make_offer(recv: bool, codec: VideoCodec, server_ip: IpAddr) -> anyhow::Result<Offer> {
    init_crypto();
    let mut cfg = RtcConfig::new()
        .clear_codecs()
        .set_stats_interval(Some(Duration::from_secs(1)))
        .set_rtcp_report_interval_audio(Duration::from_secs(2));
    {
        let cc = cfg.codec_config();
        cc.add_config(
            PT_OPUS.into(),
            None,
            str0m::format::Codec::Opus,
            str0m::media::Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            str0m::format::FormatParams {
                min_p_time: Some(10),
                use_inband_fec: Some(true),
                ..Default::default()
            },
        );
        if recv || codec == VideoCodec::Vp8 {
            cc.add_config(
                PT_VP8.into(),
                Some(97.into()),
                str0m::format::Codec::Vp8,
                str0m::media::Frequency::NINETY_KHZ,
                None,
                Default::default(),
            );
        }
        if recv || codec == VideoCodec::H264 {
            cc.add_h264(PT_H264.into(), Some(103.into()), true, 0x42e01f);
        }
    }
    if recv {
        cfg = cfg.set_rtp_mode(true);
    }
    // str0m's controlling agent sends the nominating check (USE-CANDIDATE) one RTO after
    // the first check succeeded: with the default 250 ms every session would take 250 ms
    // to connect on a LAN. Browsers nominate at once; 50 ms is closer to them.
    cfg.set_initial_stun_rto(STUN_RTO);

    let bind_ip: IpAddr = if server_ip.is_loopback() {
        server_ip
    } else if server_ip.is_ipv6() {
        IpAddr::from([0u16; 8])
    } else {
        IpAddr::from([0u8; 4])
    };
    let socket = StdUdpSocket::bind(SocketAddr::new(bind_ip, 0))
        .with_context(|| format!("binding a UDP socket on {bind_ip}"))?;
    let mut local = socket.local_addr().context("local address")?;
    if local.ip().is_unspecified() {
        // Announce the address the kernel would use towards the server.
        let probe = StdUdpSocket::bind(SocketAddr::new(bind_ip, 0)).context("route probe")?;
        probe
            .connect(SocketAddr::new(server_ip, 9))
            .context("no route to the server")?;
        local.set_ip(probe.local_addr().context("route probe")?.ip());
    }
    let mut rtc = cfg.build(Instant::now());
    let candidate = Candidate::host(local, "udp").map_err(|e| anyhow!("host candidate: {e}"))?;
    if rtc.add_local_candidate(candidate).is_none() {
        bail!("str0m refused the host candidate {local}");
    }
    let dir = if recv {
        Direction::RecvOnly
    } else {
        Direction::SendOnly
    };
    let mut api = rtc.sdp_api();
    let audio_mid = api.add_media(MediaKind::Audio, dir, None, None, None);
    let video_mid = api.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, pending) = api.apply().context("nothing to offer")?;
    Ok(Offer {
        rtc,
        sdp: offer.to_sdp_string(),
        pending: Some(pending),
        socket,
        audio_mid,
        video_mid,
    })
}

/// The answer to a WHIP/WHEP POST: the session resource and the SDP answer.
#[derive(Debug, Clone)]
pub struct Session {
    /// Absolute URL of the session resource (for DELETE).
    pub resource_url: String,
    /// The SDP answer.
    pub answer: String,
}

/// POSTs `sdp` to `url`; anything but `201` + `Location` is an error naming the status
/// and the server's reason.
pub async fn post_offer(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    sdp: &str,
) -> anyhow::Result<Session> {
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/sdp")
        .body(sdp.to_owned());
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| {
        let why = if e.is_connect() {
            "cannot connect"
        } else if e.is_timeout() {
            "timed out"
        } else {
            "request failed"
        };
        anyhow!("POST {url}: {why} ({})", root_cause(&e))
    })?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::CREATED {
        let reason: String = body.trim().chars().take(200).collect();
        bail!("POST {url}: HTTP {status}: {reason}");
    }
    let location = location.with_context(|| format!("POST {url}: 201 without Location"))?;
    let resource_url = reqwest::Url::parse(url)
        .and_then(|u| u.join(&location))
        .with_context(|| format!("POST {url}: bad Location"))?
        .to_string();
    Ok(Session {
        resource_url,
        answer: body,
    })
}

/// The innermost error message (e.g. "Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// DELETEs a session resource (best effort; the status is returned).
pub async fn delete(
    client: &reqwest::Client,
    resource_url: &str,
    token: Option<&str>,
) -> anyhow::Result<reqwest::StatusCode> {
    let mut req = client.delete(resource_url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    Ok(req.send().await.context("DELETE")?.status())
}

/// A connected-or-connecting peer: its `Rtc` and socket.
pub struct Conn {
    /// The str0m engine.
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    buf: Vec<u8>,
}

impl Conn {
    /// Applies the answer to the offer and registers the socket with tokio.
    pub fn start(mut offer: Offer, answer: &str) -> anyhow::Result<Conn> {
        let answer = SdpAnswer::from_sdp_string(answer)
            .map_err(|e| anyhow!("unparsable SDP answer: {e}"))?;
        let pending = offer.pending.take().context("answer already applied")?;
        offer
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .context("SDP answer rejected")?;
        offer.socket.set_nonblocking(true).context("socket")?;
        let local = offer.socket.local_addr().context("socket")?;
        let socket = UdpSocket::from_std(offer.socket).context("registering the socket")?;
        Ok(Conn {
            rtc: offer.rtc,
            socket,
            local,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Polls str0m until it wants to wait: sends what it transmits and hands every event
    /// to `on_event`. Returns the next timeout, or `Err` when the session is over.
    pub fn drain(&mut self, mut on_event: impl FnMut(Event)) -> Result<Instant, String> {
        loop {
            if !self.rtc.is_alive() {
                return Err("the session closed".into());
            }
            match self.rtc.poll_output().map_err(|e| format!("str0m: {e}"))? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    // A full socket buffer drops the datagram: UDP semantics, WebRTC copes.
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(e) => on_event(e),
            }
        }
    }

    /// Waits for a datagram and feeds it to str0m (ignoring what is not ours).
    pub async fn recv(&mut self) -> Result<(), String> {
        let Ok((n, source)) = self.socket.recv_from(&mut self.buf).await else {
            return Ok(()); // transient (e.g. ICMP port unreachable)
        };
        let Some(data) = self.buf.get(..n) else {
            return Ok(());
        };
        let Ok(contents) = data.try_into() else {
            return Ok(());
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        self.rtc
            .handle_input(input)
            .map_err(|e| format!("str0m input: {e}"))
    }

    /// Tells str0m the time has come.
    pub fn timeout(&mut self) -> Result<(), String> {
        self.rtc
            .handle_input(Input::Timeout(Instant::now()))
            .map_err(|e| format!("str0m timeout: {e}"))
    }
}

/// The server's IP address from a base URL (resolving a host name).
pub async fn server_ip(url: &str) -> anyhow::Result<IpAddr> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("bad --url {url:?}"))?;
    let host = parsed
        .host_str()
        .with_context(|| format!("--url {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .map(|a| a.ip())
        .with_context(|| format!("{host} has no address"))
}
