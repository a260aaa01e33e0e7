// Recordings page: the catalog from GET /api/recordings (newest first, filter by
// stream, pages), a player for any recording (the download URL is the <video>'s
// source, so seeking uses HTTP Range requests), download, MP4 and delete.
// The list refreshes every 2 s while something on it is being recorded, else every 5 s.
import {
  $, h, icon, renderIcons, markNav, show, formatDuration, formatBytes, formatDateTime,
  recordingMedia, codecName, RECORDING_STATES, STORAGE_STATES, RecordingClock,
  viewToken as appViewToken,
} from './app.js';

const FAST_MS = 2000; // refresh while a recording on the page is in progress
const SLOW_MS = 5000; // otherwise, to notice new recordings
const NAMES_MS = 15000; // the stream names of the filter, at most this often
const DEFAULT_PER_PAGE = 20;

const list = $('#list');
const video = $('#video');
const filter = $('#stream-filter');
const dialog = $('#confirm');

const view = {
  stream: '',
  page: 1,
  perPage: DEFAULT_PER_PAGE,
  total: 0,
  items: [],
  loaded: false,
};
const rows = new Map(); // id → { el, rec }
const clock = new RecordingClock();
let current = null; // the recording in the player: { rec, loadedState }
let names = { streams: new Map(), count: 0, bytes: 0, at: -Infinity, total: -1 };

renderIcons();
markNav();
readUrl();

// ---------- helpers ----------

// A viewing token, from ?token= in this page's address or the one the watch
// page kept for this tab: sent as Authorization on API calls, and as ?token=
// on download and play links (a <video> or a link cannot send headers).
const viewToken = appViewToken();
const addQuery = (url, key, value) => `${url}${url.includes('?') ? '&' : '?'}${key}=${encodeURIComponent(value)}`;
const withToken = (url) => (viewToken ? addQuery(url, 'token', viewToken) : url);
const downloadUrl = (id) => withToken(`/recordings/${encodeURIComponent(id)}/download`);
const pictureUrl = (id, what) => withToken(`/recordings/${encodeURIComponent(id)}/${what}.jpg`);
const apiUrl = (id) => `/api/recordings/${encodeURIComponent(id)}`;

function posInt(v) {
  const n = Number.parseInt(v ?? '', 10);
  return Number.isFinite(n) && n >= 1 ? n : null;
}

function readUrl() {
  const p = new URLSearchParams(location.search);
  view.stream = p.get('stream') ?? '';
  view.page = posInt(p.get('page')) ?? 1;
  view.perPage = Math.min(500, posInt(p.get('per_page')) ?? DEFAULT_PER_PAGE);
  return p.get('play');
}

function writeUrl({ push = false } = {}) {
  const p = new URLSearchParams();
  if (view.stream) p.set('stream', view.stream);
  if (view.page > 1) p.set('page', String(view.page));
  if (view.perPage !== DEFAULT_PER_PAGE) p.set('per_page', String(view.perPage));
  if (current) p.set('play', current.rec.id);
  const query = p.toString();
  const url = `${location.pathname}${query ? `?${query}` : ''}`;
  if (url === `${location.pathname}${location.search}`) return;
  if (push) history.pushState(null, '', url);
  else history.replaceState(null, '', url);
}

/** An HTTP answer (or no answer) in words: `{ title, detail }`. */
function problem(status, text, doing) {
  const said = String(text ?? '').trim().replace(/^./, (c) => c.toUpperCase());
  const reason = said && !/[.!?]$/.test(said) ? `${said}.` : said;
  if (status === 0) return { title: `Cannot ${doing}`, detail: 'The server is not answering. Check the network connection; castgate may be down.' };
  if (status === 404) return { title: `Cannot ${doing}`, detail: 'This recording no longer exists; it may have been deleted.' };
  if (status === 401 || status === 403) return { title: 'Not allowed', detail: `${reason} Open this page with ?token=… in its address to pass a token.`.trim() };
  if (status === 409) return { title: `Cannot ${doing}`, detail: reason || 'It is still being recorded; stop the stream first.' };
  if (status === 429) return { title: 'Too many requests', detail: `${reason} Wait a moment and try again.`.trim() };
  return { title: `Cannot ${doing}`, detail: reason || `The server answered ${status}.` };
}

async function request(url, init = {}) {
  let res;
  try {
    const headers = viewToken ? { Authorization: `Bearer ${viewToken}`, ...(init.headers ?? {}) } : init.headers;
    res = await fetch(url, { cache: 'no-store', ...init, headers });
  } catch (e) {
    return { status: 0, text: e.message };
  }
  const type = res.headers.get('content-type') ?? '';
  const body = type.includes('json') ? await res.json().catch(() => null) : await res.text().catch(() => '');
  return { status: res.status, ok: res.ok, body, text: typeof body === 'string' ? body : '' };
}

