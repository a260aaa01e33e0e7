//! Typed configuration: defaults, then an optional TOML file, then `CASTGATE_*`
//! environment variables, then command-line flags (each later source wins).
//!
//! Every option has a working default for localhost, so `castgate serve` needs
//! no file at all. [`Config::validate`] turns a bad value into a
//! [`ConfigError`] that names the key and the reason; `main` prints it on one
//! line and exits with code 2.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod auth;
pub mod live;
pub use auth::{Access, AccessRule, AuthConfig, MIN_JWT_SECRET, Role};

/// A configuration value that cannot be used, with the key it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TOML file is malformed or has an unknown key or wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted key, as in the TOML file (e.g. `rtc.udp_listen`).
        key: &'static str,
        /// Why the value was refused.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// The whole configuration of a castgate process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP server (WHIP, WHEP, API).
    pub http: HttpConfig,
    /// WebRTC media transport.
    pub rtc: RtcConfig,
    /// Who may publish, view and administer which streams.
    pub auth: AuthConfig,
    /// Codecs offered and their preference order.
    pub codecs: CodecConfig,
    /// Publishing (WHIP) policy.
    pub whip: WhipConfig,
    /// Viewing (WHEP) policy.
    pub whep: WhepConfig,
    /// When and how keyframes are asked for.
    pub keyframes: KeyframeConfig,
    /// Recording to WebM / Matroska.
    pub record: RecordConfig,
    /// Pushing streams to RTMP/RTMPS platforms.
    pub restream: RestreamConfig,
    /// Log output format.
    pub log: LogConfig,
    /// Prometheus metrics at `/metrics`.
    pub metrics: MetricsConfig,
    /// Server-sent events and webhooks.
    pub events: EventsConfig,
    /// Stopping on SIGTERM/SIGINT.
    pub shutdown: ShutdownConfig,
    /// Limits against abuse.
    pub limits: LimitsConfig,
    /// Where castgate may connect for a request (restream targets from the
    /// API, webhooks, the access callback).
    pub outbound: OutboundConfig,
}

/// An IP network in CIDR form (`10.0.0.0/8`, `fd00::/8`) or one address
/// (`127.0.0.1`, read as `/32`). Written and read as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Network(pub ipnet::IpNet);

impl Network {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as
    /// the IPv4 address it is).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&crate::outbound::canonical(ip))
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let s = s.trim();
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(n) => n,
            Err(_) => s
                .parse::<IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| format!("{s:?} is not a network such as 10.0.0.0/8 or an address"))?,
        };
        Ok(Network(net.trunc()))
    }
}

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(s: String) -> Result<Network, String> {
        s.parse()
    }
}

impl From<Network> for String {
    fn from(n: Network) -> String {
        n.0.to_string()
    }
}

/// Whether `ip` is in any of `networks`.
pub fn in_networks(networks: &[Network], ip: IpAddr) -> bool {
    networks.iter().any(|n| n.contains(ip))
}

/// Outbound connections made for a request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Internal networks (loopback, private, link-local, …) that restream
    /// targets added through the API, webhooks and the access callback may
    /// connect to anyway, e.g. the network of a compose file's own RTMP
    /// server. Public addresses need no entry.
    pub allow_networks: Vec<Network>,
}

/// Limits against abuse; 0 means no limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// WHIP + WHEP sessions one client address may hold at once.
    pub max_sessions_per_client: usize,
    /// Viewers (WHEP sessions) of one stream.
    pub max_viewers_per_stream: usize,
    /// Video bitrate a publisher may send (kbit/s): announced in the WHIP
    /// answer (`b=AS`, which browsers obey), and a publisher that sends more
    /// than 1.5 times it for 5 s is ended.
    pub max_publish_kbps: u32,
    /// Largest picture a publisher may send (either orientation); a larger
    /// keyframe ends the publisher. Both width and height must be set.
    pub max_publish_width: u32,
    /// See `max_publish_width`.
    pub max_publish_height: u32,
}

/// A restream target declared in the config: started whenever a stream whose
/// name matches goes live, stopped when it ends.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StandingTarget {
    /// Stream name patterns (`*` and `?` wildcards) this target applies to.
    pub streams: Vec<String>,
    /// `rtmp://host/app/KEY` or `rtmps://…` (the key is a secret: never logged).
    pub url: String,
    /// Free-form label shown in the API.
    pub label: Option<String>,
}

/// Restreaming settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestreamConfig {
    /// Allow restreaming at all (standing targets and the API).
    pub enabled: bool,
    /// Standing targets per stream-name pattern.
    pub targets: Vec<StandingTarget>,
    /// Hosts targets may point at (`*` and `?` wildcards, e.g.
    /// `*.rtmp.youtube.com`); empty allows any host. Set it when untrusted
    /// users can add targets, so a URL cannot reach internal services.
    pub allowed_hosts: Vec<String>,
    /// AAC bitrate (bits/s) of the Opus → AAC transcode.
    pub audio_bitrate: u32,
    /// H.264 bitrate (bits/s) when VP8/VP9/AV1 video is transcoded (libx264).
    pub video_bitrate: u32,
    /// FFmpeg H.264 encoder for transcoded video (`libx264`; e.g.
    /// `h264_vaapi` or `libopenh264` where the system FFmpeg has them).
    pub video_encoder: String,
    /// Largest width of transcoded video; bigger pictures are scaled down
    /// (aspect kept).
    pub max_width: u32,
    /// Largest height of transcoded video.
    pub max_height: u32,
    /// Seconds a network read/write may stall before the connection is
    /// dropped and retried (FFmpeg `rw_timeout`).
    pub rw_timeout_secs: f64,
    /// First retry delay after a failure (seconds); doubles on each failure.
    pub backoff_min_secs: f64,
    /// Longest retry delay (seconds).
    pub backoff_max_secs: f64,
    /// Packets a target may queue before it drops to the next keyframe.
    pub queue_packets: usize,
    /// CA certificates that `rtmps://` servers are verified against.
    pub ca_file: PathBuf,
    /// Targets added through the API to a stream that ends are started again
    /// (same id, URL and key) when a stream of the same name goes live within
    /// this many seconds (a publisher that reconnected); 0 = never.
    pub resume_secs: f64,
    /// Stream name patterns (`*` and `?` wildcards) that get HLS output when
    /// they go live; empty (the default) = none (the API can still start it).
    pub hls_streams: Vec<String>,
    /// Folder of the HLS outputs (one `s<id>` folder per live stream, removed
    /// when it ends; stale ones are removed at startup).
    pub hls_dir: PathBuf,
    /// Target HLS segment length in seconds (cut at keyframes).
    pub hls_time_secs: f64,
    /// Segments listed in the live playlist (older ones are deleted).
    pub hls_list_size: u32,
}

