//! The recordings on disk: file layout, ids, sidecar metadata, listing.
//!
//! Layout: `DIR/STREAM/YYYY-MM-DDTHH-MM-SSZ[-N].webm|mkv|mp4` (`.part` while being
//! written) with a sidecar `…json`. A recording's id is `STREAM~STEM`; ids are
//! parsed strictly (stream-name rules, a timestamp stem), so no id can name a
//! path outside the directory.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::media::Codec;
use crate::names::StreamName;

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = RecordingState)]
pub enum State {
    /// Being written now.
    Recording,
    /// Cleanly finished: Cues and Duration written.
    Finalized,
    /// Left unfinished by a crash, then repaired.
    Repaired,
    /// Stopped by an error (e.g. disk full); what was written is kept.
    Failed,
}

/// Where a finished recording's file is kept, when object storage is on
/// (`storage.kind = "s3"`); always `local` without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RecordingStorage)]
pub enum StorageState {
    /// On this node's disk only (being written, or waiting for its upload).
    #[default]
    Local,
    /// Being uploaded now.
    Uploading,
    /// In the bucket, checked by its SHA-256 (and maybe still on disk too).
    Stored,
    /// The last upload attempt failed (`storage_error` says why); it is tried
    /// again, the local file kept meanwhile.
    UploadRetrying,
}

/// Video details of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VideoMeta {
    /// Codec.
    pub codec: Codec,
    /// Coded width.
    pub width: u32,
    /// Coded height.
    pub height: u32,
}

/// Audio details of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AudioMeta {
    /// Codec.
    pub codec: Codec,
    /// Channels.
    pub channels: u8,
}

/// What the catalog knows of one recording (the sidecar file's content).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Recording)]
pub struct Meta {
    /// `STREAM~STEM`.
    pub id: String,
    /// Stream name.
    pub stream: String,
    /// File name within the stream's folder (final name).
    pub file: String,
    /// Wall-clock start (RFC 3339 UTC).
    pub started_at: String,
    /// Wall-clock end, once ended.
    pub ended_at: Option<String>,
    /// Recorded duration in seconds (grows while recording).
    pub duration_secs: Option<f64>,
    /// Size of the file in bytes.
    pub size_bytes: Option<u64>,
    /// State.
    pub state: State,
    /// Video track.
    pub video: Option<VideoMeta>,
    /// Audio track.
    pub audio: Option<AudioMeta>,
    /// Frames the recorder could not keep up with.
    #[serde(default)]
    pub dropped_frames: u64,
    /// The error that stopped a failed recording.
    pub error: Option<String>,
    /// SHA-256 of the finalized file (hex), computed when it was finalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where the file is kept (object storage).
    #[serde(default)]
    pub storage: StorageState,
    /// Why the last upload attempt failed (`storage = "upload_retrying"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
}

impl Meta {
    /// The MIME type of the recording's file (downloads, object storage).
    pub fn content_type(&self) -> &'static str {
        if self.file.ends_with(".mkv") {
            "video/x-matroska"
        } else if self.file.ends_with(".mp4") {
            self.mp4_type()
        } else if self.video.is_some() {
            "video/webm"
        } else {
            "audio/webm"
        }
    }

    /// The MIME type of an MP4 of this recording (its own, or one made from it).
    pub fn mp4_type(&self) -> &'static str {
        if self.video.is_some() {
            "video/mp4"
        } else {
            "audio/mp4"
        }
    }

    /// The entry of a recording of `stream` whose file is not chosen yet
    /// (empty id: not listed).
    pub fn pending(stream: &str) -> Meta {
        Meta {
            id: String::new(),
            stream: stream.to_string(),
            file: String::new(),
            started_at: now_rfc3339(),
            ended_at: None,
            duration_secs: None,
            size_bytes: None,
            state: State::Recording,
            video: None,
            audio: None,
            dropped_frames: 0,
            error: None,
            sha256: None,
            storage: StorageState::Local,
            storage_error: None,
        }
    }
}

/// RFC 3339 (seconds, UTC) of a time.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// RFC 3339 of now.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// A file stem for a recording starting at `t`: `2026-11-24T15-04-05Z`.
pub fn stem_for(t: SystemTime) -> String {
    rfc3339(t).replace(':', "-")
}

