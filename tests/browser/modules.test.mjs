// whip.js and whep.js are each meant to be copied alone, so they carry the
// same session core; this keeps the two copies identical.
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
