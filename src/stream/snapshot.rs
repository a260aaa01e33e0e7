//! Pictures of live streams for the pages' tiles: the latest picture of a
//! stream as a JPEG, decoded only when asked for, from the cached group of
//! pictures (the latest keyframe and the frames after it; nothing is kept
//! decoded between requests).
//!
//! Cost is bounded three ways, so a storm of requests cannot disturb live
//! streams: a picture is reused for `snapshots.cache_ms` (or as long as no
//! new frame came); requests for one stream wait for the one decode under
//! way (a single flight per stream); and decodes run on the blocking pool
//! under a semaphore of `snapshots.max_concurrent` places, with a short wait
//! for a place before the request is refused (`503`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::LiveStream;
use crate::config::SnapshotConfig;
use crate::media::frame::Frame;
use crate::media::snapshot::{self, DEFAULT_QSCALE};

/// Frames decoded at most for one picture (a keyframe and what follows);
/// a longer group gives an older picture, and a fresh keyframe is asked for.
const MAX_FRAMES: usize = 120;

/// How long a request waits for a decoding place before it is refused.
const WAIT_FOR_PLACE: Duration = Duration::from_secs(2);

/// A keyframe older than this is refreshed (asked for) by the next request.
const STALE_KEYFRAME: Duration = Duration::from_secs(10);

/// Asks the publisher for a keyframe of the top layer, so the next
/// picture decodes from a fresh one.
fn ask_for_keyframe(stream: &LiveStream) {
    if let Some(layer) = stream.resolve_layer(super::Want::Top) {
        stream.request_keyframe(layer);
    }
}

/// A JPEG of a stream's latest picture.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The JPEG.
    pub jpeg: Bytes,
    /// Its size.
    pub width: u32,
    /// Its size.
    pub height: u32,
    /// A tag that changes with the picture (an `ETag`).
    pub tag: u64,
}

/// Why there is no picture.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The stream has no video.
    #[error("the stream has no video")]
    NoVideo,
    /// No keyframe has arrived yet (or the group of pictures is too big to keep).
    #[error("no picture yet: waiting for the publisher's first keyframe")]
    NotYet,
    /// Every decoding place stayed taken.
    #[error("too many pictures are being made; try again in a second")]
    Busy,
    /// The frames could not be decoded.
    #[error("the picture could not be decoded: {0}")]
    Decode(String),
}

/// What a stream's slot remembers.
#[derive(Debug)]
struct Cached {
    made: Instant,
    /// The newest frame decoded (the same `Arc` still newest: nothing new).
    newest: Arc<Frame>,
    snapshot: Snapshot,
}

/// One stream's slot: its last picture, locked while one is made.
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Counts for metrics.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    /// Pictures decoded.
    pub decodes: AtomicU64,
    /// Requests answered from the cache.
    pub cached: AtomicU64,
    /// Requests refused because every place stayed taken.
    pub busy: AtomicU64,
}

/// The pictures of this node's live streams.
#[derive(Debug)]
pub struct Snapshots {
    config: SnapshotConfig,
    places: Arc<tokio::sync::Semaphore>,
    /// By stream id (a new stream of the same name starts afresh), with the
    /// last time each was asked for.
    slots: Mutex<HashMap<u64, (Slot, Instant)>>,
    stats: SnapshotStats,
}

impl Snapshots {
    /// Pictures made as `config` says.
    pub fn new(config: SnapshotConfig) -> Snapshots {
        let places = crate::config::or_half_the_cores(config.max_concurrent);
        Snapshots {
            config,
            places: Arc::new(tokio::sync::Semaphore::new(places)),
            slots: Mutex::new(HashMap::new()),
            stats: SnapshotStats::default(),
        }
    }

    /// The decoding places, shared with other pictures (recordings'
    /// posters and strips) so all decoding stays within one CPU budget.
    pub fn places(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.places
    }

    /// What has been done since start.
    pub fn stats(&self) -> &SnapshotStats {
        &self.stats
    }

    fn slot(&self, stream: u64) -> Slot {
        let mut slots = self.slots.lock();
        let now = Instant::now();
        // Forget streams nobody asked about for a minute (ended ones among them).
        slots.retain(|_, (_, used)| now.duration_since(*used) < Duration::from_secs(60));
        let entry = slots
            .entry(stream)
            .or_insert_with(|| (Slot::default(), now));
        entry.1 = now;
        entry.0.clone()
    }

    /// The latest picture of `stream`, from the cache or decoded now.
    pub async fn picture(&self, stream: &Arc<LiveStream>) -> Result<Snapshot, SnapshotError> {
        let codec = stream
            .track(crate::media::frame::MediaKind::Video)
            .map(|p| p.codec)
            .ok_or(SnapshotError::NoVideo)?;
        let slot = self.slot(stream.id());
        let mut cached = slot.lock().await;
        let Some((keyframe_at, frames)) = stream.latest_pictures(MAX_FRAMES + 1) else {
            ask_for_keyframe(stream);
            return match cached.as_ref() {
                Some(c) => Ok(c.snapshot.clone()),
                None => Err(SnapshotError::NotYet),
            };
        };
        let Some(newest) = frames.get(MAX_FRAMES.min(frames.len()) - 1).cloned() else {
            return Err(SnapshotError::NotYet);
        };
        if let Some(c) = cached.as_ref()
            && (Arc::ptr_eq(&c.newest, &newest)
                || c.made.elapsed() < Duration::from_millis(self.config.cache_ms))
        {
            self.stats.cached.fetch_add(1, Ordering::Relaxed);
            return Ok(c.snapshot.clone());
        }
        if frames.len() > MAX_FRAMES || keyframe_at.elapsed() > STALE_KEYFRAME {
            // Decoding from an old keyframe gets dearer with every frame:
            // ask for a new one, for the next picture.
            ask_for_keyframe(stream);
        }
        let permit = tokio::time::timeout(WAIT_FOR_PLACE, self.places.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                SnapshotError::Busy
            })?;
        let max = (self.config.width, self.config.height);
        let frames: Vec<Arc<Frame>> = frames.into_iter().take(MAX_FRAMES).collect();
        let tag = self.stats.decodes.fetch_add(1, Ordering::Relaxed) + 1;
        let picture = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let data: Vec<&[u8]> = frames.iter().map(|f| &f.data[..]).collect();
            snapshot::jpeg_of(codec, &data, max, DEFAULT_QSCALE)
        })
        .await
        .map_err(|_| SnapshotError::Decode("the decoder stopped".into()))?
        .map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let snap = Snapshot {
            tag,
            jpeg: Bytes::from(picture.jpeg),
            width: picture.width,
            height: picture.height,
        };
        *cached = Some(Cached {
            made: Instant::now(),
            newest,
            snapshot: snap.clone(),
        });
        Ok(snap)
    }
}