/// The stem of a recording file's name (`STEM` of `STEM.webm`, `.mkv` or
/// `.mp4`); `None` for any other name. Derived files (`STEM.remux.mp4`…)
/// give a stem that is not a valid one (see [`valid_stem`]).
pub fn recording_stem(name: &str) -> Option<&str> {
    name.strip_suffix(".webm")
        .or_else(|| name.strip_suffix(".mkv"))
        .or_else(|| name.strip_suffix(".mp4"))
}

/// Whether `stem` is one castgate makes (a timestamp, maybe `-N`).
pub fn valid_stem(stem: &str) -> bool {
    let b = stem.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let shape = b"0000-00-00T00-00-00Z";
    let head_ok = b[..20].iter().zip(shape).all(|(c, s)| match s {
        b'0' => c.is_ascii_digit(),
        _ => c == s,
    });
    let tail = &stem[20..];
    head_ok
        && (tail.is_empty()
            || (tail.len() <= 6
                && tail.starts_with('-')
                && tail[1..].chars().all(|c| c.is_ascii_digit())
                && tail.len() > 1))
}

/// Splits and validates an id into (stream, stem).
pub fn parse_id(id: &str) -> Option<(StreamName, String)> {
    let (stream, stem) = id.split_once('~')?;
    let stream = StreamName::parse(stream).ok()?;
    valid_stem(stem).then(|| (stream, stem.to_string()))
}

/// The sidecar path of a recording file.
pub fn meta_path(file: &Path) -> PathBuf {
    file.with_extension("json")
}

/// Writes the sidecar atomically (temp file, then rename).
pub fn write_meta(file: &Path, meta: &Meta) -> std::io::Result<()> {
    let path = meta_path(file);
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &path)
}

/// Reads a sidecar.
pub fn read_meta(file: &Path) -> Option<Meta> {
    let text = std::fs::read(meta_path(file)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Removes a sidecar (a recording that never wrote a frame).
pub fn remove_meta(file: &Path) {
    let _ = std::fs::remove_file(meta_path(file));
}

/// Every recording file (final or `.part`) under `dir`, with its id.
pub fn scan(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(streams) = std::fs::read_dir(dir) else {
        return out;
    };
    for s in streams.flatten() {
        let Ok(ft) = s.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let Some(stream) = s.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if StreamName::parse(&stream).is_err() {
            continue;
        }
        let Ok(files) = std::fs::read_dir(s.path()) else {
            continue;
        };
        for f in files.flatten() {
            let Ok(ft) = f.file_type() else { continue };
            if !ft.is_file() {
                continue; // symlinks and folders are never served
            }
            let name = f.file_name().to_string_lossy().to_string();
            let base = name.strip_suffix(".part").unwrap_or(&name);
            let Some(stem) = recording_stem(base) else {
                continue;
            };
            if valid_stem(stem) {
                out.push((format!("{stream}~{stem}"), f.path()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strict() {
        assert!(parse_id("demo~2026-11-24T15-04-05Z").is_some());
        assert!(parse_id("demo~2026-11-24T15-04-05Z-2").is_some());
        for bad in [
            "demo",
            "../etc~2026-11-24T15-04-05Z",
            "demo~../../etc/passwd",
            "demo~2026-11-24T15-04-05Z/..",
            "demo~2026-11-24T15-04-05Z-",
            "demo~2026-11-24T15:04:05Z",
            "~2026-11-24T15-04-05Z",
        ] {
            assert!(parse_id(bad).is_none(), "{bad}");
        }
        assert_eq!(
            recording_stem("2026-11-24T15-04-05Z.mp4"),
            Some("2026-11-24T15-04-05Z")
        );
        assert!(!valid_stem(
            recording_stem("2026-11-24T15-04-05Z.remux.mp4").unwrap()
        ));
        assert_eq!(recording_stem("2026-11-24T15-04-05Z.json"), None);
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_000_000);
        assert!(valid_stem(&stem_for(t)), "{}", stem_for(t));
    }
}
