//! The bucket's recordings in the catalog: every `refresh_secs`, one listing
//! of the prefix; sidecars not seen before are read (once each), and the
//! catalog gains what other nodes stored and loses what was deleted from the
//! bucket. Pages and the API read the catalog in memory, never the bucket.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::Storage;
use crate::record::Recorder;
use crate::record::catalog::{self, Meta, State, StorageState};
use crate::record::index::Location;

/// Largest sidecar read from the bucket (a real one is under 2 KiB).
const MAX_SIDECAR: u64 = 64 * 1024;

/// Keeps the catalog in step with the bucket until the task is dropped.
pub async fn run(recorder: Arc<Recorder>, storage: Arc<Storage>) {
    let every = Duration::from_secs_f64(storage.config().refresh_secs);
    // Sidecars read, by key, with the e-tag they had.
    let mut known: HashMap<String, (Option<String>, Meta)> = HashMap::new();
    // Told once when the bucket stops answering, and once when it is back.
    let mut failing = false;
    loop {
        match refresh(&recorder, &storage, &mut known).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the bucket answers again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot list the bucket; the list shows what was known");
            }
            Err(e) => tracing::debug!(error = %e, "cannot list the bucket"),
        }
        tokio::time::sleep(every).await;
    }
}

/// One pass: list, read new sidecars, merge into the catalog.
async fn refresh(
    recorder: &Recorder,
    storage: &Storage,
    known: &mut HashMap<String, (Option<String>, Meta)>,
) -> Result<(), object_store::Error> {
    // Only what was already listed as stored-elsewhere before this listing
    // began may leave: an upload finishing meanwhile is not in the listing yet.
    let stored_before: HashSet<String> = recorder
        .index
        .entries()
        .into_iter()
        .filter(|e| e.meta.storage == StorageState::Stored && e.location == Location::Stored)
        .map(|e| e.meta.id)
        .collect();
    let prefix = storage.prefix().trim_end_matches('/');
    let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
    let mut files: HashSet<String> = HashSet::new();
    let mut sidecars: Vec<(String, Option<String>, u64)> = Vec::new();
    let mut listing = storage.client().list(prefix.as_ref());
    while let Some(object) = listing.next().await {
        let object = object?;
        let key = object.location.to_string();
        if key.ends_with(".json") {
            sidecars.push((key, object.e_tag, object.size));
        } else {
            files.insert(key);
        }
    }
    let mut seen: HashSet<String> = HashSet::new();
    for (key, e_tag, size) in sidecars {
        // A sidecar without its file is an upload not finished, or a delete
        // half done: not listed.
        let Some(file_key) = key.strip_suffix(".json") else {
            continue;
        };
        if !files.contains(file_key) || size > MAX_SIDECAR {
            continue;
        }
        let fresh = known
            .get(&key)
            .is_some_and(|(t, _)| t.is_some() && *t == e_tag);
        if !fresh {
            match read_sidecar(storage, &key).await {
                Ok(meta) if belongs(storage, &meta, file_key) => {
                    known.insert(key.clone(), (e_tag, meta));
                }
                // Unreadable this time: what was known of it stays.
                Err(SidecarError::Unreadable) if known.contains_key(&key) => {}
                _ => {
                    tracing::debug!(key = %key, "not a castgate sidecar; ignored");
                    continue;
                }
            }
        }
        let Some((_, meta)) = known.get(&key) else {
            continue;
        };
        seen.insert(meta.id.clone());
        merge(recorder, meta);
    }
    known.retain(|_, (_, m)| seen.contains(&m.id));
    // What the bucket no longer holds leaves the catalog (deleted by another
    // node, or by hand); files still on this disk stay.
    for id in stored_before.difference(&seen) {
        if recorder
            .index
            .get(id)
            .is_some_and(|e| e.location == Location::Stored)
        {
            recorder.index.remove(id);
        }
    }
    Ok(())
}

/// Puts a stored recording in the catalog unless this disk has it.
fn merge(recorder: &Recorder, meta: &Meta) {
    match recorder.index.get(&meta.id) {
        Some(e) if matches!(e.location, Location::Local(_)) => {}
        Some(e) if e.meta.storage == StorageState::Stored && e.meta.sha256 == meta.sha256 => {}
        _ => recorder.index.put(meta.clone(), Location::Stored),
    }
}

/// Why a sidecar in the bucket was not read.
enum SidecarError {
    /// The request failed (try again next time).
    Unreadable,
    /// It is not a castgate sidecar (too large, not its JSON).
    Foreign,
}

async fn read_sidecar(storage: &Storage, key: &str) -> Result<Meta, SidecarError> {
    let got = storage
        .client()
        .get(&ObjectPath::from(key.to_string()))
        .await
        .map_err(|_| SidecarError::Unreadable)?;
    if got.meta.size > MAX_SIDECAR {
        return Err(SidecarError::Foreign);
    }
    let bytes = got.bytes().await.map_err(|_| SidecarError::Unreadable)?;
    let mut meta: Meta = serde_json::from_slice(&bytes).map_err(|_| SidecarError::Foreign)?;
    meta.storage = StorageState::Stored;
    meta.storage_error = None;
    Ok(meta)
}

/// Whether a sidecar read from the bucket describes the object beside it:
/// a valid id whose stream and file name give exactly that key, finished.
fn belongs(storage: &Storage, meta: &Meta, file_key: &str) -> bool {
    let Some((stream, stem)) = catalog::parse_id(&meta.id) else {
        return false;
    };
    stream.as_str() == meta.stream
        && catalog::recording_stem(&meta.file) == Some(stem.as_str())
        && storage.key_of(meta) == file_key
        && meta.state != State::Recording
}
