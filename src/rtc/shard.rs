//! A worker shard: owns a set of sessions and drives them from one task.
//!
//! Sessions are spread over shards round-robin, one shard per core by default,
//! so the viewers of one stream are served by every core. A shard never
//! awaits anything but its inbox and its next timer: sending is non-blocking,
//! in GSO runs on the shared UDP socket ([`Outbox`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::Protocol;
use str0m::{Candidate, IceCreds};
use tokio::sync::{mpsc, oneshot, watch};

use super::Shared;
use super::outbox::Outbox;
use super::router::Target;
use super::session::{EndReason, Session, short};
use crate::stream::{LayerId, PublisherControl, Wake};

/// Messages a shard acts on.
pub enum Command {
    /// Take ownership of a new session.
    Add(Box<Session>),
    /// A datagram for a session.
    Datagram {
        /// Session key.
        key: u64,
        /// UDP, or TCP for ICE-TCP (RFC 4571 framing already removed).
        proto: Protocol,
        /// Remote address.
        source: SocketAddr,
        /// Which of our addresses it was sent to.
        destination: SocketAddr,
        /// The bytes.
        data: Vec<u8>,
        /// When it was read.
        at: Instant,
    },
    /// Trickle ICE or ICE restart from an HTTP PATCH.
    Patch {
        /// Session key.
        key: u64,
        /// What to do.
        op: PatchOp,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<PatchReply, PatchError>>,
    },
    /// End a session.
    Close {
        /// Session key.
        key: u64,
        /// Why.
        reason: EndReason,
        /// Told once the session is gone.
        done: Option<oneshot::Sender<()>>,
    },
    /// The hub asks this publisher for a keyframe.
    Keyframe {
        /// Session key.
        key: u64,
        /// Of which simulcast layer (0 without simulcast).
        layer: LayerId,
    },
    /// Periodic keyframe requests on or off for this publisher.
    Periodic {
        /// Session key.
        key: u64,
        /// On or off.
        on: bool,
    },
}

/// A PATCH on a session resource, already parsed.
#[derive(Debug)]
pub enum PatchOp {
    /// New remote candidates (`If-Match` with the current ETag).
    Trickle {
        /// `If-Match` value.
        etag: String,
        /// Candidate lines without `a=`.
        candidates: Vec<String>,
    },
    /// ICE restart (`If-Match: "*"`): the client's new credentials.
    Restart {
        /// New remote ufrag.
        ufrag: String,
        /// New remote password.
        pwd: String,
        /// Candidate lines without `a=`.
        candidates: Vec<String>,
    },
}

/// The outcome of a PATCH.
#[derive(Debug)]
pub enum PatchReply {
    /// Candidates added (204).
    Trickled,
    /// ICE restarted (200 with our new credentials).
    Restarted {
        /// Our new ufrag.
        ufrag: String,
        /// Our new password.
        pwd: String,
        /// New ETag.
        etag: String,
        /// Our candidates, as `candidate:` lines.
        candidates: Vec<String>,
    },
}

/// Why a PATCH failed.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The session is gone.
    #[error("no such session")]
    NotFound,
    /// `If-Match` does not match the current ETag.
    #[error("the ETag in If-Match is not the session's current one")]
    Stale,
    /// A candidate line did not parse.
    #[error("bad candidate: {0}")]
    BadCandidate(String),
    /// The session's shard did not take the request in time (503).
    #[error("the media engine is overloaded; retry shortly")]
    Overloaded,
}

/// Wakes a shard when a viewer's queue fills. At most one wake per viewer is
/// outstanding (the queue wakes only on empty → non-empty, and on close), so
/// the unbounded wake channel is bounded by the number of viewers.
pub struct ShardWaker {
    /// The shard's wake channel.
    pub tx: mpsc::UnboundedSender<u64>,
    /// The viewer's key.
    pub key: u64,
}

impl Wake for ShardWaker {
    fn wake(&self) {
        let _ = self.tx.send(self.key);
    }
}

/// Lets the hub reach a publisher session in its shard.
pub struct ShardPublisher {
    /// The shard's inbox.
    pub tx: mpsc::Sender<Command>,
    /// The publisher's key.
    pub key: u64,
}

