// Benchmark (not a test: it prints figures, it asserts nothing about time):
// Chromium viewers joining a Chromium publisher's stream mid-stream, for
// each codec, and how long each takes from `WhepClient.view()` (offer, POST,
// ICE, DTLS) to its first picture on screen (requestVideoFrameCallback).
//
//   cargo build --bin castgate      (or CASTGATE_BIN=path/to/castgate to measure another build)
//   cd tests/browser && node first-frame.bench.mjs [--joins 24] [--wave 6] [--codecs VP8,VP9,H264,AV1] [--record]
//
// Viewers join in waves of `--wave` at once (as a crowd arriving together)
// at random points of the publisher's picture sequence, the first wave
// 2.5 s into the stream; each wave leaves before the next one comes, so
// Chromium's decoding does not starve the 2 cores. Without `--record`,
// nothing asks for periodic keyframes: the publisher sends one only when
// asked (libwebrtc's behaviour), the hard case for a joining viewer.
import os from 'node:os';
import { launchBrowser, openPage, sleep, startCastgate, startPublishing, stopPublishing, waitFor } from './lib.mjs';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const JOINS = Number(option('joins', 24));
const WAVE = Number(option('wave', 6));
const CODECS = option('codecs', 'VP8,VP9,H264,AV1').split(',');
const RECORD = args.includes('--record');

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];

/** Joins `count` viewers at once in `page`; each resolves to its timings (ms). */
function wave(page, name, count) {
  return page.evaluate(async ({ name, count }) => {
    const { WhepClient } = await import('/web/whep.js');
    // On screen, each in its own place: Chromium pauses muted videos that
    // are scrolled out of view (and then presents nothing).
    document.body.replaceChildren();
    const join = async (_, i) => {
      const video = document.createElement('video');
      video.muted = true;
      video.autoplay = true;
      video.playsInline = true;
      video.style.cssText = `position:fixed;top:${Math.floor(i / 6) * 100}px;left:${(i % 6) * 200}px;width:192px;height:96px`;
      document.body.append(video);
      const whep = new WhepClient(`${location.origin}/whep/${name}`);
      const start = performance.now();
      let connected = null;
      whep.addEventListener('statechange', () => {
        if (whep.state === 'connected' && connected == null) connected = performance.now();
      });
      const first = new Promise((resolve) => {
        whep.addEventListener('stream', () => {
          video.srcObject = whep.stream;
          video.play().catch(() => {});
          video.requestVideoFrameCallback((now) => resolve(now));
        });
      });
      whep.view().catch(() => {});
      const shown = await Promise.race([first, new Promise((r) => setTimeout(() => r(null), 10000))]);
      const stats = await whep.pc?.getStats();
      let inbound = null;
      stats?.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') inbound = s;
      });
      const plis = inbound?.pliCount ?? null;
      const detail = inbound && {
        packets: inbound.packetsReceived, lost: inbound.packetsLost, framesReceived: inbound.framesReceived,
        decoded: inbound.framesDecoded, keyframes: inbound.keyFramesDecoded, plis: inbound.pliCount,
        firs: inbound.firCount, nacks: inbound.nackCount, paused: video.paused, state: whep.state,
      };
      return { whep, video, start, connected, shown, plis, detail };
    };
    const joined = await Promise.all(Array.from({ length: count }, join));
    await Promise.all(joined.map((j) => j.whep.stop().catch(() => {})));
    for (const j of joined) j.video.remove();
    return joined.map((j) => ({
      firstMs: j.shown == null ? null : j.shown - j.start,
      connectMs: j.connected == null ? null : j.connected - j.start,
      afterConnectMs: j.shown == null || j.connected == null ? null : j.shown - j.connected,
      plis: j.plis,
      detail: j.shown == null ? j.detail : undefined,
    }));
  }, { name, count });
}

