//! Restreaming: pushes live streams to RTMP/RTMPS platforms through FFmpeg.
//!
//! [`Restreamer`] is a hub observer (standing targets from the config start
//! when a matching stream goes live) and the manager behind the API. Per
//! stream, one [`pipeline`] thread subscribes once, passes H.264 through and
//! transcodes Opus to AAC once for all its targets; each [`target`] has its
//! own bounded queue and thread (connect, push, retry with backoff), so one
//! slow or failing target affects nothing else. Nothing here knows about
//! WebRTC or HTTP.

pub mod hls;
pub mod output;
pub mod pipeline;
pub mod target;
pub mod url;
pub mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::RestreamConfig;
use crate::media::MediaKind;
use crate::media::transcode::video::{self, VideoSettings};
use crate::names::any_matches;
use crate::outbound::{OutboundError, OutboundPolicy};
use crate::stream::{Doorbell, LiveStream, SinkKind, SinkQueue, StreamObserver};
use hls::{Hls, HlsSettings};
pub use hls::{HlsInfo, HlsState};
use pipeline::PipelineShared;
pub use target::{Source, State, TargetInfo};
use target::{Target, TargetQueue, TargetSettings};
pub use url::{TargetUrl, UrlError};

/// Frames the pipeline's own subscription may queue.
const SUB_QUEUE_FRAMES: usize = 2048;
/// Finished targets kept for the API (oldest forgotten first).
const KEEP_FINISHED: usize = 100;
/// Active targets per stream.
const MAX_TARGETS_PER_STREAM: usize = 32;

/// Why something failed.
#[derive(Debug, thiserror::Error)]
pub enum RestreamError {
    /// The target URL was refused.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// No live stream of that name.
    #[error("stream {0:?} is not live")]
    NotLive(String),
    /// The stream cannot be restreamed as it is.
    #[error("{0}")]
    Unsupported(String),
    /// Too many targets on one stream.
    #[error("stream {0:?} already has the maximum of {MAX_TARGETS_PER_STREAM} restream targets")]
    TooMany(String),
    /// No such target.
    #[error("no restream target {0:?} on this stream")]
    NotFound(String),
    /// Shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// FFmpeg refused (network errors included).
    #[error("{what}: {source}")]
    Ffmpeg {
        /// What was being done.
        what: &'static str,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
    },
    /// A codec could not be set up.
    #[error("{0}")]
    Codec(String),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// The target's address may not be connected to (internal), or its
    /// name did not resolve.
    #[error(transparent)]
    Outbound(#[from] OutboundError),
}

impl From<crate::media::transcode::TranscodeError> for RestreamError {
    fn from(e: crate::media::transcode::TranscodeError) -> RestreamError {
        use crate::media::transcode::TranscodeError as T;
        match e {
            T::Ffmpeg { what, source } => RestreamError::Ffmpeg { what, source },
            T::Codec(m) => RestreamError::Codec(m),
            T::Unsupported(m) => RestreamError::Unsupported(m),
        }
    }
}

impl RestreamError {
    /// Errors retrying cannot fix.
    pub fn is_fatal(&self) -> bool {
        match self {
            RestreamError::Codec(_) | RestreamError::Unsupported(_) | RestreamError::Url(_) => true,
            RestreamError::Outbound(e) => e.is_internal(),
            _ => false,
        }
    }
}

/// What a client asks for when adding a target.
#[derive(Debug, Clone)]
pub struct AddTarget {
    /// `rtmp://…` or `rtmps://…` with the stream key.
    pub url: String,
    /// Free-form label.
    pub label: Option<String>,
}

/// An API target as it follows its stream to another node of a cluster:
/// enough to start it again there with the same id. The URL carries the
/// stream key: a secret, kept only where the cluster keeps its state.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedTarget {
    /// The target's id (kept across nodes).
    pub id: String,
    /// `rtmp://…` or `rtmps://…` with the stream key.
    pub url: String,
    /// Its label.
    pub label: Option<String>,
}

impl SavedTarget {
    /// The kind of stream state a cluster keeps them under.
    pub const STATE_KIND: &'static str = "targets";
}