function showError({ title, detail }) {
  $('#error-title').textContent = title;
  $('#error-text').textContent = detail;
  show($('#error'), true);
}
$('#error-close').addEventListener('click', () => show($('#error'), false));

function stateInfo(rec) {
  return RECORDING_STATES[rec.state] ?? { label: rec.state, pill: '', title: '' };
}

function setPill(el, rec) {
  const s = stateInfo(rec);
  el.className = `pill ${s.pill}`.trim();
  el.textContent = s.label;
  el.title = s.title;
}

function whenText(rec) {
  return formatDateTime(rec.started_at);
}

function containerName(rec) {
  return rec.file?.endsWith('.mkv') ? 'Matroska (.mkv)' : 'WebM';
}

/** The MIME type with codecs, for canPlayType. */
function mimeOf(rec) {
  const codecs = [];
  const videoIds = { vp8: 'vp8', vp9: 'vp09.00.10.08', av1: 'av01.0.04M.08', h264: 'avc1.42E01F' };
  if (rec.video) codecs.push(videoIds[rec.video.codec] ?? rec.video.codec);
  if (rec.audio) codecs.push(rec.audio.codec);
  const type = rec.file?.endsWith('.mkv') ? 'video/x-matroska' : rec.video ? 'video/webm' : 'audio/webm';
  return codecs.length ? `${type}; codecs="${codecs.join(', ')}"` : type;
}

// ---------- the list ----------

function buildRow(rec) {
  const label = `${rec.stream}, ${whenText(rec)}`;
  const el = h('li', { className: 'rec-row', dataset: { id: rec.id } },
    h('span', { className: 'rec-icon', 'aria-hidden': 'true' }, h('img', { className: 'rec-poster', alt: '', hidden: true }), icon('play')),
    h('div', { className: 'rec-name' },
      h('button', { className: 'rec-open', type: 'button', title: 'Play', 'aria-label': `Play ${label}` }, rec.stream),
      h('time', { className: 'rec-date', dateTime: rec.started_at })),
    h('span', { className: 'rec-duration' }),
    h('span', { className: 'rec-size' }),
    h('span', { className: 'rec-media' }),
    h('span', { className: 'rec-state' }, h('span', { className: 'pill' }), h('span', { className: 'pill rec-storage' })),
    h('div', { className: 'rec-actions' },
      h('a', { className: 'icon-action rec-download', href: downloadUrl(rec.id), download: '', title: 'Download', 'aria-label': `Download ${label}` }, icon('download')),
      h('span', { className: 'mp4-slot rec-mp4' }),
      h('button', { className: 'icon-action danger rec-delete', type: 'button', title: 'Delete', 'aria-label': `Delete ${label}` }, icon('trash'))),
    h('p', { className: 'rec-error' }),
    exportLine('rec-export'));
  el.addEventListener('click', (e) => {
    if (e.target.closest('.rec-actions, .rec-export')) return;
    const entry = rows.get(rec.id);
    if (entry) open(entry.rec, { autoplay: true, scroll: true });
  });
  el.querySelector('.rec-delete').addEventListener('click', () => {
    const entry = rows.get(rec.id);
    if (entry) askDelete(entry.rec);
  });
  return el;
}

/** Shows a finished recording's poster in its row once it has loaded. */
function fillPoster(el, rec) {
  const img = el.querySelector('.rec-poster');
  if (!rec.video || rec.state === 'recording' || img.dataset.for === rec.id) return;
  img.dataset.for = rec.id;
  img.onload = () => { img.hidden = false; img.parentElement.classList.add('has-poster'); };
  img.onerror = () => { img.hidden = true; };
  img.src = pictureUrl(rec.id, 'poster');
}

