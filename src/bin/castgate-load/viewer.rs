//! One WHEP viewer: POSTs a recvonly offer, receives and decrypts every packet (str0m in
//! RTP mode: SRTP, RTX repair and NACKs are str0m's; nothing is decoded), checks
//! sequence gaps and frame completeness ([`StreamCheck`]), and measures the time from
//! its POST to the first complete keyframe and, for every complete video frame, the
//! one-way delay from the publisher's send (matched by RTP timestamp, which the gateway
//! keeps from the publisher).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use str0m::Event;
use str0m::media::Mid;
use tokio::sync::watch;

use crate::peer::{self, Conn, PT_H264, PT_OPUS, PT_VP8};
use crate::publisher::SentLog;
use crate::rtpcheck::{Completed, Payload, StreamCheck};

/// How long ICE + DTLS may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters every viewer adds to while it runs (for the progress line and the window).
#[derive(Debug, Default)]
pub struct Live {
    /// Packets received by all viewers.
    pub packets: AtomicU64,
    /// Packets missing at all viewers (updated about once a second per viewer).
    pub lost: AtomicU64,
    /// Viewers connected now.
    pub connected: AtomicU64,
    /// Viewer sessions that connected.
    pub ok: AtomicU64,
    /// Viewer sessions that failed.
    pub failed: AtomicU64,
}

/// What a viewer needs.
pub struct ViewerSpec {
    /// HTTP client shared by every peer.
    pub client: reqwest::Client,
    /// WHEP URL of the stream.
    pub url: String,
    /// Bearer token.
    pub token: Option<String>,
    /// The server's address (the socket binds next to it).
    pub server_ip: IpAddr,
    /// Index of the stream (for grouping delays per frame).
    pub stream: usize,
    /// Leave after this long (churn); `None`: until stopped.
    pub lifetime: Option<Duration>,
    /// Delays are measured for frames completed from this instant on (set when the
    /// measurement window opens, so catch-up bursts at join do not count).
    pub measure_from: Arc<OnceLock<Instant>>,
    /// Held while connecting (bounds setups in flight); released once connected or failed.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// One complete video frame's delay at one viewer.
#[derive(Debug, Clone, Copy)]
pub struct FrameDelay {
    /// The stream.
    pub stream: usize,
    /// RTP timestamp (u32, as on the wire).
    pub rtp_time: u32,
    /// Keyframe or not.
    pub keyframe: bool,
    /// Publisher send → complete at this viewer, in ms.
    pub ms: f64,
}

/// How a viewer went.
#[derive(Debug, Default)]
pub struct ViewerOutcome {
    /// The session failed (refused, not connected, or ended by the server early).
    pub error: Option<String>,
    /// POST → ICE + DTLS connected, ms.
    pub connect_ms: Option<f64>,
    /// When it connected.
    pub connected_at: Option<Instant>,
    /// POST → first complete keyframe, ms.
    pub first_frame_ms: Option<f64>,
    /// Every complete video frame matched to its send.
    pub delays: Vec<FrameDelay>,
    /// Distinct packets received (audio + video).
    pub packets: u64,
    /// Packets missing.
    pub lost: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Video frames complete / given up on.
    pub frames_complete: u64,
    /// Video frames with packets missing.
    pub frames_incomplete: u64,
    /// Complete keyframes.
    pub keyframes: u64,
    /// NACKs this viewer sent (str0m ingress stats).
    pub nacks: u64,
    /// Packets received again (retransmissions, duplicates): str0m's count minus distinct.
    pub retransmissions: u64,
    /// Packets of video frames older than a frame already delivered (out of timestamp order).
    pub out_of_order: u64,
    /// Whether the server ended the session before we did.
    pub ended_by_server: bool,
}

/// Views until `stop` turns true (or its lifetime passes), then DELETEs the session.
pub async fn run(
    mut spec: ViewerSpec,
    log: Arc<SentLog>,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
) -> ViewerOutcome {
    let mut out = ViewerOutcome::default();
    let posted = Instant::now();
    let offer = match peer::make_offer(true, crate::cli::VideoCodec::Vp8, spec.server_ip) {
        Ok(o) => o,
        Err(e) => return failed(out, &live, format!("{e:#}")),
    };
    let session =
        match peer::post_offer(&spec.client, &spec.url, spec.token.as_deref(), &offer.sdp).await {
            Ok(s) => s,
            Err(e) => return failed(out, &live, format!("{e:#}")),
        };
    let audio_mid = offer.audio_mid;
    let mut v = Viewing {
        audio_mid,
        conn: match Conn::start(offer, &session.answer) {
            Ok(c) => c,
            Err(e) => {
                let _ =
                    peer::delete(&spec.client, &session.resource_url, spec.token.as_deref()).await;
                return failed(out, &live, format!("{e:#}"));
            }
        },
        audio: StreamCheck::new(Payload::Audio),
        video_vp8: StreamCheck::new(Payload::Vp8),
        video_h264: StreamCheck::new(Payload::H264),
        done: Vec::new(),
        connected: false,
        ended: None,
        ingress_packets: [0; 2],
        nacks: [0; 2],
        reported_lost: 0,
    };
    let result = v
        .run(&mut spec, posted, &log, &live, &mut stop, &mut out)
        .await;
    if v.connected {
        live.connected.fetch_sub(1, Ordering::Relaxed);
    }
    let _ = peer::delete(&spec.client, &session.resource_url, spec.token.as_deref()).await;
    out.packets = v.audio.packets + v.video_vp8.packets + v.video_h264.packets;
    out.lost = v.lost();
    out.bytes = v.audio.bytes + v.video_vp8.bytes + v.video_h264.bytes;
    out.frames_complete = v.video_vp8.frames_complete + v.video_h264.frames_complete;
    out.frames_incomplete = v.video_vp8.frames_incomplete + v.video_h264.frames_incomplete;
    out.keyframes = v.video_vp8.keyframes + v.video_h264.keyframes;
    out.out_of_order = v.video_vp8.late_packets + v.video_h264.late_packets;
    out.nacks = v.nacks.iter().sum();
    out.retransmissions = v
        .ingress_packets
        .iter()
        .sum::<u64>()
        .saturating_sub(out.packets);
    live.lost
        .fetch_add(out.lost.saturating_sub(v.reported_lost), Ordering::Relaxed);
    if let Err(e) = result {
        if v.connected {
            out.ended_by_server = true;
            out.error = Some(e);
        } else {
            return failed(out, &live, e);
        }
    }
    out
}

fn failed(mut out: ViewerOutcome, live: &Live, error: String) -> ViewerOutcome {
    live.failed.fetch_add(1, Ordering::Relaxed);
    out.error = Some(error);
    out
}

struct Viewing {
    conn: Conn,
    audio: StreamCheck,
    video_vp8: StreamCheck,
    video_h264: StreamCheck,
    done: Vec<Completed>,
    connected: bool,
    ended: Option<String>,
    /// str0m's packet counts (audio, video), retransmissions included.
    ingress_packets: [u64; 2],
    nacks: [u64; 2],
    reported_lost: u64,
    audio_mid: Mid,
}

impl Viewing {
    fn lost(&self) -> u64 {
        self.audio.lost() + self.video_vp8.lost() + self.video_h264.lost()
    }