impl std::fmt::Debug for SavedTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedTarget")
            .field("id", &self.id)
            .field("url", &"****")
            .field("label", &self.label)
            .finish()
    }
}

struct Pipeline {
    shared: Arc<PipelineShared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Inner {
    pipelines: HashMap<u64, Pipeline>,
    targets: Vec<Arc<Target>>,
    hls: Vec<Arc<Hls>>,
}

/// Starts, tracks and stops restream targets.
pub struct Restreamer {
    /// Swapped whole by [`Restreamer::set_config`]; read once per decision.
    config: parking_lot::RwLock<Arc<RestreamConfig>>,
    inner: Mutex<Inner>,
    closed: AtomicBool,
    next_id: AtomicU64,
    outbound: Arc<OutboundPolicy>,
}

impl std::fmt::Debug for Restreamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restreamer").finish_non_exhaustive()
    }
}

impl Restreamer {
    /// A manager with no targets; targets added through the API connect
    /// only where `outbound` allows.
    pub fn new(config: RestreamConfig, outbound: Arc<OutboundPolicy>) -> Restreamer {
        hls::clean_dir(&config.hls_dir);
        Restreamer {
            config: parking_lot::RwLock::new(Arc::new(config)),
            inner: Mutex::new(Inner::default()),
            closed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            outbound,
        }
    }

    /// Checks, before a target is added through the API, that `url` may be
    /// connected to: its host, resolved, is no internal address (unless the
    /// host is named in `restream.allowed_hosts` or its network is allowed).
    /// Checked again before every connection.
    pub async fn check_address(&self, url: &TargetUrl) -> Result<(), RestreamError> {
        if url.allowed_by_name() {
            return Ok(());
        }
        self.outbound.resolve(url.host(), url.port()).await?;
        Ok(())
    }

    /// The address rule of a target from `source` with `url`: operators'
    /// targets (the config, or hosts named in `restream.allowed_hosts`) are
    /// not checked.
    fn outbound_for(&self, url: &TargetUrl, source: Source) -> Option<Arc<OutboundPolicy>> {
        (source == Source::Api && !url.allowed_by_name()).then(|| self.outbound.clone())
    }

    /// The settings in force now.
    pub fn config(&self) -> Arc<RestreamConfig> {
        self.config.read().clone()
    }

    /// Puts new settings in force (config reload): standing targets, HLS
    /// patterns, bitrates, encoder, timeouts and retry delays apply to
    /// streams and targets started from now on; running targets keep theirs.
    /// `enabled`, `allowed_hosts` and `hls_dir` keep their start-up values
    /// (the HTTP API checks them too): they need a restart.
    pub fn set_config(&self, mut new: RestreamConfig) {
        let mut current = self.config.write();
        new.enabled = current.enabled;
        new.allowed_hosts = current.allowed_hosts.clone();
        new.hls_dir = current.hls_dir.clone();
        *current = Arc::new(new);
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settings(&self) -> TargetSettings {
        let config = self.config();
        TargetSettings {
            rw_timeout_us: (config.rw_timeout_secs * 1e6) as i64,
            ca_file: config.ca_file.to_string_lossy().into_owned(),
            backoff_min: Duration::from_secs_f64(config.backoff_min_secs),
            backoff_max: Duration::from_secs_f64(config.backoff_max_secs),
            stop_grace: Duration::from_secs(3),
        }
    }

    /// Adds a target to a live stream and starts it. Does not block.
    pub fn add(
        &self,
        stream: &Arc<LiveStream>,
        req: AddTarget,
        source: Source,
    ) -> Result<TargetInfo, RestreamError> {
        let config = self.config();
        let url = TargetUrl::parse(&req.url, &config.allowed_hosts)?;
        self.start_target(stream, url, req.label, source, None, None)
    }

    /// The API targets of the live stream `name` that are running (not
    /// failed, not ended by an operator): what follows the stream to another
    /// node when its publisher reconnects there.
    pub fn api_targets(&self, name: &str) -> Vec<SavedTarget> {
        let mut inner = self.inner();
        reap(&mut inner);
        inner
            .targets
            .iter()
            .filter(|t| t.stream == name && !t.finished() && t.resumable(Duration::ZERO))
            .map(|t| {
                let (url, label) = t.resume_parts();
                SavedTarget {
                    id: t.id.clone(),
                    url: url.secret_full().to_string(),
                    label,
                }
            })
            .collect()
    }

    /// Starts the API targets `saved` (from the node that carried the stream
    /// before) on `stream`, with their ids, except those this node already
    /// runs or resumed itself. The ids started.
    pub fn adopt(&self, stream: &Arc<LiveStream>, saved: Vec<SavedTarget>) -> Vec<String> {
        let config = self.config();
        if !config.enabled {
            return Vec::new();
        }
        let mut started = Vec::new();
        for s in saved {
            let present = self
                .inner()
                .targets
                .iter()
                .any(|t| t.id == s.id && t.stream_id == stream.id());
            if present {
                continue;
            }
            let url = match TargetUrl::parse(&s.url, &config.allowed_hosts) {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(target_id = %s.id, stream = %stream.name(), error = %e, "restream target from another node not taken over");
                    continue;
                }
            };
            match self.start_target(stream, url, s.label, Source::Api, None, Some(s.id.clone())) {
                Ok(info) => {
                    tracing::info!(target_id = %info.id, stream = %stream.name(), url = %info.url, "restream target taken over from another node");
                    started.push(info.id);
                }
                Err(e) => {
                    tracing::warn!(target_id = %s.id, stream = %stream.name(), error = %e, "restream target from another node not taken over");
                }
            }
        }
        started
    }

