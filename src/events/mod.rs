//! Typed events of the gateway's life (streams, viewers, recordings, restream
//! targets) on one bounded broadcast bus.
//!
//! Producers ([`crate::stream`], [`crate::rtc`], [`crate::record`],
//! [`crate::restream`]) call [`Events::emit`], which never blocks: each
//! subscriber (the `/api/events` server-sent-events stream, each [`webhook`]
//! deliverer) has a bounded view of the bus and loses the oldest events, counted,
//! when it falls behind. This module depends on nothing else in the crate.

pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// Events a subscriber may hold before it starts losing the oldest ones.
pub const DEFAULT_BUFFER: usize = 1024;

/// Something that happened, as subscribers see it (JSON with a `type` field).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A publisher went live.
    StreamStarted {
        /// Stream name.
        stream: String,
        /// Process-unique stream id.
        stream_id: u64,
        /// Video codec, if the publisher sends video.
        video: Option<String>,
        /// Audio codec, if the publisher sends audio.
        audio: Option<String>,
    },
    /// A publisher left (or was replaced, or the server stops).
    StreamEnded {
        /// Stream name.
        stream: String,
        /// Process-unique stream id.
        stream_id: u64,
        /// Why: `publisher_left` (it DELETEd its session), `silent`,
        /// `failed`, `replaced` (a takeover), `over_limit`, `shutdown`,
        /// `ended_by_operator` (`DELETE /api/streams/{name}`), `claim_lost`
        /// (in a cluster: another node holds the name now).
        reason: String,
        /// Seconds it was live.
        duration_secs: f64,
        /// Frames received from the publisher.
        frames_in: u64,
        /// Payload bytes received from the publisher.
        bytes_in: u64,
        /// Payload bytes sent to viewers.
        bytes_out: u64,
    },
    /// A WHEP viewer's media started flowing.
    ViewerJoined {
        /// Stream name.
        stream: String,
        /// Process-unique stream id.
        stream_id: u64,
        /// First 8 characters of the session id.
        session: String,
    },
    /// A WHEP viewer's session ended.
    ViewerLeft {
        /// Stream name.
        stream: String,
        /// Process-unique stream id.
        stream_id: u64,
        /// First 8 characters of the session id.
        session: String,
        /// Seconds the session lasted.
        duration_secs: f64,
        /// Why it ended (`deleted`, `silent`, `stream_ended`, …).
        reason: String,
    },
    /// A recording file was opened.
    RecordingStarted {
        /// Stream name.
        stream: String,
        /// Recording id (`STREAM~STEM`).
        id: String,
        /// The file being written (final name; `.part` while written).
        path: String,
    },
    /// A recording file was finished cleanly (Cues, Duration, renamed).
    RecordingFinalized {
        /// Stream name.
        stream: String,
        /// Recording id.
        id: String,
        /// The finished file.
        path: String,
        /// Recorded seconds.
        duration_secs: f64,
        /// File size in bytes.
        size_bytes: u64,
        /// SHA-256 of the file, hex (absent if the file could not be read).
        sha256: Option<String>,
    },
    /// A finished recording is in object storage, checked by its SHA-256
    /// (any node can list and serve it now).
    RecordingStored {
        /// Stream name.
        stream: String,
        /// Recording id.
        id: String,
        /// The object's name in the bucket.
        key: String,
        /// Its size in bytes.
        size_bytes: u64,
        /// SHA-256 of the file, hex.
        sha256: String,
        /// Whether the local copy was removed.
        local_removed: bool,
    },
    /// An export of a recording to H.264 MP4 ended (finished, failed or
    /// cancelled).
    ExportFinished {
        /// Stream name.
        stream: String,
        /// Recording id.
        id: String,
        /// The audio of the export: `opus` or `aac`.
        audio: String,
        /// `done`, `failed` or `cancelled`.
        state: String,
        /// Seconds of work.
        secs: f64,
        /// The MP4's size in bytes (when done).
        size_bytes: Option<u64>,
        /// What went wrong (when failed).
        error: Option<String>,
    },
    /// A recording could not open its next file (low disk); it tries again
    /// while the stream lives (a `recording_started` follows when it can).
    RecordingInterrupted {
        /// Stream name.
        stream: String,
        /// Why no file could be opened.
        reason: String,
    },
    /// A recording stopped on an error (what was written is kept).
    RecordingFailed {
        /// Stream name.
        stream: String,
        /// Recording id (empty if it failed before a file was chosen).
        id: String,
        /// The file, if one was chosen.
        path: Option<String>,
        /// What went wrong.
        error: String,
    },
    /// A restream target (RTMP/RTMPS) changed state.
    RestreamState {
        /// Stream name.
        stream: String,
        /// Target id.
        target_id: String,
        /// The masked URL (`rtmp://host/app/****`): the key never leaves.
        url: String,
        /// `starting`, `live`, `retrying`, `failed` or `stopped`.
        state: String,
        /// The error that caused `retrying` or `failed`.
        error: Option<String>,
    },
    /// The configuration was reloaded (SIGHUP): what changed live, and
    /// what differs but waits for a restart. Keys only, never values.
    ConfigReloaded {
        /// Dotted keys applied live (e.g. `auth.publish_token`).
        applied: Vec<String>,
        /// Dotted keys that changed but need a restart to take effect.
        needs_restart: Vec<String>,
    },
    /// A reload was refused: the new configuration is invalid, and the old
    /// one stays in force whole.
    ConfigRejected {
        /// Why, naming the key (never its value).
        error: String,
    },
}

