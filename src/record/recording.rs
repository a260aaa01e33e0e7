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
use super::muxer::{AudioTrack, MuxOptions, Muxer, VideoTrack};
use crate::events::Event;
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
    /// Settings.
    pub settings: RecordingSettings,
}

enum Phase {
    /// Waiting for the first video keyframe (or audio, if audio-only).
    Waiting { audio: VecDeque<Arc<Frame>> },
    /// Writing.
    Writing(Box<Writing>),
}

struct Writing {
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

/// A recording with its file chosen.
struct Job {
    inner: RecordingJob,
    path: PathBuf,
}

impl std::ops::Deref for Job {
    type Target = RecordingJob;
    fn deref(&self) -> &RecordingJob {
        &self.inner
    }
}

/// Picks a free file name and checks the disk; file-system work stays off the
/// async runtime because it runs here, on the recording's own thread.
fn prepare(job: &RecordingJob) -> Result<PathBuf, String> {
    if let Err(e) = std::fs::create_dir_all(&job.dir) {
        return Err(format!("cannot create {}: {e}", job.dir.display()));
    }
    if let Some(free) = super::free_bytes(&job.dir)
        && free < job.min_free_bytes
    {
        return Err(format!(
            "only {} MiB free, below record.min_free_mib",
            free / (1024 * 1024)
        ));
    }
    let base = catalog::stem_for(SystemTime::now());
    let pick = (0..1000)
        .map(|n| {
            if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            }
        })
        .find(|stem| {
            let p = job.dir.join(format!("{stem}.{}", job.ext));
            !p.exists() && !part_path(&p).exists() && !catalog::meta_path(&p).exists()
        });
    let Some(stem) = pick else {
        return Err("no free file name".into());
    };
    let path = job.dir.join(format!("{stem}.{}", job.ext));
    {
        let mut m = lock(&job.meta);
        m.id = format!("{}~{stem}", job.stream.name());
        m.file = format!("{stem}.{}", job.ext);
    }
    Ok(path)
}

/// Runs a recording to its end; called on its own thread.
pub fn run(job: RecordingJob) {
    let mut job = match prepare(&job) {
        Ok(path) => Job { inner: job, path },
        Err(error) => {
            tracing::error!(stream = %job.stream.name(), %error, "not recording");
            job.queue.close();
            lock(&job.meta).state = State::Failed;
            job.stats.failed.fetch_add(1, Ordering::Relaxed);
            job.stream.events().emit(Event::RecordingFailed {
                stream: job.stream.name().to_string(),
                id: String::new(),
                path: None,
                error,
            });
            return;
        }
    };
    let has_video = job.stream.track(MediaKind::Video).is_some();
    let mut phase = Phase::Waiting {
        audio: VecDeque::new(),
    };
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
                Ok(Some(keyframe)) => rotate(&mut job, has_video, &mut phase, keyframe),
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
    let dropped = job.queue.dropped();
    let part = part_path(&job.path);
    match (failure, phase) {
        (Some(error), _) => fail(&job, &part, error),
        (None, Phase::Waiting { .. }) => {
            // Nothing was ever written: no file, no catalog entry.
            let _ = std::fs::remove_file(&part);
            catalog::remove_meta(&job.path);
            tracing::info!(stream = %job.stream.name(), "nothing to record");
        }
        (None, Phase::Writing(w)) => {
            if let Err(e) = close_file(&job, *w, dropped) {
                fail(&job, &part, e);
            }
        }
    }
}

/// Finishes the current file and records it as finalized in its sidecar.
fn close_file(job: &Job, w: Writing, dropped: u64) -> Result<(), String> {
    let part = part_path(&job.path);
    let duration = finish(job, &part, w)?;
    // Hashing reads the whole file: it happens here, on the recording's own
    // thread, never on the async runtime.
    let sha256 = match sha256_file(&job.path) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(file = %job.path.display(), error = %e, "cannot hash the recording");
            None
        }
    };
    let mut m = lock(&job.meta);
    m.state = State::Finalized;
    m.ended_at = Some(catalog::now_rfc3339());
    m.duration_secs = Some(duration);
    m.dropped_frames = dropped;
    m.size_bytes = std::fs::metadata(&job.path).map(|m| m.len()).ok();
    m.sha256 = sha256.clone();
    let _ = catalog::write_meta(&job.path, &m);
    let size_bytes = m.size_bytes.unwrap_or(0);
    job.stats.finalized.fetch_add(1, Ordering::Relaxed);
    job.stats
        .bytes_written
        .fetch_add(size_bytes, Ordering::Relaxed);
    tracing::info!(
        file = %job.path.display(),
        duration_secs = duration,
        size_bytes,
        dropped_frames = dropped,
        sha256 = sha256.as_deref().unwrap_or(""),
        "recording finalized"
    );
    job.stream.events().emit(Event::RecordingFinalized {
        stream: job.stream.name().to_string(),
        id: m.id.clone(),
        path: job.path.display().to_string(),
        duration_secs: duration,
        size_bytes,
        sha256,
    });
    Ok(())
}

