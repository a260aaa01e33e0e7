//! Benchmark of castgate's core (issue 2's figures). It prints figures; it asserts nothing.
//!
//! ```sh
//! cargo build --release --bin castgate
//! cargo run --release --example bench_core            # ~2 minutes
//! cargo run --release --example bench_core -- --quick # ~30 s
//! cargo run --release --example bench_core -- --simulcast # figures 2 and 3, simulcast
//! ```
//!
//! The gateway runs as a separate process (`target/release/castgate serve` on free
//! loopback ports) so that its CPU time (`/proc/<pid>/stat`) and resident memory
//! (`/proc/<pid>/status` VmRSS) are its own. The publisher and the viewers are the real
//! str0m peers of the integration tests (`tests/common`), running in this process.
//!
//! Figures:
//! 1. WHEP POST → first complete keyframe at the viewer, per `--viewer-start` mode,
//!    over sequential joins at random moments of the publisher's 1 s keyframe interval.
//!    "First keyframe" = the first video frame str0m hands the viewer, checked to be a
//!    keyframe byte-identical to one the encoder made (so it decodes); no decoder runs.
//!    Cases: `fresh`, `cached` (and, without `--quick`, `auto`) with a publisher that
//!    ignores keyframe requests; `fresh` with one that answers them after ~100 ms.
//! 2. Gateway CPU time per 1000 forwarded packets (UDP datagrams out), 1 publisher and
//!    N viewers (default 50).
//! 3. Gateway resident memory per viewer: (RSS with N viewers − RSS with 0) / N.
//!
//! With `--simulcast` (figures 2 and 3 only) the publisher sends three layers
//! (the clip at 1280x720, and 640x360 / 320x180 encodings of the same picture)
//! and the viewers are automatic: each runs castgate's bandwidth estimation
//! (transport-wide congestion control) and gets the layer it carries.

// The end-to-end tests' helpers; a benchmark uses a few of them.
#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use common::media::{EncodedFrame, opus_packets};
use common::peer::{Kind, PeerOptions, Publisher, VideoCodec, Viewer, http_client};

/// Stream name used throughout.
const STREAM: &str = "bench";
/// Video frame rate of the clip.
const FPS: u64 = 30;
/// Keyframe interval of the clip, in frames (1 s).
const GOP: u64 = 30;
/// How long a publisher that answers keyframe requests takes to do so (browser-like).
const ANSWER_DELAY: Duration = Duration::from_millis(100);
/// A frame sent later than this after its due time counts as late.
const LATE: Duration = Duration::from_millis(50);

/// What one run does.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    /// Three layers and automatic viewers (see the module's doc).
    simulcast: bool,
    binary: PathBuf,
    viewers: usize,
    joins: usize,
    clip_secs: u64,
    join_warmup: Duration,
    load_warmup: Duration,
    window: Duration,
    /// (label, `--viewer-start` value, publisher answers keyframe requests)
    join_cases: Vec<(&'static str, &'static str, bool)>,
}

