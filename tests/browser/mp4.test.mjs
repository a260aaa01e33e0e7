// MP4 from the recordings page in a real Chromium: an H.264 recording's MP4
// copy (index before the media, plays and seeks in a <video>, downloads from
// the page's link), and a VP8 recording exported to H.264 MP4 from the page's
// button (progress shown, then a download link). Run with `node --test` here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  finish, launchBrowser, openPage, screenshot, sleep, startCastgate, startPublishing, stopPublishing, waitFor,
} from './lib.mjs';

/** GET /api/recordings of one stream. */
async function recordings(base, stream) {
  const res = await fetch(`${base}/api/recordings?per_page=500&stream=${encodeURIComponent(stream)}`);
  assert.equal(res.status, 200);
  return (await res.json()).recordings;
}

/**
 * Publishes `name` from the publish page for about `secs` seconds of recording,
 * calling `whileRecording(rec)` meanwhile; returns its finalized catalog entry.
 */
async function record(pub, base, { name, codec, secs, whileRecording = async () => {} }) {
  await startPublishing(pub, base, { name, codec });
  const rec = await waitFor(async () => (await recordings(base, name)).find((r) => r.state === 'recording'), { what: `${name} to be recording` });
  const seen = Date.now();
  await whileRecording(rec);
  await sleep(Math.max(0, seen + secs * 1000 - Date.now()));
  await stopPublishing(pub);
  return waitFor(async () => (await recordings(base, name)).find((r) => r.id === rec.id && r.state === 'finalized'), { what: `${name} to be finalized` });
}

const rowOf = (id) => `li.rec-row[data-id="${id}"]`;
const mp4Path = (id, audio) => `/recordings/${encodeURIComponent(id)}/download?format=mp4${audio ? `&audio=${audio}` : ''}`;

/** The top-level boxes of an MP4 file: `[{ type, size }]`; throws on a box that overruns the file. */
function topLevelBoxes(buf) {
  const boxes = [];
  for (let at = 0; at < buf.length;) {
    assert.ok(at + 8 <= buf.length, `a box header at ${at} runs past the end (${buf.length} bytes)`);
    let size = buf.readUInt32BE(at);
    const type = buf.toString('latin1', at + 4, at + 8);
    if (size === 1) size = Number(buf.readBigUInt64BE(at + 8));
    else if (size === 0) size = buf.length - at;
    assert.ok(size >= 8 && at + size <= buf.length, `box ${type} at ${at}: size ${size} overruns the file (${buf.length} bytes)`);
    boxes.push({ type, size });
    at += size;
  }
  return boxes;
}

/** Fetches an MP4 and checks it: 200, video/mp4, ftyp first, moov before mdat. Returns its bytes. */
async function fetchMp4(url) {
  const res = await fetch(url);
  const body = Buffer.from(await res.arrayBuffer());
  assert.equal(res.status, 200, `${url}: ${body.toString('utf8', 0, 200)}`);
  assert.equal(res.headers.get('content-type'), 'video/mp4');
  assertFaststart(body, url);
  return body;
}

function assertFaststart(body, what) {
  const types = topLevelBoxes(body).map((b) => b.type);
  assert.equal(types[0], 'ftyp', `${what}: boxes ${types}`);
  assert.ok(types.includes('moov') && types.includes('mdat'), `${what}: boxes ${types}`);
  assert.ok(types.indexOf('moov') < types.indexOf('mdat'), `${what}: moov after mdat (boxes ${types})`);
  return types;
}

/** ffprobe's codec names of a file's streams, e.g. ['h264', 'aac']. */
function codecsOf(file) {
  return new Promise((resolve, reject) => {
    execFile('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name', '-of', 'csv=p=0', file], (error, stdout, stderr) => {
      if (error || stderr.trim()) reject(new Error(`ffprobe ${file}: ${stderr || error.message}`));
      else resolve(stdout.split('\n').map((l) => l.trim()).filter(Boolean));
    });
  });
}

