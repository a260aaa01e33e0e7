//! HLS output of one stream: FFmpeg's `hls` muxer fed with the stream's
//! restream pipeline packets (H.264 passed through or transcoded once, AAC
//! from the shared encoder; no second transcode), writing `index.m3u8` and
//! MPEG-TS segments `seg<N>.ts` into a per-stream folder `s<stream id>`
//! under `restream.hls_dir`. A sliding window (`hls_list_size`) with old
//! segments deleted; the folder is removed when the output stops (stream
//! ended, API delete, shutdown) and stale folders at startup.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use super::RestreamError;
use super::output::{AudioSetup, Interrupt, MuxOutput};
use super::target::{OutPacket, Source, TargetQueue, new_parameter_sets};

/// The playlist's file name.
pub const PLAYLIST: &str = "index.m3u8";

/// How the HLS muxer is set up.
#[derive(Debug, Clone)]
pub struct HlsSettings {
    /// Target segment length (seconds; segments cut at keyframes).
    pub time_secs: f64,
    /// Segments listed in the playlist.
    pub list_size: u32,
}

/// State of an HLS output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HlsState {
    /// Waiting for the first keyframe.
    Starting,
    /// Writing segments.
    Live,
    /// FFmpeg refused (see the error).
    Failed,
    /// Stopped; the files are gone.
    Stopped,
}

/// An HLS output as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HlsInfo {
    /// Stream name.
    pub stream: String,
    /// Current state.
    pub state: HlsState,
    /// `api` or `config`.
    pub source: Source,
    /// Where players fetch the playlist.
    pub playlist: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Packets dropped because the disk was slower than the stream.
    pub dropped: u64,
}