const server = await startCastgate({ args: RECORD ? [] : ['--record', 'false'] });
const publisher = await launchBrowser({ args: ['--use-fake-device-for-media-stream=fps=30'] });
const viewer = await launchBrowser();
const rows = [];
try {
  const pub = await openPage(publisher, 'publish');
  const page = await openPage(viewer, 'viewers');
  await page.goto(`${server.base}/`);
  for (const codec of CODECS) {
    const name = `ff-${codec.toLowerCase()}`;
    await startPublishing(pub, server.base, { name, codec, resolution: '720' });
    // One picture size for every codec: under CPU load the encoder lowers
    // its frame rate rather than its size.
    await pub.evaluate(async () => {
      const sender = window.castgate.whip.pc.getSenders().find((s) => s.track?.kind === 'video');
      const params = sender.getParameters();
      params.degradationPreference = 'maintain-resolution';
      await sender.setParameters(params);
    });
    await waitFor(async () => {
      const streams = (await (await fetch(`${server.base}/api/streams`)).json()).streams;
      return streams.find((s) => s.name === name)?.video?.width >= 1280;
    }, { timeout: 30000, what: `${codec} to be live at 1280x720` });
    await sleep(2500);
    const results = [];
    while (results.length < JOINS) {
      results.push(...await wave(page, name, Math.min(WAVE, JOINS - results.length)));
      await sleep(300 + Math.random() * 1700); // a random point of the picture sequence
    }
    const info = (await (await fetch(`${server.base}/api/streams/${name}`)).json());
    await stopPublishing(pub);
    // A viewer with no picture in 10 s counts as the slowest, not as absent.
    const shown = results.map((r) => r.firstMs ?? Infinity).sort((a, b) => a - b);
    const after = results.map((r) => r.afterConnectMs).filter((v) => v != null).sort((a, b) => a - b);
    const connect = results.map((r) => r.connectMs).filter((v) => v != null).sort((a, b) => a - b);
    const row = {
      codec,
      size: `${info.video?.width}x${info.video?.height}@${Math.round(info.video?.fps ?? 0)}`,
      joins: results.length,
      failed: shown.filter((v) => v === Infinity).length,
      p50: Math.round(quantile(shown, 0.5)),
      p95: Math.round(quantile(shown, 0.95)),
      max: Math.round(shown.at(-1)),
      connectP50: Math.round(quantile(connect, 0.5)),
      afterConnectP50: Math.round(quantile(after, 0.5)),
      afterConnectP95: Math.round(quantile(after, 0.95)),
      afterConnectMax: Math.round(after.at(-1)),
      plis: results.reduce((n, r) => n + (r.plis ?? 0), 0),
      all: shown.map((v) => (v === Infinity ? null : Math.round(v))),
    };
    for (const r of results.filter((r) => r.firstMs == null)) console.log(`no picture: ${JSON.stringify(r)}`);
    rows.push(row);
    console.log(JSON.stringify(row));
  }
} finally {
  await Promise.all([publisher.close(), viewer.close()]);
  await server.stop();
}
console.log(`\nmachine: ${os.cpus().length} cores (${os.cpus()[0]?.model}), load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; record ${RECORD ? 'on' : 'off'}; waves of ${WAVE}`);
console.log('| codec | picture | joins | no picture | view() → picture p50 / p95 / max ms | of which connecting (ICE + DTLS) p50 | connected → picture p50 / p95 / max ms | viewer PLIs |');
console.log('|---|---|---|---|---|---|---|---|');
const ms = (v) => (Number.isFinite(v) ? String(v) : '> 10000');
for (const r of rows) {
  console.log(`| ${r.codec} | ${r.size} | ${r.joins} | ${r.failed} | ${ms(r.p50)} / ${ms(r.p95)} / ${ms(r.max)} | ${r.connectP50} | ${r.afterConnectP50} / ${r.afterConnectP95} / ${r.afterConnectMax} | ${r.plis} |`);
}