function fillRow(entry) {
  const { el, rec } = entry;
  el.dataset.state = rec.state;
  fillPoster(el, rec);
  el.querySelector('.rec-date').textContent = whenText(rec);
  el.querySelector('.rec-date').title = `Started ${formatDateTime(rec.started_at, { year: true })}${rec.ended_at ? `, ended ${formatDateTime(rec.ended_at, { year: true })}` : ''}`;
  el.querySelector('.rec-size').textContent = formatBytes(rec.size_bytes);
  el.querySelector('.rec-media').textContent = recordingMedia(rec, { channels: false });
  el.querySelector('.rec-media').title = recordingMedia(rec);
  setPill(el.querySelector('.rec-state .pill'), rec);
  const stored = STORAGE_STATES[rec.storage];
  const storagePill = el.querySelector('.rec-storage');
  show(storagePill, Boolean(stored));
  if (stored) {
    storagePill.className = `pill rec-storage ${stored.pill}`;
    storagePill.textContent = stored.label;
    storagePill.title = rec.storage_error ? `${stored.title} Last error: ${rec.storage_error}` : stored.title;
  }
  const recording = rec.state === 'recording';
  const del = el.querySelector('.rec-delete');
  del.disabled = recording;
  del.title = recording ? 'It is being recorded: stop the stream to delete it' : 'Delete';
  const err = el.querySelector('.rec-error');
  const dropped = rec.dropped_frames > 0 ? `${rec.dropped_frames} frame${rec.dropped_frames === 1 ? '' : 's'} could not be recorded.` : '';
  const retrying = rec.storage === 'upload_retrying' ? `Upload failed, retrying: ${rec.storage_error || 'no answer from the storage.'}` : '';
  err.textContent = rec.state === 'failed' ? `Failed: ${rec.error || 'the recording stopped with an error.'}` : [dropped, retrying].filter(Boolean).join(' ');
  err.classList.toggle('warn-text', rec.state !== 'failed');
  show(err, Boolean(err.textContent));
  el.toggleAttribute('aria-current', current?.rec.id === rec.id);
  fillMp4(rec, el.querySelector('.rec-mp4'), el.querySelector('.rec-export'));
  tickRow(entry);
}

function tickRow(entry) {
  entry.el.querySelector('.rec-duration').textContent = formatDuration(clock.seconds(entry.rec));
}

function render() {
  const ids = new Set(view.items.map((r) => r.id));
  for (const [id, entry] of rows) {
    if (!ids.has(id)) { entry.el.remove(); rows.delete(id); }
  }
  view.items.forEach((rec, i) => {
    let entry = rows.get(rec.id);
    if (!entry) {
      entry = { el: buildRow(rec) };
      rows.set(rec.id, entry);
    }
    entry.rec = rec;
    fillRow(entry);
    if (list.children[i] !== entry.el) list.insertBefore(entry.el, list.children[i] ?? null);
  });

  const empty = view.items.length === 0;
  show($('.rec-header'), !empty);
  show($('#empty'), empty);
  if (empty) {
    $('#empty-title').textContent = view.stream ? `No recordings of “${view.stream}”` : 'No recordings yet';
    $('#empty-text').textContent = view.stream
      ? 'This stream has no recordings (any more). Pick another stream, or show them all.'
      : 'Every published stream is recorded. Its recording shows up here as soon as it starts.';
    const action = $('#empty-action');
    action.replaceChildren(...(view.stream ? [icon('film'), 'Show all recordings'] : [icon('broadcast'), 'Publish a stream']));
    action.href = view.stream ? '/recordings' : '/publish';
  }

  const pages = Math.max(1, Math.ceil(view.total / view.perPage));
  show($('#pager'), pages > 1);
  if (pages > 1) {
    const first = (view.page - 1) * view.perPage + 1;
    const last = Math.min(view.total, first + view.items.length - 1);
    $('#page-info').textContent = `${first}–${last} of ${view.total} · page ${view.page} of ${pages}`;
    $('#prev').disabled = view.page <= 1;
    $('#next').disabled = view.page >= pages;
  }
  renderSummary();
}

function renderSummary() {
  if (!view.loaded) return;
  const n = view.total;
  const what = n === 0 ? 'No recordings' : n === 1 ? '1 recording' : `${n} recordings`;
  const parts = [view.stream ? `${what} of “${view.stream}”` : what];
  const stats = view.stream ? names.streams.get(view.stream) : names;
  if (n > 0 && stats?.bytes) parts.push(formatBytes(stats.bytes));
  const live = view.items.filter((r) => r.state === 'recording').length;
  if (live) parts.push(live === 1 ? '1 being recorded now' : `${live} being recorded now`);
  $('#summary').textContent = `${parts.join(' · ')}.`;
}

// ---------- the stream filter ----------

async function loadNames({ force = false } = {}) {
  if (!force && performance.now() - names.at < NAMES_MS) return;
  names.at = performance.now();
  const streams = new Map();
  let count = 0;
  let bytes = 0;
  for (let page = 1; page <= 20; page++) {
    const res = await request(`/api/recordings?per_page=500&page=${page}`);
    if (!res.ok || !Array.isArray(res.body?.recordings)) return;
    for (const r of res.body.recordings) {
      const s = streams.get(r.stream) ?? { count: 0, bytes: 0 };
      s.count++;
      s.bytes += r.size_bytes ?? 0;
      streams.set(r.stream, s);
      count++;
      bytes += r.size_bytes ?? 0;
    }
    if (page * 500 >= res.body.total) break;
  }
  names = { streams, count, bytes, at: names.at, total: count };
  fillFilter();
  renderSummary();
}