/// Whether `file` is a name the HLS muxer writes here (`index.m3u8` or
/// `seg<digits>.ts`): the only names served.
pub fn valid_file(file: &str) -> bool {
    if file == PLAYLIST {
        return true;
    }
    file.strip_prefix("seg")
        .and_then(|r| r.strip_suffix(".ts"))
        .is_some_and(|n| !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The folder of one stream's HLS output: `p<pid>-s<stream id>`. Stream ids
/// are per process, and several castgate processes may share one `hls_dir`
/// (nodes of a cluster on one machine, with the default folder).
fn folder_name(pid: u32, stream_id: u64) -> String {
    format!("p{pid}-s{stream_id}")
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a folder named `name` in `hls_dir` is one a castgate process left
/// behind and no running process owns: that of a process that is gone (or
/// whose pid this process now has), or of the older `s<digits>` form.
fn stale(name: &str, me: u32) -> bool {
    if let Some(n) = name.strip_prefix('s') {
        return all_digits(n);
    }
    let Some((pid, sid)) = name.strip_prefix('p').and_then(|r| r.split_once("-s")) else {
        return false;
    };
    let (true, true, Ok(pid)) = (all_digits(pid), all_digits(sid), pid.parse::<u32>()) else {
        return false;
    };
    pid == me || !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the per-stream folders that processes no longer running left in
/// `dir` (those of live castgate processes sharing it stay).
pub fn clean_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = stale(name, me);
        if ours
            && e.file_type().is_ok_and(|t| t.is_dir())
            && let Err(err) = std::fs::remove_dir_all(e.path())
        {
            tracing::warn!(dir = %e.path().display(), error = %err, "stale HLS folder not removed");
        }
    }
}

#[derive(Debug)]
struct Status {
    state: HlsState,
    error: Option<String>,
}

/// One stream's HLS output: owned by the [`super::Restreamer`], run by its own thread.
pub struct Hls {
    /// Stream name.
    pub stream: String,
    /// Id of the stream instance.
    pub stream_id: u64,
    /// The folder written.
    pub dir: PathBuf,
    source: Source,
    /// Its packets.
    pub queue: Arc<TargetQueue>,
    interrupt: Arc<Interrupt>,
    status: Mutex<Status>,
    thread: super::worker::Worker,
}

impl std::fmt::Debug for Hls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hls")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Hls {
    /// An output in state `starting`, not yet running.
    pub fn new(
        stream: String,
        stream_id: u64,
        root: &Path,
        source: Source,
        queue: Arc<TargetQueue>,
    ) -> Hls {
        Hls {
            stream,
            stream_id,
            dir: root.join(folder_name(std::process::id(), stream_id)),
            source,
            queue,
            interrupt: Arc::new(Interrupt::default()),
            status: Mutex::new(Status {
                state: HlsState::Starting,
                error: None,
            }),
            thread: super::worker::Worker::default(),
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current state.
    pub fn state(&self) -> HlsState {
        self.status().state
    }

    /// What the API shows.
    pub fn info(&self) -> HlsInfo {
        let s = self.status();
        HlsInfo {
            stream: self.stream.clone(),
            state: s.state,
            source: self.source,
            playlist: format!("/hls/{}/{PLAYLIST}", self.stream),
            error: s.error.clone(),
            dropped: self.queue.dropped(),
        }
    }

    /// Asks the thread to stop; local I/O still blocked after `grace` is abandoned.
    pub fn stop(&self, grace: Duration) {
        self.queue.close();
        self.interrupt.set_deadline(grace);
    }

    /// Stores the thread running this output.
    pub fn set_thread(&self, h: JoinHandle<()>) {
        self.thread.set(h);
    }

    /// Whether its thread has ended (or never started).
    pub fn finished(&self) -> bool {
        self.thread.finished()
    }

    /// Joins its thread.
    pub fn join(&self) {
        self.thread.join();
    }
}

/// The HLS thread: waits for a keyframe, writes until the queue closes, then
/// removes the folder.
pub fn run(h: Arc<Hls>, audio: Arc<OnceLock<Option<Arc<AudioSetup>>>>, settings: HlsSettings) {
    let result = session(&h, &audio, &settings);
    h.queue.set_accepting(false);
    h.queue.close();
    if let Err(e) = std::fs::remove_dir_all(&h.dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(stream = %h.stream, dir = %h.dir.display(), error = %e, "HLS folder not removed");
    }
    let mut s = h.status();
    let result = match h.queue.failure() {
        Some(reason) => Err(RestreamError::Codec(reason)),
        None => result,
    };
    match result {
        Ok(()) => s.state = HlsState::Stopped,
        Err(e) => {
            tracing::error!(stream = %h.stream, error = %e, "HLS output failed");
            s.state = HlsState::Failed;
            s.error = Some(e.to_string());
        }
    }
    tracing::info!(stream = %h.stream, "HLS stopped");
}

fn session(
    h: &Hls,
    audio: &OnceLock<Option<Arc<AudioSetup>>>,
    settings: &HlsSettings,
) -> Result<(), RestreamError> {
    let Some(first) = h.queue.next() else {
        return Ok(());
    };
    let video = first.video_setup();
    let audio_setup = audio.get().cloned().flatten();
    std::fs::create_dir_all(&h.dir)
        .map_err(|e| RestreamError::Codec(format!("HLS folder: {e}")))?;
    let playlist = h.dir.join(PLAYLIST);
    let segments = h.dir.join("seg%d.ts");
    let (Some(playlist), Some(segments)) = (playlist.to_str(), segments.to_str()) else {
        return Err(RestreamError::Codec("HLS folder path is not UTF-8".into()));
    };
    let mux = [
        ("hls_time", format!("{}", settings.time_secs.max(0.1))),
        ("hls_list_size", settings.list_size.max(1).to_string()),
        (
            "hls_flags",
            "delete_segments+independent_segments+omit_endlist".to_string(),
        ),
        ("hls_segment_type", "mpegts".to_string()),
        ("hls_segment_filename", segments.to_string()),
    ];
    let mut out = MuxOutput::hls(
        playlist,
        video.as_deref(),
        audio_setup.as_deref(),
        &mux,
        h.interrupt.clone(),
    )?;
    h.status().state = HlsState::Live;
    tracing::info!(stream = %h.stream, "HLS live");
    let base = first.us();
    let mut current = video;
    let mut last_us = [i64::MIN / 2, i64::MIN / 2];
    let mut next = Some(first);
    // Video packets carry no duration; the last frame interval stands in
    // (the muxer uses it to time segment cuts).
    let mut video_gap_us = 33_333;
    loop {
        let Some(p) = next.take().or_else(|| h.queue.next()) else {
            h.interrupt.set_deadline(Duration::from_secs(3));
            return out.finish();
        };
        let (us, dur, data, key, extradata, is_video) = match &*p {
            OutPacket::Video {
                us,
                keyframe,
                data,
                setup,
                ..
            } => (
                *us,
                0,
                data,
                *keyframe,
                new_parameter_sets(&mut current, *keyframe, setup),
                true,
            ),
            OutPacket::Audio { us, dur_us, data } => (*us, *dur_us, data, true, None, false),
        };
        if audio_setup.is_none() && !is_video {
            continue;
        }
        let track = usize::from(!is_video);
        let mut ts = us - base;
        if ts < 0 {
            if !is_video {
                continue;
            }
            ts = 0;
        }
        // Strictly increasing per track, in steps the 90 kHz clock keeps.
        if ts < last_us[track] + 100 {
            ts = last_us[track] + 100;
        }
        let dur = if is_video {
            if last_us[0] > 0 && ts - last_us[0] < 1_000_000 {
                video_gap_us = ts - last_us[0];
            }
            video_gap_us
        } else {
            dur
        };
        last_us[track] = ts;
        out.write(is_video, key, ts, dur, data, extradata)?;
    }
}

#[cfg(test)]
mod tests {
    use super::valid_file;

    #[test]
    fn only_muxer_names_are_valid() {
        assert!(valid_file("index.m3u8"));
        assert!(valid_file("seg0.ts"));
        assert!(valid_file("seg12345.ts"));
        for bad in [
            "",
            "seg.ts",
            "../index.m3u8",
            "seg1.ts/..",
            "index.m3u8.tmp",
            "seg-1.ts",
            "seg1.TS",
            "seg12345678901.ts",
            "/etc/passwd",
            "seg1.ts\0",
        ] {
            assert!(!valid_file(bad), "{bad:?}");
        }
    }
}
