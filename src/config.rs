//! Typed configuration: defaults, then an optional TOML file, then `CASTGATE_*`
//! environment variables, then command-line flags (each later source wins).
//!
//! Every option has a working default for localhost, so `castgate serve` needs
//! no file at all. [`Config::validate`] turns a bad value into a
//! [`ConfigError`] that names the key and the reason; `main` prints it on one
//! line and exits with code 2.
//!
//! Here: the types and their defaults. Beside it: `load` (file and
//! defaults), `cli` (flags and environment), `validate` (values), `auth`
//! (the `[auth]` section), `live` (what a reload may change). The config
//! reads no certificate, key or URL: the parts that use them do, at start
//! and on reload (`server::check`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::address::{Network, in_networks};
pub use crate::names::Pattern;

mod auth;
mod cli;
pub mod live;
mod load;
mod validate;
pub use auth::{Access, AccessRule, AuthConfig, MIN_JWT_SECRET, Role};
pub use cli::ServeArgs;
pub use load::DEFAULT_CONFIG_FILE;

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
    /// Several nodes as one, through a shared Redis (off by default).
    pub cluster: ClusterConfig,
    /// Where finished recordings are kept: this disk, or also a bucket.
    pub storage: StorageConfig,
    /// Pictures of live streams (`GET /api/streams/{name}/snapshot.jpg`).
    pub snapshots: SnapshotConfig,
}

/// How a node answers a WHEP request for a stream another node carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterWhep {
    /// Pull the stream from its origin node once (castgate as a WHEP
    /// client), shared by every local viewer, and serve it here.
    #[default]
    Relay,
    /// `307 Temporary Redirect` to the origin node's WHEP URL, with a
    /// short-lived signed ticket in it (browsers drop `Authorization` on a
    /// cross-origin redirect).
    Redirect,
}

/// Several castgate nodes sharing one Redis: a node directory, a
/// cluster-wide stream directory (one origin per stream name), viewers on
/// any node. Off while `redis_url` is unset: a single node needs no Redis.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[:password@]host:port[/db]` or `rediss://…` (TLS). The
    /// password is a secret: never logged or shown.
    pub redis_url: Option<String>,
    /// This node's base URL as other nodes and clients reach it (e.g.
    /// `https://node-a.example.com`); default `http://` + `http.listen`
    /// when that is a specific address.
    pub public_url: Option<String>,
    /// Shared by every node of the cluster (at least 32 bytes): signs
    /// node-to-node requests and redirect tickets. A secret.
    pub secret: Option<String>,
    /// This node's id, stable across restarts; default: kept in
    /// `node-id` in the recordings folder, made from the host name and the
    /// HTTP port on the first start.
    pub node_id: Option<String>,
    /// Seconds between heartbeats (node record and stream claims refreshed).
    pub heartbeat_secs: f64,
    /// Seconds after the last heartbeat that a node and its stream claims
    /// expire (a node that dies is forgotten after this).
    pub expiry_secs: f64,
    /// WHEP for a stream on another node: `relay` (pull it once from its
    /// origin and serve it here) or `redirect` (307 to the origin).
    pub whep: ClusterWhep,
    /// Seconds a redirect ticket stays valid.
    pub ticket_secs: u64,
    /// Seconds a relay keeps pulling after its last local viewer left (a
    /// viewer who comes back meanwhile starts at once).
    pub relay_linger_secs: f64,
    /// Placement: a WHIP request to a node with at least this many WebRTC
    /// sessions is sent (307) to the least-loaded node below it; 0 = off.
    pub placement_max_sessions: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            public_url: None,
            secret: None,
            node_id: None,
            heartbeat_secs: 2.0,
            expiry_secs: 6.0,
            whep: ClusterWhep::Relay,
            ticket_secs: 60,
            relay_linger_secs: 10.0,
            placement_max_sessions: 0,
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("public_url", &self.public_url)
            .field("secret", &self.secret.as_ref().map(|_| "****"))
            .field("node_id", &self.node_id)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("expiry_secs", &self.expiry_secs)
            .field("whep", &self.whep)
            .field("ticket_secs", &self.ticket_secs)
            .field("relay_linger_secs", &self.relay_linger_secs)
            .field("placement_max_sessions", &self.placement_max_sessions)
            .finish()
    }
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.redis_url.is_some()
    }

    /// `heartbeat_secs` as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_secs)
    }

    /// `expiry_secs` as a duration.
    pub fn expiry(&self) -> Duration {
        Duration::from_secs_f64(self.expiry_secs)
    }

    /// This node's base URL without a trailing `/`: `public_url`, else
    /// `http(s)://` + `http.listen` (validation refuses an unspecified
    /// listen address without `public_url`).
    pub fn base_url(&self, http: &HttpConfig) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let scheme = if http.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", http.listen)
            }
        }
    }
}

