//! Files made from a finished recording (an MP4 copy, later exports and
//! pictures), kept beside it as a cache: made once on first request, served
//! from disk (with Range) after, counted by retention and deleted with the
//! recording.
//!
//! Names: `STEM.remux.mp4`, `STEM.remux-aac.mp4` (copies),
//! `STEM.export.mp4`, `STEM.export-aac.mp4` (encoded by [`super::export`])
//! and `STEM.poster.jpg`, `STEM.strip.jpg` ([`super::pictures`]) beside
//! `STEM.webm|mkv|mp4`.
//! The catalog never takes them for recordings (it lists only `.webm`,
//! `.mkv` and `.mp4` files whose stem is a timestamp), and their sidecar
//! path is never written.
//! Each is made under a temporary name (`….tmp`) and renamed when complete,
//! so a reader never sees half a file; temporaries a crash left are deleted
//! at start-up ([`clean_temporaries`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::Recorder;
use super::catalog::{self, Meta};
use super::index::Location;
use super::mp4::{self, Mp4Audio};

/// What can be made from a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The recording copied into MP4 without re-encoding the video.
    Mp4(Mp4Audio),
    /// The recording's video encoded to H.264 MP4 (an export job).
    Export(Mp4Audio),
    /// Its poster picture (JPEG).
    Poster,
    /// A row of small pictures at even times, for hover previews (JPEG).
    Strip,
}

impl Kind {
    /// Every kind (for retention, deletes and start-up cleaning).
    const ALL: [Kind; 6] = [
        Kind::Mp4(Mp4Audio::Opus),
        Kind::Mp4(Mp4Audio::Aac),
        Kind::Export(Mp4Audio::Opus),
        Kind::Export(Mp4Audio::Aac),
        Kind::Poster,
        Kind::Strip,
    ];

    /// The file-name suffix after the recording's stem.
    fn suffix(self) -> &'static str {
        match self {
            Kind::Mp4(Mp4Audio::Opus) => ".remux.mp4",
            Kind::Mp4(Mp4Audio::Aac) => ".remux-aac.mp4",
            Kind::Export(Mp4Audio::Opus) => ".export.mp4",
            Kind::Export(Mp4Audio::Aac) => ".export-aac.mp4",
            Kind::Poster => ".poster.jpg",
            Kind::Strip => ".strip.jpg",
        }
    }
}

/// Where a derived file of `meta` lives: beside the recording, in `dir/STREAM/`.
pub fn path_of(dir: &Path, meta: &Meta, kind: Kind) -> Option<PathBuf> {
    beside(&dir.join(&meta.stream).join(&meta.file), kind)
}

/// Where a derived file of the recording file `recording` (final or
/// `.part` name) lives.
pub fn beside(recording: &Path, kind: Kind) -> Option<PathBuf> {
    let name = recording.file_name()?.to_str()?;
    let base = name.strip_suffix(".part").unwrap_or(name);
    let stem = catalog::recording_stem(base)?;
    Some(recording.with_file_name(format!("{stem}{}", kind.suffix())))
}

/// The derived files of the recording file `recording` that exist now, with
/// their sizes.
pub fn existing(recording: &Path) -> Vec<(PathBuf, u64)> {
    Kind::ALL
        .iter()
        .filter_map(|kind| beside(recording, *kind))
        .filter_map(|p| {
            let md = std::fs::symlink_metadata(&p).ok()?;
            md.file_type().is_file().then_some((p, md.len()))
        })
        .collect()
}

/// Bytes the derived files of `recording` take on disk.
pub fn bytes(recording: &Path) -> u64 {
    existing(recording).iter().map(|(_, n)| n).sum()
}

/// Deletes the derived files of `recording` (they can be made again).
pub fn remove_all(recording: &Path) {
    for (p, _) in existing(recording) {
        if let Err(e) = std::fs::remove_file(&p) {
            tracing::warn!(file = %p.display(), error = %e, "cannot delete a derived file");
        }
    }
}

