//! Command-line options of `castgate-load`: what to load, how hard, and how to report.
//!
//! The interface fixed by issue 7 (`--url --publishers --viewers-per-stream --duration
//! [--bitrate-kbps] [--codec] [--server-pid] [--token] --json`) is kept stable so that
//! scripts (`scripts/bench.sh`) can rely on it; the other options have defaults.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// The video codec publishers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VideoCodec {
    /// VP8 (libvpx, realtime).
    Vp8,
    /// H.264 constrained baseline 42e01f, packetization-mode 1 (libx264).
    H264,
}

impl VideoCodec {
    /// Lower-case name, as on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "vp8",
            VideoCodec::H264 => "h264",
        }
    }
}

/// Load generator for WHIP/WHEP servers: N publishers of pre-encoded video + Opus, M
/// WHEP viewers per stream that receive, decrypt and check every packet; reports session
/// setup, first-keyframe time, one-way delay, loss, and (with --server-pid) the server's
/// CPU per forwarded packet and memory per viewer.
///
/// Exit status: 0 all sessions worked; 1 the target is unreachable or refused every
/// publisher (message on stderr, no report); 2 bad options; 3 the report was printed but
/// some sessions failed.
#[derive(Debug, Clone, Parser)]
#[command(name = "castgate-load", version)]
pub struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,

    /// Base URL where viewers go instead of --url; repeat it to spread them
    /// round-robin over several nodes of a cluster (publishers stay on --url).
    #[arg(long = "viewer-url", value_name = "URL")]
    pub viewer_urls: Vec<String>,

    /// Number of publishers (one stream each).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,

    /// WHEP viewers per stream.
    #[arg(long, default_value_t = 1)]
    pub viewers_per_stream: usize,

    /// Seconds of steady load, counted once every viewer has been started (with
    /// --viewer-lifetime: seconds of churn).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Video bitrate of the pre-encoded clip (kbit/s).
    #[arg(long, default_value_t = 2500)]
    pub bitrate_kbps: u32,

    /// Video codec publishers send.
    #[arg(long, value_enum, default_value_t = VideoCodec::Vp8)]
    pub codec: VideoCodec,

    /// Picture size of the clip (WIDTHxHEIGHT).
    #[arg(long, default_value = "1280x720")]
    pub size: String,

    /// PID of the server process on this machine: adds its CPU time and memory to the report.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Bearer token sent on every WHIP/WHEP request.
    #[arg(long, env = "CASTGATE_LOAD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Print one JSON object at the end instead of the text report.
    #[arg(long)]
    pub json: bool,

    /// Viewers started per second, over all streams (0 = all at once, bounded by
    /// --connect-concurrency).
    #[arg(long, default_value_t = 50.0)]
    pub ramp_per_sec: f64,

    /// Viewer session setups (POST … connected) in flight at most.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Churn: each viewer leaves (DELETE) after this many seconds and viewers keep
    /// joining at --ramp-per-sec for the whole --duration (--viewers-per-stream is then
    /// ignored).
    #[arg(long)]
    pub viewer_lifetime: Option<f64>,

    /// Stream names are PREFIX-0, PREFIX-1, …
    #[arg(long, default_value = "load")]
    pub stream_prefix: String,

    /// Path of the WHIP endpoint; {stream} is replaced by the stream name.
    #[arg(long, default_value = "/whip/{stream}")]
    pub whip_path: String,

    /// Path of the WHEP endpoint; {stream} is replaced by the stream name.
    #[arg(long, default_value = "/whep/{stream}")]
    pub whep_path: String,

    /// Seconds publishers stream before the first viewer joins.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,

    /// Seconds to wait after every session ended (and the tool closed its HTTP
    /// connections) before the server's final memory reading. castgate gives freed
    /// memory back within ≈ 15 s of sessions ending.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,

    /// Folder where the encoded clips are cached between runs (they are made once with
    /// the ffmpeg CLI). Default: the OS temp folder + castgate-load-fixtures.
    #[arg(long)]
    pub fixture_dir: Option<PathBuf>,

    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    /// Checks values clap cannot (ranges, the picture size), naming the option.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "--url must start with http:// or https:// (got {:?})",
                self.url
            ));
        }
        if let Some(u) = self
            .viewer_urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(format!(
                "--viewer-url must start with http:// or https:// (got {u:?})"
            ));
        }
        if self.publishers == 0 {
            return Err("--publishers must be at least 1".into());
        }
        // A day bounds every duration (no Duration/Instant overflow).
        const DAY: f64 = 86_400.0;
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= DAY) {
            return Err("--duration must be a positive number of seconds, at most 86400".into());
        }
        if !(self.ramp_per_sec.is_finite()
            && (self.ramp_per_sec == 0.0 || (0.001..=1e6).contains(&self.ramp_per_sec)))
        {
            return Err("--ramp-per-sec must be 0 (all at once) or within 0.001..=1000000".into());
        }
        if self.connect_concurrency == 0 {
            return Err("--connect-concurrency must be at least 1".into());
        }
        if let Some(l) = self.viewer_lifetime
            && !(l.is_finite() && l > 0.0 && l <= DAY)
        {
            return Err(
                "--viewer-lifetime must be a positive number of seconds, at most 86400".into(),
            );
        }
        if self.viewer_lifetime.is_some() && self.ramp_per_sec <= 0.0 {
            return Err("--viewer-lifetime needs a --ramp-per-sec above 0".into());
        }
        if !(50..=50_000).contains(&self.bitrate_kbps) {
            return Err("--bitrate-kbps must be within 50..=50000".into());
        }
        let in_day = |v: f64| v.is_finite() && (0.0..=DAY).contains(&v);
        if !in_day(self.warmup) || !in_day(self.settle) {
            return Err("--warmup and --settle must be 0 to 86400 seconds".into());
        }
        self.picture_size()?;
        for (name, path) in [
            ("--whip-path", &self.whip_path),
            ("--whep-path", &self.whep_path),
        ] {
            if !path.starts_with('/') || !path.contains("{stream}") {
                return Err(format!(
                    "{name} must start with / and contain {{stream}} (got {path:?})"
                ));
            }
        }
        Ok(())
    }

    /// The picture size as (width, height).
    pub fn picture_size(&self) -> Result<(u32, u32), String> {
        let bad = || {
            format!(
                "--size must be WIDTHxHEIGHT, e.g. 1280x720 (got {:?})",
                self.size
            )
        };
        let (w, h) = self.size.split_once('x').ok_or_else(bad)?;
        let w: u32 = w.parse().map_err(|_| bad())?;
        let h: u32 = h.parse().map_err(|_| bad())?;
        if !(16..=4096).contains(&w)
            || !(16..=4096).contains(&h)
            || !w.is_multiple_of(2)
            || !h.is_multiple_of(2)
        {
            return Err(bad());
        }
        Ok((w, h))
    }

    /// Name of stream number `i`.
    pub fn stream_name(&self, i: usize) -> String {
        format!("{}-{i}", self.stream_prefix)
    }

    /// WHIP URL of a stream.
    pub fn whip_url(&self, stream: &str) -> String {
        self.endpoint(&self.whip_path, stream)
    }

    /// WHEP URL of a stream for viewer number `k` (spread over --viewer-url).
    pub fn whep_url(&self, stream: &str, k: u64) -> String {
        let base = match self.viewer_urls.len() {
            0 => &self.url,
            n => &self.viewer_urls[(k as usize) % n],
        };
        endpoint(base, &self.whep_path, stream)
    }

    fn endpoint(&self, path: &str, stream: &str) -> String {
        endpoint(&self.url, path, stream)
    }
}