    fn start_target(
        &self,
        stream: &Arc<LiveStream>,
        url: TargetUrl,
        label: Option<String>,
        source: Source,
        resumed: Option<Arc<Target>>,
        given_id: Option<String>,
    ) -> Result<TargetInfo, RestreamError> {
        let config = self.config();
        if self.closed.load(Ordering::Acquire) {
            return Err(RestreamError::ShuttingDown);
        }
        let name = stream.name().to_string();
        if stream.is_ended() {
            return Err(RestreamError::NotLive(name));
        }
        let mut inner = self.inner();
        reap(&mut inner);
        let active = inner
            .targets
            .iter()
            .filter(|t| t.stream_id == stream.id() && !t.finished())
            .count();
        if active >= MAX_TARGETS_PER_STREAM {
            return Err(RestreamError::TooMany(name));
        }
        let shared = self.pipeline_for(&mut inner, stream)?;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = resumed
            .as_ref()
            .map(|t| t.id.clone())
            .or(given_id)
            .unwrap_or_else(|| format!("{n}-{:08x}", rand::random::<u32>()));
        let queue = Arc::new(TargetQueue::new(
            config.queue_packets,
            stream.track(MediaKind::Video).is_some(),
        ));
        let outbound = self.outbound_for(&url, source);
        let target = Arc::new(
            Target::new(
                id.clone(),
                name.clone(),
                stream.id(),
                url,
                label,
                source,
                queue.clone(),
            )
            .with_outbound(outbound)
            .with_events(stream.events().clone()),
        );
        let audio = shared.audio.clone();
        let settings = self.settings();
        let t = target.clone();
        let handle = std::thread::Builder::new()
            .name(format!("rs-{n}"))
            .spawn(move || target::run(t, audio, settings, resumed))
            .map_err(RestreamError::Thread)?;
        target.set_thread(handle);
        shared.attach(queue);
        tracing::info!(target_id = %id, stream = %name, url = %target.masked_url(), "restream target added");
        let info = target.info();
        inner.targets.push(target);
        Ok(info)
    }

    fn pipeline_for(
        &self,
        inner: &mut Inner,
        stream: &Arc<LiveStream>,
    ) -> Result<Arc<PipelineShared>, RestreamError> {
        Ok(match inner.pipelines.get(&stream.id()) {
            Some(p) => p.shared.clone(),
            None => {
                let p = self.start_pipeline(stream)?;
                let shared = p.shared.clone();
                inner.pipelines.insert(stream.id(), p);
                shared
            }
        })
    }

