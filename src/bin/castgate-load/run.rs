//! One run: publishers connect, warm up, viewers ramp in, the measurement window, then
//! everything leaves (DELETE) and the server settles; the outcomes become a [`Report`].
//!
//! Every task is owned here: publishers, viewers, the sampler and the progress line
//! stop through watch channels and are joined before `run` returns.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;

use crate::cli::Args;
use crate::fixture::Fixture;
use crate::peer;
use crate::procstat;
use crate::publisher::{self, PublisherSpec, PublisherStats, SentLog};
use crate::report::Report;
use crate::stats::Percentiles;
use crate::viewer::{self, Live, ViewerOutcome, ViewerSpec};

/// Timeout of every HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the last viewers of a ramp to connect or fail.
const RAMP_GRACE: Duration = Duration::from_secs(15);
/// How often the server's memory (and the number of connected viewers) is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Runs the load; `Err` means nothing could be measured (unreachable server, every
/// publisher refused, bad PID).
pub async fn run(args: &Args, fixture: Arc<Fixture>) -> anyhow::Result<Report> {
    let server_ip = peer::server_ip(&args.url).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let pid = args.server_pid;
    let read_server = || pid.map(procstat::read).transpose();
    let start = read_server()?;

    let live = Arc::new(Live::default());
    let peak_rss = Arc::new(AtomicU64::new(start.map_or(0, |r| r.rss_kb)));
    let peak_viewers = Arc::new(AtomicU64::new(0));
    let (sampler_stop, sampler_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample(
        pid,
        live.clone(),
        peak_rss.clone(),
        peak_viewers.clone(),
        sampler_rx,
    ));

    // Publishers.
    let (pub_stop, pub_stop_rx) = watch::channel(false);
    let mut publishers = JoinSet::new();
    let mut waiting = Vec::new();
    let mut logs = Vec::new();
    let mut pub_stats = Vec::new();
    for i in 0..args.publishers {
        let (tx, rx) = oneshot::channel();
        let log = Arc::new(SentLog::default());
        let stats = Arc::new(PublisherStats::default());
        let spec = PublisherSpec {
            client: client.clone(),
            url: args.whip_url(&args.stream_name(i)),
            token: args.token.clone(),
            fixture: fixture.clone(),
            server_ip,
        };
        let task = publisher::run(spec, log.clone(), stats.clone(), tx, pub_stop_rx.clone());
        publishers.spawn(async move { (i, task.await) });
        waiting.push(rx);
        logs.push(log);
        pub_stats.push(stats);
    }
    let mut streams = Vec::new(); // indices of connected publishers
    let mut errors: HashMap<String, u64> = HashMap::new();
    for (i, rx) in waiting.into_iter().enumerate() {
        match rx.await {
            Ok(Ok(())) => streams.push(i),
            Ok(Err(e)) => *errors.entry(e).or_default() += 1,
            Err(_) => *errors.entry("publisher task ended".into()).or_default() += 1,
        }
    }
    if streams.is_empty() {
        let _ = pub_stop.send(true);
        let _ = sampler_stop.send(true);
        while publishers.join_next().await.is_some() {}
        let _ = sampler.await;
        let why = errors
            .into_keys()
            .next()
            .unwrap_or_else(|| "unknown".into());
        bail!("no publisher could connect to {}: {why}", args.url);
    }

    let progress_stop = watch::channel(false);
    let progress = (!args.quiet).then(|| {
        tokio::spawn(progress_line(
            live.clone(),
            streams.len(),
            args.publishers,
            progress_stop.1.clone(),
        ))
    });

    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let before_viewers = read_server()?;

    // Viewers.
    let (view_stop, view_stop_rx) = watch::channel(false);
    let mut viewers: JoinSet<ViewerOutcome> = JoinSet::new();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let lifetime = args.viewer_lifetime.map(Duration::from_secs_f64);
    let interval =
        (args.ramp_per_sec > 0.0).then(|| Duration::from_secs_f64(1.0 / args.ramp_per_sec));
    let ramp_start = tokio::time::Instant::now();
    let first_post = Instant::now();
    let measure_from = Arc::new(OnceLock::new());
    let mut spawned = 0u64;
    let mut spawn_one = |k: u64, permit| {
        let stream = streams[(k as usize) % streams.len()];
        let spec = ViewerSpec {
            client: client.clone(),
            url: args.whep_url(&args.stream_name(stream), k),
            token: args.token.clone(),
            server_ip,
            stream,
            lifetime,
            measure_from: measure_from.clone(),
            permit: Some(permit),
        };
        viewers.spawn(viewer::run(
            spec,
            logs[stream].clone(),
            live.clone(),
            view_stop_rx.clone(),
        ));
    };
    let window;
    if lifetime.is_some() {
        // Churn: keep joining for the whole duration; each viewer leaves on its own.
        let end = ramp_start + Duration::from_secs_f64(args.duration);
        window = Window::open(pid, &live)?;
        let _ = measure_from.set(window.at);
        while let Some(iv) = interval {
            let at = ramp_start + iv.mul_f64(spawned as f64);
            if at >= end {
                break;
            }
            tokio::time::sleep_until(at).await;
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            spawn_one(spawned, permit);
            spawned += 1;
        }
        tokio::time::sleep_until(end).await;
    } else {
        let total = (streams.len() * args.viewers_per_stream) as u64;
        while spawned < total {
            if let Some(iv) = interval {
                tokio::time::sleep_until(ramp_start + iv.mul_f64(spawned as f64)).await;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            spawn_one(spawned, permit);
            spawned += 1;
        }
        let grace = tokio::time::Instant::now() + RAMP_GRACE;
        while live.ok.load(Ordering::Relaxed) + live.failed.load(Ordering::Relaxed) < total
            && tokio::time::Instant::now() < grace
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        window = Window::open(pid, &live)?;
        let _ = measure_from.set(window.at);
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    }
    let closed = window.close(pid, &live)?;

    // Everyone leaves.
    let _ = view_stop.send(true);
    let mut outcomes = Vec::new();
    while let Some(done) = viewers.join_next().await {
        if let Ok(o) = done {
            outcomes.push(o);
        }
    }
    let _ = pub_stop.send(true);
    let mut publishers_ok = streams.len() as u64;
    while let Some(done) = publishers.join_next().await {
        // A publisher that connected and then ended before the stop failed too.
        if let Ok((i, Err(e))) = done
            && streams.contains(&i)
        {
            publishers_ok = publishers_ok.saturating_sub(1);
            *errors.entry(e).or_default() += 1;
        }
    }
    let _ = progress_stop.0.send(true);
    if let Some(p) = progress {
        let _ = p.await;
    }
    // Every session has ended: close the HTTP connections too, as browsers
    // that left would, so the end figure is a server with nothing open.
    drop(client);
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let end = read_server()?;
    let _ = sampler_stop.send(true);
    let _ = sampler.await;

    let mut r = Report {
        url: args.url.clone(),
        codec: args.codec.name().into(),
        size: args.size.clone(),
        bitrate_kbps: args.bitrate_kbps,
        clip_video_kbps: round2(fixture.video_kbps),
        clip_audio_kbps: round2(fixture.audio_kbps),
        publishers: args.publishers,
        viewers_per_stream: if lifetime.is_some() {
            0
        } else {
            args.viewers_per_stream
        },
        publishers_ok,
        viewers_peak: peak_viewers.load(Ordering::Relaxed),
        window_s: round2(closed.secs),
        window_packets: closed.packets,
        load_cpu_s: round2(closed.self_cpu_s),
        ..Report::default()
    };
    fill_viewers(&mut r, &outcomes, first_post, &mut errors);
    for s in &pub_stats {
        r.publisher_nacks_received += s.nacks_received.load(Ordering::Relaxed);
        r.publisher_keyframe_requests += s.keyframe_requests.load(Ordering::Relaxed);
        r.publisher_keyframe_jumps += s.keyframe_jumps.load(Ordering::Relaxed);
        r.publisher_late_frames += s.late_frames.load(Ordering::Relaxed);
    }
    r.sessions_ok = r.publishers_ok + r.viewers_ok;
    r.sessions_failed = (args.publishers as u64 - r.publishers_ok) + r.viewers_failed;
    let mut errs: Vec<(String, u64)> = errors.into_iter().collect();
    errs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    errs.truncate(10);
    r.errors = errs;

    if let (Some(s), Some(b), Some(e), Some(cpu)) =
        (start, before_viewers, end, closed.server_cpu_s)
    {
        let peak = peak_rss.load(Ordering::Relaxed).max(b.rss_kb);
        r.server_cpu_s = Some(round2(cpu));
        r.server_cpu_pct = Some(round2(cpu / closed.secs.max(0.001) * 100.0));
        r.server_cpu_us_per_packet =
            (closed.packets > 0).then(|| round2(cpu * 1e6 / closed.packets as f64));
        r.server_rss_start_kb = Some(s.rss_kb);
        r.server_rss_before_viewers_kb = Some(b.rss_kb);
        r.server_peak_rss_kb = Some(peak);
        r.server_rss_end_kb = Some(e.rss_kb);
        r.server_rss_per_viewer_kb = (r.viewers_peak > 0)
            .then(|| round2(peak.saturating_sub(b.rss_kb) as f64 / r.viewers_peak as f64));
    }
    Ok(r)
}

/// The viewers' part of the report.
fn fill_viewers(
    r: &mut Report,
    outcomes: &[ViewerOutcome],
    first_post: Instant,
    errors: &mut HashMap<String, u64>,
) {
    let (mut connect, mut first, mut all, mut keys, mut deltas) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut per_frame: HashMap<(usize, u32), (f64, bool)> = HashMap::new();
    let mut last_connect = first_post;
    let mut worst = 0.0f64;
    for o in outcomes {
        match (&o.error, o.connect_ms) {
            (Some(e), _) => {
                r.viewers_failed += 1;
                *errors.entry(e.clone()).or_default() += 1;
            }
            (None, Some(_)) => r.viewers_ok += 1,
            (None, None) => {} // stopped before it connected (end of a churn period)
        }
        connect.extend(o.connect_ms);
        first.extend(o.first_frame_ms);
        if let Some(at) = o.connected_at {
            last_connect = last_connect.max(at);
        }
        r.packets_received += o.packets;
        r.packets_lost += o.lost;
        r.frames_complete += o.frames_complete;
        r.frames_incomplete += o.frames_incomplete;
        r.keyframes_received += o.keyframes;
        r.packets_out_of_order += o.out_of_order;
        r.nacks_sent += o.nacks;
        r.retransmissions_received += o.retransmissions;
        if o.packets + o.lost > 0 {
            worst = worst.max(o.lost as f64 * 100.0 / (o.packets + o.lost) as f64);
        }
        for d in &o.delays {
            all.push(d.ms);
            if d.keyframe {
                keys.push(d.ms);
            } else {
                deltas.push(d.ms);
            }
            let e = per_frame
                .entry((d.stream, d.rtp_time))
                .or_insert((0.0, d.keyframe));
            e.0 = e.0.max(d.ms);
        }
    }
    let expected = r.packets_received + r.packets_lost;
    r.loss_pct = if expected > 0 {
        round4(r.packets_lost as f64 * 100.0 / expected as f64)
    } else {
        0.0
    };
    r.loss_pct_max_viewer = round4(worst);
    r.connect_ms = Percentiles::of(&mut connect);
    r.first_frame_ms = Percentiles::of(&mut first);
    r.delay_ms = Percentiles::of(&mut all);
    r.delay_ms_keyframes = Percentiles::of(&mut keys);
    r.delay_ms_delta = Percentiles::of(&mut deltas);
    let (mut fk, mut fd): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for (ms, key) in per_frame.into_values() {
        if key { fk.push(ms) } else { fd.push(ms) }
    }
    r.fanout_ms_keyframes = Percentiles::of(&mut fk);
    r.fanout_ms_delta = Percentiles::of(&mut fd);
    let setup_secs = last_connect.duration_since(first_post).as_secs_f64();
    r.setup_per_s = if setup_secs > 0.0 {
        round2(r.viewers_ok as f64 / setup_secs)
    } else {
        0.0
    };
}

/// Readings at the start of the measurement window.
struct Window {
    at: Instant,
    packets: u64,
    server_cpu_s: Option<f64>,
    self_cpu_s: f64,
}

/// What happened within the window.
struct Closed {
    secs: f64,
    packets: u64,
    server_cpu_s: Option<f64>,
    self_cpu_s: f64,
}

impl Window {
    fn open(pid: Option<u32>, live: &Live) -> anyhow::Result<Window> {
        Ok(Window {
            at: Instant::now(),
            packets: live.packets.load(Ordering::Relaxed),
            server_cpu_s: pid.map(procstat::read).transpose()?.map(|r| r.cpu_s),
            self_cpu_s: procstat::read(std::process::id()).map_or(0.0, |r| r.cpu_s),
        })
    }

    fn close(self, pid: Option<u32>, live: &Live) -> anyhow::Result<Closed> {
        let server = pid.map(procstat::read).transpose()?.map(|r| r.cpu_s);
        Ok(Closed {
            secs: self.at.elapsed().as_secs_f64(),
            packets: live.packets.load(Ordering::Relaxed) - self.packets,
            server_cpu_s: server.zip(self.server_cpu_s).map(|(b, a)| b - a),
            self_cpu_s: procstat::read(std::process::id()).map_or(0.0, |r| r.cpu_s)
                - self.self_cpu_s,
        })
    }
}

/// Samples the server's resident memory and the viewers connected until stopped.
async fn sample(
    pid: Option<u32>,
    live: Arc<Live>,
    peak_rss: Arc<AtomicU64>,
    peak_viewers: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Some(r) = pid.and_then(|p| procstat::read(p).ok()) {
            peak_rss.fetch_max(r.rss_kb, Ordering::Relaxed);
        }
        peak_viewers.fetch_max(live.connected.load(Ordering::Relaxed), Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Prints a progress line on stderr every second (rewritten in place on a terminal).
async fn progress_line(
    live: Arc<Live>,
    publishers_ok: usize,
    publishers: usize,
    mut stop: watch::Receiver<bool>,
) {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {
                if tty {
                    eprintln!();
                }
                return;
            }
        }
        let packets = live.packets.load(Ordering::Relaxed);
        let line = format!(
            "[{:6.1}s] publishers {publishers_ok}/{publishers}  viewers {} connected ({} ok, {} failed)  packets {packets} (+{}/s)  lost {}",
            start.elapsed().as_secs_f64(),
            live.connected.load(Ordering::Relaxed),
            live.ok.load(Ordering::Relaxed),
            live.failed.load(Ordering::Relaxed),
            packets - last,
            live.lost.load(Ordering::Relaxed),
        );
        last = packets;
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}
