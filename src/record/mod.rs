//! Recording: every live stream (matching the configured patterns) becomes a
//! crash-safe, seekable WebM (Matroska for H.264) under the recordings folder.
//!
//! [`Recorder`] watches the hub for new streams and starts a [`recording`]
//! thread for each; it also repairs files a crash left unfinished and answers
//! the catalog. Nothing here knows about WebRTC or HTTP.

pub mod catalog;
pub mod derived;
pub mod export;
pub mod fmp4;
pub mod index;
pub mod mp4;
pub mod muxer;
pub mod pictures;
pub mod recording;
pub mod storage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::RecordConfig;
use crate::media::MediaKind;
use crate::names::any_matches;
use crate::stream::{Doorbell, LiveStream, SinkKind, SinkQueue, StreamObserver};
use catalog::{Meta, State, StorageState};
use index::{Index, Location};
use muxer::MuxOptions;
use recording::{RecordingJob, RecordingSettings};
use storage::Storage;

/// Frames a recording may queue before it counts drops (a slow disk).
const QUEUE_FRAMES: usize = 8192;

struct Active {
    /// The stream instance it records.
    stream_id: u64,
    meta: Arc<Mutex<Meta>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The kind of stream state a cluster keeps "this stream is being recorded"
/// under (`on` / `off`), so that a publisher reconnecting to another node
/// is recorded there too.
pub const RECORDING_STATE_KIND: &str = "recording";

/// What a retention pass may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionScope {
    /// Recordings wherever they are: this disk and the bucket.
    Everything,
    /// Only this disk's copies of recordings the bucket holds: with a bucket
    /// shared by a cluster, another node runs retention there.
    LocalCopies,
}

/// Whether a live stream is being recorded, for the API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RecordingStatus {
    /// Whether a recording of the stream runs.
    pub recording: bool,
    /// The recording's id, once its current file is open (`STREAM~STEM`);
    /// after a stop, the id of the file it finished.
    pub id: Option<String>,
}

/// Why a recording could not be started by request.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `record.enabled` is off.
    #[error("recording is turned off (record.enabled = false)")]
    Disabled,
    /// The server is stopping, or the stream ended.
    #[error("the stream is ending or the server is stopping")]
    Ending,
    /// No thread could be started.
    #[error("cannot start a recording thread: {0}")]
    Thread(std::io::Error),
}

/// Counts of the recorder's work since start (monotonic, for metrics).
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Files opened.
    pub started: AtomicU64,
    /// Files finished cleanly.
    pub finalized: AtomicU64,
    /// Recordings stopped by an error.
    pub failed: AtomicU64,
    /// Times a recording could not open its next file (low disk) and waited.
    pub interrupted: AtomicU64,
    /// Bytes of the files finished (finalized or failed).
    pub bytes_written: AtomicU64,
    /// MP4 copies of recordings made (not counting those served from the cache).
    pub mp4_made: AtomicU64,
}

/// Starts, tracks and lists recordings.
pub struct Recorder {
    /// Swapped whole by [`Recorder::set_config`]; read once per decision.
    config: parking_lot::RwLock<Arc<RecordConfig>>,
    /// `record.dir`, fixed for the process's life.
    dir: PathBuf,
    stats: Arc<RecorderStats>,
    active: Mutex<HashMap<u64, Active>>,
    next_key: AtomicU64,
    closed: AtomicBool,
    /// One retention pass at a time: two passes would each delete from their
    /// own view of the total.
    retention: Mutex<()>,
    /// Every recording, kept in memory (built by [`Recorder::load_catalog`]).
    index: Arc<Index>,
    /// The bucket finished files go to (`storage.kind = "s3"`), and the
    /// runtime its requests run on (deletes come from blocking threads).
    storage: OnceLock<(Arc<Storage>, tokio::runtime::Handle)>,
    /// Derived files (MP4 copies) being made, one maker per file.
    flights: Arc<derived::Flights>,
    /// Makes finished recordings' posters and strips.
    painter: Arc<pictures::Painter>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("dir", &self.dir).finish()
    }
}

