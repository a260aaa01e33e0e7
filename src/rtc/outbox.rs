//! Gathers what a session transmits into runs the kernel can send at once.
//!
//! str0m hands out one datagram at a time. The packets of one video frame for
//! one viewer come out back to back, all to the same address and all the same
//! size but the last (the packetizer cuts a frame into equal pieces). Such a
//! run is one UDP GSO send ([`MediaSocket::try_send_segments`]): one system
//! call and one trip through the kernel's UDP stack instead of one per packet,
//! which is where most of a forwarding gateway's CPU goes.
//!
//! A run is sent as soon as the next datagram cannot join it (another peer, a
//! bigger size, a run already ended by a shorter datagram, or the kernel's
//! limits), and whatever is left when the session has nothing more to send
//! goes at [`Outbox::flush`], so batching never holds a packet back past the
//! end of the work that produced it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Counters;
use super::net::MediaSocket;

/// The most bytes one GSO send may carry (an IP datagram's payload limit,
/// with room for the headers).
const MAX_RUN_BYTES: usize = 65_000;

/// Collects a session's outgoing datagrams into GSO runs.
pub struct Outbox {
    socket: Arc<MediaSocket>,
    counters: Arc<Counters>,
    run: Run,
}

/// Datagrams waiting to leave together: same peer, same size but the last.
#[derive(Default)]
struct Run {
    bytes: Vec<u8>,
    dest: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run: nothing can follow it.
    closed: bool,
}

impl Outbox {
    /// An outbox sending on `socket`, counting into `counters`.
    pub fn new(socket: Arc<MediaSocket>, counters: Arc<Counters>) -> Outbox {
        Outbox {
            socket,
            counters,
            run: Run::default(),
        }
    }

    /// Queues one datagram for `dest`, sending the current run first when the
    /// datagram cannot join it.
    pub fn push(&mut self, dest: SocketAddr, data: &[u8]) {
        let max = self.socket.max_segments();
        if !self.run.accepts(dest, data.len(), max) {
            self.flush();
        }
        let run = &mut self.run;
        if run.count == 0 {
            run.dest = Some(dest);
            run.segment = data.len();
        }
        run.bytes.extend_from_slice(data);
        run.count += 1;
        run.closed = data.len() < run.segment;
        if max <= 1 {
            self.flush();
        }
    }

    /// Sends the pending run, if any.
    pub fn flush(&mut self) {
        let run = &mut self.run;
        let Some(dest) = run.dest.take() else {
            return;
        };
        let count = run.count as u64;
        match self.socket.try_send_segments(&run.bytes, run.segment, dest) {
            Ok(()) => {
                self.counters
                    .datagrams_out
                    .fetch_add(count, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.send_drops.fetch_add(count, Ordering::Relaxed);
            }
        }
        run.bytes.clear();
        run.count = 0;
        run.closed = false;
    }
}

impl Run {
    /// Whether a datagram of `len` bytes for `dest` may join this run.
    fn accepts(&self, dest: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.count == 0
            || (self.dest == Some(dest)
                && !self.closed
                && len <= self.segment
                && self.count < max_segments
                && self.bytes.len() + len <= MAX_RUN_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn outbox() -> (Outbox, std::net::UdpSocket) {
        let socket = Arc::new(MediaSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap());
        socket.writable().await.unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        (Outbox::new(socket, Arc::new(Counters::default())), peer)
    }

    fn receive(peer: &std::net::UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        (0..n)
            .map(|_| {
                let (len, _) = peer.recv_from(&mut buf).unwrap();
                buf[..len].to_vec()
            })
            .collect()
    }

    #[tokio::test]
    async fn every_datagram_arrives_whole_and_in_order() {
        let (mut out, peer) = outbox().await;
        let dest = peer.local_addr().unwrap();
        // A frame cut into equal pieces and a short last one, then audio.
        let sent: Vec<Vec<u8>> = (0..7u8)
            .map(|i| {
                vec![
                    i;
                    if i < 5 {
                        1100
                    } else if i == 5 {
                        300
                    } else {
                        120
                    }
                ]
            })
            .collect();
        for d in &sent {
            out.push(dest, d);
        }
        out.flush();
        assert_eq!(receive(&peer, sent.len()), sent);
        assert_eq!(out.counters.datagrams_out.load(Ordering::Relaxed), 7);
        assert_eq!(out.counters.send_drops.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn runs_for_different_peers_stay_apart() {
        let (mut out, a) = outbox().await;
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        for i in 0..4u8 {
            let peer = if i % 2 == 0 { &a } else { &b };
            out.push(peer.local_addr().unwrap(), &[i; 500]);
        }
        out.flush();
        assert_eq!(receive(&a, 2), vec![vec![0u8; 500], vec![2u8; 500]]);
        assert_eq!(receive(&b, 2), vec![vec![1u8; 500], vec![3u8; 500]]);
    }

    #[test]
    fn a_run_takes_only_what_the_kernel_can_segment() {
        let dest: SocketAddr = "192.0.2.1:9".parse().unwrap();
        let run = Run {
            bytes: vec![0; 1000],
            dest: Some(dest),
            segment: 1000,
            count: 1,
            closed: false,
        };
        assert!(run.accepts(dest, 1000, 64));
        assert!(run.accepts(dest, 10, 64), "a shorter last piece");
        assert!(!run.accepts(dest, 1001, 64), "bigger than the segment");
        assert!(!run.accepts("192.0.2.2:9".parse().unwrap(), 1000, 64));
        assert!(!run.accepts(dest, 1000, 1), "no GSO");
        let closed = Run {
            closed: true,
            ..run
        };
        assert!(!closed.accepts(dest, 10, 64), "nothing after a short piece");
        let full = Run {
            bytes: vec![0; MAX_RUN_BYTES - 500],
            closed: false,
            ..closed
        };
        assert!(!full.accepts(dest, 1000, 64), "over the size limit");
    }
}