function fillFilter() {
  const sorted = [...names.streams.keys()].sort((a, b) => a.localeCompare(b));
  if (view.stream && !names.streams.has(view.stream)) sorted.unshift(view.stream);
  const options = [h('option', { value: '' }, `All streams (${names.count})`)];
  for (const name of sorted) {
    const n = names.streams.get(name)?.count ?? 0;
    options.push(h('option', { value: name }, `${name} (${n})`));
  }
  filter.replaceChildren(...options);
  filter.value = view.stream;
}

filter.addEventListener('change', () => {
  view.stream = filter.value;
  view.page = 1;
  writeUrl({ push: true });
  refresh({ names: false });
});

$('#prev').addEventListener('click', () => goToPage(view.page - 1));
$('#next').addEventListener('click', () => goToPage(view.page + 1));

function goToPage(page) {
  view.page = Math.max(1, page);
  writeUrl({ push: true });
  refresh({ names: false });
  $('.rec-card').scrollIntoView({ block: 'nearest' });
}

window.addEventListener('popstate', () => {
  const play = readUrl();
  filter.value = view.stream;
  refresh({ names: false }).then(() => {
    if (!play) {
      if (current) closePlayer({ url: false });
    } else if (play !== current?.rec.id && rows.has(play)) {
      open(rows.get(play).rec);
    }
  });
});

// ---------- refreshing ----------

let timer = null;
let running = null; // the load under way
let rerun = null; // one more load, queued behind it (the filter or page changed meanwhile)

function refresh(opts) {
  if (running) {
    rerun ??= running.then(() => { rerun = null; return refresh(opts); });
    return rerun;
  }
  running = load(opts).finally(() => { running = null; });
  return running;
}

async function load({ names: withNames = true } = {}) {
  clearTimeout(timer);
  const q = new URLSearchParams({ page: String(view.page), per_page: String(view.perPage) });
  if (view.stream) q.set('stream', view.stream);
  const res = await request(`/api/recordings?${q}`);
  if (res.ok && Array.isArray(res.body?.recordings)) {
    show($('#offline'), false);
    const pages = Math.max(1, Math.ceil(res.body.total / view.perPage));
    if (view.page > pages) {
      // The list shrank (deletes, retention): show its last page instead.
      view.page = pages;
      writeUrl();
      return load({ names: withNames });
    }
    view.items = res.body.recordings;
    view.total = res.body.total;
    view.loaded = true;
    clock.keep(new Set([...view.items.map((r) => r.id), ...(current ? [current.rec.id] : [])]));
    render();
    await followCurrent();
    if (withNames || names.total < 0 || (!view.stream && names.total !== view.total)) {
      loadNames({ force: !view.stream && names.total !== view.total });
    }
  } else if (res.status === 0 || res.status >= 500) {
    show($('#offline'), true);
    if (!view.loaded) $('#summary').textContent = 'Cannot reach the server.';
  } else {
    showError(problem(res.status, res.text, 'list the recordings'));
  }
  const busy = view.items.some((r) => r.state === 'recording') || current?.rec.state === 'recording';
  timer = setTimeout(() => refresh(), busy ? FAST_MS : SLOW_MS);
}

/** Keeps the player's figures current (from this page, or asks for it alone). */
async function followCurrent() {
  if (!current) return;
  const fresh = view.items.find((r) => r.id === current.rec.id);
  if (fresh) {
    updateCurrent(fresh);
  } else if (current.rec.state === 'recording') {
    const res = await request(apiUrl(current.rec.id));
    if (res.ok && res.body?.id) updateCurrent(res.body);
  }
}

setInterval(() => {
  for (const entry of rows.values()) if (entry.rec.state === 'recording') tickRow(entry);
  if (current?.rec.state === 'recording') tickPlayer();
}, 1000);
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });

// ---------- the player ----------

function open(rec, { autoplay = false, scroll = false } = {}) {
  const same = current?.rec.id === rec.id;
  // Load the file unless it is already in the player, complete: a recording
  // loaded while in progress is loaded again (at the same time) to get the rest.
  const reload = !same || Boolean(video.error) || current.loadedState === 'recording';
  const at = same ? video.currentTime : 0;
  current = { rec, loadedState: same && !reload ? current.loadedState : rec.state };
  for (const entry of rows.values()) entry.el.toggleAttribute('aria-current', entry.rec.id === rec.id);
  show($('#player'), true);
  fillPlayer();
  writeUrl();
  if (reload) load_(rec, at);
  if (autoplay) playNow();
  if (scroll) {
    // Bring the player into view unless its top already is (below the top bar).
    const top = $('#player').getBoundingClientRect().top;
    if (top < 56 || top > innerHeight / 2) $('#player').scrollIntoView({ block: 'start', behavior: 'smooth' });
  }
}

/**
 * Points the <video> at the recording's download URL (seeking uses Range
 * requests). The query names the file's version, so that a file that grew since
 * the browser cached part of it is fetched again.
 */
