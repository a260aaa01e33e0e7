//! ICE-TCP (RFC 6544): media over TCP for clients whose networks block UDP.
//!
//! castgate listens on TCP on the same address and port number as its media
//! UDP socket and offers a passive TCP host candidate next to every UDP one
//! (ICE ranks host TCP below host UDP, so UDP wins wherever it works). Each
//! accepted connection is served by one task ([`connection`]): RFC 4571
//! frames in, routed to the session its first STUN request names; the
//! session's TCP transmits out through the connection's bounded queue
//! ([`Connections::send`]). Sessions and shards stay as they are: a shard
//! sees a TCP packet as a datagram with `Protocol::Tcp`.

mod connection;
mod conns;
pub mod framing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use str0m::Candidate;
use str0m::net::TcpType;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::Counters;
use super::router::{Destinations, Routes};
use super::shard::Command;
pub use conns::{Connections, TcpCounters};

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At shutdown, how long connections get to write their sessions' goodbyes
/// before they are closed anyway (one that never named a session waits for
/// nothing and is cut then).
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);

/// Binds the ICE-TCP listener; `[::]:PORT` takes IPv4 and IPv6 alike (as the
/// UDP socket does).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // A restart must not wait for the last run's connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// The local ICE candidates of every session: a UDP host candidate per
/// announced address, and with ICE-TCP a passive TCP one on the same address.
pub fn local_candidates(addrs: &[SocketAddr], tcp: bool) -> Vec<Candidate> {
    let udp = addrs.iter().filter_map(|a| Candidate::host(*a, "udp").ok());
    let passive = addrs.iter().filter(|_| tcp).filter_map(|a| {
        Candidate::builder()
            .tcp()
            .host(*a)
            .tcptype(TcpType::Passive)
            .build()
            .ok()
    });
    udp.chain(passive).collect()
}

/// What every connection task needs.
pub(super) struct Context {
    pub(super) routes: Arc<Routes>,
    pub(super) shards: Vec<mpsc::Sender<Command>>,
    pub(super) conns: Arc<Connections>,
    pub(super) counters: Arc<Counters>,
    /// The listener's address.
    pub(super) bound: SocketAddr,
    /// The announced addresses (with the port), which str0m knows as ours.
    pub(super) announced: Vec<SocketAddr>,
}

impl Context {
    /// Which announced candidate a connection arrived at: the connection's
    /// own local address when it is one, else the best guess by family.
    fn destination(&self, local: SocketAddr, remote: SocketAddr) -> SocketAddr {
        if self.announced.contains(&local) {
            return local;
        }
        Destinations::new(self.bound, self.announced.clone()).for_source(remote)
    }
}

/// Accepts connections until shutdown, each served by its own task (owned
/// here; at shutdown given [`SHUTDOWN_DRAIN`] to send goodbyes, then
/// aborted), at most `max` at once.
pub(super) async fn run(
    listener: TcpListener,
    ctx: Context,
    max: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let ctx = Arc::new(ctx);
    let permits = Arc::new(Semaphore::new(max));
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "ice-tcp accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let remote = super::net::plain(remote);
                let counters = &ctx.conns.counters;
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    counters.refused_full.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, max, "ice-tcp connection refused: rtc.ice_tcp_max_connections are open");
                    continue;
                };
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                tasks.spawn(async move {
                    connection::serve(ctx, stream, remote).await;
                    drop(permit);
                });
            }
        }
    }
    // The sessions are ending too: each connection's writer sends its
    // session's goodbyes (RTCP BYE, DTLS close_notify) and closes when the
    // session lets go. Give them that moment; cut what is left after it.
    let drained = tokio::time::timeout(SHUTDOWN_DRAIN, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = tasks.len(),
            "ice-tcp connections still open at shutdown: closed"
        );
    }
    tasks.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_udp_candidate_gets_a_passive_tcp_twin_ranked_below_it() {
        let addrs: Vec<SocketAddr> = vec![
            "192.0.2.7:8189".parse().unwrap(),
            "127.0.0.1:8189".parse().unwrap(),
        ];
        let all = local_candidates(&addrs, true);
        assert_eq!(all.len(), 4);
        let lines: Vec<String> = all.iter().map(|c| c.to_sdp_string()).collect();
        for (udp, tcp) in lines[..2].iter().zip(&lines[2..]) {
            assert!(udp.contains(" udp ") && !udp.contains("tcptype"), "{udp}");
            assert!(
                tcp.contains(" tcp ") && tcp.ends_with("tcptype passive"),
                "{tcp}"
            );
        }
        assert!(
            all[..2]
                .iter()
                .all(|u| all[2..].iter().all(|t| u.prio() > t.prio()))
        );
        assert_eq!(local_candidates(&addrs, false).len(), 2);
    }
}
