// The recordings page in a real Chromium: a stream published from the publish
// page is listed while it records, plays once finalized (and seeking to the
// middle lands there and decodes), H.264 (.mkv) plays or says to download,
// filtering and pages, the home page's recent recordings, and delete.
// Run with `node --test` here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DESKTOP, PHONE, finish, launchBrowser, openPage, screenshot, screenshotDir, sleep,
  startCastgate, startPublishing, stopPublishing, waitFor, playerState, expectPlayback, expectSeekToMiddle,
} from './lib.mjs';

/** GET /api/recordings (all pages of one stream, or everything). */
async function recordings(base, stream) {
  const q = new URLSearchParams({ per_page: '500' });
  if (stream) q.set('stream', stream);
  const res = await fetch(`${base}/api/recordings?${q}`);
  assert.equal(res.status, 200);
  return (await res.json()).recordings;
}

/** Waits until a recording of `name` is in progress; returns it and when it was first seen. */
async function recordingStarts(base, name) {
  const rec = await waitFor(async () => (await recordings(base, name)).find((r) => r.state === 'recording'), { what: `${name} to be recording` });
  return { rec, seen: Date.now() };
}

/** Sleeps until `ms` after `since` (Date.now() values). */
const until = (since, ms) => sleep(Math.max(0, since + ms - Date.now()));

/** Publishes `name` from the publish page for about `secs` seconds of recording; returns its catalog entry. */
async function record(pub, base, { name, codec, secs }) {
  await startPublishing(pub, base, { name, codec });
  const { rec, seen } = await recordingStarts(base, name);
  await until(seen, secs * 1000);
  await stopPublishing(pub);
  return waitFor(async () => (await recordings(base, name)).find((r) => r.id === rec.id && r.state === 'finalized'), { what: `${name} to be finalized` });
}

const rowOf = (id) => `li.rec-row[data-id="${id}"]`;

