// Restreaming a Chromium publisher whose picture size changes mid-stream:
// the transcoded RTMP output keeps the configured size (1280x720 by default)
// from its first frame to its last. Run with `node --test` here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  finish, freeTcpPort, launchBrowser, liveStreams, openPage, sleep, startCastgate, startPublishing, stopPublishing, waitFor
} from './lib.mjs';

/** A one-shot RTMP server (`ffmpeg -listen 1`) writing what it receives to `out`. */
async function rtmpReceiver(out) {
  const port = await freeTcpPort();
  const url = `rtmp://127.0.0.1:${port}/live/test-key`;
  const proc = spawn('ffmpeg', ['-v', 'error', '-nostdin', '-listen', '1', '-i', url, '-c', 'copy', '-y', out], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const exit = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  // Listening, read from /proc (a test connection would be its one client).
  const listening = `:${port.toString(16).toUpperCase().padStart(4, '0')} 00000000:0000 0A`;
  await waitFor(() => fs.readFileSync('/proc/net/tcp', 'utf8').includes(listening), { what: `ffmpeg to listen on ${port}` });
  return { url, proc, exit, stderr: () => stderr };
}

/** The video frames' sizes in a file, as ffprobe reads them ("WxH" per frame). */
function frameSizes(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v', '-show_entries', 'frame=width,height', '-of', 'csv=p=0', file], { encoding: 'utf8' });
  return out.split('\n').map((l) => l.replace(/,+$/, '')).filter(Boolean).map((l) => l.replace(',', 'x'));
}

/** The publish page's video sender scaled down by `factor` (1 = the camera's size). */
async function scaleDown(page, factor) {
  await page.evaluate(async (f) => {
    const sender = window.castgate.whip.pc.getSenders().find((s) => s.track?.kind === 'video');
    const params = sender.getParameters();
    params.encodings = params.encodings.map((e) => ({ ...e, scaleResolutionDownBy: f }));
    await sender.setParameters(params);
  }, factor);
}

describe('restreaming a browser', { timeout: 180000 }, () => {
  let server;
  let browser;
  const pages = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'castgate-restream-'));

  before(async () => {
    [server, browser] = await Promise.all([startCastgate({ args: ['--outbound-allow-networks', '127.0.0.1'] }), launchBrowser()]);
  });

  after(async () => {
    await finish({ pages, browsers: [browser], server });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a transcoded output keeps one size while the publisher scales down by 4, then back to 1', async () => {
    const name = 'ramp';
    const pub = await openPage(browser, 'publish');
    pages.push(pub);
    await startPublishing(pub, server.base, { name, codec: 'VP8', resolution: '720' });
    const width = async () => (await liveStreams(server.base)).find((s) => s.name === name)?.video?.width ?? 0;
    await waitFor(async () => (await width()) > 0, { what: 'the picture size' });
    const full = await width();
    await scaleDown(pub, 4);
    await waitFor(async () => (await width()) <= full / 4 + 2, { what: 'the publisher to send a quarter-size picture' });
    const small = await width();

    const out = path.join(dir, 'out.flv');
    const rx = await rtmpReceiver(out);
    const res = await fetch(`${server.base}/api/streams/${name}/restreams`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ url: rx.url }),
    });
    const body = await res.text();
    assert.equal(res.status, 201, body);
    const target = JSON.parse(body);
    const state = async () => (await (await fetch(`${server.base}/api/streams/${name}/restreams/${target.id}`)).json()).state;
    await waitFor(async () => (await state()) === 'live', { what: 'the target to be live' });
    await sleep(3000);
    await scaleDown(pub, 1);
    await waitFor(async () => (await width()) >= full * 0.9, { timeout: 30000, what: 'the publisher to send the full picture again' });
    await sleep(3000);
    const del = await fetch(`${server.base}/api/streams/${name}/restreams/${target.id}`, { method: 'DELETE' });
    assert.equal(del.status, 200);
    assert.equal(await rx.exit, 0, `the receiver ended cleanly: ${rx.stderr()}`);
    await stopPublishing(pub);

    const sizes = frameSizes(out);
    const distinct = [...new Set(sizes)];
    console.log(`publisher ${full} → ${small} → ${full} pixels wide; output: ${sizes.length} frames, sizes ${distinct}`);
    assert.ok(sizes.length > 100, `${sizes.length} frames`);
    assert.deepEqual(distinct, ['1280x720'], 'every frame at the configured size');
  });
});
