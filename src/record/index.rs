//! The catalog in memory: every recording the recorder knows, with where its
//! file is, so a listing page, a lookup, a Range request or a retention pass
//! costs no directory scan.
//!
//! Built once at start-up (after crash repair) from the recordings folder,
//! then kept by the recorder itself: a recording thread puts its entry in
//! when it opens a file and updates it as the file grows and when it is
//! finalized or fails; deleting (by API or retention) takes it out. Files
//! changed behind castgate's back show up at the next start (a lookup still
//! checks that the file is there).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use parking_lot::RwLock;

use super::catalog::{Meta, State};

/// Where a recording's file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// On this machine's disk: the final file, or its `.part` while it is
    /// being written.
    Local(PathBuf),
    /// Only in object storage (`Storage::key_of` names the object).
    Stored,
}

/// One recording: what the catalog shows, and where the file is.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The sidecar's content (kept current while recording).
    pub meta: Meta,
    /// The file.
    pub location: Location,
}

/// Newest first: start time, then id, both descending.
type Order = (Reverse<String>, Reverse<String>);

fn order_of(meta: &Meta) -> Order {
    (Reverse(meta.started_at.clone()), Reverse(meta.id.clone()))
}

/// The entries in listing order (walked without hashing), and where each
/// id is in that order.
#[derive(Default)]
struct Inner {
    by_order: BTreeMap<Order, Entry>,
    order_of: HashMap<String, Order>,
}

/// The recordings by id, newest first.
#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("len", &self.len()).finish()
    }
}

impl Index {
    /// Fills the index with `found` (each sidecar and its file), replacing
    /// what it held. A sidecar that still says `recording` belongs to no one
    /// (nothing is being written at start-up): it is listed as failed.
    pub fn load(&self, found: Vec<(Meta, PathBuf)>) {
        *self.inner.write() = Inner::default();
        for (mut m, path) in found {
            if m.state == State::Recording {
                m.state = State::Failed;
                m.error
                    .get_or_insert_with(|| "stopped before it was finalized".into());
            }
            if m.size_bytes.is_none() {
                m.size_bytes = std::fs::metadata(&path).map(|md| md.len()).ok();
            }
            self.put(m, Location::Local(path));
        }
    }

    /// Adds or replaces the entry of `meta.id` (ignored without an id).
    pub fn put(&self, meta: Meta, location: Location) {
        if meta.id.is_empty() {
            return;
        }
        let mut inner = self.inner.write();
        let order = order_of(&meta);
        if let Some(old) = inner.order_of.insert(meta.id.clone(), order.clone()) {
            inner.by_order.remove(&old);
        }
        inner.by_order.insert(order, Entry { meta, location });
    }

    /// Takes out the entry of `id`.
    pub fn remove(&self, id: &str) -> Option<Entry> {
        let mut inner = self.inner.write();
        let order = inner.order_of.remove(id)?;
        inner.by_order.remove(&order)
    }

    /// The entry of `id`.
    pub fn get(&self, id: &str) -> Option<Entry> {
        let inner = self.inner.read();
        inner
            .order_of
            .get(id)
            .and_then(|o| inner.by_order.get(o))
            .cloned()
    }

    /// How many recordings there are.
    pub fn len(&self) -> usize {
        self.inner.read().order_of.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Of the recordings `keep` accepts, newest first: how many there are,
    /// and `take` of them after skipping `skip`. Walks the index in order;
    /// copies only the page.
    pub fn page(
        &self,
        keep: impl FnMut(&Meta) -> bool,
        skip: usize,
        take: usize,
    ) -> (usize, Vec<Meta>) {
        let mut keep = keep;
        let inner = self.inner.read();
        let mut total = 0;
        let mut page = Vec::new();
        for e in inner.by_order.values() {
            if !keep(&e.meta) {
                continue;
            }
            if total >= skip && page.len() < take {
                page.push(e.meta.clone());
            }
            total += 1;
        }
        (total, page)
    }

    /// Every recording, newest first.
    pub fn all(&self) -> Vec<Meta> {
        self.page(|_| true, 0, usize::MAX).1
    }

    /// Every recording with where its file is, newest first (one walk, no
    /// lookup per entry).
    pub fn entries(&self) -> Vec<Entry> {
        self.inner.read().by_order.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, started: &str) -> Meta {
        let mut m = Meta::pending(id.split('~').next().unwrap());
        m.id = id.into();
        m.started_at = started.into();
        m.state = State::Finalized;
        m
    }

    #[test]
    fn pages_newest_first_and_updates_in_place() {
        let ix = Index::default();
        let here = || Location::Local(PathBuf::from("/x"));
        ix.put(meta("a~1", "2026-01-01T00:00:01Z"), here());
        ix.put(meta("b~2", "2026-01-01T00:00:03Z"), here());
        ix.put(meta("a~3", "2026-01-01T00:00:02Z"), here());
        let ids = |v: Vec<Meta>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(ix.all()), ["b~2", "a~3", "a~1"]);
        let (total, page) = ix.page(|m| m.stream == "a", 1, 5);
        assert_eq!((total, ids(page)), (2, vec!["a~1".to_string()]));
        let mut grown = meta("a~1", "2026-01-01T00:00:01Z");
        grown.size_bytes = Some(42);
        ix.put(grown, here());
        assert_eq!(ix.len(), 3, "replaced, not added");
        assert_eq!(ix.get("a~1").unwrap().meta.size_bytes, Some(42));
        assert!(ix.remove("b~2").is_some());
        assert_eq!(ids(ix.all()), ["a~3", "a~1"]);
        ix.put(Meta::pending("c"), here());
        assert_eq!(ix.len(), 2, "an entry without an id is not listed");
    }
}
