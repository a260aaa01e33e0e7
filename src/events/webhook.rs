//! Webhooks: every event, as JSON, POSTed to each configured URL, signed with
//! HMAC-SHA256, retried with bounded exponential backoff.
//!
//! One task per URL, owned by [`Webhooks`], reads its own bounded view of the
//! event bus and delivers in order. Media never waits for it: a receiver that
//! is down makes that task fall behind, and once its view of the bus is full
//! the oldest events are dropped, counted and logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::{Envelope, Events};
use crate::outbound::{OutboundError, OutboundPolicy};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body with the secret>`.
pub const SIGNATURE_HEADER: &str = "x-castgate-signature";
/// Header carrying the event's `type`.
pub const EVENT_HEADER: &str = "x-castgate-event";
/// Header carrying the event's sequence number (the same on every retry).
pub const DELIVERY_HEADER: &str = "x-castgate-delivery";

/// One receiver of webhooks and how to deliver to it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// HMAC-SHA256 key of the signature header; no header without one.
    pub secret: Option<String>,
    /// Event types to deliver (`stream_started`, …); empty = all.
    pub events: Vec<String>,
    /// Time allowed for one attempt (connect + answer).
    pub timeout: Duration,
    /// Attempts per event before it is given up.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles per failure …
    pub backoff_min: Duration,
    /// … up to this.
    pub backoff_max: Duration,
}

/// Delivery figures of all webhooks, for metrics.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events a receiver accepted (2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed (error, timeout, non-2xx), retried or not.
    pub failed_attempts: AtomicU64,
    /// Events given up after the last attempt or a permanent refusal.
    pub given_up: AtomicU64,
    /// Events lost because a deliverer fell too far behind the bus.
    pub dropped: AtomicU64,
}

/// The running webhook deliverers: one task per receiver, each with its own
/// stop signal, so a reload can stop one and start another while the rest
/// keep delivering.
pub struct Webhooks {
    running: Vec<Running>,
    /// Deliverers a reload removed: finishing what they had queued.
    retiring: Vec<JoinHandle<()>>,
    stats: Arc<WebhookStats>,
    /// Where receivers may be (no internal address unless allowed).
    outbound: Arc<OutboundPolicy>,
}

struct Running {
    settings: WebhookSettings,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("tasks", &self.running.len())
            .finish()
    }
}

/// What [`Webhooks::reload`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookChanges {
    /// Deliverers started.
    pub started: usize,
    /// Deliverers stopped (after delivering what they had queued).
    pub stopped: usize,
    /// Deliverers left running as they were.
    pub kept: usize,
}

/// `sha256=<hex>`: the signature header's value for `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The origin of a URL (`https://host:port`), the only part of it logged.
fn origin(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "<invalid url>".into())
}

impl Webhooks {
    /// Starts one deliverer per receiver, each subscribed to `events` now;
    /// deliveries go only where `outbound` allows (and follow no redirect).
    pub fn start(
        events: &Events,
        hooks: Vec<WebhookSettings>,
        outbound: Arc<OutboundPolicy>,
    ) -> Webhooks {
        let mut w = Webhooks {
            running: Vec::new(),
            retiring: Vec::new(),
            stats: Arc::new(WebhookStats::default()),
            outbound,
        };
        for hook in hooks {
            w.spawn(events, hook);
        }
        w
    }

    fn spawn(&mut self, events: &Events, hook: WebhookSettings) {
        let client = match self
            .outbound
            .http_client()
            .timeout(hook.timeout)
            .user_agent(concat!("castgate/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(url = %origin(&hook.url), error = %e, "webhook not started");
                return;
            }
        };
        let (stop, stop_rx) = watch::channel(false);
        let d = Deliverer {
            client,
            hook: hook.clone(),
            stats: self.stats.clone(),
            outbound: self.outbound.clone(),
        };
        let task = tokio::spawn(d.run(events.subscribe(), stop_rx));
        self.running.push(Running {
            settings: hook,
            stop,
            task,
        });
    }

    /// Makes the running deliverers match `hooks`: a receiver whose settings
    /// did not change keeps its deliverer (and its queue: nothing is lost),
    /// a removed or changed one is stopped after delivering what it already
    /// had queued, a new one starts with the events emitted from now on.
    pub fn reload(&mut self, events: &Events, hooks: Vec<WebhookSettings>) -> WebhookChanges {
        self.retiring.retain(|t| !t.is_finished());
        let mut changes = WebhookChanges::default();
        let mut keep = Vec::new();
        for r in std::mem::take(&mut self.running) {
            if hooks.contains(&r.settings)
                && !keep.iter().any(|k: &Running| k.settings == r.settings)
            {
                keep.push(r);
                changes.kept += 1;
            } else {
                tracing::info!(url = %origin(&r.settings.url), "webhook removed by reload");
                let _ = r.stop.send(true);
                self.retiring.push(r.task);
                changes.stopped += 1;
            }
        }
        self.running = keep;
        for hook in hooks {
            if !self.running.iter().any(|r| r.settings == hook) {
                tracing::info!(url = %origin(&hook.url), "webhook added by reload");
                self.spawn(events, hook);
                changes.started += 1;
            }
        }
        changes
    }