function load_(rec, at = 0) {
  hideOverlay();
  const version = rec.state === 'recording' ? `${Date.now()}` : `${rec.state}-${rec.size_bytes ?? 0}`;
  const pictures = Boolean(rec.video) && rec.state !== 'recording';
  video.poster = pictures ? pictureUrl(rec.id, 'poster') : '';
  video.src = addQuery(downloadUrl(rec.id), 'v', version);
  fillScrub(rec, pictures);
  if (at > 0) video.addEventListener('loadedmetadata', () => { video.currentTime = at; }, { once: true });
  video.load();
  if (!rec.video) showOverlay({ kind: 'audio', title: 'Audio only', text: `${codecName(rec.audio?.codec)} · use the controls below to listen.` });
}

// ---------- the strip under the player ----------

const scrub = $('#player-scrub');
const STRIP_CELL = 160; // px per picture in strip.jpg (one row)

/** Loads the recording's strip; the bar shows once it has loaded. */
function fillScrub(rec, pictures) {
  show(scrub, false);
  delete scrub.dataset.cells;
  if (!pictures) return;
  const url = pictureUrl(rec.id, 'strip');
  const img = new Image();
  img.onload = () => {
    if (current?.rec.id !== rec.id) return;
    const cells = Math.max(1, Math.round(img.naturalWidth / STRIP_CELL));
    scrub.dataset.cells = String(cells);
    scrub.style.setProperty('--strip', `url("${url}")`);
    scrub.querySelector('.scrub-preview').style.backgroundSize = `${cells * STRIP_CELL}px 90px`;
    show(scrub, true);
    moveHead();
  };
  img.src = url;
}

/** The recording's length in seconds, as the player knows it. */
function scrubDuration() {
  if (Number.isFinite(video.duration) && video.duration > 0) return video.duration;
  return current ? clock.seconds(current.rec) : 0;
}

/** Where along the bar (0–1) the pointer is. */
function scrubFraction(e) {
  const box = scrub.getBoundingClientRect();
  return Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
}

function moveHead() {
  const d = scrubDuration();
  scrub.querySelector('.scrub-head').style.left = `${d > 0 ? (100 * video.currentTime) / d : 0}%`;
}

scrub.addEventListener('pointermove', (e) => {
  const cells = Number(scrub.dataset.cells);
  if (!cells) return;
  const f = scrubFraction(e);
  const cell = Math.min(cells - 1, Math.floor(f * cells));
  const preview = scrub.querySelector('.scrub-preview');
  // Centred on the pointer, but kept whole inside the bar.
  const width = scrub.getBoundingClientRect().width;
  preview.style.left = `${Math.min(Math.max(f * width, STRIP_CELL / 2), width - STRIP_CELL / 2)}px`;
  preview.style.backgroundPosition = `${-cell * STRIP_CELL}px 0`;
  preview.dataset.cell = String(cell);
  preview.querySelector('.scrub-time').textContent = formatDuration(f * scrubDuration());
  show(preview, true);
});
scrub.addEventListener('pointerleave', () => show(scrub.querySelector('.scrub-preview'), false));
scrub.addEventListener('click', (e) => {
  const d = scrubDuration();
  if (d > 0) video.currentTime = scrubFraction(e) * d;
});
video.addEventListener('timeupdate', moveHead);

function playNow() {
  video.play().catch((e) => {
    if (e.name === 'NotAllowedError') {
      // The browser wants a click before sound: play muted; the controls can unmute.
      video.muted = true;
      video.play().catch(() => {});
    }
  });
}

function fillPlayer() {
  const { rec } = current;
  $('#player-title').textContent = rec.stream;
  setPill($('#player-state'), rec);
  $('#player-started').textContent = formatDateTime(rec.started_at, { year: true });
  $('#player-started').title = rec.ended_at ? `Ended ${formatDateTime(rec.ended_at, { year: true })}` : '';
  $('#player-size').textContent = formatBytes(rec.size_bytes);
  $('#player-media').textContent = recordingMedia(rec);
  $('#player-download').href = downloadUrl(rec.id);
  $('#player-download').setAttribute('download', '');
  fillMp4(rec, $('#player-mp4'), $('#player-export'), { big: true });
  const del = $('#player-delete');
  del.disabled = rec.state === 'recording';
  del.title = del.disabled ? 'It is being recorded: stop the stream to delete it' : 'Delete this recording';
  tickPlayer();
  fillNote();
}

function tickPlayer() {
  $('#player-duration').textContent = formatDuration(clock.seconds(current.rec));
}

