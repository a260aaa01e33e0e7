// Two castgate nodes and a Redis, as the README's "Running several nodes"
// starts them: a browser publishes on one node, another browser finds the
// stream on the other node's home page and watches it there — relayed (the
// default), then redirected to the origin (`--cluster-whep redirect`).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import {
  expectPlaying, finish, freeTcpPort, launchBrowser, openPage, screenshot, startCastgate, startPublishing,
  stopPublishing, waitFor
} from './lib.mjs';

const SECRET = 'browser-cluster-secret-0123456789abcdef';

/** A redis-server on a free loopback port, nothing persisted. */
async function startRedis() {
  const port = await freeTcpPort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  await waitFor(() => new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  }), { what: 'redis-server to listen' });
  return { url: `redis://127.0.0.1:${port}`, stop: () => proc.kill('SIGKILL') };
}

function node(redis, id, extra = []) {
  return startCastgate({
    args: ['--cluster-redis', redis.url, '--cluster-secret', SECRET, '--cluster-node-id', id,
      '--cluster-heartbeat', '0.5', '--cluster-expiry', '2', ...extra],
  });
}

describe('two nodes in Chromium', { timeout: 180000 }, () => {
  let redis;
  let a;
  let b;
  let c;
  let publisher;
  let viewer;
  const pages = [];

  before(async () => {
    redis = await startRedis();
    // One at a time: each takes its free ports before the next looks.
    a = await node(redis, 'node-a');
    b = await node(redis, 'node-b');
    c = await node(redis, 'node-c', ['--cluster-whep', 'redirect']);
    publisher = await launchBrowser();
    viewer = await launchBrowser();
  });

  // Whatever started is stopped, even after a failed start (a child left
  // running would keep this test process alive).
  after(async () => {
    try {
      await Promise.all([b?.stop(), c?.stop()]);
      await finish({ pages, browsers: [publisher, viewer], server: a });
    } finally {
      redis?.stop();
    }
  });

  test('publish on one node, find it and watch it on another', async () => {
    const pub = await openPage(publisher, 'publish on a');
    pages.push(pub);
    await startPublishing(pub, a.base, { name: 'across', codec: 'VP8' });

    // B's home page lists it, carried by node-a.
    const home = await openPage(viewer, 'home on b');
    pages.push(home);
    await home.goto(`${b.base}/`);
    await waitFor(async () => (await home.locator('[data-stream="across"] .m-node span').textContent().catch(() => '')) === 'node-a',
      { what: 'the home page of node-b to list the stream on node-a' });
    await screenshot(home, 'cluster-home-on-another-node');

    // B relays it: its own session, one pull from A.
    const watch = await openPage(viewer, 'watch on b');
    pages.push(watch);
    await watch.goto(`${b.base}/watch/across`);
    const figures = await expectPlaying(watch, { codec: 'vp8' });
    assert.ok(figures.framesDecoded > 0);
    const resource = await watch.evaluate(() => window.castgate.whep.resource);
    assert.ok(resource.startsWith(b.base), `served by node-b: ${resource}`);
    const relays = await (await fetch(`${b.base}/metrics`)).text();
    assert.match(relays, /^castgate_cluster_relays 1$/m);
    await screenshot(watch, 'cluster-watch-relayed');

    // C redirects the browser to A, which lets it in with C's ticket.
    const redirected = await openPage(viewer, 'watch on c');
    pages.push(redirected);
    await redirected.goto(`${c.base}/watch/across`);
    await expectPlaying(redirected, { codec: 'vp8' });
    const at = await redirected.evaluate(() => window.castgate.whep.resource);
    assert.ok(at.startsWith(a.base), `the session lives on the origin: ${at}`);

    // Leaving deletes the session where it lives.
    await redirected.close();
    await watch.close();
    const id = at.split('/').pop();
    await waitFor(async () => {
      const v = await (await fetch(`${a.base}/api/streams/across/sessions`)).json();
      return !v.sessions.some((s) => s.id === id);
    }, { what: 'the redirected viewer to leave node-a' });
    await stopPublishing(pub);
  });
});
