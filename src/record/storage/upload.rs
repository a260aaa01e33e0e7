//! The uploader: one task that moves finished recordings from this disk
//! into the bucket, oldest first, one at a time (one part in memory).
//!
//! A file counts as stored only when the bucket says the object has the
//! file's size and SHA-256 (each part was also checked by the server against
//! its own SHA-256 as it arrived); then its sidecar goes up, and only then is
//! the local copy removed (unless `keep_local`). A failed attempt is retried
//! with a doubling wait (1 s up to `retry_max_secs`), for as long as needed,
//! other files going on meanwhile. A multipart upload resumes from its
//! journal after a failure or a restart; one that cannot resume is aborted
//! (an open multipart upload costs money).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, GetOptions, MultipartId, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload,
};

use super::parts::{Journal, Plan};
use super::{SHA256_METADATA, Storage, StorageError};
use crate::events::{Event, Events};
use crate::record::Recorder;
use crate::record::catalog::{self, Meta, State, StorageState};
use crate::record::index::Location;

/// How often the queue is looked at when nothing wakes the uploader.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// One recording waiting for the bucket.
struct Waiting {
    meta: Meta,
    path: PathBuf,
}

/// When a failing recording may be tried again, and the wait after that.
struct Retry {
    at: Instant,
    wait: Duration,
}

/// Moves finished recordings into the bucket until the task is dropped
/// (the server aborts it at shutdown; an upload cut there resumes at the
/// next start from its journal).
pub async fn run(recorder: Arc<Recorder>, storage: Arc<Storage>, events: Events) {
    let mut bus = events.subscribe();
    let mut retries: HashMap<String, Retry> = HashMap::new();
    let max_wait = Duration::from_secs_f64(storage.config().retry_max_secs);
    loop {
        let queue = waiting(&recorder, &storage);
        retries.retain(|id, _| queue.iter().any(|w| &w.meta.id == id));
        let now = Instant::now();
        let next = queue
            .into_iter()
            .find(|w| retries.get(&w.meta.id).is_none_or(|r| r.at <= now));
        let Some(w) = next else {
            tokio::select! {
                _ = bus.recv() => {}
                _ = tokio::time::sleep(IDLE_CHECK) => {}
            }
            continue;
        };
        let id = w.meta.id.clone();
        mark(&recorder, &w, StorageState::Uploading, None);
        match upload(&storage, &w).await {
            Ok(sha256) => {
                retries.remove(&id);
                stored(&recorder, &storage, &events, w, sha256).await;
            }
            Err(e) => {
                storage.count_failure();
                if recorder.index.get(&id).is_none() {
                    // Deleted meanwhile: nothing to store, nothing to keep open.
                    abandon(&storage, &w.path).await;
                    retries.remove(&id);
                    continue;
                }
                let wait = retries
                    .get(&id)
                    .map_or(Duration::from_secs(1), |r| (r.wait * 2).min(max_wait));
                tracing::warn!(recording = %id, error = %e, retry_in_secs = wait.as_secs_f64(), "upload failed; the local file is kept");
                mark(
                    &recorder,
                    &w,
                    StorageState::UploadRetrying,
                    Some(e.to_string()),
                );
                retries.insert(
                    id,
                    Retry {
                        at: Instant::now() + wait,
                        wait,
                    },
                );
            }
        }
    }
}

/// The recordings on this disk that are finished and not stored yet,
/// oldest first; keeps the queue's gauges current.
fn waiting(recorder: &Recorder, storage: &Storage) -> Vec<Waiting> {
    let mut out: Vec<Waiting> = Vec::new();
    for meta in recorder.index.all() {
        if meta.state == State::Recording || meta.storage == StorageState::Stored {
            continue;
        }
        let Some(entry) = recorder.index.get(&meta.id) else {
            continue;
        };
        let Location::Local(path) = entry.location else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "part") || recorder.is_active(&meta.id) {
            continue;
        }
        out.push(Waiting { meta, path });
    }
    out.reverse();
    let stats = storage.stats();
    stats.pending.store(out.len() as u64, Ordering::Relaxed);
    let oldest = out
        .first()
        .and_then(|w| w.meta.ended_at.as_deref().or(Some(&w.meta.started_at)))
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or(0, |d| d.as_secs());
    stats.oldest_pending_secs.store(oldest, Ordering::Relaxed);
    out
}

/// Sets a waiting recording's storage state in the catalog and its sidecar.
fn mark(recorder: &Recorder, w: &Waiting, state: StorageState, error: Option<String>) {
    let Some(entry) = recorder.index.get(&w.meta.id) else {
        return;
    };
    let mut meta = entry.meta;
    if meta.storage == state && meta.storage_error == error {
        return;
    }
    meta.storage = state;
    meta.storage_error = error;
    recorder.index.put(meta.clone(), entry.location);
    if let Err(e) = catalog::write_meta(&w.path, &meta) {
        tracing::warn!(recording = %meta.id, error = %e, "cannot update a sidecar");
    }
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
        .map_err(StorageError::Io)
}