function fillNote() {
  const note = $('#player-note');
  const { rec, loadedState } = current;
  let kind = null;
  if (rec.state === 'recording') kind = 'growing';
  else if (loadedState === 'recording') kind = 'finished';
  else if (rec.state === 'failed' || rec.state === 'repaired') kind = rec.state;
  const key = `${kind}:${rec.id}:${rec.error ?? ''}`;
  if (note.dataset.key === key) return; // unchanged: keep its button (and focus)
  note.dataset.key = key;
  note.className = `player-note${kind === 'failed' ? ' bad' : ''}`;
  const button = (label) => h('button', { className: 'link', type: 'button', onclick: () => reloadPlayer() }, label);
  const parts = {
    growing: ['Still being recorded: the player has what was written when you opened it. ', button('Load what is new')],
    finished: ['The recording has finished. ', button('Load all of it')],
    failed: [`Failed: ${rec.error || 'the recording stopped with an error.'} What was written before it plays here.`],
    repaired: [stateInfo(rec).title],
  }[kind] ?? [];
  note.replaceChildren(...parts);
  show(note, parts.length > 0);
}

function updateCurrent(rec) {
  current.rec = rec;
  fillPlayer();
}

function reloadPlayer() {
  const at = video.currentTime || 0;
  const playing = !video.paused;
  current.loadedState = current.rec.state;
  load_(current.rec, at);
  if (playing) playNow();
  fillNote();
}

function closePlayer({ url = true } = {}) {
  current = null;
  video.pause();
  video.removeAttribute('src');
  video.load();
  hideOverlay();
  show($('#player'), false);
  for (const entry of rows.values()) entry.el.removeAttribute('aria-current');
  if (url) writeUrl();
}
$('#player-close').addEventListener('click', () => closePlayer());
$('#player-delete').addEventListener('click', () => { if (current) askDelete(current.rec); });

function showOverlay({ kind, title, text, download }) {
  const overlay = $('#player-overlay');
  overlay.dataset.kind = kind;
  show($('#icon-audio'), kind === 'audio');
  show($('#icon-problem'), kind === 'problem');
  $('#player-overlay-title').textContent = title;
  $('#player-overlay-text').textContent = text;
  const a = $('#player-overlay-download');
  show(a, Boolean(download));
  if (download) { a.href = download; a.setAttribute('download', ''); }
  show(overlay, true);
}

function hideOverlay() {
  show($('#player-overlay'), false);
}

video.addEventListener('error', async () => {
  if (!current || !video.getAttribute('src')) return;
  const rec = current.rec;
  const code = video.error?.code;
  // Ask the server what it thinks of the file before blaming the browser.
  let status;
  try {
    status = (await fetch(downloadUrl(rec.id), { method: 'HEAD', cache: 'no-store' })).status;
  } catch {
    status = 0;
  }
  if (current?.rec.id !== rec.id) return;
  if (status === 404) {
    showOverlay({ kind: 'problem', title: 'This recording is gone', text: 'It no longer exists on the server; it may have been deleted.' });
    refresh();
  } else if (status === 0) {
    showOverlay({ kind: 'problem', title: 'Cannot reach the server', text: 'The recording could not be loaded. Check the connection and pick it again.' });
  } else if (status >= 400) {
    showOverlay({ kind: 'problem', title: 'The recording could not be loaded', text: `The server answered ${status}.` });
  } else if (code === MediaError.MEDIA_ERR_SRC_NOT_SUPPORTED || code === MediaError.MEDIA_ERR_DECODE) {
    const media = [rec.video && codecName(rec.video.codec), rec.audio && codecName(rec.audio.codec)].filter(Boolean).join(' and ');
    const cannot = video.canPlayType(mimeOf(rec)) === ''
      ? `This browser cannot play ${media || 'this media'} in ${containerName(rec)} files.`
      : 'This browser could not play this recording.';
    showOverlay({
      kind: 'problem',
      title: 'Cannot play in this browser',
      text: `${cannot} Download it and open it in a player such as VLC or mpv.`,
      download: downloadUrl(rec.id),
    });
  } else {
    showOverlay({ kind: 'problem', title: 'The recording stopped loading', text: 'The connection was interrupted. Pick it again to retry.' });
  }
});

// ---------- MP4 ----------
// H.264, AV1 and audio-only recordings: an MP4 copy the server makes on the first
// request (seconds). Its link first asks for one byte, which makes the copy: the
// wait shows on the link and a refusal is told in words; then the download starts.
// VP8 and VP9 recordings: an export job encodes the video to H.264, started,
// followed every second and cancelled from here; once done, its MP4 downloads.

const MP4_AUDIO = 'aac'; // plays in every player and editor, unlike Opus in MP4
const EXPORT_POLL_MS = 1000;
const exportsOf = new Map(); // recording id → its export's status (null: none), once asked
const following = new Set(); // ids whose export is followed
const mp4Made = new Set(); // ids whose MP4 copy exists: their link downloads at once
const cancelling = new Set(); // ids whose export was cancelled and has not stopped yet
const finished = new Set(); // ids whose export was seen to finish here: their line says so

