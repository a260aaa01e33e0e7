//! One recording: a thread that drains its sink queue into a file.
//!
//! The file is written as `NAME.EXT.part` and renamed to `NAME.EXT` once its
//! trailer (Cues, Duration) is written, so a complete name always means a
//! complete file. A sidecar `NAME.json` carries what the catalog shows.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::catalog::{self, AudioMeta, Meta, State, VideoMeta};
use super::index::{Index, Location};
use super::muxer::{AudioTrack, MuxOptions, Muxer, VideoTrack};
use crate::events::Event;
use crate::failpoint;
use crate::media::timeline::{Interleaver, Placed, Timeline};
use crate::media::{Codec, Frame, MediaKind, av1, h264, opus, probe};
use crate::stream::{Doorbell, LiveStream, SinkQueue};

/// Audio kept from before the first video keyframe, at most.
const AUDIO_LEAD: Duration = Duration::from_secs(2);

/// How long a frame may wait for the other track before it is written anyway
/// (timeline time): bounds what sits in memory, so what a crash can lose.
const INTERLEAVE_HOLD_US: i64 = 300_000;

/// Settings of one recording.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    /// Muxer options.
    pub mux: MuxOptions,
    /// How often written data is forced to the disk.
    pub fsync_every: Duration,
    /// Start a new file at the next keyframe once a file is this long (µs).
    pub max_file_us: Option<i64>,
    /// … or this big (bytes).
    pub max_file_bytes: Option<u64>,
    /// At the start of a file, hold frames up to this long waiting for both
    /// tracks' first sender reports, so the first seconds are in sync too.
    pub sync_wait: Duration,
}

/// What the recording thread needs.
pub struct RecordingJob {
    /// The stream being recorded.
    pub stream: Arc<LiveStream>,
    /// Its queue.
    pub queue: Arc<SinkQueue>,
    /// Wake-ups from the queue.
    pub wakes: Arc<Doorbell>,
    /// The stream's folder; the file name is chosen when the thread starts.
    pub dir: PathBuf,
    /// `webm` or `mkv`.
    pub ext: &'static str,
    /// Below this many free bytes the recording does not start.
    pub min_free_bytes: u64,
    /// The sidecar metadata, shared with the catalog.
    pub meta: Arc<Mutex<Meta>>,
    /// Set to stop early (shutdown); the file is finalized.
    pub stop: Arc<AtomicBool>,
    /// The recorder's counters.
    pub stats: Arc<super::RecorderStats>,
    /// The catalog, kept current as files open, grow and end.
    pub index: Arc<Index>,
    /// Makes each finished file's poster and strip (off this thread).
    pub painter: Arc<super::pictures::Painter>,
    /// Settings.
    pub settings: RecordingSettings,
}

enum Phase {
    /// No file is open: waiting for the frame a file can start with (the
    /// first video keyframe, or audio if the stream has no video), keeping
    /// the audio just before it.
    Waiting {
        audio: VecDeque<Arc<Frame>>,
        /// Set while a new file cannot be opened (low disk): retried at
        /// the next starting frame once `next_try` has passed.
        blocked: Option<Blocked>,
    },
    /// Writing a file.
    Writing(Box<Writing>),
}

impl Phase {
    fn waiting() -> Phase {
        Phase::Waiting {
            audio: VecDeque::new(),
            blocked: None,
        }
    }
}

/// Why no file is open although frames arrive, and since when.
struct Blocked {
    reason: String,
    since: Instant,
    next_try: Instant,
}

/// How often a blocked recording tries to open a new file.
const RETRY_EVERY: Duration = Duration::from_secs(1);

struct Writing {
    /// The file's final name (written as `.part` until finalized).
    path: PathBuf,
    /// The queue's drop count when the file started (drops are per file).
    dropped_at_start: u64,
    /// Frames held at the start until both tracks can be placed on the
    /// sender's clock; `None` once placing has begun.
    pending: Option<Vec<Arc<Frame>>>,
    pending_since: Instant,
    sync_wait: Duration,
    both_tracks: bool,
    /// H.264 parameter sets the file's avcC was made from; a keyframe with
    /// others (a new resolution) starts a new file.
    parameter_sets: Vec<u8>,
    muxer: Muxer,
    timeline: Timeline,
    interleaver: Interleaver,
    out: Vec<Placed>,
    file: Option<File>,
    last_us: i64,
}

