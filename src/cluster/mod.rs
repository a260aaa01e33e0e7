//! Several castgate nodes as one, through a shared Redis.
//!
//! Each node keeps a record in Redis ([`node`]) and claims the names of the
//! streams published to it in the stream directory ([`directory`]): one
//! origin per name in the whole cluster. A background task beats every
//! `cluster.heartbeat_secs`: it rewrites the node record, refreshes (or
//! releases) this node's claims and reads the whole directory into memory,
//! which is what listings read. A second task listens on the directory's
//! channel so a start or an end elsewhere is known at once, not at the next
//! beat. A viewer asking a node for a stream another node carries is sent
//! there with a signed [`ticket`].
//!
//! Failure rules: with Redis out of reach, streams already here carry on
//! (their claims are re-asserted when Redis returns), new publishes are
//! refused (no name may get two origins) and remote streams cannot be
//! found. A claim that another node holds when Redis answers again has been
//! lost: the local stream ends, as in a takeover.

pub mod directory;
pub mod node;
pub mod relay;
pub mod ticket;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{ClusterConfig, ClusterWhep, Config, redact_url};
use crate::events::Event;
use crate::names::StreamName;
use crate::rtc::Engine;
use crate::stream::{Hub, StreamInfo};
pub use directory::{Announcement, Claim, ClaimOutcome, RefreshOutcome};
use directory::{Directory, NODE_PREFIX, STREAM_PREFIX};
pub use node::{Load, NodeRecord};
pub use relay::{LAYERS_HEADER, RELAY_PATH, RelayError};
pub use ticket::{Purpose, TicketError, TicketKey};

/// How long one Redis request may take before it counts as failed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconcile requests queued for the heartbeat task (more wait for the beat).
const WAKE_QUEUE: usize = 256;

/// Why the cluster could not be joined at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `cluster.redis_url` cannot be used (the URL is shown without its password).
    #[error("cluster.redis_url {url}: {reason}")]
    RedisUrl {
        /// The URL, password masked.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// The node id could not be settled.
    #[error(transparent)]
    NodeId(#[from] node::NodeIdError),
}

/// Why a publish could not claim its name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClaimError {
    /// Another node carries the name.
    #[error("stream {name:?} is live on node {node:?}; stop it there first or use another name")]
    Busy {
        /// The stream name.
        name: String,
        /// The node that carries it.
        node: String,
    },
    /// Redis cannot be reached: no claim can be made safely.
    #[error(
        "the cluster's Redis cannot be reached, so the name cannot be claimed safely; retry shortly"
    )]
    Unavailable,
}

/// Redis cannot be reached (a lookup failed).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the cluster's Redis cannot be reached; retry shortly")]
pub struct Unavailable;

/// Counters of the cluster layer, for metrics.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Redis requests that failed (timeouts, refused connections, errors).
    pub redis_errors: AtomicU64,
    /// Claims lost to another node (the local stream ended).
    pub claims_lost: AtomicU64,
    /// Claims put back after they had expired (Redis was out of reach).
    pub claims_reasserted: AtomicU64,
    /// Viewers sent to another node with a redirect.
    pub redirects: AtomicU64,
}

/// One node of the cluster as `GET /api/cluster` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Base URL.
    pub url: String,
    /// Media addresses.
    pub media: Vec<String>,
    /// castgate's version.
    pub version: String,
    /// Seconds since its last heartbeat was written.
    pub age_secs: f64,
    /// Seconds since the process started.
    pub uptime_secs: f64,
    /// What it carries.
    pub load: Load,
    /// Whether this is the node that answered.
    pub this_node: bool,
}

/// Body of `GET /api/cluster`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterInfo {
    /// The id of the node that answered.
    pub node: String,
    /// Whether that node reaches Redis now.
    pub redis_reachable: bool,
    /// How WHEP for another node's stream is answered (`redirect`).
    #[schema(value_type = String)]
    pub whep: ClusterWhep,
    /// The nodes with a live record, by id.
    pub nodes: Vec<NodeInfo>,
}