impl PublisherControl for ShardPublisher {
    fn request_keyframe(&self, layer: LayerId) {
        // If the inbox is full the shard is busy with media; the next ask
        // (viewers re-ask on loss, periodic requests repeat) will get through.
        let _ = self.tx.try_send(Command::Keyframe {
            key: self.key,
            layer,
        });
    }

    fn set_periodic_keyframes(&self, on: bool) {
        let cmd = Command::Periodic { key: self.key, on };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.tx.try_send(cmd) {
            let tx = self.tx.clone();
            tokio::spawn(async move { tx.send(cmd).await });
        }
    }

    fn close(&self) {
        let cmd = Command::Close {
            key: self.key,
            reason: EndReason::Replaced,
            done: None,
        };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.tx.try_send(cmd) {
            let tx = self.tx.clone();
            tokio::spawn(async move { tx.send(cmd).await });
        }
    }
}

/// How often a shard looks at its sessions even when str0m wants nothing.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// Commands handled per wake-up before timers get a turn.
const BATCH: usize = 256;

/// One worker: its sessions and its inboxes.
pub struct Shard {
    index: usize,
    shared: Arc<Shared>,
    /// Boxed: a session is large, and a map of boxes grows and shrinks
    /// without moving them.
    sessions: HashMap<u64, Box<Session>>,
    inbox: mpsc::Receiver<Command>,
    wakes: mpsc::UnboundedReceiver<u64>,
    outbox: Outbox,
}

impl Shard {
    /// A shard reading `inbox` and `wakes`.
    pub fn new(
        index: usize,
        shared: Arc<Shared>,
        inbox: mpsc::Receiver<Command>,
        wakes: mpsc::UnboundedReceiver<u64>,
    ) -> Shard {
        Shard {
            index,
            outbox: Outbox::new(shared.socket.clone(), shared.counters.clone()),
            shared,
            sessions: HashMap::new(),
            inbox,
            wakes,
        }
    }

    /// Runs until shutdown, then closes every session it owns.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                cmd = self.inbox.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle(cmd);
                    for _ in 0..BATCH {
                        match self.inbox.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                }
                Some(key) = self.wakes.recv() => {
                    self.feed(key);
                    while let Ok(key) = self.wakes.try_recv() {
                        self.feed(key);
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            self.run_timers(Instant::now());
            self.reap();
        }
        let keys: Vec<u64> = self.sessions.keys().copied().collect();
        for key in keys {
            if let Some(s) = self.sessions.get_mut(&key) {
                s.end(EndReason::Shutdown);
            }
        }
        self.reap();
    }

    fn next_deadline(&self) -> Instant {
        let housekeeping = Instant::now() + HOUSEKEEPING;
        self.sessions
            .values()
            .map(|s| s.next_timeout)
            .min()
            .map_or(housekeeping, |t| t.min(housekeeping))
    }

    fn run_timers(&mut self, now: Instant) {
        let counters = &self.shared.counters;
        for s in self.sessions.values_mut() {
            if s.next_timeout <= now
                || now.saturating_duration_since(s.last_heard) > s.silence_limit
            {
                s.timeout(now);
                s.drive(&mut self.outbox, counters);
            }
        }
    }

    fn with_session(&mut self, key: u64, f: impl FnOnce(&mut Session)) {
        if let Some(s) = self.sessions.get_mut(&key) {
            f(s);
            s.drive(&mut self.outbox, &self.shared.counters);
        }
    }