impl Event {
    /// The `type` tag (`stream_started`, …): the SSE event name and the
    /// webhook's `X-Castgate-Event` header.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::StreamStarted { .. } => "stream_started",
            Event::StreamEnded { .. } => "stream_ended",
            Event::ViewerJoined { .. } => "viewer_joined",
            Event::ViewerLeft { .. } => "viewer_left",
            Event::RecordingStarted { .. } => "recording_started",
            Event::RecordingFinalized { .. } => "recording_finalized",
            Event::RecordingFailed { .. } => "recording_failed",
            Event::RecordingStored { .. } => "recording_stored",
            Event::RecordingInterrupted { .. } => "recording_interrupted",
            Event::ExportFinished { .. } => "export_finished",
            Event::RestreamState { .. } => "restream_state",
            Event::ConfigReloaded { .. } => "config_reloaded",
            Event::ConfigRejected { .. } => "config_rejected",
        }
    }
}

/// An event with its sequence number and time, as delivered.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    /// Increasing within the process (SSE `id`, webhook delivery id).
    pub seq: u64,
    /// When it happened (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// In a cluster: the node it happened on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

struct Inner {
    tx: broadcast::Sender<Arc<Envelope>>,
    seq: AtomicU64,
    closed: watch::Sender<bool>,
    node: std::sync::OnceLock<String>,
}

/// The event bus: cheap to clone, never blocks the emitter.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("subscribers", &self.inner.tx.receiver_count())
            .finish()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new(DEFAULT_BUFFER)
    }
}

impl Events {
    /// A bus on which each subscriber holds at most `buffer` undelivered events.
    pub fn new(buffer: usize) -> Events {
        let (tx, _) = broadcast::channel(buffer.max(1));
        let (closed, _) = watch::channel(false);
        Events {
            inner: Arc::new(Inner {
                tx,
                seq: AtomicU64::new(1),
                closed,
                node: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Names the node every event from now on happened on (set once, when
    /// the node joins a cluster), so a cluster's events can be told apart.
    pub fn set_node(&self, node: &str) {
        let _ = self.inner.node.set(node.to_string());
    }

    /// Publishes an event to every current subscriber; never blocks.
    pub fn emit(&self, event: Event) {
        let env = Envelope {
            seq: self.inner.seq.fetch_add(1, Ordering::Relaxed),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            node: self.inner.node.get().cloned(),
            event,
        };
        tracing::debug!(event = env.event.kind(), seq = env.seq, "event");
        // No subscriber is not an error: nobody listens.
        let _ = self.inner.tx.send(Arc::new(env));
    }

    /// A new subscriber, seeing events emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.inner.tx.subscribe()
    }

    /// Tells long-lived subscribers (SSE streams) that the server is stopping.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Resolves once [`Events::close`] was called.
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Whether [`Events::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_their_type_and_envelope() {
        let bus = Events::new(4);
        let mut rx = bus.subscribe();
        bus.emit(Event::StreamStarted {
            stream: "demo".into(),
            stream_id: 7,
            video: Some("vp8".into()),
            audio: None,
        });
        let env = rx.try_recv().unwrap();
        assert_eq!(env.seq, 1);
        let v = serde_json::to_value(&*env).unwrap();
        assert_eq!(v["type"], "stream_started");
        assert_eq!(v["stream"], "demo");
        assert_eq!(v["stream_id"], 7);
        assert!(v["at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(env.event.kind(), "stream_started");
    }

    #[test]
    fn a_slow_subscriber_loses_the_oldest_and_is_told_how_many() {
        let bus = Events::new(2);
        let mut rx = bus.subscribe();
        for i in 0..5 {
            bus.emit(Event::RecordingFailed {
                stream: "s".into(),
                id: format!("{i}"),
                path: None,
                error: "x".into(),
            });
        }
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 3),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(rx.try_recv().unwrap().seq, 4);
        assert_eq!(rx.try_recv().unwrap().seq, 5);
    }
}
