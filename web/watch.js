// Watch page: plays /watch/{stream} over WHEP with whep.js, waits for the
// publisher when nothing is live, and comes back by itself when it returns.
// Where WebRTC cannot work (no RTCPeerConnection, or `?hls` in the address)
// it plays the stream's HLS instead when the gateway makes HLS for it, and
// when a WebRTC session fails it offers HLS.
import { WhepClient } from './whep.js';
import { $, show, icon, renderIcons, explain, formatBitrate, formatDuration, codecName, receiverFigures, RateMeter, MediaClock } from './app.js';

renderIcons();

const TOKEN_KEY = 'castgate.viewToken';
const API_POLL_MS = 2000;
const CONTROLS_IDLE_MS = 3000;
const HLS_POLL_MS = 1000;
const HLS_TYPE = 'application/vnd.apple.mpegurl';

const name = decodeURIComponent(location.pathname.split('/')[2] ?? '');
const ui = {
  title: $('#title'),
  pill: $('#pill'),
  viewers: $('#viewers'),
  frame: $('#frame'),
  video: $('#video'),
  overlay: $('#overlay'),
  spinner: $('#overlay-spinner'),
  icons: { waiting: $('#icon-waiting'), ended: $('#icon-ended'), error: $('#icon-error'), lock: $('#icon-lock') },
  overlayTitle: $('#overlay-title'),
  overlayText: $('#overlay-text'),
  tokenForm: $('#token-form'),
  token: $('#token'),
  retry: $('#retry'),
  useHls: $('#use-hls'),
  play: $('#play'),
  unmute: $('#unmute'),
  controls: $('#controls'),
  mute: $('#mute'),
  fullscreen: $('#fullscreen'),
  quality: $('#quality'),
  figures: Object.fromEntries([...document.querySelectorAll('[data-figure]')].map((el) => [el.dataset.figure, el])),
};

/** What the page knows; window.castgate exposes it for tests and debugging. */
const page = {
  mode: 'webrtc', // or 'hls'
  hls: null, // { playlist, state: 'waiting' | 'loading' | 'error', error } while in HLS mode
  hlsOffer: null, // a live HLS playlist offered after WebRTC failed
  whep: null,
  everPlayed: false, // a picture was shown at least once
  ended: false, // the stream we were playing has ended
  playing: false, // the current session shows pictures
  firstFrameMs: null, // ms from navigation to the first picture
  streamId: null, // id (from the API) of the stream the current session plays
  info: null, // last GET /api/streams/{name}
  layer: ['auto', 'high', 'mid', 'low'].includes(new URLSearchParams(location.search).get('layer'))
    ? new URLSearchParams(location.search).get('layer')
    : 'auto', // the simulcast quality asked for (?layer= on the WHEP URL)
  quality: null, // the layer received now: { name: 'high' | 'mid' | 'low', rid, width, height }
  infoAt: 0,
  timing: { script: Math.round(performance.now()) }, // ms since navigation of a few milestones
};
window.castgate = page;

ui.title.textContent = name || 'Stream';
document.title = `${name || 'Stream'} · castgate`;

// ---------------------------------------------------------------- state → view

function overlay(kind, title, text, extra = {}) {
  show(ui.overlay, kind !== 'none');
  ui.overlay.dataset.state = extra.state ?? kind;
  show(ui.spinner, kind === 'busy');
  for (const [k, el] of Object.entries(ui.icons)) show(el, k === kind);
  ui.overlayTitle.textContent = title ?? '';
  ui.overlayText.textContent = text ?? '';
  show(ui.tokenForm, Boolean(extra.token));
  show(ui.retry, Boolean(extra.retry));
  show(ui.useHls, Boolean(extra.hls));
}

function pill(label, cls, state) {
  ui.pill.textContent = label;
  ui.pill.className = `pill ${cls}`.trim();
  ui.pill.dataset.state = state;
}

