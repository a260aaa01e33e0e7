//! Relays: a node serves the viewers of a stream another node carries by
//! pulling it from that origin once — castgate as a WHEP client of the
//! origin's relay path — however many local viewers it has. The pull ends a
//! while after its last local viewer leaves, when the origin ends it, or
//! when the directory no longer names that origin (the origin died, or a
//! takeover moved the name). A relay never claims or announces its stream,
//! and pulls only from the directory's owner, so relays cannot loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::OnceCell;

use super::directory::Claim;
use super::ticket::{Purpose, TicketKey};
use crate::names::StreamName;
use crate::rtc::Engine;
use crate::rtc::upstream::Upstream;
use crate::stream::{LiveStream, SinkKind};

/// The origin's path that answers relays (node-to-node, with a ticket).
pub const RELAY_PATH: &str = "/cluster/relay";
/// How long a relay ticket is good for (one POST or DELETE).
const TICKET_TTL: Duration = Duration::from_secs(60);
/// The HTTP exchange with the origin.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a stream could not be pulled from its origin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelayError {
    /// The origin could not be asked, or said no.
    #[error("the stream's origin node {node:?} could not be pulled from: {reason}")]
    Origin {
        /// The origin node.
        node: String,
        /// What went wrong.
        reason: String,
    },
}

/// A pull that is running.
struct Running {
    upstream: Upstream,
    /// The session resource at the origin (DELETEd at the end).
    resource: String,
}

/// One relayed name: its pull (started once, shared by every viewer that
/// asks meanwhile).
struct Entry {
    origin: Claim,
    pull: OnceCell<Result<Running, RelayError>>,
    idle_since: Mutex<Option<Instant>>,
}

/// Every relay of this node.
pub struct Relays {
    entries: Mutex<HashMap<StreamName, Arc<Entry>>>,
    http: reqwest::Client,
    engine: Arc<Engine>,
    tickets: TicketKey,
    linger: Duration,
    silence: Duration,
    /// Pulls that started (counted where they start).
    started: AtomicU64,
}

impl Relays {
    /// Relays through `engine`, signing requests with `tickets`; a pull
    /// without local viewers ends after `linger`, one that hears nothing
    /// from its origin for `silence` ends too.
    pub fn new(
        engine: Arc<Engine>,
        tickets: TicketKey,
        linger: Duration,
        silence: Duration,
    ) -> Relays {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .unwrap_or_default();
        Relays {
            entries: Mutex::new(HashMap::new()),
            http,
            engine,
            tickets,
            linger,
            silence,
            started: AtomicU64::new(0),
        }
    }

    /// Pulls started since start.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Pulls running now.
    pub fn running(&self) -> usize {
        self.entries
            .lock()
            .values()
            .filter(|e| matches!(e.pull.get(), Some(Ok(_))))
            .count()
    }

    /// The stream `name` relayed from `origin`: the running pull's, or a new
    /// pull's once it is set up.
    pub async fn stream(
        &self,
        name: &StreamName,
        origin: &Claim,
    ) -> Result<Arc<LiveStream>, RelayError> {
        for _ in 0..2 {
            let entry = {
                let mut entries = self.entries.lock();
                let fresh = |e: &Arc<Entry>| {
                    e.origin.epoch == origin.epoch
                        && match e.pull.get() {
                            Some(Ok(r)) => !r.upstream.stream().is_ended(),
                            Some(Err(_)) => false,
                            None => true,
                        }
                };
                match entries.get(name) {
                    Some(e) if fresh(e) => e.clone(),
                    _ => {
                        if let Some(old) = entries.remove(name) {
                            self.finish(old);
                        }
                        let e = Arc::new(Entry {
                            origin: origin.clone(),
                            pull: OnceCell::new(),
                            idle_since: Mutex::new(None),
                        });
                        entries.insert(name.clone(), e.clone());
                        e
                    }
                }
            };
            let result = entry.pull.get_or_init(|| self.pull(name, origin)).await;
            match result {
                Ok(r) if !r.upstream.stream().is_ended() => {
                    return Ok(r.upstream.stream().clone());
                }
                Ok(_) => continue,
                Err(e) => {
                    let mut entries = self.entries.lock();
                    if entries.get(name).is_some_and(|x| Arc::ptr_eq(x, &entry)) {
                        entries.remove(name);
                    }
                    return Err(e.clone());
                }
            }
        }
        Err(RelayError::Origin {
            node: origin.node.clone(),
            reason: "the stream ended while the relay was being set up".into(),
        })
    }