/// Deletes the temporaries of derived files a crash or a failed job left in
/// the recordings folder `dir`. Returns how many. Reads folders: call it off
/// the async runtime.
pub fn clean_temporaries(dir: &Path) -> usize {
    let mut n = 0;
    let Ok(streams) = std::fs::read_dir(dir) else {
        return 0;
    };
    for s in streams.flatten() {
        if !s.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(s.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            let Some(base) = name.strip_suffix(".tmp") else {
                continue;
            };
            let derived =
                Kind::ALL.iter().any(|k| base.ends_with(k.suffix())) || base.ends_with(".source");
            let stem = base.split('.').next().unwrap_or("");
            if derived && catalog::valid_stem(stem) && std::fs::remove_file(f.path()).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// Why a derived file could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DerivedError {
    /// No such recording.
    #[error("no such recording")]
    NotFound,
    /// The recording is still being written.
    #[error("the recording is still being written; its MP4 can be made once it ends")]
    InProgress,
    /// The video codec needs encoding to go into MP4, and no export of it
    /// is finished.
    #[error(
        "{0} video cannot be put into MP4 without re-encoding it; export the recording first (POST /api/recordings/{{id}}/exports), then download it here"
    )]
    NeedsExport(&'static str),
    /// The bucket holding the recording could not be read.
    #[error("the storage holding this recording did not answer: {0}")]
    Storage(String),
    /// Making the file failed.
    #[error("cannot make the file: {0}")]
    Failed(String),
    /// No picture can be had of this recording.
    #[error("{0}")]
    NoPicture(&'static str),
    /// Every decoding place stayed taken.
    #[error("too many pictures are being made; try again in a second")]
    Busy,
}

/// One maker per derived file at a time: concurrent requests for the same
/// file wait for the one making it, then all read the result.
#[derive(Debug, Default)]
pub struct Flights {
    running: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a derived file is checked or made; others wanting the same
/// file wait for it.
#[derive(Debug)]
pub struct Flight {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    path: PathBuf,
    flights: Arc<Flights>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut running = self
            .flights
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The map's reference and this flight's (held through the guard)
        // are the only ones left: nobody waits, forget the entry.
        if running
            .get(&self.path)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            running.remove(&self.path);
        }
    }
}

impl Flights {
    /// Waits until nobody else checks or makes `path`, then holds it.
    pub async fn enter(self: &Arc<Self>, path: &Path) -> Flight {
        let lock = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running.entry(path.to_path_buf()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        Flight {
            _guard: guard,
            path: path.to_path_buf(),
            flights: self.clone(),
        }
    }
}

/// Whether a derived file at `path` is there and newer than its source.
fn fresh(path: &Path, source: Option<&Path>) -> bool {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !md.file_type().is_file() {
        return false;
    }
    match (
        source.and_then(|s| std::fs::metadata(s).ok()),
        md.modified(),
    ) {
        (Some(src), Ok(made)) => src.modified().is_ok_and(|s| made >= s),
        _ => true,
    }
}

/// Recording `id` and where its file is ([`Recorder::get`], which checks
/// the disk), off the async runtime.
pub async fn lookup(recorder: &Arc<Recorder>, id: &str) -> Option<(Meta, Location)> {
    let (r, id) = (recorder.clone(), id.to_string());
    tokio::task::spawn_blocking(move || r.get(&id))
        .await
        .ok()
        .flatten()
}

/// The MP4 of the recording `meta` at `location` (made now if it is not
/// cached yet). Waits for anyone else making the same file. A recording
/// only in the bucket is read from there first. For VP8/VP9 video, the
/// finished export (made by [`super::export`]), if there is one.
pub async fn mp4(
    recorder: &Arc<Recorder>,
    meta: &Meta,
    location: Location,
    audio: Mp4Audio,
) -> Result<PathBuf, DerivedError> {
    if recorder.is_being_written(meta) {
        return Err(DerivedError::InProgress);
    }
    let codec = meta.video.as_ref().map(|v| v.codec);
    if !mp4::remuxable(codec) {
        let export = path_of(recorder.dir(), meta, Kind::Export(audio));
        return match export {
            Some(p) if fresh(&p, None) => Ok(p),
            _ => Err(DerivedError::NeedsExport(
                codec.map_or("this", |c| c.name()),
            )),
        };
    }
    let target = path_of(recorder.dir(), meta, Kind::Mp4(audio)).ok_or(DerivedError::NotFound)?;
    let flight = recorder.flights().enter(&target).await;
    let source = match location {
        Location::Local(p) => Some(p),
        Location::Stored => None,
    };
    let (t, s) = (target.clone(), source.clone());
    let cached = tokio::task::spawn_blocking(move || fresh(&t, s.as_deref()))
        .await
        .unwrap_or(false);
    if cached {
        return Ok(target);
    }
    let folder = target
        .parent()
        .map(Path::to_path_buf)
        .ok_or(DerivedError::NotFound)?;
    tokio::fs::create_dir_all(&folder)
        .await
        .map_err(|e| DerivedError::Failed(e.to_string()))?;
    let mut download = None;
    let source = match source {
        Some(s) => s,
        None => {
            let tmp = fetch(recorder, meta, &target).await?;
            download = Some(tmp.clone());
            tmp
        }
    };
    let tmp = PathBuf::from(format!("{}.tmp", target.display()));
    let (t, tmp2, src) = (target.clone(), tmp.clone(), source.clone());
    let stats = recorder.stats_handle();
    // The flight moves into the blocking job, so a client that goes away
    // mid-way does not let a second maker start on the same temporary file.
    let made = tokio::task::spawn_blocking(move || {
        let _flight = flight;
        let started = std::time::Instant::now();
        let result = mp4::convert(
            &src,
            &tmp2,
            mp4::Mp4Video::Copy,
            audio,
            &mp4::Progress::default(),
            &AtomicBool::new(false),
        )
            .map_err(|e| DerivedError::Failed(e.to_string()))
            .and_then(|stats| {
                commit(&tmp2, &t).map_err(|e| DerivedError::Failed(e.to_string()))?;
                Ok(stats)
            });
        if let Some(d) = &download {
            let _ = std::fs::remove_file(d);
        }
        match result {
            Ok(made) => {
                stats.mp4_made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    file = %t.display(),
                    video_packets = made.video_packets,
                    audio_packets = made.audio_packets,
                    secs = started.elapsed().as_secs_f64(),
                    "made an MP4 of a recording"
                );
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp2);
                tracing::warn!(source = %src.display(), error = %e, "cannot make an MP4 of a recording");
                Err(e)
            }
        }
    })
    .await
    .map_err(|_| DerivedError::Failed("the job stopped".into()))?;
    made.map(|()| target)
}

