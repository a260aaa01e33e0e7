// A recording in object storage, in a real Chromium: published from the publish
// page, uploaded to an S3 protocol server (moto, on loopback), its local file gone,
// then listed as stored on the recordings page, played from the bucket through
// castgate and sought to the middle as a local one is.
// Run with `node --test` here (scripts/setup.sh --test installs moto).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  expectPlayback, finish, freeTcpPort, launchBrowser, openPage, screenshot, expectSeekToMiddle,
  sleep, startCastgate, startPublishing, stopPublishing, waitFor,
} from './lib.mjs';

const MOTO = process.env.CASTGATE_MOTO_SERVER
  || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'castgate/moto-5.2.6/bin/moto_server');

/** moto's S3 server on a free loopback port, with the bucket `castgate-test` made. */
async function startMoto() {
  if (!fs.existsSync(MOTO)) throw new Error(`${MOTO} is missing: run scripts/setup.sh --test`);
  const port = await freeTcpPort();
  const proc = spawn(MOTO, ['-H', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  const endpoint = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(endpoint).catch(() => null)) !== null, { what: 'moto to listen', timeout: 30000 });
  const made = await fetch(`${endpoint}/castgate-test`, { method: 'PUT' });
  assert.ok(made.ok, `making the bucket: ${made.status}`);
  return { endpoint, stop: () => proc.kill('SIGKILL') };
}

async function recordings(base) {
  const res = await fetch(`${base}/api/recordings?per_page=500`);
  assert.equal(res.status, 200);
  return (await res.json()).recordings;
}

describe('a stored recording on the recordings page', { timeout: 180000 }, () => {
  let moto;
  let server;
  let publisher;
  let viewer;
  const pages = [];

  before(async () => {
    moto = await startMoto();
    [server, publisher, viewer] = await Promise.all([
      startCastgate({
        args: ['--storage', 's3', '--storage-endpoint', moto.endpoint, '--storage-bucket', 'castgate-test'],
        env: { AWS_ACCESS_KEY_ID: 'castgate-test', AWS_SECRET_ACCESS_KEY: 'castgate-test-secret' },
      }),
      launchBrowser(),
      launchBrowser(),
    ]);
  });

  after(async () => {
    await finish({ pages, browsers: [publisher, viewer], server });
    moto?.stop();
  });

  test('plays from the bucket and seeks to the middle', async () => {
    const pub = await openPage(publisher, 'publish to storage');
    pages.push(pub);
    const name = 'stored-vp8';
    await startPublishing(pub, server.base, { name, codec: 'VP8' });
    await waitFor(async () => (await recordings(server.base)).some((r) => r.stream === name && r.state === 'recording'), { what: 'the recording to start' });
    await sleep(7000);
    await stopPublishing(pub);
    const rec = await waitFor(async () => (await recordings(server.base)).find((r) => r.stream === name && r.storage === 'stored'), { what: 'the recording to be stored', timeout: 60000 });
    assert.equal(fs.existsSync(path.join(server.recordDir, name, rec.file)), false, 'the local copy is gone: what plays comes from the bucket');

    const page = await openPage(viewer, 'stored recording');
    pages.push(page);
    await page.goto(`${server.base}/recordings`);
    const row = `li.rec-row[data-id="${rec.id}"]`;
    await waitFor(async () => (await page.textContent(`${row} .rec-storage`).catch(() => '')) === 'Stored', { what: 'the row to say Stored' });
    await page.click(`${row} .rec-open`);
    const playing = await expectPlayback(page, 'the stored recording');
    assert.ok(Math.abs(playing.duration - rec.duration_secs) < 0.5, `the file says ${playing.duration} s, the catalog ${rec.duration_secs} s`);

    await expectSeekToMiddle(page, 'stored seek');
    await page.evaluate(() => document.querySelector('#video').pause());
    await screenshot(page, 'recordings-stored');
  });
});