/// A name this node holds in the directory.
struct Held {
    claim: Claim,
    stored: String,
    /// Publishes between their claim and their stream's start (or failure).
    pending: usize,
}

/// What this node last read of the directory.
#[derive(Default)]
struct View {
    claims: HashMap<String, Claim>,
    nodes: HashMap<String, NodeRecord>,
}

/// This node's membership of the cluster. Made by [`Cluster::start`]; ended
/// by [`Cluster::shutdown`].
pub struct Cluster {
    id: String,
    incarnation: String,
    url: String,
    config: ClusterConfig,
    started_ms: u64,
    client: redis::Client,
    redis: ConnectionManager,
    directory: Directory,
    hub: Arc<Hub>,
    engine: Arc<Engine>,
    held: Mutex<HashMap<StreamName, Held>>,
    /// Claims and releases one at a time, so a release never deletes a
    /// claim made again meanwhile.
    ops: tokio::sync::Mutex<()>,
    view: RwLock<View>,
    reachable: AtomicBool,
    tickets: TicketKey,
    counters: ClusterCounters,
    wake: mpsc::Sender<StreamName>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    cpu: Mutex<Option<(Instant, f64)>>,
    relays: relay::Relays,
    /// When this node last wrote its record (Unix ms), to notice a record
    /// written after it by another process with the same node id.
    last_written_ms: AtomicU64,
    /// Another live process uses this node's id.
    duplicate: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.id)
            .field("url", &self.url)
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// A claim made for a publish that has not started its stream yet. Keep it
/// with [`PendingClaim::started`] once the stream is live; dropped without
/// that (the publish failed, or its request went away), the claim is
/// released unless a live stream here still carries the name.
pub struct PendingClaim {
    cluster: Arc<Cluster>,
    name: StreamName,
}

impl PendingClaim {
    /// The stream is live: the claim now follows it.
    pub fn started(self) {}
}

impl Drop for PendingClaim {
    fn drop(&mut self) {
        let mut held = self.cluster.held.lock();
        if let Some(h) = held.get_mut(&self.name) {
            h.pending = h.pending.saturating_sub(1);
        }
        drop(held);
        // The heartbeat task decides: keep (a stream carries it) or release.
        let _ = self.cluster.wake.try_send(self.name.clone());
    }
}