const mp4Url = (id) => addQuery(addQuery(downloadUrl(id), 'format', 'mp4'), 'audio', MP4_AUDIO);
const exportsUrl = (id) => `${apiUrl(id)}/exports`;
const needsExport = (rec) => Boolean(rec.video) && !['h264', 'av1'].includes(rec.video.codec);
const exporting = (st) => st?.state === 'queued' || st?.state === 'running';

/** The line under a row (or above the player's buttons) following an export. */
function exportLine(className) {
  return h('div', { className: `mp4-export ${className}`, hidden: true },
    h('progress', { max: 100, 'aria-label': 'MP4 export' }),
    h('span', { className: 'mp4-export-text' }),
    h('button', { className: 'link mp4-cancel', type: 'button' }, 'Cancel'));
}

/** What the MP4 action of `rec` is now. */
function mp4Kind(rec) {
  if (rec.state === 'recording') return 'wait';
  if (!needsExport(rec)) return 'copy';
  const st = exportsOf.get(rec.id);
  if (st === undefined) loadExport(rec.id); // not asked yet: shown as none until the answer
  return st?.state === 'done' ? 'done' : exporting(st) ? 'busy' : 'export';
}

/** Fills an MP4 action `slot` and its export `line` for `rec` (`big`: the player's buttons). */
function fillMp4(rec, slot, line, { big = false } = {}) {
  const kind = mp4Kind(rec);
  const key = `${kind}:${rec.id}`;
  if (slot.dataset.key !== key) { // unchanged: keep the element (and focus)
    slot.dataset.key = key;
    slot.replaceChildren(mp4Action(rec, kind, big));
  }
  const st = exportsOf.get(rec.id);
  const failed = st?.state === 'failed' && kind === 'export';
  const ready = kind === 'done' && finished.has(rec.id);
  show(line, kind === 'busy' || failed || ready);
  line.classList.toggle('bad', failed);
  const bar = line.querySelector('progress');
  const cancel = line.querySelector('.mp4-cancel');
  show(bar, kind === 'busy' || ready);
  show(cancel, kind === 'busy');
  cancel.disabled = cancelling.has(rec.id);
  cancel.textContent = cancel.disabled ? 'Cancelling…' : 'Cancel';
  cancel.onclick = () => cancelExport(rec.id);
  if (st?.state === 'running' || ready) bar.value = st.percent;
  else bar.removeAttribute('value'); // waiting: no figure yet
  const left = st?.eta_secs != null ? ` · about ${formatDuration(Math.ceil(st.eta_secs))} left` : '';
  line.querySelector('.mp4-export-text').textContent = failed
    ? `The MP4 export failed: ${st.error || 'the encoder stopped.'}`
    : ready ? `The MP4 is ready (${formatBytes(st.size_bytes)}).`
      : st?.state === 'running' ? `Exporting to MP4: ${Math.floor(st.percent)} %${left}`
        : 'Waiting to export to MP4…';
}

function mp4Action(rec, kind, big) {
  const label = `${rec.stream}, ${whenText(rec)}`;
  const className = big ? 'btn' : 'icon-action mp4-action';
  const text = (words) => (big ? [icon(kind === 'export' || kind === 'busy' ? 'film' : 'download'), words] : 'MP4');
  if (kind === 'copy' || kind === 'done') {
    const done = kind === 'done' && exportsOf.get(rec.id).download;
    const href = done ? withToken(done) : mp4Url(rec.id);
    const a = h('a', {
      className, href, download: '',
      title: kind === 'done' ? 'Download the MP4 export (H.264): plays in any player' : 'Download as MP4: plays in any player',
      'aria-label': `Download ${label} as MP4`,
    }, text('MP4'));
    if (kind === 'copy') a.addEventListener('click', (e) => makeMp4(e, rec, a));
    return a;
  }
  const titles = {
    wait: 'The MP4 can be made once the recording ends',
    busy: 'Exporting to MP4…',
    export: 'Export to MP4: the video is encoded to H.264 (takes a while), then it downloads',
  };
  const b = h('button', {
    className, type: 'button', disabled: kind !== 'export', title: titles[kind],
    'aria-label': kind === 'export' ? `Export ${label} to MP4` : `MP4 of ${label}: ${titles[kind]}`,
  }, text(kind === 'wait' ? 'MP4' : 'Export MP4'));
  b.addEventListener('click', () => startExport(rec, b));
  return b;
}