describe('the recordings page in Chromium', { timeout: 300000 }, () => {
  let server;
  let publisher; // one Chromium publishes
  let viewer; // another one looks at the recordings
  let pub;
  let vp8; // the VP8 recording, once finalized
  let h264; // the H.264 one
  const pages = [];

  before(async () => {
    console.log(`screenshots: ${screenshotDir}`);
    [server, publisher, viewer] = await Promise.all([startCastgate(), launchBrowser(), launchBrowser()]);
    pub = await openPage(publisher, 'publish');
    pages.push(pub);
  });

  after(() => finish({ pages, browsers: [publisher, viewer], server }));

  test('with no recordings the page says so', async () => {
    const page = await openPage(viewer, 'recordings empty');
    pages.push(page);
    await page.goto(`${server.base}/recordings`);
    await waitFor(() => page.isVisible('#empty'), { what: 'the empty state' });
    assert.match(await page.textContent('#summary'), /No recordings/);
    assert.equal(await page.isVisible('#player'), false);
    assert.equal(await page.getAttribute('.nav a[href="/recordings"]', 'aria-current'), 'page');
    await screenshot(page, 'recordings-empty');
    await page.close();
  });

  test('a stream is listed while it records, then plays and seeks to the middle', async () => {
    const name = 'rec-vp8';
    await startPublishing(pub, server.base, { name, codec: 'VP8' });
    const { rec: live, seen } = await recordingStarts(server.base, name);

    const page = await openPage(viewer, 'recordings');
    pages.push(page);
    await page.goto(`${server.base}/recordings`);
    const row = rowOf(live.id);
    await waitFor(async () => (await page.getAttribute(row, 'data-state')) === 'recording', { what: 'the row of the recording in progress' });
    assert.equal(await page.textContent(`${row} .rec-state .pill`), 'Recording');
    assert.equal(await page.isDisabled(`${row} .rec-delete`), true, 'no delete while recording');
    // Its duration counts on by itself.
    const d1 = await page.textContent(`${row} .rec-duration`);
    await waitFor(async () => (await page.textContent(`${row} .rec-duration`)) !== d1, { what: 'the live duration to move' });
    assert.match(await page.textContent('#summary'), /1 being recorded now/);
    await screenshot(page, 'recordings-live');

    // What is written so far plays already.
    await until(seen, 3000);
    await page.click(`${row} .rec-open`);
    await expectPlayback(page, 'the recording in progress');
    assert.equal(await page.isDisabled('#player-delete'), true);
    assert.match(await page.textContent('#player-note'), /Still being recorded/);

    await until(seen, 6000);
    await stopPublishing(pub);
    await waitFor(async () => (await page.getAttribute(row, 'data-state')) === 'finalized', { what: 'the row to show the finalized recording' });
    vp8 = (await recordings(server.base, name)).find((r) => r.id === live.id);
    assert.ok(vp8.duration_secs > 5 && vp8.duration_secs < 10, `duration ${vp8.duration_secs}`);
    await waitFor(async () => /has finished/.test(await page.textContent('#player-note')), { what: 'the player to say the recording has finished' });
    assert.equal(await page.isDisabled('#player-delete'), false);

    // The row: stream, local date, duration, size, media, state.
    assert.equal(await page.textContent(`${row} .rec-open`), name);
    assert.match(await page.textContent(`${row} .rec-date`), /\d{1,2}:\d{2}:\d{2}/);
    assert.match(await page.textContent(`${row} .rec-duration`), /^\d+ s$/);
    assert.match(await page.textContent(`${row} .rec-size`), /^\d+(\.\d+)? (kB|MB)$/);
    assert.match(await page.textContent(`${row} .rec-media`), /^VP8 · \d+×\d+ · Opus$/);
    assert.equal(await page.textContent(`${row} .rec-state .pill`), 'Complete');

    // Clicking the row again loads the whole, finalized file.
    await page.click(`${row} .rec-date`);
    const playing = await expectPlayback(page, 'the finalized recording');
    assert.ok(new URL(playing.src).pathname.endsWith(`/recordings/${encodeURIComponent(vp8.id)}/download`), playing.src);
    assert.ok(Math.abs(playing.duration - vp8.duration_secs) < 0.5, `the file says ${playing.duration} s, the catalog ${vp8.duration_secs} s`);
    assert.equal(await page.textContent('#player-title'), name);
    assert.equal(await page.getAttribute(row, 'aria-current'), '');
    assert.equal(await page.evaluate(() => new URLSearchParams(location.search).get('play')), vp8.id, 'the URL names what plays');

    // Seek to the middle: the time lands there and frames decode from there on.
    await expectSeekToMiddle(page, 'seek');

    // Pictures: the row shows the recording's poster; the bar under the
    // player shows its strip, hovering shows the picture at that point, and a
    // click seeks there.
    await waitFor(() => page.isVisible(`${row} .rec-icon.has-poster img.rec-poster`), { what: 'the poster in the row' });
    const poster = await page.evaluate((sel) => {
      const i = document.querySelector(`${sel} img.rec-poster`);
      return { width: i.naturalWidth, src: i.getAttribute('src') };
    }, row);
    assert.ok(poster.width > 0, 'the poster decoded');
    assert.ok(poster.src.endsWith(`/recordings/${encodeURIComponent(vp8.id)}/poster.jpg`), poster.src);
    assert.ok((await page.getAttribute('#video', 'poster')).endsWith('/poster.jpg'), 'the player shows the poster before playing');
    await waitFor(() => page.isVisible('#player-scrub'), { what: 'the strip under the player' });
    const cells = Number(await page.getAttribute('#player-scrub', 'data-cells'));
    const expected = Math.min(60, Math.ceil(vp8.duration_secs / 2));
    assert.ok(Math.abs(cells - expected) <= 1, `${cells} pictures in the strip for ${vp8.duration_secs} s`);
    const bar = await page.locator('#player-scrub').boundingBox();
    await page.mouse.move(bar.x + bar.width * 0.9, bar.y + bar.height / 2);
    await waitFor(() => page.isVisible('#player-scrub .scrub-preview'), { what: 'the hover preview' });
    const preview = await page.evaluate(() => {
      const p = document.querySelector('#player-scrub .scrub-preview');
      return { cell: Number(p.dataset.cell), position: p.style.backgroundPosition, image: getComputedStyle(p).backgroundImage, time: p.textContent };
    });
    assert.equal(preview.cell, Math.min(cells - 1, Math.floor(0.9 * cells)));
    assert.equal(preview.position, `${-preview.cell * 160}px 0px`);
    assert.match(preview.image, /strip\.jpg/);
    await screenshot(page, 'recordings-strip-hover');
    await page.mouse.click(bar.x + bar.width * 0.9, bar.y + bar.height / 2);
    await waitFor(async () => Math.abs((await page.evaluate(() => document.querySelector('#video').currentTime)) - 0.9 * playing.duration) < 0.5,
      { what: 'the click to seek to 90 %' });

    await page.evaluate(() => { window.scrollTo(0, 0); document.querySelector('#video').pause(); });
    await screenshot(page, 'recordings-playing');
    await page.setViewportSize(PHONE);
    await screenshot(page, 'recordings-phone');
    await page.setViewportSize(DESKTOP);
    await page.emulateMedia({ colorScheme: 'dark' });
    await screenshot(page, 'recordings-dark');
    await page.emulateMedia({ colorScheme: 'light' });
    await page.close();
  });

  test('an H.264 recording (.mkv) plays, or the page says to download it', async () => {
    h264 = await record(pub, server.base, { name: 'rec-h264', codec: 'H264', secs: 3 });
    assert.match(h264.file, /\.mkv$/);
    const page = await openPage(viewer, 'recordings h264');
    pages.push(page);
    await page.goto(`${server.base}/recordings`);
    await page.click(`${rowOf(h264.id)} .rec-open`);
    const outcome = await waitFor(async () => {
      const s = await playerState(page);
      if (s.overlay) return { overlay: s.overlay };
      return s.readyState >= 2 && s.currentTime > 0.2 ? { plays: true } : null;
    }, { what: 'the .mkv to play or to say it cannot' });
    console.log(`figure: chromium_plays_h264_mkv=${Boolean(outcome.plays)}`);
    if (outcome.plays) await expectPlayback(page, 'the H.264 recording');
    else assert.equal(outcome.overlay, 'Cannot play in this browser');
    await page.close();

    // A browser without Matroska (as Firefox or Safari): the page says to download it.
    const other = await openPage(viewer, 'recordings no-mkv');
    pages.push(other);
    await other.addInitScript(() => {
      const can = HTMLMediaElement.prototype.canPlayType;
      HTMLMediaElement.prototype.canPlayType = function canPlayType(type) {
        return /matroska/i.test(type) ? '' : can.call(this, type);
      };
    });
    // Its media stack cannot read the file: it gets bytes it cannot parse.
    const file = new RegExp(`/recordings/${encodeURIComponent(h264.id)}/download(\\?|$)`);
    await other.route(file, (route) => route.fulfill({
      status: 200, contentType: 'video/x-matroska', body: Buffer.alloc(4096, 7),
    }));
    await other.goto(`${server.base}/recordings?play=${encodeURIComponent(h264.id)}`);
    await waitFor(() => other.isVisible('#player-overlay-download'), { what: 'the download hint' });
    assert.equal(await other.textContent('#player-overlay-title'), 'Cannot play in this browser');
    assert.match(await other.textContent('#player-overlay-download'), /Download to play/);
    assert.match(await other.textContent('#player-overlay-text'), /cannot play H\.264 and Opus in Matroska \(\.mkv\) files.*Download it/);
    assert.ok((await other.getAttribute('#player-overlay-download', 'href')).endsWith(`/recordings/${encodeURIComponent(h264.id)}/download`));
    await screenshot(other, 'recordings-download-to-play');
    await other.close();
  });

  test('filter by stream, pages, and the home page', async () => {
    const page = await openPage(viewer, 'recordings filter');
    pages.push(page);
    await page.goto(`${server.base}/recordings`);
    await waitFor(async () => (await page.$$('li.rec-row')).length === 2, { what: 'both recordings listed' });
    // Newest first.
    assert.deepEqual(await page.$$eval('li.rec-row', (els) => els.map((e) => e.dataset.id)), [h264.id, vp8.id]);
    await waitFor(async () => (await page.$$('#stream-filter option')).length === 3, { what: 'the stream names in the filter' });
    await page.selectOption('#stream-filter', 'rec-h264');
    await waitFor(async () => (await page.$$eval('li.rec-row', (els) => els.map((e) => e.dataset.id))).join() === h264.id, { what: 'only rec-h264 listed' });
    assert.match(await page.evaluate(() => location.search), /stream=rec-h264/);
    assert.match(await page.textContent('#summary'), /1 recording of “rec-h264”/);
    // The filter is in the URL: a reload keeps it.
    await page.reload();
    await waitFor(async () => (await page.$$eval('li.rec-row', (els) => els.map((e) => e.dataset.id))).join() === h264.id, { what: 'the filter after a reload' });
    await waitFor(async () => (await page.inputValue('#stream-filter')) === 'rec-h264', { what: 'the filter to show rec-h264' });

    // One per page: the pager pages through both, and Back goes back.
    await page.goto(`${server.base}/recordings?per_page=1`);
    await waitFor(() => page.isVisible('#pager'), { what: 'the pager' });
    assert.match(await page.textContent('#page-info'), /1–1 of 2 · page 1 of 2/);
    assert.equal(await page.isDisabled('#prev'), true);
    await page.click('#next');
    await waitFor(async () => (await page.$$eval('li.rec-row', (els) => els.map((e) => e.dataset.id))).join() === vp8.id, { what: 'page 2' });
    assert.match(await page.evaluate(() => location.search), /page=2/);
    assert.equal(await page.isDisabled('#next'), true);
    await screenshot(page, 'recordings-pages');
    await page.goBack();
    await waitFor(async () => (await page.$$eval('li.rec-row', (els) => els.map((e) => e.dataset.id))).join() === h264.id, { what: 'page 1 after Back' });

    // The home page lists the latest recordings; one opens in the player.
    await page.goto(server.base);
    const recent = `#recent-list li[data-id="${vp8.id}"] a`;
    await waitFor(() => page.isVisible(recent), { what: 'the recent recordings on the home page' });
    assert.equal(await page.$$eval('#recent-list li', (els) => els.length), 2);
    await screenshot(page, 'home-recent-recordings');
    await page.click(recent);
    await page.waitForURL(/\/recordings\?play=/);
    await waitFor(() => page.isVisible('#player'), { what: 'the player' });
    assert.equal(await page.textContent('#player-title'), 'rec-vp8');
    await waitFor(async () => (await playerState(page)).readyState >= 1, { what: 'the recording to load' });
    await page.close();
  });

  test('a viewing token in the address reaches the list, the player and the download link', async () => {
    // The VP8 recording, copied into the folder of a server that wants a viewing token.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'castgate-browser-token-'));
    fs.cpSync(path.join(server.recordDir, vp8.stream), path.join(dir, vp8.stream), { recursive: true });
    const guarded = await startCastgate({ args: ['--view-token', 'seen'], recordDir: dir });
    try {
      const denied = await fetch(`${guarded.base}/recordings/${encodeURIComponent(vp8.id)}/download`);
      assert.equal(denied.status, 401);
      const page = await openPage(viewer, 'recordings token');
      pages.push(page);
      await page.goto(`${guarded.base}/recordings?token=seen&play=${encodeURIComponent(vp8.id)}`);
      const row = rowOf(vp8.id);
      await waitFor(() => page.isVisible(row), { what: 'the row, listed with the token' });
      await page.click(`${row} .rec-date`);
      const href = await page.getAttribute(`${row} .rec-download`, 'href');
      assert.match(href, /[?&]token=seen(&|$)/);
      assert.match(await page.getAttribute('#player-download', 'href'), /[?&]token=seen(&|$)/);
      await expectPlayback(page, 'the recording, played with the token');
      assert.match((await playerState(page)).src, /token=seen/);
      assert.equal((await fetch(new URL(href, guarded.base))).status, 200);
      await screenshot(page, 'recordings-with-token');
      await page.close();
      // Without a token (a new tab keeps none), nothing is listed.
      const bare = await openPage(viewer, 'recordings no token');
      pages.push(bare);
      await bare.goto(`${guarded.base}/recordings`);
      await waitFor(() => bare.isVisible('#empty'), { what: 'the empty state' });
      await bare.close();
    } finally {
      await guarded.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('delete from the page, with confirmation and errors in words', async () => {
    const page = await openPage(viewer, 'recordings delete');
    pages.push(page);
    await page.goto(`${server.base}/recordings?play=${encodeURIComponent(vp8.id)}`);
    const row = rowOf(vp8.id);
    await waitFor(() => page.isVisible(row), { what: 'the row' });
    await waitFor(() => page.isVisible('#player'), { what: 'the player' });

    // Cancel keeps it.
    await page.click(`${row} .rec-delete`);
    await waitFor(() => page.isVisible('#confirm'), { what: 'the confirmation' });
    assert.match(await page.textContent('#confirm-text'), /rec-vp8/);
    await screenshot(page, 'recordings-confirm-delete');
    await page.click('#confirm-cancel');
    await waitFor(async () => !(await page.isVisible('#confirm')), { what: 'the dialog to close' });
    await sleep(300);
    assert.equal(await page.isVisible(row), true);

    // A refusal from the server is shown in words, and the row stays.
    await page.route(`**/api/recordings/${encodeURIComponent(vp8.id)}`, (route) => (route.request().method() === 'DELETE'
      ? route.fulfill({ status: 409, contentType: 'text/plain', body: 'the recording is still being written; stop the stream first' })
      : route.fallback()));
    await page.click(`${row} .rec-delete`);
    await page.click('#confirm-delete');
    await waitFor(() => page.isVisible('#error'), { what: 'the error' });
    assert.equal(await page.textContent('#error-title'), 'Cannot delete the recording');
    assert.equal(await page.textContent('#error-text'), 'The recording is still being written; stop the stream first.');
    assert.equal(await page.isVisible(row), true);
    await screenshot(page, 'recordings-delete-refused');
    await page.unroute(`**/api/recordings/${encodeURIComponent(vp8.id)}`);

    // Delete for real, from the player: the row goes, the player closes, the file is gone.
    await page.click('#player-delete');
    await page.click('#confirm-delete');
    await waitFor(async () => !(await page.isVisible(row)), { what: 'the row to disappear' });
    assert.equal(await page.isVisible('#player'), false);
    assert.equal(await page.isVisible('#error'), false);
    assert.equal((await fetch(`${server.base}/recordings/${encodeURIComponent(vp8.id)}/download`)).status, 404);
    assert.equal((await fetch(`${server.base}/api/recordings/${encodeURIComponent(vp8.id)}`)).status, 404);
    assert.doesNotMatch(await page.evaluate(() => location.search), /play=/);

    // And from a row.
    await page.click(`${rowOf(h264.id)} .rec-delete`);
    await page.click('#confirm-delete');
    await waitFor(() => page.isVisible('#empty'), { what: 'the empty list' });
    assert.equal((await fetch(`${server.base}/recordings/${encodeURIComponent(h264.id)}/download`)).status, 404);
    assert.deepEqual(await recordings(server.base), []);
    await page.close();
  });
});