impl Plan {
    fn from_args() -> anyhow::Result<Plan> {
        let mut quick = false;
        let mut simulcast = false;
        let mut viewers = None;
        let mut joins = None;
        let mut window = None;
        let mut binary = None;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match a.as_str() {
                "--quick" => quick = true,
                "--simulcast" => simulcast = true,
                "--viewers" => viewers = Some(value("--viewers")?.parse()?),
                "--joins" => joins = Some(value("--joins")?.parse()?),
                "--window" => window = Some(value("--window")?.parse::<u64>()?),
                "--bin" => binary = Some(PathBuf::from(value("--bin")?)),
                "-h" | "--help" => {
                    println!(
                        "bench_core [--quick] [--simulcast] [--viewers N] [--joins N] [--window SECS] [--bin PATH]\n\
                         default: ~2 min (20 joins per case, 50 viewers, 15 s window); --quick: ~30 s"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (try --help)"),
            }
        }
        let binary = match binary {
            Some(b) => b,
            None => {
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
                target.join("release").join("castgate")
            }
        };
        if !binary.is_file() {
            bail!(
                "{} is missing: build it first with `cargo build --release --bin castgate` \
                 (or pass --bin PATH)",
                binary.display()
            );
        }
        let mut join_cases = vec![("fresh", "fresh", false), ("cached", "cached", false)];
        if simulcast {
            join_cases.clear();
        } else if !quick {
            join_cases.push(("auto", "auto", false));
            join_cases.push(("fresh", "fresh", true));
        }
        Ok(Plan {
            quick,
            simulcast,
            binary,
            viewers: viewers.unwrap_or(50),
            joins: joins.unwrap_or(if quick { 8 } else { 20 }),
            clip_secs: 10,
            join_warmup: Duration::from_millis(2500),
            load_warmup: Duration::from_secs(if quick { 3 } else { 5 }),
            window: Duration::from_secs(window.unwrap_or(if quick { 6 } else { 15 })),
            join_cases,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Media
// ---------------------------------------------------------------------------------------

/// The looped test clip: 1280x720 30 fps VP8 (~2 Mbit/s, keyframe every 30 frames) + Opus.
struct Clip {
    video: Vec<EncodedFrame>,
    /// With `--simulcast`: the same pictures at 640x360 and 320x180 (rids
    /// `m`, `l`), frame for frame.
    lower: Vec<(&'static str, Vec<EncodedFrame>)>,
    audio: Vec<EncodedFrame>,
    secs: u64,
    keyframes: HashSet<Vec<u8>>,
    video_kbps: f64,
    audio_kbps: f64,
}

impl Clip {
    fn make(secs: u64, simulcast: bool) -> anyhow::Result<Clip> {
        let video = encode_vp8(secs, "1280x720", "2M")?;
        let lower = if simulcast {
            vec![
                ("m", encode_vp8(secs, "640x360", "600k")?),
                ("l", encode_vp8(secs, "320x180", "150k")?),
            ]
        } else {
            Vec::new()
        };
        let n = video.len() as u64;
        if n < GOP || !video[0].keyframe {
            bail!("the VP8 clip has {n} frames and must start with a keyframe");
        }
        let audio_loop = secs * 48_000;
        let audio: Vec<EncodedFrame> = opus_packets(secs as u32)
            .into_iter()
            .filter(|p| p.rtp_time < audio_loop)
            .collect();
        let keyframes = video
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.data.clone())
            .collect();
        let vbytes: usize = video.iter().map(|f| f.data.len()).sum();
        let abytes: usize = audio.iter().map(|f| f.data.len()).sum();
        let video_secs = n as f64 / FPS as f64;
        Ok(Clip {
            video_kbps: vbytes as f64 * 8.0 / 1000.0 / video_secs,
            audio_kbps: abytes as f64 * 8.0 / 1000.0 / secs as f64,
            video,
            lower,
            audio,
            secs,
            keyframes,
        })
    }

    /// Video frames in one loop of the clip.
    fn video_loop_len(&self) -> u64 {
        self.video.len() as u64
    }

    fn next_keyframe(&self, from: usize) -> usize {
        (from..self.video.len())
            .chain(0..from)
            .find(|&i| self.video[i].keyframe)
            .unwrap_or(0)
    }
}

/// `secs` of the test picture at `size` in VP8 at `bitrate` (keyframe every [`GOP`]).
fn encode_vp8(secs: u64, size: &str, bitrate: &str) -> anyhow::Result<Vec<EncodedFrame>> {
    let dir =
        std::env::temp_dir().join(format!("castgate-bench-clip-{}-{size}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("v.ivf");
    let duration = secs.to_string();
    let gop = GOP.to_string();
    let source = format!("testsrc2=size={size}:rate=30");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", &source])
        .args(["-t", &duration, "-pix_fmt", "yuv420p", "-c:v", "libvpx"])
        .args(["-deadline", "realtime", "-cpu-used", "8", "-b:v", bitrate])
        .args(["-g", &gop, "-keyint_min", &gop])
        .args(["-auto-alt-ref", "0", "-lag-in-frames", "0", "-f", "ivf"])
        .arg(&out)
        .status()
        .context("running ffmpeg (install it with scripts/setup.sh --test)")?;
    if !status.success() {
        bail!("ffmpeg failed to encode the VP8 clip ({status})");
    }
    let ivf = std::fs::read(&out)?;
    let _ = std::fs::remove_dir_all(&dir);
    parse_ivf(&ivf)
}

/// Frames of an IVF file (32-byte header, 12-byte frame headers).
fn parse_ivf(d: &[u8]) -> anyhow::Result<Vec<EncodedFrame>> {
    if !d.starts_with(b"DKIF") || d.len() < 32 {
        bail!("ffmpeg's output is not an IVF file");
    }
    let u32_at = |at: usize| {
        d.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let header_len = usize::from(u16::from_le_bytes([d[6], d[7]]));
    let mut frames = Vec::new();
    let mut at = header_len;
    while let Some(size) = u32_at(at) {
        let start = at + 12;
        let Some(data) = d.get(start..start + size) else {
            break;
        };
        frames.push(EncodedFrame {
            data: data.to_vec(),
            rtp_time: frames.len() as u64 * (90_000 / FPS),
            // VP8: bit 0 of the first byte is 0 on a keyframe.
            keyframe: data.first().is_some_and(|b| b & 1 == 0),
        });
        at = start + size;
    }
    Ok(frames)
}

// ---------------------------------------------------------------------------------------
// The publisher: loops the clip in real time
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct PubStats {
    video_sent: AtomicU64,
    audio_sent: AtomicU64,
    late: AtomicU64,
    max_late_us: AtomicU64,
    answered_requests: AtomicU64,
}

/// Sends the clip in a loop, paced in real time, timestamps always increasing. With
/// `answer`, a keyframe request is answered after that delay by jumping to the clip's
/// next keyframe (a decodable switch: the following delta frames belong to it);
/// without, requests are ignored (keyframes only every `GOP` frames, like x264 in OBS).
async fn run_publisher(
    publisher: Arc<Publisher>,
    clip: Arc<Clip>,
    answer: Option<Duration>,
    stats: Arc<PubStats>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let (mut vn, mut vi, mut an) = (0u64, 0usize, 0u64);
    let per_loop = clip.audio.len() as u64;
    let audio_loop_ts = clip.secs * 48_000;
    let mut seen_requests = publisher.keyframe_requests();
    let mut pending: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let video_at = Duration::from_micros(vn * 1_000_000 / FPS);
        let audio_pkt = &clip.audio[(an % per_loop) as usize];
        let audio_ts = (an / per_loop) * audio_loop_ts + audio_pkt.rtp_time;
        let audio_at = Duration::from_micros(audio_ts * 1000 / 48);
        let (video, due) = if audio_at < video_at {
            (false, audio_at)
        } else {
            (true, video_at)
        };
        tokio::select! {
            _ = tokio::time::sleep_until(start + due) => {}
            _ = stop.changed() => return Ok(()),
        }
        let late = start.elapsed().saturating_sub(due);
        if late > LATE {
            stats.late.fetch_add(1, Ordering::Relaxed);
        }
        stats
            .max_late_us
            .fetch_max(late.as_micros() as u64, Ordering::Relaxed);
        if video {
            let requests = publisher.keyframe_requests();
            if requests > seen_requests {
                seen_requests = requests;
                if answer.is_some() && pending.is_none() {
                    pending = Some(Instant::now());
                }
            }
            if let (Some(delay), Some(since)) = (answer, pending)
                && since.elapsed() >= delay
            {
                vi = clip.next_keyframe(vi);
                pending = None;
                stats.answered_requests.fetch_add(1, Ordering::Relaxed);
            }
            let frame = &clip.video[vi];
            let time = vn * (90_000 / FPS);
            if clip.lower.is_empty() {
                publisher.send_video(frame.data.clone(), time).await?;
            } else {
                publisher
                    .send_video_layer("h", frame.data.clone(), time)
                    .await?;
                for (i, (rid, frames)) in clip.lower.iter().enumerate() {
                    // Each layer on its own RTP time offset, as a browser's.
                    let offset = 7_000_000 * (i as u64 + 1);
                    let f = &frames[vi % frames.len()];
                    publisher
                        .send_video_layer(rid, f.data.clone(), time + offset)
                        .await?;
                }
            }
            vi = (vi + 1) % clip.video.len();
            vn += 1;
            stats.video_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            publisher
                .send_audio(audio_pkt.data.clone(), audio_ts)
                .await?;
            an += 1;
            stats.audio_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A publisher streaming in a task of this process.
struct Publishing {
    publisher: Arc<Publisher>,
    stats: Arc<PubStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Publishing {
    async fn start(
        gw: &Gateway,
        clip: &Arc<Clip>,
        answer: Option<Duration>,
    ) -> anyhow::Result<Publishing> {
        let publisher = Arc::new(
            Publisher::connect(
                &gw.url(&format!("/whip/{STREAM}")),
                if clip.lower.is_empty() {
                    PeerOptions::new(Some(VideoCodec::Vp8), true)
                } else {
                    PeerOptions::new(Some(VideoCodec::Vp8), true).with_simulcast(&["h", "m", "l"])
                },
            )
            .await
            .context("WHIP publish")?,
        );
        let stats = Arc::new(PubStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_publisher(
            publisher.clone(),
            clip.clone(),
            answer,
            stats.clone(),
            stop_rx,
        ));
        Ok(Publishing {
            publisher,
            stats,
            stop,
            task,
        })
    }

    fn check_running(&self) -> anyhow::Result<()> {
        if self.task.is_finished() {
            bail!(
                "the publisher stopped early: {}",
                self.publisher.end_reason().unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn finish(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let result = self.task.await.context("publisher task")?;
        if let Ok(p) = Arc::try_unwrap(self.publisher) {
            let _ = p.delete().await;
        }
        result
    }
}

// ---------------------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------------------

struct Gateway {
    child: Child,
    pid: u32,
    http: String,
    dir: PathBuf,
    client: reqwest::Client,
}

fn free_port_tcp() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_port_udp() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Gateway {
    /// Spawns `castgate serve` on free loopback ports and waits for `/healthz`.
    async fn start(plan: &Plan, viewer_start: Option<&str>) -> anyhow::Result<Gateway> {
        let http = format!("127.0.0.1:{}", free_port_tcp()?);
        let udp = format!("127.0.0.1:{}", free_port_udp()?);
        let dir = std::env::temp_dir().join(format!(
            "castgate-bench-{}-{}",
            std::process::id(),
            free_port_tcp()?
        ));
        std::fs::create_dir_all(&dir)?;
        // Only the HTTP rate limit is raised (the bench POSTs/DELETEs 50 sessions at once
        // from one address); everything else is castgate's default.
        let config = dir.join("castgate.toml");
        std::fs::write(
            &config,
            "[http]\nrate_limit_per_sec = 10000\nrate_limit_burst = 10000\n",
        )?;
        let log = std::fs::File::create(dir.join("castgate.log"))?;
        let mut cmd = Command::new(&plan.binary);
        cmd.arg("serve").arg("--config").arg(&config).args([
            "--http-listen",
            &http,
            "--udp-listen",
            &udp,
        ]);
        if let Some(v) = viewer_start {
            cmd.args(["--viewer-start", v]);
        }
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CASTGATE_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", plan.binary.display()))?;
        let mut gw = Gateway {
            pid: child.id(),
            child,
            http,
            dir,
            client: http_client()?,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = gw.child.try_wait()? {
                bail!("castgate exited at start ({status}): {}", gw.log_tail());
            }
            if gw.health().await.is_ok() {
                return Ok(gw);
            }
            if Instant::now() > deadline {
                bail!(
                    "castgate did not answer /healthz in 15 s: {}",
                    gw.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("castgate.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.client.get(self.url(path)).send().await?;
        if !resp.status().is_success() {
            bail!("GET {path}: {}", resp.status());
        }
        Ok(resp.json().await?)
    }

    async fn health(&self) -> anyhow::Result<Value> {
        self.get_json("/healthz").await
    }

    /// utime + stime of the whole process, in clock ticks.
    fn cpu_ticks(&self) -> anyhow::Result<u64> {
        proc_cpu_ticks(&format!("/proc/{}/stat", self.pid))
    }

    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        proc_status(self.pid, field)
    }

    /// Median of `n` VmRSS samples `every` apart.
    async fn rss_kib(&self, n: usize, every: Duration) -> anyhow::Result<u64> {
        let mut samples = Vec::new();
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(every).await;
            }
            samples.push(self.status_kib("VmRSS")?);
        }
        samples.sort_unstable();
        Ok(samples[samples.len() / 2])
    }

    /// SIGTERM, then wait (SIGKILL after 10 s). Returns how it ended and a summary of
    /// its log (warnings, errors, the first of them).
    async fn stop(mut self) -> anyhow::Result<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            if let Some(status) = self.child.try_wait()? {
                break status.to_string();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break "did not exit within 10 s of SIGTERM; killed".into();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let log = std::fs::read_to_string(self.dir.join("castgate.log")).unwrap_or_default();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
            .collect();
        let errors = bad.iter().filter(|l| !l.contains("WARN")).count();
        let first = bad.first().map_or(String::new(), |l| {
            let plain: String = strip_ansi(l).chars().take(160).collect();
            format!(" first={plain:?}")
        });
        Ok(format!(
            "gateway_exit=\"{exit}\" log_warn={} log_error={errors}{first}",
            bad.len() - errors
        ))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Drops ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn proc_cpu_ticks(path: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // Fields after the `(comm)`: state is field 3; utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("odd /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn proc_status(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// (busy, total) jiffies of the whole machine.
fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user)
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails).
fn clk_tck() -> (f64, &'static str) {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .map_or((100.0, "assumed"), |t| (t, "getconf"))
}

fn counter(v: &Value, key: &str) -> u64 {
    v["rtc"][key].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// Percentile by linear interpolation between order statistics (q in 0..=1).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn summary(values: &[f64]) -> String {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "median={:.0} p90={:.0} min={:.0} max={:.0} n={}",
        percentile(&s, 0.5),
        percentile(&s, 0.9),
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
        s.len()
    )
}

/// xorshift64*: deterministic join moments.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------
// Figure 1: join latency
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct JoinResult {
    to_keyframe_ms: Vec<f64>,
    to_connected_ms: Vec<f64>,
    failed: Vec<String>,
    first_not_keyframe: usize,
    keyframe_not_intact: usize,
    keyframe_requests: u64,
    answered: u64,
    late_frames: u64,
    gateway: String,
}

async fn join_case(
    plan: &Plan,
    clip: &Arc<Clip>,
    viewer_start: &str,
    answers: bool,
    rng: &mut Rng,
) -> anyhow::Result<JoinResult> {
    let gw = Gateway::start(plan, Some(viewer_start)).await?;
    let publishing = Publishing::start(&gw, clip, answers.then_some(ANSWER_DELAY)).await?;
    tokio::time::sleep(plan.join_warmup).await;
    let requests_before = publishing.publisher.keyframe_requests();
    let whep = gw.url(&format!("/whep/{STREAM}"));
    let mut r = JoinResult::default();
    for _ in 0..plan.joins {
        publishing.check_running()?;
        // A random moment within the keyframe interval (plus a gap).
        tokio::time::sleep(Duration::from_secs_f64(0.2 + rng.next_f64())).await;
        let t0 = Instant::now();
        let mut viewer = match Viewer::connect(&whep, None).await {
            Ok(v) => v,
            Err(e) => {
                r.failed.push(format!("connect: {e:#}"));
                continue;
            }
        };
        r.to_connected_ms.push(ms(t0.elapsed()));
        match viewer
            .next_frame_of(Kind::Video, Duration::from_secs(5))
            .await
        {
            Some(f) => {
                r.to_keyframe_ms.push(ms(f.arrived.duration_since(t0)));
                if !f.keyframe {
                    r.first_not_keyframe += 1;
                } else if !clip.keyframes.contains(&f.data) {
                    r.keyframe_not_intact += 1;
                }
            }
            None => r.failed.push("no video frame within 5 s".into()),
        }
        let _ = viewer.delete().await;
    }
    r.keyframe_requests = publishing.publisher.keyframe_requests() - requests_before;
    r.answered = publishing.stats.answered_requests.load(Ordering::Relaxed);
    r.late_frames = publishing.stats.late.load(Ordering::Relaxed);
    publishing.finish().await?;
    r.gateway = gw.stop().await?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// Figures 2 and 3: CPU and memory with N viewers
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct ViewerCounters {
    video: AtomicU64,
    audio: AtomicU64,
    bytes: AtomicU64,
    not_contiguous: AtomicU64,
}

/// Keeps reading a viewer's frames until told to stop; gives the viewer back.
async fn drain(
    mut viewer: Viewer,
    c: Arc<ViewerCounters>,
    mut stop: watch::Receiver<bool>,
) -> Viewer {
    loop {
        if *stop.borrow() {
            return viewer;
        }
        tokio::select! {
            _ = stop.changed() => return viewer,
            f = viewer.next_frame(Duration::from_secs(1)) => match f {
                Some(f) => {
                    match f.kind {
                        Kind::Video => c.video.fetch_add(1, Ordering::Relaxed),
                        Kind::Audio => c.audio.fetch_add(1, Ordering::Relaxed),
                    };
                    c.bytes.fetch_add(f.data.len() as u64, Ordering::Relaxed);
                    if !f.contiguous {
                        c.not_contiguous.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None if viewer.ended() => return viewer,
                None => {}
            },
        }
    }
}

#[derive(Debug, Default)]
struct LoadResult {
    viewers: usize,
    connect_s: f64,
    window_s: f64,
    gateway_cpu_s: f64,
    bench_cpu_s: f64,
    machine_busy: f64,
    machine_cores_busy: f64,
    out: u64,
    inn: u64,
    send_drops: u64,
    shard_full_drops: u64,
    rss0: u64,
    rss_n: u64,
    rss_after: u64,
    hwm: u64,
    threads: u64,
    video_frames_rx: u64,
    video_frames_min: u64,
    video_frames_max: u64,
    audio_frames_rx: u64,
    bytes_rx: u64,
    not_contiguous: u64,
    video_frames_tx: u64,
    bench_queue_drops: u64,
    pub_late: u64,
    pub_max_late_ms: f64,
    sessions: u64,
    api: Value,
    gateway: String,
    loadavg: String,
}

async fn load_case(plan: &Plan, clip: &Arc<Clip>, clk: f64) -> anyhow::Result<LoadResult> {
    let gw = Gateway::start(plan, None).await?;
    let publishing = Publishing::start(&gw, clip, None).await?;
    let mut r = LoadResult {
        viewers: plan.viewers,
        ..Default::default()
    };
    // 0 viewers: publisher running, GOP cache full.
    tokio::time::sleep(plan.load_warmup).await;
    r.rss0 = gw.rss_kib(5, Duration::from_millis(300)).await?;

    // N viewers, connected one after the other on this task (the test peer's connect
    // future is not `Send`), each then drained by its own task.
    let whep = gw.url(&format!("/whep/{STREAM}"));
    let (stop, stop_rx) = watch::channel(false);
    let counters: Vec<Arc<ViewerCounters>> = (0..plan.viewers).map(|_| Arc::default()).collect();
    let mut tasks = JoinSet::new();
    let t_connect = Instant::now();
    for (i, c) in counters.iter().enumerate() {
        publishing.check_running()?;
        let viewer = Viewer::connect(&whep, None)
            .await
            .with_context(|| format!("viewer {i} of {} failed to connect", plan.viewers))?;
        tasks.spawn(drain(viewer, c.clone(), stop_rx.clone()));
    }
    r.connect_s = t_connect.elapsed().as_secs_f64();
    tokio::time::sleep(plan.load_warmup).await;

    // The measurement window.
    let snap = |cs: &[Arc<ViewerCounters>]| -> Vec<[u64; 4]> {
        cs.iter()
            .map(|c| {
                [
                    c.video.load(Ordering::Relaxed),
                    c.audio.load(Ordering::Relaxed),
                    c.bytes.load(Ordering::Relaxed),
                    c.not_contiguous.load(Ordering::Relaxed),
                ]
            })
            .collect()
    };
    let h0 = gw.health().await?;
    let cpu0 = gw.cpu_ticks()?;
    let self0 = proc_cpu_ticks("/proc/self/stat")?;
    let m0 = machine_ticks()?;
    let v0 = snap(&counters);
    let tx0 = publishing.stats.video_sent.load(Ordering::Relaxed);
    let late0 = publishing.stats.late.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(plan.window).await;
    let h1 = gw.health().await?;
    let cpu1 = gw.cpu_ticks()?;
    let self1 = proc_cpu_ticks("/proc/self/stat")?;
    let m1 = machine_ticks()?;
    let v1 = snap(&counters);
    r.window_s = t0.elapsed().as_secs_f64();
    r.video_frames_tx = publishing.stats.video_sent.load(Ordering::Relaxed) - tx0;
    r.pub_late = publishing.stats.late.load(Ordering::Relaxed) - late0;
    r.pub_max_late_ms = publishing.stats.max_late_us.load(Ordering::Relaxed) as f64 / 1000.0;
    r.gateway_cpu_s = (cpu1 - cpu0) as f64 / clk;
    r.bench_cpu_s = (self1 - self0) as f64 / clk;
    r.machine_busy = (m1.0 - m0.0) as f64 / (m1.1 - m0.1).max(1) as f64;
    r.machine_cores_busy = (m1.0 - m0.0) as f64 / clk / r.window_s;
    r.loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(",");
    r.out = counter(&h1, "datagrams_out") - counter(&h0, "datagrams_out");
    r.inn = counter(&h1, "datagrams_in") - counter(&h0, "datagrams_in");
    r.send_drops = counter(&h1, "send_drops") - counter(&h0, "send_drops");
    r.shard_full_drops = counter(&h1, "shard_full_drops") - counter(&h0, "shard_full_drops");
    r.sessions = counter(&h1, "sessions");
    let per_viewer_video: Vec<u64> = v0.iter().zip(&v1).map(|(a, b)| b[0] - a[0]).collect();
    r.video_frames_rx = per_viewer_video.iter().sum();
    r.video_frames_min = per_viewer_video.iter().copied().min().unwrap_or(0);
    r.video_frames_max = per_viewer_video.iter().copied().max().unwrap_or(0);
    r.audio_frames_rx = v0.iter().zip(&v1).map(|(a, b)| b[1] - a[1]).sum();
    r.bytes_rx = v0.iter().zip(&v1).map(|(a, b)| b[2] - a[2]).sum();
    r.not_contiguous = v0.iter().zip(&v1).map(|(a, b)| b[3] - a[3]).sum();
    r.rss_n = gw.rss_kib(5, Duration::from_millis(300)).await?;
    r.hwm = gw.status_kib("VmHWM")?;
    r.threads = gw.status_kib("Threads")?;
    r.api = gw
        .get_json(&format!("/api/streams/{STREAM}"))
        .await
        .unwrap_or(Value::Null);

    // Viewers leave (DELETE); memory after.
    let _ = stop.send(true);
    let mut viewers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        viewers.push(done.context("viewer task")?);
    }
    r.bench_queue_drops = viewers.iter().map(Viewer::frames_dropped).sum();
    for v in viewers {
        let _ = v.delete().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    r.rss_after = gw.rss_kib(3, Duration::from_millis(300)).await?;

    publishing.finish().await?;
    r.gateway = gw.stop().await?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------

fn git_rev() -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let rev = run(&["rev-parse", "--short", "HEAD"]);
    let dirty = !run(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    format!("{rev}{}", if dirty { "+dirty" } else { "" })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plan = Plan::from_args()?;
    let started = Instant::now();
    let (clk, clk_src) = clk_tck();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let binary_age = std::fs::metadata(&plan.binary)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or("?".into(), |d| format!("{}s", d.as_secs()));

    let clip = {
        let (secs, simulcast) = (plan.clip_secs, plan.simulcast);
        Arc::new(
            tokio::task::spawn_blocking(move || Clip::make(secs, simulcast))
                .await
                .context("encoding")??,
        )
    };
    println!(
        "conditions: mode={} cores={cores} clk_tck={clk}({clk_src}) git={} binary={} (built {binary_age} ago)",
        match (plan.quick, plan.simulcast) {
            (_, true) =>
                "simulcast (3 layers h/m/l: 1280x720 2M, 640x360 600k, 320x180 150k; automatic viewers with bandwidth estimation)",
            (true, false) => "quick",
            (false, false) => "full",
        },
        git_rev(),
        plan.binary.display(),
    );
    println!(
        "conditions: publisher=str0m test peer over loopback, VP8 1280x720 {FPS} fps {:.0} kbit/s \
         (libvpx realtime, keyframe every {GOP} frames = 1 s, {} frames looped) + Opus mono 20 ms \
         {:.0} kbit/s; castgate defaults except http rate limit raised to 10000/s",
        clip.video_kbps,
        clip.video_loop_len(),
        clip.audio_kbps
    );

    // Figure 1.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut join_lines = Vec::new();
    for &(label, mode, answers) in &plan.join_cases {
        let publisher = if answers {
            "answers_kf_requests_after_100ms"
        } else {
            "ignores_kf_requests"
        };
        eprintln!("bench: joins, viewer_start={label}, publisher {publisher} …");
        let r = join_case(&plan, &clip, mode, answers, &mut rng).await?;
        let line = format!(
            "figure: whep_post_to_first_keyframe_ms viewer_start={label} publisher={publisher} gop_ms=1000 {} \
             | post_to_connected_ms {} | failed={} first_video_not_keyframe={} keyframe_not_byte_identical={} \
             kf_requests_at_publisher={} answered={} publisher_late_frames={}",
            summary(&r.to_keyframe_ms),
            summary(&r.to_connected_ms),
            r.failed.len(),
            r.first_not_keyframe,
            r.keyframe_not_intact,
            r.keyframe_requests,
            r.answered,
            r.late_frames,
        );
        println!("{line}");
        println!("  {}", r.gateway);
        for f in &r.failed {
            println!("  failure: {f}");
        }
        join_lines.push((label, publisher, r));
    }

    // Figures 2 and 3.
    eprintln!("bench: load, {} viewers …", plan.viewers);
    let r = load_case(&plan, &clip, clk).await?;
    let n = r.viewers as f64;
    let cpu_per_1000 = r.gateway_cpu_s * 1000.0 / (r.out as f64 / 1000.0);
    let out_per_s = r.out as f64 / r.window_s;
    let per_viewer_kib = (r.rss_n as f64 - r.rss0 as f64) / n;
    let expected_video = r.video_frames_tx * r.viewers as u64;
    println!(
        "figure: gateway_cpu_ms_per_1000_forwarded_packets viewers={} value={:.1} \
         (gateway_cpu_s={:.2} over window_s={:.1}, datagrams_out={}, gateway_cpu_percent_of_one_core={:.0})",
        r.viewers,
        cpu_per_1000,
        r.gateway_cpu_s,
        r.window_s,
        r.out,
        r.gateway_cpu_s / r.window_s * 100.0
    );
    println!(
        "figure: gateway_rss_per_viewer_kib viewers={} value={:.0} (rss_0_viewers_kib={} rss_{}_viewers_kib={} \
         rss_after_viewers_left_kib={} vm_hwm_kib={} threads={})",
        r.viewers, per_viewer_kib, r.rss0, r.viewers, r.rss_n, r.rss_after, r.hwm, r.threads
    );
    println!(
        "figure: forwarded_datagrams_per_s value={:.0} datagrams_in_per_s={:.0} send_drops={} shard_full_drops={} sessions={}",
        out_per_s,
        r.inn as f64 / r.window_s,
        r.send_drops,
        r.shard_full_drops,
        r.sessions
    );
    println!(
        "figure: viewer_delivery video_frames_received={} of_expected={} ({:.1}%) per_viewer_min={} per_viewer_max={} \
         audio_frames_received={} media_kbit_per_s_all_viewers={:.0} non_contiguous_frames={} bench_queue_drops={}",
        r.video_frames_rx,
        expected_video,
        r.video_frames_rx as f64 * 100.0 / expected_video.max(1) as f64,
        r.video_frames_min,
        r.video_frames_max,
        r.audio_frames_rx,
        r.bytes_rx as f64 * 8.0 / 1000.0 / r.window_s,
        r.not_contiguous,
        r.bench_queue_drops
    );
    let other_cores = r.machine_cores_busy - (r.gateway_cpu_s + r.bench_cpu_s) / r.window_s;
    println!(
        "figure: load_on_machine bench_process_cpu_percent_of_one_core={:.0} machine_busy_percent={:.0} \
         (of {cores} cores) other_processes_cpu_percent_of_one_core={:.0} loadavg={} \
         publisher_late_frames={} publisher_max_late_ms={:.0} viewers_connect_s={:.1}",
        r.bench_cpu_s / r.window_s * 100.0,
        r.machine_busy * 100.0,
        other_cores.max(0.0) * 100.0,
        r.loadavg,
        r.pub_late,
        r.pub_max_late_ms,
        r.connect_s
    );
    println!("  {}", r.gateway);
    let api = &r.api;
    println!(
        "stream_api: bitrate_in_kbps={} bitrate_out_kbps={} frames_in={} frames_dropped={} keyframe_requests={} layer_switches={} viewers={}",
        api["bitrate_in_kbps"],
        api["bitrate_out_kbps"],
        api["frames_in"],
        api["frames_dropped"],
        api["keyframe_requests"],
        api["layer_switches"],
        api["viewers"]
    );

    // A short human summary.
    println!("summary:");
    println!(
        "  The publisher sends a pre-encoded clip with a keyframe every 1 s; in the ignores_kf_requests \
         cases it never answers PLI/FIR (like OBS with x264), in the answers case it switches to a \
         keyframe ~100 ms after a request (like a browser encoder)."
    );
    for (label, publisher, r) in &join_lines {
        let mut s = r.to_keyframe_ms.clone();
        s.sort_by(f64::total_cmp);
        println!(
            "  viewer_start={label}, publisher {publisher}: first keyframe {:.0} ms after the WHEP POST \
             (median; p90 {:.0} ms; n={})",
            percentile(&s, 0.5),
            percentile(&s, 0.9),
            s.len()
        );
    }
    println!(
        "  {} viewers: the gateway used {:.0}% of one core to send {:.0} datagrams/s = {:.1} ms CPU \
         per 1000 forwarded packets; {:.0} KiB resident per viewer.",
        r.viewers,
        r.gateway_cpu_s / r.window_s * 100.0,
        out_per_s,
        cpu_per_1000,
        per_viewer_kib
    );
    println!(
        "  Load: the bench's own {} str0m peers used {:.0}% of one core and other processes {:.0}%; \
         the machine was {:.0}% busy across {cores} cores, so the gateway shared the CPU.",
        r.viewers + 1,
        r.bench_cpu_s / r.window_s * 100.0,
        other_cores.max(0.0) * 100.0,
        r.machine_busy * 100.0
    );
    println!("  total run time {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
