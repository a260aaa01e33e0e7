//! Starts and stops a whole castgate: hub, WebRTC engine and HTTP server.
//! Tests use it to run a real gateway in-process on loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::config::{Config, ConfigError, live};
use crate::events::webhook::{WebhookChanges, WebhookSettings, Webhooks};
use crate::events::{Event, Events};
use crate::http::auth::Gate;
use crate::http::{self, AppState};
use crate::metrics::{GatewayCollector, Metrics};
use crate::outbound::OutboundPolicy;
use crate::record::{Recorder, RetentionScope};
use crate::restream::Restreamer;
use crate::rtc::Engine;
use crate::stream::{Hub, StreamPolicy};

mod check;
mod follow;

pub use check::{Checked, check, outbound_policy};

/// Why a reload was refused (the config in force stays as it was, whole).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config cannot be put in force: a value, a key file, the
    /// callback, a target URL (names the key).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The check itself could not run.
    #[error("the new configuration could not be checked")]
    Check,
}

/// What a reload changed: dotted keys only, never values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Keys that changed and are in force now.
    pub applied: Vec<String>,
    /// Keys that changed but keep their old value until a restart.
    pub needs_restart: Vec<String>,
    /// Webhook deliverers started, stopped and kept.
    pub webhooks: WebhookChanges,
}

/// A running gateway.
pub struct Server {
    /// The config in force (start-up values for what needs a restart).
    config: parking_lot::RwLock<Arc<Config>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    gate: Arc<Gate>,
    http_addr: SocketAddr,
    engine: Arc<Engine>,
    hub: Arc<Hub>,
    recorder: Arc<Recorder>,
    /// Export jobs (stopped before the recorder at shutdown).
    exports: Arc<crate::record::export::Exports>,
    restreamer: Arc<Restreamer>,
    retention: JoinHandle<()>,
    /// The uploader and the bucket listing (`storage.kind = "s3"`).
    storage_tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    http_task: JoinHandle<std::io::Result<()>>,
    events: Events,
    webhooks: parking_lot::Mutex<Webhooks>,
    metrics: Option<Arc<Metrics>>,
    grace: std::time::Duration,
    /// Where castgate may connect for a request (fixed at start-up).
    outbound: Arc<OutboundPolicy>,
    /// This node's membership of a cluster.
    cluster: Option<Arc<Cluster>>,
    /// Keeps the local streams' API targets in the cluster (with a cluster).
    follow: Option<JoinHandle<()>>,
}