/// Why a recording could not be repaired.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// Not a `.part` / `.webm` / `.mkv` / `.mp4` file.
    #[error("{0}: not a recording file (.webm, .mkv, .mp4 or .part)")]
    NotARecording(PathBuf),
    /// FFmpeg could not read or write it.
    #[error("{path}: {source}")]
    Mux {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: muxer::MuxError,
    },
    /// The damaged file held no readable frame.
    #[error("{0}: no readable frame")]
    Empty(PathBuf),
    /// Renaming or removing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Recorder {
    /// A recorder writing under `config.dir` (created if missing).
    pub fn new(config: RecordConfig) -> std::io::Result<Recorder> {
        if config.enabled {
            std::fs::create_dir_all(&config.dir)?;
        }
        let index: Arc<Index> = Arc::default();
        Ok(Recorder {
            dir: config.dir.clone(),
            config: parking_lot::RwLock::new(Arc::new(config)),
            stats: Arc::default(),
            active: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            retention: Mutex::new(()),
            index: index.clone(),
            storage: OnceLock::new(),
            flights: Arc::default(),
            painter: Arc::new(pictures::Painter::start(index.clone())),
        })
    }

    /// Sends finished recordings to `storage` from now on (once; later calls
    /// are ignored). Call it from within the runtime its requests run on;
    /// the server then starts [`storage::upload::run`] and
    /// [`storage::listing::run`].
    pub fn attach_storage(&self, storage: Arc<Storage>) {
        let _ = self
            .storage
            .set((storage, tokio::runtime::Handle::current()));
    }

    /// The bucket finished recordings go to, if any.
    pub fn storage(&self) -> Option<&Arc<Storage>> {
        self.storage.get().map(|(s, _)| s)
    }

    /// Who is making which derived file (see [`derived::mp4`]).
    pub fn flights(&self) -> &Arc<derived::Flights> {
        &self.flights
    }

    /// The settings in force now.
    pub fn config(&self) -> Arc<RecordConfig> {
        self.config.read().clone()
    }

    /// Puts new settings in force (config reload): which streams are
    /// recorded, file limits and the retention and quota rules apply to
    /// recordings started (and retention passes run) from now on; running
    /// recordings keep theirs. `enabled` and `dir` keep their start-up
    /// values: they need a restart.
    pub fn set_config(&self, mut new: RecordConfig) {
        let mut current = self.config.write();
        new.enabled = current.enabled;
        new.dir = self.dir.clone();
        *current = Arc::new(new);
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mux_options(&self) -> MuxOptions {
        let config = self.config();
        MuxOptions {
            cluster_ms: config.cluster_ms,
            reserve_index_bytes: config.reserve_index_kib * 1024,
            h264_mp4: config.h264_container == crate::config::H264Container::Mp4,
        }
    }

    /// The recordings folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether recording is on.
    pub fn enabled(&self) -> bool {
        let config = self.config();
        config.enabled
    }

    /// Below this many free bytes recordings do not start (`record.min_free_mib`).
    pub fn min_free_bytes(&self) -> u64 {
        let config = self.config();
        config.min_free_mib * 1024 * 1024
    }

    /// What the recorder has done since start.
    pub fn stats(&self) -> &RecorderStats {
        &self.stats
    }

    /// The same counts, shared (for jobs that outlive a borrow).
    pub fn stats_handle(&self) -> Arc<RecorderStats> {
        self.stats.clone()
    }

    /// Recordings being written now.
    pub fn active_count(&self) -> usize {
        let mut active = self.active();
        reap(&mut active);
        active.len()
    }

    /// Reads the recordings folder, once, at start-up (before any
    /// recording starts): puts right what a crash left (when recording is
    /// on) and builds the catalog in memory. A `.part` whose finalization got
    /// as far as its sidecar (state `finalized`, the same SHA-256) is
    /// committed (renamed); any other `.part` is repaired (Cues, Duration:
    /// state `repaired`); a complete file whose sidecar still says
    /// `recording` (finalized by an older version that renamed first) is
    /// marked finalized with its hash. Returns the files repaired by
    /// remuxing. Reads files: call it off the async runtime.
    pub fn load_catalog(&self) -> Vec<PathBuf> {
        let repair = self.enabled();
        let cleaned = derived::clean_temporaries(&self.dir);
        if cleaned > 0 {
            tracing::info!(files = cleaned, "deleted unfinished MP4 files a crash left");
        }
        let mut repaired = Vec::new();
        let mut found = Vec::new();
        for (_, path) in catalog::scan(&self.dir) {
            let target = final_path(&path);
            let meta = catalog::read_meta(&target);
            let (meta, file) = if repair {
                self.put_right(path, target, meta, &mut repaired)
            } else {
                (meta, path)
            };
            if let Some(m) = meta {
                found.push((m, file));
            }
        }
        self.index.load(found);
        repaired
    }

    /// What a crash left of the file `path` (sidecar `meta`), put right:
    /// the sidecar and the file after.
    fn put_right(
        &self,
        path: PathBuf,
        target: PathBuf,
        meta: Option<Meta>,
        repaired: &mut Vec<PathBuf>,
    ) -> (Option<Meta>, PathBuf) {
        if path != target {
            if meta.as_ref().is_some_and(|m| finalized_as(m, &path)) {
                match commit(&path, &target) {
                    Ok(()) => {
                        tracing::info!(file = %target.display(), "completed a finalization a crash interrupted");
                        return (meta, target);
                    }
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "cannot complete a finalization")
                    }
                }
            }
            return match repair_file(&path, self.mux_options()) {
                Ok(p) => {
                    tracing::info!(file = %p.display(), "repaired a recording left by a crash");
                    repaired.push(p.clone());
                    (catalog::read_meta(&p), p)
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not repair a recording");
                    (meta, path)
                }
            };
        }
        match meta {
            Some(mut m) if m.state == State::Recording => {
                m.state = State::Finalized;
                m.sha256 = recording::sha256_file(&path).ok();
                m.size_bytes = std::fs::metadata(&path).map(|md| md.len()).ok();
                m.duration_secs = probe_duration(&path).or(m.duration_secs);
                m.ended_at.get_or_insert_with(catalog::now_rfc3339);
                match catalog::write_meta(&path, &m) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), "a complete recording is now listed as finalized")
                    }
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "cannot update a sidecar")
                    }
                }
                (Some(m), path)
            }
            other => (other, path),
        }
    }

    fn wants(&self, name: &str) -> bool {
        let config = self.config();
        config.enabled && any_matches(&config.streams, name) && !any_matches(&config.exclude, name)
    }

    /// Starts the recording of a new stream the config says to record.
    fn start(&self, stream: &Arc<LiveStream>) {
        if self.wants(stream.name().as_str()) {
            let _ = self.begin(stream);
        }
    }

    /// The recording of `stream` (live), started now if none runs, whatever
    /// the config's patterns say (an operator's request): `true` when it
    /// was started by this call.
    pub fn record(&self, stream: &Arc<LiveStream>) -> Result<(RecordingStatus, bool), StartError> {
        if !self.enabled() {
            return Err(StartError::Disabled);
        }
        if let Some(status) = self.status(stream.id()) {
            return Ok((status, false));
        }
        self.begin(stream)?;
        let status = self.status(stream.id()).ok_or(StartError::Ending)?;
        Ok((status, true))
    }

    /// Whether `stream_id` is being recorded, and the current file's id.
    pub fn status(&self, stream_id: u64) -> Option<RecordingStatus> {
        let mut active = self.active();
        reap(&mut active);
        active
            .values()
            .find(|a| a.stream_id == stream_id && !a.stop.load(Ordering::Acquire))
            .map(|a| {
                let id = a.meta.lock().unwrap_or_else(|p| p.into_inner()).id.clone();
                RecordingStatus {
                    recording: true,
                    id: (!id.is_empty()).then_some(id),
                }
            })
    }

    /// Stops the recording of `stream_id` (its file is finalized) and waits
    /// for it: the id of the file it finished, `None` if none ran. Blocks
    /// (finalizing hashes the file): call it off the async runtime.
    pub fn stop(&self, stream_id: u64) -> Option<Option<String>> {
        let found = {
            let mut active = self.active();
            let key = active
                .iter()
                .find(|(_, a)| a.stream_id == stream_id && !a.stop.load(Ordering::Acquire))
                .map(|(k, _)| *k)?;
            active.remove(&key)?
        };
        // The file being written now, if any, is the one this stop finishes.
        let current = found
            .meta
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .id
            .clone();
        found.stop.store(true, Ordering::Release);
        let _ = found.thread.join();
        Some((!current.is_empty()).then_some(current))
    }

    /// Starts a recording thread for `stream`.
    fn begin(&self, stream: &Arc<LiveStream>) -> Result<(), StartError> {
        let config = self.config();
        if self.closed.load(Ordering::Acquire) {
            return Err(StartError::Ending);
        }
        let ext = muxer::container_for(
            stream.track(MediaKind::Video).map(|t| t.codec),
            config.h264_container == crate::config::H264Container::Mp4,
        )
        .1;
        let meta = Meta::pending(stream.name().as_str());
        let bell = Doorbell::new();
        let queue = Arc::new(SinkQueue::new(QUEUE_FRAMES, Box::new(bell.clone())));
        if stream
            .subscribe(SinkKind::Recorder, queue.clone())
            .is_none()
        {
            return Err(StartError::Ending);
        }
        let meta = Arc::new(Mutex::new(meta));
        let stop = Arc::new(AtomicBool::new(false));
        let job = RecordingJob {
            stream: stream.clone(),
            queue: queue.clone(),
            wakes: bell,
            dir: self.dir.join(stream.name().as_str()),
            ext,
            min_free_bytes: config.min_free_mib * 1024 * 1024,
            meta: meta.clone(),
            stop: stop.clone(),
            stats: self.stats.clone(),
            index: self.index.clone(),
            painter: self.painter.clone(),
            settings: RecordingSettings {
                mux: self.mux_options(),
                fsync_every: Duration::from_secs_f64(config.fsync_secs),
                max_file_us: (config.max_file_secs > 0.0)
                    .then_some((config.max_file_secs * 1e6) as i64),
                max_file_bytes: (config.max_file_mib > 0)
                    .then(|| config.max_file_mib * 1024 * 1024),
                sync_wait: Duration::from_secs_f64(config.sync_wait_secs),
            },
        };
        let spawned = std::thread::Builder::new()
            .name(format!("rec-{}", stream.name()))
            .spawn(move || recording::run(job));
        match spawned {
            Ok(thread) => {
                let key = self.next_key.fetch_add(1, Ordering::Relaxed);
                let mut active = self.active();
                reap(&mut active);
                active.insert(
                    key,
                    Active {
                        stream_id: stream.id(),
                        meta,
                        stop,
                        thread,
                    },
                );
                Ok(())
            }
            Err(e) => {
                queue.close();
                tracing::error!(error = %e, "not recording: cannot start a thread");
                Err(StartError::Thread(e))
            }
        }
    }

    /// Recordings on disk and in progress, newest first.
    pub fn list(&self) -> Vec<Meta> {
        self.index.all()
    }

    /// Of the recordings `keep` accepts, newest first: how many there are,
    /// and `take` of them after `skip` (one page of a listing). No disk access.
    pub fn page(
        &self,
        keep: impl FnMut(&Meta) -> bool,
        skip: usize,
        take: usize,
    ) -> (usize, Vec<Meta>) {
        self.index.page(keep, skip, take)
    }

    /// One recording and where its file is now: on this disk (final or
    /// `.part`, checked to be there) or only in the bucket.
    pub fn get(&self, id: &str) -> Option<(Meta, Location)> {
        let (_, stem) = catalog::parse_id(id)?;
        let entry = self.index.get(id)?;
        let meta = entry.meta;
        if catalog::recording_stem(&meta.file) != Some(stem.as_str()) {
            return None;
        }
        match entry.location {
            Location::Stored => Some((meta, Location::Stored)),
            // Still there, and a plain file (never a link to elsewhere).
            Location::Local(path) => std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.file_type().is_file())
                .then_some((meta, Location::Local(path))),
        }
    }

    /// Whether the recording `meta` describes is still being written (so
    /// nothing can be made from it yet).
    pub fn is_being_written(&self, meta: &Meta) -> bool {
        meta.state == State::Recording || self.is_active(&meta.id)
    }

    /// Whether the recording is being written now.
    pub fn is_active(&self, id: &str) -> bool {
        let mut active = self.active();
        reap(&mut active);
        active
            .values()
            .any(|a| a.meta.lock().is_ok_and(|m| m.id == id))
    }

    /// Deletes a finished recording and its sidecar, on this disk and in
    /// the bucket. Blocks (bucket requests): call it off the async runtime.
    pub fn delete(&self, id: &str) -> Result<bool, std::io::Error> {
        let Some((meta, location)) = self.get(id) else {
            return Ok(false);
        };
        // Out of the catalog first: an upload finishing meanwhile sees the
        // recording gone and deletes what it put in the bucket. Back in if
        // a step fails.
        self.index.remove(id);
        let restore = |e: std::io::Error| {
            self.index.put(meta.clone(), location.clone());
            e
        };
        if meta.storage != StorageState::Local
            && let Some((storage, runtime)) = self.storage.get()
        {
            runtime
                .block_on(storage.delete(&meta))
                .map_err(|e| restore(std::io::Error::other(format!("in the bucket: {e}"))))?;
        }
        let local = match &location {
            Location::Local(path) => path.clone(),
            Location::Stored => self.dir.join(&meta.stream).join(&meta.file),
        };
        if let Location::Local(path) = &location {
            std::fs::remove_file(path).map_err(restore)?;
            catalog::remove_meta(&final_path(path));
            storage::parts::Journal::remove(path);
        }
        derived::remove_all(&local);
        Ok(true)
    }

    /// Stops every recording (finalizing its file) and waits for them.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let all: Vec<Active> = self.active().drain().map(|(_, a)| a).collect();
        for a in &all {
            a.stop.store(true, Ordering::Release);
        }
        for a in all {
            let _ = a.thread.join();
        }
        self.painter.close();
    }

    /// Deletes finished recordings beyond the retention limits (age, total
    /// size, size per stream), oldest first, wherever they are (this disk
    /// and the bucket). Returns how many were deleted.
    pub fn enforce_retention(&self) -> usize {
        self.enforce_retention_in(RetentionScope::Everything)
    }

    /// Retention over `scope`: everything, or only this disk's copies of
    /// stored recordings (`storage.keep_local` on a node that leaves the
    /// shared bucket to another node's retention). Returns how many
    /// recordings (or local copies) were deleted.
    pub fn enforce_retention_in(&self, scope: RetentionScope) -> usize {
        let config = self.config();
        let gib = |g: f64| (g > 0.0).then_some((g * 1024.0 * 1024.0 * 1024.0) as u64);
        let max_age = (config.retention_days > 0.0)
            .then(|| Duration::from_secs_f64(config.retention_days * 86_400.0));
        let max_bytes = gib(config.retention_max_gib);
        let stream_quota = gib(config.stream_quota_gib);
        if max_age.is_none() && max_bytes.is_none() && stream_quota.is_none() {
            return 0;
        }
        let _one_at_a_time = self.retention.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::SystemTime::now();
        // With a bucket, only what is stored may go: the local file of a
        // recording not uploaded yet is its only copy.
        let stored_only = self.storage.get().is_some();
        let local_copies = scope == RetentionScope::LocalCopies;
        let mut done: Vec<Meta> = self
            .index
            .entries()
            .into_iter()
            .filter(|e| !local_copies || matches!(e.location, Location::Local(_)))
            .map(|e| e.meta)
            .filter(|m| m.state != State::Recording && !self.is_active(&m.id))
            .filter(|m| !stored_only || m.storage == StorageState::Stored)
            .collect();
        // Oldest first.
        done.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        // A recording's size counts its derived files (MP4 copies) too.
        let sizes: Vec<u64> = done
            .iter()
            .map(|m| {
                m.size_bytes.unwrap_or(0) + derived::bytes(&self.dir.join(&m.stream).join(&m.file))
            })
            .collect();
        let mut total: u64 = sizes.iter().sum();
        let mut per_stream: std::collections::HashMap<String, u64> =
            std::collections::HashMap::new();
        for (m, size) in done.iter().zip(&sizes) {
            *per_stream.entry(m.stream.clone()).or_default() += size;
        }
        let mut deleted = 0;
        for (m, size) in done.into_iter().zip(sizes) {
            let started = humantime::parse_rfc3339_weak(&m.started_at).ok();
            let too_old = match (max_age, started) {
                (Some(age), Some(t)) => now.duration_since(t).is_ok_and(|d| d > age),
                _ => false,
            };
            let too_big = max_bytes.is_some_and(|max| total > max);
            let stream_total = per_stream.get(&m.stream).copied().unwrap_or(0);
            let over_quota = stream_quota.is_some_and(|q| stream_total > q);
            if !(too_old || too_big || over_quota) {
                continue;
            }
            let removed = if local_copies {
                self.drop_local_copy(&m.id)
            } else {
                self.delete(&m.id)
            };
            match removed {
                Ok(true) => {
                    tracing::info!(recording = %m.id, too_old, too_big, over_quota, local_copy_only = local_copies, "retention: deleted");
                    total = total.saturating_sub(size);
                    if let Some(t) = per_stream.get_mut(&m.stream) {
                        *t = t.saturating_sub(size);
                    }
                    deleted += 1;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(recording = %m.id, error = %e, "retention: cannot delete"),
            }
        }
        deleted
    }

    /// Removes this disk's copy of a stored recording (the bucket keeps it,
    /// and the catalog lists it there).
    fn drop_local_copy(&self, id: &str) -> Result<bool, std::io::Error> {
        let Some((meta, Location::Local(path))) = self.get(id) else {
            return Ok(false);
        };
        if meta.storage != StorageState::Stored {
            return Ok(false);
        }
        self.index.put(meta, Location::Stored);
        std::fs::remove_file(&path)?;
        catalog::remove_meta(&final_path(&path));
        derived::remove_all(&path);
        Ok(true)
    }

    /// Waits for recordings whose streams ended to finish writing.
    pub fn wait_idle(&self) {
        let all: Vec<Active> = self.active().drain().map(|(_, a)| a).collect();
        for a in all {
            let _ = a.thread.join();
        }
    }
}

