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
use crate::rtc::upstream::{LayerPull, Upstream, UpstreamOffer};
use crate::stream::{LayerId, LiveStream, SinkKind};

/// The origin's path that answers relays (node-to-node, with a ticket).
pub const RELAY_PATH: &str = "/cluster/relay";
/// The header of the origin's answer to a relay that lists a simulcast
/// stream's layers (their rids, comma-separated, smallest first but for the
/// one the main pull carries, the top layer at the time, which comes last).
pub const LAYERS_HEADER: &str = "castgate-layers";
/// The most simulcast layers a relay pulls (as many as a publisher may send).
const MAX_LAYERS: usize = 3;
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
    /// Of a simulcast stream, the pulls of the layers besides the main one's
    /// (held: they end with the stream, or when dropped).
    _layer_pulls: Vec<LayerPull>,
    /// The session resources at the origin, one per pull (DELETEd at the end).
    resources: Vec<String>,
}

/// The origin's answer to one pull's offer.
struct Answered {
    sdp: String,
    /// The session resource at the origin.
    resource: String,
    /// The stream's simulcast layers (rids), the main pull's last; empty
    /// without simulcast.
    layers: Vec<String>,
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

    /// Pulls `name` from `origin`: one session for the audio and the top
    /// layer, and of a simulcast stream one more per other layer (a layer
    /// that cannot be pulled is left out, the others serve).
    async fn pull(&self, name: &StreamName, origin: &Claim) -> Result<Running, RelayError> {
        let fail = |reason: String| RelayError::Origin {
            node: origin.node.clone(),
            reason,
        };
        let base = origin.url.trim_end_matches('/');
        let server = origin_ip(base)
            .await
            .ok_or_else(|| fail(format!("cannot resolve the host of {base}")))?;
        let offer = self
            .engine
            .upstream_offer(server)
            .map_err(|e| fail(e.to_string()))?;
        let main = self.ask(origin, name, None, &offer).await.map_err(fail)?;
        let layers = main.layers;
        let top = layers.len().saturating_sub(1);
        let upstream = self
            .engine
            .upstream_start(
                offer,
                &main.sdp,
                name.clone(),
                &origin.node,
                self.silence,
                &layers,
            )
            .map_err(|e| fail(e.to_string()))?;
        let mut running = Running {
            upstream,
            _layer_pulls: Vec::new(),
            resources: vec![main.resource],
        };
        for (layer, rid) in layers.iter().enumerate().take(top) {
            match self
                .pull_layer(
                    &running.upstream,
                    origin,
                    name,
                    server,
                    rid,
                    layer as LayerId,
                )
                .await
            {
                Ok((pull, resource)) => {
                    running._layer_pulls.push(pull);
                    running.resources.push(resource);
                }
                Err(reason) => {
                    tracing::warn!(stream = %name, origin = %origin.node, rid, reason, "a simulcast layer could not be relayed; the others are");
                }
            }
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        tracing::info!(stream = %name, origin = %origin.node, layers = layers.len().max(1), "relay started");
        Ok(running)
    }

    /// Pulls simulcast layer `layer` (rid `rid`) into `upstream`'s stream.
    async fn pull_layer(
        &self,
        upstream: &Upstream,
        origin: &Claim,
        name: &StreamName,
        server: std::net::IpAddr,
        rid: &str,
        layer: LayerId,
    ) -> Result<(LayerPull, String), String> {
        let offer = self
            .engine
            .upstream_layer_offer(server)
            .map_err(|e| e.to_string())?;
        let answered = self.ask(origin, name, Some(rid), &offer).await?;
        match self
            .engine
            .upstream_add_layer(upstream, offer, &answered.sdp, layer, self.silence)
        {
            Ok(pull) => Ok((pull, answered.resource)),
            Err(e) => {
                self.delete(&answered.resource, name);
                Err(e.to_string())
            }
        }
    }

    /// POSTs `offer` to the origin's relay path (for the simulcast layer
    /// `rid`, or the top one); its answer.
    async fn ask(
        &self,
        origin: &Claim,
        name: &StreamName,
        rid: Option<&str>,
        offer: &UpstreamOffer,
    ) -> Result<Answered, String> {
        let base = origin.url.trim_end_matches('/');
        let mut url = format!("{base}{RELAY_PATH}/{}", name.as_str());
        if let Some(rid) = rid {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("layer", rid);
            url = format!("{url}?{}", query.finish());
        }
        let resp = self
            .http
            .post(&url)
            .bearer_auth(self.ticket(name))
            .header(reqwest::header::CONTENT_TYPE, "application/sdp")
            .body(offer.sdp().to_string())
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status();
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let location = header(reqwest::header::LOCATION.as_str());
        let layers = header(LAYERS_HEADER).map_or_else(Vec::new, |v| rids(&v));
        let body = resp.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::CREATED {
            let reason: String = body.trim().chars().take(200).collect();
            return Err(format!("POST {url}: HTTP {status}: {reason}"));
        }
        let resource = location
            .and_then(|l| reqwest::Url::parse(&url).ok()?.join(&l).ok())
            .map(|u| u.to_string())
            .ok_or_else(|| format!("POST {url}: 201 without a usable Location"))?;
        Ok(Answered {
            sdp: body,
            resource,
            layers,
        })
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

    /// Closes `e`'s pulls and DELETEs their sessions at the origin (in the
    /// background, best effort: the origin also ends them on the BYE).
    fn finish(&self, e: Arc<Entry>) {
        let Some(Ok(run)) = e.pull.get() else { return };
        run.upstream.close();
        let Ok(name) = StreamName::parse(run.upstream.stream().name().as_str()) else {
            return;
        };
        for resource in &run.resources {
            self.delete(resource, &name);
        }
    }

    /// DELETEs a pull's session `resource` at the origin, in the background.
    fn delete(&self, resource: &str, name: &StreamName) {
        let req = self.http.delete(resource).bearer_auth(self.ticket(name));
        tokio::spawn(async move {
            let _ = req.send().await;
        });
    }
}

/// The rids in a `Castgate-Layers` header: at most [`MAX_LAYERS`], each a
/// valid rid (RFC 8851: letters, digits, `-`, `_`); anything else makes it
/// a single-layer relay.
fn rids(header: &str) -> Vec<String> {
    let rids: Vec<String> = header.split(',').map(|r| r.trim().to_string()).collect();
    let valid = |r: &String| {
        !r.is_empty()
            && r.len() <= 32
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let unique = rids.iter().enumerate().all(|(i, r)| !rids[..i].contains(r));
    if !(2..=MAX_LAYERS).contains(&rids.len()) || !unique || !rids.iter().all(valid) {
        return Vec::new();
    }
    rids
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layers_header_names_two_or_three_distinct_rids() {
        assert_eq!(rids("l,m,h"), ["l", "m", "h"]);
        assert_eq!(rids(" q , f "), ["q", "f"]);
        for bad in [
            "", "h", "a,b,c,d", "a,,b", "a,a", "a,b c", "a,\u{e9}", "a;b",
        ] {
            assert!(rids(bad).is_empty(), "{bad:?}");
        }
    }
}
