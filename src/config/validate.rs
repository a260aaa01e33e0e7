//! Checks of the values types alone cannot make: ranges, combinations,
//! formats. Each refusal names its key. Nothing here reads a file or the
//! network: certificates, keys and URLs are checked where they are used
//! (`server::check`), with errors in the same form.

use super::{Config, ConfigError, EVENT_TYPES, invalid};

impl Config {
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
        if !(self.record.retention_check_secs >= 1.0
            && self.record.retention_check_secs <= 86_400.0)
        {
            return Err(invalid(
                "record.retention_check_secs",
                "must be between 1 and 86400",
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
        let snap = &self.snapshots;
        if !(16..=3840).contains(&snap.width) || !(16..=2160).contains(&snap.height) {
            return Err(invalid(
                "snapshots.width",
                "width must be 16–3840 and height 16–2160",
            ));
        }
        if snap.cache_ms > 60_000 {
            return Err(invalid("snapshots.cache_ms", "must be at most 60000"));
        }
        if snap.max_concurrent > 64 {
            return Err(invalid("snapshots.max_concurrent", "must be at most 64"));
        }
        if self.record.export_max_concurrent > 64 {
            return Err(invalid(
                "record.export_max_concurrent",
                "must be at most 64 (each export takes a core)",
            ));
        }
        if self.record.export_role == crate::config::Role::Publish {
            return Err(invalid(
                "record.export_role",
                "must be \"view\" or \"admin\"",
            ));
        }
        if self.record.dir.as_os_str().is_empty() {
            return Err(invalid("record.dir", "must not be empty"));
        }
        self.validate_restream()?;
        self.validate_ops()?;
        self.validate_cluster()?;
        self.validate_storage()?;
        self.auth.validate()?;
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err(invalid(
                "http.tls_cert",
                "tls_cert and tls_key go together: set both or neither",
            ));
        }
        Ok(())
    }

    fn validate_storage(&self) -> Result<(), ConfigError> {
        let s = &self.storage;
        if !s.enabled() {
            return Ok(());
        }
        match s.bucket.as_deref() {
            None | Some("") => {
                return Err(invalid(
                    "storage.bucket",
                    "storage.kind = \"s3\" needs a bucket (--storage-bucket, CASTGATE_STORAGE_BUCKET)",
                ));
            }
            Some(b) if !valid_bucket(b) => {
                return Err(invalid(
                    "storage.bucket",
                    format!(
                        "{b:?} is not a bucket name (3 to 63 lowercase letters, digits, '.', '-')"
                    ),
                ));
            }
            Some(_) => {}
        }
        if let Some(e) = &s.endpoint {
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(['?', '#', ' ', '@'])) {
                return Err(invalid(
                    "storage.endpoint",
                    format!(
                        "{:?} is not an http:// or https:// base URL (credentials go in \
                         access_key_id / secret_access_key, not the URL)",
                        super::redact_url(e)
                    ),
                ));
            }
        }
        if s.region.trim().is_empty() {
            return Err(invalid(
                "storage.region",
                "must not be empty (e.g. us-east-1, or auto for R2)",
            ));
        }
        let prefix = s.prefix.trim_matches('/');
        if !prefix.is_empty()
            && prefix.split('/').any(|seg| {
                seg.is_empty()
                    || seg == "."
                    || seg == ".."
                    || !seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            })
        {
            return Err(invalid(
                "storage.prefix",
                "must be a plain path such as \"castgate/\" or \"media/recordings/\": letters, digits, '-', '_', '.' between single '/'",
            ));
        }
        if !(5..=5120).contains(&s.part_mib) {
            return Err(invalid(
                "storage.part_mib",
                "must be between 5 and 5120 (S3's smallest and largest part, in MiB)",
            ));
        }
        if !(s.timeout_secs > 0.0 && s.timeout_secs <= 3600.0) {
            return Err(invalid(
                "storage.timeout_secs",
                "must be above 0 and at most 3600",
            ));
        }
        if !(s.retry_max_secs >= 1.0 && s.retry_max_secs <= 86_400.0) {
            return Err(invalid(
                "storage.retry_max_secs",
                "must be between 1 and 86400",
            ));
        }
        if !(s.refresh_secs >= 0.5 && s.refresh_secs <= 86_400.0) {
            return Err(invalid(
                "storage.refresh_secs",
                "must be between 0.5 and 86400",
            ));
        }
        if !(60..=604_800).contains(&s.presign_secs) {
            return Err(invalid(
                "storage.presign_secs",
                "must be between 60 and 604800 (S3 signs for at most 7 days)",
            ));
        }
        if !self.record.enabled {
            return Err(invalid(
                "storage.kind",
                "uploads start from the recordings folder: s3 storage needs record.enabled = true",
            ));
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        let Some(url) = &c.redis_url else {
            return Ok(());
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(invalid(
                "cluster.redis_url",
                format!(
                    "{:?} is not a redis:// or rediss:// URL",
                    super::redact_url(url)
                ),
            ));
        }
        match &c.secret {
            None => {
                return Err(invalid(
                    "cluster.secret",
                    "a cluster needs a secret shared by its nodes (--cluster-secret, \
                     CASTGATE_CLUSTER_SECRET): at least 32 bytes, e.g. from `openssl rand -hex 32`",
                ));
            }
            Some(s) if s.len() < 32 => {
                return Err(invalid(
                    "cluster.secret",
                    "must be at least 32 bytes (e.g. from `openssl rand -hex 32`)",
                ));
            }
            Some(_) => {}
        }
        match &c.public_url {
            Some(u) => {
                let rest = u
                    .strip_prefix("http://")
                    .or_else(|| u.strip_prefix("https://"));
                if rest.is_none_or(|r| r.is_empty() || r.contains(['?', '#', ' '])) {
                    return Err(invalid(
                        "cluster.public_url",
                        format!("{u:?} is not an http:// or https:// base URL"),
                    ));
                }
            }
            None if self.http.listen.ip().is_unspecified() => {
                return Err(invalid(
                    "cluster.public_url",
                    format!(
                        "http.listen is {} (every address): say how other nodes and clients \
                         reach this one, e.g. --public-url http://10.0.0.5:{}",
                        self.http.listen,
                        self.http.listen.port()
                    ),
                ));
            }
            None => {}
        }
        if let Some(id) = &c.node_id
            && !super::valid_node_id(id)
        {
            return Err(invalid(
                "cluster.node_id",
                format!("{id:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
            ));
        }
        if !(0.1..=60.0).contains(&c.heartbeat_secs) {
            return Err(invalid(
                "cluster.heartbeat_secs",
                "must be between 0.1 and 60 seconds",
            ));
        }
        if !(2.0 * c.heartbeat_secs..=600.0).contains(&c.expiry_secs) {
            return Err(invalid(
                "cluster.expiry_secs",
                "must be at least twice cluster.heartbeat_secs (one missed beat must not \
                 expire a node) and at most 600 seconds",
            ));
        }
        if !(0.0..=3600.0).contains(&c.relay_linger_secs) {
            return Err(invalid(
                "cluster.relay_linger_secs",
                "must be between 0 and 3600 seconds",
            ));
        }
        if !(5..=3600).contains(&c.ticket_secs) {
            return Err(invalid(
                "cluster.ticket_secs",
                "must be between 5 and 3600 seconds",
            ));
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
        if !(16..=8192).contains(&r.video_width) || !(16..=8192).contains(&r.video_height) {
            return Err(invalid(
                "restream.video_width",
                "video_width and video_height must be between 16 and 8192 pixels",
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
        if r.allowed_hosts.iter().any(|h| h.as_str().trim().is_empty()) {
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
        }
        Ok(())
    }
}

/// Whether `b` is a bucket name S3 accepts (3–63 of `a-z 0-9 . -`, starting
/// and ending with a letter or digit).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}