/// Where finished recordings are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Only on this machine's disk (`record.dir`).
    #[default]
    Local,
    /// Uploaded to an S3-compatible bucket as each file is finished (AWS S3,
    /// Cloudflare R2, Backblaze B2, Ceph, Garage, MinIO, …); the local file
    /// is the crash-safe write path and the upload queue.
    S3,
}

/// How a stored recording is downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageDelivery {
    /// castgate reads the object (with the client's Range) and passes it on:
    /// seeking works for as long as the page is open.
    #[default]
    Proxy,
    /// 307 to a presigned URL of the object (no traffic through castgate;
    /// the URL expires after `presign_secs`).
    Redirect,
}

/// Recordings in object storage (`[storage]`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `local` (the default) or `s3`.
    pub kind: StorageKind,
    /// The S3 API's base URL (`https://s3.eu-central-1.amazonaws.com`,
    /// `http://127.0.0.1:9000`); default: AWS for `region`.
    pub endpoint: Option<String>,
    /// The bucket's region (`auto` for R2).
    pub region: String,
    /// The bucket (created beforehand).
    pub bucket: Option<String>,
    /// Objects are named `PREFIX` + `STREAM/FILE`; castgate lists, and
    /// retention deletes, only under it.
    pub prefix: String,
    /// Address the bucket in the path (`endpoint/bucket/key`) instead of the
    /// host name; default: true with an `endpoint` (most self-hosted servers),
    /// false for AWS.
    pub path_style: Option<bool>,
    /// Access key id; default `AWS_ACCESS_KEY_ID`, else `credentials_file`.
    pub access_key_id: Option<String>,
    /// Secret access key; default `AWS_SECRET_ACCESS_KEY`, else
    /// `credentials_file`. A secret: never logged or shown.
    pub secret_access_key: Option<String>,
    /// A file with `aws_access_key_id = …` and `aws_secret_access_key = …`
    /// lines (the `~/.aws/credentials` form; the first of each is used).
    pub credentials_file: Option<PathBuf>,
    /// Keep the local file after it is stored (it is then served from disk).
    pub keep_local: bool,
    /// How stored recordings are downloaded: `proxy` or `redirect`.
    pub delivery: StorageDelivery,
    /// Seconds a presigned URL (`delivery = "redirect"`) stays valid, at
    /// least; a long recording gets twice its duration (at most 7 days).
    pub presign_secs: u64,
    /// Size of each uploaded part in MiB (5 to 5120): every part but the
    /// last has this size (R2 requires equal parts); a file of more than
    /// 10,000 parts gets larger ones. One part is held in memory at a time.
    pub part_mib: u64,
    /// Seconds a storage request may go without progress (no byte received)
    /// before it is abandoned and retried.
    pub timeout_secs: f64,
    /// Longest wait between two attempts of a failing upload (the wait
    /// doubles from 1 s up to this); uploads are retried for as long as needed.
    pub retry_max_secs: f64,
    /// Seconds between two readings of the bucket's listing (what other nodes
    /// stored shows up on this node's list within this).
    pub refresh_secs: f64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: StorageKind::Local,
            endpoint: None,
            region: "us-east-1".into(),
            bucket: None,
            prefix: String::new(),
            path_style: None,
            access_key_id: None,
            secret_access_key: None,
            credentials_file: None,
            keep_local: false,
            delivery: StorageDelivery::Proxy,
            presign_secs: 3600,
            part_mib: 8,
            timeout_secs: 30.0,
            retry_max_secs: 300.0,
            refresh_secs: 10.0,
        }
    }
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint.as_deref().map(redact_url))
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "****"),
            )
            .field("credentials_file", &self.credentials_file)
            .field("keep_local", &self.keep_local)
            .field("delivery", &self.delivery)
            .field("presign_secs", &self.presign_secs)
            .field("part_mib", &self.part_mib)
            .field("timeout_secs", &self.timeout_secs)
            .field("retry_max_secs", &self.retry_max_secs)
            .field("refresh_secs", &self.refresh_secs)
            .finish()
    }
}