function renderHls() {
  show(ui.controls, page.playing);
  renderMute();
  const hls = page.hls;
  if (page.playing) {
    overlay('none');
    pill('Live · HLS', 'live', 'live');
  } else if (hls?.state === 'error') {
    overlay('error', 'HLS cannot play here', hls.error, { retry: true, state: 'failed' });
    pill('Error', 'bad', 'failed');
  } else if (page.ended) {
    overlay('ended', 'The stream has ended', 'It starts again here by itself when the publisher comes back.', { state: 'ended' });
    pill('Ended', '', 'ended');
  } else if (hls?.state === 'waiting') {
    overlay('waiting', `Waiting for HLS of “${name}”`, page.mode === 'hls' && typeof RTCPeerConnection !== 'function'
      ? 'This browser cannot play WebRTC, and the gateway makes no HLS for this stream now. This page starts playing by itself when it does.'
      : 'The gateway makes no HLS for this stream now (an operator can turn it on). This page starts playing by itself when it does.', { state: 'waiting' });
    pill('Waiting', 'busy', 'waiting');
  } else {
    overlay('busy', 'Starting HLS…', 'HLS plays a few seconds behind the live picture.', { state: 'starting' });
    pill('Starting', 'busy', 'starting');
  }
}

function render() {
  if (page.mode === 'hls') {
    renderHls();
    return;
  }
  const whep = page.whep;
  const state = whep?.state ?? 'new';
  show(ui.controls, page.playing);
  renderMute();
  if (state === 'failed') {
    const { title, detail } = explain(whep.error, 'watch');
    const needsToken = whep.error?.status === 401 || whep.error?.status === 403;
    overlay(needsToken ? 'lock' : 'error', title, detail, { token: needsToken, retry: !needsToken, hls: !needsToken && Boolean(page.hlsOffer), state: 'failed' });
    pill(needsToken ? 'Locked' : 'Error', 'bad', 'failed');
    return;
  }
  if (page.ended && state !== 'connected') {
    overlay('ended', 'The stream has ended', 'It starts again here by itself when the publisher comes back.', { state: 'ended' });
    pill('Ended', '', 'ended');
    return;
  }
  switch (state) {
    case 'waiting':
      overlay('waiting', `Waiting for “${name}” to go live`, 'Nothing is live under this name yet. This page starts playing by itself as soon as the stream begins.', { state: 'waiting' });
      pill('Waiting', 'busy', 'waiting');
      break;
    case 'reconnecting':
      overlay('busy', 'Reconnecting…', 'The connection was interrupted. Trying to get it back.', { state: 'reconnecting' });
      pill('Reconnecting', 'busy', 'reconnecting');
      break;
    case 'connected':
      if (page.playing) {
        overlay('none');
        pill('Live', 'live', 'live');
      } else {
        overlay('busy', 'Starting…', '', { state: 'starting' });
        pill('Starting', 'busy', 'starting');
      }
      break;
    default:
      overlay('busy', 'Connecting…', '', { state: 'connecting' });
      pill('Connecting', 'busy', 'connecting');
  }
}

// ---------------------------------------------------------------- playback

function onFirstPicture() {
  if (page.playing) return;
  page.playing = true;
  page.everPlayed = true;
  page.ended = false;
  if (page.firstFrameMs == null) {
    page.firstFrameMs = Math.round(performance.now());
    ui.figures.startup.textContent = `${(page.firstFrameMs / 1000).toFixed(2)} s`;
  }
  render();
}

function watchForPicture(video) {
  if (video.requestVideoFrameCallback) {
    video.requestVideoFrameCallback(() => { if (ui.video.srcObject === page.whep?.stream) onFirstPicture(); });
  }
}

ui.video.addEventListener('playing', () => { if (ui.video.videoWidth > 0) onFirstPicture(); });
ui.video.addEventListener('resize', () => { if (ui.video.videoWidth > 0 && !ui.video.paused) onFirstPicture(); });

async function play() {
  try {
    await ui.video.play();
    show(ui.play, false);
  } catch (e) {
    if (e?.name === 'AbortError') return; // a newer source replaced this one
    if (!ui.video.muted) {
      ui.video.muted = true; // sound needs a click first: play muted
      renderMute();
      return play();
    }
    show(ui.play, true);
  }
}