impl StreamObserver for Recorder {
    fn stream_started(&self, stream: &Arc<LiveStream>) {
        self.start(stream);
    }
}

fn reap(active: &mut HashMap<u64, Active>) {
    let done: Vec<u64> = active
        .iter()
        .filter(|(_, a)| a.thread.is_finished())
        .map(|(id, _)| *id)
        .collect();
    for id in done {
        if let Some(a) = active.remove(&id) {
            let _ = a.thread.join();
        }
    }
}

/// `x.webm.part` → `x.webm`; other paths unchanged.
fn final_path(path: &Path) -> PathBuf {
    match path.to_str().and_then(|s| s.strip_suffix(".part")) {
        Some(s) => PathBuf::from(s),
        None => path.to_path_buf(),
    }
}

/// Repairs one file: a `.part` becomes its final name with Cues and Duration;
/// a final file is rewritten in place. Returns the repaired file's path.
pub fn repair_file(path: &Path, opts: MuxOptions) -> Result<PathBuf, RepairError> {
    let name = path.to_string_lossy();
    let ok = [".part", ".webm", ".mkv", ".mp4"]
        .iter()
        .any(|e| name.ends_with(e));
    if !ok {
        return Err(RepairError::NotARecording(path.to_path_buf()));
    }
    let target = final_path(path);
    if target.extension().is_some_and(|e| e == "mp4") {
        return repair_mp4(path, &target);
    }
    let tmp = target.with_extension(format!(
        "repair.{}",
        target
            .extension()
            .map(|e| e.to_string_lossy().to_string())
            .unwrap_or_default()
    ));
    let packets = muxer::remux(path, &tmp, opts).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        RepairError::Mux {
            path: path.to_path_buf(),
            source,
        }
    })?;
    if packets == 0 {
        let _ = std::fs::remove_file(&tmp);
        return Err(RepairError::Empty(path.to_path_buf()));
    }
    let io = |source| RepairError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(f) = std::fs::File::open(&tmp) {
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &target).map_err(io)?;
    if target != path {
        std::fs::remove_file(path).map_err(io)?;
    }
    mark_repaired(path, &target);
    Ok(target)
}