/** Before the first download of a copy: has the server make it (one byte), then downloads it. */
async function makeMp4(e, rec, link) {
  if (mp4Made.has(rec.id)) return;
  e.preventDefault();
  if (link.getAttribute('aria-busy')) return;
  link.setAttribute('aria-busy', 'true');
  const was = link.title;
  link.title = 'Making the MP4…';
  const res = await request(mp4Url(rec.id), { headers: { Range: 'bytes=0-0' } });
  link.removeAttribute('aria-busy');
  link.title = was;
  if (!res.ok) { showError(problem(res.status, res.text, 'make the MP4')); return; }
  mp4Made.add(rec.id);
  link.click();
}

function setExport(id, status) {
  if (exporting(exportsOf.get(id)) && status?.state === 'done') finished.add(id);
  exportsOf.set(id, status);
  if (!exporting(status)) cancelling.delete(id);
  const entry = rows.get(id);
  if (entry) fillMp4(entry.rec, entry.el.querySelector('.rec-mp4'), entry.el.querySelector('.rec-export'));
  if (current?.rec.id === id) fillMp4(current.rec, $('#player-mp4'), $('#player-export'), { big: true });
  if (exporting(status)) follow(id);
}

/** Asks once whether a finished VP8/VP9 recording has an export (done or under way). */
async function loadExport(id) {
  exportsOf.set(id, null);
  const res = await request(exportsUrl(id));
  if (exportsOf.get(id) !== null || following.has(id)) return; // started from here meanwhile
  if (res.ok && Array.isArray(res.body)) setExport(id, res.body.find((x) => x.audio === MP4_AUDIO) ?? null);
  else exportsOf.delete(id); // asked again at the next refresh
}

/** Polls an export every second until it ends (done, failed, cancelled, or gone). */
async function follow(id) {
  if (following.has(id)) return;
  following.add(id);
  try {
    while (exporting(exportsOf.get(id))) {
      await new Promise((r) => setTimeout(r, EXPORT_POLL_MS));
      const res = await request(exportsUrl(id));
      if (res.ok && Array.isArray(res.body)) setExport(id, res.body.find((x) => x.audio === MP4_AUDIO) ?? null);
      else if (res.status === 404) setExport(id, null);
    }
  } finally {
    following.delete(id);
  }
}

async function startExport(rec, button) {
  button.disabled = true;
  const res = await request(`${exportsUrl(rec.id)}?audio=${MP4_AUDIO}`, { method: 'POST' });
  button.disabled = false;
  if (res.ok && res.body?.state) {
    show($('#error'), false);
    setExport(rec.id, res.body);
  } else {
    showError(problem(res.status, res.text, 'export it to MP4'));
  }
}

/** Cancels an export; following it tells when it has stopped (an encoder stops at its next frame). */
async function cancelExport(id) {
  cancelling.add(id);
  setExport(id, exportsOf.get(id));
  const res = await request(`${exportsUrl(id)}/${MP4_AUDIO}`, { method: 'DELETE' });
  if (!res.ok && res.status !== 404) {
    cancelling.delete(id);
    setExport(id, exportsOf.get(id));
    showError(problem(res.status, res.text, 'cancel the export'));
  }
}

// ---------- delete ----------

let pendingDelete = null;

function askDelete(rec) {
  pendingDelete = rec;
  dialog.returnValue = '';
  $('#confirm-text').textContent = `${rec.stream} · ${formatDateTime(rec.started_at)} · ${formatDuration(rec.duration_secs)} · ${formatBytes(rec.size_bytes)}`;
  dialog.showModal();
}

dialog.addEventListener('close', () => {
  const rec = pendingDelete;
  pendingDelete = null;
  if (rec && dialog.returnValue === 'delete') remove(rec);
});

async function remove(rec) {
  const entry = rows.get(rec.id);
  entry?.el.classList.add('removing');
  const res = await request(apiUrl(rec.id), { method: 'DELETE' });
  if (res.ok || res.status === 404) {
    show($('#error'), false);
    if (current?.rec.id === rec.id) closePlayer();
    const gone = rows.get(rec.id);
    if (gone) { gone.el.remove(); rows.delete(rec.id); }
    view.items = view.items.filter((r) => r.id !== rec.id);
    view.total = Math.max(0, view.total - 1);
    render();
    await refresh();
    loadNames({ force: true });
  } else {
    entry?.el.classList.remove('removing');
    showError(problem(res.status, res.text, 'delete the recording'));
  }
}

// ---------- start ----------

const wanted = new URLSearchParams(location.search).get('play');
filter.value = view.stream;
refresh().then(async () => {
  if (!wanted) return;
  const fromPage = rows.get(wanted);
  if (fromPage) { open(fromPage.rec, { scroll: true }); return; }
  const res = await request(apiUrl(wanted));
  if (res.ok && res.body?.id) open(res.body, { scroll: true });
  else {
    showError(problem(res.status, res.text, 'play the recording'));
    writeUrl();
  }
});

// For tests and the console.
window.castgate = { view, get current() { return current; }, video, refresh };
