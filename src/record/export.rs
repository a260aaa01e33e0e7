//! Export jobs: a VP8 or VP9 recording encoded to H.264 MP4 (what MP4
//! cannot hold as it is), in the background, with progress and cancel.
//!
//! A job per recording and audio choice. Jobs wait in a bounded queue and
//! run on their own OS threads, `record.export_max_concurrent` at a time
//! (one core each, at a lower CPU priority than live traffic). The result is
//! a derived file beside the recording (`STEM.export.mp4`,
//! `STEM.export-aac.mp4`: see [`super::derived`]), made under a temporary
//! name and renamed when complete, so a failed or cancelled job leaves
//! nothing; later downloads (`?format=mp4`) serve it. An `export_finished`
//! event tells when a job ends.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::Recorder;
use super::catalog::Meta;
use super::derived::{self, Kind};
use super::index::Location;
use super::mp4::{self, Mp4Audio, Mp4Video, Progress};
use crate::events::{Event, Events};

/// Jobs that may wait for a free encoder; more are refused (busy).
pub const MAX_QUEUED: usize = 16;

/// Finished jobs remembered for their status (the file itself stays).
const MAX_FINISHED: usize = 64;

/// x264's constant rate factor for exports: its default, close to the source.
const EXPORT_CRF: u8 = 23;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a free encoder.
    Queued,
    /// Encoding.
    Running,
    /// The MP4 is ready.
    Done,
    /// Stopped by an error (nothing kept).
    Failed,
    /// Cancelled (nothing kept).
    Cancelled,
}

/// A job's status, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Export)]
pub struct ExportStatus {
    /// Recording id.
    pub recording: String,
    /// `opus` (copied) or `aac` (re-encoded, plays everywhere).
    pub audio: &'static str,
    /// Where the job is.
    pub state: JobState,
    /// Done, 0–100.
    pub percent: f64,
    /// Seconds of recording encoded per second of work (while running).
    pub speed: Option<f64>,
    /// Seconds left at the current speed (while running).
    pub eta_secs: Option<f64>,
    /// The MP4's size (when done).
    pub size_bytes: Option<u64>,
    /// Where to download it (when done).
    pub download: Option<String>,
    /// What went wrong (when failed).
    pub error: Option<String>,
}

/// Why a job could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No such recording.
    #[error("no such recording")]
    NotFound,
    /// Still being written.
    #[error("the recording is still being written; export it once it ends")]
    InProgress,
    /// Its video fits MP4 as it is.
    #[error(
        "this recording's video fits MP4 without encoding: download it with ?format=mp4 instead"
    )]
    NotNeeded,
    /// No video to encode.
    #[error("the recording has no video to encode: download it with ?format=mp4 instead")]
    NoVideo,
    /// The queue is full.
    #[error("{MAX_QUEUED} exports are waiting already; try again later")]
    Busy,
    /// The server is stopping.
    #[error("the server is stopping")]
    Closed,
}

fn audio_name(a: Mp4Audio) -> &'static str {
    match a {
        Mp4Audio::Opus => "opus",
        Mp4Audio::Aac => "aac",
    }
}

/// One export.
#[derive(Debug)]
struct Job {
    meta: Meta,
    audio: Mp4Audio,
    progress: Progress,
    cancel: AtomicBool,
    state: Mutex<JobTrack>,
}

#[derive(Debug)]
struct JobTrack {
    state: JobState,
    started: Option<Instant>,
    error: Option<String>,
    size_bytes: Option<u64>,
}

type Key = (String, Mp4Audio);

#[derive(Debug, Default)]
struct Queue {
    jobs: HashMap<Key, Arc<Job>>,
    waiting: VecDeque<Key>,
    finished: VecDeque<Key>,
    running: usize,
    threads: Vec<std::thread::JoinHandle<()>>,
    closed: bool,
}

/// The export jobs of this node.
#[derive(Debug)]
pub struct Exports {
    recorder: Arc<Recorder>,
    events: Events,
    max_running: usize,
    queue: Mutex<Queue>,
    /// Runs bucket reads for recordings only in object storage.
    runtime: tokio::runtime::Handle,
}