/// Uploads one file and checks the object: its SHA-256.
async fn upload(storage: &Storage, w: &Waiting) -> Result<String, StorageError> {
    let path = w.path.clone();
    let size = blocking(move || std::fs::metadata(&path).map(|m| m.len())).await?;
    let path = w.path.clone();
    let sha256 = blocking(move || crate::record::recording::sha256_file(&path)).await?;
    if let Some(known) = &w.meta.sha256
        && known != &sha256
    {
        tracing::warn!(recording = %w.meta.id, "the file's SHA-256 differs from the one taken when it was finalized; uploading the file as it is");
    }
    let key = storage.key_of(&w.meta);
    let location = ObjectPath::from(key.clone());
    let plan = Plan::new(size, storage.config().part_mib * 1024 * 1024).ok_or_else(|| {
        StorageError::Mismatch("the file is too large for S3 (over 48.8 TiB)".into())
    })?;
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata(SHA256_METADATA.into()),
        sha256.clone().into(),
    );
    attributes.insert(Attribute::ContentType, content_type(&w.meta).into());
    if plan.single() {
        let path = w.path.clone();
        let body = blocking(move || read_part(&path, 0, size)).await?;
        storage
            .client()
            .put_opts(
                &location,
                PutPayload::from(body),
                PutOptions {
                    attributes,
                    ..PutOptions::default()
                },
            )
            .await?;
        storage
            .stats()
            .bytes_uploaded
            .fetch_add(size, Ordering::Relaxed);
    } else {
        multipart(storage, w, &key, &sha256, plan, attributes).await?;
    }
    verify(storage, &location, size, &sha256).await?;
    Ok(sha256)
}