impl StorageConfig {
    /// Whether finished recordings go to a bucket.
    pub fn enabled(&self) -> bool {
        self.kind == StorageKind::S3
    }

    /// `prefix` ending in `/` (or empty).
    pub fn key_prefix(&self) -> String {
        let p = self.prefix.trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        }
    }

    /// Whether the bucket is addressed in the path.
    pub fn path_style(&self) -> bool {
        self.path_style.unwrap_or(self.endpoint.is_some())
    }
}

/// Whether `id` can name a node: 1 to 64 letters, digits, `-`, `_`, `.`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `url` with any user name and password replaced by `****`, for logs and
/// error messages (`redis://:****@host:6379`).
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://****@{host}{tail}"),
                None => url.to_string(),
            }
        }
        None => "****".to_string(),
    }
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
    pub streams: Vec<Pattern>,
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
    pub allowed_hosts: Vec<Pattern>,
    /// AAC bitrate (bits/s) of the Opus → AAC transcode.
    pub audio_bitrate: u32,
    /// H.264 bitrate (bits/s) when VP8/VP9/AV1 video is transcoded (libx264).
    pub video_bitrate: u32,
    /// FFmpeg H.264 encoder for transcoded video (`libx264`; e.g.
    /// `h264_vaapi` or `libopenh264` where the system FFmpeg has them).
    pub video_encoder: String,
    /// Width of transcoded video: every picture, whatever size the publisher
    /// sends at the moment, is scaled into `video_width` x `video_height`
    /// (aspect kept, centred on black), so platforms see one size for the
    /// whole broadcast. Fitted inside `max_width` x `max_height`.
    pub video_width: u32,
    /// Height of transcoded video (see `video_width`).
    pub video_height: u32,
    /// Largest width of transcoded video: `video_width` x `video_height` is
    /// shrunk to fit (aspect kept).
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
    pub hls_streams: Vec<Pattern>,
    /// Folder of the HLS outputs (one `p<pid>-s<id>` folder per live stream,
    /// removed when it ends; those of processes no longer running are removed
    /// at startup, so several processes may share it).
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
            video_width: 1280,
            video_height: 720,
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
    pub streams: Vec<Pattern>,
    /// Stream name patterns never to record (wins over `streams`).
    pub exclude: Vec<Pattern>,
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
    /// Seconds between two retention passes (the first runs at start-up).
    pub retention_check_secs: f64,
    /// The file H.264 streams are recorded to: `matroska` (`.mkv`, Cues at
    /// the front) or `mp4` (fragmented MP4: plays in QuickTime, iOS and
    /// editors as it is; fragments of at most `cluster_ms`, so a crash loses
    /// as much as with Matroska).
    pub h264_container: H264Container,
    /// Exports (VP8/VP9 recordings encoded to H.264 MP4) running at once,
    /// one core each; 0 = half the cores (at least one). Needs a restart.
    pub export_max_concurrent: usize,
    /// Who may start and cancel exports: `view` (anyone who may watch the
    /// recording, so the page's MP4 button works for them) or `admin`.
    /// Needs a restart.
    pub export_role: Role,
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
            retention_check_secs: 60.0,
            h264_container: H264Container::Matroska,
            export_max_concurrent: 0,
            export_role: Role::View,
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
    /// Smallest gap between two keyframe requests to one publisher (requests
    /// in between merge). Above 300 ms: libwebrtc (every browser) drops a
    /// request that comes within 300 ms of the last one it acted on.
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
            min_interval_ms: 350,
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
pub const EVENT_TYPES: [&str; 13] = [
    "stream_started",
    "stream_ended",
    "viewer_joined",
    "viewer_left",
    "recording_started",
    "recording_finalized",
    "recording_stored",
    "recording_failed",
    "recording_interrupted",
    "export_finished",
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

/// The container H.264 recordings are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum H264Container {
    /// Matroska (`.mkv`).
    #[default]
    Matroska,
    /// Fragmented MP4 (`.mp4`).
    Mp4,
}