fn endpoint(base: &str, path: &str, stream: &str) -> String {
    format!(
        "{}{}",
        base.trim_end_matches('/'),
        path.replace("{stream}", stream)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["castgate-load", "--url", "http://127.0.0.1:8080/"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn the_issue_interface_parses() {
        let a = args(&[
            "--publishers",
            "2",
            "--viewers-per-stream",
            "3",
            "--duration",
            "5",
            "--bitrate-kbps",
            "1000",
            "--codec",
            "h264",
            "--server-pid",
            "42",
            "--token",
            "t",
            "--json",
        ]);
        assert_eq!(a.publishers, 2);
        assert_eq!(a.viewers_per_stream, 3);
        assert_eq!(a.codec, VideoCodec::H264);
        assert_eq!(a.server_pid, Some(42));
        assert!(a.json);
        assert!(a.validate().is_ok());
        assert_eq!(a.whep_url("load-1", 0), "http://127.0.0.1:8080/whep/load-1");
        assert_eq!(a.stream_name(1), "load-1");
    }

    #[test]
    fn viewers_spread_over_the_viewer_urls() {
        let a = args(&[
            "--viewer-url",
            "http://127.0.0.1:8081",
            "--viewer-url",
            "http://127.0.0.1:8082/",
        ]);
        assert!(a.validate().is_ok());
        assert_eq!(a.whip_url("s"), "http://127.0.0.1:8080/whip/s");
        assert_eq!(a.whep_url("s", 0), "http://127.0.0.1:8081/whep/s");
        assert_eq!(a.whep_url("s", 1), "http://127.0.0.1:8082/whep/s");
        assert_eq!(a.whep_url("s", 2), "http://127.0.0.1:8081/whep/s");
        assert!(
            args(&["--viewer-url", "ftp://x"])
                .validate()
                .unwrap_err()
                .contains("--viewer-url")
        );
    }

    #[test]
    fn bad_values_are_named() {
        assert!(
            args(&["--size", "12x"])
                .validate()
                .unwrap_err()
                .contains("--size")
        );
        assert!(
            args(&["--publishers", "0"])
                .validate()
                .unwrap_err()
                .contains("--publishers")
        );
        assert!(
            args(&["--whep-path", "/x"])
                .validate()
                .unwrap_err()
                .contains("{stream}")
        );
        assert!(
            args(&["--viewer-lifetime", "1", "--ramp-per-sec", "0"])
                .validate()
                .is_err()
        );
        assert_eq!(args(&["--size", "640x360"]).picture_size(), Ok((640, 360)));
    }
}