impl Server {
    /// Makes ready what `config` names ([`check`]: certificates, keys,
    /// callback, target URLs; its values are the caller's to validate, as
    /// `Config::load` does), binds the HTTP and UDP ports and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let outbound = outbound_policy(&config);
        let (config, checked) = {
            let outbound = outbound.clone();
            tokio::task::spawn_blocking(move || {
                let checked = check(&config, &outbound)?;
                Ok::<_, ConfigError>((config, checked))
            })
            .await??
        };
        Server::start_checked(config, checked, outbound).await
    }

    /// Starts serving a config that [`check`] made ready with `outbound`.
    pub async fn start_checked(
        config: Config,
        checked: Checked,
        outbound: Arc<OutboundPolicy>,
    ) -> anyhow::Result<Server> {
        crate::ffmpeg_log::install();
        // rustls is built with two crypto providers (ring for our TLS and
        // clients, aws-lc-rs for the object storage client): a process
        // default keeps any `builder()` without a provider from failing.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = Arc::new(config);
        let events = Events::new(config.events.buffer);
        // Webhooks subscribe before anything can happen.
        let webhooks = Webhooks::start(&events, webhook_settings(&config), outbound.clone());
        let hub = Arc::new(Hub::with_events(
            StreamPolicy {
                viewer_start: config.keyframes.viewer_start,
                gop_cache_bytes: config.keyframes.gop_cache_bytes,
            },
            events.clone(),
        ));
        let recorder = Arc::new(Recorder::new(config.record.clone()).with_context(|| {
            format!(
                "cannot create the recordings folder {}",
                config.record.dir.display()
            )
        })?);
        // Files a crash left unfinished are put right before anything new
        // is recorded next to them; then the catalog is read, once.
        let r = recorder.clone();
        let repaired = tokio::task::spawn_blocking(move || r.load_catalog()).await?;
        if !repaired.is_empty() {
            tracing::info!(
                count = repaired.len(),
                "repaired recordings left by a crash"
            );
        }
        if config.record.enabled {
            hub.add_observer(recorder.clone());
        }
        let mut storage_tasks = Vec::new();
        if let Some(storage) = &checked.storage {
            tracing::info!(bucket = ?storage.config().bucket, prefix = %storage.prefix(), "finished recordings go to object storage");
            recorder.attach_storage(storage.clone());
            storage_tasks.push(tokio::spawn(crate::record::storage::upload::run(
                recorder.clone(),
                storage.clone(),
                events.clone(),
            )));
            storage_tasks.push(tokio::spawn(crate::record::storage::listing::run(
                recorder.clone(),
                storage.clone(),
            )));
        }
        let restreamer = Arc::new(Restreamer::new(config.restream.clone(), outbound.clone()));
        hub.add_observer(restreamer.clone());
        let snapshots = Arc::new(crate::stream::snapshot::Snapshots::new(
            config.snapshots.clone(),
        ));
        let exports = crate::record::export::Exports::new(
            recorder.clone(),
            events.clone(),
            config.record.export_max_concurrent,
        );

        let engine = Arc::new(Engine::start(config.clone(), hub.clone()).await?);
        let listener = http::serve::listen(config.http.listen)
            .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let cluster = if config.cluster.enabled() {
            let c = Cluster::start(&config, hub.clone(), engine.clone()).await?;
            events.set_node(c.node_id());
            Some(c)
        } else {
            None
        };
        let retention = tokio::spawn(retention_loop(
            recorder.clone(),
            cluster.clone().filter(|_| checked.storage.is_some()),
        ));
        let http_stats = Arc::new(crate::metrics::HttpStats::default());
        let metrics = config.metrics.enabled.then(|| {
            Arc::new(Metrics::new(GatewayCollector {
                hub: hub.clone(),
                engine: engine.clone(),
                recorder: recorder.clone(),
                restreamer: restreamer.clone(),
                // Always: webhooks may come with a later reload.
                webhooks: webhooks.stats().clone(),
                http: http_stats.clone(),
                per_stream: config.metrics.per_stream,
                cluster: cluster.clone(),
                snapshots: snapshots.clone(),
            }))
        });
        let Checked { tls, gate, .. } = checked;
        let gate = Arc::new(Gate::from_rules(gate));
        if let Some(c) = &cluster {
            gate.accept_cluster_tickets(c.ticket_key().clone());
        }
        let app = http::router(AppState {
            config: config.clone(),
            hub: hub.clone(),
            engine: engine.clone(),
            recorder: recorder.clone(),
            restreamer: restreamer.clone(),
            metrics: metrics.clone(),
            gate: gate.clone(),
            sse_clients: Arc::new(tokio::sync::Semaphore::new(config.events.max_sse_clients)),
            cluster: cluster.clone(),
            exports: exports.clone(),
            snapshots: snapshots.clone(),
        });
        let (stop, mut stop_rx) = watch::channel(false);
        let follow = cluster.as_ref().map(|c| {
            follow::start(
                c.clone(),
                hub.clone(),
                restreamer.clone(),
                recorder.clone(),
                stop.subscribe(),
            )
        });
        let http_task = tokio::spawn(http::serve::serve(
            listener,
            tls,
            app,
            http::serve::Limits::from_config(&config.http),
            http_stats,
            async move {
                let _ = stop_rx.changed().await;
            },
        ));
        tracing::info!(http = %http_addr, udp = %engine.local_addr(), "castgate is serving");
        // What is in force: the addresses actually bound (a port 0 was picked).
        let mut in_force = (*config).clone();
        in_force.http.listen = http_addr;
        in_force.rtc.udp_listen = engine.local_addr();
        Ok(Server {
            config: parking_lot::RwLock::new(Arc::new(in_force)),
            reloading: tokio::sync::Mutex::new(()),
            gate,
            http_addr,
            engine,
            hub,
            recorder,
            restreamer,
            exports,
            retention,
            storage_tasks,
            stop,
            http_task,
            events,
            webhooks: parking_lot::Mutex::new(webhooks),
            metrics,
            grace: std::time::Duration::from_secs_f64(config.shutdown.timeout_secs),
            outbound,
            cluster,
            follow,
        })
    }

    /// The config in force: what a reload applied live, start-up values for
    /// the rest (with the addresses actually bound).
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    /// Reloads the configuration (what SIGHUP does). `new` is checked whole
    /// first ([`check`]: values, key files, callback, target URLs); if anything is wrong, nothing
    /// changes and the error names the key. Otherwise what can change live
    /// is put in force: access control (requests already being decided
    /// finish with the old rules), webhooks (unchanged ones keep running,
    /// removed ones deliver what they had queued, then stop), and the
    /// recording and restream rules for streams that start from now on
    /// (running recordings and targets keep what they started with). Keys
    /// that need a restart keep their old value and are named in the report
    /// and a warning. A `config_reloaded` or `config_rejected` event follows.
    pub async fn reload(&self, new: Config) -> Result<ReloadReport, ReloadError> {
        let _one = self.reloading.lock().await;
        // Checking reads files (TLS, JWT keys): not on the async workers.
        let outbound = self.outbound.clone();
        let checked = tokio::task::spawn_blocking(move || {
            new.validate()?;
            let rules = check(&new, &outbound)?.gate;
            Ok::<_, ReloadError>((new, rules))
        })
        .await
        .map_err(|_| ReloadError::Check)
        .and_then(|r| r);
        let (new, rules) = match checked {
            Ok(c) => c,
            Err(e) => {
                self.reload_rejected(&e);
                return Err(e);
            }
        };
        let old = self.config();
        let merged = Arc::new(live::take_live(&old, &new));
        let mut report = ReloadReport {
            applied: live::changed_keys(&old, &merged),
            needs_restart: live::changed_keys(&merged, &new),
            ..ReloadReport::default()
        };
        if report.applied.iter().any(|k| k.starts_with("auth.")) {
            self.gate.replace(rules);
        }
        if report.applied.iter().any(|k| k.starts_with("events.")) {
            report.webhooks = self
                .webhooks
                .lock()
                .reload(&self.events, webhook_settings(&merged));
        }
        if report.applied.iter().any(|k| k.starts_with("record.")) {
            self.recorder.set_config(merged.record.clone());
        }
        if report.applied.iter().any(|k| k.starts_with("restream.")) {
            self.restreamer.set_config(merged.restream.clone());
        }
        *self.config.write() = merged;
        for key in &report.needs_restart {
            tracing::warn!(key = %key, "config reload: this key changed but needs a restart; keeping the old value");
        }
        tracing::info!(
            applied = ?report.applied,
            needs_restart = ?report.needs_restart,
            webhooks_started = report.webhooks.started,
            webhooks_stopped = report.webhooks.stopped,
            "config reloaded"
        );
        self.events.emit(Event::ConfigReloaded {
            applied: report.applied.clone(),
            needs_restart: report.needs_restart.clone(),
        });
        Ok(report)
    }

    /// Logs and announces (`config_rejected`) a reload that could not even
    /// load its config (unreadable or malformed file); nothing changes.
    pub fn reload_rejected(&self, error: &dyn std::fmt::Display) {
        tracing::error!(error = %error, "config reload rejected; the configuration in force is unchanged");
        self.events.emit(Event::ConfigRejected {
            error: error.to_string(),
        });
    }

    /// The event bus (what `/api/events` and webhooks carry).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The Prometheus registry, if metrics are on.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Where HTTP is served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The WebRTC engine (for counters in tests and benchmarks).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The stream hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The recorder.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// This node's membership of a cluster, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// The restream manager.
    pub fn restreamer(&self) -> &Arc<Restreamer> {
        &self.restreamer
    }

    /// Stops cleanly: refuses new sessions, ends every session (publishers
    /// and viewers get RTCP BYE and DTLS close_notify), finalizes every
    /// recording, ends every restream, closes event streams, stops HTTP, and
    /// delivers the webhooks still pending (within `shutdown.timeout_secs`).
    /// Callers bound the whole (see `main`).
    pub async fn shutdown(self) {
        let started = std::time::Instant::now();
        let (publishers, viewers) = self.engine.role_counts();
        tracing::info!(publishers, viewers, "shutdown: closing sessions");
        self.retention.abort();
        // An upload cut here resumes from its journal at the next start.
        for t in &self.storage_tasks {
            t.abort();
        }
        self.engine.shutdown().await;
        if let Some(f) = self.follow {
            // Targets that outlive their stream stay kept for a reconnect elsewhere.
            f.abort();
        }
        if let Some(c) = &self.cluster {
            // The streams ended with the sessions: their names are free.
            c.shutdown().await;
        }
        let ex = self.exports.clone();
        let _ = tokio::task::spawn_blocking(move || ex.shutdown()).await;
        let recordings = self.recorder.active_count();
        tracing::info!(recordings, "shutdown: finalizing recordings");
        let r = self.recorder.clone();
        let _ = tokio::task::spawn_blocking(move || r.shutdown()).await;
        tracing::info!("shutdown: stopping restreams");
        let rs = self.restreamer.clone();
        let _ = tokio::task::spawn_blocking(move || rs.shutdown()).await;
        self.events.close();
        let _ = self.stop.send(true);
        match self.http_task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "http server error at shutdown"),
            Err(e) => tracing::warn!(error = %e, "http task failed"),
            Ok(Ok(())) => {}
        }
        self.webhooks.into_inner().shutdown(self.grace).await;
        tracing::info!(
            secs = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            "shutdown complete"
        );
    }
}

