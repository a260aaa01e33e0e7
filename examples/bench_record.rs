//! Benchmark of castgate's recording (issue 4's figures). It prints figures; it asserts nothing.
//!
//! ```sh
//! cargo build --release --bin castgate
//! cargo run --release --example bench_record            # ~3.5 minutes
//! cargo run --release --example bench_record -- --quick # ~1 minute
//! ```
//!
//! The gateway runs as a separate process (`target/release/castgate serve` on free
//! loopback ports, working directory and recordings in a temporary directory) so that
//! its CPU time (`/proc/<pid>/stat`), writes (`/proc/<pid>/io`) and resident memory are
//! its own. The publisher is the real str0m peer of the integration tests
//! (`tests/common`), running in this process and looping a 1280x720 30 fps VP8 clip
//! (~2.45 Mbit/s, keyframe every 1 s, made with the ffmpeg CLI) + Opus 48 kbit/s, i.e.
//! ~2.5 Mbit/s in total, paced in real time.
//!
//! Figures:
//! 1. Gateway CPU seconds per minute of that stream with `--record true` and with
//!    `--record false`, measured over the same window length in the same run, runs
//!    alternated off/on/on/off (ABBA) so that a drift in the machine's other load
//!    cancels; the difference is the CPU cost of recording one minute. Also the bytes
//!    written per recorded minute (file growth and `wchar`).
//! 2. SIGKILL: publish for a random 6.0–7.0 s, `kill -9` the gateway, count the video
//!    (and audio) packets in the `.part` file with ffprobe: loss = frames sent but not in
//!    the file × 33.3 ms (audio × 20 ms). Max and median over the kills.
//! 3. `castgate repair` of a 10-minute unfinished recording: a 600 s 720p VP8 + Opus
//!    WebM remuxed by the ffmpeg CLI (`-c copy`, 500 ms clusters) to a pipe, so it has
//!    no Cues, no Duration and a segment of unknown size, like a `.part` file, then cut
//!    by 100 KiB so its last cluster is torn as after a crash. Median wall time of 3
//!    repairs with the input in the page cache (as right after a crash) and of 3 with
//!    the input evicted from it (`posix_fadvise(DONTNEED)`, as after a reboot); the
//!    result is checked for Cues (`mkvinfo`), Duration ≈ 600 s and every video packet.

// The end-to-end tests' helpers; a benchmark uses a few of them.
#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::sync::watch;

use common::media::{EncodedFrame, opus_packets};
use common::peer::{PeerOptions, Publisher, VideoCodec, http_client};

/// Stream name used throughout.
const STREAM: &str = "bench";
/// Video frame rate of the clip.
const FPS: u64 = 30;
/// Keyframe interval of the clip, in frames (1 s).
const GOP: u64 = 30;
/// Video bitrate asked of libvpx; with Opus at 48 kbit/s the stream is ~2.5 Mbit/s.
const VIDEO_BITRATE: &str = "2400k";
/// Length of the file repaired in figure 3.
const LONG_SECS: u64 = 600;
/// What is cut off the end of that file (a torn last cluster, no trailer).
const TRUNCATE_BYTES: u64 = 100 * 1024;
/// A frame sent later than this after its due time counts as late.
const LATE: Duration = Duration::from_millis(50);

/// What one run does.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    binary: PathBuf,
    clip_secs: u64,
    warmup: Duration,
    window: Duration,
    /// Figure 1: `--record` value of each run, in order.
    cpu_runs: Vec<bool>,
    kills: usize,
    kill_from: f64,
    kill_to: f64,
    repairs: usize,
    /// Copy each SIGKILLed `.part` file here (for a closer look).
    keep: Option<PathBuf>,
}

