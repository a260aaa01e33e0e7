// Helpers for the browser tests: a castgate process on free loopback ports,
// Debian's Chromium (never a downloaded browser) with the flags below, and polling.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
/** The castgate under test: the debug build, or `CASTGATE_BIN` (e.g. a release build, for benchmarks). */
export const binary = process.env.CASTGATE_BIN || path.join(repoRoot, 'target', 'debug', 'castgate');
export const screenshotDir = path.join(repoRoot, 'test-artifacts', 'screenshots');

/** Chromium flags; each one matters. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox', // CI runs as root
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  // No calls to Google's services: the test machines have no network beyond
  // loopback, and those calls are refused many at a time.
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // The fake camera (640x480, a moving pattern) and microphone (beeps), granted
  // without a prompt; without the fake UI a page that never called
  // getUserMedia (a viewer) may gather no candidates at all.
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  // Without it Chromium offers no 127.0.0.1 candidate.
  '--allow-loopback-in-peer-connection',
  // Host candidates as addresses, not mDNS `.local` names castgate cannot resolve.
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

export const DESKTOP = { width: 1280, height: 820 };
export const PHONE = { width: 390, height: 844 };

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `fn` until it returns something truthy (returned), or throws after
 * `timeout` ms with `what` and the last value seen.
 */
export async function waitFor(fn, { timeout = 20000, interval = 100, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastError;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      const seen = lastError ? `last error: ${lastError.message}` : `last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${timeout / 1000} s waiting for ${what} (${seen})`);
    }
    await sleep(interval);
  }
}

/** A TCP port free on 127.0.0.1 now. */
export async function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function freeUdpPort() {
  // castgate's media port takes UDP and, for ICE-TCP, TCP on the same number:
  // a port is free only when both are.
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const sock = dgram.createSocket('udp4');
      sock.once('error', reject);
      sock.bind(0, '127.0.0.1', () => {
        const { port: p } = sock.address();
        sock.close(() => resolve(p));
      });
    });
    const tcpFree = await new Promise((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (tcpFree) return port;
  }
}

/**
 * Starts `target/debug/castgate serve` on free loopback ports (or the given
 * ones) in an empty working directory and waits for GET /healthz. It records
 * into `recordDir` (default: a `recordings` folder of that temporary working
 * directory, removed by `stop()`). Inherited CASTGATE_* variables are dropped;
 * `env` adds variables.
 */