impl Default for RestreamConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            targets: vec![],
            allowed_hosts: vec![],
            audio_bitrate: 128_000,
            video_bitrate: 2_500_000,
            video_encoder: "libx264".into(),
            max_width: 1920,
            max_height: 1080,
            rw_timeout_secs: 10.0,
            backoff_min_secs: 1.0,
            backoff_max_secs: 30.0,
            queue_packets: 1024,
            ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            resume_secs: 30.0,
            hls_streams: vec![],
            hls_dir: std::env::temp_dir().join("castgate-hls"),
            hls_time_secs: 2.0,
            hls_list_size: 6,
        }
    }
}

/// Recording settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    /// Record streams at all.
    pub enabled: bool,
    /// Folder for recordings (relative to the working directory).
    pub dir: PathBuf,
    /// Stream name patterns to record (`*` and `?` wildcards).
    pub streams: Vec<String>,
    /// Stream name patterns never to record (wins over `streams`).
    pub exclude: Vec<String>,
    /// Longest Matroska cluster in ms: at most this much is lost on a crash.
    pub cluster_ms: u32,
    /// Seconds between forced writes to the disk (bounds power-loss damage).
    pub fsync_secs: f64,
    /// Do not start recordings when less than this much disk space is free.
    pub min_free_mib: u64,
    /// Space kept before the first cluster for the Cues (KiB); at a 2 s
    /// keyframe interval 128 KiB holds ~4 hours of cue points.
    pub reserve_index_kib: u32,
    /// Start a new file (at the next keyframe) after this many seconds; 0 = never.
    pub max_file_secs: f64,
    /// Start a new file (at the next keyframe) after this many MiB; 0 = never.
    pub max_file_mib: u64,
    /// At the start of a file, hold frames up to this many seconds until both
    /// tracks' first RTCP sender reports arrive, so even the first seconds are
    /// in sync (browsers send the first audio report after ~2.5 s). Frames held
    /// are lost if the process crashes meanwhile; 0 writes at once and aligns
    /// on arrival until the reports come.
    pub sync_wait_secs: f64,
    /// Delete finished recordings older than this many days; 0 = keep.
    pub retention_days: f64,
    /// Delete the oldest finished recordings beyond this total size (GiB); 0 = no limit.
    pub retention_max_gib: f64,
    /// Disk quota per stream name: delete that stream's oldest finished
    /// recordings beyond this size (GiB); 0 = no limit.
    pub stream_quota_gib: f64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::from("recordings"),
            streams: vec!["*".into()],
            exclude: vec![],
            cluster_ms: 500,
            fsync_secs: 5.0,
            min_free_mib: 256,
            reserve_index_kib: 128,
            max_file_secs: 0.0,
            max_file_mib: 0,
            sync_wait_secs: 3.0,
            retention_days: 0.0,
            retention_max_gib: 0.0,
            stream_quota_gib: 0.0,
        }
    }
}

/// HTTP listener settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port the HTTP server listens on.
    pub listen: SocketAddr,
    /// Largest accepted request body in bytes (SDP offers, PATCH fragments).
    pub max_body_bytes: usize,
    /// Sustained POST/PATCH/DELETE requests per second allowed per client address.
    pub rate_limit_per_sec: u32,
    /// Burst of POST/PATCH/DELETE requests allowed per client address.
    pub rate_limit_burst: u32,
    /// Origins whose pages may call WHIP, WHEP, HLS and the API's reads
    /// (`Access-Control-Allow-Origin`): `*` or a list of origins.
    pub cors_origins: Vec<String>,
    /// Origins (`https://dashboard.example.com`) whose pages may call the
    /// admin routes (the API's writes, `/api/events`) from another site;
    /// by default none may, and castgate's own pages need no entry.
    pub admin_origins: Vec<String>,
    /// PEM certificate chain: with `tls_key`, HTTP is served as HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Networks of the reverse proxies in front of castgate. Only a
    /// connection from one of them may say who the client is
    /// (`X-Forwarded-For` or `Forwarded`, and the scheme with
    /// `X-Forwarded-Proto`); its connections also do not count against
    /// `max_connections_per_client`.
    pub trusted_proxies: Vec<Network>,
    /// The old on/off switch that `trusted_proxies` replaced: still read so
    /// that a config which sets it is refused with a pointer to the new key.
    #[serde(skip_serializing)]
    pub trust_forwarded_headers: Option<bool>,
    /// Seconds a client has to send a whole request head, counted from the
    /// connection's start or the end of the previous answer; then the
    /// connection is closed (slow-header clients).
    pub header_timeout_secs: f64,
    /// Seconds an idle keep-alive connection (no request in progress, no
    /// byte of a new one) stays open; at most `header_timeout_secs`.
    pub idle_timeout_secs: f64,
    /// Seconds a request body may take to arrive once its head has; a slower
    /// one gets `408` and the connection is closed.
    pub body_timeout_secs: f64,
    /// HTTP connections open at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// HTTP connections one client address may have open at once; more are
    /// answered `503` and closed.
    pub max_connections_per_client: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024,
            rate_limit_per_sec: 20,
            rate_limit_burst: 60,
            cors_origins: vec!["*".into()],
            admin_origins: vec![],
            tls_cert: None,
            tls_key: None,
            trusted_proxies: vec![],
            trust_forwarded_headers: None,
            header_timeout_secs: 10.0,
            idle_timeout_secs: 5.0,
            body_timeout_secs: 10.0,
            max_connections: 4096,
            max_connections_per_client: 128,
        }
    }
}

/// One STUN or TURN server handed to clients in `Link` headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp` or `turns:…`.
    pub url: String,
    /// TURN user name.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default)]
    pub credential: Option<String>,
    /// TURN REST shared secret (coturn `use-auth-secret` + `static-auth-secret`):
    /// instead of a fixed user name and password, every client gets its own,
    /// valid for `rtc.turn_credential_ttl_secs`.
    #[serde(default)]
    pub secret: Option<String>,
}