function attach(stream) {
  page.playing = false;
  ui.video.srcObject = stream;
  watchForPicture(ui.video);
  play();
  render();
}

function detach() {
  page.playing = false;
  ui.video.srcObject = null;
  if (ui.video.getAttribute('src')) {
    ui.video.removeAttribute('src');
    ui.video.load();
  }
  clearFigures();
}

// ---------------------------------------------------------------- HLS

/** The stream's live HLS playlist (with the viewing token), or null. */
async function hlsPlaylist() {
  try {
    const res = await fetch(`/api/streams/${encodeURIComponent(name)}/hls`, { cache: 'no-store' });
    if (!res.ok) return null;
    const hls = await res.json();
    if (hls.state !== 'live' || !hls.playlist) return null;
    const token = currentToken();
    const url = token ? `${hls.playlist}?token=${encodeURIComponent(token)}` : hls.playlist;
    // The playlist appears with the first whole segment.
    const head = await fetch(url, { cache: 'no-store' });
    return head.ok ? url : null;
  } catch {
    return null;
  }
}

/** Leaves WebRTC and plays the stream's HLS, waiting for it when it is not there. */
async function startHls() {
  page.whep?.stop();
  page.whep = null;
  page.mode = 'hls';
  page.hlsOffer = null;
  detach();
  const hls = { playlist: null, state: 'loading', error: null };
  page.hls = hls;
  render();
  if (!ui.video.canPlayType(HLS_TYPE)) {
    hls.state = 'error';
    hls.error = typeof RTCPeerConnection === 'function'
      ? 'This browser plays neither HLS nor (here) WebRTC.'
      : 'This browser can play neither WebRTC nor HLS.';
    render();
    return;
  }
  while (page.hls === hls) {
    const playlist = await hlsPlaylist();
    if (page.hls !== hls) return;
    if (playlist) {
      hls.playlist = playlist;
      hls.state = 'loading';
      page.streamId = page.info?.id ?? null;
      ui.video.src = playlist;
      play();
      render();
      return;
    }
    hls.state = 'waiting';
    render();
    await new Promise((r) => setTimeout(r, HLS_POLL_MS));
  }
}

ui.video.addEventListener('error', () => {
  if (page.mode !== 'hls' || !page.hls || !ui.video.getAttribute('src')) return;
  // The playlist went away (stream ended, HLS stopped): wait for it again.
  page.playing = false;
  startHls();
});
ui.useHls.addEventListener('click', () => startHls());


// ---------------------------------------------------------------- sound, fullscreen, controls

function renderMute() {
  const muted = ui.video.muted;
  show(ui.unmute, muted && page.playing);
  ui.mute.replaceChildren(icon(muted ? 'muted' : 'volume'));
  ui.mute.setAttribute('aria-label', muted ? 'Unmute' : 'Mute');
  ui.mute.title = muted ? 'Unmute (m)' : 'Mute (m)';
}

function toggleMute(force) {
  ui.video.muted = force ?? !ui.video.muted;
  renderMute();
  if (!ui.video.muted) play();
}

function isFullscreen() {
  return Boolean(document.fullscreenElement ?? document.webkitFullscreenElement);
}

async function toggleFullscreen() {
  try {
    if (isFullscreen()) await (document.exitFullscreen ?? document.webkitExitFullscreen).call(document);
    else if (ui.frame.requestFullscreen) await ui.frame.requestFullscreen();
    else if (ui.frame.webkitRequestFullscreen) ui.frame.webkitRequestFullscreen();
    else if (ui.video.webkitEnterFullscreen) ui.video.webkitEnterFullscreen(); // iPhone
  } catch { /* refused by the browser */ }
}

function renderFullscreen() {
  const full = isFullscreen();
  ui.fullscreen.replaceChildren(icon(full ? 'minimize' : 'maximize'));
  ui.fullscreen.setAttribute('aria-label', full ? 'Leave full screen' : 'Full screen');
}