    fn start_pipeline(&self, stream: &Arc<LiveStream>) -> Result<Pipeline, RestreamError> {
        let config = self.config();
        let bell = Doorbell::new();
        let queue = Arc::new(SinkQueue::new(SUB_QUEUE_FRAMES, Box::new(bell.clone())));
        let sub = stream
            .subscribe(SinkKind::Restream, queue.clone())
            .ok_or_else(|| RestreamError::NotLive(stream.name().to_string()))?;
        let shared = Arc::new(PipelineShared {
            stream: stream.clone(),
            sub_id: sub.id,
            sub_queue: queue,
            targets: Mutex::new(Vec::new()),
            audio: Arc::new(OnceLock::new()),
            audio_bitrate: config.audio_bitrate,
            video: VideoSettings {
                encoder: config.video_encoder.clone(),
                bitrate: config.video_bitrate,
                keyint_us: pipeline::KEYINT_US,
                size: video::output_size(
                    config.video_width,
                    config.video_height,
                    (config.max_width, config.max_height),
                ),
                file_crf: None,
            },
            failure: Mutex::new(None),
            audio_in: AtomicU64::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("rs-pipe-{}", stream.name()))
            .spawn(move || pipeline::run(s, bell));
        match thread {
            Ok(h) => Ok(Pipeline {
                shared,
                thread: Some(h),
            }),
            Err(e) => {
                stream.unsubscribe(sub.id);
                Err(RestreamError::Thread(e))
            }
        }
    }

    /// Marks the targets of the stream instance `stream_id` as ended by an
    /// operator: they stop with the stream and are not resumed on the
    /// name's next stream.
    pub fn end_for_good(&self, stream_id: u64) {
        for t in self
            .inner()
            .targets
            .iter()
            .filter(|t| t.stream_id == stream_id)
        {
            t.end_for_good();
        }
    }

    /// Every target (of one stream if `stream` is given), oldest first.
    pub fn list(&self, stream: Option<&str>) -> Vec<TargetInfo> {
        let mut inner = self.inner();
        reap(&mut inner);
        inner
            .targets
            .iter()
            .filter(|t| stream.is_none_or(|s| t.stream == s))
            .map(|t| t.info())
            .collect()
    }

    /// Stops a target, waits (bounded) until its stream ended cleanly, and
    /// forgets it. Blocks: call from a blocking thread.
    pub fn remove(&self, stream: &str, id: &str) -> Result<TargetInfo, RestreamError> {
        let target = {
            let mut inner = self.inner();
            let Some(pos) = inner
                .targets
                .iter()
                .position(|t| t.id == id && t.stream == stream)
            else {
                return Err(RestreamError::NotFound(id.to_string()));
            };
            let t = inner.targets.remove(pos);
            let sid = t.stream_id;
            if let Some(p) = inner.pipelines.get(&sid) {
                p.shared
                    .targets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|q| !Arc::ptr_eq(q, &t.queue));
            }
            t
        };
        target.stop(self.settings().stop_grace);
        target.join();
        tracing::info!(target_id = %target.id, stream = %target.stream, url = %target.masked_url(), "restream target removed");
        self.drop_idle_pipeline(target.stream_id);
        Ok(target.info())
    }

    /// The pipeline goes when its last output does (no transcoding, and no
    /// periodic keyframe requests, for nobody). Blocks (joins its thread).
    fn drop_idle_pipeline(&self, sid: u64) {
        let pipeline = {
            let mut inner = self.inner();
            let idle = inner.pipelines.get(&sid).is_some_and(|p| {
                p.shared
                    .targets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
            });
            if idle {
                inner.pipelines.remove(&sid)
            } else {
                None
            }
        };
        if let Some(mut p) = pipeline {
            p.shared.stream.unsubscribe(p.shared.sub_id);
            if let Some(h) = p.thread.take() {
                let _ = h.join();
            }
        }
    }