/// WebRTC transport settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// The one UDP socket all WebRTC sessions share.
    pub udp_listen: SocketAddr,
    /// Announce the machine's own interface addresses as ICE candidates.
    pub auto_detect_addresses: bool,
    /// Extra addresses to announce (public / NAT 1:1 IPs), port is `udp_listen`'s.
    pub announce: Vec<IpAddr>,
    /// STUN/TURN servers handed to clients.
    pub ice_servers: Vec<IceServer>,
    /// How long minted TURN credentials (servers with a `secret`) stay valid;
    /// TURN refreshes need them for the whole session, so make it longer than one.
    pub turn_credential_ttl_secs: u64,
    /// Number of media worker shards; 0 means one per CPU core.
    pub workers: usize,
    /// Most packets kept per viewer video track to answer NACKs (RTX); none
    /// is kept longer than 1 s either. 300 packets are ~1 s of a 2.5 Mbit/s
    /// stream, about what libwebrtc keeps for the same purpose. For VP8/H.264
    /// streams the payloads are shared by every viewer and each entry costs
    /// ≈ 430 bytes of str0m bookkeeping; for VP9/AV1 each viewer holds its own
    /// copy (≈ 1.6 KB per packet).
    pub send_buffer_video: usize,
    /// ICE-TCP (RFC 6544): also listen on TCP on `udp_listen`'s address and
    /// port and offer passive TCP candidates (UDP stays preferred), for
    /// clients whose networks block UDP.
    pub ice_tcp: bool,
    /// Most ICE-TCP connections open at once; more are refused.
    pub ice_tcp_max_connections: usize,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            udp_listen: SocketAddr::from(([0, 0, 0, 0], 8189)),
            auto_detect_addresses: true,
            announce: vec![],
            ice_servers: vec![],
            turn_credential_ttl_secs: 86_400,
            workers: 0,
            send_buffer_video: 300,
            ice_tcp: true,
            ice_tcp_max_connections: 1024,
        }
    }
}

/// Codec preference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodecConfig {
    /// Video codecs accepted from publishers, most preferred first: vp8, vp9, h264, av1.
    pub video: Vec<String>,
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self {
            video: vec!["vp8".into(), "h264".into(), "vp9".into(), "av1".into()],
        }
    }
}

/// What happens when a second publisher asks for a stream name in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OnConflict {
    /// The second publisher gets 409 Conflict.
    #[default]
    Reject,
    /// The second publisher replaces the first, whose session is closed.
    Takeover,
}

/// Publishing policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhipConfig {
    /// Second publisher on a live name: `reject` (409) or `takeover`.
    pub on_conflict: OnConflict,
    /// Seconds without any packet from a publisher before its stream ends.
    pub publisher_timeout_secs: f64,
}

impl Default for WhipConfig {
    fn default() -> Self {
        Self {
            on_conflict: OnConflict::Reject,
            publisher_timeout_secs: 10.0,
        }
    }
}

/// What a viewer gets when nothing is published under the name yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NoPublisher {
    /// 409 Conflict with `Retry-After`, as the WHEP draft says.
    #[default]
    Reject,
    /// Hold the request until a publisher arrives (up to `wait_secs`).
    Wait,
}

/// Viewing policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhepConfig {
    /// Viewer before publisher: `reject` (409 + Retry-After) or `wait`.
    pub no_publisher: NoPublisher,
    /// With `wait`: how long to hold the request before answering 409.
    pub wait_secs: f64,
    /// Seconds suggested in `Retry-After`.
    pub retry_after_secs: u32,
    /// Frames queued per viewer before it is considered too slow and skips to the next keyframe.
    pub viewer_queue_frames: usize,
}

impl Default for WhepConfig {
    fn default() -> Self {
        Self {
            no_publisher: NoPublisher::Reject,
            wait_secs: 30.0,
            retry_after_secs: 2,
            viewer_queue_frames: 256,
        }
    }
}

/// How a new viewer gets its first picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ViewerStart {
    /// Ask the publisher for a keyframe; replay the cached group of pictures only
    /// when the publisher has been seen ignoring requests.
    #[default]
    Auto,
    /// Always ask for a fresh keyframe and wait for it (lowest delay once playing).
    Fresh,
    /// Always start at once from the cached group of pictures (fastest first picture,
    /// briefly behind live).
    Cached,
}

/// Keyframe request policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyframeConfig {
    /// Smallest gap between two keyframe requests to one publisher (requests in between merge).
    pub min_interval_ms: u64,
    /// Period of keyframe requests while a sink needs regular keyframes (recording, RTMP, HLS).
    pub periodic_secs: f64,
    /// How a new viewer starts: `auto`, `fresh` or `cached`.
    pub viewer_start: ViewerStart,
    /// Largest group of pictures kept for `cached` starts, in bytes of memory
    /// (each frame's bytes and the RTP payloads cut from them, ≈ twice the
    /// encoded size for VP8 and H.264).
    pub gop_cache_bytes: usize,
}

impl Default for KeyframeConfig {
    fn default() -> Self {
        Self {
            min_interval_ms: 200,
            periodic_secs: 2.0,
            viewer_start: ViewerStart::Auto,
            gop_cache_bytes: 8 * 1024 * 1024,
        }
    }
}