impl Cluster {
    /// Joins the cluster of `config.cluster` (which must be enabled): settles
    /// the node id, connects to Redis (in the background: a Redis that is
    /// down at start-up is retried, and the node is not ready meanwhile) and
    /// starts the heartbeat and the channel listener.
    pub async fn start(
        config: &Config,
        hub: Arc<Hub>,
        engine: Arc<Engine>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let c = config.cluster.clone();
        let redis_url = c.redis_url.clone().unwrap_or_default();
        let url_error = |e: redis::RedisError| ClusterError::RedisUrl {
            url: redact_url(&redis_url),
            reason: e.to_string(),
        };
        let client = redis::Client::open(redis_url.as_str()).map_err(url_error)?;
        let manager = ConnectionManager::new_lazy_with_config(
            client.clone(),
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(100))
                .set_max_delay(Duration::from_secs(1)),
        )
        .map_err(url_error)?;
        let dir = config.record.dir.clone();
        let configured = c.node_id.clone();
        let port = config.http.listen.port();
        let id = tokio::task::spawn_blocking(move || {
            node::settle_id(configured.as_deref(), &dir, &node::host_name(), port)
        })
        .await
        .unwrap_or_else(|_| Ok("node".to_string()))?;
        let incarnation = format!("{:016x}", rand::random::<u64>());
        let url = c.base_url(&config.http);
        let (wake, wake_rx) = mpsc::channel(WAKE_QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        let tickets = TicketKey::new(c.secret.as_deref().unwrap_or_default());
        let relays = relay::Relays::new(
            engine.clone(),
            tickets.clone(),
            Duration::from_secs_f64(c.relay_linger_secs),
            c.expiry().max(Duration::from_secs(5)),
        );
        let cluster = Arc::new(Cluster {
            directory: Directory::new(&id, &incarnation, &url),
            tickets,
            relays,
            id,
            incarnation,
            url,
            config: c,
            started_ms: now_ms(),
            client,
            redis: manager,
            hub,
            engine,
            held: Mutex::new(HashMap::new()),
            ops: tokio::sync::Mutex::new(()),
            view: RwLock::new(View::default()),
            reachable: AtomicBool::new(false),
            counters: ClusterCounters::default(),
            wake,
            stop,
            tasks: Mutex::new(Vec::new()),
            cpu: Mutex::new(None),
            last_written_ms: AtomicU64::new(0),
            duplicate: AtomicBool::new(false),
        });
        tracing::info!(
            node = %cluster.id,
            url = %cluster.url,
            redis = %redact_url(&redis_url),
            "joining the cluster"
        );
        // The first beat before serving: listings are whole from the start
        // (a Redis that is down is retried by the loop).
        cluster.beat().await;
        let tasks = vec![
            tokio::spawn(cluster.clone().heartbeat(wake_rx, stop_rx.clone())),
            tokio::spawn(cluster.clone().listen(stop_rx.clone())),
            tokio::spawn(cluster.clone().follow_ends(stop_rx.clone())),
            tokio::spawn(cluster.clone().tend_relays(stop_rx)),
        ];
        *cluster.tasks.lock() = tasks;
        Ok(cluster)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.id
    }

    /// This node's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The settings in force.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Another live process writes this node's record (the same node id on
    /// two nodes): their claims would be taken for each other's.
    pub fn duplicate_id(&self) -> bool {
        self.duplicate.load(Ordering::Relaxed)
    }

    /// Whether the last request to Redis succeeded.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// The counters, for metrics.
    pub fn counters(&self) -> &ClusterCounters {
        &self.counters
    }

    /// Nodes with a live record in the last directory read.
    pub fn nodes_seen(&self) -> usize {
        self.view.read().nodes.len()
    }

    fn ttl_ms(&self) -> u64 {
        self.config.expiry().as_millis() as u64
    }

