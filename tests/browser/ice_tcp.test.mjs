// ICE-TCP with real browsers: two Chromiums whose WebRTC may not use UDP (the
// `disable_non_proxied_udp` policy an enterprise firewall setup would push)
// still publish and watch, over castgate's passive TCP candidates.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  expectPlaying, finish, launchBrowser, openPage, startCastgate, startPublishing, stopPublishing, waitFor
} from './lib.mjs';

/** Chromium profile preferences: WebRTC uses TCP only, never plain UDP. */
const TCP_ONLY = { webrtc: { ip_handling_policy: 'disable_non_proxied_udp' } };

/** The `castgate_ice_tcp_*` series of /metrics, by name. */
async function tcpMetrics(base) {
  const text = await (await fetch(`${base}/metrics`)).text();
  return Object.fromEntries(text.split('\n')
    .filter((l) => l.startsWith('castgate_ice_tcp'))
    .map((l) => {
      const i = l.lastIndexOf(' ');
      return [l.slice(0, i), Number(l.slice(i + 1))];
    }));
}

describe('ICE-TCP in Chromium', { timeout: 120000 }, () => {
  let server;
  let publisher;
  let viewer;
  const pages = [];

  before(async () => {
    [server, publisher, viewer] = await Promise.all([
      startCastgate(),
      launchBrowser({ prefs: TCP_ONLY }),
      launchBrowser({ prefs: TCP_ONLY }),
    ]);
  });

  after(() => finish({ pages, browsers: [publisher, viewer], server }));

  test('a browser that may not use UDP publishes and another watches, over TCP', async () => {
    const pub = await openPage(publisher, 'publish over tcp');
    pages.push(pub);
    await startPublishing(pub, server.base, { name: 'over-tcp', codec: 'VP8' });
    const watch = await openPage(viewer, 'watch over tcp');
    pages.push(watch);
    await watch.goto(`${server.base}/watch/over-tcp`);
    await expectPlaying(watch, { codec: 'VP8' });
    const m = await tcpMetrics(server.base);
    assert.equal(m.castgate_ice_tcp_connections, 2, 'publisher and viewer each on a TCP connection');
    assert.ok(m.castgate_ice_tcp_packets_in_total > 100, `media came in over TCP (${m.castgate_ice_tcp_packets_in_total})`);
    assert.ok(m.castgate_ice_tcp_packets_out_total > 100, `media went out over TCP (${m.castgate_ice_tcp_packets_out_total})`);
    assert.equal(m['castgate_ice_tcp_refused_total{reason="bad_input"}'], 0);
    await watch.close();
    await stopPublishing(pub);
    await waitFor(async () => (await tcpMetrics(server.base)).castgate_ice_tcp_connections === 0,
      { what: 'both TCP connections to close with their sessions' });
  });
});