    /// Deliverers running now.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no deliverer runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Delivery figures.
    pub fn stats(&self) -> &Arc<WebhookStats> {
        &self.stats
    }

    /// Delivers what is already queued (bounded by `grace`), then stops every
    /// deliverer.
    pub async fn shutdown(self, grace: Duration) {
        for r in &self.running {
            let _ = r.stop.send(true);
        }
        let deadline = tokio::time::Instant::now() + grace;
        let tasks = self.running.into_iter().map(|r| r.task);
        for mut t in tasks.chain(self.retiring) {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
                tracing::warn!("webhook deliverer stopped before its queue was empty");
            }
        }
    }
}

struct Deliverer {
    client: reqwest::Client,
    hook: WebhookSettings,
    stats: Arc<WebhookStats>,
    outbound: Arc<OutboundPolicy>,
}

impl Deliverer {
    async fn run(
        self,
        mut rx: broadcast::Receiver<Arc<Envelope>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                r = rx.recv() => r,
            };
            if !self.take(next).await {
                return;
            }
        }
        // Stopping: deliver what was emitted before the stop, then end.
        loop {
            let next = match rx.try_recv() {
                Ok(e) => Ok(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Err(broadcast::error::RecvError::Lagged(n))
                }
                Err(_) => return,
            };
            if !self.take(next).await {
                return;
            }
        }
    }

    /// Handles one item from the bus; false when the bus is gone.
    async fn take(&self, next: Result<Arc<Envelope>, broadcast::error::RecvError>) -> bool {
        match next {
            Ok(env) => {
                if self.hook.events.is_empty()
                    || self.hook.events.iter().any(|e| e == env.event.kind())
                {
                    self.deliver(&env).await;
                }
                true
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(url = %origin(&self.hook.url), dropped = n,
                    "webhook receiver too slow: events dropped");
                true
            }
            Err(broadcast::error::RecvError::Closed) => false,
        }
    }

    async fn deliver(&self, env: &Envelope) {
        let body = match serde_json::to_vec(env) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "webhook body not serializable");
                return;
            }
        };
        let signature = self.hook.secret.as_ref().map(|s| sign(s.as_bytes(), &body));
        let mut backoff = self.hook.backoff_min;
        let attempts = self.hook.max_attempts.max(1);
        for attempt in 1..=attempts {
            let mut req = self
                .client
                .post(&self.hook.url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(EVENT_HEADER, env.event.kind())
                .header(DELIVERY_HEADER, env.seq.to_string())
                .body(body.clone());
            if let Some(sig) = &signature {
                req = req.header(SIGNATURE_HEADER, sig);
            }
            // An address in the URL is checked here (the client's resolver
            // checks names); an internal one is refused for good.
            let sent = match self.outbound.check_url(&self.hook.url) {
                Ok(()) => req.send().await.map_err(|e| match refused_address(&e) {
                    Some(refusal) => (false, refusal.to_string()),
                    // Without the URL: it may carry credentials.
                    None => (true, e.without_url().to_string()),
                }),
                Err(refusal) => Err((false, refusal.to_string())),
            };
            let (retry, why) = match sent {
                Ok(resp) if resp.status().is_success() => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(url = %origin(&self.hook.url), event = env.event.kind(),
                        seq = env.seq, attempt, "webhook delivered");
                    return;
                }
                Ok(resp) => {
                    let s = resp.status();
                    let retry = s.is_server_error()
                        || s == http::StatusCode::TOO_MANY_REQUESTS
                        || s == http::StatusCode::REQUEST_TIMEOUT;
                    (retry, format!("status {s}"))
                }
                Err(failure) => failure,
            };
            self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            if !retry || attempt == attempts {
                self.stats.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %origin(&self.hook.url), event = env.event.kind(),
                    seq = env.seq, attempt, error = %why, "webhook given up");
                return;
            }
            tracing::info!(url = %origin(&self.hook.url), event = env.event.kind(),
                seq = env.seq, attempt, error = %why,
                retry_in_secs = backoff.as_secs_f64(), "webhook failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.hook.backoff_max);
        }
    }
}

/// The outbound refusal behind a failed request, if that is why it failed
/// (the resolver refused an internal address).
pub fn refused_address(e: &reqwest::Error) -> Option<&OutboundError> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(refusal) = s.downcast_ref::<OutboundError>() {
            return Some(refusal);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_the_origin_of_a_url_is_logged() {
        assert_eq!(
            origin("https://user:pw@hooks.example.com:8443/in?token=abc"),
            "https://hooks.example.com:8443"
        );
    }
}