/// Picks a file name that no recording has, and takes it at once by
/// creating its `.part` (so two recordings of one name started in the same
/// second cannot pick the same file), after checking the disk. File-system
/// work stays off the async runtime: this runs on the recording's thread.
fn reserve(dir: &std::path::Path, ext: &str, min_free_bytes: u64) -> Result<PathBuf, String> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Err(format!("cannot create {}: {e}", dir.display()));
    }
    if let Some(free) = super::free_bytes(dir)
        && free < min_free_bytes
    {
        return Err(format!(
            "only {} MiB free, below record.min_free_mib",
            free / (1024 * 1024)
        ));
    }
    let base = catalog::stem_for(SystemTime::now());
    for n in 0..1000 {
        let stem = if n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let path = dir.join(format!("{stem}.{ext}"));
        if path.exists() || catalog::meta_path(&path).exists() {
            continue;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(part_path(&path))
        {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
    }
    Err("no free file name".into())
}

/// Runs a recording to its end; called on its own thread.
pub fn run(job: RecordingJob) {
    let has_video = job.stream.track(MediaKind::Video).is_some();
    let mut phase = Phase::waiting();
    let mut frames = Vec::new();
    let mut last_sync = Instant::now();
    let mut failure: Option<String> = None;
    loop {
        job.wakes.wait(Duration::from_millis(250));
        let open = job.queue.drain(&mut frames);
        for f in frames.drain(..) {
            if failure.is_some() {
                break;
            }
            let result = match handle(&job, has_video, &mut phase, f) {
                Ok(Some(keyframe)) => rotate(&job, has_video, &mut phase, keyframe),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                failure = Some(e);
            }
        }
        if failure.is_some() {
            break;
        }
        if last_sync.elapsed() >= job.settings.fsync_every {
            if let Phase::Writing(w) = &phase
                && let Some(file) = &w.file
            {
                let _ = file.sync_data();
            }
            last_sync = Instant::now();
            update_progress(&job, &phase);
        }
        if !open || job.stop.load(Ordering::Acquire) {
            break;
        }
    }
    job.queue.close();
    match (failure, phase) {
        (Some(error), Phase::Writing(w)) => fail(&job, &w.path, error),
        (Some(error), Phase::Waiting { .. }) => {
            tracing::error!(stream = %job.stream.name(), %error, "recording failed");
        }
        (None, Phase::Waiting { blocked, .. }) => {
            if let Some(b) = blocked {
                tracing::warn!(stream = %job.stream.name(), reason = %b.reason,
                    gap_secs = b.since.elapsed().as_secs_f64(),
                    "the stream ended while recording was interrupted");
            } else {
                tracing::debug!(stream = %job.stream.name(), "nothing more to record");
            }
        }
        (None, Phase::Writing(w)) => {
            let path = w.path.clone();
            if let Err(e) = close_file(&job, *w) {
                fail(&job, &path, e);
            }
        }
    }
}

/// Finishes the current file and commits it as finalized. The order makes
/// every crash point safe: trailer → fsync → hash the `.part` → sidecar
/// `finalized` with its hash → rename to the final name (the commit) →
/// fsync the folder. A crash before the sidecar leaves a `.part` repaired at
/// start-up; after it, a `.part` whose hash matches its sidecar is renamed
/// at start-up (see `Recorder::load_catalog`).
fn close_file(job: &RecordingJob, w: Writing) -> Result<(), String> {
    let path = w.path.clone();
    let part = part_path(&path);
    let dropped = job.queue.dropped().saturating_sub(w.dropped_at_start);
    let duration = finish(w)?;
    failpoint::hit("finalize:after_fsync");
    // Hashing reads the whole file: it happens here, on the recording's own
    // thread, never on the async runtime.
    let sha256 = match sha256_file(&part) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(file = %part.display(), error = %e, "cannot hash the recording");
            None
        }
    };
    failpoint::hit("finalize:after_hash");
    let m = {
        let mut m = lock(&job.meta);
        m.state = State::Finalized;
        m.ended_at = Some(catalog::now_rfc3339());
        m.duration_secs = Some(duration);
        m.dropped_frames = dropped;
        m.size_bytes = std::fs::metadata(&part).map(|m| m.len()).ok();
        m.sha256 = sha256.clone();
        m.clone()
    };
    catalog::write_meta(&path, &m).map_err(|e| format!("writing the sidecar: {e}"))?;
    failpoint::hit("finalize:after_sidecar");
    std::fs::rename(&part, &path).map_err(|e| format!("rename: {e}"))?;
    failpoint::hit("finalize:after_rename");
    index(job, &m, &path);
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    // The file is done: the live entry no longer names it (so retention and
    // DELETE may take it while the stream goes on).
    *lock(&job.meta) = Meta::pending(job.stream.name().as_str());
    let size_bytes = m.size_bytes.unwrap_or(0);
    job.stats.finalized.fetch_add(1, Ordering::Relaxed);
    job.stats
        .bytes_written
        .fetch_add(size_bytes, Ordering::Relaxed);
    tracing::info!(
        file = %path.display(),
        duration_secs = duration,
        size_bytes,
        dropped_frames = dropped,
        sha256 = sha256.as_deref().unwrap_or(""),
        "recording finalized"
    );
    if m.video.is_some() {
        job.painter.paint(&path);
    }
    job.stream.events().emit(Event::RecordingFinalized {
        stream: job.stream.name().to_string(),
        id: m.id.clone(),
        path: path.display().to_string(),
        duration_secs: duration,
        size_bytes,
        sha256,
    });
    Ok(())
}