let idleTimer = null;
function wake() {
  ui.frame.classList.remove('idle');
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => { if (page.playing) ui.frame.classList.add('idle'); }, CONTROLS_IDLE_MS);
}

ui.unmute.addEventListener('click', (e) => { e.stopPropagation(); toggleMute(false); });
ui.mute.addEventListener('click', (e) => { e.stopPropagation(); toggleMute(); });
ui.fullscreen.addEventListener('click', (e) => { e.stopPropagation(); toggleFullscreen(); });
ui.play.addEventListener('click', (e) => { e.stopPropagation(); play(); });
ui.video.addEventListener('click', () => { if (ui.video.muted) toggleMute(false); });
ui.video.addEventListener('dblclick', toggleFullscreen);
ui.frame.addEventListener('pointermove', wake);
ui.frame.addEventListener('pointerdown', wake);
document.addEventListener('fullscreenchange', renderFullscreen);
document.addEventListener('webkitfullscreenchange', renderFullscreen);
document.addEventListener('keydown', (e) => {
  if (e.target instanceof HTMLInputElement || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === 'f') toggleFullscreen();
  else if (e.key === 'm') toggleMute();
});

// ---------------------------------------------------------------- figures

const meter = new RateMeter();
const clock = new MediaClock(ui.video);

function clearFigures() {
  for (const [key, el] of Object.entries(ui.figures)) if (key !== 'startup' && key !== 'uptime') el.textContent = '–';
}

async function sampleFigures() {
  if (page.mode === 'hls') {
    const v = ui.video;
    ui.figures.resolution.textContent = v.videoWidth ? `${v.videoWidth}×${v.videoHeight}` : '–';
    ui.figures.codec.textContent = page.playing ? 'H.264 + AAC (HLS)' : '–';
    return;
  }
  const pc = page.whep?.pc;
  if (!pc || page.whep.state !== 'connected') return;
  try {
    const f = await receiverFigures(pc, meter, clock);
    page.figures = f;
    ui.figures.bitrate.textContent = formatBitrate(f.bitrate);
    ui.figures.fps.textContent = f.fps != null ? `${Math.round(f.fps)} fps` : '–';
    ui.figures.resolution.textContent = f.width ? `${f.width}×${f.height}` : '–';
    ui.figures.codec.textContent = [f.codec, f.audioCodec].filter(Boolean).join(' + ') || '–';
    ui.figures.jitter.textContent = f.jitterMs != null ? `${Math.round(f.jitterMs)} ms` : '–';
    ui.figures.lost.textContent = String(f.lost);
    page.quality = receivedLayer(f);
    ui.figures.layer.textContent = page.quality
      ? `${page.quality.name.charAt(0).toUpperCase()}${page.quality.name.slice(1)}${page.layer === 'auto' ? ' (auto)' : ''}`
      : '–';
  } catch { /* closed between two samples */ }
}

/** Which of a simulcast stream's layers (the API lists them smallest first)
 *  the pictures received now are, by their size. */
function receivedLayer(f) {
  const layers = (page.info?.layers ?? []).filter((l) => l.width);
  if (layers.length < 2 || !f.width) return null;
  const names = layers.length === 2 ? ['low', 'high'] : ['low', 'mid', 'high'];
  let best = 0;
  layers.forEach((l, i) => {
    if (Math.abs(l.width - f.width) < Math.abs(layers[best].width - f.width)) best = i;
  });
  const l = layers[best];
  return { name: names[Math.min(best, names.length - 1)], rid: l.rid, width: l.width, height: l.height };
}

/** The quality menu: shown for a simulcast stream only. */
function renderQuality() {
  const simulcast = (page.info?.layers?.length ?? 0) > 1 && page.mode === 'webrtc';
  show(ui.quality, simulcast);
  ui.quality.value = page.layer;
}

function renderInfo() {
  const info = page.info;
  if (!info) {
    show(ui.viewers, false);
    ui.figures.uptime.textContent = '–';
    return;
  }
  const n = info.viewers ?? 0;
  ui.viewers.textContent = n === 1 ? '1 watching' : `${n} watching`;
  show(ui.viewers, true);
  ui.figures.uptime.textContent = formatDuration(info.uptime_secs + (performance.now() - page.infoAt) / 1000);
  renderQuality();
}