/// The poster or strip ([`Kind::Poster`], [`Kind::Strip`]) of recording
/// `id`: the file beside it, made now if missing (under one of `places`,
/// the CPU budget pictures share, waited for at most two seconds). A
/// recording only in the bucket has only the pictures made while it was
/// on this disk.
pub async fn picture(
    recorder: &Arc<Recorder>,
    id: &str,
    kind: Kind,
    places: &Arc<tokio::sync::Semaphore>,
) -> Result<PathBuf, DerivedError> {
    let (meta, location) = lookup(recorder, id).await.ok_or(DerivedError::NotFound)?;
    if meta.video.is_none() {
        return Err(DerivedError::NoPicture("the recording has no video"));
    }
    let target = path_of(recorder.dir(), &meta, kind).ok_or(DerivedError::NotFound)?;
    let flight = recorder.flights().enter(&target).await;
    let t = target.clone();
    if tokio::task::spawn_blocking(move || fresh(&t, None))
        .await
        .unwrap_or(false)
    {
        return Ok(target);
    }
    let source = match location {
        Location::Local(p) if !recorder.is_being_written(&meta) => p,
        Location::Local(_) => {
            return Err(DerivedError::NoPicture(
                "the recording is still being written; its pictures are made when it ends",
            ));
        }
        Location::Stored => {
            return Err(DerivedError::NoPicture(
                "no picture was made of this recording before it moved to object storage",
            ));
        }
    };
    let permit = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        places.clone().acquire_owned(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .ok_or(DerivedError::Busy)?;
    tokio::task::spawn_blocking(move || {
        let _hold = (permit, flight);
        super::pictures::make(&source, kind)
    })
    .await
    .map_err(|_| DerivedError::Failed("the job stopped".into()))?
    .map_err(|e| DerivedError::Failed(e.to_string()))
}

/// Reads the stored recording `meta` whole into a temporary file beside
/// `target` (FFmpeg seeks, so it cannot read the bucket as a stream) and
/// returns its path; nothing is left on an error.
pub(crate) async fn fetch(
    recorder: &Recorder,
    meta: &Meta,
    target: &Path,
) -> Result<PathBuf, DerivedError> {
    let tmp = target.with_extension("source.tmp");
    let fetched = fetch_into(recorder, meta, &tmp).await;
    if fetched.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    fetched.map(|()| tmp)
}

async fn fetch_into(recorder: &Recorder, meta: &Meta, tmp: &Path) -> Result<(), DerivedError> {
    let storage = recorder.storage().ok_or(DerivedError::NotFound)?;
    let read = storage
        .read(meta, None)
        .await
        .map_err(|e| DerivedError::Storage(e.to_string()))?;
    let mut file = tokio::fs::File::create(tmp)
        .await
        .map_err(|e| DerivedError::Failed(e.to_string()))?;
    let mut body = read.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| DerivedError::Storage(e.to_string()))?;
        file.write_all(&chunk)
            .await
            .map_err(|e| DerivedError::Failed(e.to_string()))?;
    }
    file.flush()
        .await
        .map_err(|e| DerivedError::Failed(e.to_string()))
}

