// castgate's own pages in a real Chromium: publish with each codec and watch,
// viewer before publisher, stop → ended, reconnects, a wrong token, and the
// time from clicking Watch to the first picture. Run with `node --test` here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DESKTOP, PHONE, expectPlaying, finish, launchBrowser, liveStreams, openPage, screenshot, screenshotDir,
  sleep, startCastgate, startPublishing, stopPublishing, waitFor, watchFigures
} from './lib.mjs';

const CODECS = ['VP8', 'VP9', 'H264', 'AV1'];

describe('castgate pages in Chromium', { timeout: 300000 }, () => {
  let server;
  let publisher; // one Chromium: the person publishing
  let viewer; // another Chromium: the audience
  let pub; // the publish page
  const pages = [];

  const overlayState = (page) => page.evaluate(() => {
    const o = document.querySelector('#overlay');
    return o.hidden ? 'none' : o.dataset.state;
  });

  before(async () => {
    console.log(`screenshots: ${screenshotDir}`);
    [server, publisher, viewer] = await Promise.all([startCastgate(), launchBrowser(), launchBrowser()]);
    pub = await openPage(publisher, 'publish');
    pages.push(pub);
  });

  after(() => finish({ pages, browsers: [publisher, viewer], server }));

  test('home page with nothing live', async () => {
    const home = await openPage(viewer, 'home');
    pages.push(home);
    await home.goto(server.base);
    await waitFor(() => home.isVisible('#empty'), { what: 'the empty state' });
    assert.match(await home.textContent('#summary'), /No stream is live/);
    await screenshot(home, 'home-empty');
    await home.close();
  });

  for (const codec of CODECS) {
    test(`publish ${codec} from the publish page and watch it`, async () => {
      const name = `cam-${codec.toLowerCase()}`;
      await startPublishing(pub, server.base, { name, codec });
      const watch = await openPage(viewer, `watch ${codec}`);
      pages.push(watch);
      await watch.goto(`${server.base}/watch/${name}`);
      await expectPlaying(watch, { codec });
      const info = (await liveStreams(server.base)).find((s) => s.name === name);
      assert.equal(info?.video?.codec, codec.toLowerCase());
      assert.equal(info?.audio?.codec, 'opus');
      // The figures on both pages fill in.
      await waitFor(async () => (await pub.textContent('[data-figure="bitrate"]')) !== '–', { what: 'publish figures' });
      await waitFor(async () => (await watch.textContent('[data-figure="bitrate"]')) !== '–', { what: 'watch figures' });
      assert.equal(await pub.textContent('[data-figure="codec"]'), codec === 'H264' ? 'H.264' : codec);
      await screenshot(pub, `publish-live-${codec.toLowerCase()}`);
      await screenshot(watch, `watch-playing-${codec.toLowerCase()}`);
      await watch.close();
      await stopPublishing(pub);
    });
  }

  test('share the screen (with its sound) and watch it', async () => {
    const name = 'screen-share';
    await pub.goto(`${server.base}/publish`);
    await waitFor(() => pub.evaluate(() => window.castgate?.media?.video?.readyState === 'live'), { what: 'the camera preview' });
    await pub.click('#src-screen');
    await waitFor(() => pub.evaluate(() => window.castgate.media.source === 'screen' && window.castgate.media.video?.readyState === 'live'), { what: 'the screen to be shared' });
    await startPublishing(pub, server.base, { name, codec: 'VP9', navigate: false });
    const watch = await openPage(viewer, 'watch screen');
    pages.push(watch);
    await watch.goto(`${server.base}/watch/${name}`);
    await expectPlaying(watch, { codec: 'VP9' });
    await waitFor(async () => (await pub.textContent('[data-figure="bitrate"]')) !== '–', { what: 'publish figures' });
    await screenshot(pub, 'publish-screen');
    await watch.close();
    await stopPublishing(pub);
  });

  test('the watch page shows the stream\'s frame rate, not the burst that starts it', async () => {
    // A viewer joining mid-stream that is sent the frames since the last
    // keyframe at once (`viewer_start = cached`, as for a publisher that
    // ignores keyframe requests) decodes them in a burst: that catch-up is
    // not frame rate (the browser's own figure reads 170 fps for 20).
    const cached = await startCastgate({ args: ['--viewer-start', 'cached'] });
    const name = 'steady-rate';
    const watch = await openPage(viewer, 'watch rate');
    pages.push(watch);
    try {
      await startPublishing(pub, cached.base, { name, codec: 'VP8' });
      await waitFor(async () => (await liveStreams(cached.base)).find((s) => s.name === name)?.video?.fps > 0, { what: 'the stream\'s frame rate' });
      await sleep(1500); // frames gather since the last keyframe
      const sent = (await liveStreams(cached.base)).find((s) => s.name === name).video.fps;
      await watch.goto(`${cached.base}/watch/${name}`);
      const shown = [];
      for (let i = 0; i < 30; i++) {
        const m = /^(\d+) fps$/.exec(await watch.textContent('[data-figure="fps"]'));
        if (m) shown.push(Number(m[1]));
        await sleep(200);
      }
      console.log(`frame rate: sent ${sent} fps, shown ${shown}`);
      assert.ok(shown.length >= 15, `the frame rate is shown: ${shown}`);
      assert.ok(Math.max(...shown) <= Math.ceil(sent * 1.15) + 1, `sent ${sent} fps, shown ${shown}`);
      assert.ok(Math.min(...shown.slice(-5)) >= Math.floor(sent * 0.75), `sent ${sent} fps, shown ${shown}`);
      await stopPublishing(pub);
    } finally {
      await watch.close();
      await cached.stop();
    }
  });

  test('a viewer opened first plays by itself, sees the end, and comes back', async () => {
    const name = 'early-bird';
    const watch = await openPage(viewer, 'watch early');
    const home = await openPage(viewer, 'home');
    pages.push(watch, home);
    await watch.goto(`${server.base}/watch/${name}`);
    await waitFor(async () => (await overlayState(watch)) === 'waiting', { what: 'the waiting state' });
    assert.match(await watch.textContent('#overlay-title'), /Waiting for/);
    await screenshot(watch, 'watch-waiting');

    await startPublishing(pub, server.base, { name, codec: 'VP8' });
    await expectPlaying(watch, { codec: 'VP8' });
    await home.goto(server.base);
    const card = `article[data-stream="${name}"]`;
    await waitFor(() => home.isVisible(card), { what: 'the stream on the home page' });
    await waitFor(async () => /1 watching/.test(await home.textContent(card)), { what: 'the viewer count on the home page' });
    await waitFor(async () => (await watch.textContent('[data-figure="bitrate"]')) !== '–', { what: 'watch figures' });
    // The tile shows a picture of the stream (GET snapshot.jpg), not the
    // codec placeholder: a decoded JPEG with the camera's picture in it.
    await waitFor(() => home.isVisible(`${card}.has-picture img.picture`), { what: 'a picture in the tile' });
    const tile = await home.evaluate((sel) => {
      const img = document.querySelector(`${sel} img.picture`);
      const c = document.createElement('canvas');
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const px = g.getImageData(0, 0, c.width, c.height).data;
      const values = new Set();
      const sum = [0, 0, 0];
      for (let i = 0; i < px.length; i += 4) {
        values.add(px[i] >> 4 << 8 | px[i + 1] >> 4 << 4 | px[i + 2] >> 4);
        for (let k = 0; k < 3; k++) sum[k] += px[i + k];
      }
      const n = px.length / 4;
      return { src: img.getAttribute('src'), width: img.naturalWidth, height: img.naturalHeight, colours: values.size, mean: sum.map((v) => Math.round(v / n)) };
    }, card);
    console.log(`figure: home tile picture ${tile.width}x${tile.height}, ${tile.colours} distinct colours, mean RGB ${tile.mean}`);
    assert.match(tile.src, new RegExp(`/api/streams/${name}/snapshot\\.jpg`));
    assert.ok(tile.width >= 16 && tile.height >= 16 && tile.width <= 640 && tile.height <= 360, `size ${tile.width}x${tile.height}`);
    // Chromium's fake camera: a green picture with lighter shapes on it.
    const [r, gr, b] = tile.mean;
    assert.ok(gr > r + 30 && gr > b + 30, `the camera's green picture: mean RGB ${tile.mean}`);
    assert.ok(tile.colours >= 2, `a picture, not a flat tile: ${tile.colours} colours`);
    assert.equal(await home.isVisible(`${card} .codec`), false, 'the codec placeholder gives way');
    await screenshot(home, 'home-live');
    await screenshot(pub, 'publish-live');

    // Phone width, and the dark colour scheme.
    for (const [page, shot] of [[home, 'home'], [watch, 'watch'], [pub, 'publish']]) {
      await page.setViewportSize(PHONE);
      await screenshot(page, `${shot}-phone`);
      await page.setViewportSize(DESKTOP);
      await page.emulateMedia({ colorScheme: 'dark' });
      await screenshot(page, `${shot}-dark`);
      await page.emulateMedia({ colorScheme: 'light' });
    }

    // An ICE restart over PATCH keeps the session (and the viewer) going.
    const etag = await pub.evaluate(() => window.castgate.whip.etag);
    await pub.evaluate(() => window.castgate.whip.restartIce());
    const newEtag = await pub.evaluate(() => window.castgate.whip.etag);
    assert.notEqual(newEtag, etag, 'an ICE restart brings a new ETag');
    await waitFor(() => pub.evaluate(() => window.castgate.whip.state === 'connected' && window.castgate.whip.pc.connectionState === 'connected'), { what: 'the publisher to stay connected after an ICE restart' });
    await expectPlaying(watch);

    // Stop: the watch page says the stream ended, the home page drops it.
    await stopPublishing(pub);
    await waitFor(async () => (await overlayState(watch)) === 'ended', { what: 'the watch page to show the end' });
    assert.match(await watch.textContent('#overlay-title'), /ended/);
    await waitFor(async () => !(await home.isVisible(card)), { what: 'the home page to drop the stream' });
    await screenshot(watch, 'watch-ended');

    // A new publisher under the same name: the same watch page plays again.
    await startPublishing(pub, server.base, { name, codec: 'VP9', navigate: false });
    await expectPlaying(watch, { codec: 'VP9' });
    await stopPublishing(pub);
    await watch.close();
    await home.close();
  });

  test('HLS: the watch page plays it on request, falls back to it without WebRTC, and sees the end', async () => {
    const name = 'hls-cam';
    await startPublishing(pub, server.base, { name, codec: 'H264' });
    const started = await fetch(`${server.base}/api/streams/${name}/hls`, { method: 'POST' });
    assert.equal(started.status, 201, await started.text());

    // Asked for in the address.
    const asked = await openPage(viewer, 'watch hls');
    pages.push(asked);
    await asked.goto(`${server.base}/watch/${name}?hls`);
    const hlsPlaying = async (page) => {
      const first = await waitFor(() => page.evaluate(() => {
        const v = document.querySelector('#video');
        return window.castgate.mode === 'hls' && window.castgate.playing && v.videoWidth > 0 ? v.currentTime : null;
      }), { timeout: 40000, what: 'HLS to play' });
      await waitFor(() => page.evaluate((t) => document.querySelector('#video').currentTime > t + 1, first), { timeout: 20000, what: 'HLS playback to advance' });
      assert.match(await page.evaluate(() => document.querySelector('#video').src), new RegExp(`/hls/${name}/index\\.m3u8$`));
      assert.equal(await page.evaluate(() => window.castgate.whep), null, 'no WebRTC session in HLS mode');
    };
    await hlsPlaying(asked);
    assert.equal(await asked.textContent('#pill'), 'Live · HLS');
    await screenshot(asked, 'watch-hls');

    // A browser without WebRTC falls back to HLS by itself.
    const noRtc = await openPage(viewer, 'watch without webrtc');
    pages.push(noRtc);
    await noRtc.addInitScript(() => { delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection; });
    await noRtc.goto(`${server.base}/watch/${name}`);
    await hlsPlaying(noRtc);

    // The publisher stops: both pages show the end.
    await stopPublishing(pub);
    for (const page of [asked, noRtc]) {
      await waitFor(async () => (await overlayState(page)) === 'ended', { timeout: 20000, what: 'the HLS page to show the end' });
    }
    await asked.close();
    await noRtc.close();
  });

  test('both pages recover by themselves when the server restarts', async () => {
    const name = 'phoenix';
    await startPublishing(pub, server.base, { name, codec: 'VP8' });
    const watch = await openPage(viewer, 'watch phoenix');
    pages.push(watch);
    await watch.goto(`${server.base}/watch/${name}`);
    await expectPlaying(watch);

    const { httpPort, udpPort } = server;
    await server.stop({ signal: 'SIGKILL' });
    await waitFor(() => pub.evaluate(() => window.castgate.whip?.state === 'reconnecting'), { what: 'the publish page to notice the lost connection' });
    assert.equal(await pub.getAttribute('#status-pill', 'data-state'), 'reconnecting');
    await screenshot(pub, 'publish-reconnecting');
    server = await startCastgate({ httpPort, udpPort });

    await waitFor(() => pub.evaluate(() => window.castgate.whip?.state === 'connected'), { timeout: 30000, what: 'the publish page to reconnect' });
    await expectPlaying(watch, { timeout: 30000 });
    await watch.close();
    await stopPublishing(pub);
  });

  test('a wrong token gets a readable error on the publish page', async () => {
    const guarded = await startCastgate({ args: ['--publish-token', 'secret', '--view-token', 'seen'] });
    try {
      await startPublishing(pub, guarded.base, { name: 'guarded', codec: 'VP8', token: 'not-the-token', expectLive: false });
      await waitFor(() => pub.isVisible('#error'), { what: 'an error message' });
      const text = await pub.textContent('#error');
      assert.match(text, /token/i);
      assert.match(text, /not valid/);
      assert.equal(await pub.evaluate(() => window.castgate.whip), null, 'the page is back to idle');
      assert.equal(await pub.isVisible('#start'), true);
      await screenshot(pub, 'publish-wrong-token');
      // The right token works.
      await startPublishing(pub, guarded.base, { name: 'guarded', codec: 'VP8', token: 'secret', navigate: false });
      assert.equal(await pub.isVisible('#error'), false);
      // A viewer without the viewing token is asked for it, in words.
      const watch = await openPage(viewer, 'watch guarded');
      pages.push(watch);
      await watch.goto(`${guarded.base}/watch/guarded`);
      await waitFor(() => watch.isVisible('#token-form'), { what: 'the token form' });
      assert.match(await watch.textContent('#overlay-title'), /needs a viewing token/);
      assert.match(await watch.textContent('#overlay-text'), /Bearer token is required/);
      await screenshot(watch, 'watch-needs-token');
      await watch.fill('#token', 'seen');
      await watch.click('#token-form button');
      await expectPlaying(watch);
      await watch.close();
      await stopPublishing(pub);
    } finally {
      await guarded.stop();
    }
  });

  test('figure: time from clicking Watch to the first picture', async () => {
    const name = 'figure';
    await startPublishing(pub, server.base, { name, codec: 'VP8' });
    const page = await openPage(viewer, 'figure');
    pages.push(page);
    const runs = [];
    const sessions = [];
    for (let i = 0; i < 5; i++) {
      await page.goto(server.base);
      const link = `a.watch-link[data-stream="${name}"]`;
      await page.waitForSelector(link, { timeout: 20000 });
      await page.click(link);
      const ms = await waitFor(() => page.evaluate(() => window.castgate?.firstFrameMs), { what: 'the first picture' });
      const f = await watchFigures(page);
      assert.ok(f.videoWidth > 0 && f.framesDecoded > 0, 'a frame was decoded');
      runs.push(ms);
      // Note the DELETEs the page sends from now on (it is about to be left).
      sessions.push(await page.evaluate(() => {
        const fetch = window.fetch;
        window.fetch = (url, init = {}) => {
          if (init.method === 'DELETE') {
            const seen = JSON.parse(localStorage.getItem('deletes') ?? '[]');
            localStorage.setItem('deletes', JSON.stringify([...seen, { url: String(url), keepalive: Boolean(init.keepalive) }]));
          }
          return fetch(url, init);
        };
        return window.castgate.whep.resource;
      }));
    }
    const sorted = [...runs].sort((a, b) => a - b);
    console.log(`figure: watch_to_first_frame_ms median=${sorted[2]} runs=[${runs.join(',')}]`);

    // Leaving a watch page DELETEs its session (fetch keepalive on pagehide).
    await page.goto(server.base);
    const deletes = await page.evaluate(() => JSON.parse(localStorage.getItem('deletes') ?? '[]'));
    assert.deepEqual(deletes.map((d) => d.url), sessions);
    assert.ok(deletes.every((d) => d.keepalive));
    await waitFor(async () => (await liveStreams(server.base)).find((s) => s.name === name)?.viewers === 0, { what: 'the viewers to be gone' });
    await page.close();
    await stopPublishing(pub);
  });
});