    fn feed(&mut self, key: u64) {
        if let Some(s) = self.sessions.get_mut(&key) {
            s.feed_viewer(&mut self.outbox, &self.shared.counters);
            s.drive(&mut self.outbox, &self.shared.counters);
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add(session) => self.add(session),
            Command::Datagram {
                key,
                proto,
                source,
                destination,
                data,
                at,
            } => {
                let counters = self.shared.counters.clone();
                self.with_session(key, |s| {
                    s.receive(at, proto, source, destination, &data, &counters)
                });
            }
            Command::Patch { key, op, reply } => {
                let result = match self.sessions.get_mut(&key) {
                    None => Err(PatchError::NotFound),
                    Some(s) => patch(
                        s,
                        op,
                        &self.shared,
                        Target {
                            shard: self.index,
                            key,
                        },
                    ),
                };
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.drive(&mut self.outbox, &self.shared.counters);
                }
                let _ = reply.send(result);
            }
            Command::Close { key, reason, done } => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.end(reason);
                }
                self.reap();
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::Keyframe { key, layer } => {
                self.with_session(key, |s| s.ask_keyframe(Instant::now(), layer));
            }
            Command::Periodic { key, on } => {
                self.with_session(key, |s| s.set_periodic_keyframes(on));
            }
        }
    }

    fn add(&mut self, mut session: Box<Session>) {
        let key = session.key;
        let target = Target {
            shard: self.index,
            key,
        };
        for ufrag in &session.ufrags {
            self.shared.routes.add_ufrag(ufrag, target);
        }
        // Sinks (a recorder) may have attached before the session got here.
        if session.stream.wants_periodic_keyframes() {
            session.set_periodic_keyframes(true);
        }
        session.drive(&mut self.outbox, &self.shared.counters);
        self.sessions.insert(key, session);
    }

    /// Removes ended sessions and everything they held.
    fn reap(&mut self) {
        let ended: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.ended.is_some())
            .map(|(k, _)| *k)
            .collect();
        if ended.is_empty() {
            return;
        }
        for key in ended {
            let Some(mut s) = self.sessions.remove(&key) else {
                continue;
            };
            let reason = match s.ended.unwrap_or(EndReason::Failed) {
                // The hub closes publishers at shutdown the way a takeover does.
                EndReason::Replaced if self.shared.hub.is_closed() => EndReason::Shutdown,
                r => r,
            };
            s.detach(&self.shared.hub);
            s.flush(&mut self.outbox);
            self.shared.routes.remove_target(Target {
                shard: self.index,
                key,
            });
            self.shared.tcp.close_session(key);
            self.shared.sessions.lock().remove(&s.id);
            let f = s.figures;
            let duration_secs = (s.created.elapsed().as_secs_f64() * 10.0).round() / 10.0;
            tracing::info!(
                session = %short(&s.id),
                stream = %s.stream.name(),
                role = s.role_name(),
                reason = reason.name(),
                duration_secs,
                frames = f.frames,
                datagrams_in = f.datagrams_in,
                bytes_in = f.bytes_in,
                datagrams_out = f.datagrams_out,
                bytes_out = f.bytes_out,
                "session ended"
            );
            if s.viewer_joined() {
                s.stream.events().emit(crate::events::Event::ViewerLeft {
                    stream: s.stream.name().to_string(),
                    stream_id: s.stream.id(),
                    session: short(&s.id).to_string(),
                    duration_secs,
                    reason: reason.name().to_string(),
                });
            }
        }
        // After a crowd left, give the table's room back too.
        super::memory::shrink_if_sparse(&mut self.sessions);
    }
}

fn patch(
    s: &mut Session,
    op: PatchOp,
    shared: &Shared,
    target: Target,
) -> Result<PatchReply, PatchError> {
    match op {
        PatchOp::Trickle { etag, candidates } => {
            if etag != s.etag {
                return Err(PatchError::Stale);
            }
            add_candidates(s, &candidates)?;
            Ok(PatchReply::Trickled)
        }
        PatchOp::Restart {
            ufrag,
            pwd,
            candidates,
        } => {
            let local = IceCreds::new();
            let mut api = s.rtc.direct_api();
            api.set_remote_ice_credentials(IceCreds { ufrag, pass: pwd });
            api.set_local_ice_credentials(local.clone());
            add_candidates(s, &candidates)?;
            shared.routes.add_ufrag(&local.ufrag, target);
            // Keep the old fragment routed until the session ends: checks in
            // flight from before the restart must not be misrouted.
            s.ufrags.push(local.ufrag.clone());
            s.etag = super::new_etag();
            Ok(PatchReply::Restarted {
                ufrag: local.ufrag,
                pwd: local.pass,
                etag: s.etag.clone(),
                candidates: shared
                    .ice_candidates
                    .iter()
                    .map(Candidate::to_sdp_string)
                    .collect(),
            })
        }
    }
}

fn add_candidates(s: &mut Session, lines: &[String]) -> Result<(), PatchError> {
    for line in lines {
        let c = Candidate::from_sdp_string(line)
            .map_err(|e| PatchError::BadCandidate(format!("{e}")))?;
        s.rtc.add_remote_candidate(c);
    }
    Ok(())
}
