//! Pictures of a finished recording, for the recordings page: a poster (the
//! picture about a second in, or a tenth of the way for a short one) and a
//! strip of small pictures at even times for hover previews along the
//! player's bar. Both are JPEG files beside the recording
//! (`STEM.poster.jpg`, `STEM.strip.jpg`: see [`super::derived`]).
//!
//! Only keyframes are decoded: the file is sought (the Cues make that
//! cheap) to just before each time and the first keyframe from there is
//! decoded, so a strip of an hour costs as much as one of a minute.
//! [`Painter`] makes them on one low-priority thread as files finish;
//! a request for a missing one makes it then (see
//! [`super::derived::picture`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use parking_lot::Mutex;

use ffmpeg_next as ff;

use super::derived::{self, Kind};
use super::index::Index;
use crate::media::snapshot::{self, Decoded, Picture, Strip};
use crate::media::{Codec, MediaKind, h264};

/// The poster's largest size.
pub const POSTER_MAX: (u32, u32) = (640, 360);
/// One cell of the strip.
pub const STRIP_CELL: (u32, u32) = (160, 90);
/// Most pictures in a strip (one row: its width / 160 is the count).
pub const STRIP_MAX: u32 = 60;
/// A strip has a picture per this many seconds, up to [`STRIP_MAX`].
const STRIP_EVERY_SECS: f64 = 2.0;
/// JPEG quantizer (2 best … 31 worst).
const QSCALE: u8 = 5;

/// Why a picture could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PictureError {
    /// FFmpeg could not read the file.
    #[error("cannot read the recording: {0}")]
    Read(ff::Error),
    /// No video track, or none castgate decodes.
    #[error("the recording has no video")]
    NoVideo,
    /// No keyframe could be decoded.
    #[error("{0}")]
    Decode(#[from] snapshot::SnapshotError),
    /// Writing the JPEG failed.
    #[error("cannot write the picture: {0}")]
    Write(std::io::Error),
}

/// A recording open for reading keyframes.
struct Keyframes {
    ictx: ff::format::context::Input,
    index: usize,
    codec: Codec,
    /// avcC of an H.264 track (its frames are length-prefixed).
    avcc: Option<Vec<u8>>,
    duration_secs: f64,
}

impl Keyframes {
    fn open(path: &Path) -> Result<Keyframes, PictureError> {
        ff::init().map_err(PictureError::Read)?;
        let ictx = ff::format::input(path).map_err(PictureError::Read)?;
        let stream = ictx
            .streams()
            .best(ff::media::Type::Video)
            .ok_or(PictureError::NoVideo)?;
        let par = stream.parameters();
        let codec = super::muxer::codec_of(par.id())
            .filter(|c| c.kind() == MediaKind::Video)
            .ok_or(PictureError::NoVideo)?;
        // SAFETY: plain reads of the stream's codec parameters.
        let extradata = unsafe {
            let p = par.as_ptr();
            if (*p).extradata.is_null() || (*p).extradata_size <= 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize).to_vec()
            }
        };
        let avcc = (codec == Codec::H264 && extradata.first() == Some(&1)).then_some(extradata);
        let duration = ictx.duration();
        Ok(Keyframes {
            index: stream.index(),
            codec,
            avcc,
            duration_secs: if duration > 0 {
                duration as f64 / f64::from(ff::ffi::AV_TIME_BASE)
            } else {
                0.0
            },
            ictx,
        })
    }

    /// The first keyframe at or after the keyframe before `secs`, decoded.
    fn at(&mut self, secs: f64) -> Result<Decoded, PictureError> {
        let ts = (secs.max(0.0) * f64::from(ff::ffi::AV_TIME_BASE)) as i64;
        // Backwards to the keyframe before; a file without an index is read
        // from where the demuxer lands.
        let _ = self.ictx.seek(ts, ..ts);
        let mut tried = 0;
        for (stream, packet) in self.ictx.packets() {
            if stream.index() != self.index || !packet.is_key() {
                continue;
            }
            let Some(data) = packet.data() else { continue };
            let unit = match &self.avcc {
                Some(config) => match h264::annex_b_from_avcc(config, data, true) {
                    Some(u) => u,
                    None => continue,
                },
                None => data.to_vec(),
            };
            match snapshot::decode_last(self.codec, &[&unit]) {
                Ok(pic) => return Ok(pic),
                Err(e) => {
                    tried += 1;
                    if tried >= 3 {
                        return Err(e.into());
                    }
                }
            }
        }
        Err(snapshot::SnapshotError::NoPicture {
            frames: tried,
            rejected: tried,
            last_error: None,
        }
        .into())
    }
}