/// The lease a node holds while it runs retention in a bucket the cluster
/// shares (one node at a time deletes there).
const BUCKET_RETENTION_LEASE: &str = "bucket-retention";

/// Runs retention now and every `record.retention_check_secs` (read each
/// time: a reload changes it). With a bucket the cluster shares (`shared`),
/// only the node holding the lease runs it over the bucket; the others over
/// their own disks' copies.
async fn retention_loop(recorder: Arc<Recorder>, shared: Option<Arc<Cluster>>) {
    loop {
        let every = std::time::Duration::from_secs_f64(recorder.config().retention_check_secs);
        let mine = match &shared {
            Some(c) => {
                c.lease(
                    BUCKET_RETENTION_LEASE,
                    (every * 3).max(std::time::Duration::from_secs(180)),
                )
                .await
            }
            None => true,
        };
        // The others still keep their own disks (copies kept with
        // `storage.keep_local`).
        let scope = if mine {
            RetentionScope::Everything
        } else {
            RetentionScope::LocalCopies
        };
        let r = recorder.clone();
        let _ = tokio::task::spawn_blocking(move || r.enforce_retention_in(scope)).await;
        tokio::time::sleep(every).await;
    }
}

fn webhook_settings(config: &Config) -> Vec<WebhookSettings> {
    let e = &config.events;
    e.webhooks
        .iter()
        .map(|w| WebhookSettings {
            url: w.url.clone(),
            secret: w.secret.clone(),
            events: w.events.clone(),
            timeout: std::time::Duration::from_secs_f64(e.webhook_timeout_secs),
            max_attempts: e.webhook_max_attempts,
            backoff_min: std::time::Duration::from_secs_f64(e.webhook_backoff_min_secs),
            backoff_max: std::time::Duration::from_secs_f64(e.webhook_backoff_max_secs),
        })
        .collect()
}
