//! One WHIP publisher: loops the pre-encoded clip in real time (video at 30 fps, Opus
//! every 20 ms, RTP time always increasing across loops) and answers a keyframe request
//! (PLI/FIR) by jumping to the clip's next keyframe. Every video frame's send instant is
//! logged by RTP time ([`SentLog`]) so viewers in this process can measure one-way delay.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use str0m::Event;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime, Mid};
use tokio::sync::{oneshot, watch};

use crate::cli::VideoCodec;
use crate::fixture::{FPS, Fixture, VIDEO_TICKS};
use crate::peer::{self, Conn};

/// How long ICE + DTLS may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Video frames remembered for delay matching (~17 s at 30 fps).
const SENT_LOG: usize = 512;

/// When each recent video frame of one stream was handed to str0m, by RTP timestamp.
#[derive(Debug, Default)]
pub struct SentLog {
    frames: Mutex<VecDeque<(u32, Instant)>>,
}

impl SentLog {
    fn record(&self, rtp_time: u32, at: Instant) {
        let mut f = self.frames.lock();
        if f.len() == SENT_LOG {
            f.pop_front();
        }
        f.push_back((rtp_time, at));
    }

    /// When the frame with this RTP timestamp was sent (recent frames only).
    pub fn sent_at(&self, rtp_time: u32) -> Option<Instant> {
        self.frames
            .lock()
            .iter()
            .rev()
            .find(|(t, _)| *t == rtp_time)
            .map(|(_, at)| *at)
    }
}

/// Counters of one publisher, read at the end and by the progress line.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Video frames sent.
    pub video_frames: AtomicU64,
    /// Opus packets sent.
    pub audio_packets: AtomicU64,
    /// Keyframe requests (PLI/FIR) received.
    pub keyframe_requests: AtomicU64,
    /// Times the clip jumped to a keyframe to answer one.
    pub keyframe_jumps: AtomicU64,
    /// NACKs received for video (str0m egress stats).
    pub nacks_received: AtomicU64,
    /// Frames sent more than 50 ms after their due time (the tool was overloaded).
    pub late_frames: AtomicU64,
}

/// What a publisher needs.
pub struct PublisherSpec {
    /// HTTP client shared by every peer.
    pub client: reqwest::Client,
    /// WHIP URL of the stream.
    pub url: String,
    /// Bearer token.
    pub token: Option<String>,
    /// The clip.
    pub fixture: Arc<Fixture>,
    /// The server's address (the socket binds next to it).
    pub server_ip: IpAddr,
}

/// Publishes until `stop` turns true, then DELETEs the session. `connected` gets
/// `Ok` once ICE + DTLS are up (or the reason it failed). Returns the reason the
/// publisher ended early, if it did.
pub async fn run(
    spec: PublisherSpec,
    log: Arc<SentLog>,
    stats: Arc<PublisherStats>,
    connected: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let offer = match peer::make_offer(false, spec.fixture.codec, spec.server_ip) {
        Ok(o) => o,
        Err(e) => {
            let msg = format!("{e:#}");
            let _ = connected.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    let (audio_mid, video_mid) = (offer.audio_mid, offer.video_mid);
    let session =
        match peer::post_offer(&spec.client, &spec.url, spec.token.as_deref(), &offer.sdp).await {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("{e:#}");
                let _ = connected.send(Err(msg.clone()));
                return Err(msg);
            }
        };
    let mut p = Publishing {
        conn: match Conn::start(offer, &session.answer) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("{e:#}");
                let _ = connected.send(Err(msg.clone()));
                let _ =
                    peer::delete(&spec.client, &session.resource_url, spec.token.as_deref()).await;
                return Err(msg);
            }
        },
        fixture: spec.fixture.clone(),
        audio_mid,
        video_mid,
        stats,
        log,
        want_keyframe: false,
        connected: false,
    };
    let result = p.run(connected, &mut stop).await;
    let _ = peer::delete(&spec.client, &session.resource_url, spec.token.as_deref()).await;
    result
}

struct Publishing {
    conn: Conn,
    fixture: Arc<Fixture>,
    audio_mid: Mid,
    video_mid: Mid,
    stats: Arc<PublisherStats>,
    log: Arc<SentLog>,
    want_keyframe: bool,
    connected: bool,
}

