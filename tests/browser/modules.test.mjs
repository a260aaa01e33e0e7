// The pages' modules without a browser. whip.js and whep.js are each meant
// to be copied alone, so they carry the same session core; this keeps the
// two copies identical.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';

const START = '// ---- shared session core: kept identical in whip.js and whep.js ----';
const END = '// ---- end of shared session core ----';

function core(file) {
  const text = fs.readFileSync(new URL(`../../web/${file}`, import.meta.url), 'utf8');
  const start = text.indexOf(START);
  const end = text.indexOf(END);
  assert.ok(start >= 0 && end > start, `${file} marks its shared core`);
  return text.slice(start, end);
}

test('whip.js and whep.js share one session core', () => {
  assert.equal(core('whip.js'), core('whep.js'));
});

test('MediaClock counts frame rate in stream time, across RTP wrap, and restarts on a new source', async () => {
  const { MediaClock } = await import('../../web/app.js');
  let onFrame = null;
  const video = { requestVideoFrameCallback: (cb) => { onFrame = cb; } };
  const clock = new MediaClock(video);
  const present = (rtpTimestamp) => onFrame(0, { rtpTimestamp, mediaTime: 0 });
  assert.equal(clock.frameRate('v', 0), null, 'nothing presented yet');
  // 30 fps in RTP time (3000 ticks at 90 kHz) starting just before the wrap.
  let rtp = 2 ** 32 - 45000;
  present(rtp);
  assert.equal(clock.frameRate('v', 1), null, 'the first sample is a baseline');
  // A catch-up burst: 30 frames decoded and presented at once (1 s of stream).
  for (let i = 0; i < 30; i++) { rtp = (rtp + 3000) >>> 0; present(rtp); }
  assert.equal(Math.round(clock.frameRate('v', 31) * 1000) / 1000, 30);
  // Too little stream time since: no figure, the older sample kept.
  rtp = (rtp + 3000) >>> 0; present(rtp);
  assert.equal(clock.frameRate('v', 32), null);
  for (let i = 0; i < 14; i++) { rtp = (rtp + 3000) >>> 0; present(rtp); }
  assert.equal(Math.round(clock.frameRate('v', 46) * 1000) / 1000, 30, '15 frames in half a second');
  // A reconnect: a new source with unrelated timestamps, counters from 0.
  present(12345);
  assert.equal(clock.frameRate('v', 2), null, 'a new connection starts again');
  let t = 12345;
  for (let i = 0; i < 15; i++) { t += 6000; present(t); }
  assert.equal(Math.round(clock.frameRate('v', 17) * 1000) / 1000, 15);
});
