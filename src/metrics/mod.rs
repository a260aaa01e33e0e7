//! `GET /metrics`: the gateway's figures in the Prometheus text format.
//!
//! Nothing is counted twice: at each scrape, [`GatewayCollector`] reads the
//! counters the parts already keep for the API (the hub's stream totals, the
//! engine's transport counters and sessions, the recorder's and restreamer's
//! figures, webhook deliveries). Only HTTP requests are counted here, by the
//! [`track`] middleware, labelled with the route *template* (axum's
//! [`MatchedPath`]), never the raw path, so label values stay bounded. Per-stream
//! series (labelled with the stream name) exist only with `metrics.per_stream`.
//!
//! Built on `prometheus-client` (the Prometheus project's Rust client): a
//! registry per [`Metrics`] value, so several gateways in one process (tests)
//! never share global state.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::events::webhook::WebhookStats;
use crate::record::Recorder;
use crate::restream::{Restreamer, State as TargetState};
use crate::rtc::Engine;
use crate::stream::{Hub, SinkKind};

/// The `Content-Type` of the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Labels of the HTTP request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

/// Request latency buckets, seconds.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// What the HTTP server loop (`http::serve`) counts: connections open,
/// refused over a cap, and closed for time.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections refused because `max_connections` were open.
    pub refused_total: AtomicU64,
    /// Connections refused because their address had `max_connections_per_client` open.
    pub refused_per_client: AtomicU64,
    /// Connections closed because a request head did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// Idle keep-alive connections closed.
    pub idle_closed: AtomicU64,
    /// Requests whose body did not arrive in time (answered 408).
    pub body_timeouts: AtomicU64,
}

/// The registry of one gateway and the metrics updated as requests happen.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<HttpLabels, Histogram, fn() -> Histogram>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry exporting `gateway`'s figures and HTTP request metrics.
    pub fn new(gateway: GatewayCollector) -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_seconds = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "castgate_http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        registry.register(
            "castgate_http_request_duration_seconds",
            "Time to answer an HTTP request (to the response head), by method, route template and status",
            http_seconds.clone(),
        );
        registry.register_collector(Box::new(gateway));
        Metrics {
            registry,
            http_requests,
            http_seconds,
        }
    }

    /// Counts one answered request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = HttpLabels {
            method: method.to_string(),
            route: route.to_string(),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_seconds.get_or_create(&labels).observe(seconds);
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Axum middleware: counts each request by method, route template and status.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // Clients can send any token as a method: keep the label bounded.
    let method = match *req.method() {
        http::Method::GET
        | http::Method::HEAD
        | http::Method::POST
        | http::Method::PUT
        | http::Method::PATCH
        | http::Method::DELETE
        | http::Method::OPTIONS => req.method().as_str(),
        _ => "other",
    }
    .to_string();
    // The template (`/whip/{stream}`), never the path: names are unbounded.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let resp = next.run(req).await;
    metrics.observe(
        &method,
        &route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// Reads the gateway's own counters at each scrape.
pub struct GatewayCollector {
    /// Live streams and their totals.
    pub hub: Arc<Hub>,
    /// Sessions and UDP transport.
    pub engine: Arc<Engine>,
    /// Recordings.
    pub recorder: Arc<Recorder>,
    /// Restream targets and HLS outputs.
    pub restreamer: Arc<Restreamer>,
    /// Webhook deliveries (zero until a webhook is configured, at start or
    /// by a reload).
    pub webhooks: Arc<WebhookStats>,
    /// HTTP connections: open, refused, closed for time limits.
    pub http: Arc<HttpStats>,
    /// Export per-stream series (labelled with the stream name).
    pub per_stream: bool,
    /// This node's membership of a cluster (`castgate_cluster_*` only then).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Pictures of live streams.
    pub snapshots: Arc<crate::stream::snapshot::Snapshots>,
}

impl fmt::Debug for GatewayCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayCollector").finish_non_exhaustive()
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<V>(e: &mut DescriptorEncoder, name: &str, help: &str, v: V) -> fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One metric with one label, a series per `(label value, value)`.
fn labelled(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    key: &str,
    series: &[(&str, f64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (label, v) in series {
        let labels = [(key, *label)];
        let fam = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v as u64).encode(fam)?,
            _ => ConstGauge::new(*v).encode(fam)?,
        }
    }
    Ok(())
}

impl prometheus_client::collector::Collector for GatewayCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), fmt::Error> {
        let e = &mut e;
        // Streams.
        let (totals, started) = self.hub.counters();
        let live = self.hub.streams();
        let infos: Vec<_> = live.iter().map(|s| s.info()).collect();
        gauge(e, "castgate_streams", "Live streams", live.len() as i64)?;
        counter(
            e,
            "castgate_streams_started",
            "Streams that went live",
            started,
        )?;
        let (publishers, viewers) = self.engine.role_counts();
        gauge(
            e,
            "castgate_publishers",
            "WHIP publisher sessions",
            publishers as i64,
        )?;
        gauge(
            e,
            "castgate_viewers",
            "WHEP viewer sessions",
            viewers as i64,
        )?;
        // A fold from +0.0: an empty float `sum()` is -0.0.
        let bps_in = infos
            .iter()
            .fold(0.0, |a, i| a + i.bitrate_in_kbps * 1000.0);
        let bps_out = infos
            .iter()
            .fold(0.0, |a, i| a + i.bitrate_out_kbps * 1000.0);
        gauge(
            e,
            "castgate_bitrate_in_bps",
            "Media bitrate received from publishers over the last second",
            bps_in,
        )?;
        gauge(
            e,
            "castgate_bitrate_out_bps",
            "Media bitrate sent to viewers over the last second",
            bps_out,
        )?;
        counter(
            e,
            "castgate_frames_in",
            "Frames received from publishers",
            totals.frames_in,
        )?;
        counter(
            e,
            "castgate_media_bytes_in",
            "Media payload bytes received from publishers",
            totals.bytes_in,
        )?;
        counter(
            e,
            "castgate_media_bytes_out",
            "Media payload bytes sent to viewers",
            totals.bytes_out,
        )?;
        counter(
            e,
            "castgate_keyframe_requests",
            "Keyframe requests made to publishers on behalf of sinks",
            totals.keyframe_requests,
        )?;
        counter(
            e,
            "castgate_layer_switches",
            "Sinks moved from one simulcast layer to another",
            totals.layer_switches,
        )?;
        let dropped: Vec<(&str, f64)> = SinkKind::ALL
            .iter()
            .map(|k| (k.name(), totals.dropped[k.index()] as f64))
            .collect();
        labelled(
            e,
            "castgate_frames_dropped",
            "Frames dropped because a sink fell behind, by sink kind",
            MetricType::Counter,
            "sink",
            &dropped,
        )?;