    fn redis_failed(&self, what: &str, e: &redis::RedisError) {
        self.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
        if self.reachable.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e, what, "the cluster's Redis cannot be reached; local streams carry on, new publishes are refused");
        } else {
            tracing::debug!(error = %e, what, "Redis request failed");
        }
    }

    fn redis_ok(&self) {
        if !self.reachable.swap(true, Ordering::Relaxed) {
            tracing::info!(node = %self.id, "the cluster's Redis is reachable");
        }
    }

    /// Claims `name` for a publish on this node. With `takeover`, another
    /// node's claim is replaced (its stream ends there).
    pub async fn claim(
        self: &Arc<Self>,
        name: &StreamName,
        takeover: bool,
    ) -> Result<PendingClaim, ClaimError> {
        let _one = self.ops.lock().await;
        let mut con = self.redis.clone();
        let outcome = self
            .directory
            .claim(&mut con, name.as_str(), now_ms(), self.ttl_ms(), takeover)
            .await;
        match outcome {
            Err(e) => {
                self.redis_failed("claim", &e);
                Err(ClaimError::Unavailable)
            }
            Ok(ClaimOutcome::Taken(other)) => {
                self.redis_ok();
                self.view
                    .write()
                    .claims
                    .insert(name.to_string(), other.clone());
                Err(ClaimError::Busy {
                    name: name.to_string(),
                    node: other.node,
                })
            }
            Ok(ClaimOutcome::Held { claim, stored }) => {
                self.redis_ok();
                self.view
                    .write()
                    .claims
                    .insert(name.to_string(), claim.clone());
                let mut held = self.held.lock();
                let h = held.entry(name.clone()).or_insert_with(|| Held {
                    claim: claim.clone(),
                    stored: stored.clone(),
                    pending: 0,
                });
                h.claim = claim;
                h.stored = stored;
                h.pending += 1;
                Ok(PendingClaim {
                    cluster: self.clone(),
                    name: name.clone(),
                })
            }
        }
    }

    /// Keeps `value` in Redis as the `kind` state of the stream `name` for
    /// `ttl` (what must follow the stream to another node: a publisher that
    /// reconnects elsewhere gets it back). Only while this node holds the
    /// name; `false` otherwise or when Redis is away.
    pub async fn save_state(
        &self,
        name: &StreamName,
        kind: &str,
        value: &str,
        ttl: Duration,
    ) -> bool {
        let Some(stored) = self.held.lock().get(name).map(|h| h.stored.clone()) else {
            return false;
        };
        let mut con = self.redis.clone();
        match self
            .directory
            .save_state(
                &mut con,
                name.as_str(),
                &stored,
                kind,
                value,
                ttl.as_millis() as u64,
            )
            .await
        {
            Ok(saved) => {
                self.redis_ok();
                saved
            }
            Err(e) => {
                self.redis_failed("save state", &e);
                false
            }
        }
    }

    /// Whether this node holds the lease `name` (taken now if free, kept
    /// for `ttl` more if held): one node of the cluster at a time does the
    /// work it guards (e.g. retention in a shared bucket). `false` when
    /// another node holds it or Redis is away.
    pub async fn lease(&self, name: &str, ttl: Duration) -> bool {
        let mut con = self.redis.clone();
        match self
            .directory
            .lease(&mut con, name, ttl.as_millis() as u64)
            .await
        {
            Ok(held) => {
                self.redis_ok();
                held
            }
            Err(e) => {
                self.redis_failed("lease", &e);
                false
            }
        }
    }

    /// The `kind` state of the stream `name` a node kept (see
    /// [`Cluster::save_state`]), if any.
    pub async fn load_state(&self, name: &StreamName, kind: &str) -> Option<String> {
        let mut con = self.redis.clone();
        match Directory::load_state(&mut con, name.as_str(), kind).await {
            Ok(v) => {
                self.redis_ok();
                v
            }
            Err(e) => {
                self.redis_failed("load state", &e);
                None
            }
        }
    }

    /// Whether this node holds the name `name` (it is the stream's origin).
    pub fn holds(&self, name: &StreamName) -> bool {
        self.held.lock().contains_key(name)
    }

    /// Where `name` is live in the cluster now (asked of Redis, not the
    /// last read).
    pub async fn origin(&self, name: &StreamName) -> Result<Option<Claim>, Unavailable> {
        let mut con = self.redis.clone();
        match Directory::lookup(&mut con, name.as_str()).await {
            Ok(c) => {
                self.redis_ok();
                Ok(c)
            }
            Err(e) => {
                self.redis_failed("lookup", &e);
                Err(Unavailable)
            }
        }
    }

    /// The stream `name` relayed from its origin node `origin` (started if
    /// no pull of it runs here yet).
    pub async fn relay(
        &self,
        name: &StreamName,
        origin: &Claim,
    ) -> Result<Arc<crate::stream::LiveStream>, RelayError> {
        self.relays.stream(name, origin).await
    }

    /// Pulls started from origin nodes since start.
    pub fn relays_started(&self) -> u64 {
        self.relays.started()
    }

    /// Relays running now.
    pub fn relays_running(&self) -> usize {
        self.relays.running()
    }

    /// Ends the relays whose origin no longer carries their stream, or that
    /// have had no viewer for `cluster.relay_linger_secs`.
    fn tend(&self) {
        let view = self.view.read();
        self.relays
            .tend(|name| view.claims.get(name.as_str()).map(|c| c.epoch));
    }

    async fn tend_relays(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => self.tend(),
            }
        }
    }

    /// A ticket that lets the bearer view `name` on its origin for
    /// `cluster.ticket_secs`.
    pub fn view_ticket(&self, name: &StreamName) -> String {
        self.counters.redirects.fetch_add(1, Ordering::Relaxed);
        self.tickets.sign(
            Purpose::View,
            name.as_str(),
            SystemTime::now(),
            Duration::from_secs(self.config.ticket_secs),
        )
    }

    /// The key that checks tickets (for the access guard).
    pub fn ticket_key(&self) -> &TicketKey {
        &self.tickets
    }

    /// Every stream of the cluster as the last read saw it, with the node
    /// that carries each: this node's live figures for its own, the origin's
    /// last heartbeat for the others. Sorted by name.
    pub fn streams(&self) -> Vec<StreamInfo> {
        let mut out: Vec<StreamInfo> = self
            .hub
            .list()
            .into_iter()
            .filter(|s| s.node.is_none())
            .map(|mut s| {
                s.node = Some(self.id.clone());
                s
            })
            .collect();
        let view = self.view.read();
        for (name, claim) in &view.claims {
            if claim.node == self.id || out.iter().any(|s| &s.name == name) {
                continue;
            }
            out.push(remote_info(name, claim, &view));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// `name` on another node, as the last read saw it.
    pub fn remote_stream(&self, name: &StreamName) -> Option<StreamInfo> {
        let view = self.view.read();
        let claim = view.claims.get(name.as_str())?;
        (claim.node != self.id).then(|| remote_info(name.as_str(), claim, &view))
    }

    /// Placement (`cluster.placement_max_sessions`): when this node carries
    /// that many sessions or more, the base URL of the least-loaded other
    /// node that carries fewer (its last heartbeat's figures), with a
    /// ticket that lets a publisher of `name` in there; `None` otherwise
    /// (off, not loaded, or no node with room: publish here).
    pub fn placement(&self, name: &StreamName) -> Option<(String, String)> {
        let max = self.config.placement_max_sessions;
        if max == 0 {
            return None;
        }
        let (publishers, viewers) = self.engine.role_counts();
        let mine = publishers + viewers;
        if mine < max {
            return None;
        }
        let now = now_ms();
        let fresh = self.config.expiry().as_millis() as u64;
        let best = {
            let view = self.view.read();
            view.nodes
                .values()
                .filter(|n| n.id != self.id && now.saturating_sub(n.seen_ms) <= fresh)
                .filter(|n| n.load.sessions < max && n.load.sessions < mine)
                .min_by_key(|n| (n.load.sessions, n.id.clone()))
                .map(|n| n.url.clone())?
        };
        let ticket = self.tickets.sign(
            Purpose::Publish,
            name.as_str(),
            SystemTime::now(),
            Duration::from_secs(self.config.ticket_secs),
        );
        Some((best, ticket))
    }

    /// The origins (`scheme://host:port`) of the other nodes the last
    /// directory read saw: where a redirected viewer's page connects.
    pub fn other_origins(&self) -> Vec<String> {
        let view = self.view.read();
        let mut out: Vec<String> = view
            .nodes
            .values()
            .filter(|n| n.id != self.id)
            .filter_map(|n| {
                let u = reqwest::Url::parse(&n.url).ok()?;
                let origin = u.origin().ascii_serialization();
                // Only what a CSP source can say, nothing that could end it.
                origin
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
                    .then_some(origin)
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The nodes of the cluster (`GET /api/cluster`).
    pub fn info(&self) -> ClusterInfo {
        let now = now_ms();
        let view = self.view.read();
        let mut nodes: Vec<NodeInfo> = view
            .nodes
            .values()
            .map(|n| NodeInfo {
                id: n.id.clone(),
                url: n.url.clone(),
                media: n.media.clone(),
                version: n.version.clone(),
                age_secs: now.saturating_sub(n.seen_ms) as f64 / 1000.0,
                uptime_secs: (now.saturating_sub(n.started_ms) / 1000) as f64,
                load: n.load.clone(),
                this_node: n.id == self.id,
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        ClusterInfo {
            node: self.id.clone(),
            redis_reachable: self.is_reachable(),
            whep: self.config.whep,
            nodes,
        }
    }

    fn record(&self) -> NodeRecord {
        let (publishers, viewers) = self.engine.role_counts();
        let streams: Vec<StreamInfo> = self
            .hub
            .list()
            .into_iter()
            .filter(|s| {
                StreamName::parse(&s.name)
                    .ok()
                    .is_some_and(|n| self.held.lock().contains_key(&n))
            })
            .collect();
        let cpu_percent = node::cpu_seconds().and_then(|t| {
            let now = Instant::now();
            let last = self.cpu.lock().replace((now, t));
            last.and_then(|(at, before)| {
                let wall = now.saturating_duration_since(at).as_secs_f64();
                (wall > 0.0).then(|| ((t - before) / wall * 1000.0).round() / 10.0)
            })
        });
        NodeRecord {
            id: self.id.clone(),
            incarnation: self.incarnation.clone(),
            url: self.url.clone(),
            media: self
                .engine
                .candidates()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_ms: self.started_ms,
            seen_ms: now_ms(),
            load: Load {
                sessions: publishers + viewers,
                publishers,
                viewers,
                streams: streams.len(),
                cpu_percent,
            },
            streams,
        }
    }

    /// One heartbeat: the node record, every claim, the directory read.
    async fn beat(&self) {
        let mut con = self.redis.clone();
        self.check_duplicate(&mut con).await;
        let record = self.record();
        let seen_ms = record.seen_ms;
        let record = serde_json::to_string(&record).unwrap_or_default();
        let written: redis::RedisResult<()> = redis::cmd("SET")
            .arg(directory::node_key(&self.id))
            .arg(record)
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(&mut con)
            .await;
        if let Err(e) = written {
            self.redis_failed("heartbeat", &e);
            return;
        }
        self.last_written_ms.store(seen_ms, Ordering::Relaxed);
        self.redis_ok();
        let names: Vec<StreamName> = self.held.lock().keys().cloned().collect();
        for name in names {
            if !self.settle(&name).await {
                return;
            }
        }
        self.read_directory(&mut con).await;
    }

    /// Notices another live process writing this node's record since this
    /// one last did (a record left by this node's previous run is written
    /// before this run's first beat, so it does not count).
    async fn check_duplicate(&self, con: &mut ConnectionManager) {
        let last = self.last_written_ms.load(Ordering::Relaxed);
        if last == 0 {
            return;
        }
        let current: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(directory::node_key(&self.id))
            .query_async(con)
            .await;
        let Ok(Some(text)) = current else { return };
        let Ok(other) = serde_json::from_str::<NodeRecord>(&text) else {
            return;
        };
        let duplicate = other.incarnation != self.incarnation && other.seen_ms > last;
        if duplicate && !self.duplicate.swap(true, Ordering::Relaxed) {
            tracing::error!(node = %self.id, other_url = %other.url, "another live castgate uses this node id: give each node its own (cluster.node_id); until then this node is not ready");
        } else if !duplicate && self.duplicate.swap(false, Ordering::Relaxed) {
            tracing::info!(node = %self.id, "no other node uses this node id any more");
        }
    }

    /// Keeps, refreshes or releases this node's claim of `name`; `false`
    /// if Redis failed.
    async fn settle(&self, name: &StreamName) -> bool {
        let _one = self.ops.lock().await;
        let (claim, stored, release) = {
            let mut held = self.held.lock();
            let Some(h) = held.get(name) else {
                return true;
            };
            let release = h.pending == 0 && self.hub.get(name).is_none();
            let (claim, stored) = (h.claim.clone(), h.stored.clone());
            if release {
                held.remove(name);
            }
            (claim, stored, release)
        };
        let mut con = self.redis.clone();
        if release {
            return match self
                .directory
                .release(&mut con, name.as_str(), &claim, &stored)
                .await
            {
                Ok(_) => {
                    self.redis_ok();
                    let mut view = self.view.write();
                    if view.claims.get(name.as_str()) == Some(&claim) {
                        view.claims.remove(name.as_str());
                    }
                    tracing::debug!(stream = %name, "stream claim released");
                    true
                }
                Err(e) => {
                    // It expires on its own within cluster.expiry_secs.
                    self.redis_failed("release", &e);
                    false
                }
            };
        }
        match self
            .directory
            .refresh(&mut con, name.as_str(), &claim, &stored, self.ttl_ms())
            .await
        {
            Ok(RefreshOutcome::Refreshed) => {
                self.redis_ok();
                true
            }
            Ok(RefreshOutcome::Reasserted) => {
                self.redis_ok();
                self.counters
                    .claims_reasserted
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(stream = %name, "the stream's claim had expired (Redis out of reach?); nobody took the name, so it is this node's again");
                true
            }
            Ok(RefreshOutcome::Lost(other)) => {
                self.redis_ok();
                self.lose(name, other.as_ref().map(|c| c.node.as_str()));
                true
            }
            Err(e) => {
                self.redis_failed("refresh", &e);
                false
            }
        }
    }

    /// Another node holds `name` now: the local stream ends.
    fn lose(&self, name: &StreamName, to: Option<&str>) {
        self.held.lock().remove(name);
        self.counters.claims_lost.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(stream = %name, other_node = ?to, "another node holds the stream's name now; ending it here");
        if let Some(stream) = self.hub.get(name) {
            self.hub.end(&stream, "claim_lost");
        }
    }

    async fn read_directory(&self, con: &mut ConnectionManager) {
        let claims = directory::scan_values(con, STREAM_PREFIX).await;
        let nodes = directory::scan_values(con, NODE_PREFIX).await;
        match (claims, nodes) {
            (Ok(claims), Ok(nodes)) => {
                let mut view = self.view.write();
                view.claims = claims
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, serde_json::from_str(&v).ok()?)))
                    .collect();
                view.nodes = nodes
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, serde_json::from_str(&v).ok()?)))
                    .collect();
            }
            (Err(e), _) | (_, Err(e)) => self.redis_failed("directory read", &e),
        }
    }

    async fn heartbeat(
        self: Arc<Self>,
        mut wake: mpsc::Receiver<StreamName>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.config.heartbeat());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => self.beat().await,
                Some(name) = wake.recv() => {
                    self.settle(&name).await;
                }
            }
        }
    }

    /// Stream ends here are released at once, not at the next beat.
    async fn follow_ends(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut events = self.hub.events().subscribe();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                e = events.recv() => match e {
                    Ok(env) => {
                        if let Event::StreamEnded { stream, .. } = &env.event
                            && let Ok(name) = StreamName::parse(stream)
                        {
                            let _ = self.wake.try_send(name);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Listens on the directory's channel (reconnecting while Redis is away).
    async fn listen(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let connected =
                tokio::time::timeout(REDIS_TIMEOUT, self.client.get_async_pubsub()).await;
            match connected {
                Ok(Ok(mut pubsub)) => {
                    if pubsub.subscribe(directory::CHANNEL).await.is_ok() {
                        let mut messages = pubsub.on_message();
                        loop {
                            tokio::select! {
                                _ = stop.changed() => return,
                                m = messages.next() => match m {
                                    Some(m) => {
                                        if let Ok(text) = m.get_payload::<String>()
                                            && let Ok(a) = serde_json::from_str::<Announcement>(&text)
                                        {
                                            self.announced(a);
                                        }
                                    }
                                    None => break,
                                },
                            }
                        }
                    }
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "cluster channel: cannot connect"),
                Err(_) => tracing::debug!("cluster channel: connect timed out"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn announced(&self, a: Announcement) {
        let Ok(name) = StreamName::parse(&a.name) else {
            return;
        };
        let claim = Claim {
            node: a.node.clone(),
            incarnation: a.incarnation.clone(),
            epoch: a.epoch,
            url: a.url.clone(),
            since_ms: now_ms(),
        };
        match a.event.as_str() {
            "started" => {
                {
                    let mut view = self.view.write();
                    let newer = view
                        .claims
                        .get(name.as_str())
                        .is_none_or(|c| c.epoch <= a.epoch);
                    if newer {
                        let since = view
                            .claims
                            .get(name.as_str())
                            .filter(|c| c.epoch == a.epoch)
                            .map(|c| c.since_ms);
                        view.claims.insert(
                            a.name.clone(),
                            Claim {
                                since_ms: since.unwrap_or(claim.since_ms),
                                ..claim
                            },
                        );
                    }
                }
                let ours = a.node == self.id && a.incarnation == self.incarnation;
                let lost = !ours
                    && self
                        .held
                        .lock()
                        .get(&name)
                        .is_some_and(|h| h.claim.epoch < a.epoch);
                if lost {
                    self.lose(&name, Some(&a.node));
                }
            }
            "ended" => {
                let mut view = self.view.write();
                if view
                    .claims
                    .get(name.as_str())
                    .is_some_and(|c| c.epoch == a.epoch)
                {
                    view.claims.remove(name.as_str());
                }
            }
            _ => {}
        }
        // A relay of this name may have lost its origin: end it now, not
        // at the next check.
        self.tend();
    }

    /// Leaves the cluster: stops the tasks, releases this node's claims and
    /// deletes its record (best effort, bounded: what is left expires).
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
        self.relays.close_all();
        let held: Vec<(StreamName, Held)> = self.held.lock().drain().collect();
        let mut con = self.redis.clone();
        let leave = async {
            for (name, h) in held {
                let _ = self
                    .directory
                    .release(&mut con, name.as_str(), &h.claim, &h.stored)
                    .await;
            }
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(directory::node_key(&self.id))
                .query_async(&mut con)
                .await;
        };
        if tokio::time::timeout(REDIS_TIMEOUT, leave).await.is_err() {
            tracing::warn!(
                "leaving the cluster timed out; this node's records expire on their own"
            );
        }
        tracing::info!(node = %self.id, "left the cluster");
    }
}

/// What the listing shows of a stream on another node: the origin's last
/// heartbeat figures, or (just started) what the claim says.
fn remote_info(name: &str, claim: &Claim, view: &View) -> StreamInfo {
    let reported = view
        .nodes
        .get(&claim.node)
        .and_then(|n| n.streams.iter().find(|s| s.name == name));
    let mut info = match reported {
        Some(s) => s.clone(),
        None => {
            let since = UNIX_EPOCH + Duration::from_millis(claim.since_ms);
            StreamInfo {
                name: name.to_string(),
                node: None,
                id: claim.epoch,
                started_at: humantime::format_rfc3339_seconds(since).to_string(),
                uptime_secs: SystemTime::now()
                    .duration_since(since)
                    .unwrap_or_default()
                    .as_secs() as f64,
                video: None,
                audio: None,
                bitrate_in_kbps: 0.0,
                bitrate_out_kbps: 0.0,
                viewers: 0,
                frames_in: 0,
                bytes_in: 0,
                bytes_out: 0,
                frames_dropped: 0,
                frames_skipped: 0,
                keyframe_requests: 0,
                layer_switches: 0,
                layers: Vec::new(),
            }
        }
    };
    info.node = Some(claim.node.clone());
    info
}