impl Exports {
    /// Export jobs for `recorder`'s recordings, `max_running` at once (0:
    /// half the cores, at least one), telling `events` when each ends.
    /// Call it within the runtime (a stored recording is read through it).
    pub fn new(recorder: Arc<Recorder>, events: Events, max_running: usize) -> Arc<Exports> {
        let max_running = crate::config::or_half_the_cores(max_running);
        Arc::new(Exports {
            recorder,
            events,
            max_running,
            queue: Mutex::new(Queue::default()),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts (queues) an export of recording `id`, or returns the one
    /// queued, running or done already; `true` with a new job. Blocks
    /// briefly (reads the catalog and the disk): call it off the async
    /// runtime.
    pub fn start(
        self: &Arc<Self>,
        id: &str,
        audio: Mp4Audio,
    ) -> Result<(ExportStatus, bool), ExportError> {
        let (meta, _) = self.recorder.get(id).ok_or(ExportError::NotFound)?;
        if self.recorder.is_being_written(&meta) {
            return Err(ExportError::InProgress);
        }
        match meta.video.as_ref().map(|v| v.codec) {
            None => return Err(ExportError::NoVideo),
            Some(c) if mp4::remuxable(Some(c)) => return Err(ExportError::NotNeeded),
            Some(_) => {}
        }
        let key = (id.to_string(), audio);
        let mut q = self.queue();
        if q.closed {
            return Err(ExportError::Closed);
        }
        if let Some(job) = q.jobs.get(&key) {
            let state = job.track().state;
            let alive = matches!(state, JobState::Queued | JobState::Running)
                || (state == JobState::Done && self.file_of(&job.meta, audio).is_some());
            if alive {
                return Ok((self.status_of(job), false));
            }
        }
        if let Some(status) = self.finished_on_disk(&meta, audio) {
            return Ok((status, false));
        }
        if q.waiting.len() >= MAX_QUEUED {
            return Err(ExportError::Busy);
        }
        let job = Arc::new(Job {
            meta,
            audio,
            progress: Progress::default(),
            cancel: AtomicBool::new(false),
            state: Mutex::new(JobTrack {
                state: JobState::Queued,
                started: None,
                error: None,
                size_bytes: None,
            }),
        });
        q.finished.retain(|k| k != &key);
        q.jobs.insert(key.clone(), job.clone());
        q.waiting.push_back(key);
        self.pump(&mut q);
        Ok((self.status_of(&job), true))
    }

    /// The exports of recording `id`: jobs this node knows and finished
    /// files on disk. Reads the disk: call it off the async runtime.
    pub fn list(&self, id: &str) -> Vec<ExportStatus> {
        let Some((meta, _)) = self.recorder.get(id) else {
            return Vec::new();
        };
        let q = self.queue();
        [Mp4Audio::Opus, Mp4Audio::Aac]
            .into_iter()
            .filter_map(|audio| match q.jobs.get(&(id.to_string(), audio)) {
                Some(job)
                    if job.track().state != JobState::Done
                        || self.file_of(&meta, audio).is_some() =>
                {
                    Some(self.status_of(job))
                }
                _ => self.finished_on_disk(&meta, audio),
            })
            .collect()
    }

    /// Cancels a queued or running export (nothing is kept), or deletes a
    /// finished one's file. Whether there was anything. Call it off the
    /// async runtime.
    pub fn cancel(&self, id: &str, audio: Mp4Audio) -> bool {
        let key = (id.to_string(), audio);
        let mut q = self.queue();
        if let Some(job) = q.jobs.get(&key).cloned() {
            let state = job.track().state;
            match state {
                JobState::Queued => {
                    q.waiting.retain(|k| k != &key);
                    job.cancel.store(true, Ordering::Relaxed);
                    job.finish(JobState::Cancelled, None, None);
                    self.emit(&job, 0.0);
                    remember(&mut q, key);
                    return true;
                }
                JobState::Running => {
                    job.cancel.store(true, Ordering::Relaxed);
                    return true;
                }
                _ => {}
            }
        }
        drop(q);
        let Some((meta, _)) = self.recorder.get(id) else {
            return false;
        };
        match self.file_of(&meta, audio) {
            Some((path, _)) => std::fs::remove_file(path).is_ok(),
            None => false,
        }
    }

    /// Cancels every job and waits for the running ones to stop (server
    /// shutdown). Blocks: call it off the async runtime.
    pub fn shutdown(&self) {
        let threads = {
            let mut q = self.queue();
            q.closed = true;
            let waiting: Vec<Key> = q.waiting.drain(..).collect();
            for key in waiting {
                if let Some(job) = q.jobs.get(&key) {
                    job.finish(JobState::Cancelled, None, None);
                }
            }
            for job in q.jobs.values() {
                job.cancel.store(true, Ordering::Relaxed);
            }
            std::mem::take(&mut q.threads)
        };
        for t in threads {
            let _ = t.join();
        }
    }

    /// Starts waiting jobs while encoders are free.
    fn pump(self: &Arc<Self>, q: &mut Queue) {
        q.threads.retain(|t| !t.is_finished());
        while q.running < self.max_running && !q.closed {
            let Some(key) = q.waiting.pop_front() else {
                break;
            };
            let Some(job) = q.jobs.get(&key).cloned() else {
                continue;
            };
            {
                let mut t = job.track();
                t.state = JobState::Running;
                t.started = Some(Instant::now());
            }
            q.running += 1;
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("castgate-export".into())
                .spawn(move || me.run(job, key));
            match spawned {
                Ok(handle) => q.threads.push(handle),
                Err(e) => {
                    q.running -= 1;
                    tracing::error!(error = %e, "cannot start an export thread");
                }
            }
        }
    }

    /// One job, on its own thread.
    fn run(self: Arc<Self>, job: Arc<Job>, key: Key) {
        lower_priority();
        let started = Instant::now();
        let result = self.encode(&job);
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(size) => {
                tracing::info!(recording = %job.meta.id, audio = audio_name(job.audio), secs, size, "export done");
                job.finish(JobState::Done, None, Some(size));
            }
            Err(e) if job.cancel.load(Ordering::Relaxed) => {
                tracing::info!(recording = %job.meta.id, error = %e, "export cancelled");
                job.finish(JobState::Cancelled, None, None);
            }
            Err(e) => {
                tracing::warn!(recording = %job.meta.id, error = %e, "export failed");
                job.finish(JobState::Failed, Some(e), None);
            }
        }
        self.emit(&job, secs);
        let mut q = self.queue();
        q.running -= 1;
        remember(&mut q, key);
        self.pump(&mut q);
    }

    /// Encodes the job's recording to its export file. Its size.
    fn encode(&self, job: &Job) -> Result<u64, String> {
        let kind = Kind::Export(job.audio);
        let target = derived::path_of(self.recorder.dir(), &job.meta, kind)
            .ok_or("the recording has no file name")?;
        let folder = target.parent().ok_or("no folder")?.to_path_buf();
        std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
        let (_, location) = self
            .recorder
            .get(&job.meta.id)
            .ok_or("the recording was deleted")?;
        let mut fetched = None;
        let source = match location {
            Location::Local(p) => p,
            Location::Stored => {
                let tmp = self
                    .runtime
                    .block_on(derived::fetch(&self.recorder, &job.meta, &target))
                    .map_err(|e| e.to_string())?;
                fetched = Some(tmp.clone());
                tmp
            }
        };
        let tmp = PathBuf::from(format!("{}.tmp", target.display()));
        let made = mp4::convert(
            &source,
            &tmp,
            Mp4Video::Encode { crf: EXPORT_CRF },
            job.audio,
            &job.progress,
            &job.cancel,
        )
        .map_err(|e| e.to_string())
        .and_then(|_| {
            // Deleted meanwhile (by hand or by retention): keep nothing.
            if self.recorder.get(&job.meta.id).is_none() {
                return Err("the recording was deleted".to_string());
            }
            derived::commit(&tmp, &target).map_err(|e| e.to_string())
        });
        if let Some(f) = fetched {
            let _ = std::fs::remove_file(f);
        }
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(std::fs::metadata(&target).map_or(0, |m| m.len()))
    }

    fn emit(&self, job: &Job, secs: f64) {
        let t = job.track();
        self.events.emit(Event::ExportFinished {
            stream: job.meta.stream.clone(),
            id: job.meta.id.clone(),
            audio: audio_name(job.audio).into(),
            state: match t.state {
                JobState::Done => "done",
                JobState::Failed => "failed",
                _ => "cancelled",
            }
            .into(),
            secs,
            size_bytes: t.size_bytes,
            error: t.error.clone(),
        });
    }

    /// The finished export file of a recording, if there is one.
    fn file_of(&self, meta: &Meta, audio: Mp4Audio) -> Option<(PathBuf, u64)> {
        let path = derived::path_of(self.recorder.dir(), meta, Kind::Export(audio))?;
        let md = std::fs::symlink_metadata(&path).ok()?;
        md.file_type().is_file().then_some((path, md.len()))
    }

    /// The status of an export found on disk (made before a restart).
    fn finished_on_disk(&self, meta: &Meta, audio: Mp4Audio) -> Option<ExportStatus> {
        let (_, size) = self.file_of(meta, audio)?;
        Some(ExportStatus {
            recording: meta.id.clone(),
            audio: audio_name(audio),
            state: JobState::Done,
            percent: 100.0,
            speed: None,
            eta_secs: None,
            size_bytes: Some(size),
            download: Some(download_url(&meta.id, audio)),
            error: None,
        })
    }

    fn status_of(&self, job: &Job) -> ExportStatus {
        let t = job.track();
        let fraction = match t.state {
            JobState::Done => 1.0,
            _ => job.progress.fraction(),
        };
        let (speed, eta_secs) = match (t.state, t.started) {
            (JobState::Running, Some(started)) => {
                let wall = started.elapsed().as_secs_f64();
                let done = job.progress.done_us.load(Ordering::Relaxed) as f64 / 1e6;
                let total = job.progress.total_us.load(Ordering::Relaxed) as f64 / 1e6;
                if wall > 0.5 && done > 0.0 {
                    let speed = done / wall;
                    (
                        Some(round2(speed)),
                        Some(round2((total - done).max(0.0) / speed)),
                    )
                } else {
                    (None, None)
                }
            }
            _ => (None, None),
        };
        ExportStatus {
            recording: job.meta.id.clone(),
            audio: audio_name(job.audio),
            state: t.state,
            percent: round2(fraction * 100.0),
            speed,
            eta_secs,
            size_bytes: t.size_bytes,
            download: (t.state == JobState::Done).then(|| download_url(&job.meta.id, job.audio)),
            error: t.error.clone(),
        }
    }
}

impl Job {
    fn track(&self) -> std::sync::MutexGuard<'_, JobTrack> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self, state: JobState, error: Option<String>, size: Option<u64>) {
        let mut t = self.track();
        t.state = state;
        t.error = error;
        t.size_bytes = size;
    }
}

/// Keeps a finished job's status for a while; forgets the oldest beyond
/// [`MAX_FINISHED`].
fn remember(q: &mut Queue, key: Key) {
    q.finished.retain(|k| k != &key);
    q.finished.push_back(key);
    while q.finished.len() > MAX_FINISHED {
        if let Some(old) = q.finished.pop_front() {
            q.jobs.remove(&old);
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The download URL of a finished export.
pub fn download_url(id: &str, audio: Mp4Audio) -> String {
    format!(
        "/recordings/{id}/download?format=mp4&audio={}",
        audio_name(audio)
    )
}

/// Lets live traffic win the CPU over this thread (Linux: nice is per thread).
pub(crate) fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