/// The sidecar of a repaired file `target` (formerly `path`): state
/// `repaired`, its size and duration now, an end time.
fn mark_repaired(path: &Path, target: &Path) {
    if let Some(mut m) = catalog::read_meta(target) {
        m.state = State::Repaired;
        m.size_bytes = std::fs::metadata(target).map(|m| m.len()).ok();
        m.duration_secs = probe_duration(target).or(m.duration_secs);
        if m.ended_at.is_none() {
            m.ended_at = std::fs::metadata(path)
                .or_else(|_| std::fs::metadata(target))
                .and_then(|m| m.modified())
                .ok()
                .map(catalog::rfc3339)
                .or_else(|| Some(catalog::now_rfc3339()));
        }
        let _ = catalog::write_meta(target, &m);
    }
}

/// A fragmented MP4 left by a crash: cut after its last complete fragment
/// (what follows is a fragment the crash interrupted), then renamed to its
/// final name. Every complete fragment plays; nothing is rewritten.
fn repair_mp4(path: &Path, target: &Path) -> Result<PathBuf, RepairError> {
    let io = |source| RepairError::Io {
        path: path.to_path_buf(),
        source,
    };
    let kept = fmp4::truncate_to_complete(path).map_err(io)?;
    if kept.fragments == 0 {
        return Err(RepairError::Empty(path.to_path_buf()));
    }
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    if target != path {
        std::fs::rename(path, target).map_err(io)?;
    }
    mark_repaired(path, target);
    Ok(target.to_path_buf())
}

/// Whether `part` is the complete file its sidecar `m` describes: the
/// finalization wrote the sidecar (with the file's hash) but crashed before
/// the rename.
fn finalized_as(m: &Meta, part: &Path) -> bool {
    m.state == State::Finalized
        && m.sha256.is_some()
        && recording::sha256_file(part).ok() == m.sha256
}

/// Renames a complete `.part` to its final name and syncs the folder: the
/// last steps of a finalization.
fn commit(part: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::rename(part, target)?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Duration of a finished file, as FFmpeg reads it.
fn probe_duration(path: &Path) -> Option<f64> {
    let ctx = ffmpeg_next::format::input(path).ok()?;
    let d = ctx.duration();
    (d > 0).then(|| d as f64 / f64::from(ffmpeg_next::ffi::AV_TIME_BASE))
}

/// Free bytes on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path; s is a valid out pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}
