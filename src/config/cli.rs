//! The command line of `castgate serve`: every flag with its `CASTGATE_*`
//! environment variable, and how they override the file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::{
    Access, ClusterWhep, Config, ConfigError, IceServer, LogFormat, Network, NoPublisher,
    OnConflict, StorageDelivery, StorageKind, ViewerStart, invalid,
};

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
    /// Join a cluster through this Redis: redis://[:password@]host:port or
    /// rediss:// (TLS) [default: none, a single node].
    #[arg(
        long,
        env = "CASTGATE_CLUSTER_REDIS",
        value_name = "URL",
        hide_env_values = true
    )]
    pub cluster_redis: Option<String>,
    /// This node's base URL as other nodes and clients reach it
    /// [default: http:// + the HTTP listen address].
    #[arg(long, env = "CASTGATE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Secret shared by the cluster's nodes (at least 32 bytes): signs
    /// node-to-node requests and redirect tickets.
    #[arg(
        long,
        env = "CASTGATE_CLUSTER_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,
    /// This node's id in the cluster [default: kept in the recordings folder].
    #[arg(long, env = "CASTGATE_CLUSTER_NODE_ID", value_name = "ID")]
    pub cluster_node_id: Option<String>,
    /// Seconds between cluster heartbeats [default: 2].
    #[arg(long, env = "CASTGATE_CLUSTER_HEARTBEAT", value_name = "SECS")]
    pub cluster_heartbeat: Option<f64>,
    /// Seconds after which a silent node and its streams expire [default: 6].
    #[arg(long, env = "CASTGATE_CLUSTER_EXPIRY", value_name = "SECS")]
    pub cluster_expiry: Option<f64>,
    /// WHEP for a stream carried by another node: relay (pull it once and
    /// serve it here) or redirect (307 to the origin) [default: relay].
    #[arg(long, env = "CASTGATE_CLUSTER_WHEP", value_enum)]
    pub cluster_whep: Option<ClusterWhep>,
    /// Seconds a relay keeps pulling after its last local viewer left [default: 10].
    #[arg(long, env = "CASTGATE_CLUSTER_RELAY_LINGER", value_name = "SECS")]
    pub cluster_relay_linger: Option<f64>,
    /// Send publishers (307) to the least-loaded node once this node has this
    /// many WebRTC sessions; 0 = never [default: 0].
    #[arg(
        long,
        env = "CASTGATE_CLUSTER_PLACEMENT_MAX_SESSIONS",
        value_name = "N"
    )]
    pub cluster_placement_max_sessions: Option<usize>,
    /// Where finished recordings are kept: local or s3 [default: local].
    #[arg(long, env = "CASTGATE_STORAGE", value_enum)]
    pub storage: Option<StorageKind>,
    /// The S3 API's base URL, e.g. http://127.0.0.1:9000 [default: AWS].
    #[arg(long, env = "CASTGATE_STORAGE_ENDPOINT", value_name = "URL")]
    pub storage_endpoint: Option<String>,
    /// The bucket's region [default: us-east-1].
    #[arg(long, env = "CASTGATE_STORAGE_REGION", value_name = "REGION")]
    pub storage_region: Option<String>,
    /// The bucket recordings are uploaded to.
    #[arg(long, env = "CASTGATE_STORAGE_BUCKET", value_name = "BUCKET")]
    pub storage_bucket: Option<String>,
    /// Object names start with this [default: none].
    #[arg(long, env = "CASTGATE_STORAGE_PREFIX", value_name = "PREFIX")]
    pub storage_prefix: Option<String>,
    /// Bucket in the path rather than the host name [default: true with an endpoint].
    #[arg(long, env = "CASTGATE_STORAGE_PATH_STYLE", value_name = "BOOL")]
    pub storage_path_style: Option<bool>,
    /// Access key id of the bucket's credentials.
    #[arg(
        long,
        env = "AWS_ACCESS_KEY_ID",
        value_name = "ID",
        hide_env_values = true
    )]
    pub storage_access_key_id: Option<String>,
    /// Secret access key (prefer the environment variable: a flag shows in `ps`).
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub storage_secret_access_key: Option<String>,
    /// Keep each recording's local file after it is stored [default: false].
    #[arg(long, env = "CASTGATE_STORAGE_KEEP_LOCAL", value_name = "BOOL")]
    pub storage_keep_local: Option<bool>,
    /// Stored recordings downloaded through castgate (proxy) or by a 307 to a
    /// presigned URL (redirect) [default: proxy].
    #[arg(long, env = "CASTGATE_STORAGE_DELIVERY", value_enum)]
    pub storage_delivery: Option<StorageDelivery>,
}

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
        if let Some(v) = a.cluster_redis.as_ref().filter(|v| !v.trim().is_empty()) {
            self.cluster.redis_url = Some(v.trim().to_string());
        }
        if let Some(v) = a.public_url.as_ref().filter(|v| !v.trim().is_empty()) {
            self.cluster.public_url = Some(v.trim().to_string());
        }
        if let Some(v) = a.cluster_secret.as_ref().filter(|v| !v.is_empty()) {
            self.cluster.secret = Some(v.clone());
        }
        if let Some(v) = a.cluster_node_id.as_ref().filter(|v| !v.trim().is_empty()) {
            self.cluster.node_id = Some(v.trim().to_string());
        }
        if let Some(v) = a.cluster_heartbeat {
            self.cluster.heartbeat_secs = v;
        }
        if let Some(v) = a.cluster_expiry {
            self.cluster.expiry_secs = v;
        }
        if let Some(v) = a.cluster_whep {
            self.cluster.whep = v;
        }
        if let Some(v) = a.cluster_relay_linger {
            self.cluster.relay_linger_secs = v;
        }
        if let Some(v) = a.cluster_placement_max_sessions {
            self.cluster.placement_max_sessions = v;
        }
        self.apply_storage_args(a);
        Ok(())
    }

    fn apply_storage_args(&mut self, a: &ServeArgs) {
        let given = |v: &Option<String>| {
            v.as_ref()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let s = &mut self.storage;
        if let Some(v) = a.storage {
            s.kind = v;
        }
        if let Some(v) = given(&a.storage_endpoint) {
            s.endpoint = Some(v);
        }
        if let Some(v) = given(&a.storage_region) {
            s.region = v;
        }
        if let Some(v) = given(&a.storage_bucket) {
            s.bucket = Some(v);
        }
        if let Some(v) = &a.storage_prefix {
            s.prefix = v.trim().to_string();
        }
        if let Some(v) = a.storage_path_style {
            s.path_style = Some(v);
        }
        // The standard AWS variables fill in what the file left out (a key
        // in the file wins: it was written for castgate).
        if s.access_key_id.is_none() {
            s.access_key_id = given(&a.storage_access_key_id);
        }
        if s.secret_access_key.is_none() {
            s.secret_access_key = given(&a.storage_secret_access_key);
        }
        if let Some(v) = a.storage_keep_local {
            s.keep_local = v;
        }
        if let Some(v) = a.storage_delivery {
            s.delivery = v;
        }
    }
}