    fn ticket(&self, name: &StreamName) -> String {
        self.tickets
            .sign(Purpose::Relay, name.as_str(), SystemTime::now(), TICKET_TTL)
    }

    async fn pull(&self, name: &StreamName, origin: &Claim) -> Result<Running, RelayError> {
        let fail = |reason: String| RelayError::Origin {
            node: origin.node.clone(),
            reason,
        };
        let base = origin.url.trim_end_matches('/');
        let url = format!("{base}{RELAY_PATH}/{}", name.as_str());
        let server = origin_ip(base)
            .await
            .ok_or_else(|| fail(format!("cannot resolve the host of {base}")))?;
        let offer = self
            .engine
            .upstream_offer(server)
            .map_err(|e| fail(e.to_string()))?;
        let resp = self
            .http
            .post(&url)
            .bearer_auth(self.ticket(name))
            .header(reqwest::header::CONTENT_TYPE, "application/sdp")
            .body(offer.sdp().to_string())
            .send()
            .await
            .map_err(|e| fail(format!("POST {url}: {e}")))?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::CREATED {
            let reason: String = body.trim().chars().take(200).collect();
            return Err(fail(format!("POST {url}: HTTP {status}: {reason}")));
        }
        let resource = location
            .and_then(|l| reqwest::Url::parse(&url).ok()?.join(&l).ok())
            .map(|u| u.to_string())
            .ok_or_else(|| fail(format!("POST {url}: 201 without a usable Location")))?;
        let upstream = self
            .engine
            .upstream_start(offer, &body, name.clone(), &origin.node, self.silence)
            .map_err(|e| fail(e.to_string()))?;
        self.started.fetch_add(1, Ordering::Relaxed);
        tracing::info!(stream = %name, origin = %origin.node, "relay started");
        Ok(Running { upstream, resource })
    }

    /// Ends what must end: pulls whose stream ended, whose origin is no
    /// longer the directory's owner (`owner` says who is), or that had no
    /// local viewer for `linger`.
    pub fn tend(&self, owner: impl Fn(&StreamName) -> Option<u64>) {
        let now = Instant::now();
        let mut finished = Vec::new();
        {
            let mut entries = self.entries.lock();
            entries.retain(|name, e| {
                let Some(result) = e.pull.get() else {
                    return true; // still being set up
                };
                let Ok(run) = result else {
                    return false;
                };
                let stream = run.upstream.stream();
                if stream.is_ended() || run.upstream.is_finished() {
                    finished.push(e.clone());
                    return false;
                }
                if owner(name) != Some(e.origin.epoch) {
                    tracing::info!(stream = %name, origin = %e.origin.node, "the origin no longer carries the stream; ending its relay");
                    run.upstream.close();
                    return true;
                }
                let mut idle = e.idle_since.lock();
                if stream.sink_count(SinkKind::Viewer) > 0 {
                    *idle = None;
                } else if now.saturating_duration_since(*idle.get_or_insert(now)) >= self.linger {
                    tracing::info!(stream = %name, "no viewer left; ending the relay");
                    run.upstream.close();
                }
                true
            });
        }
        for e in finished {
            self.finish(e);
        }
    }

    /// Ends every relay (shutdown).
    pub fn close_all(&self) {
        let all: Vec<Arc<Entry>> = self.entries.lock().drain().map(|(_, e)| e).collect();
        for e in all {
            self.finish(e);
        }
    }

    /// Closes `e`'s pull and DELETEs its session at the origin (in the
    /// background, best effort: the origin also ends it on the BYE).
    fn finish(&self, e: Arc<Entry>) {
        let Some(Ok(run)) = e.pull.get() else { return };
        run.upstream.close();
        let Ok(name) = StreamName::parse(run.upstream.stream().name().as_str()) else {
            return;
        };
        let req = self
            .http
            .delete(&run.resource)
            .bearer_auth(self.ticket(&name));
        tokio::spawn(async move {
            let _ = req.send().await;
        });
    }
}

/// The IP address of the host in `base` (resolving a name).
async fn origin_ip(base: &str) -> Option<std::net::IpAddr> {
    let url = reqwest::Url::parse(base).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    let port = url.port_or_known_default().unwrap_or(80);
    tokio::net::lookup_host((host, port))
        .await
        .ok()?
        .next()
        .map(|a| a.ip())
}