    /// Starts HLS output for a live stream (or answers the running one).
    /// Does not block.
    pub fn start_hls(
        &self,
        stream: &Arc<LiveStream>,
        source: Source,
    ) -> Result<HlsInfo, RestreamError> {
        let config = self.config();
        if self.closed.load(Ordering::Acquire) {
            return Err(RestreamError::ShuttingDown);
        }
        let name = stream.name().to_string();
        if stream.is_ended() {
            return Err(RestreamError::NotLive(name));
        }
        let mut inner = self.inner();
        reap(&mut inner);
        if let Some(h) = inner.hls.iter().find(|h| h.stream_id == stream.id()) {
            return Ok(h.info());
        }
        let shared = self.pipeline_for(&mut inner, stream)?;
        let queue = Arc::new(TargetQueue::new(
            config.queue_packets,
            stream.track(MediaKind::Video).is_some(),
        ));
        let h = Arc::new(Hls::new(
            name.clone(),
            stream.id(),
            &config.hls_dir,
            source,
            queue.clone(),
        ));
        let settings = HlsSettings {
            time_secs: config.hls_time_secs,
            list_size: config.hls_list_size,
        };
        let audio = shared.audio.clone();
        let t = h.clone();
        let handle = std::thread::Builder::new()
            .name(format!("rs-hls-{}", stream.id()))
            .spawn(move || hls::run(t, audio, settings))
            .map_err(RestreamError::Thread)?;
        h.set_thread(handle);
        shared.attach(queue);
        tracing::info!(stream = %name, "HLS started");
        let info = h.info();
        inner.hls.push(h);
        Ok(info)
    }

    /// The HLS output of the live stream `name`, if any.
    pub fn hls_info(&self, name: &str) -> Option<HlsInfo> {
        let mut inner = self.inner();
        reap(&mut inner);
        inner
            .hls
            .iter()
            .find(|h| h.stream == name)
            .map(|h| h.info())
    }

    /// Path of `file` (a name the muxer writes; anything else is refused)
    /// of the running HLS output of stream `name`.
    pub fn hls_file(&self, name: &str, file: &str) -> Option<std::path::PathBuf> {
        if !hls::valid_file(file) {
            return None;
        }
        let inner = self.inner();
        inner
            .hls
            .iter()
            .find(|h| h.stream == name && h.state() == HlsState::Live && !h.finished())
            .map(|h| h.dir.join(file))
    }

    /// Stops the HLS output of stream `name`: its files are removed before
    /// this returns. Blocks: call from a blocking thread.
    pub fn stop_hls(&self, name: &str) -> Result<HlsInfo, RestreamError> {
        let h = {
            let mut inner = self.inner();
            let Some(pos) = inner.hls.iter().position(|h| h.stream == name) else {
                return Err(RestreamError::NotFound("hls".into()));
            };
            let h = inner.hls.remove(pos);
            if let Some(p) = inner.pipelines.get(&h.stream_id) {
                p.shared
                    .targets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|q| !Arc::ptr_eq(q, &h.queue));
            }
            h
        };
        h.stop(self.settings().stop_grace);
        h.join();
        self.drop_idle_pipeline(h.stream_id);
        Ok(h.info())
    }

    /// Stops every target (cleanly, bounded) and joins every thread.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let (targets, pipelines, hls) = {
            let mut inner = self.inner();
            (
                inner.targets.clone(),
                inner.pipelines.drain().map(|(_, p)| p).collect::<Vec<_>>(),
                std::mem::take(&mut inner.hls),
            )
        };
        let grace = self.settings().stop_grace;
        for t in &targets {
            t.stop(grace);
        }
        for h in &hls {
            h.stop(grace);
        }
        for p in &pipelines {
            p.shared.stream.unsubscribe(p.shared.sub_id);
        }
        for t in &targets {
            t.join();
        }
        for h in &hls {
            h.join();
        }
        for mut p in pipelines {
            if let Some(h) = p.thread.take() {
                let _ = h.join();
            }
        }
    }

    /// Number of restream targets in each state (of [`State::ALL`]) and of
    /// HLS outputs that are running, for metrics.
    pub fn state_counts(&self) -> ([usize; 5], usize) {
        let inner = self.inner();
        let mut counts = [0usize; 5];
        for t in &inner.targets {
            let st = t.state();
            if let Some(i) = State::ALL.iter().position(|s| *s == st) {
                counts[i] += 1;
            }
        }
        let hls = inner.hls.iter().filter(|h| !h.finished()).count();
        (counts, hls)
    }

    /// Whether any target or pipeline thread is still running.
    pub fn busy(&self) -> bool {
        let inner = self.inner();
        inner.targets.iter().any(|t| !t.finished())
            || inner.hls.iter().any(|h| !h.finished())
            || inner
                .pipelines
                .values()
                .any(|p| p.thread.as_ref().is_some_and(|h| !h.is_finished()))
    }
}

