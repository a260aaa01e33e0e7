// Home page: the live streams, refreshed every 2 seconds from GET /api/streams.
import { $, h, icon, renderIcons, markNav, codecName, formatDuration, formatBitrate, copyText } from './app.js';

const POLL_MS = 2000;
const list = $('#streams');
const cards = new Map(); // stream name → { el, info, seenAt }

renderIcons();
markNav();

$('#whip-url').value = `${location.origin}/whip/my-stream`;
$('#whep-url').value = `${location.origin}/whep/my-stream`;
$('#copy-whip').addEventListener('click', (e) => copyText($('#whip-url').value, e.currentTarget));
$('#copy-whep').addEventListener('click', (e) => copyText($('#whep-url').value, e.currentTarget));

function videoLine(info) {
  const v = info.video;
  if (!v) return 'Audio only';
  const parts = [codecName(v.codec)];
  if (v.width && v.height) parts.push(`${v.width}×${v.height}`);
  if (v.fps) parts.push(`${Math.round(v.fps)} fps`);
  return parts.join(' · ');
}

function viewersText(n) {
  return n === 1 ? '1 watching' : `${n} watching`;
}

function buildCard(info) {
  const watchHref = `/watch/${encodeURIComponent(info.name)}`;
  const el = h('article', { className: 'card stream-card', dataset: { stream: info.name } },
    h('a', { className: 'stream-thumb', href: watchHref, tabIndex: -1, 'aria-hidden': 'true' },
      h('span', { className: 'pill live' }, 'Live'),
      h('span', { className: 'uptime' }),
      h('span', { className: 'codec' }),
      h('span', { className: 'res' })),
    h('div', { className: 'card-body' },
      h('h3', {}, info.name),
      h('div', { className: 'stream-meta' },
        h('span', { className: 'm-video' }, icon('camera'), h('span')),
        h('span', { className: 'm-audio' }, icon('volume'), h('span')),
        h('span', { className: 'm-viewers' }, icon('eye'), h('span')),
        h('span', { className: 'm-bitrate' }, icon('broadcast'), h('span'))),
      h('div', { className: 'actions' },
        h('a', { className: 'btn primary watch-link', href: watchHref, dataset: { stream: info.name } }, icon('play'), 'Watch'))));
  return el;
}

function fillCard(entry) {
  const { el, info } = entry;
  el.querySelector('.codec').textContent = info.video ? codecName(info.video.codec) : codecName(info.audio?.codec);
  el.querySelector('.res').textContent = info.video?.width ? `${info.video.width}×${info.video.height}` : '';
  el.querySelector('.m-video span').textContent = videoLine(info);
  el.querySelector('.m-audio').hidden = !info.audio;
  el.querySelector('.m-audio span').textContent = info.audio ? codecName(info.audio.codec) : '';
  el.querySelector('.m-viewers span').textContent = viewersText(info.viewers ?? 0);
  el.querySelector('.m-bitrate span').textContent = formatBitrate((info.bitrate_in_kbps ?? 0) * 1000);
  el.querySelector('.m-viewers').title = 'Viewers';
  el.querySelector('.m-bitrate').title = 'Incoming bitrate';
  tick(entry);
}

function tick(entry) {
  const secs = entry.info.uptime_secs + (performance.now() - entry.seenAt) / 1000;
  entry.el.querySelector('.uptime').textContent = formatDuration(secs);
  entry.el.querySelector('.uptime').title = `Live for ${formatDuration(secs)}`;
}

function render(streams) {
  const names = new Set(streams.map((s) => s.name));
  for (const [name, entry] of cards) {
    if (!names.has(name)) { entry.el.remove(); cards.delete(name); }
  }
  streams.forEach((info, i) => {
    let entry = cards.get(info.name);
    if (!entry || entry.info.id !== info.id) {
      entry?.el.remove();
      entry = { el: buildCard(info) };
      cards.set(info.name, entry);
    }
    entry.info = info;
    entry.seenAt = performance.now();
    fillCard(entry);
    if (list.children[i] !== entry.el) list.insertBefore(entry.el, list.children[i] ?? null);
  });
  $('#empty').hidden = streams.length > 0;
  const n = streams.length;
  $('#summary').textContent = n === 0 ? 'No stream is live.' : n === 1 ? '1 stream is live.' : `${n} streams are live.`;
}

let timer = null;
async function poll() {
  clearTimeout(timer);
  try {
    const res = await fetch('/api/streams', { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = await res.json();
    render(Array.isArray(body.streams) ? body.streams : []);
    $('#offline').hidden = true;
  } catch {
    $('#offline').hidden = false;
    if (!cards.size) $('#summary').textContent = 'Cannot reach the server.';
  }
  timer = setTimeout(poll, POLL_MS);
}

setInterval(() => cards.forEach(tick), 1000);
document.addEventListener('visibilitychange', () => { if (!document.hidden) poll(); });
poll();
