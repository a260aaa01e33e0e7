// Simulcast from castgate's publish page in a real Chromium (issue 19): the
// "Simulcast" box sends three layers from a 1280x720 capture, castgate ranks
// them by what they measure, watch pages pinned to low, mid and high receive
// pictures in that order of size, the quality menu shows, and the recording
// ends on the top layer and decodes cleanly. Run with `node --test` here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  expectPlaying, finish, launchBrowser, openPage, screenshot, startCastgate, startPublishing,
  stopPublishing, waitFor, watchFigures
} from './lib.mjs';

/** The layers the API lists for `name` (smallest first), once they have sizes. */
async function layers(base, name) {
  const res = await fetch(`${base}/api/streams/${name}`);
  if (!res.ok) return [];
  return ((await res.json()).layers ?? []).filter((l) => l.active && l.width);
}

/** The finalized recordings of stream `name`. */
async function finalized(base, name) {
  const res = await fetch(`${base}/api/recordings?stream=${name}`);
  return (await res.json()).recordings.filter((r) => r.state === 'finalized');
}

describe('simulcast from the publish page', { timeout: 240000 }, () => {
  let server;
  let publisher;
  let viewer;
  const pages = [];

  before(async () => {
    [server, publisher, viewer] = await Promise.all([startCastgate(), launchBrowser(), launchBrowser()]);
  });

  after(() => finish({ pages, browsers: [publisher, viewer], server }));

  test('three layers, viewers pinned to each, the recording on the top one', async () => {
    const name = 'simulcast';
    const pub = await openPage(publisher, 'publish simulcast');
    pages.push(pub);
    await startPublishing(pub, server.base, { name, codec: 'VP8', resolution: '720', simulcast: true });

    // libwebrtc makes three layers from a 1280x720 capture (CPU adaptation on
    // two cores may shrink them: the order is asserted, not the sizes).
    const listed = await waitFor(async () => {
      const l = await layers(server.base, name);
      // Sizes from the first keyframes, rates after a second of each.
      return l.length === 3 && l.every((x) => x.bitrate_kbps > 0) ? l : null;
    }, { timeout: 60000, what: 'three measured layers in the API' });
    const widths = listed.map((l) => l.width);
    assert.ok(widths[0] < widths[1] && widths[1] < widths[2], `smallest first: ${JSON.stringify(listed)}`);
    assert.deepEqual(listed.map((l) => l.rid).sort(), ['h', 'l', 'm']);
    console.log(`# figure: simulcast layers ${listed.map((l) => `${l.rid}=${l.width}x${l.height}@${l.bitrate_kbps}kbps`).join(' ')}`);

    const received = {};
    for (const layer of ['low', 'mid', 'high']) {
      const watch = await openPage(viewer, `watch ${layer}`);
      pages.push(watch);
      await watch.goto(`${server.base}/watch/${name}?layer=${layer}`);
      await expectPlaying(watch, { codec: 'VP8' });
      // Once a few frames are in, the picture is the pinned layer's.
      const f = await waitFor(async () => {
        const w = await watchFigures(watch);
        return w.videoWidth > 0 ? w : null;
      }, { what: `${layer}: a picture` });
      received[layer] = f.videoWidth;
      // The quality menu shows for a simulcast stream, on the layer asked for.
      await waitFor(() => watch.isVisible('#quality'), { what: `${layer}: the quality menu` });
      assert.equal(await watch.inputValue('#quality'), layer);
      await waitFor(async () => (await watch.textContent('[data-figure="layer"]')) !== '–', { what: `${layer}: the quality figure` });
    }
    console.log(`# figure: simulcast pinned viewers low=${received.low} mid=${received.mid} high=${received.high}`);
    assert.ok(received.low < received.mid && received.mid < received.high, JSON.stringify(received));

    // The API names each viewer's layer (admin: this machine).
    const sessions = await waitFor(async () => {
      const res = await fetch(`${server.base}/api/streams/${name}/sessions`);
      const list = (await res.json()).sessions.filter((s) => s.role === 'viewer' && s.layer);
      return list.length === 3 ? list : null;
    }, { what: 'each viewer session to name its layer' });
    assert.deepEqual(sessions.map((s) => s.layer).sort(), ['h', 'l', 'm']);
    await screenshot(pages.at(-1), 'watch-simulcast-high');

    await stopPublishing(pub);
    const [rec] = await waitFor(async () => {
      const list = await finalized(server.base, name);
      return list.length ? list : null;
    }, { timeout: 30000, what: 'the recording to be finalized' });
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'castgate-simulcast-')), 'rec.webm');
    const body = await fetch(`${server.base}/recordings/${rec.id}/download`);
    assert.equal(body.status, 200);
    fs.writeFileSync(file, Buffer.from(await body.arrayBuffer()));
    // Its last pictures are the top layer's, and it decodes cleanly.
    const frames = execFileSync('ffprobe', [
      '-v', 'error', '-select_streams', 'v', '-show_entries', 'frame=width', '-of', 'csv=p=0', file,
    ]).toString().trim().split('\n').map(Number);
    const top = Math.max(...listed.map((l) => l.width));
    assert.equal(frames.at(-1), top, `the recording ends on the top layer (${top})`);
    // Frames keep their own timestamps (as tests/common/files.rs's
    // decodes_cleanly): FFmpeg's default 1/fps output time base reports two
    // frames closer than a frame interval (Chromium on a busy machine) as
    // "non monotonically increasing dts" although the file is fine.
    const decoded = spawnSync('ffmpeg', ['-v', 'error', '-nostdin', '-i', file,
      '-fps_mode', 'passthrough', '-enc_time_base', '-1', '-f', 'null', '-']);
    assert.equal(decoded.status, 0);
    assert.equal(decoded.stderr.toString().trim(), '', 'decodes without an error');
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  });
});