/// Joins finished pipelines and forgets the oldest finished targets.
fn reap(inner: &mut Inner) {
    let done: Vec<u64> = inner
        .pipelines
        .iter()
        .filter(|(_, p)| p.thread.as_ref().is_none_or(|h| h.is_finished()))
        .map(|(k, _)| *k)
        .collect();
    for k in done {
        if let Some(mut p) = inner.pipelines.remove(&k)
            && let Some(h) = p.thread.take()
        {
            let _ = h.join();
        }
    }
    for t in &inner.targets {
        if t.finished() {
            t.join();
        }
    }
    inner.hls.retain(|h| {
        if h.finished() {
            h.join();
            false
        } else {
            true
        }
    });
    let finished = inner.targets.iter().filter(|t| t.finished()).count();
    if finished > KEEP_FINISHED {
        let mut extra = finished - KEEP_FINISHED;
        inner.targets.retain(|t| {
            if extra > 0 && t.finished() {
                extra -= 1;
                false
            } else {
                true
            }
        });
    }
}

impl Restreamer {
    /// Starts again the API targets of a stream of the same name that ended
    /// within `restream.resume_secs` (a publisher that reconnected): same id,
    /// same URL and key, so platforms that allow it continue the broadcast.
    fn resume(&self, stream: &Arc<LiveStream>) {
        let config = self.config();
        if config.resume_secs <= 0.0 {
            return;
        }
        let within = Duration::from_secs_f64(config.resume_secs);
        let old: Vec<Arc<Target>> = {
            let mut inner = self.inner();
            let mut taken = Vec::new();
            inner.targets.retain(|t| {
                let hit = t.stream == stream.name().as_str()
                    && t.stream_id != stream.id()
                    && t.resumable(within);
                if hit {
                    taken.push(t.clone());
                }
                !hit
            });
            taken
        };
        for t in old {
            let (url, label) = t.resume_parts();
            let (id, name) = (t.id.clone(), t.stream.clone());
            match self.start_target(stream, url, label, Source::Api, Some(t.clone()), None) {
                Ok(info) => {
                    tracing::info!(target_id = %id, stream = %name, url = %info.url, "restream target resumed")
                }
                Err(e) => {
                    tracing::warn!(target_id = %id, stream = %name, error = %e, "restream target not resumed");
                    // Back in the list, whose reaping joins its thread.
                    self.inner().targets.push(t);
                }
            }
        }
    }
}

impl StreamObserver for Restreamer {
    fn stream_started(&self, stream: &Arc<LiveStream>) {
        let config = self.config();
        if !config.enabled {
            return;
        }
        let name = stream.name().as_str();
        self.resume(stream);
        for st in &config.targets {
            if !any_matches(&st.streams, name) {
                continue;
            }
            let req = AddTarget {
                url: st.url.clone(),
                label: st.label.clone(),
            };
            if let Err(e) = self.add(stream, req, Source::Config) {
                tracing::warn!(stream = %name, error = %e, "standing restream target not started");
            }
        }
        if any_matches(&config.hls_streams, name)
            && let Err(e) = self.start_hls(stream, Source::Config)
        {
            tracing::warn!(stream = %name, error = %e, "HLS not started");
        }
    }
}