impl Publishing {
    async fn run(
        &mut self,
        connected: oneshot::Sender<Result<(), String>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        // Connect.
        let mut connected = Some(connected);
        let give_up = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        while !self.connected {
            let deadline = match self.drain() {
                Ok(d) => d,
                Err(e) => {
                    let msg = format!("connection failed: {e}");
                    if let Some(c) = connected.take() {
                        let _ = c.send(Err(msg.clone()));
                    }
                    return Err(msg);
                }
            };
            if self.connected {
                break;
            }
            tokio::select! {
                r = self.conn.recv() => r?,
                _ = tokio::time::sleep_until(deadline.into()) => self.conn.timeout()?,
                _ = tokio::time::sleep_until(give_up) => {
                    let msg = format!("publisher not connected (ICE + DTLS) within {CONNECT_TIMEOUT:?}");
                    if let Some(c) = connected.take() {
                        let _ = c.send(Err(msg.clone()));
                    }
                    return Err(msg);
                }
                _ = stop.changed() => return Ok(()),
            }
        }
        if let Some(c) = connected.take() {
            let _ = c.send(Ok(()));
        }

        // Stream.
        let start = Instant::now();
        let (mut vn, mut vi, mut an, mut audio_ts) = (0u64, 0usize, 0usize, 0u64);
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let video_due = start + Duration::from_micros(vn * 1_000_000 / FPS);
            let audio_due = start + Duration::from_micros(audio_ts * 1000 / 48);
            let due = video_due.min(audio_due);
            if Instant::now() >= due {
                if due.elapsed() > Duration::from_millis(50) {
                    self.stats.late_frames.fetch_add(1, Ordering::Relaxed);
                }
                if video_due <= audio_due {
                    if self.want_keyframe {
                        self.want_keyframe = false;
                        if !self.fixture.video[vi].keyframe {
                            vi = self.fixture.next_keyframe(vi);
                            self.stats.keyframe_jumps.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let rtp_time = vn * VIDEO_TICKS;
                    self.write_video(vi, rtp_time)?;
                    vi = (vi + 1) % self.fixture.video.len();
                    vn += 1;
                } else {
                    let pkt = &self.fixture.audio[an];
                    let (data, samples) = (pkt.data.clone(), pkt.samples);
                    self.write(
                        self.audio_mid,
                        Codec::Opus,
                        MediaTime::new(audio_ts, Frequency::FORTY_EIGHT_KHZ),
                        data,
                    )?;
                    audio_ts += samples.max(120);
                    an = (an + 1) % self.fixture.audio.len();
                    self.stats.audio_packets.fetch_add(1, Ordering::Relaxed);
                }
            }
            let deadline = self
                .drain()
                .map_err(|e| format!("publisher session ended: {e}"))?;
            let video_due = start + Duration::from_micros(vn * 1_000_000 / FPS);
            let audio_due = start + Duration::from_micros(audio_ts * 1000 / 48);
            let wake = deadline.min(video_due).min(audio_due);
            tokio::select! {
                r = self.conn.recv() => r?,
                _ = tokio::time::sleep_until(wake.into()) => self.conn.timeout()?,
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    fn write_video(&mut self, index: usize, rtp_time: u64) -> Result<(), String> {
        let frame = &self.fixture.video[index];
        let codec = match self.fixture.codec {
            VideoCodec::Vp8 => Codec::Vp8,
            VideoCodec::H264 => Codec::H264,
        };
        let data = frame.data.clone();
        let now = Instant::now();
        self.write(
            self.video_mid,
            codec,
            MediaTime::new(rtp_time, Frequency::NINETY_KHZ),
            data,
        )?;
        self.log.record(rtp_time as u32, now);
        self.stats.video_frames.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write(
        &mut self,
        mid: Mid,
        codec: Codec,
        time: MediaTime,
        data: Vec<u8>,
    ) -> Result<(), String> {
        let writer = self
            .conn
            .rtc
            .writer(mid)
            .ok_or_else(|| format!("the server did not accept the {codec:?} track"))?;
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .ok_or_else(|| format!("{codec:?} was not negotiated"))?;
        writer
            .write(pt, Instant::now(), time, data)
            .map_err(|e| format!("str0m write: {e}"))
    }

    /// Drains str0m, noting connection, keyframe requests and NACK counts.
    fn drain(&mut self) -> Result<Instant, String> {
        let (stats, video_mid) = (&self.stats, self.video_mid);
        let mut connected = false;
        let mut want = false;
        let mut ended = None;
        let deadline = self.conn.drain(|e| match e {
            Event::Connected => connected = true,
            Event::KeyframeRequest(_) => {
                stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                want = true;
            }
            Event::MediaEgressStats(s) if s.mid == video_mid => {
                stats.nacks_received.store(s.nacks, Ordering::Relaxed);
            }
            Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected) => {
                ended = Some("ICE disconnected".to_string());
            }
            _ => {}
        })?;
        self.connected |= connected;
        self.want_keyframe |= want;
        match ended {
            Some(e) => Err(e),
            None => Ok(deadline),
        }
    }
}
