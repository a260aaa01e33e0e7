//! One stream's restream pipeline, shared by all its targets: subscribes to
//! the stream once, places frames on the A/V timeline (the recorder's
//! [`Timeline`] and [`Interleaver`]), passes H.264 through, transcodes Opus
//! to AAC once, and offers every packet to each target's own bounded queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::output::{AudioSetup, VideoSetup};
use super::target::{OutPacket, TargetQueue};
use crate::media::timeline::{Interleaver, Placed, Timeline};
use crate::media::transcode::audio::{RATE, Transcoder};
use crate::media::transcode::video::{H264Out, VideoSettings, VideoTranscoder};
use crate::media::{Codec, Frame, MediaKind, h264, probe};
use crate::stream::{Doorbell, LiveStream, SinkQueue};

/// IDR interval of transcoded video (µs).
pub const KEYINT_US: i64 = 2_000_000;

/// Longest a frame waits for the other track before going out.
const INTERLEAVE_HOLD_US: i64 = 200_000;

/// What the pipeline thread and the manager share.
pub struct PipelineShared {
    /// The stream.
    pub stream: Arc<LiveStream>,
    /// The pipeline's subscription id on the stream.
    pub sub_id: u64,
    /// Its frame queue.
    pub sub_queue: Arc<SinkQueue>,
    /// Queues of the targets fed.
    pub targets: Mutex<Vec<Arc<TargetQueue>>>,
    /// The AAC track's set-up, known before the first packet (None: no audio).
    pub audio: Arc<OnceLock<Option<Arc<AudioSetup>>>>,
    /// AAC bitrate.
    pub audio_bitrate: u32,
    /// What transcoded video becomes (VP8/VP9/AV1 → H.264).
    pub video: VideoSettings,
    /// Why the pipeline cannot feed its outputs (set once; they all fail).
    pub failure: Mutex<Option<String>>,
    /// Opus packets transcoded (for the API and tests).
    pub audio_in: AtomicU64,
}

impl std::fmt::Debug for PipelineShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineShared")
            .field("stream", &self.stream.name())
            .finish()
    }
}

impl PipelineShared {
    /// Adds an output's queue; one added after the pipeline failed fails at once.
    pub fn attach(&self, queue: Arc<TargetQueue>) {
        // Lock order (both here and in `fail`): targets, then failure.
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = &*self.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            queue.fail(reason);
        }
        targets.push(queue);
    }

    /// Fails every output, now and later, with `reason`.
    fn fail(&self, reason: String) {
        tracing::error!(stream = %self.stream.name(), error = %reason, "restream pipeline failed");
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        for q in targets.iter() {
            q.fail(&reason);
        }
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    fn fan_out(&self, p: OutPacket) {
        let p = Arc::new(p);
        for q in self
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            q.push(&p);
        }
    }
}

/// The pipeline thread's body; ends when the stream ends or the subscription is dropped.
pub fn run(shared: Arc<PipelineShared>, wakes: Arc<Doorbell>) {
    let stream = shared.stream.clone();
    let video_codec = stream.track(MediaKind::Video).map(|t| t.codec);
    let mut transcoder = None;
    if stream.track(MediaKind::Audio).is_some() {
        match Transcoder::new(shared.audio_bitrate) {
            Ok(t) => {
                let setup = AudioSetup {
                    extradata: t.extradata(),
                    bitrate: shared.audio_bitrate,
                };
                let _ = shared.audio.set(Some(Arc::new(setup)));
                transcoder = Some(t);
            }
            Err(e) => {
                tracing::error!(stream = %stream.name(), error = %e, "restream without audio: cannot transcode Opus to AAC");
            }
        }
    }
    let _ = shared.audio.set(None);
    let mut vtrans = None;
    if let Some(c) = video_codec.filter(|c| *c != Codec::H264) {
        match VideoTranscoder::new(c, shared.video.clone()) {
            Ok(t) => vtrans = Some(t),
            Err(e) => shared.fail(format!("cannot transcode {} video to H.264: {e}", c.name())),
        }
    }
    let mut state = State {
        vtrans,
        h264: Vec::new(),
        timeline: None,
        interleaver: Interleaver::new(INTERLEAVE_HOLD_US),
        video: None,
        transcoder,
        out: Vec::new(),
        aac: Vec::new(),
        video_codec,
    };
    let mut frames = Vec::new();
    loop {
        let open = shared.sub_queue.drain(&mut frames);
        for f in frames.drain(..) {
            state.frame(&shared, f);
        }
        if !open {
            break;
        }
        wakes.wait(Duration::from_millis(500));
    }
    state.interleaver.drain(&mut state.out);
    state.emit(&shared);
    if let Some(v) = state.vtrans.as_mut() {
        let _ = v.finish(&mut state.h264);
        state.send_transcoded(&shared, std::time::Instant::now());
    }
    if let Some(t) = state.transcoder.as_mut() {
        if let Err(e) = t.finish(&mut state.aac) {
            tracing::debug!(stream = %stream.name(), error = %e, "AAC flush failed");
        }
        state.send_aac(&shared);
    }
    for q in shared
        .targets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        q.close();
    }
    if let Some(t) = &state.transcoder
        && (t.silence_samples > 0 || t.decode_errors > 0)
    {
        tracing::debug!(stream = %stream.name(), silence_samples = t.silence_samples,
            decode_errors = t.decode_errors, "restream audio gaps filled");
    }
}

