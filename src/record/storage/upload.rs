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

use sha2::{Digest, Sha256};

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
        mark(&recorder, &w, StorageState::Uploading, None).await;
        let outcome = match upload(&storage, &w).await {
            Ok(done) => stored(&recorder, &storage, &events, &w, done).await,
            Err(e) => Err(e),
        };
        let e = match outcome {
            Ok(()) => {
                retries.remove(&id);
                continue;
            }
            Err(StorageError::NameTaken) => {
                // Another recording (another node's) holds the object name:
                // this one moves to a free name and goes up under it.
                retries.remove(&id);
                if let Err(e) = rename(&recorder, &storage, &w).await {
                    tracing::warn!(recording = %id, error = %e, "cannot move a recording to a free name");
                }
                continue;
            }
            Err(e) => e,
        };
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
            Some(summary(&e)),
        )
        .await;
        retries.insert(
            id,
            Retry {
                at: Instant::now() + wait,
                wait,
            },
        );
    }
}

/// What the API and the page show of a failed attempt: what went wrong,
/// without the storage's address or its own wording (the log has those).
fn summary(e: &StorageError) -> String {
    let text = e.to_string();
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    let what = if let StorageError::Mismatch(m) = e {
        return format!("the stored object did not check out: {m}");
    } else if let StorageError::Io(io) = e {
        return format!("cannot read the local file: {io}");
    } else if has(&[
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "403",
    ]) {
        "the storage refused castgate's credentials (HTTP 403): check storage.access_key_id, secret_access_key and the bucket's policy"
    } else if has(&["NoSuchBucket"]) {
        "the bucket does not exist (storage.bucket)"
    } else if has(&[
        "error sending request",
        "timed out",
        "timeout",
        "connect",
        "body error",
    ]) {
        "the storage did not answer (network, or the server is down)"
    } else if has(&[" 5", "InternalError", "SlowDown", "ServiceUnavailable"]) {
        "the storage answered with a server error"
    } else {
        "the storage refused the request"
    };
    what.to_string()
}

/// Moves a recording whose object name another recording holds in the
/// bucket to the next free name (`STEM-1`, `STEM-2`, …: free on this disk
/// and in the bucket), file, sidecar and catalog entry.
async fn rename(recorder: &Recorder, storage: &Storage, w: &Waiting) -> Result<(), StorageError> {
    let (stream, stem) = catalog::parse_id(&w.meta.id)
        .ok_or_else(|| StorageError::Mismatch("not a recording id".into()))?;
    let ext = if w.meta.file.ends_with(".mkv") {
        "mkv"
    } else {
        "webm"
    };
    let dir = w.path.parent().map(Path::to_path_buf).unwrap_or_default();
    if let Some(j) = blocking_read_journal(&w.path).await {
        // An upload towards the other recording's name must never complete.
        abort(storage, &j).await;
    }
    for n in 1..1000 {
        let new_stem = format!("{stem}-{n}");
        let file = format!("{new_stem}.{ext}");
        let path = dir.join(&file);
        let mut meta = w.meta.clone();
        meta.id = format!("{stream}~{new_stem}");
        meta.file = file;
        if recorder.index.get(&meta.id).is_some() || path.exists() {
            continue;
        }
        if exists(storage, &ObjectPath::from(storage.key_of(&meta)))
            .await?
            .is_some()
        {
            continue;
        }
        meta.storage = StorageState::Local;
        meta.storage_error = None;
        let (from, to, m) = (w.path.clone(), path.clone(), meta.clone());
        blocking(move || {
            std::fs::rename(&from, &to)?;
            catalog::write_meta(&to, &m)?;
            catalog::remove_meta(&from);
            Journal::remove(&from);
            Ok(())
        })
        .await?;
        recorder.index.remove(&w.meta.id);
        recorder.index.put(meta.clone(), Location::Local(path));
        tracing::warn!(from = %w.meta.id, to = %meta.id, "the bucket holds another recording under this name: renamed");
        return Ok(());
    }
    Err(StorageError::Mismatch(
        "no free name for the recording".into(),
    ))
}