    async fn run(
        &mut self,
        spec: &mut ViewerSpec,
        posted: Instant,
        log: &SentLog,
        live: &Live,
        stop: &mut watch::Receiver<bool>,
        out: &mut ViewerOutcome,
    ) -> Result<(), String> {
        let connect_by = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let mut leave_at: Option<tokio::time::Instant> = None;
        loop {
            let deadline = self.drain(live)?;
            if let Some(reason) = self.ended.take() {
                return Err(reason);
            }
            if self.connected && out.connect_ms.is_none() {
                out.connect_ms = Some(ms(posted.elapsed()));
                out.connected_at = Some(Instant::now());
                spec.permit = None;
                live.ok.fetch_add(1, Ordering::Relaxed);
                live.connected.fetch_add(1, Ordering::Relaxed);
                leave_at = spec.lifetime.map(|l| tokio::time::Instant::now() + l);
            }
            for c in self.done.drain(..) {
                if out.first_frame_ms.is_none() {
                    if !c.keyframe {
                        continue;
                    }
                    out.first_frame_ms = Some(ms(c.at.saturating_duration_since(posted)));
                }
                let measuring = spec.measure_from.get().is_some_and(|from| c.at >= *from);
                if measuring && let Some(sent) = log.sent_at(c.rtp_time as u32) {
                    out.delays.push(FrameDelay {
                        stream: spec.stream,
                        rtp_time: c.rtp_time as u32,
                        keyframe: c.keyframe,
                        ms: ms(c.at.saturating_duration_since(sent)),
                    });
                }
            }
            let until = if self.connected {
                leave_at.unwrap_or(connect_by + Duration::from_secs(86_400 * 365))
            } else {
                connect_by
            };
            tokio::select! {
                r = self.conn.recv() => r?,
                _ = tokio::time::sleep_until(deadline.into()) => self.conn.timeout()?,
                _ = tokio::time::sleep_until(until) => {
                    if self.connected {
                        return Ok(());
                    }
                    return Err(format!("viewer not connected (ICE + DTLS) within {CONNECT_TIMEOUT:?}"));
                }
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// Drains str0m: packets into the checks, stats, connection state.
    fn drain(&mut self, live: &Live) -> Result<Instant, String> {
        let now = Instant::now();
        let Viewing {
            conn,
            audio,
            video_vp8,
            video_h264,
            done,
            connected,
            ended,
            ingress_packets,
            nacks,
            audio_mid,
            ..
        } = self;
        let audio_mid = *audio_mid;
        let mut stats_tick = false;
        let deadline = conn.drain(|e| match e {
            Event::Connected => *connected = true,
            Event::RtpPacket(p) => {
                let check = match *p.header.payload_type {
                    PT_OPUS => &mut *audio,
                    PT_VP8 => &mut *video_vp8,
                    PT_H264 => &mut *video_h264,
                    _ => return,
                };
                check.on_packet(
                    *p.seq_no,
                    p.time.numer(),
                    p.header.marker,
                    &p.payload,
                    now,
                    done,
                );
                live.packets.fetch_add(1, Ordering::Relaxed);
            }
            Event::MediaIngressStats(s) => {
                let slot = usize::from(s.mid != audio_mid);
                ingress_packets[slot] = s.packets;
                nacks[slot] = s.nacks;
                stats_tick = true;
            }
            Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected) => {
                *ended = Some("ICE disconnected".into());
            }
            Event::Closed => *ended = Some("the server closed the session".into()),
            _ => {}
        });
        if stats_tick {
            let lost = self.lost();
            live.lost
                .fetch_add(lost.saturating_sub(self.reported_lost), Ordering::Relaxed);
            self.reported_lost = self.reported_lost.max(lost);
        }
        match deadline {
            Ok(d) => Ok(d),
            Err(e) if self.connected => Err(format!("the server ended the session ({e})")),
            Err(e) => Err(e),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