describe('MP4 from the recordings page in Chromium', { timeout: 300000 }, () => {
  let server;
  let publisher;
  let viewer;
  let pub;
  let h264; // the H.264 recording
  let vp8; // the VP8 recording, once exported
  const pages = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'castgate-mp4-test-'));

  before(async () => {
    [server, publisher, viewer] = await Promise.all([startCastgate(), launchBrowser(), launchBrowser()]);
    pub = await openPage(publisher, 'publish');
    pages.push(pub);
  });

  after(async () => {
    fs.rmSync(dir, { recursive: true, force: true });
    await finish({ pages, browsers: [publisher, viewer], server });
  });

  test('an H.264 recording: an MP4 copy with its index first, that plays and seeks, from the page\'s link', async () => {
    const page = await openPage(viewer, 'recordings h264');
    pages.push(page);
    const rec = await record(pub, server.base, {
      name: 'mp4-h264',
      codec: 'H264',
      secs: 5,
      async whileRecording(live) {
        // Still being written: no MP4 yet, and the page's MP4 action says so.
        const res = await fetch(`${server.base}${mp4Path(live.id)}`);
        assert.equal(res.status, 409, await res.text());
        await page.goto(`${server.base}/recordings`);
        const action = `${rowOf(live.id)} .rec-mp4 button`;
        await waitFor(() => page.isVisible(action), { what: 'the MP4 action of the recording in progress' });
        assert.equal(await page.isDisabled(action), true);
        assert.match(await page.getAttribute(action, 'title'), /once the recording ends/);
      },
    });
    assert.equal(rec.video?.codec, 'h264');
    h264 = rec;
    assert.ok(rec.audio, 'the recording has audio');

    // From Node: the default copy (Opus kept), then the page's (AAC).
    const opus = await fetchMp4(`${server.base}${mp4Path(rec.id)}`);
    fs.writeFileSync(path.join(dir, 'h264-opus.mp4'), opus);
    assert.deepEqual((await codecsOf(path.join(dir, 'h264-opus.mp4'))).sort(), ['h264', 'opus']);

    // The page: the row's MP4 link (made once the row shows the finished recording).
    const link = `${rowOf(rec.id)} .rec-mp4 a`;
    await waitFor(() => page.isVisible(link), { what: 'the MP4 link of the finished recording' });
    const href = await page.getAttribute(link, 'href');
    assert.equal(href, mp4Path(rec.id, 'aac'));
    assert.match(await page.getAttribute(link, 'aria-label'), /^Download mp4-h264, .* as MP4$/);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(link)]);
    const saved = path.join(dir, 'h264-aac.mp4');
    await download.saveAs(saved);
    assert.match(download.suggestedFilename(), /^mp4-h264-.*\.mp4$/);
    assertFaststart(fs.readFileSync(saved), 'the downloaded MP4');
    assert.deepEqual((await codecsOf(saved)).sort(), ['aac', 'h264']);
    assert.equal(await page.isVisible('#error'), false);
    // The player has the same link.
    await page.click(`${rowOf(rec.id)} .rec-open`);
    await waitFor(async () => (await page.getAttribute('#player-mp4 a', 'href').catch(() => null)) === href, { what: 'the player\'s MP4 link' });
    await page.evaluate(() => { window.scrollTo(0, 0); document.querySelector('#video').pause(); });
    await screenshot(page, 'recordings-mp4-h264');

    // Chromium plays it: duration, a seek to the middle, a frame shown there.
    const can = await page.evaluate(() => document.createElement('video').canPlayType('video/mp4; codecs="avc1.42E01F, mp4a.40.2"'));
    console.log(`figure: chromium_can_play_mp4_h264_aac=${JSON.stringify(can)}`);
    if (!can) {
      console.log('figure: mp4_playback=skipped (this Chromium cannot play H.264/AAC MP4)');
      return;
    }
    const played = await page.evaluate(async (src) => {
      const v = document.createElement('video');
      v.muted = true;
      document.body.append(v);
      const failed = new Promise((_, reject) => v.addEventListener('error', () => reject(new Error(`media error ${v.error?.code}: ${v.error?.message}`))));
      const on = (event) => Promise.race([new Promise((resolve) => v.addEventListener(event, resolve, { once: true })), failed]);
      const loaded = on('loadedmetadata');
      v.src = src;
      await loaded;
      const duration = v.duration;
      await v.play();
      const seeked = on('seeked');
      v.currentTime = duration / 2;
      await seeked;
      const landed = v.currentTime;
      const shown = await Promise.race([
        new Promise((resolve) => v.requestVideoFrameCallback((_, meta) => resolve(meta.mediaTime))),
        new Promise((resolve) => setTimeout(() => resolve(null), 5000)),
      ]);
      const out = { duration, landed, shown, width: v.videoWidth, height: v.videoHeight, frames: v.getVideoPlaybackQuality().totalVideoFrames };
      v.remove();
      return out;
    }, href);
    console.log(`figure: mp4_playback duration=${played.duration.toFixed(2)} catalog=${rec.duration_secs} landed=${played.landed.toFixed(2)} first_frame_at=${played.shown?.toFixed(2)} size=${played.width}x${played.height} frames=${played.frames}`);
    assert.ok(Math.abs(played.duration - rec.duration_secs) <= 0.5, `the MP4 lasts ${played.duration} s, the recording ${rec.duration_secs} s`);
    assert.ok(Math.abs(played.landed - played.duration / 2) < 0.5, `seeked to ${played.duration / 2}, landed at ${played.landed}`);
    assert.ok(played.shown != null && played.shown >= played.duration / 2 - 0.5, `a frame after the seek (at ${played.shown})`);
    assert.ok(played.width > 0 && played.height > 0 && played.frames > 0, 'a picture is shown');
    await page.close();
  });

  test('a VP8 recording: Export MP4 on the page shows progress, then a download link to an H.264 MP4', async () => {
    const rec = await record(pub, server.base, { name: 'mp4-vp8', codec: 'VP8', secs: 6 });
    vp8 = rec;
    assert.equal(rec.video?.codec, 'vp8');
    // No copy without an export.
    const before = await fetch(`${server.base}${mp4Path(rec.id, 'aac')}`);
    assert.equal(before.status, 409, await before.text());

    const page = await openPage(viewer, 'recordings vp8');
    pages.push(page);
    await page.goto(`${server.base}/recordings`);
    const row = rowOf(rec.id);
    const button = `${row} .rec-mp4 button`;
    await waitFor(async () => (await page.isVisible(button)) && !(await page.isDisabled(button)), { what: 'the Export MP4 button' });
    assert.match(await page.getAttribute(button, 'aria-label'), /^Export mp4-vp8, .* to MP4$/);
    assert.equal(await page.isVisible(`${row} .rec-export`), false, 'no export line before the export');

    // What the export line shows, sampled every frame until it says the MP4 is ready.
    const line = `${row} .rec-export`;
    await page.evaluate((sel) => {
      window.exportSeen = [];
      const tick = () => {
        const el = document.querySelector(sel);
        if (el && !el.hidden) {
          const bar = el.querySelector('progress');
          window.exportSeen.push({
            value: bar.hidden ? 'hidden' : bar.hasAttribute('value') ? bar.value : null,
            text: el.querySelector('.mp4-export-text').textContent,
          });
        }
        if (!window.exportSeen.at(-1)?.text.startsWith('The MP4 is ready')) requestAnimationFrame(tick);
      };
      tick();
    }, line);
    await page.click(button);
    const link = `${row} .rec-mp4 a`;
    await waitFor(async () => (await page.evaluate(() => window.exportSeen.at(-1)?.text ?? '')).startsWith('The MP4 is ready'),
      { timeout: 120000, what: 'the export to finish' });
    const seen = await page.evaluate(() => window.exportSeen);
    const distinct = [...new Set(seen.map((s) => `${s.value}: ${s.text}`))];
    console.log(`figure: export_progress_seen=${JSON.stringify(distinct)} samples=${seen.length}`);
    // While it runs: the bar's value and the text agree, and never go back; then 100.
    const done = seen.pop();
    assert.equal(done.value, 100);
    assert.match(done.text, /^The MP4 is ready \(\d+(\.\d+)? (kB|MB)\)\.$/);
    assert.ok(seen.length > 0, 'the export line was shown while it ran');
    for (const s of seen) {
      if (s.value === null) {
        assert.equal(s.text, 'Waiting to export to MP4…');
      } else {
        assert.ok(s.value >= 0 && s.value <= 100, `progress ${s.value}`);
        assert.match(s.text, /^Exporting to MP4: \d+ %( · about .+ left)?$/);
        assert.equal(Number(s.text.match(/(\d+) %/)[1]), Math.floor(s.value), `text ${s.text} vs bar ${s.value}`);
      }
    }
    const values = seen.map((s) => s.value ?? 0);
    assert.deepEqual(values, [...values].sort((a, b) => a - b), 'progress never goes back');
    assert.equal(await page.isVisible(link), true);
    assert.equal(await page.isVisible(`${line} .mp4-cancel`), false);
    await screenshot(page, 'recordings-mp4-export-ready');

    // The link is the export's download; it is an H.264 MP4 with its index first.
    const href = await page.getAttribute(link, 'href');
    assert.equal(href, mp4Path(rec.id, 'aac'));
    const listed = await (await fetch(`${server.base}/api/recordings/${encodeURIComponent(rec.id)}/exports`)).json();
    assert.deepEqual(listed.map((x) => [x.audio, x.state, x.percent]), [['aac', 'done', 100]]);
    const body = await fetchMp4(new URL(href, server.base));
    assert.equal(body.length, listed[0].size_bytes);
    const file = path.join(dir, 'vp8-export.mp4');
    fs.writeFileSync(file, body);
    assert.deepEqual((await codecsOf(file)).sort(), ['aac', 'h264']);

    // A reload shows the finished export straight away, in the row and the player.
    await page.goto(`${server.base}/recordings?play=${encodeURIComponent(rec.id)}`);
    await waitFor(() => page.isVisible(link), { what: 'the export\'s link after a reload' });
    assert.equal(await page.isVisible(line), false, 'no export line after a reload, just the link');
    await waitFor(async () => (await page.getAttribute('#player-mp4 a', 'href').catch(() => null)) === href, { what: 'the player\'s MP4 link' });
    await page.evaluate(() => { window.scrollTo(0, 0); document.querySelector('#video').pause(); });
    await screenshot(page, 'recordings-mp4-exported');
    await page.close();
  });

  test('an export\'s progress with ETA, cancel, failure and refusals, in words (the server\'s answers played by the test)', async () => {
    assert.ok(h264 && vp8, 'the recordings of the tests before');
    const page = await openPage(viewer, 'recordings export states');
    pages.push(page);
    let phase = 'none';
    let refuse = false;
    const calls = [];
    const status = (state, extra = {}) => ({
      recording: vp8.id, audio: 'aac', state, percent: 0, speed: null, eta_secs: null, size_bytes: null, download: null, error: null, ...extra,
    });
    const exportsApi = new RegExp(`/api/recordings/${encodeURIComponent(vp8.id).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/exports`);
    await page.route(exportsApi, (route) => {
      const req = route.request();
      const url = new URL(req.url());
      calls.push(`${req.method()} ${url.pathname}${url.search}`);
      if (req.method() === 'POST') {
        if (refuse) return route.fulfill({ status: 503, headers: { 'retry-after': '30' }, contentType: 'text/plain', body: '16 exports are waiting already; try again later\n' });
        phase = 'running';
        return route.fulfill({ status: 202, json: status('queued') });
      }
      if (req.method() === 'DELETE') {
        phase = 'cancelled';
        return route.fulfill({ status: 204 });
      }
      const now = {
        none: [],
        running: [status('running', { percent: 42.5, speed: 3.1, eta_secs: 6.2 })],
        cancelled: [status('cancelled')],
        failed: [status('failed', { error: 'the encoder could not open the recording' })],
      }[phase];
      return route.fulfill({ json: now });
    });
    await page.goto(`${server.base}/recordings`);
    const row = rowOf(vp8.id);
    const button = `${row} .rec-mp4 button`;
    const line = `${row} .rec-export`;
    const text = `${line} .mp4-export-text`;
    await waitFor(async () => (await page.isVisible(button)) && !(await page.isDisabled(button)), { what: 'the Export MP4 button' });

    // Refused (the queue is full): said in words, nothing starts.
    refuse = true;
    await page.click(button);
    await waitFor(() => page.isVisible('#error'), { what: 'the refusal' });
    assert.equal(await page.textContent('#error-title'), 'Cannot export it to MP4');
    assert.equal(await page.textContent('#error-text'), '16 exports are waiting already; try again later.');
    assert.equal(await page.isVisible(line), false);
    assert.equal(await page.isDisabled(button), false);
    await screenshot(page, 'recordings-mp4-export-refused');

    // Started: waiting, then running with a figure and the time left.
    refuse = false;
    await page.click(button);
    await waitFor(() => page.isVisible(line), { what: 'the export line' });
    assert.equal(await page.isVisible('#error'), false, 'the refusal is cleared');
    assert.equal(await page.isDisabled(button), true, 'no second export while one runs');
    await waitFor(async () => (await page.textContent(text)) === 'Exporting to MP4: 42 % · about 7 s left', { what: 'the progress from the poll' });
    assert.equal(await page.$eval(`${line} progress`, (p) => p.value), 42.5);
    await screenshot(page, 'recordings-mp4-export-running');

    // Cancel: DELETE, then the line goes and the button is back.
    await page.click(`${line} .mp4-cancel`);
    await waitFor(async () => !(await page.isVisible(line)) && !(await page.isDisabled(button)), { what: 'the cancelled export to go' });
    assert.ok(calls.includes(`DELETE /api/recordings/${encodeURIComponent(vp8.id)}/exports/aac`), calls.join('\n'));
    assert.ok(calls.includes(`POST /api/recordings/${encodeURIComponent(vp8.id)}/exports?audio=aac`), calls.join('\n'));

    // A failed export says why, and can be started again.
    await page.click(button);
    await waitFor(() => page.isVisible(line), { what: 'the export line' });
    phase = 'failed';
    await waitFor(async () => (await page.textContent(text)) === 'The MP4 export failed: the encoder could not open the recording', { what: 'the failure' });
    assert.equal(await page.isVisible(`${line} progress`), false);
    assert.equal(await page.isVisible(`${line} .mp4-cancel`), false);
    assert.equal(await page.isDisabled(button), false);

    // An MP4 copy the server cannot make: said in words, no download.
    await page.route(/\/download\?format=mp4/, (route) => route.fulfill({ status: 500, contentType: 'text/plain', body: 'the MP4 could not be made: no space left on device\n' }));
    let downloads = 0;
    page.on('download', () => { downloads += 1; });
    assert.equal(await page.isVisible('#error'), false);
    await page.click(`${rowOf(h264.id)} .rec-mp4 a`);
    await waitFor(() => page.isVisible('#error'), { what: 'the failure to make the MP4' });
    assert.equal(await page.textContent('#error-title'), 'Cannot make the MP4');
    assert.equal(await page.textContent('#error-text'), 'The MP4 could not be made: no space left on device.');
    assert.equal(await page.getAttribute(`${rowOf(h264.id)} .rec-mp4 a`, 'aria-busy'), null);
    await sleep(500);
    assert.equal(downloads, 0);
    await page.close();
  });
});