/// Closes the current file and starts the next one with `keyframe`, so no
/// frame falls between the two.
fn rotate(
    job: &mut Job,
    has_video: bool,
    phase: &mut Phase,
    keyframe: Arc<Frame>,
) -> Result<(), String> {
    let old = std::mem::replace(
        phase,
        Phase::Waiting {
            audio: VecDeque::new(),
        },
    );
    if let Phase::Writing(w) = old {
        close_file(job, *w, job.queue.dropped())?;
    }
    let path = prepare(&job.inner)?;
    job.path = path;
    {
        let mut m = lock(&job.meta);
        m.state = State::Recording;
        m.started_at = catalog::now_rfc3339();
        m.ended_at = None;
        m.duration_secs = None;
        m.size_bytes = None;
        m.error = None;
    }
    match handle(job, has_video, phase, keyframe)? {
        None => Ok(()),
        Some(_) => Err("a new file could not start".into()),
    }
}

fn lock(m: &Mutex<Meta>) -> std::sync::MutexGuard<'_, Meta> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fail(job: &Job, part: &std::path::Path, error: String) {
    tracing::error!(stream = %job.stream.name(), file = %part.display(), %error, "recording failed");
    let mut m = lock(&job.meta);
    m.state = State::Failed;
    m.error = Some(error.clone());
    m.ended_at = Some(catalog::now_rfc3339());
    let _ = catalog::write_meta(&job.path, &m);
    let size = std::fs::metadata(part)
        .or_else(|_| std::fs::metadata(&job.path))
        .map(|md| md.len())
        .unwrap_or(0);
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

fn update_progress(job: &Job, phase: &Phase) {
    if let Phase::Writing(w) = phase {
        let mut m = lock(&job.meta);
        m.duration_secs = Some(w.last_us as f64 / 1e6);
        m.size_bytes = std::fs::metadata(part_path(&job.path))
            .map(|m| m.len())
            .ok();
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
    job: &Job,
    has_video: bool,
    phase: &mut Phase,
    f: Arc<Frame>,
) -> Result<Option<Arc<Frame>>, String> {
    let part = part_path(&job.path);
    match phase {
        Phase::Waiting { audio } => {
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
            let Some(w) = open(job, &part, &f, audio)? else {
                return Ok(None);
            };
            let lead: Vec<Arc<Frame>> = audio.drain(..).collect();
            *phase = Phase::Writing(Box::new(w));
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

/// Browsers start small and raise the resolution as bandwidth allows; the
/// catalog shows the size of the latest keyframe, not of the first one.
fn note_picture_size(job: &Job, f: &Frame) {
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

/// Opens the file at the first decodable frame; `None` if the keyframe's
/// picture size cannot be read yet (wait for the next one).
fn open(
    job: &Job,
    part: &std::path::Path,
    first: &Frame,
    audio: &VecDeque<Arc<Frame>>,
) -> Result<Option<Writing>, String> {
    let stream = &job.stream;
    let video = match stream.track(MediaKind::Video) {
        Some(params) if first.kind() == MediaKind::Video => {
            let Some((width, height)) = probe::picture_size(params.codec, &first.data) else {
                return Ok(None);
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
    if let Some(dir) = part.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let muxer = Muxer::create(part, video.as_ref(), audio_track.as_ref(), job.settings.mux)
        .map_err(|e| e.to_string())?;
    let file = File::open(part).ok();
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
        let _ = catalog::write_meta(&job.path, &m);
    }
    tracing::info!(stream = %stream.name(), file = %job.path.display(), "recording started");
    job.stats.started.fetch_add(1, Ordering::Relaxed);
    stream.events().emit(Event::RecordingStarted {
        stream: stream.name().to_string(),
        id: lock(&job.meta).id.clone(),
        path: job.path.display().to_string(),
    });
    Ok(Some(Writing {
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
    }))
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

/// Writes what is held, the trailer, syncs, and renames `.part` away.
fn finish(job: &Job, part: &std::path::Path, mut w: Writing) -> Result<f64, String> {
    release_pending(&mut w)?;
    w.interleaver.drain(&mut w.out);
    emit(&mut w)?;
    let duration = w.last_us as f64 / 1e6;
    let file = w.file.take();
    w.muxer.finish().map_err(|e| e.to_string())?;
    if let Some(f) = file {
        f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    }
    std::fs::rename(part, &job.path).map_err(|e| format!("rename: {e}"))?;
    if let Some(dir) = job.path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(duration)
}