export async function startCastgate({ args = [], env: extraEnv = {}, httpPort, udpPort, recordDir, netns } = {}) {
  if (!fs.existsSync(binary)) throw new Error(`${binary} is missing: run \`cargo build --bin castgate\` first`);
  // In a namespace of its own every port is free; HTTP on every address
  // (loopback for pages that need a secure context, the link for the other
  // host), media on the link's address.
  httpPort ??= netns ? 8080 : await freeTcpPort();
  udpPort ??= netns ? 40000 : await freeUdpPort();
  const httpListen = netns ? `0.0.0.0:${httpPort}` : `127.0.0.1:${httpPort}`;
  const udpListen = netns ? `${netns.address}:${udpPort}` : `127.0.0.1:${udpPort}`;
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'castgate-browser-'));
  recordDir ??= path.join(cwd, 'recordings');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CASTGATE_')));
  env.RUST_LOG ??= 'castgate=info,warn';
  Object.assign(env, extraEnv);
  const command = [
    binary,
    'serve',
    '--http-listen', httpListen,
    '--udp-listen', udpListen,
    '--record-dir', recordDir,
    ...args,
  ];
  const inNs = netns ? ['ip', 'netns', 'exec', netns.name] : [];
  const [program, ...rest] = [...inNs, ...command];
  const proc = spawn(program, rest, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const killOnExit = () => proc.kill('SIGKILL');
  process.once('exit', killOnExit);
  const logs = [];
  const keep = (chunk) => {
    logs.push(...chunk.toString().split('\n').filter(Boolean));
    if (logs.length > 400) logs.splice(0, logs.length - 400);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exited = null;
  const exit = new Promise((resolve) => proc.once('exit', (code, signal) => {
    exited = { code, signal };
    process.removeListener('exit', killOnExit);
    resolve(exited);
  }));
  const base = `http://127.0.0.1:${httpPort}`;
  const server = {
    base,
    httpPort,
    udpPort,
    recordDir,
    proc,
    logs,
    /** Stops the process (SIGTERM, then SIGKILL after 5 s) and removes its directory. */
    async stop({ signal = 'SIGTERM' } = {}) {
      if (!exited) {
        proc.kill(signal);
        const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exit;
        clearTimeout(timer);
      }
      fs.rmSync(cwd, { recursive: true, force: true });
    },
  };
  try {
    await waitFor(async () => {
      if (exited) throw new Error(`castgate exited early (${JSON.stringify(exited)}):\n${logs.join('\n')}`);
      if (netns) return netns.fetchOk(`${base}/healthz`);
      const res = await fetch(`${base}/healthz`);
      return res.ok;
    }, { timeout: 20000, what: `castgate on ${base} to answer /healthz` });
  } catch (e) {
    await server.stop({ signal: 'SIGKILL' });
    throw e;
  }
  return server;
}

/**
 * A Chromium of its own (a persistent context in a new empty profile directory);
 * `args` are extra command-line flags.
 */
export async function launchBrowser({ args = [], prefs = null, netns } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'castgate-chromium-'));
  if (prefs) {
    fs.mkdirSync(path.join(dir, 'Default'));
    fs.writeFileSync(path.join(dir, 'Default', 'Preferences'), JSON.stringify(prefs));
  }
  let executablePath = '/usr/bin/chromium';
  if (netns) {
    // Playwright talks to Chromium over inherited pipes, which `ip netns
    // exec` keeps (it execs, it does not fork).
    executablePath = path.join(dir, 'chromium-in-netns');
    fs.writeFileSync(executablePath, `#!/bin/sh\nexec ip netns exec ${netns.name} /usr/bin/chromium "$@"\n`, { mode: 0o755 });
  }
  const context = await chromium.launchPersistentContext(dir, {
    executablePath,
    args: [...CHROMIUM_ARGS, ...args],
    viewport: DESKTOP,
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Opens a page that records uncaught exceptions and console errors (except
 * failed resource loads, which are the expected 4xx answers of WHIP/WHEP).
 */
export async function openPage(browser, label) {
  const page = await browser.context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(`${label}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) page.errors.push(`${label}: console ${m.text()}`);
  });
  return page;
}

/**
 * Ends a suite: closes its browsers, stops its castgate, then fails if any of
 * its pages (from openPage) logged an error.
 */
export async function finish({ pages, browsers, server }) {
  const errors = pages.flatMap((p) => p.errors);
  await Promise.all(browsers.map((b) => b?.close()));
  await server?.stop();
  assert.deepEqual(errors, [], 'the pages logged errors');
}

/** Saves a screenshot as test-artifacts/screenshots/<name>.png. */
export async function screenshot(page, name) {
  fs.mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: path.join(screenshotDir, `${name}.png`), fullPage: true, animations: 'disabled' });
}

/** Media figures of the watch page: the <video> element and its connection's inbound-rtp stats. */
export async function watchFigures(page) {
  return page.evaluate(async () => {
    const video = document.querySelector('#video');
    const out = {
      state: window.castgate?.whep?.state ?? null,
      overlay: document.querySelector('#overlay').hidden ? 'none' : document.querySelector('#overlay').dataset.state,
      videoWidth: video.videoWidth,
      totalVideoFrames: video.getVideoPlaybackQuality?.().totalVideoFrames ?? 0,
      framesDecoded: 0,
      frameHeight: 0,
      freezeCount: 0,
      totalFreezesDuration: 0,
      packetsLost: 0,
      videoCodec: null,
      audioBytes: 0,
      audioSamples: 0,
    };
    const pc = window.castgate?.whep?.pc;
    if (!pc) return out;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'video') {
        out.framesDecoded = s.framesDecoded ?? 0;
        out.frameHeight = s.frameHeight ?? 0;
        out.freezeCount = s.freezeCount ?? 0;
        out.totalFreezesDuration = s.totalFreezesDuration ?? 0;
        out.packetsLost = s.packetsLost ?? 0;
        out.videoCodec = report.get(s.codecId)?.mimeType ?? null;
      } else if (s.kind === 'audio') {
        out.audioBytes = s.bytesReceived ?? 0;
        out.audioSamples = s.totalSamplesReceived ?? 0;
      }
    });
    return out;
  });
}

/**
 * Waits until the watch page plays: a picture (videoWidth > 0), then decoded
 * frames, shown frames and audio bytes that keep growing. Returns the figures.
 */
export async function expectPlaying(page, { codec, timeout = 20000 } = {}) {
  const first = await waitFor(async () => {
    const f = await watchFigures(page);
    return f.videoWidth > 0 && f.framesDecoded > 0 && f.audioBytes > 0 ? f : null;
  }, { timeout, what: 'the watch page to show a picture' });
  const later = await waitFor(async () => {
    const f = await watchFigures(page);
    return f.framesDecoded >= first.framesDecoded + 15 && f.totalVideoFrames > first.totalVideoFrames && f.audioBytes > first.audioBytes ? f : null;
  }, { timeout, what: 'decoded frames and audio bytes to keep growing' });
  if (codec && later.videoCodec?.toLowerCase() !== `video/${codec.toLowerCase()}`) {
    throw new Error(`the viewer receives ${later.videoCodec}, not ${codec}`);
  }
  return later;
}

/**
 * On a publish page: sets name, codec, resolution, token and (if asked)
 * simulcast, waits for the camera, clicks Start and (unless `expectLive` is
 * false) waits for 'connected'.
 */
export async function startPublishing(page, base, { name, codec, resolution = '360', token, simulcast = false, expectLive = true, navigate = true }) {
  if (navigate) await page.goto(`${base}/publish`);
  if (simulcast) await page.check('#simulcast');
  await page.fill('#name', name);
  if (codec) await page.selectOption('#codec', codec);
  await page.selectOption('#resolution', resolution);
  await page.fill('#token', token ?? '');
  await waitFor(() => page.evaluate(() => window.castgate?.media?.video?.readyState === 'live'), { what: 'the camera preview' });
  await page.click('#start');
  if (expectLive) {
    await waitFor(() => page.evaluate(() => window.castgate.whip?.state === 'connected'), { what: `publishing ${name} to connect` });
  }
}

/** Clicks Stop on a publish page and waits until it is idle. */
export async function stopPublishing(page) {
  await page.click('#stop');
  await waitFor(() => page.evaluate(() => window.castgate.whip === null), { what: 'the publish page to stop' });
}

/** GET /api/streams. */
export async function liveStreams(base) {
  const res = await fetch(`${base}/api/streams`);
  return (await res.json()).streams;
}

// ---------- the recordings page's player ----------

/** What the page's <video> is doing. */
export function playerState(page) {
  return page.evaluate(() => {
    const v = document.querySelector('#video');
    return {
      src: v.currentSrc,
      readyState: v.readyState,
      paused: v.paused,
      currentTime: v.currentTime,
      duration: v.duration,
      videoWidth: v.videoWidth,
      frames: v.getVideoPlaybackQuality().totalVideoFrames,
      error: v.error?.code ?? null,
      overlay: document.querySelector('#player-overlay').hidden ? null : document.querySelector('#player-overlay-title').textContent,
    };
  });
}

/** Waits until the player shows pictures and its time moves on. */
export async function expectPlayback(page, what) {
  const first = await waitFor(async () => {
    const s = await playerState(page);
    return s.readyState >= 2 && s.videoWidth > 0 && s.currentTime > 0.2 ? s : null;
  }, { what: `${what} to start playing` });
  return waitFor(async () => {
    const s = await playerState(page);
    return s.currentTime > first.currentTime + 0.5 && s.frames > first.frames ? s : null;
  }, { what: `${what} to keep playing` });
}

/** Seeks the recordings page's <video> to the middle of its file: the target, where it
 * landed, the frames decoded so far, and the media time of the first frame shown after. */
function seekToMiddle(page) {
  return page.evaluate(async () => {
    const v = document.querySelector('#video');
    const target = v.duration / 2;
    await new Promise((resolve) => { v.addEventListener('seeked', resolve, { once: true }); v.currentTime = target; });
    const landed = v.currentTime;
    if (v.paused) await v.play(); // it may have reached the end meanwhile
    const frames = v.getVideoPlaybackQuality().totalVideoFrames;
    const shown = await new Promise((resolve) => {
      v.requestVideoFrameCallback((_, meta) => resolve(meta.mediaTime));
      setTimeout(() => resolve(null), 5000);
    });
    return { target, landed, frames, shown };
  });
}

/** Seeks the recordings page's player to the middle of its file and checks that the
 * time lands there and frames decode from there on; prints the figure as `label`. */
export async function expectSeekToMiddle(page, label) {
  const seek = await seekToMiddle(page);
  assert.ok(Math.abs(seek.landed - seek.target) < 0.5, `seeked to ${seek.target}, landed at ${seek.landed}`);
  assert.ok(seek.shown != null && seek.shown >= seek.target - 0.5, `a frame after the seek (at ${seek.shown})`);
  const after = await waitFor(async () => {
    const s = await playerState(page);
    return s.frames > seek.frames + 5 && s.currentTime > seek.target + 0.3 ? s : null;
  }, { what: 'frames to decode after the seek' });
  assert.ok(after.error === null && after.overlay === null);
  console.log(`figure: ${label} target=${seek.target.toFixed(2)} landed=${seek.landed.toFixed(2)} first_frame_at=${seek.shown?.toFixed(2)}`);
}

const run = (program, args) => new Promise((resolve, reject) => {
  execFile(program, args, (error, stdout, stderr) => {
    if (error) reject(new Error(`${program} ${args.join(' ')}: ${stderr || error.message}`));
    else resolve(stdout);
  });
});

/**
 * Two network namespaces joined by a veth pair: two hosts, `a` (192.0.2.1)
 * and `b` (192.0.2.2), on the documentation range (never routed anywhere),
 * created by this test and deleted by `close()`. `limitAtoB(kbit)` shapes
 * what `a` sends to `b` with `tc`'s token bucket (a queue holding up to
 * 300 ms, as a slow link has, not a policer); `unlimit()` lifts it. Needs
 * root and iproute2, as the Rust tests' `netns::Pair`.
 */
export async function netnsPair(tag) {
  const id = `${process.pid % 100000}`;
  const a = `cg-${tag}a-${id}`;
  const b = `cg-${tag}b-${id}`;
  const [va, vb] = [`cg${tag}a${id}`.slice(0, 15), `cg${tag}b${id}`.slice(0, 15)];
  const host = (name, address) => ({
    name,
    address,
    /** Whether `url` answers 2xx from inside the namespace. */
    async fetchOk(url) {
      try {
        await run('ip', ['netns', 'exec', name, process.execPath, '-e',
          `fetch(${JSON.stringify(url)}).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))`]);
        return true;
      } catch {
        return false;
      }
    },
  });
  const pair = {
    a: host(a, '192.0.2.1'),
    b: host(b, '192.0.2.2'),
    async limitAtoB(kbit) {
      await pair.unlimit();
      await run('tc', ['-n', a, 'qdisc', 'add', 'dev', va, 'root', 'tbf',
        'rate', `${kbit}kbit`, 'burst', '16kb', 'latency', '300ms']);
    },
    async unlimit() {
      await run('tc', ['-n', a, 'qdisc', 'del', 'dev', va, 'root']).catch(() => {});
    },
    async close() {
      for (const ns of [a, b]) await run('ip', ['netns', 'del', ns]).catch(() => {});
    },
  };
  try {
    for (const ns of [a, b]) {
      await run('ip', ['netns', 'add', ns]);
      await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    await run('ip', ['-n', a, 'link', 'add', va, 'type', 'veth', 'peer', 'name', vb, 'netns', b]);
    await run('ip', ['-n', a, 'addr', 'add', '192.0.2.1/30', 'dev', va]);
    await run('ip', ['-n', b, 'addr', 'add', '192.0.2.2/30', 'dev', vb]);
    await run('ip', ['-n', a, 'link', 'set', va, 'up']);
    await run('ip', ['-n', b, 'link', 'set', vb, 'up']);
  } catch (e) {
    await pair.close();
    throw e;
  }
  return pair;
}