/// Closes the current file and starts the next one with `keyframe`, so no
/// frame falls between the two (unless the next file cannot open: then the
/// recording waits, blocked, for one that can).
fn rotate(
    job: &RecordingJob,
    has_video: bool,
    phase: &mut Phase,
    keyframe: Arc<Frame>,
) -> Result<(), String> {
    if let Phase::Writing(w) = std::mem::replace(phase, Phase::waiting()) {
        close_file(job, *w)?;
    }
    match handle(job, has_video, phase, keyframe)? {
        None => Ok(()),
        Some(_) => Err("a new file could not start".into()),
    }
}

/// Shows the current entry in the catalog, its file at `file`.
fn index(job: &RecordingJob, m: &Meta, file: &std::path::Path) {
    job.index
        .put(m.clone(), Location::Local(file.to_path_buf()));
}

fn lock(m: &Mutex<Meta>) -> std::sync::MutexGuard<'_, Meta> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks the file at `path` (still `.part`) as failed, with what was written kept.
fn fail(job: &RecordingJob, path: &std::path::Path, error: String) {
    let part = part_path(path);
    tracing::error!(stream = %job.stream.name(), file = %part.display(), %error, "recording failed");
    let mut m = lock(&job.meta);
    m.state = State::Failed;
    m.error = Some(error.clone());
    m.ended_at = Some(catalog::now_rfc3339());
    let _ = catalog::write_meta(path, &m);
    let (size, file) = match std::fs::metadata(&part) {
        Ok(md) => (md.len(), part.clone()),
        Err(_) => (
            std::fs::metadata(path).map(|md| md.len()).unwrap_or(0),
            path.to_path_buf(),
        ),
    };
    m.size_bytes = Some(size);
    index(job, &m, &file);
    job.stats.failed.fetch_add(1, Ordering::Relaxed);
    job.stats.bytes_written.fetch_add(size, Ordering::Relaxed);
    job.stream.events().emit(Event::RecordingFailed {
        stream: job.stream.name().to_string(),
        id: m.id.clone(),
        path: Some(part.display().to_string()),
        error,
    });
}

/// SHA-256 of a file, hex; reads it in 256 KiB blocks.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn update_progress(job: &RecordingJob, phase: &Phase) {
    if let Phase::Writing(w) = phase {
        let part = part_path(&w.path);
        let mut m = lock(&job.meta);
        m.duration_secs = Some(w.last_us as f64 / 1e6);
        m.size_bytes = std::fs::metadata(&part).map(|m| m.len()).ok();
        index(job, &m, &part);
    }
}

