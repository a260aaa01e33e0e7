//! The one UDP socket: reads every datagram and hands it to the worker shard
//! that owns its session.
//!
//! A STUN binding request names its session by the ICE username fragment we
//! gave out in the answer; once a remote address has been seen with a known
//! fragment, its DTLS, RTP and RTCP packets are routed by that address. A
//! datagram that belongs to nobody is counted and dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::RwLock;
use str0m::ice::StunMessage;
use tokio::sync::{mpsc, watch};

use super::Counters;
use super::memory::shrink_if_sparse;
use super::shard::Command;

/// Where a session lives: its shard and its key within the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// Index of the worker shard.
    pub shard: usize,
    /// Session key within the shard.
    pub key: u64,
}

/// Remote addresses learned per session are capped, so a flood of spoofed
/// STUN cannot grow the table without bound.
const MAX_ADDRS_PER_SESSION: usize = 16;

#[derive(Default)]
struct Table {
    by_ufrag: HashMap<String, Target>,
    by_addr: HashMap<SocketAddr, Target>,
    addr_count: HashMap<Target, usize>,
}

/// The routing table shared by the socket reader and the shards.
#[derive(Default)]
pub struct Routes {
    table: RwLock<Table>,
}

impl Routes {
    /// Routes STUN carrying `ufrag` to `target`.
    pub fn add_ufrag(&self, ufrag: &str, target: Target) {
        self.table
            .write()
            .by_ufrag
            .insert(ufrag.to_string(), target);
    }

    /// Stops routing `ufrag` (after an ICE restart replaced it).
    pub fn remove_ufrag(&self, ufrag: &str) {
        self.table.write().by_ufrag.remove(ufrag);
    }

    /// Forgets everything routed to `target` (the session closed).
    pub fn remove_target(&self, target: Target) {
        let mut t = self.table.write();
        t.by_ufrag.retain(|_, v| *v != target);
        t.by_addr.retain(|_, v| *v != target);
        t.addr_count.remove(&target);
        // After a crowd left, give the tables' room back too (as the shards do).
        shrink_if_sparse(&mut t.by_ufrag);
        shrink_if_sparse(&mut t.by_addr);
        shrink_if_sparse(&mut t.addr_count);
    }

    /// Number of (ufrag, address) routes, for leak checks.
    pub fn len(&self) -> (usize, usize) {
        let t = self.table.read();
        (t.by_ufrag.len(), t.by_addr.len())
    }

    /// The session a STUN binding request names by our ICE username
    /// fragment; `None` for anything else (ICE-TCP's first-packet check).
    pub fn stun_target(&self, data: &[u8]) -> Option<Target> {
        if !is_stun(data) {
            return None;
        }
        let message = StunMessage::parse(data).ok()?;
        if !message.is_binding_request() {
            return None;
        }
        let (ufrag, _) = message.split_username()?;
        self.table.read().by_ufrag.get(ufrag).copied()
    }

    fn lookup(&self, data: &[u8], source: SocketAddr) -> Option<Target> {
        if is_stun(data) {
            let target = StunMessage::parse(data)
                .ok()
                .and_then(|m| m.split_username().map(|(local, _)| local.to_string()))
                .and_then(|ufrag| self.table.read().by_ufrag.get(&ufrag).copied());
            if let Some(target) = target {
                self.learn(source, target);
                return Some(target);
            }
        }
        self.table.read().by_addr.get(&source).copied()
    }

    fn learn(&self, source: SocketAddr, target: Target) {
        if self.table.read().by_addr.get(&source) == Some(&target) {
            return;
        }
        let mut t = self.table.write();
        let count = t.addr_count.get(&target).copied().unwrap_or(0);
        if count >= MAX_ADDRS_PER_SESSION {
            return;
        }
        if let Some(old) = t.by_addr.insert(source, target)
            && let Some(c) = t.addr_count.get_mut(&old)
        {
            *c = c.saturating_sub(1);
        }
        *t.addr_count.entry(target).or_default() += 1;
    }
}

/// RFC 7983: the first byte 0–3 is STUN.
fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 4
}

/// Chooses which of our announced addresses a datagram was sent to, for str0m
/// (which only accepts STUN addressed to one of its candidates). With a socket
/// bound to a wildcard address the kernel does not say, so match the source's
/// family and loopback-ness.
#[derive(Debug, Clone)]
pub struct Destinations {
    bound: SocketAddr,
    announced: Vec<SocketAddr>,
}

