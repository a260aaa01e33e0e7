//! One ICE-TCP connection: a single task that reads RFC 4571 frames and hands
//! them to the session's shard, and writes what the session transmits.
//!
//! The first packet must be a STUN binding request carrying the ICE username
//! fragment of a live session (within [`HANDSHAKE_TIMEOUT`]); from then on
//! every packet of the connection goes to that session. Anything else closes
//! the connection and harms nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use str0m::net::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::Context;
use super::framing::{Decoder, FrameError};
use crate::rtc::router::Target;
use crate::rtc::shard::Command;

/// A connection that has not sent a STUN binding request for a live session
/// within this time is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection that sends nothing for this long is closed (ICE consent
/// checks arrive every few seconds on a pair in use).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Packets queued to one connection's writer; more are dropped (counted).
pub const SEND_QUEUE: usize = 256;

/// Bytes gathered into one write from the queue.
const WRITE_BATCH: usize = 64 * 1024;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("the peer closed it")]
    Eof,
    #[error("read or write failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no STUN binding request for a live session within {HANDSHAKE_TIMEOUT:?}")]
    NoHandshake,
    #[error("nothing received for {IDLE_TIMEOUT:?}")]
    Idle,
    #[error("bad framing: {0}")]
    Framing(#[from] FrameError),
    #[error("the first packet is not a STUN binding request for a live session")]
    NotOurs,
    #[error("its session ended")]
    SessionEnded,
}

impl Closed {
    fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Closed::NoHandshake | Closed::Framing(_) | Closed::NotOurs
        )
    }
}

/// Serves one accepted connection until it closes; removes its entry on the
/// way out (also when the task is aborted at shutdown).
pub(super) async fn serve(ctx: Arc<Context>, stream: TcpStream, remote: SocketAddr) {
    let local = stream
        .local_addr()
        .map(crate::rtc::net::plain)
        .unwrap_or(ctx.bound);
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let Some(id) = ctx.conns.insert(remote, tx) else {
        tracing::debug!(%remote, "ice-tcp: a connection from this address is already open");
        return;
    };
    let _entry = Registered {
        ctx: ctx.clone(),
        remote,
        id,
    };
    let (reader, writer) = stream.into_split();
    let conn = Conn {
        ctx: &ctx,
        remote,
        destination: ctx.destination(local, remote),
        id,
    };
    let closed = tokio::select! {
        r = conn.read(reader) => r,
        r = write(writer, rx) => r.map_or_else(Closed::Io, |()| Closed::SessionEnded),
    };
    if closed.is_bad_input() {
        ctx.conns
            .counters
            .closed_bad
            .fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!(%remote, reason = %closed, "ice-tcp connection closed");
}

/// Removes the connection's entry when its task ends, however it ends.
struct Registered {
    ctx: Arc<Context>,
    remote: SocketAddr,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.ctx.conns.remove(self.remote, self.id);
    }
}

struct Conn<'a> {
    ctx: &'a Context,
    remote: SocketAddr,
    destination: SocketAddr,
    id: u64,
}

impl Conn<'_> {
    /// Reads frames until the stream ends or misbehaves.
    async fn read(&self, mut reader: OwnedReadHalf) -> Closed {
        let handshake_until = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 8192];
        let mut target: Option<Target> = None;
        loop {
            let until = match target {
                None => handshake_until,
                Some(_) => tokio::time::Instant::now() + IDLE_TIMEOUT,
            };
            let n = match tokio::time::timeout_at(until, reader.read(&mut buf)).await {
                Err(_) if target.is_none() => return Closed::NoHandshake,
                Err(_) => return Closed::Idle,
                Ok(Ok(0)) => return Closed::Eof,
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Closed::Io(e),
            };
            decoder.push(buf.get(..n).unwrap_or_default());
            loop {
                let packet = match decoder.next_packet() {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => return Closed::Framing(e),
                };
                let t = match target {
                    Some(t) => t,
                    None => {
                        let Some(t) = self.ctx.routes.stun_target(&packet) else {
                            return Closed::NotOurs;
                        };
                        self.ctx.conns.attach(self.remote, self.id, t.key);
                        // The session may have ended between the lookup and
                        // the attach; its end closes attached connections only.
                        if self.ctx.routes.stun_target(&packet) != Some(t) {
                            return Closed::SessionEnded;
                        }
                        target = Some(t);
                        t
                    }
                };
                if !self.ctx.conns.is_open(self.remote, self.id) {
                    return Closed::SessionEnded;
                }
                self.deliver(t, packet);
            }
        }
    }

    fn deliver(&self, target: Target, data: Vec<u8>) {
        let Some(shard) = self.ctx.shards.get(target.shard) else {
            return;
        };
        let cmd = Command::Datagram {
            key: target.key,
            proto: Protocol::Tcp,
            source: self.remote,
            destination: self.destination,
            data,
            at: Instant::now(),
        };
        if shard.try_send(cmd).is_err() {
            self.ctx
                .counters
                .shard_full_drops
                .fetch_add(1, Ordering::Relaxed);
        } else {
            self.ctx
                .conns
                .counters
                .packets_in
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes queued frames, several per write when they pile up, until the
/// session lets go of the connection (the queue closes).
async fn write(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) -> std::io::Result<()> {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(frame) = rx.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        writer.write_all(&batch).await?;
    }
    writer.shutdown().await
}
