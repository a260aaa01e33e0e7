// Home page: the live streams, refreshed every 2 seconds from GET /api/streams,
// and the latest recordings (GET /api/recordings), refreshed with it while one
// is being recorded or a stream starts or ends, else every 10 seconds.
import {
  $, h, icon, renderIcons, markNav, codecName, formatDuration, formatBitrate, copyText,
  formatBytes, formatDateTime, recordingMedia, RECORDING_STATES, RecordingClock, viewToken,
} from './app.js';

const POLL_MS = 2000;
// A visible tile's picture is refreshed this often (the server decodes one
// only when asked, and shares it between everyone asking within ~2 s).
const PICTURE_MS = 5000;
const token = viewToken();
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
      h('img', { className: 'picture', alt: '', hidden: true }),
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
        h('span', { className: 'm-bitrate' }, icon('broadcast'), h('span')),
        h('span', { className: 'm-node' }, icon('monitor'), h('span'))),
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
  // In a cluster: the node that carries the stream (any node plays it).
  el.querySelector('.m-node').hidden = !info.node;
  el.querySelector('.m-node span').textContent = info.node ?? '';
  el.querySelector('.m-node').title = 'Carried by this node of the cluster';
  tick(entry);
}

// ---------- pictures ----------

const visible = new Set(); // tiles on screen
const seen = new IntersectionObserver((changes) => {
  for (const c of changes) {
    const entry = cards.get(c.target.dataset.stream);
    if (!entry) continue;
    if (c.isIntersecting) { visible.add(entry); refreshPicture(entry); } else visible.delete(entry);
  }
});

/**
 * Loads a new picture of the stream into its tile (GET snapshot.jpg). The
 * old picture stays until the new one has loaded; without one (no keyframe
 * yet, no video, not allowed) the tile keeps its codec placeholder.
 */
function refreshPicture(entry) {
  if (!entry.info.video || document.hidden || entry.loading) return;
  const now = performance.now();
  if (now - (entry.pictureAt ?? -Infinity) < PICTURE_MS - 100) return;
  entry.pictureAt = now;
  entry.loading = true;
  let url = `/api/streams/${encodeURIComponent(entry.info.name)}/snapshot.jpg?t=${Math.floor(Date.now() / 1000)}`;
  if (token) url += `&token=${encodeURIComponent(token)}`;
  const next = new Image();
  next.onload = () => {
    entry.loading = false;
    const img = entry.el.querySelector('.picture');
    img.src = next.src;
    img.hidden = false;
    entry.el.classList.add('has-picture');
  };
  next.onerror = () => { entry.loading = false; };
  next.src = url;
}

setInterval(() => visible.forEach(refreshPicture), 1000);

function tick(entry) {
  const secs = entry.info.uptime_secs + (performance.now() - entry.seenAt) / 1000;
  entry.el.querySelector('.uptime').textContent = formatDuration(secs);
  entry.el.querySelector('.uptime').title = `Live for ${formatDuration(secs)}`;
}

function render(streams) {
  const names = new Set(streams.map((s) => s.name));
  for (const [name, entry] of cards) {
    if (!names.has(name)) { seen.unobserve(entry.el); visible.delete(entry); entry.el.remove(); cards.delete(name); }
  }
  streams.forEach((info, i) => {
    let entry = cards.get(info.name);
    if (!entry || entry.info.id !== info.id) {
      if (entry) { seen.unobserve(entry.el); visible.delete(entry); entry.el.remove(); }
      entry = { el: buildCard(info) };
      cards.set(info.name, entry);
      seen.observe(entry.el);
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

// ---------- recent recordings ----------

const RECENT = 5;
const RECENT_MS = 10000;
let recent = []; // { rec, el }, newest first
const clock = new RecordingClock();
let recentAt = -Infinity;
let liveKey = '';

function recentMeta(item) {
  const { rec } = item;
  const parts = [formatDateTime(rec.started_at, { seconds: false }), formatDuration(clock.seconds(rec))];
  if (rec.size_bytes != null) parts.push(formatBytes(rec.size_bytes));
  parts.push(recordingMedia(rec, { channels: false }));
  return parts.join(' · ');
}

function buildRecent(rec) {
  return h('li', { dataset: { id: rec.id } },
    h('a', { href: `/recordings?play=${encodeURIComponent(rec.id)}`, 'aria-label': `Play the recording of ${rec.stream} from ${formatDateTime(rec.started_at)}` },
      h('span', { className: 'rec-icon', 'aria-hidden': 'true' }),
      h('span', { className: 'r-name' }, rec.stream),
      h('span', { className: 'pill' }),
      h('span', { className: 'r-meta' })));
}

/** Updates the list in place (keyed by id), so focus and hover survive a refresh. */
function renderRecent(recs) {
  clock.keep(new Set(recs.map((r) => r.id)));
  const old = new Map(recent.map((i) => [i.rec.id, i]));
  recent = recs.map((rec) => {
    const item = old.get(rec.id) ?? { el: buildRecent(rec) };
    if (item.rec?.state !== rec.state) {
      const state = RECORDING_STATES[rec.state] ?? { label: rec.state, pill: '', title: '' };
      item.el.dataset.state = rec.state;
      item.el.querySelector('.rec-icon').replaceChildren(icon(rec.state === 'recording' ? 'record' : 'play'));
      const pill = item.el.querySelector('.pill');
      pill.className = `pill ${state.pill}`.trim();
      pill.textContent = state.label;
      pill.title = state.title;
      pill.hidden = rec.state === 'finalized';
    }
    item.rec = rec;
    item.el.querySelector('.r-meta').textContent = recentMeta(item);
    return item;
  });
  const box = $('#recent-list');
  recent.forEach((item, i) => {
    if (box.children[i] !== item.el) box.insertBefore(item.el, box.children[i] ?? null);
  });
  while (box.children.length > recent.length) box.lastElementChild.remove();
  $('#recent').hidden = recent.length === 0;
}

async function pollRecent() {
  recentAt = performance.now();
  try {
    const res = await fetch(`/api/recordings?per_page=${RECENT}`, { cache: 'no-store' });
    if (!res.ok) return;
    const body = await res.json();
    if (Array.isArray(body.recordings)) renderRecent(body.recordings);
  } catch {
    // The streams poll shows that the server is away.
  }
}

function tickRecent() {
  for (const item of recent) {
    if (item.rec.state === 'recording') item.el.querySelector('.r-meta').textContent = recentMeta(item);
  }
}

let timer = null;
async function poll() {
  clearTimeout(timer);
  try {
    const res = await fetch('/api/streams', { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = await res.json();
    const streams = Array.isArray(body.streams) ? body.streams : [];
    render(streams);
    $('#offline').hidden = true;
    // A stream that starts or ends starts or ends a recording.
    const key = streams.map((s) => s.id).join(',');
    const busy = recent.some((i) => i.rec.state === 'recording');
    if (key !== liveKey || busy || performance.now() - recentAt >= RECENT_MS) {
      liveKey = key;
      pollRecent();
    }
  } catch {
    $('#offline').hidden = false;
    if (!cards.size) $('#summary').textContent = 'Cannot reach the server.';
  }
  timer = setTimeout(poll, POLL_MS);
}

setInterval(() => { cards.forEach(tick); tickRecent(); }, 1000);
document.addEventListener('visibilitychange', () => { if (!document.hidden) poll(); });
poll();