impl Destinations {
    /// From the socket's bound address and the announced candidates.
    pub fn new(bound: SocketAddr, announced: Vec<SocketAddr>) -> Destinations {
        Destinations { bound, announced }
    }

    /// The local address to report for a datagram from `source`.
    pub fn for_source(&self, source: SocketAddr) -> SocketAddr {
        if !self.bound.ip().is_unspecified() {
            return self.bound;
        }
        let same_family = |a: &&SocketAddr| a.is_ipv4() == source.is_ipv4();
        self.announced
            .iter()
            .filter(same_family)
            .find(|a| a.ip().is_loopback() == source.ip().is_loopback())
            .or_else(|| self.announced.iter().find(same_family))
            .or_else(|| self.announced.first())
            .copied()
            .unwrap_or(self.bound)
    }
}

/// Reads the socket until shutdown, routing each datagram to its shard.
pub async fn run(
    socket: Arc<super::net::MediaSocket>,
    routes: Arc<Routes>,
    shards: Vec<mpsc::Sender<Command>>,
    destinations: Destinations,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, source) = tokio::select! {
            _ = shutdown.changed() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // ICMP port-unreachable from a departed peer shows up here on Linux.
                    tracing::debug!(error = %e, "udp receive error");
                    counters.recv_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
        let data = &buf[..n];
        let Some(target) = routes.lookup(data, source) else {
            counters.unrouted.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(shard) = shards.get(target.shard) else {
            counters.unrouted.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let cmd = Command::Datagram {
            key: target.key,
            proto: str0m::net::Protocol::Udp,
            source,
            destination: destinations.for_source(source),
            data: data.to_vec(),
            at: Instant::now(),
        };
        if shard.try_send(cmd).is_err() {
            counters.shard_full_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_matches_family_and_loopback() {
        let d = Destinations::new(
            "0.0.0.0:8189".parse().unwrap(),
            vec![
                "192.168.1.5:8189".parse().unwrap(),
                "127.0.0.1:8189".parse().unwrap(),
            ],
        );
        assert_eq!(
            d.for_source("127.0.0.1:5000".parse().unwrap()),
            "127.0.0.1:8189".parse().unwrap()
        );
        assert_eq!(
            d.for_source("10.0.0.9:5000".parse().unwrap()),
            "192.168.1.5:8189".parse().unwrap()
        );
    }

    #[test]
    fn routes_learn_addresses_and_forget_them() {
        let r = Routes::default();
        let t = Target { shard: 1, key: 7 };
        r.add_ufrag("abcd", t);
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        r.learn(a, t);
        assert_eq!(r.lookup(&[0x80, 0, 0, 0], a), Some(t));
        assert_eq!(r.len(), (1, 1));
        r.remove_target(t);
        assert_eq!(r.len(), (0, 0));
        assert_eq!(r.lookup(&[0x80, 0, 0, 0], a), None);
    }

    #[test]
    fn address_learning_is_capped() {
        let r = Routes::default();
        let t = Target { shard: 0, key: 1 };
        for port in 0..100u16 {
            r.learn(SocketAddr::from(([127, 0, 0, 1], 1000 + port)), t);
        }
        assert_eq!(r.len().1, MAX_ADDRS_PER_SESSION);
    }

    #[test]
    fn tables_give_room_back_after_a_crowd_left() {
        let r = Routes::default();
        let crowd: Vec<Target> = (0..500).map(|key| Target { shard: 0, key }).collect();
        for (i, t) in crowd.iter().enumerate() {
            r.add_ufrag(&format!("u{i}"), *t);
            r.learn(SocketAddr::from(([127, 0, 0, 1], 2000 + i as u16)), *t);
        }
        let peak = r.table.read().by_addr.capacity();
        for t in &crowd[..495] {
            r.remove_target(*t);
        }
        let t = r.table.read();
        assert_eq!(
            (t.by_ufrag.len(), t.by_addr.len(), t.addr_count.len()),
            (5, 5, 5)
        );
        assert!(
            t.by_addr.capacity() <= 64 && t.by_ufrag.capacity() <= 64,
            "peak {peak}"
        );
        assert!(peak >= 500);
    }
}