struct State {
    vtrans: Option<VideoTranscoder>,
    h264: Vec<H264Out>,
    timeline: Option<Timeline>,
    interleaver: Interleaver,
    video: Option<Arc<VideoSetup>>,
    transcoder: Option<Transcoder>,
    out: Vec<Placed>,
    aac: Vec<crate::media::transcode::audio::AacPacket>,
    video_codec: Option<Codec>,
}

impl State {
    fn frame(&mut self, shared: &PipelineShared, f: Arc<Frame>) {
        let tl = self
            .timeline
            .get_or_insert_with(|| Timeline::new(f.arrival));
        let us = tl.place(&f);
        self.interleaver
            .push(Placed { us, frame: f }, &mut self.out);
        self.emit(shared);
    }

    fn emit(&mut self, shared: &PipelineShared) {
        for p in std::mem::take(&mut self.out) {
            match p.frame.kind() {
                MediaKind::Video => self.video(shared, p),
                MediaKind::Audio => self.audio(shared, p),
            }
        }
    }

    fn video(&mut self, shared: &PipelineShared, p: Placed) {
        if p.frame.params.codec == Codec::H264 && self.video_codec == Some(Codec::H264) {
            self.send_h264(
                shared,
                p.us,
                p.frame.keyframe,
                p.frame.data.clone(),
                p.frame.arrival,
            );
            return;
        }
        let Some(v) = self.vtrans.as_mut() else {
            return;
        };
        if let Err(e) = v.push(p.us, &p.frame.data, &mut self.h264) {
            shared.fail(format!("video transcoding to H.264 stopped: {e}"));
            self.vtrans = None;
        }
        self.send_transcoded(shared, p.frame.arrival);
    }

    fn send_transcoded(&mut self, shared: &PipelineShared, arrival: std::time::Instant) {
        for h in std::mem::take(&mut self.h264) {
            self.send_h264(shared, h.us, h.keyframe, Arc::from(h.data), arrival);
        }
    }

    fn send_h264(
        &mut self,
        shared: &PipelineShared,
        us: i64,
        keyframe: bool,
        data: Arc<[u8]>,
        arrival: std::time::Instant,
    ) {
        if keyframe {
            let sets = h264::parameter_sets(&data);
            if !sets.is_empty() && self.video.as_ref().is_none_or(|v| v.extradata != sets) {
                let (width, height) = probe::h264_size(&data).unwrap_or((0, 0));
                self.video = Some(Arc::new(VideoSetup {
                    extradata: sets,
                    width,
                    height,
                }));
            }
        }
        let Some(setup) = self.video.clone() else {
            return; // no parameter sets yet: not decodable
        };
        shared.fan_out(OutPacket::Video {
            us,
            keyframe,
            data,
            setup,
            arrival,
        });
    }

    fn audio(&mut self, shared: &PipelineShared, p: Placed) {
        let Some(t) = self.transcoder.as_mut() else {
            return;
        };
        if p.frame.params.codec != Codec::Opus {
            return;
        }
        shared.audio_in.fetch_add(1, Ordering::Relaxed);
        let pos = p.us * RATE / 1_000_000;
        if let Err(e) = t.push(pos, &p.frame.data, &mut self.aac) {
            tracing::warn!(stream = %shared.stream.name(), error = %e, "AAC encoding failed for a frame");
        }
        self.send_aac(shared);
    }

    fn send_aac(&mut self, shared: &PipelineShared) {
        for a in self.aac.drain(..) {
            shared.fan_out(OutPacket::Audio {
                us: a.pts * 1_000_000 / RATE,
                dur_us: a.duration * 1_000_000 / RATE,
                data: Arc::from(a.data),
            });
        }
    }
}