/// `x.webm` → `x.webm.part`.
pub fn part_path(path: &std::path::Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

/// Handles one frame. `Ok(Some(frame))`: the current file is full; rotate,
/// then start the next file with this frame.
fn handle(
    job: &RecordingJob,
    has_video: bool,
    phase: &mut Phase,
    f: Arc<Frame>,
) -> Result<Option<Arc<Frame>>, String> {
    match phase {
        Phase::Waiting { audio, blocked } => {
            let video = f.kind() == MediaKind::Video;
            if video && !f.keyframe {
                return Ok(None);
            }
            if !video && has_video {
                audio.push_back(f);
                while let (Some(first), Some(last)) = (audio.front(), audio.back()) {
                    if last.arrival.saturating_duration_since(first.arrival) > AUDIO_LEAD {
                        audio.pop_front();
                    } else {
                        break;
                    }
                }
                return Ok(None);
            }
            if blocked
                .as_ref()
                .is_some_and(|b| Instant::now() < b.next_try)
            {
                return Ok(None);
            }
            let w = match open(job, &f, audio)? {
                Opened::Writing(w) => w,
                Opened::NotYet => return Ok(None),
                Opened::Blocked(reason) => {
                    block(job, blocked, reason);
                    return Ok(None);
                }
            };
            if let Some(b) = blocked.take() {
                let gap_secs = b.since.elapsed().as_secs_f64();
                tracing::info!(stream = %job.stream.name(), gap_secs, file = %w.path.display(),
                    "recording resumed");
            }
            let lead: Vec<Arc<Frame>> = audio.drain(..).collect();
            *phase = Phase::Writing(w);
            if let Phase::Writing(w) = phase {
                for a in lead {
                    write(w, a)?;
                }
                write(w, f)?;
            }
            Ok(None)
        }
        Phase::Writing(w) => {
            let starts_file = if has_video {
                f.kind() == MediaKind::Video && f.keyframe
            } else {
                true
            };
            let at = w.timeline.peek(&f).unwrap_or(w.last_us).max(w.last_us);
            let full = job.settings.max_file_us.is_some_and(|max| at >= max)
                || job
                    .settings
                    .max_file_bytes
                    .is_some_and(|max| w.muxer.bytes() >= max);
            // VP8/VP9/AV1 carry size changes in band and decoders follow them;
            // an H.264 file's avcC cannot change, so new parameter sets get a new file.
            let new_parameters =
                f.keyframe && f.params.codec == Codec::H264 && !w.parameter_sets.is_empty() && {
                    let sets = h264::parameter_sets(&f.data);
                    !sets.is_empty() && sets != w.parameter_sets
                };
            if starts_file && (full || new_parameters) {
                return Ok(Some(f));
            }
            if f.keyframe && f.kind() == MediaKind::Video {
                note_picture_size(job, &f);
            }
            write(w, f)?;
            Ok(None)
        }
    }
}

/// No new file can be opened (`reason`): the first time, says so (log,
/// count, event); then tries again at the next starting frame after
/// [`RETRY_EVERY`].
fn block(job: &RecordingJob, blocked: &mut Option<Blocked>, reason: String) {
    let now = Instant::now();
    match blocked {
        Some(b) => {
            b.next_try = now + RETRY_EVERY;
            b.reason = reason;
        }
        None => {
            tracing::warn!(stream = %job.stream.name(), %reason,
                "recording interrupted: no new file can be opened; trying again while the stream lives");
            job.stats.interrupted.fetch_add(1, Ordering::Relaxed);
            job.stream.events().emit(Event::RecordingInterrupted {
                stream: job.stream.name().to_string(),
                reason: reason.clone(),
            });
            *blocked = Some(Blocked {
                reason,
                since: now,
                next_try: now + RETRY_EVERY,
            });
        }
    }
}

/// Browsers start small and raise the resolution as bandwidth allows; the
/// catalog shows the size of the latest keyframe, not of the first one.
fn note_picture_size(job: &RecordingJob, f: &Frame) {
    let Some((width, height)) = probe::picture_size(f.params.codec, &f.data) else {
        return;
    };
    let mut m = lock(&job.meta);
    if let Some(v) = m.video.as_mut()
        && (v.width, v.height) != (width, height)
    {
        v.width = width;
        v.height = height;
    }
}

/// What [`open`] did.
enum Opened {
    /// A new file is being written.
    Writing(Box<Writing>),
    /// The keyframe's picture size cannot be read: wait for the next one.
    NotYet,
    /// No file can be opened now (low disk, no name): the reason.
    Blocked(String),
}

/// Opens a new file at the first decodable frame; an error fails the
/// recording (FFmpeg could not create the file).
fn open(job: &RecordingJob, first: &Frame, audio: &VecDeque<Arc<Frame>>) -> Result<Opened, String> {
    let stream = &job.stream;
    let video = match stream.track(MediaKind::Video) {
        Some(params) if first.kind() == MediaKind::Video => {
            let Some((width, height)) = probe::picture_size(params.codec, &first.data) else {
                return Ok(Opened::NotYet);
            };
            let extradata = match params.codec {
                Codec::H264 => h264::parameter_sets(&first.data),
                Codec::Av1 => av1::sequence_header_obu(&first.data)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            Some(VideoTrack {
                params,
                width,
                height,
                extradata,
            })
        }
        _ => None,
    };
    let first_audio = if first.kind() == MediaKind::Audio {
        Some(first)
    } else {
        audio.front().map(|a| a.as_ref())
    };
    let audio_track = stream.track(MediaKind::Audio).map(|params| AudioTrack {
        params,
        channels: first_audio.map_or(2, |a| opus::channels(&a.data)),
    });
    let path = match reserve(&job.dir, job.ext, job.min_free_bytes) {
        Ok(p) => p,
        Err(reason) => return Ok(Opened::Blocked(reason)),
    };
    let part = part_path(&path);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A fresh entry for this file: nothing of the previous one carries over.
    {
        let mut m = lock(&job.meta);
        *m = Meta::pending(stream.name().as_str());
        m.id = format!("{}~{stem}", stream.name());
        m.file = format!("{stem}.{}", job.ext);
    }
    let muxer = match Muxer::create(
        &part,
        video.as_ref(),
        audio_track.as_ref(),
        job.settings.mux,
    ) {
        Ok(m) => m,
        Err(e) => {
            let error = e.to_string();
            fail(job, &path, error.clone());
            return Err(error);
        }
    };
    let file = File::open(&part).ok();
    let origin = audio
        .front()
        .map_or(first.arrival, |a| a.arrival.min(first.arrival));
    {
        let mut m = lock(&job.meta);
        m.video = video.as_ref().map(|v| VideoMeta {
            codec: v.params.codec,
            width: v.width,
            height: v.height,
        });
        m.audio = audio_track.as_ref().map(|a| AudioMeta {
            codec: a.params.codec,
            channels: a.channels,
        });
        m.started_at = catalog::rfc3339(SystemTime::now());
        let _ = catalog::write_meta(&path, &m);
        index(job, &m, &part);
    }
    tracing::info!(stream = %stream.name(), file = %path.display(), "recording started");
    job.stats.started.fetch_add(1, Ordering::Relaxed);
    stream.events().emit(Event::RecordingStarted {
        stream: stream.name().to_string(),
        id: lock(&job.meta).id.clone(),
        path: path.display().to_string(),
    });
    Ok(Opened::Writing(Box::new(Writing {
        path,
        dropped_at_start: job.queue.dropped(),
        pending: Some(Vec::new()),
        pending_since: Instant::now(),
        sync_wait: job.settings.sync_wait,
        both_tracks: stream.track(MediaKind::Video).is_some()
            && stream.track(MediaKind::Audio).is_some(),
        parameter_sets: video
            .as_ref()
            .filter(|v| v.params.codec == Codec::H264)
            .map(|v| v.extradata.clone())
            .unwrap_or_default(),
        muxer,
        timeline: Timeline::new(origin),
        interleaver: Interleaver::new(INTERLEAVE_HOLD_US),
        out: Vec::new(),
        file,
        last_us: 0,
    })))
}

fn write(w: &mut Writing, f: Arc<Frame>) -> Result<(), String> {
    if let Some(pending) = w.pending.as_mut() {
        pending.push(f);
        let synced = !w.both_tracks
            || (Timeline::has_sender_clock(pending, MediaKind::Video)
                && Timeline::has_sender_clock(pending, MediaKind::Audio));
        if synced || w.pending_since.elapsed() >= w.sync_wait {
            release_pending(w)?;
        }
        return Ok(());
    }
    place(w, f)
}

/// Places the frames held at the start, now that the sender's clock is known
/// (or waiting longer is not worth it).
fn release_pending(w: &mut Writing) -> Result<(), String> {
    let Some(pending) = w.pending.take() else {
        return Ok(());
    };
    w.timeline.prime(&pending);
    for f in pending {
        place(w, f)?;
    }
    Ok(())
}

fn place(w: &mut Writing, f: Arc<Frame>) -> Result<(), String> {
    let us = w.timeline.place(&f);
    w.interleaver.push(Placed { us, frame: f }, &mut w.out);
    emit(w)
}

fn emit(w: &mut Writing) -> Result<(), String> {
    for p in w.out.drain(..) {
        let video = p.frame.kind() == MediaKind::Video;
        w.muxer
            .write(video, p.frame.keyframe, p.us, &p.frame.data)
            .map_err(|e| e.to_string())?;
        w.last_us = w.last_us.max(p.us);
    }
    Ok(())
}

/// Writes what is held and the trailer, and syncs the `.part` to the disk;
/// the file's duration.
fn finish(mut w: Writing) -> Result<f64, String> {
    release_pending(&mut w)?;
    w.interleaver.drain(&mut w.out);
    emit(&mut w)?;
    let duration = w.last_us as f64 / 1e6;
    let file = w.file.take();
    w.muxer.finish().map_err(|e| e.to_string())?;
    failpoint::hit("finalize:after_trailer");
    if let Some(f) = file {
        f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_started_in_the_same_second_get_different_files() {
        let dir = std::env::temp_dir().join(format!("castgate-reserve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || reserve(&dir, "webm", 0).unwrap())
            })
            .collect();
        let mut paths: Vec<PathBuf> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 8, "{paths:?}");
        for p in &paths {
            assert!(part_path(p).exists(), "each name is taken by its .part");
        }
        let err = reserve(&dir, "webm", u64::MAX).unwrap_err();
        assert!(err.contains("record.min_free_mib"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
