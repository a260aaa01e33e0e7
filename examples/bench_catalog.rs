//! Benchmark of the recordings catalog with many recordings (issue 16, item 6).
//! It prints figures; it asserts nothing.
//!
//! ```sh
//! cargo build --release --bin castgate
//! cargo run --release --example bench_catalog                 # 10,000 recordings
//! cargo run --release --example bench_catalog -- --count 2000 --bin /path/to/castgate
//! ```
//!
//! Makes `--count` recordings in a temporary folder (100 stream names; each a
//! hard link to one small real WebM, with its sidecar), then starts the gateway
//! (`target/release/castgate serve`, or `--bin`) on it as its own process and
//! measures, over loopback:
//! 1. start-up: from spawning the process to the first `200` of `/healthz`;
//! 2. a listing page: `GET /api/recordings?per_page=50` (newest first), and a
//!    page of one stream (`&stream=cam-7`);
//! 3. one recording: `GET /api/recordings/{id}`;
//! 4. a Range request of its file: `GET /recordings/{id}/download`, `Range: bytes=0-1023`.
//!
//! Each request is timed 200 times after 20 warm-up requests, one at a time on
//! one keep-alive connection; p50 and p95 are printed. `--bin` runs the same
//! against another build (e.g. the one before the in-memory catalog).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const STREAMS: usize = 100;
const SAMPLES: usize = 200;
const WARMUP: usize = 20;

struct Args {
    count: usize,
    bin: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut count = 10_000;
    let mut bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/castgate");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => count = it.next().context("--count N")?.parse()?,
            "--bin" => bin = it.next().context("--bin PATH")?.into(),
            other => bail!("unknown argument {other} (--count N, --bin PATH)"),
        }
    }
    if !bin.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release --bin castgate`",
            bin.display()
        );
    }
    Ok(Args { count, bin })
}

/// One real 1-second WebM, made with the ffmpeg CLI.
fn sample_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join("sample.webm");
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
        ])
        .args(["-t", "1", "-c:v", "libvpx", "-b:v", "300k", "-y"])
        .arg(&out)
        .status()?
        .success();
    if !ok {
        bail!("ffmpeg could not make the sample file");
    }
    Ok(out)
}

/// `count` recordings under `dir/rec`: hard links to `sample` with sidecars.
fn make_recordings(dir: &Path, sample: &Path, count: usize) -> anyhow::Result<PathBuf> {
    let rec = dir.join("rec");
    let size = std::fs::metadata(sample)?.len();
    let base = std::time::SystemTime::now() - Duration::from_secs(count as u64 * 60);
    for i in 0..count {
        let stream = format!("cam-{}", i % STREAMS);
        let folder = rec.join(&stream);
        std::fs::create_dir_all(&folder)?;
        let t = base + Duration::from_secs(i as u64 * 60);
        let stem = humantime::format_rfc3339_seconds(t)
            .to_string()
            .replace(':', "-");
        let file = folder.join(format!("{stem}.webm"));
        std::fs::hard_link(sample, &file)?;
        let meta = serde_json::json!({
            "id": format!("{stream}~{stem}"),
            "stream": stream,
            "file": format!("{stem}.webm"),
            "started_at": humantime::format_rfc3339_seconds(t).to_string(),
            "ended_at": humantime::format_rfc3339_seconds(t + Duration::from_secs(1)).to_string(),
            "duration_secs": 1.0,
            "size_bytes": size,
            "state": "finalized",
            "video": {"codec": "vp8", "width": 320, "height": 240},
            "audio": null,
            "dropped_frames": 0,
            "error": null,
        });
        std::fs::write(
            folder.join(format!("{stem}.json")),
            serde_json::to_vec(&meta)?,
        )?;
    }
    Ok(rec)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18_500)
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Times `SAMPLES` requests (after a warm-up): p50 and p95 in ms.
async fn time(client: &reqwest::Client, url: &str, range: bool) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let mut req = client.get(url);
        if range {
            req = req.header("range", "bytes=0-1023");
        }
        let t = Instant::now();
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        let took = t.elapsed();
        if !(status == 200 || (range && status == 206)) {
            bail!("{url}: status {status}");
        }
        if range && body.len() != 1024 {
            bail!("{url}: a Range of 1024 bytes gave {}", body.len());
        }
        if i >= WARMUP {
            times.push(took);
        }
    }
    times.sort();
    Ok((percentile(&times, 0.5), percentile(&times, 0.95)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = std::env::temp_dir().join(format!("castgate-bench-catalog-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sample = sample_file(&dir)?;
    let made = Instant::now();
    let rec = make_recordings(&dir, &sample, a.count)?;
    eprintln!(
        "bench: {} recordings made in {:.1} s",
        a.count,
        made.elapsed().as_secs_f64()
    );

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let spawned = Instant::now();
    let child = Command::new(&a.bin)
        .args(["serve", "--http-listen", &format!("127.0.0.1:{port}")])
        .args(["--udp-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--record-dir")
        .arg(&rec)
        .env("RUST_LOG", "warn")
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", a.bin.display()))?;
    let _gateway = Gateway(child);
    let client = reqwest::Client::builder().no_proxy().build()?;
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if spawned.elapsed() > Duration::from_secs(120) {
            bail!("castgate did not come up");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let startup_ms = spawned.elapsed().as_secs_f64() * 1000.0;

    let page: serde_json::Value = client
        .get(format!("{base}/api/recordings?per_page=50"))
        .send()
        .await?
        .json()
        .await?;
    if page["total"].as_u64() != Some(a.count as u64) {
        bail!("the catalog lists {} of {}", page["total"], a.count);
    }
    let id = page["recordings"][0]["id"]
        .as_str()
        .context("an id")?
        .to_string();
    let list = time(
        &client,
        &format!("{base}/api/recordings?per_page=50"),
        false,
    )
    .await?;
    let one_stream = time(
        &client,
        &format!("{base}/api/recordings?per_page=50&stream=cam-7"),
        false,
    )
    .await?;
    let get = time(&client, &format!("{base}/api/recordings/{id}"), false).await?;
    let range = time(&client, &format!("{base}/recordings/{id}/download"), true).await?;
    println!(
        "FIGURES catalog of {} recordings ({} streams), {}",
        a.count,
        STREAMS,
        a.bin.display()
    );
    println!("  start-up to /healthz          {startup_ms:8.1} ms");
    println!(
        "  list page (50, newest first)  p50 {:7.2} ms  p95 {:7.2} ms",
        list.0, list.1
    );
    println!(
        "  list page of one stream       p50 {:7.2} ms  p95 {:7.2} ms",
        one_stream.0, one_stream.1
    );
    println!(
        "  GET /api/recordings/{{id}}      p50 {:7.2} ms  p95 {:7.2} ms",
        get.0, get.1
    );
    println!(
        "  Range request (1 KiB)         p50 {:7.2} ms  p95 {:7.2} ms",
        range.0, range.1
    );
    drop(_gateway);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