impl KeyframeConfig {
    /// `min_interval_ms` as a duration.
    pub fn min_interval(&self) -> Duration {
        Duration::from_millis(self.min_interval_ms)
    }
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Log settings (levels come from `RUST_LOG`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Prometheus metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics`.
    pub enabled: bool,
    /// Also export per-stream series labelled with the stream name. Off by
    /// default: one series per name is unbounded when anyone may publish.
    pub per_stream: bool,
    /// Bearer token a scraper (Prometheus) sends to read `/metrics`; it
    /// grants nothing else. A secret: never logged or shown.
    pub token: Option<String>,
    /// Networks whose clients may read `/metrics` without a token (e.g. the
    /// Prometheus server's address).
    pub allow_networks: Vec<Network>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_stream: false,
            token: None,
            allow_networks: vec![],
        }
    }
}

/// One webhook receiver.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL that events are POSTed to (JSON).
    pub url: String,
    /// Key of the `X-Castgate-Signature: sha256=<HMAC-SHA256 of the body>`
    /// header; no signature without it. A secret: never logged or shown.
    pub secret: Option<String>,
    /// Event types to send (e.g. `["stream_started", "recording_finalized"]`); empty = all.
    pub events: Vec<String>,
}

/// The event types there are (`type` of an event).
pub const EVENT_TYPES: [&str; 10] = [
    "stream_started",
    "stream_ended",
    "viewer_joined",
    "viewer_left",
    "recording_started",
    "recording_finalized",
    "recording_failed",
    "restream_state",
    "config_reloaded",
    "config_rejected",
];

/// Events (`GET /api/events`) and webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events each subscriber (an SSE client, a webhook) may have pending
    /// before the oldest are dropped (counted and logged).
    pub buffer: usize,
    /// Receivers of webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// Seconds one delivery attempt may take.
    pub webhook_timeout_secs: f64,
    /// Attempts per event (the first included) before it is given up.
    pub webhook_max_attempts: u32,
    /// First retry delay (seconds); doubles per failed attempt …
    pub webhook_backoff_min_secs: f64,
    /// … up to this.
    pub webhook_backoff_max_secs: f64,
    /// Clients `GET /api/events` may have open at once; more get 503.
    pub max_sse_clients: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            buffer: 1024,
            webhooks: vec![],
            webhook_timeout_secs: 10.0,
            webhook_max_attempts: 5,
            webhook_backoff_min_secs: 1.0,
            webhook_backoff_max_secs: 30.0,
            max_sse_clients: 64,
        }
    }
}

/// Stopping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// On SIGTERM/SIGINT: seconds allowed to close sessions, finalize
    /// recordings, stop restreams and deliver pending webhooks. Past it the
    /// process exits with code 1 (a second signal exits at once).
    pub timeout_secs: f64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { timeout_secs: 30.0 }
    }
}

/// Command-line and environment overrides for `castgate serve`. Each flag can
/// also be set as the environment variable shown in `--help`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file [default: ./castgate.toml if it exists].
    #[arg(long, short = 'c', env = "CASTGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "CASTGATE_HTTP_LISTEN", value_name = "ADDR:PORT")]
    pub http_listen: Option<String>,
    /// The one UDP address:port for all WebRTC media [default: 0.0.0.0:8189].
    #[arg(long, env = "CASTGATE_UDP_LISTEN", value_name = "ADDR:PORT")]
    pub udp_listen: Option<String>,
    /// Extra IPs to announce in ICE candidates (public / NAT 1:1), comma-separated.
    #[arg(
        long,
        env = "CASTGATE_ANNOUNCE",
        value_delimiter = ',',
        value_name = "IP"
    )]
    pub announce: Option<Vec<String>>,
    /// Announce this machine's interface addresses [default: true].
    #[arg(long, env = "CASTGATE_AUTO_DETECT_ADDRESSES", value_name = "BOOL")]
    pub auto_detect_addresses: Option<bool>,
    /// ICE-TCP: also take media over TCP on the UDP port's number [default: true].
    #[arg(long, env = "CASTGATE_ICE_TCP", value_name = "BOOL")]
    pub ice_tcp: Option<bool>,
    /// STUN/TURN URLs handed to clients in Link headers, comma-separated.
    #[arg(
        long,
        env = "CASTGATE_ICE_SERVERS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub ice_servers: Option<Vec<String>>,
    /// TURN REST shared secret (coturn `static-auth-secret`) for every
    /// `turn:`/`turns:` server that has no user name and password: each client
    /// gets credentials of its own (see `rtc.ice_servers` `secret`).
    #[arg(
        long,
        env = "CASTGATE_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub turn_secret: Option<String>,
    /// Media worker shards; 0 = one per core [default: 0].
    #[arg(long, env = "CASTGATE_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Bearer token required to publish [default: none, publishing is open].
    #[arg(
        long,
        env = "CASTGATE_PUBLISH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub publish_token: Option<String>,
    /// Bearer token required to view: WHEP, HLS, recordings [default: none, open].
    #[arg(
        long,
        env = "CASTGATE_VIEW_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub view_token: Option<String>,
    /// Bearer token required for the API's writes [default: none, open].
    #[arg(
        long,
        env = "CASTGATE_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Shared secret of HS256 JWTs, at least 32 bytes [default: none].
    #[arg(
        long,
        env = "CASTGATE_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// PEM certificate chain; with --tls-key, serve HTTPS [default: plain HTTP].
    #[arg(long, env = "CASTGATE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CASTGATE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Replaced by --trusted-proxies; refused with a pointer to it.
    #[arg(
        long,
        env = "CASTGATE_TRUST_FORWARDED_HEADERS",
        value_name = "BOOL",
        hide = true
    )]
    pub trust_forwarded_headers: Option<bool>,
    /// Networks of reverse proxies whose X-Forwarded-For / Forwarded name
    /// the client, comma-separated (e.g. 127.0.0.1,10.0.0.0/8) [default: none].
    #[arg(
        long,
        env = "CASTGATE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "NET"
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// Who may use the admin role (API writes, /api/events) without a token:
    /// local = clients on this machine, protected = nobody, open = anyone
    /// [default: local].
    #[arg(long, env = "CASTGATE_ADMIN_ACCESS", value_enum)]
    pub admin_access: Option<Access>,
    /// Bearer token that lets a scraper read /metrics (and nothing else) [default: none].
    #[arg(
        long,
        env = "CASTGATE_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,
    /// Internal networks that restream targets, webhooks and the access
    /// callback may reach anyway, comma-separated [default: none].
    #[arg(
        long,
        env = "CASTGATE_OUTBOUND_ALLOW_NETWORKS",
        value_delimiter = ',',
        value_name = "NET"
    )]
    pub outbound_allow_networks: Option<Vec<String>>,
    /// Video codecs accepted, most preferred first [default: vp8,h264,vp9,av1].
    #[arg(
        long,
        env = "CASTGATE_VIDEO_CODECS",
        value_delimiter = ',',
        value_name = "CODEC"
    )]
    pub video_codecs: Option<Vec<String>>,
    /// Second publisher on a live name [default: reject].
    #[arg(long, env = "CASTGATE_ON_CONFLICT", value_enum)]
    pub on_conflict: Option<OnConflict>,
    /// Viewer before publisher [default: reject].
    #[arg(long, env = "CASTGATE_NO_PUBLISHER", value_enum)]
    pub no_publisher: Option<NoPublisher>,
    /// How a new viewer starts [default: auto].
    #[arg(long, env = "CASTGATE_VIEWER_START", value_enum)]
    pub viewer_start: Option<ViewerStart>,
    /// Record streams [default: true].
    #[arg(long, env = "CASTGATE_RECORD", value_name = "BOOL")]
    pub record: Option<bool>,
    /// Folder for recordings [default: ./recordings].
    #[arg(long, env = "CASTGATE_RECORD_DIR", value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
    /// Seconds of publisher silence before its stream ends [default: 10].
    #[arg(long, env = "CASTGATE_PUBLISHER_TIMEOUT", value_name = "SECS")]
    pub publisher_timeout: Option<f64>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "CASTGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Seconds allowed for a clean stop on SIGTERM/SIGINT [default: 30].
    #[arg(long, env = "CASTGATE_SHUTDOWN_TIMEOUT", value_name = "SECS")]
    pub shutdown_timeout: Option<f64>,
}

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "castgate.toml";

fn parse_addr(key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        invalid(
            key,
            format!("{s:?} is not an address:port such as 127.0.0.1:8080"),
        )
    })
}

fn parse_networks(key: &'static str, list: &[String]) -> Result<Vec<Network>, ConfigError> {
    list.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse().map_err(|e: String| invalid(key, e)))
        .collect()
}

fn parse_ip(key: &'static str, s: &str) -> Result<IpAddr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(key, format!("{s:?} is not an IP address")))
}

impl Config {
    /// Loads defaults, the TOML file (explicit or `./castgate.toml`), then the
    /// environment and flags carried by `args`, and validates the result.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Config::from_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Config::from_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Config::default(),
        };
        config.apply(args)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML file; unknown keys are errors, so typos do not pass silently.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error is the parser's one-line message.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.message().to_string() + &location(text, e.span()))
    }

    /// Applies flag and environment overrides on top of the file.
    pub fn apply(&mut self, a: &ServeArgs) -> Result<(), ConfigError> {
        if let Some(v) = &a.http_listen {
            self.http.listen = parse_addr("http.listen", v)?;
        }
        if let Some(v) = &a.udp_listen {
            self.rtc.udp_listen = parse_addr("rtc.udp_listen", v)?;
        }
        if let Some(v) = &a.announce {
            self.rtc.announce = v
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse_ip("rtc.announce", s))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = a.auto_detect_addresses {
            self.rtc.auto_detect_addresses = v;
        }
        if let Some(v) = a.ice_tcp {
            self.rtc.ice_tcp = v;
        }
        if let Some(v) = &a.ice_servers {
            self.rtc.ice_servers = v
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|url| IceServer {
                    url: url.trim().to_string(),
                    ..IceServer::default()
                })
                .collect();
        }
        if let Some(secret) = a.turn_secret.as_ref().filter(|s| !s.is_empty()) {
            for s in &mut self.rtc.ice_servers {
                if s.url.starts_with("turn") && s.username.is_none() && s.credential.is_none() {
                    s.secret = Some(secret.clone());
                }
            }
        }
        if let Some(v) = a.workers {
            self.rtc.workers = v;
        }
        if let Some(v) = &a.publish_token {
            self.auth.publish_token = Some(v.clone());
        }
        if let Some(v) = &a.view_token {
            self.auth.view_token = Some(v.clone());
        }
        if let Some(v) = &a.admin_token {
            self.auth.admin_token = Some(v.clone());
        }
        if let Some(v) = &a.jwt_secret {
            self.auth.jwt_secret = Some(v.clone());
        }
        if let Some(v) = &a.tls_cert {
            self.http.tls_cert = Some(v.clone());
        }
        if let Some(v) = &a.tls_key {
            self.http.tls_key = Some(v.clone());
        }
        if let Some(v) = a.trust_forwarded_headers {
            self.http.trust_forwarded_headers = Some(v);
        }
        if let Some(v) = &a.trusted_proxies {
            self.http.trusted_proxies = parse_networks("http.trusted_proxies", v)?;
        }
        if let Some(v) = a.admin_access {
            self.auth.admin = v;
        }
        if let Some(v) = &a.metrics_token {
            self.metrics.token = Some(v.clone());
        }
        if let Some(v) = &a.outbound_allow_networks {
            self.outbound.allow_networks = parse_networks("outbound.allow_networks", v)?;
        }
        if let Some(v) = &a.video_codecs {
            self.codecs.video = v.iter().map(|s| s.trim().to_ascii_lowercase()).collect();
        }
        if let Some(v) = a.on_conflict {
            self.whip.on_conflict = v;
        }
        if let Some(v) = a.no_publisher {
            self.whep.no_publisher = v;
        }
        if let Some(v) = a.viewer_start {
            self.keyframes.viewer_start = v;
        }
        if let Some(v) = a.record {
            self.record.enabled = v;
        }
        if let Some(v) = &a.record_dir {
            self.record.dir = v.clone();
        }
        if let Some(v) = a.publisher_timeout {
            self.whip.publisher_timeout_secs = v;
        }
        if let Some(v) = a.log_format {
            self.log.format = v;
        }
        if let Some(v) = a.shutdown_timeout {
            self.shutdown.timeout_secs = v;
        }
        Ok(())
    }

    /// Checks every value that types alone cannot; the first problem wins.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_http()?;
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        if self.http.rate_limit_per_sec == 0 || self.http.rate_limit_burst == 0 {
            return Err(invalid(
                "http.rate_limit_per_sec",
                "rate limits must be at least 1",
            ));
        }
        if self.rtc.udp_listen.port() == 0 {
            return Err(invalid(
                "rtc.udp_listen",
                "port 0 is not allowed: clients must be told a fixed media port",
            ));
        }
        if !self.rtc.auto_detect_addresses
            && self.rtc.announce.is_empty()
            && self.rtc.udp_listen.ip().is_unspecified()
        {
            return Err(invalid(
                "rtc.announce",
                "no address to announce: set rtc.announce, bind rtc.udp_listen to an IP, or enable rtc.auto_detect_addresses",
            ));
        }
        for ip in &self.rtc.announce {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(invalid("rtc.announce", format!("{ip} cannot be announced")));
            }
        }
        for s in &self.rtc.ice_servers {
            let ok = ["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|p| s.url.starts_with(p));
            if !ok || s.url.contains(['\r', '\n', '<', '>', '"']) {
                return Err(invalid(
                    "rtc.ice_servers",
                    format!("{:?} is not a stun:, stuns:, turn: or turns: URL", s.url),
                ));
            }
            if s.secret.is_some() && (s.username.is_some() || s.credential.is_some()) {
                return Err(invalid(
                    "rtc.ice_servers",
                    format!(
                        "{:?}: give either a secret or a username and credential",
                        s.url
                    ),
                ));
            }
            if s.secret.as_ref().is_some_and(|x| x.is_empty())
                || (s.secret.is_some() && !s.url.starts_with("turn"))
            {
                return Err(invalid(
                    "rtc.ice_servers",
                    format!(
                        "{:?}: a secret needs a turn: or turns: URL and must not be empty",
                        s.url
                    ),
                ));
            }
        }
        if !(60..=7 * 86_400).contains(&self.rtc.turn_credential_ttl_secs) {
            return Err(invalid(
                "rtc.turn_credential_ttl_secs",
                "must be between 60 and 604800 seconds",
            ));
        }
        if self.rtc.ice_tcp && self.rtc.ice_tcp_max_connections == 0 {
            return Err(invalid(
                "rtc.ice_tcp_max_connections",
                "must be at least 1 (or set rtc.ice_tcp = false)",
            ));
        }
        if self.rtc.send_buffer_video == 0 {
            return Err(invalid("rtc.send_buffer_video", "must be at least 1"));
        }
        if self.codecs.video.is_empty() {
            return Err(invalid(
                "codecs.video",
                "at least one video codec is needed",
            ));
        }
        for c in &self.codecs.video {
            if !matches!(c.as_str(), "vp8" | "vp9" | "h264" | "av1") {
                return Err(invalid(
                    "codecs.video",
                    format!("unknown codec {c:?}; choose from vp8, vp9, h264, av1"),
                ));
            }
        }
        let secs = self.whip.publisher_timeout_secs;
        if !(1.0..=3600.0).contains(&secs) {
            return Err(invalid(
                "whip.publisher_timeout_secs",
                "must be between 1 and 3600 seconds",
            ));
        }
        if !(0.0..=3600.0).contains(&self.whep.wait_secs) {
            return Err(invalid(
                "whep.wait_secs",
                "must be between 0 and 3600 seconds",
            ));
        }
        if self.whep.viewer_queue_frames < 16 {
            return Err(invalid("whep.viewer_queue_frames", "must be at least 16"));
        }
        if !(0.5..=60.0).contains(&self.keyframes.periodic_secs) {
            return Err(invalid(
                "keyframes.periodic_secs",
                "must be between 0.5 and 60 seconds",
            ));
        }
        if self.keyframes.min_interval_ms > 10_000 {
            return Err(invalid(
                "keyframes.min_interval_ms",
                "must be at most 10000",
            ));
        }
        if !(100..=10_000).contains(&self.record.cluster_ms) {
            return Err(invalid(
                "record.cluster_ms",
                "must be between 100 and 10000",
            ));
        }
        if !(0.1..=3600.0).contains(&self.record.fsync_secs) {
            return Err(invalid(
                "record.fsync_secs",
                "must be between 0.1 and 3600 seconds",
            ));
        }
        if self.record.reserve_index_kib > 16 * 1024 {
            return Err(invalid("record.reserve_index_kib", "must be at most 16384"));
        }
        if !(0.0..=7.0 * 86_400.0).contains(&self.record.max_file_secs)
            || (self.record.max_file_secs > 0.0 && self.record.max_file_secs < 1.0)
        {
            return Err(invalid(
                "record.max_file_secs",
                "must be 0 (off) or between 1 second and 7 days",
            ));
        }
        if !(0.0..=10.0).contains(&self.record.sync_wait_secs) {
            return Err(invalid(
                "record.sync_wait_secs",
                "must be between 0 and 10 seconds",
            ));
        }
        if (self.limits.max_publish_width == 0) != (self.limits.max_publish_height == 0) {
            return Err(invalid(
                "limits.max_publish_width",
                "set both max_publish_width and max_publish_height, or neither",
            ));
        }
        if self.record.stream_quota_gib < 0.0 || !self.record.stream_quota_gib.is_finite() {
            return Err(invalid(
                "record.stream_quota_gib",
                "must be 0 (no limit) or a positive size in GiB",
            ));
        }
        if self.record.retention_days < 0.0 || self.record.retention_max_gib < 0.0 {
            return Err(invalid(
                "record.retention_days",
                "retention limits cannot be negative",
            ));
        }
        if self.record.dir.as_os_str().is_empty() {
            return Err(invalid("record.dir", "must not be empty"));
        }
        self.validate_restream()?;
        self.validate_ops()?;
        self.auth.validate()?;
        self.validate_outbound()?;
        match (&self.http.tls_cert, &self.http.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "http.tls_cert",
                    "tls_cert and tls_key go together: set both or neither",
                ));
            }
            (Some(cert), Some(key)) => {
                if let Err(e) = crate::http::tls::load(cert, key) {
                    return Err(invalid("http.tls_cert", e.to_string()));
                }
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// Webhook and callback URLs written with an internal address are
    /// refused now rather than at every delivery (names are checked when
    /// they are resolved).
    fn validate_outbound(&self) -> Result<(), ConfigError> {
        let policy = crate::outbound::OutboundPolicy::new(
            self.outbound.allow_networks.iter().map(|n| n.0).collect(),
        );
        for (i, w) in self.events.webhooks.iter().enumerate() {
            if let Err(e) = policy.check_url(&w.url) {
                return Err(invalid(
                    "events.webhooks",
                    format!("webhook {}: {e}", i + 1),
                ));
            }
        }
        if let Some(u) = &self.auth.callback_url
            && let Err(e) = policy.check_url(u)
        {
            return Err(invalid("auth.callback_url", e.to_string()));
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        if h.trust_forwarded_headers.is_some() {
            return Err(invalid(
                "http.trust_forwarded_headers",
                "replaced by http.trusted_proxies: list the networks of your reverse proxies \
                 (e.g. [\"127.0.0.1\"] for one on this machine); forwarding headers from \
                 anywhere else are ignored",
            ));
        }
        if !(1.0..=300.0).contains(&h.header_timeout_secs) {
            return Err(invalid(
                "http.header_timeout_secs",
                "must be between 1 and 300 seconds",
            ));
        }
        if !(0.5..=h.header_timeout_secs).contains(&h.idle_timeout_secs) {
            return Err(invalid(
                "http.idle_timeout_secs",
                "must be between 0.5 seconds and http.header_timeout_secs (the wait for a \
                 new request's head ends there anyway)",
            ));
        }
        if !(1.0..=3600.0).contains(&h.body_timeout_secs) {
            return Err(invalid(
                "http.body_timeout_secs",
                "must be between 1 and 3600 seconds",
            ));
        }
        if !(1..=1_000_000).contains(&h.max_connections) {
            return Err(invalid(
                "http.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=h.max_connections).contains(&h.max_connections_per_client) {
            return Err(invalid(
                "http.max_connections_per_client",
                "must be between 1 and http.max_connections",
            ));
        }
        for o in &h.admin_origins {
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .unwrap_or("");
            let ok = !rest.is_empty()
                && !rest.contains(['/', '?', '#', '@'])
                && rest.chars().all(|c| c.is_ascii_graphic());
            if !ok {
                return Err(invalid(
                    "http.admin_origins",
                    format!(
                        "{o:?} is not an origin such as https://dashboard.example.com \
                         (scheme, host and port only)"
                    ),
                ));
            }
        }
        if let Some(t) = &self.metrics.token
            && (t.is_empty() || !t.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(invalid(
                "metrics.token",
                "must be non-empty printable ASCII without spaces",
            ));
        }
        Ok(())
    }

    fn validate_ops(&self) -> Result<(), ConfigError> {
        let e = &self.events;
        if !(16..=1_000_000).contains(&e.buffer) {
            return Err(invalid("events.buffer", "must be between 16 and 1000000"));
        }
        if !(1..=100_000).contains(&e.max_sse_clients) {
            return Err(invalid(
                "events.max_sse_clients",
                "must be between 1 and 100000",
            ));
        }
        if !(0.5..=300.0).contains(&e.webhook_timeout_secs) {
            return Err(invalid(
                "events.webhook_timeout_secs",
                "must be between 0.5 and 300 seconds",
            ));
        }
        if !(1..=100).contains(&e.webhook_max_attempts) {
            return Err(invalid(
                "events.webhook_max_attempts",
                "must be between 1 and 100",
            ));
        }
        if !(0.01..=600.0).contains(&e.webhook_backoff_min_secs)
            || !(e.webhook_backoff_min_secs..=3600.0).contains(&e.webhook_backoff_max_secs)
        {
            return Err(invalid(
                "events.webhook_backoff_min_secs",
                "need 0.01 <= webhook_backoff_min_secs <= 600 and webhook_backoff_min_secs <= webhook_backoff_max_secs <= 3600",
            ));
        }
        for (i, w) in e.webhooks.iter().enumerate() {
            let ok = (w.url.starts_with("http://") || w.url.starts_with("https://"))
                && w.url.len() > "https://".len()
                && !w.url.contains(char::is_whitespace);
            if !ok {
                // Not the URL itself: it may carry credentials.
                return Err(invalid(
                    "events.webhooks",
                    format!("webhook {}: url must be an http:// or https:// URL", i + 1),
                ));
            }
            if w.secret.as_ref().is_some_and(|s| s.is_empty()) {
                return Err(invalid(
                    "events.webhooks",
                    format!("webhook {}: secret must not be empty", i + 1),
                ));
            }
            if let Some(bad) = w.events.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
                return Err(invalid(
                    "events.webhooks",
                    format!(
                        "webhook {}: unknown event type {bad:?}; choose from {}",
                        i + 1,
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
        }
        if !(1.0..=3600.0).contains(&self.shutdown.timeout_secs) {
            return Err(invalid(
                "shutdown.timeout_secs",
                "must be between 1 and 3600 seconds",
            ));
        }
        Ok(())
    }

    fn validate_restream(&self) -> Result<(), ConfigError> {
        let r = &self.restream;
        if !(32_000..=512_000).contains(&r.audio_bitrate) {
            return Err(invalid(
                "restream.audio_bitrate",
                "must be between 32000 and 512000 bits/s",
            ));
        }
        if !(16..=8192).contains(&r.max_width) || !(16..=8192).contains(&r.max_height) {
            return Err(invalid(
                "restream.max_width",
                "max_width and max_height must be between 16 and 8192 pixels",
            ));
        }
        if r.video_encoder.trim().is_empty() {
            return Err(invalid(
                "restream.video_encoder",
                "must name an FFmpeg H.264 encoder, e.g. libx264",
            ));
        }
        if !(100_000..=50_000_000).contains(&r.video_bitrate) {
            return Err(invalid(
                "restream.video_bitrate",
                "must be between 100000 and 50000000 bits/s",
            ));
        }
        if !(1.0..=300.0).contains(&r.rw_timeout_secs) {
            return Err(invalid(
                "restream.rw_timeout_secs",
                "must be between 1 and 300 seconds",
            ));
        }
        if !(0.1..=600.0).contains(&r.backoff_min_secs)
            || !(r.backoff_min_secs..=3600.0).contains(&r.backoff_max_secs)
        {
            return Err(invalid(
                "restream.backoff_min_secs",
                "need 0.1 <= backoff_min_secs <= 600 and backoff_min_secs <= backoff_max_secs <= 3600",
            ));
        }
        if !(0.0..=3600.0).contains(&r.resume_secs) {
            return Err(invalid(
                "restream.resume_secs",
                "must be between 0 and 3600 seconds",
            ));
        }
        if !(0.5..=60.0).contains(&r.hls_time_secs) {
            return Err(invalid(
                "restream.hls_time_secs",
                "must be between 0.5 and 60 seconds",
            ));
        }
        if !(1..=100).contains(&r.hls_list_size) {
            return Err(invalid(
                "restream.hls_list_size",
                "must be between 1 and 100",
            ));
        }
        if r.hls_dir.as_os_str().is_empty() || r.hls_dir.to_str().is_none() {
            return Err(invalid(
                "restream.hls_dir",
                "must be a non-empty UTF-8 path",
            ));
        }
        if !(64..=65_536).contains(&r.queue_packets) {
            return Err(invalid(
                "restream.queue_packets",
                "must be between 64 and 65536",
            ));
        }
        if r.allowed_hosts.iter().any(|h| h.trim().is_empty()) {
            return Err(invalid(
                "restream.allowed_hosts",
                "host patterns must not be empty",
            ));
        }
        for (i, t) in r.targets.iter().enumerate() {
            if t.streams.is_empty() || t.streams.iter().any(|p| p.is_empty()) {
                return Err(invalid(
                    "restream.targets",
                    format!(
                        "target {}: `streams` needs at least one non-empty pattern",
                        i + 1
                    ),
                ));
            }
            // The error never repeats the URL: it holds a stream key.
            if let Err(e) = crate::restream::TargetUrl::parse(&t.url, &r.allowed_hosts) {
                return Err(invalid(
                    "restream.targets",
                    format!("target {}: {e}", i + 1),
                ));
            }
        }
        Ok(())
    }

    /// Number of media worker shards to run.
    pub fn worker_count(&self) -> usize {
        if self.rtc.workers > 0 {
            return self.rtc.workers;
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let line = text
        .get(..span.start)
        .map(|s| s.matches('\n').count() + 1)
        .unwrap_or(1);
    format!(" (line {line})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_local() {
        let c = Config::default();
        c.validate().expect("defaults validate");
        assert_eq!(c.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.rtc.udp_listen.port(), 8189);
    }

    #[test]
    fn file_then_flags_override() {
        let mut c = Config::from_toml("[http]\nlisten = \"127.0.0.1:9000\"\n[rtc]\nworkers = 3\n")
            .expect("parses");
        assert_eq!(c.http.listen.port(), 9000);
        let args = ServeArgs {
            http_listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        c.apply(&args).unwrap();
        assert_eq!(c.http.listen.port(), 9100);
        assert_eq!(c.rtc.workers, 3);
    }

    #[test]
    fn restream_section_is_validated_without_leaking_keys() {
        let mut c = Config::from_toml(
            "[restream]\nallowed_hosts = [\"*.youtube.com\"]\n\
             [[restream.targets]]\nstreams = [\"studio-*\"]\n\
             url = \"rtmp://a.rtmp.youtube.com/live2/SECRET\"\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        c.restream.targets[0].url = "rtmp://10.0.0.1/live/SECRET".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("restream.targets") && !err.contains("SECRET"),
            "{err}"
        );
        c.restream.targets[0].url = "http://x/live/SECRET".into();
        assert!(c.validate().is_err());
        c.restream.targets.clear();
        c.restream.backoff_max_secs = 0.5;
        assert!(c.validate().is_err());
    }

    #[test]
    fn ops_sections_parse_and_are_validated() {
        let mut c = Config::from_toml(
            "[log]\nformat = \"json\"\n[metrics]\nper_stream = true\n\
             [shutdown]\ntimeout_secs = 5\n\
             [[events.webhooks]]\nurl = \"https://hooks.example.com/in\"\n\
             secret = \"s3cret\"\nevents = [\"stream_started\"]\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(c.metrics.per_stream);
        assert_eq!(c.events.webhooks[0].events, ["stream_started"]);
        assert_eq!(c.events.max_sse_clients, 64);
        c.events.max_sse_clients = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("events.max_sse_clients:"), "{err}");
        c.events.max_sse_clients = 64;
        c.events.webhooks[0].events = vec!["nope".into()];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("events.webhooks:"), "{err}");
        c.events.webhooks[0].events.clear();
        c.events.webhooks[0].url = "ftp://user:pw@x/".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(!err.contains("pw"), "{err}");
        c.events.webhooks.clear();
        c.apply(&ServeArgs {
            log_format: Some(LogFormat::Text),
            shutdown_timeout: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.log.format, LogFormat::Text);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("shutdown.timeout_secs"), "{err}");
    }

    #[test]
    fn turn_secret_flag_goes_to_turn_servers_without_credentials() {
        let mut c = Config::default();
        c.apply(&ServeArgs {
            ice_servers: Some(vec![
                "stun:turn.example.net:3478".into(),
                "turn:turn.example.net:3478?transport=udp".into(),
                "turns:turn.example.net:443?transport=tcp".into(),
            ]),
            turn_secret: Some("s3cret".into()),
            ..Default::default()
        })
        .unwrap();
        let secrets: Vec<Option<&str>> = c
            .rtc
            .ice_servers
            .iter()
            .map(|s| s.secret.as_deref())
            .collect();
        assert_eq!(secrets, vec![None, Some("s3cret"), Some("s3cret")]);
        c.validate().unwrap();
    }

    #[test]
    fn secure_defaults_and_their_keys_are_checked() {
        let c = Config::default();
        assert_eq!(c.auth.admin, Access::Local, "admin: this machine only");
        assert!(c.http.trusted_proxies.is_empty() && c.outbound.allow_networks.is_empty());
        assert_eq!(c.http.header_timeout_secs, 10.0);

        let c = Config::from_toml("[http]\ntrust_forwarded_headers = true\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("http.trust_forwarded_headers:") && e.contains("trusted_proxies"),
            "{e}"
        );
        let c = Config::from_toml(
            "[http]\ntrusted_proxies = [\"127.0.0.1\", \"10.1.2.3/8\", \"fd00::/8\"]\n\
             [outbound]\nallow_networks = [\"192.168.1.20\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        let shown: Vec<String> = c
            .http
            .trusted_proxies
            .iter()
            .map(|n| n.0.to_string())
            .collect();
        assert_eq!(shown, ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]);
        assert!(c.http.trusted_proxies[0].contains("::ffff:127.0.0.1".parse().unwrap()));
        let e = Config::from_toml("[http]\ntrusted_proxies = [\"nope\"]\n").unwrap_err();
        assert!(e.contains("\"nope\" is not a network"), "{e}");

        let mut c = Config::default();
        c.http.idle_timeout_secs = 20.0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("http.idle_timeout_secs:"), "{e}");
        let mut c = Config::default();
        c.http.max_connections_per_client = c.http.max_connections + 1;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("http.max_connections_per_client:"), "{e}");
        for bad in ["dash.example", "https://dash.example/path", "https://"] {
            let mut c = Config::default();
            c.http.admin_origins = vec![bad.into()];
            let e = c.validate().unwrap_err().to_string();
            assert!(e.starts_with("http.admin_origins:"), "{bad}: {e}");
        }
        let mut c = Config::default();
        c.metrics.token = Some("has space".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("metrics.token:") && !e.contains("has space"),
            "{e}"
        );

        let mut c = Config::default();
        c.apply(&ServeArgs {
            trusted_proxies: Some(vec!["127.0.0.1".into(), "10.0.0.0/8".into()]),
            admin_access: Some(Access::Open),
            outbound_allow_networks: Some(vec!["172.31.250.10/32".into()]),
            metrics_token: Some("scrape".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.http.trusted_proxies.len(), 2);
        assert_eq!(c.auth.admin, Access::Open);
        assert_eq!(c.metrics.token.as_deref(), Some("scrape"));
        let e = c
            .apply(&ServeArgs {
                outbound_allow_networks: Some(vec!["10.0.0.0/33".into()]),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("outbound.allow_networks:"), "{e}");
    }

    #[test]
    fn webhook_and_callback_urls_at_internal_addresses_are_refused() {
        let mut c = Config::default();
        c.events.webhooks.push(WebhookConfig {
            url: "http://user:pw@10.0.0.9/hook".into(),
            ..Default::default()
        });
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("events.webhooks:") && e.contains("private"),
            "{e}"
        );
        assert!(!e.contains("pw"), "{e}");
        c.outbound.allow_networks = vec!["10.0.0.0/24".parse().unwrap()];
        c.validate().expect("allowed network");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[http]\nlisen = \"x\"\n").unwrap_err();
        assert!(err.contains("lisen"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = Config::default();
        let err = c
            .apply(&ServeArgs {
                udp_listen: Some("nope".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().starts_with("rtc.udp_listen:"), "{err}");

        c.codecs.video = vec!["h263".into()];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("codecs.video:"), "{err}");

        let mut c = Config::default();
        c.rtc.udp_listen.set_port(0);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("rtc.udp_listen")
        );

        let mut c = Config::default();
        c.rtc.ice_servers.push(IceServer {
            url: "http://x".into(),
            ..IceServer::default()
        });
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("rtc.ice_servers")
        );
    }
}
