//! The open ICE-TCP connections by remote address: how a session's TCP
//! transmits find their connection's writer, and how a session's end closes
//! its connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use tokio::sync::mpsc;

use super::framing;

/// Monotonic counters of ICE-TCP (for metrics and tests).
#[derive(Debug, Default)]
pub struct TcpCounters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused because `rtc.ice_tcp_max_connections` were open.
    pub refused_full: AtomicU64,
    /// Connections closed for bad input: bad framing, a first packet that is
    /// not a STUN binding request for a live session, or no STUN in time.
    pub closed_bad: AtomicU64,
    /// Packets read from connections and handed to sessions.
    pub packets_in: AtomicU64,
    /// Packets queued to connections.
    pub packets_out: AtomicU64,
    /// Packets dropped on the way out: the connection's queue was full, or
    /// the connection is gone.
    pub send_drops: AtomicU64,
}

struct Entry {
    id: u64,
    /// The session (its engine-wide key) once the first STUN named it.
    session: Option<u64>,
    tx: mpsc::Sender<Vec<u8>>,
}

/// Every open connection, keyed by the remote address (in its plain form).
#[derive(Default)]
pub struct Connections {
    map: RwLock<HashMap<SocketAddr, Entry>>,
    next_id: AtomicU64,
    /// What moved.
    pub counters: TcpCounters,
}

impl Connections {
    /// Registers a new connection from `remote`; `None` if another one from
    /// the same address is open. The id removes exactly this entry later.
    pub(super) fn insert(&self, remote: SocketAddr, tx: mpsc::Sender<Vec<u8>>) -> Option<u64> {
        let mut map = self.map.write();
        if map.contains_key(&remote) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        map.insert(
            remote,
            Entry {
                id,
                session: None,
                tx,
            },
        );
        Some(id)
    }

    /// The connection now belongs to session `key`.
    pub(super) fn attach(&self, remote: SocketAddr, id: u64, key: u64) {
        if let Some(e) = self.map.write().get_mut(&remote)
            && e.id == id
        {
            e.session = Some(key);
        }
    }

    /// Whether connection `id` is still registered (not closed by its session).
    pub(super) fn is_open(&self, remote: SocketAddr, id: u64) -> bool {
        self.map.read().get(&remote).is_some_and(|e| e.id == id)
    }

    /// Forgets connection `id` (it closed).
    pub(super) fn remove(&self, remote: SocketAddr, id: u64) {
        let mut map = self.map.write();
        if map.get(&remote).is_some_and(|e| e.id == id) {
            map.remove(&remote);
        }
    }

    /// Queues `packet` (framed) to session `key`'s connection with `remote`,
    /// without waiting: a full queue drops it (counted), as a full UDP socket
    /// buffer would. False if it was dropped.
    pub fn send(&self, key: u64, remote: SocketAddr, packet: &[u8]) -> bool {
        let sent = framing::encode(packet).is_some_and(|frame| {
            self.map
                .read()
                .get(&remote)
                .filter(|e| e.session == Some(key))
                .is_some_and(|e| e.tx.try_send(frame).is_ok())
        });
        let counter = if sent {
            &self.counters.packets_out
        } else {
            &self.counters.send_drops
        };
        counter.fetch_add(1, Ordering::Relaxed);
        sent
    }

    /// Closes every connection of session `key` (it ended): their writers
    /// send what is queued (the session's goodbyes), then the sockets close.
    pub fn close_session(&self, key: u64) {
        self.map.write().retain(|_, e| e.session != Some(key));
    }

    /// Open connections, for leak checks and metrics.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_owning_session_sends_and_its_end_closes_the_connection() {
        let conns = Connections::default();
        let remote: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let (tx, mut rx) = mpsc::channel(2);
        let id = conns.insert(remote, tx.clone()).unwrap();
        assert_eq!(conns.insert(remote, tx), None, "one connection per address");
        assert!(!conns.send(7, remote, b"x"), "not attached yet");
        conns.attach(remote, id, 7);
        assert!(!conns.send(8, remote, b"x"), "another session");
        assert!(conns.send(7, remote, b"ab"));
        assert_eq!(rx.recv().await.unwrap(), vec![0, 2, b'a', b'b']);
        assert!(conns.send(7, remote, b"1"));
        assert!(conns.send(7, remote, b"2"));
        assert!(!conns.send(7, remote, b"3"), "full queue drops");
        assert_eq!(conns.counters.send_drops.load(Ordering::Relaxed), 3);
        conns.close_session(7);
        assert!(conns.is_empty());
        assert!(!conns.is_open(remote, id));
        // Queued packets still reach the writer, then the channel ends.
        assert_eq!(rx.recv().await.unwrap(), vec![0, 1, b'1']);
        assert_eq!(rx.recv().await.unwrap(), vec![0, 1, b'2']);
        assert!(rx.recv().await.is_none());
    }
}