/// The poster of the recording at `path`: its picture about a second in.
/// Blocking: run it off the async runtime.
pub fn poster(path: &Path) -> Result<Picture, PictureError> {
    let mut k = Keyframes::open(path)?;
    let at = if k.duration_secs > 0.0 {
        (k.duration_secs / 10.0).min(1.0)
    } else {
        0.0
    };
    let pic = k.at(at)?;
    Ok(snapshot::encode_jpeg(&pic, POSTER_MAX, QSCALE)?)
}

/// How many pictures the strip of a recording lasting `secs` holds.
pub fn strip_count(secs: f64) -> u32 {
    ((secs / STRIP_EVERY_SECS).ceil() as u32).clamp(1, STRIP_MAX)
}

/// The strip of the recording at `path`: one row of [`strip_count`] cells,
/// cell `i` showing the time `(i + ½) × duration / count`. Blocking: run it
/// off the async runtime.
pub fn strip(path: &Path) -> Result<Picture, PictureError> {
    let mut k = Keyframes::open(path)?;
    let count = strip_count(k.duration_secs);
    let mut strip = Strip::new(count, 1, STRIP_CELL)?;
    let mut any = false;
    for i in 0..count {
        let at = (f64::from(i) + 0.5) * k.duration_secs / f64::from(count);
        match k.at(at) {
            Ok(pic) => {
                strip.add(&pic)?;
                any = true;
            }
            Err(_) => strip.skip()?,
        }
    }
    if !any {
        return Err(snapshot::SnapshotError::NoPicture {
            frames: 0,
            rejected: 0,
            last_error: None,
        }
        .into());
    }
    Ok(strip.finish(QSCALE)?)
}

/// Makes the picture `kind` (poster or strip) of the recording file
/// `recording` and writes it beside it (temporary name, then renamed).
/// Returns its path. Blocking.
pub fn make(recording: &Path, kind: Kind) -> Result<PathBuf, PictureError> {
    let target = derived::beside(recording, kind).ok_or(PictureError::NoVideo)?;
    let pic = match kind {
        Kind::Strip => strip(recording)?,
        _ => poster(recording)?,
    };
    let tmp = PathBuf::from(format!("{}.tmp", target.display()));
    let written = std::fs::write(&tmp, &pic.jpeg).and_then(|()| derived::commit(&tmp, &target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(PictureError::Write(e));
    }
    Ok(target)
}

/// Whether the recording file `path` (`DIR/STREAM/STEM.ext`) is still in
/// the catalog (here or in the bucket).
fn listed(index: &Index, path: &Path) -> bool {
    let stream = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str());
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(super::catalog::recording_stem);
    match (stream, stem) {
        (Some(stream), Some(stem)) => index.get(&format!("{stream}~{stem}")).is_some(),
        _ => false,
    }
}

/// One low-priority thread making the pictures of recordings as they
/// finish, fed through a bounded queue (a full queue skips a file: its
/// pictures are made when first asked for). [`Painter::close`] ends it.
#[derive(Debug)]
pub struct Painter {
    queue: Mutex<Option<mpsc::SyncSender<PathBuf>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Painter {
    /// Starts the thread; `index` says which recordings still exist.
    pub fn start(index: Arc<Index>) -> Painter {
        let (tx, rx) = mpsc::sync_channel::<PathBuf>(64);
        let thread = std::thread::Builder::new()
            .name("castgate-pictures".into())
            .spawn(move || {
                super::export::lower_priority();
                for path in rx {
                    for kind in [Kind::Poster, Kind::Strip] {
                        match make(&path, kind) {
                            // Deleted while it was being made: keep nothing of it.
                            Ok(made) if !listed(&index, &path) => {
                                let _ = std::fs::remove_file(made);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::debug!(file = %path.display(), error = %e, "no picture of a recording")
                            }
                        }
                    }
                }
            })
            .ok();
        Painter {
            queue: Mutex::new(thread.as_ref().map(|_| tx)),
            thread: Mutex::new(thread),
        }
    }

    /// Asks for the pictures of the finished recording file `path`.
    pub fn paint(&self, path: &Path) {
        if let Some(q) = self.queue.lock().as_ref() {
            let _ = q.try_send(path.to_path_buf());
        }
    }

    /// Makes what is queued, then ends the thread (server shutdown). Blocks.
    pub fn close(&self) {
        self.queue.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hold_a_picture_every_two_seconds_up_to_sixty() {
        assert_eq!(strip_count(0.0), 1);
        assert_eq!(strip_count(5.0), 3);
        assert_eq!(strip_count(3600.0), 60);
    }
}