/// A multipart upload of `w`, resumed from its journal when that continues
/// this very content.
async fn multipart(
    storage: &Storage,
    w: &Waiting,
    key: &str,
    sha256: &str,
    plan: Plan,
    attributes: Attributes,
) -> Result<(), StorageError> {
    let client = storage.client();
    let location = ObjectPath::from(key.to_string());
    let mut journal = match Journal::read(&w.path) {
        Some(j) if j.continues(key, sha256, &plan) => {
            tracing::info!(recording = %w.meta.id, parts_done = j.parts.len(), parts = plan.count(), "resuming an upload");
            j
        }
        stale => {
            if let Some(j) = stale {
                abort(storage, &j).await;
            }
            // Uploads of this key whose id never reached the journal (an
            // answer lost in an outage, a crash just after the request).
            storage.sweep_uploads(key).await;
            let upload_id = client
                .create_multipart_opts(
                    &location,
                    PutMultipartOptions {
                        attributes,
                        ..PutMultipartOptions::default()
                    },
                )
                .await?;
            let j = Journal {
                key: key.to_string(),
                upload_id,
                sha256: sha256.to_string(),
                plan,
                parts: Vec::new(),
            };
            save(&w.path, &j).await?;
            j
        }
    };
    let id: MultipartId = journal.upload_id.clone();
    for index in journal.parts.len() as u64..plan.count() {
        let (start, len) = plan.part(index);
        let path = w.path.clone();
        let body = blocking(move || read_part(&path, start, len)).await?;
        let part = match client
            .put_part(&location, &id, index as usize, PutPayload::from(body))
            .await
        {
            Ok(p) => p,
            Err(object_store::Error::NotFound { .. }) => {
                // The server no longer knows the upload (aborted, expired):
                // start again from the first part next time.
                Journal::remove(&w.path);
                return Err(StorageError::Mismatch(
                    "the storage server forgot the multipart upload; starting it again".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        storage
            .stats()
            .bytes_uploaded
            .fetch_add(len, Ordering::Relaxed);
        journal.parts.push(part.content_id);
        save(&w.path, &journal).await?;
        crate::failpoint::hit("upload:part");
    }
    let parts = journal
        .parts
        .iter()
        .map(|c| PartId {
            content_id: c.clone(),
        })
        .collect();
    match client.complete_multipart(&location, &id, parts).await {
        Ok(_) => {
            // A create whose answer was lost during this upload made one
            // more: none stays open.
            storage.sweep_uploads(key).await;
        }
        Err(e) => {
            // A completion whose answer was lost already made the object:
            // `verify` decides. Otherwise the upload stays open to resume.
            tracing::debug!(error = %e, "completing a multipart upload failed");
            let path = w.path.clone();
            if verify(storage, &location, plan.size, sha256).await.is_err() {
                return Err(e.into());
            }
            Journal::remove(&path);
            storage.sweep_uploads(key).await;
            return Ok(());
        }
    }
    Journal::remove(&w.path);
    Ok(())
}

async fn save(file: &Path, journal: &Journal) -> Result<(), StorageError> {
    let file = file.to_path_buf();
    let journal = journal.clone();
    blocking(move || journal.write(&file)).await
}

/// Aborts the multipart upload a journal names (errors only logged: the
/// server may have dropped it already).
async fn abort(storage: &Storage, journal: &Journal) {
    let location = ObjectPath::from(journal.key.clone());
    match storage
        .client()
        .abort_multipart(&location, &journal.upload_id)
        .await
    {
        Ok(()) => tracing::info!(key = %journal.key, "aborted an upload that could not be resumed"),
        Err(e) => tracing::debug!(key = %journal.key, error = %e, "aborting an upload"),
    }
}

/// What is left of the upload of a file deleted meanwhile: aborted, journal gone.
async fn abandon(storage: &Storage, file: &Path) {
    if let Some(j) = Journal::read(file) {
        abort(storage, &j).await;
    }
    Journal::remove(file);
}

/// Whether the object has the file's size and SHA-256.
async fn verify(
    storage: &Storage,
    location: &ObjectPath,
    size: u64,
    sha256: &str,
) -> Result<(), StorageError> {
    let head = storage
        .client()
        .get_opts(
            location,
            GetOptions {
                head: true,
                ..GetOptions::default()
            },
        )
        .await?;
    if head.meta.size != size {
        return Err(StorageError::Mismatch(format!(
            "{} bytes stored, {size} in the file",
            head.meta.size
        )));
    }
    match head
        .attributes
        .get(&Attribute::Metadata(SHA256_METADATA.into()))
    {
        Some(v) if v.as_ref() == sha256 => Ok(()),
        Some(v) => Err(StorageError::Mismatch(format!(
            "stored SHA-256 {} is not the file's {sha256}",
            v.as_ref()
        ))),
        None => Err(StorageError::Mismatch(
            "the stored object has no sha256 metadata".into(),
        )),
    }
}

/// The file is stored: the sidecar goes up, the catalog says so, the local
/// copy goes (unless kept), and `recording_stored` is told.
async fn stored(
    recorder: &Recorder,
    storage: &Storage,
    events: &Events,
    w: Waiting,
    sha256: String,
) {
    let Some(entry) = recorder.index.get(&w.meta.id) else {
        return;
    };
    let mut meta = entry.meta;
    meta.storage = StorageState::Stored;
    meta.storage_error = None;
    meta.sha256 = Some(sha256.clone());
    let size = meta.size_bytes.unwrap_or(0);
    let sidecar = match serde_json::to_vec_pretty(&meta) {
        Ok(s) => s,
        Err(_) => return,
    };
    let put = storage
        .client()
        .put(
            &ObjectPath::from(storage.sidecar_key_of(&meta)),
            PutPayload::from(Bytes::from(sidecar)),
        )
        .await;
    if let Err(e) = put {
        // The file is up but not listable by other nodes: the next attempt
        // uploads it again (the same key, so nothing is left over).
        tracing::warn!(recording = %meta.id, error = %e, "cannot store a sidecar; retrying");
        mark(
            recorder,
            &w,
            StorageState::UploadRetrying,
            Some(e.to_string()),
        );
        return;
    }
    storage.stats().stored.fetch_add(1, Ordering::Relaxed);
    let keep = storage.config().keep_local;
    if keep {
        recorder
            .index
            .put(meta.clone(), Location::Local(w.path.clone()));
        let (path, m) = (w.path.clone(), meta.clone());
        let _ = blocking(move || catalog::write_meta(&path, &m)).await;
    } else {
        recorder.index.put(meta.clone(), Location::Stored);
        let path = w.path.clone();
        let removed = blocking(move || {
            std::fs::remove_file(&path)?;
            catalog::remove_meta(&path);
            Journal::remove(&path);
            Ok(())
        })
        .await;
        if let Err(e) = removed {
            tracing::warn!(recording = %meta.id, error = %e, "stored, but the local file could not be removed");
        }
    }
    tracing::info!(recording = %meta.id, key = %storage.key_of(&meta), size_bytes = size, "recording stored");
    events.emit(Event::RecordingStored {
        stream: meta.stream.clone(),
        id: meta.id.clone(),
        key: storage.key_of(&meta),
        size_bytes: size,
        sha256,
        local_removed: !keep,
    });
}

/// `len` bytes of `file` from `start`.
fn read_part(file: &Path, start: u64, len: u64) -> std::io::Result<Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// The MIME type of a recording's file.
pub fn content_type(meta: &Meta) -> &'static str {
    if meta.file.ends_with(".mkv") {
        "video/x-matroska"
    } else if meta.video.is_some() {
        "video/webm"
    } else {
        "audio/webm"
    }
}