/// Syncs the finished temporary file and renames it to its final name.
pub(crate) fn commit(tmp: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, target)?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_files_are_found_and_temporaries_cleaned() {
        let root = std::env::temp_dir().join(format!("castgate-derived-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let folder = root.join("demo");
        std::fs::create_dir_all(&folder).unwrap();
        let rec = folder.join("2026-11-24T15-04-05Z.mkv");
        std::fs::write(&rec, b"x").unwrap();
        std::fs::write(folder.join("2026-11-24T15-04-05Z.remux.mp4"), b"abc").unwrap();
        std::fs::write(folder.join("2026-11-24T15-04-05Z.remux-aac.mp4"), b"ab").unwrap();
        std::fs::write(folder.join("2026-11-24T15-04-05Z.remux.mp4.tmp"), b"a").unwrap();
        std::fs::write(folder.join("2026-11-24T15-04-05Z.remux.source.tmp"), b"a").unwrap();
        std::fs::write(folder.join("notes.tmp"), b"keep").unwrap();
        assert_eq!(bytes(&rec), 5);
        assert_eq!(bytes(&folder.join("2026-11-24T15-04-05Z.mkv.part")), 5);
        assert_eq!(clean_temporaries(&root), 2);
        assert!(folder.join("notes.tmp").exists());
        remove_all(&rec);
        assert_eq!(bytes(&rec), 0);
        assert!(rec.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn one_flight_per_file() {
        let flights = Arc::new(Flights::default());
        let a = flights.enter(Path::new("/x")).await;
        let f2 = flights.clone();
        let waiter = tokio::spawn(async move { f2.enter(Path::new("/x")).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let other = flights.enter(Path::new("/y")).await;
        drop(a);
        let b = waiter.await.unwrap();
        drop(b);
        drop(other);
        assert!(flights.running.lock().unwrap().is_empty());
    }
}