impl Plan {
    fn from_args() -> anyhow::Result<Plan> {
        let mut quick = false;
        let mut window = None;
        let mut rounds = None;
        let mut kills = None;
        let mut binary = None;
        let mut keep = None;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match a.as_str() {
                "--quick" => quick = true,
                "--window" => window = Some(value("--window")?.parse::<u64>()?),
                "--rounds" => rounds = Some(value("--rounds")?.parse::<usize>()?),
                "--kills" => kills = Some(value("--kills")?.parse::<usize>()?),
                "--bin" => binary = Some(PathBuf::from(value("--bin")?)),
                "--keep" => keep = Some(PathBuf::from(value("--keep")?)),
                "-h" | "--help" => {
                    println!(
                        "bench_record [--quick] [--window SECS] [--rounds N] [--kills N] [--bin PATH] [--keep DIR]\n\
                         default: ~3.5 min (CPU: off/on/on/off runs of 30 s each = 2 rounds, 5 kills, \
                         3+3 repairs)\n\
                         --quick: ~1 min (CPU: off/on runs of 12 s, 3 kills, 3+3 repairs)"
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
        // Rounds alternate the order (off,on then on,off …) so that a linear drift of
        // the machine's other load weighs on both modes alike.
        let rounds = rounds.unwrap_or(if quick { 1 } else { 2 }).max(1);
        let cpu_runs = (0..rounds)
            .flat_map(|r| {
                if r % 2 == 0 {
                    [false, true]
                } else {
                    [true, false]
                }
            })
            .collect();
        Ok(Plan {
            quick,
            binary,
            clip_secs: 10,
            warmup: Duration::from_secs(if quick { 4 } else { 6 }),
            window: Duration::from_secs(window.unwrap_or(if quick { 12 } else { 30 })),
            cpu_runs,
            kills: kills.unwrap_or(if quick { 3 } else { 5 }).max(1),
            kill_from: 6.0,
            kill_to: 7.0,
            repairs: 3,
            keep,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Media
// ---------------------------------------------------------------------------------------

/// The looped test clip: 1280x720 30 fps VP8 (keyframe every 30 frames) + Opus mono.
struct Clip {
    video: Vec<EncodedFrame>,
    audio: Vec<EncodedFrame>,
    secs: u64,
    video_kbps: f64,
    audio_kbps: f64,
    /// The VP8 clip as IVF, kept for figure 3.
    ivf: PathBuf,
}

impl Clip {
    fn make(secs: u64, dir: &Path) -> anyhow::Result<Clip> {
        let out = dir.join("clip.ivf");
        let duration = secs.to_string();
        let gop = GOP.to_string();
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
            .args(["-t", &duration, "-pix_fmt", "yuv420p", "-c:v", "libvpx"])
            .args(["-threads", "2", "-deadline", "realtime", "-cpu-used", "16"])
            .args(["-b:v", VIDEO_BITRATE, "-g", &gop, "-keyint_min", &gop])
            .args(["-auto-alt-ref", "0", "-lag-in-frames", "0", "-f", "ivf"])
            .arg(&out)
            .status()
            .context("running ffmpeg (install it with scripts/setup.sh --test)")?;
        if !status.success() {
            bail!("ffmpeg failed to encode the VP8 clip ({status})");
        }
        let video = parse_ivf(&std::fs::read(&out)?)?;
        let n = video.len() as u64;
        if n < GOP || !video[0].keyframe {
            bail!("the VP8 clip has {n} frames and must start with a keyframe");
        }
        let audio_loop = secs * 48_000;
        let audio: Vec<EncodedFrame> = opus_packets(secs as u32)
            .into_iter()
            .filter(|p| p.rtp_time < audio_loop)
            .collect();
        let vbytes: usize = video.iter().map(|f| f.data.len()).sum();
        let abytes: usize = audio.iter().map(|f| f.data.len()).sum();
        Ok(Clip {
            video_kbps: vbytes as f64 * 8.0 / 1000.0 / (n as f64 / FPS as f64),
            audio_kbps: abytes as f64 * 8.0 / 1000.0 / secs as f64,
            video,
            audio,
            secs,
            ivf: out,
        })
    }
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
    bytes_sent: AtomicU64,
    late: AtomicU64,
    max_late_us: AtomicU64,
}

/// Sends the clip in a loop from `start`, paced in real time, timestamps always
/// increasing. Keyframe requests are ignored (keyframes come every `GOP` frames), so
/// what is sent does not depend on whether a recorder asks for keyframes.
async fn run_publisher(
    publisher: Arc<Publisher>,
    clip: Arc<Clip>,
    start: tokio::time::Instant,
    stats: Arc<PubStats>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (mut vn, mut an) = (0u64, 0u64);
    let per_loop = clip.audio.len() as u64;
    let audio_loop_ts = clip.secs * 48_000;
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
            let frame = &clip.video[(vn % clip.video.len() as u64) as usize];
            publisher
                .send_video(frame.data.clone(), vn * (90_000 / FPS))
                .await?;
            vn += 1;
            stats.video_sent.fetch_add(1, Ordering::Relaxed);
            stats
                .bytes_sent
                .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        } else {
            publisher
                .send_audio(audio_pkt.data.clone(), audio_ts)
                .await?;
            an += 1;
            stats.audio_sent.fetch_add(1, Ordering::Relaxed);
            stats
                .bytes_sent
                .fetch_add(audio_pkt.data.len() as u64, Ordering::Relaxed);
        }
    }
}

/// A publisher streaming in a task of this process.
struct Publishing {
    publisher: Arc<Publisher>,
    stats: Arc<PubStats>,
    started: Instant,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Publishing {
    async fn start(gw: &Gateway, clip: &Arc<Clip>) -> anyhow::Result<Publishing> {
        let publisher = Arc::new(
            Publisher::connect(
                &gw.url(&format!("/whip/{STREAM}")),
                PeerOptions::new(Some(VideoCodec::Vp8), true),
            )
            .await
            .context("WHIP publish")?,
        );
        let stats = Arc::new(PubStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(run_publisher(
            publisher.clone(),
            clip.clone(),
            started.into(),
            stats.clone(),
            stop_rx,
        ));
        Ok(Publishing {
            publisher,
            stats,
            started,
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

    async fn stop_task(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops sending and DELETEs the session (a clean end: the recording finalizes).
    async fn finish(self) -> anyhow::Result<()> {
        self.stop_task().await;
        let result = self.task.await.context("publisher task")?;
        if let Ok(p) = Arc::try_unwrap(self.publisher) {
            let _ = p.delete().await;
        }
        result
    }

    /// Stops sending without a goodbye (the gateway is gone).
    async fn vanish(self) {
        self.stop_task().await;
        let _ = self.task.await;
        if let Ok(p) = Arc::try_unwrap(self.publisher) {
            p.vanish().await;
        }
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
    rec_dir: PathBuf,
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
    /// Spawns `castgate serve --record true --record-dir DIR/rec` (or `--record false`)
    /// on free loopback ports and waits for `/healthz`. Everything else is the default.
    async fn start(plan: &Plan, record: bool) -> anyhow::Result<Gateway> {
        let http = format!("127.0.0.1:{}", free_port_tcp()?);
        let udp = format!("127.0.0.1:{}", free_port_udp()?);
        let dir = std::env::temp_dir().join(format!(
            "castgate-bench-rec-{}-{}",
            std::process::id(),
            free_port_tcp()?
        ));
        std::fs::create_dir_all(&dir)?;
        let rec_dir = dir.join("rec");
        let log = std::fs::File::create(dir.join("castgate.log"))?;
        let mut cmd = Command::new(&plan.binary);
        cmd.arg("serve")
            .args(["--http-listen", &http, "--udp-listen", &udp]);
        if record {
            cmd.args(["--record", "true", "--record-dir"]).arg(&rec_dir);
        } else {
            cmd.args(["--record", "false"]);
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
            rec_dir,
            client: http_client()?,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = gw.child.try_wait()? {
                bail!("castgate exited at start ({status}): {}", gw.log_tail());
            }
            if gw.get_json("/healthz").await.is_ok() {
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

    /// utime + stime of the whole process, in clock ticks.
    fn cpu_ticks(&self) -> anyhow::Result<u64> {
        proc_cpu_ticks(&format!("/proc/{}/stat", self.pid))
    }

    /// CPU ticks of the threads whose name starts with `prefix` (castgate names each
    /// recording thread `rec-STREAM`).
    fn threads_cpu_ticks(&self, prefix: &str) -> u64 {
        let tasks = format!("/proc/{}/task", self.pid);
        let mut total = 0;
        for t in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim_end().starts_with(prefix) {
                let stat = t.path().join("stat");
                total += proc_cpu_ticks(&stat.to_string_lossy()).unwrap_or(0);
            }
        }
        total
    }

    /// A field of `/proc/<pid>/io` (bytes or calls).
    fn io(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/io", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        proc_status(self.pid, field)
    }

    /// `kill -9`: no chance to flush, finalize or rename anything.
    fn sigkill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("SIGKILL")?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then wait (SIGKILL after 15 s). Returns how it ended and a summary of
    /// its log (warnings, errors, the first of them). The directory stays until drop.
    async fn stop(&mut self) -> anyhow::Result<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        let exit = loop {
            if let Some(status) = self.child.try_wait()? {
                break status.to_string();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break "did not exit within 15 s of SIGTERM; killed".into();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(format!("gateway_exit=\"{exit}\" {}", self.log_summary()))
    }

    fn log_summary(&self) -> String {
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
        format!("log_warn={} log_error={errors}{first}", bad.len() - errors)
    }

    /// The recording files (`.webm`, `.mkv`, `.part`) under the recordings directory.
    fn recordings(&self) -> Vec<PathBuf> {
        recordings_in(&self.rec_dir)
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

fn recordings_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(s.path()).into_iter().flatten().flatten() {
            let p = f.path();
            let name = p.to_string_lossy().to_string();
            if name.ends_with(".webm") || name.ends_with(".mkv") || name.ends_with(".part") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Total size of the regular files under `dir` (recursive).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => total += dir_bytes(&e.path()),
            Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
            _ => {}
        }
    }
    total
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------
// FFmpeg / MKVToolNix probes
// ---------------------------------------------------------------------------------------

/// `ffprobe` packet count of one stream kind ("v" or "a").
fn packets(file: &Path, kind: &str) -> anyhow::Result<u64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", kind, "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .context("running ffprobe")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

/// Timestamps (s) of the first and last video packets.
fn video_pts_range(file: &Path) -> Option<(f64, f64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v"])
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    Some((*ts.first()?, ts.iter().copied().fold(f64::MIN, f64::max)))
}

/// Container duration as ffprobe reads it (None when the file has none).
fn duration(file: &Path) -> Option<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration"])
        .args(["-of", "default=nw=1:nk=1"])
        .arg(file)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Lines ffmpeg prints on stderr while decoding the whole file (0 = clean).
fn decode_error_lines(file: &Path) -> (usize, String) {
    match Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
    {
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            let first = lines.first().map_or(String::new(), |l| {
                let l: String = l.chars().take(120).collect();
                l
            });
            (lines.len(), first)
        }
        Err(e) => (usize::MAX, format!("ffmpeg: {e}")),
    }
}

/// What `mkvinfo` sees: (has Cues, number of cue points, has Duration in Info).
fn mkv_index(file: &Path) -> anyhow::Result<(bool, usize, bool)> {
    let out = Command::new("mkvinfo")
        .arg("--all")
        .arg(file)
        .output()
        .context("running mkvinfo (install mkvtoolnix: scripts/setup.sh --test)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let has_cues = text
        .lines()
        .any(|l| l.trim_start_matches(['|', ' ']) == "+ Cues");
    let cue_points = text.lines().filter(|l| l.contains("+ Cue point")).count();
    // Info's Duration sits at depth 2 ("| + Duration:"); track durations are deeper.
    let has_duration = text.lines().any(|l| l.starts_with("| + Duration:"));
    Ok((has_cues, cue_points, has_duration))
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

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

fn median(values: &[f64]) -> f64 {
    percentile(&sorted(values), 0.5)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

fn list(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// xorshift64*: deterministic kill moments.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------------------
// Figure 1: CPU per recorded minute, recording on vs off
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct CpuRun {
    record: bool,
    window_s: f64,
    gateway_cpu_s: f64,
    rec_thread_cpu_s: f64,
    bench_cpu_s: f64,
    machine_busy: f64,
    machine_cores_busy: f64,
    loadavg: String,
    file_bytes: u64,
    wchar: u64,
    syscw: u64,
    write_bytes: u64,
    media_bytes_sent: u64,
    video_sent_window: u64,
    rss_kib: u64,
    threads: u64,
    pub_late: u64,
    pub_max_late_ms: f64,
    api_recordings: String,
    recorded_frames: Option<(u64, u64)>,
    gateway: String,
}

impl CpuRun {
    fn cpu_per_min(&self) -> f64 {
        self.gateway_cpu_s * 60.0 / self.window_s
    }
    fn per_min(&self, bytes: u64) -> f64 {
        bytes as f64 * 60.0 / self.window_s
    }
}

async fn cpu_run(plan: &Plan, clip: &Arc<Clip>, record: bool, clk: f64) -> anyhow::Result<CpuRun> {
    let mut gw = Gateway::start(plan, record).await?;
    let publishing = Publishing::start(&gw, clip).await?;
    // Past the recorder's sync wait (3 s) and the file's creation.
    tokio::time::sleep(plan.warmup).await;
    publishing.check_running()?;
    let mut r = CpuRun {
        record,
        ..Default::default()
    };
    let stats = &publishing.stats;
    let cpu0 = gw.cpu_ticks()?;
    let rec0 = gw.threads_cpu_ticks("rec-");
    let self0 = proc_cpu_ticks("/proc/self/stat")?;
    let m0 = machine_ticks()?;
    let size0 = dir_bytes(&gw.rec_dir);
    let (wchar0, syscw0, wb0) = (gw.io("wchar"), gw.io("syscw"), gw.io("write_bytes"));
    let sent0 = stats.bytes_sent.load(Ordering::Relaxed);
    let v0 = stats.video_sent.load(Ordering::Relaxed);
    let late0 = stats.late.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(plan.window).await;
    let cpu1 = gw.cpu_ticks()?;
    let rec1 = gw.threads_cpu_ticks("rec-");
    let self1 = proc_cpu_ticks("/proc/self/stat")?;
    let m1 = machine_ticks()?;
    let size1 = dir_bytes(&gw.rec_dir);
    let (wchar1, syscw1, wb1) = (gw.io("wchar"), gw.io("syscw"), gw.io("write_bytes"));
    r.window_s = t0.elapsed().as_secs_f64();
    r.media_bytes_sent = stats.bytes_sent.load(Ordering::Relaxed) - sent0;
    r.video_sent_window = stats.video_sent.load(Ordering::Relaxed) - v0;
    r.pub_late = stats.late.load(Ordering::Relaxed) - late0;
    r.pub_max_late_ms = stats.max_late_us.load(Ordering::Relaxed) as f64 / 1000.0;
    r.gateway_cpu_s = (cpu1 - cpu0) as f64 / clk;
    r.rec_thread_cpu_s = rec1.saturating_sub(rec0) as f64 / clk;
    r.bench_cpu_s = (self1 - self0) as f64 / clk;
    r.machine_busy = (m1.0 - m0.0) as f64 / (m1.1 - m0.1).max(1) as f64;
    r.machine_cores_busy = (m1.0 - m0.0) as f64 / clk / r.window_s;
    r.loadavg = loadavg();
    r.file_bytes = size1.saturating_sub(size0);
    r.wchar = wchar1.saturating_sub(wchar0);
    r.syscw = syscw1.saturating_sub(syscw0);
    r.write_bytes = wb1.saturating_sub(wb0);
    r.rss_kib = gw.status_kib("VmRSS")?;
    r.threads = gw.status_kib("Threads")?;
    publishing.check_running()?;
    if record {
        let v = gw.get_json("/api/recordings").await.unwrap_or(Value::Null);
        let states: Vec<String> = v["recordings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x["state"].as_str().unwrap_or("?").to_string())
            .collect();
        r.api_recordings = format!("[{}]", states.join(","));
    }
    let video_sent_total = {
        let s = publishing.stats.clone();
        publishing.finish().await?;
        s.video_sent.load(Ordering::Relaxed)
    };
    // The publisher left: the recording finalizes; give it a moment before SIGTERM
    // (which would finalize it too).
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.gateway = gw.stop().await?;
    if record {
        let files = gw.recordings();
        let mut kept = 0;
        for f in &files {
            kept += packets(f, "v")?;
        }
        r.recorded_frames = Some((kept, video_sent_total));
        if files.len() != 1 {
            r.api_recordings += &format!(" files_on_disk={}", files.len());
        }
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// Figure 2: loss after SIGKILL
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct KillRun {
    at_s: f64,
    video_sent: u64,
    audio_sent: u64,
    video_kept: u64,
    audio_kept: u64,
    /// Wall time from the first video frame sent to the kill, minus the span of video
    /// in the file (last − first pts + one frame).
    ts_gap_ms: Option<f64>,
    part_name: String,
    part_bytes: u64,
    decode_errors: usize,
    decode_first: String,
    log: String,
}

impl KillRun {
    fn video_loss_ms(&self) -> f64 {
        self.video_sent.saturating_sub(self.video_kept) as f64 * 1000.0 / FPS as f64
    }
    fn audio_loss_ms(&self) -> f64 {
        self.audio_sent.saturating_sub(self.audio_kept) as f64 * 20.0
    }
}

async fn kill_run(plan: &Plan, clip: &Arc<Clip>, at: Duration) -> anyhow::Result<KillRun> {
    let mut gw = Gateway::start(plan, true).await?;
    let publishing = Publishing::start(&gw, clip).await?;
    tokio::time::sleep_until((publishing.started + at).into()).await;
    publishing.check_running()?;
    let mut r = KillRun {
        video_sent: publishing.stats.video_sent.load(Ordering::Relaxed),
        audio_sent: publishing.stats.audio_sent.load(Ordering::Relaxed),
        at_s: publishing.started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    gw.sigkill()?;
    publishing.vanish().await;
    r.log = gw.log_summary();
    let files = gw.recordings();
    let [part] = files.as_slice() else {
        bail!("expected one recording after SIGKILL, found {files:?}");
    };
    r.part_name = part
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    r.part_bytes = std::fs::metadata(part).map_or(0, |m| m.len());
    if let Some(keep) = &plan.keep {
        std::fs::create_dir_all(keep)?;
        std::fs::copy(part, keep.join(&r.part_name))?;
    }
    r.video_kept = packets(part, "v")?;
    r.audio_kept = packets(part, "a")?;
    if let Some((first, last)) = video_pts_range(part) {
        let recorded = last - first + 1.0 / FPS as f64;
        r.ts_gap_ms = Some((r.at_s - recorded) * 1000.0);
    }
    (r.decode_errors, r.decode_first) = decode_error_lines(part);
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// Figure 3: repairing a 10-minute file
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct RepairRun {
    cold: bool,
    wall_s: f64,
    self_reported_s: Option<f64>,
    cpu_s: f64,
    resident_before: String,
}

#[derive(Debug, Default)]
struct RepairResult {
    build_s: f64,
    input_bytes: u64,
    input_video: u64,
    input_audio: u64,
    input_has_cues: bool,
    input_has_duration: bool,
    runs: Vec<RepairRun>,
    output_bytes: u64,
    output_video: u64,
    output_audio: u64,
    output_has_cues: bool,
    output_cue_points: usize,
    output_duration: Option<f64>,
    output_has_duration: bool,
}

/// A 10-minute unfinished recording: the clip looped to 600 s + a 600 s Opus tone,
/// remuxed to a pipe (so the muxer can write neither Cues nor Duration nor the segment
/// size), 500 ms clusters like castgate's, then cut short by `TRUNCATE_BYTES`.
fn build_long_part(clip: &Clip, out: &Path) -> anyhow::Result<()> {
    let loops = LONG_SECS.div_ceil(clip.secs).saturating_sub(1).to_string();
    let file = std::fs::File::create(out)?;
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error"])
        .args(["-stream_loop", &loops, "-i"])
        .arg(&clip.ivf)
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=48000:duration={LONG_SECS}"
        ))
        .args(["-map", "0:v", "-map", "1:a", "-c:v", "copy"])
        .args(["-ac", "1", "-c:a", "libopus", "-b:a", "48k"])
        .args(["-frame_duration", "20", "-shortest"])
        .args(["-f", "webm", "-cluster_time_limit", "500", "pipe:1"])
        .stdout(file)
        .status()
        .context("running ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg failed to build the 10-minute file ({status})");
    }
    let f = std::fs::OpenOptions::new().write(true).open(out)?;
    let len = f.metadata()?.len();
    if len < TRUNCATE_BYTES * 10 {
        bail!("the 10-minute file is only {len} bytes");
    }
    f.set_len(len - TRUNCATE_BYTES)?;
    f.sync_all()?;
    Ok(())
}

/// Page-cache residency of a file (`fincore`), if the tool is there.
fn resident(file: &Path) -> String {
    Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(file)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// Drops a file's pages from the page cache (after writing them back).
fn evict(file: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(file)?;
    f.sync_all()?;
    // SAFETY: a valid open descriptor; the call only advises the kernel.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!("posix_fadvise: error {rc}");
    }
    Ok(())
}

/// Runs `castgate repair FILE`: (wall s, its own "in X s", CPU s of the child).
fn time_repair(binary: &Path, file: &Path) -> anyhow::Result<(f64, Option<f64>, f64)> {
    let t0 = Instant::now();
    let mut child = Command::new(binary)
        .arg("repair")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} repair", binary.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our un-reaped child; pointers are to valid locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t0.elapsed().as_secs_f64();
    if rc != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("castgate repair failed (wait status {status}): {out}{err}");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    // "repaired A -> B in 0.21 s"
    let own = out
        .rsplit_once(" in ")
        .and_then(|(_, s)| s.trim().trim_end_matches(" s").parse().ok());
    Ok((wall, own, cpu))
}

fn repair_case(plan: &Plan, clip: &Clip, work: &Path) -> anyhow::Result<RepairResult> {
    let mut r = RepairResult::default();
    let pristine = work.join("long.webm.part");
    let t0 = Instant::now();
    build_long_part(clip, &pristine)?;
    r.build_s = t0.elapsed().as_secs_f64();
    r.input_bytes = std::fs::metadata(&pristine)?.len();
    r.input_video = packets(&pristine, "v")?;
    r.input_audio = packets(&pristine, "a")?;
    (r.input_has_cues, _, r.input_has_duration) = mkv_index(&pristine)?;

    // Named as castgate names a recording in progress.
    let stream_dir = work.join("repair").join(STREAM);
    std::fs::create_dir_all(&stream_dir)?;
    let part = stream_dir.join("2026-01-01T00-00-00Z.webm.part");
    let fixed = stream_dir.join("2026-01-01T00-00-00Z.webm");
    let cases: Vec<bool> = (0..plan.repairs)
        .map(|_| false)
        .chain((0..plan.repairs).map(|_| true))
        .collect();
    let last = cases.len() - 1;
    for (i, &cold) in cases.iter().enumerate() {
        let _ = std::fs::remove_file(&fixed);
        std::fs::copy(&pristine, &part)?;
        if cold {
            evict(&part)?;
        } else {
            // Written back but still cached: the state right after a crash.
            std::fs::File::open(&part)?.sync_all()?;
            let _ = std::fs::read(&part)?;
        }
        let resident_before = resident(&part);
        let (wall_s, self_reported_s, cpu_s) = time_repair(&plan.binary, &part)?;
        r.runs.push(RepairRun {
            cold,
            wall_s,
            self_reported_s,
            cpu_s,
            resident_before,
        });
        if !fixed.is_file() {
            bail!("castgate repair did not produce {}", fixed.display());
        }
        if part.exists() {
            bail!("castgate repair left {} behind", part.display());
        }
        if i == last {
            r.output_bytes = std::fs::metadata(&fixed)?.len();
            r.output_video = packets(&fixed, "v")?;
            r.output_audio = packets(&fixed, "a")?;
            r.output_duration = duration(&fixed);
            (
                r.output_has_cues,
                r.output_cue_points,
                r.output_has_duration,
            ) = mkv_index(&fixed)?;
        }
    }
    let _ = std::fs::remove_dir_all(work.join("repair"));
    let _ = std::fs::remove_file(&pristine);
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

/// The bench's scratch directory, removed on drop.
struct Work(PathBuf);

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    let work =
        Work(std::env::temp_dir().join(format!("castgate-bench-record-{}", std::process::id())));
    std::fs::create_dir_all(&work.0)?;
    let tmp_fs = Command::new("df")
        .args(["--output=fstype,avail", "-h"])
        .arg(&work.0)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" avail=")
        })
        .unwrap_or_default();

    eprintln!("bench: encoding the 720p clip …");
    let clip = {
        let secs = plan.clip_secs;
        let dir = work.0.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || Clip::make(secs, &dir))
                .await
                .context("encoding")??,
        )
    };
    println!(
        "conditions: mode={} cores={cores} clk_tck={clk}({clk_src}) git={} binary={} (built {binary_age} ago) \
         tmp={} ({tmp_fs}) loadavg_at_start={}",
        if plan.quick { "quick" } else { "full" },
        git_rev(),
        plan.binary.display(),
        work.0.display(),
        loadavg(),
    );
    println!(
        "conditions: publisher=str0m test peer over loopback, VP8 1280x720 {FPS} fps {:.0} kbit/s \
         (libvpx realtime, keyframe every {GOP} frames = 1 s, {} frames looped, keyframe requests ignored) \
         + Opus mono 20 ms {:.0} kbit/s = {:.0} kbit/s of media; castgate defaults \
         (record.cluster_ms=500, fsync_secs=5, sync_wait_secs=3, periodic keyframe requests 2 s)",
        clip.video_kbps,
        clip.video.len(),
        clip.audio_kbps,
        clip.video_kbps + clip.audio_kbps,
    );

    // Figure 1.
    let mut runs = Vec::new();
    for (i, &record) in plan.cpu_runs.iter().enumerate() {
        eprintln!(
            "bench: CPU run {}/{} --record {record}, {} s window …",
            i + 1,
            plan.cpu_runs.len(),
            plan.window.as_secs()
        );
        let r = cpu_run(&plan, &clip, record, clk).await?;
        let other = r.machine_cores_busy - (r.gateway_cpu_s + r.bench_cpu_s) / r.window_s;
        println!(
            "run: record={} window_s={:.1} gateway_cpu_s={:.2} cpu_s_per_min={:.2} ({:.1}% of one core) \
             rec_thread_cpu_s_per_min={:.2} file_growth_mib_per_min={:.1} wchar_mib_per_min={:.1} \
             write_syscalls_per_s={:.0} (incl. tokio eventfd wake-ups) \
             block_write_mib_per_min={:.1} media_sent_mib_per_min={:.1} video_frames_sent={} rss_kib={} \
             threads={} | bench_cpu%={:.0} machine_busy%={:.0} (of {cores} cores) other_processes_cpu%={:.0} \
             loadavg={} publisher_late_frames={} max_late_ms={:.0}{}{} | {}",
            r.record,
            r.window_s,
            r.gateway_cpu_s,
            r.cpu_per_min(),
            r.gateway_cpu_s / r.window_s * 100.0,
            r.rec_thread_cpu_s * 60.0 / r.window_s,
            r.per_min(r.file_bytes) / 1048576.0,
            r.per_min(r.wchar) / 1048576.0,
            r.syscw as f64 / r.window_s,
            r.per_min(r.write_bytes) / 1048576.0,
            r.per_min(r.media_bytes_sent) / 1048576.0,
            r.video_sent_window,
            r.rss_kib,
            r.threads,
            r.bench_cpu_s / r.window_s * 100.0,
            r.machine_busy * 100.0,
            other.max(0.0) * 100.0,
            r.loadavg,
            r.pub_late,
            r.pub_max_late_ms,
            if r.record {
                format!(" api_states={}", r.api_recordings)
            } else {
                String::new()
            },
            r.recorded_frames.map_or(String::new(), |(k, s)| format!(
                " finalized_file_video_frames={k} of_sent={s}"
            )),
            r.gateway,
        );
        runs.push(r);
    }
    let pick = |on: bool| -> Vec<&CpuRun> { runs.iter().filter(|r| r.record == on).collect() };
    let (on, off) = (pick(true), pick(false));
    // Pooled: total CPU over total window of each mode.
    let pooled = |rs: &[&CpuRun], f: &dyn Fn(&CpuRun) -> f64| {
        rs.iter().map(|r| f(r)).sum::<f64>() * 60.0 / rs.iter().map(|r| r.window_s).sum::<f64>()
    };
    let cpu_on = pooled(&on, &|r| r.gateway_cpu_s);
    let cpu_off = pooled(&off, &|r| r.gateway_cpu_s);
    let rec_thread = pooled(&on, &|r| r.rec_thread_cpu_s);
    let file_on = pooled(&on, &|r| r.file_bytes as f64);
    let wchar_on = pooled(&on, &|r| r.wchar as f64);
    let media = pooled(&on, &|r| r.media_bytes_sent as f64);
    let window_each: f64 = on.iter().map(|r| r.window_s).sum();
    let runs_on: Vec<f64> = on.iter().map(|r| r.cpu_per_min()).collect();
    let runs_off: Vec<f64> = off.iter().map(|r| r.cpu_per_min()).collect();
    println!(
        "figure: gateway_cpu_s_per_recorded_minute stream=720p30_vp8_opus_{:.0}kbps record_on={:.2} record_off={:.2} \
         recording_cost={:.2} ({:+.0}%) of_which_recording_thread={:.2} (pooled over {} run(s) of each mode, {:.0} s per mode, order {}; \
         per run on=[{}] off=[{}])",
        clip.video_kbps + clip.audio_kbps,
        cpu_on,
        cpu_off,
        cpu_on - cpu_off,
        (cpu_on / cpu_off - 1.0) * 100.0,
        rec_thread,
        on.len(),
        window_each,
        plan.cpu_runs
            .iter()
            .map(|&r| if r { "on" } else { "off" })
            .collect::<Vec<_>>()
            .join(","),
        list(&runs_on, 2),
        list(&runs_off, 2),
    );
    println!(
        "figure: bytes_written_per_recorded_minute file_growth_mib={:.2} wchar_mib={:.2} media_received_mib={:.2} \
         (file/media={:.3})",
        file_on / 1048576.0,
        wchar_on / 1048576.0,
        media / 1048576.0,
        file_on / media.max(1.0),
    );

    // Figure 2.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut kills = Vec::new();
    for i in 0..plan.kills {
        let at = plan.kill_from + (plan.kill_to - plan.kill_from) * rng.next_f64();
        eprintln!("bench: SIGKILL {}/{} at {at:.2} s …", i + 1, plan.kills);
        let r = kill_run(&plan, &clip, Duration::from_secs_f64(at)).await?;
        println!(
            "kill: at_s={:.3} video_sent={} video_in_part={} video_loss_ms={:.0} audio_sent={} audio_in_part={} \
             audio_loss_ms={:.0} wall_minus_recorded_span_ms={} part={} part_bytes={} decode_error_lines={}{} | {}",
            r.at_s,
            r.video_sent,
            r.video_kept,
            r.video_loss_ms(),
            r.audio_sent,
            r.audio_kept,
            r.audio_loss_ms(),
            r.ts_gap_ms.map_or("?".into(), |g| format!("{g:.0}")),
            r.part_name,
            r.part_bytes,
            r.decode_errors,
            if r.decode_first.is_empty() {
                String::new()
            } else {
                format!(" first={:?}", r.decode_first)
            },
            r.log,
        );
        kills.push(r);
    }
    let vloss: Vec<f64> = kills.iter().map(KillRun::video_loss_ms).collect();
    let aloss: Vec<f64> = kills.iter().map(KillRun::audio_loss_ms).collect();
    let gaps: Vec<f64> = kills.iter().filter_map(|k| k.ts_gap_ms).collect();
    println!(
        "figure: sigkill_loss_ms video max={:.0} median={:.0} (frames sent but not in the .part × 33.3 ms; \
         n={} kills at {:.1}–{:.1} s) | audio max={:.0} median={:.0} | wall_minus_recorded_span max={:.0} \
         median={:.0} | all .part files decode cleanly: {}",
        max(&vloss),
        median(&vloss),
        kills.len(),
        plan.kill_from,
        plan.kill_to,
        max(&aloss),
        median(&aloss),
        max(&gaps),
        median(&gaps),
        kills.iter().all(|k| k.decode_errors == 0),
    );

    // Figure 3.
    eprintln!("bench: building a 10-minute unfinished recording and repairing it …");
    let r = {
        let plan = plan.clone();
        let clip = clip.clone();
        let dir = work.0.clone();
        tokio::task::spawn_blocking(move || repair_case(&plan, &clip, &dir))
            .await
            .context("repair")??
    };
    for run in &r.runs {
        println!(
            "repair: input_page_cache={} resident_before={} wall_s={:.3} self_reported_s={} cpu_s={:.3}",
            if run.cold { "evicted" } else { "warm" },
            run.resident_before,
            run.wall_s,
            run.self_reported_s
                .map_or("?".into(), |s| format!("{s:.2}")),
            run.cpu_s,
        );
    }
    let warm: Vec<f64> = r
        .runs
        .iter()
        .filter(|x| !x.cold)
        .map(|x| x.wall_s)
        .collect();
    let cold: Vec<f64> = r.runs.iter().filter(|x| x.cold).map(|x| x.wall_s).collect();
    let cpu: Vec<f64> = r.runs.iter().map(|x| x.cpu_s).collect();
    println!(
        "figure: repair_10min_file_s median_warm_cache={:.2} median_evicted_cache={:.2} (n={} each; \
         runs warm=[{}] evicted=[{}]; cpu_s median={:.2}) input: {:.1} MiB, {} video + {} audio packets, \
         cues={} duration={} (built in {:.1} s) → output: {:.1} MiB, {} video + {} audio packets, \
         cues={} cue_points={} duration_s={} info_duration={}",
        median(&warm),
        median(&cold),
        plan.repairs,
        list(&warm, 2),
        list(&cold, 2),
        median(&cpu),
        r.input_bytes as f64 / 1048576.0,
        r.input_video,
        r.input_audio,
        r.input_has_cues,
        r.input_has_duration,
        r.build_s,
        r.output_bytes as f64 / 1048576.0,
        r.output_video,
        r.output_audio,
        r.output_has_cues,
        r.output_cue_points,
        r.output_duration.map_or("?".into(), |d| format!("{d:.2}")),
        r.output_has_duration,
    );

    println!("summary:");
    println!(
        "  Recording a {:.1} Mbit/s 720p30 VP8+Opus stream costs the gateway {:.2} CPU-s per minute \
         ({:.2} with recording vs {:.2} without, i.e. {:.1}% vs {:.1}% of one core) and writes \
         {:.1} MiB per minute.",
        (clip.video_kbps + clip.audio_kbps) / 1000.0,
        cpu_on - cpu_off,
        cpu_on,
        cpu_off,
        cpu_on / 60.0 * 100.0,
        cpu_off / 60.0 * 100.0,
        file_on / 1048576.0,
    );
    println!(
        "  After kill -9, the .part file misses at most {:.0} ms of video (median {:.0} ms) of what was sent.",
        max(&vloss),
        median(&vloss)
    );
    println!(
        "  Repairing a 10-minute ({:.0} MiB) unfinished file takes {:.2} s (median, input cached) / {:.2} s \
         (input evicted from the page cache); the result has {} cue points and lasts {} s.",
        r.input_bytes as f64 / 1048576.0,
        median(&warm),
        median(&cold),
        r.output_cue_points,
        r.output_duration.map_or("?".into(), |d| format!("{d:.1}")),
    );
    println!("  total run time {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