// ---------------------------------------------------------------- the stream's life

/** GET /api/streams/{name}: what is live under this name now (null if nothing). */
async function fetchInfo() {
  try {
    const res = await fetch(`/api/streams/${encodeURIComponent(name)}`, { cache: 'no-store' });
    if (res.status === 404) return null;
    if (!res.ok) return undefined; // unknown: keep what we have
    return await res.json();
  } catch {
    return undefined;
  }
}

/** Notices a publisher that left (or was replaced) sooner than the connection would. */
async function checkStream() {
  const info = await fetchInfo();
  if (info === undefined) return;
  page.info = info;
  page.infoAt = performance.now();
  renderInfo();
  if (page.mode === 'hls') {
    if (page.playing && (!info || (page.streamId != null && info.id !== page.streamId))) {
      page.ended = true;
      startHls();
    }
    return;
  }
  const whep = page.whep;
  if (whep?.state === 'failed' && !page.hlsOffer && info) {
    page.hlsOffer = await hlsPlaylist();
    if (page.hlsOffer) render();
  }
  if (!whep || whep.state !== 'connected') return;
  if (page.streamId == null && info) {
    page.streamId = info.id;
  } else if (!info || info.id !== page.streamId) {
    endedNow();
  }
}

function endedNow() {
  page.ended = page.everPlayed;
  page.streamId = null;
  detach();
  render();
  page.whep?.reconnect();
}

function startWatching(token) {
  page.whep?.stop();
  page.mode = 'webrtc';
  page.hls = null;
  page.hlsOffer = null;
  if (ui.video.getAttribute('src')) detach();
  // castgate answers as an ICE-lite agent: it needs none of our candidates up
  // front, so the offer goes out at once and candidates follow over PATCH.
  let whep;
  try {
    const layer = page.layer === 'auto' ? '' : `?layer=${page.layer}`;
    whep = new WhepClient(`/whep/${encodeURIComponent(name)}${layer}`, { token: token || null, gatherMs: 0 });
  } catch (e) {
    page.whep = null;
    overlay('lock', 'Check the token', e.message.charAt(0).toUpperCase() + e.message.slice(1) + '.', { token: true, state: 'failed' });
    return;
  }
  page.whep = whep;
  page.streamId = null;
  whep.addEventListener('stream', () => {
    if (page.whep !== whep) return;
    page.timing.answer ??= Math.round(performance.now());
    attach(whep.stream);
  });
  whep.addEventListener('statechange', () => {
    if (page.whep !== whep) return;
    if (whep.state === 'connected') {
      page.timing.connected ??= Math.round(performance.now());
      page.streamId = null;
      checkStream();
    } else if (whep.state === 'waiting' || whep.state === 'failed') {
      if (page.playing || ui.video.srcObject) {
        page.ended = page.everPlayed;
        detach();
      }
    }
    render();
  });
  whep.view().catch(() => { /* shown through the state */ });
  render();
}

ui.tokenForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const token = ui.token.value.trim();
  try { sessionStorage.setItem(TOKEN_KEY, token); } catch { /* not kept */ }
  startWatching(token);
});
ui.quality.addEventListener('change', () => {
  page.layer = ui.quality.value;
  // A new session on the layer asked for (the picture stays until it plays).
  startWatching(currentToken());
});
ui.retry.addEventListener('click', () => (page.mode === 'hls' ? startHls() : startWatching(currentToken())));

function currentToken() {
  const fromUrl = new URLSearchParams(location.search).get('token');
  if (fromUrl) return fromUrl;
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}

renderMute();
renderFullscreen();
if (typeof RTCPeerConnection !== 'function' || new URLSearchParams(location.search).has('hls')) startHls();
else startWatching(currentToken());
setInterval(sampleFigures, 1000);
setInterval(checkStream, API_POLL_MS);
setInterval(renderInfo, 1000);
checkStream();