/// The recordings on this disk that are finished and not stored yet,
/// oldest first; keeps the queue's gauges current.
fn waiting(recorder: &Recorder, storage: &Storage) -> Vec<Waiting> {
    let mut out: Vec<Waiting> = Vec::new();
    for entry in recorder.index.entries() {
        let meta = entry.meta;
        if meta.state == State::Recording || meta.storage == StorageState::Stored {
            continue;
        }
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
async fn mark(recorder: &Recorder, w: &Waiting, state: StorageState, error: Option<String>) {
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
    let (path, id) = (w.path.clone(), meta.id.clone());
    if let Err(e) = blocking(move || catalog::write_meta(&path, &meta)).await {
        tracing::warn!(recording = %id, error = %e, "cannot update a sidecar");
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

async fn blocking_read_journal(file: &Path) -> Option<Journal> {
    let file = file.to_path_buf();
    blocking(move || Ok(Journal::read(&file)))
        .await
        .ok()
        .flatten()
}

async fn blocking_remove_journal(file: &Path) {
    let file = file.to_path_buf();
    let _ = blocking(move || {
        Journal::remove(&file);
        Ok(())
    })
    .await;
}

/// A file that went up: its size and SHA-256.
struct Uploaded {
    size: u64,
    sha256: String,
}

/// Uploads one file (unless the bucket already has it) and checks the object.
async fn upload(storage: &Storage, w: &Waiting) -> Result<Uploaded, StorageError> {
    let path = w.path.clone();
    let (size, sha256) = blocking(move || {
        let size = std::fs::metadata(&path)?.len();
        Ok((size, crate::record::recording::sha256_file(&path)?))
    })
    .await?;
    if let Some(known) = &w.meta.sha256
        && known != &sha256
    {
        tracing::warn!(recording = %w.meta.id, "the file's SHA-256 differs from the one taken when it was finalized; uploading the file as it is");
    }
    let done = Uploaded { size, sha256 };
    let key = storage.key_of(&w.meta);
    let location = ObjectPath::from(key.clone());
    // What the bucket holds under this name: this very file (an attempt whose
    // sidecar failed, a completion whose answer was lost), another
    // recording's (a name taken on another node), or nothing.
    match exists(storage, &location).await? {
        Some((s, Some(sha))) if s == size && sha == done.sha256 => return Ok(done),
        Some((_, Some(_))) => return Err(StorageError::NameTaken),
        Some((_, None)) => {
            // Not castgate's object, or a server that drops object metadata:
            // never renamed in a loop, never overwritten.
            return Err(StorageError::Mismatch(
                "an object without sha256 metadata holds this recording's name".into(),
            ));
        }
        None => {}
    }
    let plan = Plan::new(size, storage.config().part_mib * 1024 * 1024).ok_or_else(|| {
        StorageError::Mismatch("the file is too large for S3 (over 48.8 TiB)".into())
    })?;
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata(SHA256_METADATA.into()),
        done.sha256.clone().into(),
    );
    attributes.insert(Attribute::ContentType, w.meta.content_type().into());
    if plan.single() {
        let path = w.path.clone();
        let (body, sent) = blocking(move || {
            let body = read_part(&path, 0, size)?;
            let sent = hex::encode(Sha256::digest(&body));
            Ok((body, sent))
        })
        .await?;
        if sent != done.sha256 {
            return Err(changed());
        }
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
        multipart(storage, w, &key, &done.sha256, plan, attributes).await?;
    }
    verify(storage, &location, size, &done.sha256).await?;
    Ok(done)
}

fn changed() -> StorageError {
    StorageError::Mismatch("the file changed while it was read for the upload".into())
}

/// The size and `sha256` metadata of the object at `location`, if any.
async fn exists(
    storage: &Storage,
    location: &ObjectPath,
) -> Result<Option<(u64, Option<String>)>, StorageError> {
    let head = storage
        .client()
        .get_opts(
            location,
            GetOptions {
                head: true,
                ..GetOptions::default()
            },
        )
        .await;
    match head {
        Ok(h) => Ok(Some((
            h.meta.size,
            h.attributes
                .get(&Attribute::Metadata(SHA256_METADATA.into()))
                .map(|v| v.as_ref().to_string()),
        ))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A multipart upload of `w`, resumed from its journal when that continues
/// this very content (up to its completion). Every part is hashed as it is
/// read: the parts sent must make the SHA-256 the object is labelled with.
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
    let mut journal = match blocking_read_journal(&w.path).await {
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
    let mut hasher = Sha256::new();
    for index in 0..plan.count() {
        let (start, len) = plan.part(index);
        let path = w.path.clone();
        let (body, h) = blocking(move || {
            let body = read_part(&path, start, len)?;
            hasher.update(&body);
            Ok((body, hasher))
        })
        .await?;
        hasher = h;
        if (index as usize) < journal.parts.len() {
            continue; // sent before the resume: read only to be hashed
        }
        let part = match client
            .put_part(&location, &id, index as usize, PutPayload::from(body))
            .await
        {
            Ok(p) => p,
            Err(object_store::Error::NotFound { .. }) => {
                // The server no longer knows the upload (aborted, expired):
                // start again from the first part next time.
                blocking_remove_journal(&w.path).await;
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
    if hex::encode(hasher.finalize()) != sha256 {
        abort(storage, &journal).await;
        blocking_remove_journal(&w.path).await;
        return Err(changed());
    }
    let parts = journal
        .parts
        .iter()
        .map(|c| PartId {
            content_id: c.clone(),
        })
        .collect();
    match client.complete_multipart(&location, &id, parts).await {
        Ok(_) => {}
        Err(e) => {
            // A completion whose answer was lost already made the object;
            // otherwise the journal stays, and the next attempt completes
            // the same upload (unless the server forgot it).
            tracing::debug!(error = %e, "completing a multipart upload failed");
            if verify(storage, &location, plan.size, sha256).await.is_err() {
                if matches!(e, object_store::Error::NotFound { .. }) {
                    blocking_remove_journal(&w.path).await;
                }
                return Err(e.into());
            }
        }
    }
    blocking_remove_journal(&w.path).await;
    // A create whose answer was lost during this upload made one more:
    // none stays open.
    storage.sweep_uploads(key).await;
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
        Ok(()) => {
            tracing::info!(key = %journal.key, "aborted an upload that could not be resumed")
        }
        Err(e) => tracing::debug!(key = %journal.key, error = %e, "aborting an upload"),
    }
}

/// What is left of the upload of a file deleted meanwhile: aborted, journal gone.
async fn abandon(storage: &Storage, file: &Path) {
    if let Some(j) = blocking_read_journal(file).await {
        abort(storage, &j).await;
    }
    blocking_remove_journal(file).await;
}

/// Whether the object has the file's size and SHA-256.
async fn verify(
    storage: &Storage,
    location: &ObjectPath,
    size: u64,
    sha256: &str,
) -> Result<(), StorageError> {
    match exists(storage, location).await? {
        None => Err(StorageError::Mismatch("the object is not there".into())),
        Some((s, _)) if s != size => Err(StorageError::Mismatch(format!(
            "{s} bytes stored, {size} in the file"
        ))),
        Some((_, Some(v))) if v == sha256 => Ok(()),
        Some((_, Some(v))) => Err(StorageError::Mismatch(format!(
            "stored SHA-256 {v} is not the file's {sha256}"
        ))),
        Some((_, None)) => Err(StorageError::Mismatch(
            "the stored object has no sha256 metadata".into(),
        )),
    }
}

/// The file is stored: the sidecar goes up, the catalog says so, the local
/// copy goes (unless kept), and `recording_stored` is told. A recording
/// deleted meanwhile has what went up deleted again.
async fn stored(
    recorder: &Recorder,
    storage: &Storage,
    events: &Events,
    w: &Waiting,
    done: Uploaded,
) -> Result<(), StorageError> {
    let Some(entry) = recorder.index.get(&w.meta.id) else {
        storage.delete(&w.meta).await?;
        return Ok(());
    };
    let mut meta = entry.meta;
    meta.storage = StorageState::Stored;
    meta.storage_error = None;
    meta.sha256 = Some(done.sha256.clone());
    meta.size_bytes = Some(done.size);
    let sidecar = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?;
    storage
        .client()
        .put(
            &ObjectPath::from(storage.sidecar_key_of(&meta)),
            PutPayload::from(Bytes::from(sidecar)),
        )
        .await?;
    if recorder.index.get(&meta.id).is_none() {
        // Deleted while the sidecar went up.
        storage.delete(&meta).await?;
        return Ok(());
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
    tracing::info!(recording = %meta.id, key = %storage.key_of(&meta), size_bytes = done.size, "recording stored");
    events.emit(Event::RecordingStored {
        stream: meta.stream.clone(),
        id: meta.id.clone(),
        key: storage.key_of(&meta),
        size_bytes: done.size,
        sha256: done.sha256,
        local_removed: !keep,
    });
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_attempt_is_summed_up_without_the_servers_words() {
        let refused = StorageError::Setup(
            "PUT http://10.0.0.5:9000/rec/cam/a.mkv: 403 Forbidden <AWSAccessKeyId>AKID</AWSAccessKeyId>".into(),
        );
        let s = summary(&refused);
        assert!(s.contains("credentials") && s.contains("403"), "{s}");
        assert!(!s.contains("10.0.0.5") && !s.contains("AKID"), "{s}");
        let down =
            StorageError::Setup("error sending request for url (http://10.0.0.5:9000/)".into());
        assert!(summary(&down).contains("did not answer"));
        let mismatch = StorageError::Mismatch("5 bytes stored, 6 in the file".into());
        assert!(summary(&mismatch).contains("5 bytes stored"));
    }
}