        // Transport.
        let c = self.engine.counters();
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            e,
            "castgate_rtc_sessions",
            "WebRTC sessions (publishers and viewers)",
            self.engine.session_count() as i64,
        )?;
        counter(
            e,
            "castgate_udp_datagrams_in",
            "Datagrams read from the media socket",
            ld(&c.datagrams_in),
        )?;
        counter(
            e,
            "castgate_udp_datagrams_out",
            "Datagrams sent on the media socket (packets forwarded included)",
            ld(&c.datagrams_out),
        )?;
        counter(
            e,
            "castgate_rtp_packets_in",
            "RTP packets received from publishers, retransmissions included (str0m statistics, every 2 s)",
            ld(&c.rtp_packets_in),
        )?;
        counter(
            e,
            "castgate_rtp_packets_out",
            "RTP packets forwarded to viewers, retransmissions included (str0m statistics, every 2 s)",
            ld(&c.rtp_packets_out),
        )?;
        counter(
            e,
            "castgate_rtp_nacks_sent",
            "NACKs sent to publishers (packets lost on the way in)",
            ld(&c.nacks_sent),
        )?;
        counter(
            e,
            "castgate_rtp_nacks_received",
            "NACKs received from viewers (packets lost on the way out, retransmitted from the send buffer)",
            ld(&c.nacks_received),
        )?;
        labelled(
            e,
            "castgate_udp_datagrams_dropped",
            "Datagrams not handled, by reason",
            MetricType::Counter,
            "reason",
            &[
                ("unrouted", ld(&c.unrouted) as f64),
                ("shard_full", ld(&c.shard_full_drops) as f64),
                ("refused", ld(&c.bad_datagrams) as f64),
                ("send_failed", ld(&c.send_drops) as f64),
                ("recv_error", ld(&c.recv_errors) as f64),
            ],
        )?;

        // ICE-TCP.
        let (t, open) = self.engine.tcp_stats();
        gauge(
            e,
            "castgate_ice_tcp_connections",
            "ICE-TCP connections open",
            open as i64,
        )?;
        counter(
            e,
            "castgate_ice_tcp_packets_in",
            "Packets read from ICE-TCP connections",
            ld(&t.packets_in),
        )?;
        counter(
            e,
            "castgate_ice_tcp_packets_out",
            "Packets queued to ICE-TCP connections",
            ld(&t.packets_out),
        )?;
        labelled(
            e,
            "castgate_ice_tcp_refused",
            "ICE-TCP connections refused or closed early, by reason",
            MetricType::Counter,
            "reason",
            &[
                ("full", ld(&t.refused_full) as f64),
                ("bad_input", ld(&t.closed_bad) as f64),
            ],
        )?;
        counter(
            e,
            "castgate_ice_tcp_send_drops",
            "Packets not sent over ICE-TCP: the connection's queue was full or it was gone",
            ld(&t.send_drops),
        )?;

        // Recordings.
        let r = self.recorder.stats();
        gauge(
            e,
            "castgate_recordings_active",
            "Recordings being written",
            self.recorder.active_count() as i64,
        )?;
        counter(
            e,
            "castgate_recordings_started",
            "Recording files opened",
            ld(&r.started),
        )?;
        counter(
            e,
            "castgate_recordings_finalized",
            "Recording files finished cleanly",
            ld(&r.finalized),
        )?;
        counter(
            e,
            "castgate_recordings_failed",
            "Recordings stopped by an error",
            ld(&r.failed),
        )?;
        counter(
            e,
            "castgate_recordings_interrupted",
            "Times a recording could not open its next file (low disk) and waited for room",
            ld(&r.interrupted),
        )?;
        counter(
            e,
            "castgate_recording_bytes_written",
            "Bytes of recording files finished (finalized or failed)",
            ld(&r.bytes_written),
        )?;
        let sn = self.snapshots.stats();
        counter(
            e,
            "castgate_snapshot_decodes",
            "Pictures of live streams decoded (GET /api/streams/{name}/snapshot.jpg)",
            ld(&sn.decodes),
        )?;
        counter(
            e,
            "castgate_snapshot_cached",
            "Snapshot requests answered with a picture already made",
            ld(&sn.cached),
        )?;
        counter(
            e,
            "castgate_snapshot_busy",
            "Snapshot requests refused (503) because every decoding place stayed taken",
            ld(&sn.busy),
        )?;
        counter(
            e,
            "castgate_recording_mp4_made",
            "MP4 copies of recordings made for downloads (a cached copy served again is not counted)",
            ld(&r.mp4_made),
        )?;
        if let Some(storage) = self.recorder.storage() {
            let s = storage.stats();
            counter(
                e,
                "castgate_storage_bytes_uploaded",
                "Bytes of recordings the object storage accepted",
                ld(&s.bytes_uploaded),
            )?;
            counter(
                e,
                "castgate_storage_recordings_stored",
                "Recordings uploaded and checked by their SHA-256",
                ld(&s.stored),
            )?;
            counter(
                e,
                "castgate_storage_upload_failures",
                "Upload attempts that failed (each is retried)",
                ld(&s.failures),
            )?;
            gauge(
                e,
                "castgate_storage_uploads_pending",
                "Finished recordings on this disk waiting to be stored",
                ld(&s.pending) as i64,
            )?;
            gauge(
                e,
                "castgate_storage_oldest_pending_seconds",
                "Seconds since the oldest recording waiting to be stored ended",
                ld(&s.oldest_pending_secs) as i64,
            )?;
        }

        // Restreams.
        let (states, hls) = self.restreamer.state_counts();
        let series: Vec<(&str, f64)> = TargetState::ALL
            .iter()
            .zip(states)
            .map(|(s, n)| (s.name(), n as f64))
            .collect();
        labelled(
            e,
            "castgate_restream_targets",
            "Restream targets by state (stopped ones are kept for a while)",
            MetricType::Gauge,
            "state",
            &series,
        )?;
        gauge(e, "castgate_hls_outputs", "HLS outputs running", hls as i64)?;

        // The cluster.
        if let Some(c) = &self.cluster {
            let k = c.counters();
            gauge(
                e,
                "castgate_cluster_nodes",
                "Nodes with a live record in the cluster's Redis (this one included), at the last heartbeat",
                c.nodes_seen() as i64,
            )?;
            gauge(
                e,
                "castgate_cluster_redis_up",
                "1 while the cluster's Redis answers, 0 while it cannot be reached",
                i64::from(c.is_reachable()),
            )?;
            counter(
                e,
                "castgate_cluster_redis_errors",
                "Redis requests that failed (timeouts, refused connections, errors)",
                ld(&k.redis_errors),
            )?;
            counter(
                e,
                "castgate_cluster_claims_lost",
                "Stream names another node took while this node carried them (the stream ended here)",
                ld(&k.claims_lost),
            )?;
            counter(
                e,
                "castgate_cluster_claims_reasserted",
                "Stream claims put back after they expired (Redis was out of reach)",
                ld(&k.claims_reasserted),
            )?;
            counter(
                e,
                "castgate_cluster_redirects",
                "WHEP viewers sent to the stream's origin node with a 307",
                ld(&k.redirects),
            )?;
            gauge(
                e,
                "castgate_cluster_relays",
                "Streams pulled from their origin node and served here now",
                c.relays_running() as i64,
            )?;
            counter(
                e,
                "castgate_cluster_relays_started",
                "Pulls started from origin nodes",
                c.relays_started(),
            )?;
            let up = self.engine.upstream_counters();
            counter(
                e,
                "castgate_cluster_upstream_datagrams",
                "Datagrams received from origin nodes by this node's relays",
                ld(&up.datagrams_in),
            )?;
            counter(
                e,
                "castgate_cluster_upstream_frames",
                "Frames received from origin nodes by this node's relays",
                ld(&up.frames_in),
            )?;
        }

        // Webhooks.
        let w = &self.webhooks;
        labelled(
            e,
            "castgate_webhook_events",
            "Webhook events by outcome: delivered, given_up (after the last attempt), dropped (the deliverer fell behind)",
            MetricType::Counter,
            "result",
            &[
                ("delivered", ld(&w.delivered) as f64),
                ("given_up", ld(&w.given_up) as f64),
                ("dropped", ld(&w.dropped) as f64),
            ],
        )?;
        counter(
            e,
            "castgate_webhook_failed_attempts",
            "Webhook attempts that failed (retried or not)",
            ld(&w.failed_attempts),
        )?;

        // HTTP connections.
        let h = &self.http;
        gauge(
            e,
            "castgate_http_connections",
            "HTTP connections open",
            h.open.load(Ordering::Relaxed) as i64,
        )?;
        labelled(
            e,
            "castgate_http_connections_refused",
            "HTTP connections refused by cap: total (http.max_connections), per_client (http.max_connections_per_client)",
            MetricType::Counter,
            "reason",
            &[
                ("total", ld(&h.refused_total) as f64),
                ("per_client", ld(&h.refused_per_client) as f64),
            ],
        )?;
        labelled(
            e,
            "castgate_http_timeouts",
            "HTTP connections closed or requests refused for time: header (no request head in time), idle (keep-alive), body (408)",
            MetricType::Counter,
            "kind",
            &[
                ("header", ld(&h.header_timeouts) as f64),
                ("idle", ld(&h.idle_closed) as f64),
                ("body", ld(&h.body_timeouts) as f64),
            ],
        )?;

        if self.per_stream {
            let by = |f: &dyn Fn(&crate::stream::StreamInfo) -> f64| -> Vec<(String, f64)> {
                infos.iter().map(|i| (i.name.clone(), f(i))).collect()
            };
            let per = [
                (
                    "castgate_stream_viewers",
                    "Viewers of a live stream",
                    by(&|i| i.viewers as f64),
                ),
                (
                    "castgate_stream_bitrate_in_bps",
                    "Bitrate received for a live stream",
                    by(&|i| i.bitrate_in_kbps * 1000.0),
                ),
                (
                    "castgate_stream_bitrate_out_bps",
                    "Bitrate sent for a live stream",
                    by(&|i| i.bitrate_out_kbps * 1000.0),
                ),
                (
                    "castgate_stream_frames_in",
                    "Frames received for a live stream since it started",
                    by(&|i| i.frames_in as f64),
                ),
            ];
            for (name, help, values) in per {
                let series: Vec<(&str, f64)> =
                    values.iter().map(|(n, v)| (n.as_str(), *v)).collect();
                labelled(e, name, help, MetricType::Gauge, "stream", &series)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_series_render_in_prometheus_text() {
        #[derive(Debug)]
        struct Fixed;
        impl prometheus_client::collector::Collector for Fixed {
            fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
                counter(&mut e, "t_frames", "Frames", 7)?;
                labelled(
                    &mut e,
                    "t_dropped",
                    "Dropped",
                    MetricType::Counter,
                    "sink",
                    &[("viewer", 1.0), ("recorder", 2.0)],
                )
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("# TYPE t_frames_total counter\nt_frames_total 7\n"),
            "{out}"
        );
        assert!(
            out.contains("t_dropped_total{sink=\"viewer\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("t_dropped_total{sink=\"recorder\"} 2\n"),
            "{out}"
        );
    }
}