/// Pictures of live streams, decoded from the latest keyframe only when
/// asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Largest picture width: a bigger stream is scaled down to fit (aspect
    /// kept), a smaller one is never scaled up.
    pub width: u32,
    /// Largest picture height.
    pub height: u32,
    /// A picture is reused for this long (ms) before the next request
    /// decodes a newer one.
    pub cache_ms: u64,
    /// Pictures decoded at once (each on one core); requests beyond wait
    /// briefly, then get `503`. 0 = half the cores (at least one).
    pub max_concurrent: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            width: 640,
            height: 360,
            cache_ms: 2000,
            max_concurrent: 0,
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

/// `n`, or with 0 ("auto") half the cores, at least one: how many
/// CPU-heavy jobs (exports, picture decodes) may run at once.
pub fn or_half_the_cores(n: usize) -> usize {
    if n > 0 {
        return n;
    }
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
}

impl Config {
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
    fn restream_section_is_validated() {
        let mut c = Config::from_toml(
            "[restream]\nallowed_hosts = [\"*.youtube.com\"]\n\
             [[restream.targets]]\nstreams = [\"studio-*\"]\n\
             url = \"rtmp://a.rtmp.youtube.com/live2/SECRET\"\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        c.restream.targets[0].streams.clear();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("restream.targets"), "{err}");
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

        let c = Config::from_toml("[restream]\nvideo_width = 8\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("restream.video_width"), "{err}");
    }

    #[test]
    fn a_cluster_needs_its_secret_and_an_address_to_be_reached_at() {
        let base = "[cluster]\nredis_url = \"redis://:pw@127.0.0.1:6379\"\n";
        let err = |toml: &str| {
            Config::from_toml(toml)
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        let e = err(base).unwrap_err();
        assert!(e.starts_with("cluster.secret"), "{e}");
        let secret = "secret = \"0123456789abcdef0123456789abcdef\"\n";
        assert!(
            err(&format!("{base}secret = \"short\"\n"))
                .unwrap_err()
                .starts_with("cluster.secret")
        );
        // Listening on 127.0.0.1:8080 is an address others can be told.
        assert!(err(&format!("{base}{secret}")).is_ok());
        let e = err(&format!(
            "[http]\nlisten = \"0.0.0.0:8080\"\n{base}{secret}"
        ))
        .unwrap_err();
        assert!(e.starts_with("cluster.public_url"), "{e}");
        assert!(err(&format!("[http]\nlisten = \"0.0.0.0:8080\"\n{base}{secret}public_url = \"https://a.example.com\"\n")).is_ok());
        let e = err(&format!("{base}{secret}public_url = \"ftp://x\"\n")).unwrap_err();
        assert!(e.starts_with("cluster.public_url"), "{e}");
        let e = err("[cluster]\nredis_url = \"http://x\"\n").unwrap_err();
        assert!(e.starts_with("cluster.redis_url"), "{e}");
        let e = err(&format!("{base}{secret}node_id = \"a b\"\n")).unwrap_err();
        assert!(e.starts_with("cluster.node_id"), "{e}");
        let e = err(&format!(
            "{base}{secret}heartbeat_secs = 2.0\nexpiry_secs = 3.0\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("cluster.expiry_secs"), "{e}");
        // Off by default, and then nothing is asked for.
        assert!(!Config::default().cluster.enabled());
    }

    #[test]
    fn redis_passwords_are_masked_wherever_shown() {
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://****@h:6379/0");
        assert_eq!(redact_url("rediss://user:pw@h"), "rediss://****@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("garbage"), "****");
        let c = ClusterConfig {
            redis_url: Some("redis://:hunter2@h:1".into()),
            secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..ClusterConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("0123456789"),
            "{shown}"
        );
    }
}
