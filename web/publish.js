// Publish page: pick a source, preview it, and publish it over WHIP with whip.js.
import { WhipClient, sendableVideoCodecs } from './whip.js';
import { $, h, show, renderIcons, markNav, explain, streamNameProblem, copyText, formatBitrate, codecName, senderFigures, RateMeter } from './app.js';

renderIcons();
markNav();

const SETTINGS_KEY = 'castgate.publish';
const TOKEN_KEY = 'castgate.token';

const ui = {
  preview: $('#preview'),
  overlay: $('#preview-overlay'),
  overlaySpinner: $('#preview-spinner'),
  overlayIcon: $('#preview-icon'),
  overlayTitle: $('#preview-title'),
  overlayText: $('#preview-text'),
  overlayRetry: $('#preview-retry'),
  pill: $('#status-pill'),
  statusLine: $('#status-line'),
  meterWrap: $('#meter-wrap'),
  meter: $('#meter'),
  form: $('#form'),
  error: $('#error'),
  srcCamera: $('#src-camera'),
  srcScreen: $('#src-screen'),
  cameraField: $('#camera-field'),
  camera: $('#camera'),
  mic: $('#mic'),
  micHint: $('#mic-hint'),
  resolution: $('#resolution'),
  fps: $('#fps'),
  codec: $('#codec'),
  bitrate: $('#bitrate'),
  simulcast: $('#simulcast'),
  name: $('#name'),
  nameHint: $('#name-hint'),
  token: $('#token'),
  start: $('#start'),
  stop: $('#stop'),
  watchUrl: $('#watch-url'),
  openWatch: $('#open-watch'),
  figures: Object.fromEntries([...document.querySelectorAll('[data-figure]')].map((el) => [el.dataset.figure, el])),
};

/** What is being captured and sent. */
const media = {
  source: 'camera', // or 'screen'
  video: null, // the video track in use
  audio: null, // the audio track in use (mic, screen audio, or a mix of both)
  cameraStream: null,
  micTrack: null,
  screenStream: null,
  mixer: null, // { nodes, track } when screen audio and mic are mixed
};

let whip = null; // the WhipClient while publishing
let audioCtx = null;
let meterSource = null;
let statsTimer = null;
const NAME_HINT = ui.nameHint.textContent;

// ---------------------------------------------------------------- settings

function loadSettings() {
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? '{}') ?? {}; } catch { /* fresh start */ }
  const fromUrl = new URLSearchParams(location.search).get('name');
  const setIf = (select, value) => {
    if (value != null && [...select.options].some((o) => o.value === String(value))) select.value = String(value);
  };
  setIf(ui.resolution, saved.resolution);
  setIf(ui.fps, saved.fps);
  setIf(ui.codec, saved.codec);
  setIf(ui.bitrate, saved.bitrate);
  ui.simulcast.checked = saved.simulcast === true || new URLSearchParams(location.search).get('simulcast') === '1';
  ui.name.value = fromUrl || saved.name || `stream-${Math.random().toString(36).slice(2, 6)}`;
  try { ui.token.value = sessionStorage.getItem(TOKEN_KEY) ?? ''; } catch { /* storage blocked */ }
  return saved;
}

function saveSettings() {
  const settings = {
    camera: ui.camera.value,
    mic: ui.mic.value,
    resolution: ui.resolution.value,
    fps: ui.fps.value,
    codec: ui.codec.value,
    bitrate: ui.bitrate.value,
    simulcast: ui.simulcast.checked,
    name: ui.name.value.trim(),
  };
  try {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
    sessionStorage.setItem(TOKEN_KEY, ui.token.value);
  } catch { /* storage blocked: settings are not kept */ }
}

// ---------------------------------------------------------------- messages

function showError(error, role = 'publish') {
  const { title, detail } = error?.title ? error : explain(error, role);
  $('#error-title').textContent = title;
  $('#error-detail').textContent = detail ? ` ${detail}` : '';
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
}

function overlay(kind, title, text, retryLabel) {
  show(ui.overlay, kind !== 'none');
  show(ui.overlaySpinner, kind === 'busy');
  show(ui.overlayIcon, kind === 'idle');
  ui.overlayTitle.textContent = title ?? '';
  ui.overlayText.textContent = text ?? '';
  ui.overlayRetry.hidden = !retryLabel;
  if (retryLabel) ui.overlayRetry.textContent = retryLabel;
}

// ---------------------------------------------------------------- devices

function videoConstraints() {
  const height = Number(ui.resolution.value);
  const frameRate = Number(ui.fps.value);
  const c = { height: { ideal: height }, width: { ideal: Math.round((height * 16) / 9) }, frameRate: { ideal: frameRate } };
  if (ui.camera.value) c.deviceId = { exact: ui.camera.value };
  return c;
}

function audioConstraints() {
  const c = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (ui.mic.value) c.deviceId = { exact: ui.mic.value };
  return c;
}

async function refreshDevices(saved = {}) {
  let devices = [];
  try { devices = await navigator.mediaDevices.enumerateDevices(); } catch { return; }
  const fill = (select, kind, fallback, extra) => {
    const current = select.value || saved[select.id] || '';
    const found = devices.filter((d) => d.kind === kind && d.deviceId && d.deviceId !== 'default');
    select.replaceChildren(
      h('option', { value: '' }, fallback),
      ...found.map((d, i) => h('option', { value: d.deviceId }, d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`)),
      ...(extra ? [extra] : []),
    );
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  };
  fill(ui.camera, 'videoinput', 'Default camera');
  fill(ui.mic, 'audioinput', 'Default microphone', h('option', { value: 'none' }, 'No microphone'));
}

function stopTrack(track) {
  if (track && track.readyState !== 'ended') track.stop();
}

function currentTracks() {
  return [media.video, media.audio].filter(Boolean);
}

function showPreview() {
  const stream = media.source === 'screen' ? media.screenStream : media.cameraStream;
  if (ui.preview.srcObject !== stream) ui.preview.srcObject = stream;
  ui.preview.classList.toggle('mirror', media.source === 'camera');
  if (media.video) overlay('none');
}

/** Uses `track` for `kind` from now on: preview, meter, and the live session. */
async function useTrack(kind, track) {
  const old = media[kind];
  media[kind] = track;
  if (kind === 'audio') watchLevel(track);
  if (whip && old !== track) {
    try {
      await whip.replaceTrack(track, kind);
    } catch (e) {
      showError({ title: `The ${kind === 'audio' ? 'sound' : 'picture'} could not be switched`, detail: e.message });
    }
  }
}

async function openCamera() {
  overlay('busy', 'Starting the camera…', 'Your browser may ask for permission to use the camera and microphone.');
  const wantMic = ui.mic.value !== 'none';
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: videoConstraints(), audio: wantMic ? audioConstraints() : false });
  } catch (e) {
    if (!wantMic || e.name === 'NotAllowedError') throw e;
    // Perhaps there is a camera but no (usable) microphone: carry on without sound.
    stream = await navigator.mediaDevices.getUserMedia({ video: videoConstraints() });
    ui.micHint.textContent = 'No microphone could be opened; the stream will have no sound.';
    ui.micHint.hidden = false;
  }
  const old = media.cameraStream;
  media.cameraStream = new MediaStream(stream.getVideoTracks());
  const mic = stream.getAudioTracks()[0] ?? null;
  if (old) old.getTracks().forEach(stopTrack);
  if (media.micTrack && media.micTrack !== mic) stopTrack(media.micTrack);
  media.micTrack = mic;
  if (media.source === 'camera') {
    await useTrack('video', media.cameraStream.getVideoTracks()[0] ?? null);
    await useTrack('audio', mic);
  }
  showPreview();
}

async function startCameraPreview() {
  try {
    clearError();
    await openCamera();
  } catch (e) {
    const { title, detail } = explain(e, 'publish');
    overlay('idle', title, detail, 'Turn on camera');
  }
}

async function switchCamera() {
  if (media.source !== 'camera') return;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: videoConstraints() });
    const track = stream.getVideoTracks()[0];
    const old = media.cameraStream;
    media.cameraStream = new MediaStream([track]);
    await useTrack('video', track);
    showPreview();
    old?.getTracks().forEach(stopTrack);
  } catch (e) {
    showError(e);
  }
}

async function switchMic() {
  ui.micHint.hidden = true;
  let track = null;
  try {
    if (ui.mic.value !== 'none') {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: audioConstraints() });
      track = stream.getAudioTracks()[0];
    }
  } catch (e) {
    showError(e);
    return;
  }
  const old = media.micTrack;
  media.micTrack = track;
  await applyAudio();
  if (old && old !== track) stopTrack(old);
}

/** The audio to send: the mic, the shared screen's sound, or both mixed. */
async function applyAudio() {
  const screenAudio = media.source === 'screen' ? media.screenStream?.getAudioTracks()[0] ?? null : null;
  media.mixer?.nodes.forEach((n) => n.disconnect());
  const oldMix = media.mixer?.track;
  media.mixer = null;
  let track = media.source === 'screen' ? screenAudio ?? media.micTrack : media.micTrack;
  if (screenAudio && media.micTrack) {
    try {
      const ctx = audioContext();
      const dest = ctx.createMediaStreamDestination();
      const a = ctx.createMediaStreamSource(new MediaStream([screenAudio]));
      const b = ctx.createMediaStreamSource(new MediaStream([media.micTrack]));
      a.connect(dest);
      b.connect(dest);
      track = dest.stream.getAudioTracks()[0];
      media.mixer = { nodes: [a, b], track };
    } catch { track = screenAudio; }
  }
  await useTrack('audio', track);
  if (oldMix && oldMix !== track) stopTrack(oldMix);
  if (media.source === 'screen') {
    ui.micHint.hidden = false;
    ui.micHint.textContent = screenAudio
      ? (media.micTrack ? 'Sending the shared sound mixed with the microphone.' : 'Sending the sound of the shared screen or tab.')
      : 'The shared screen has no sound of its own; sending the microphone.';
  }
}

async function shareScreen() {
  if (!navigator.mediaDevices.getDisplayMedia) {
    showError({ title: 'Screen sharing is not available', detail: 'This browser cannot share the screen from a web page.' });
    return;
  }
  const height = Number(ui.resolution.value);
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({
      video: { frameRate: { ideal: Number(ui.fps.value) }, height: { max: height } },
      audio: true,
    });
  } catch (e) {
    if (e.name !== 'NotAllowedError' && e.name !== 'AbortError') showError(e);
    return; // cancelled by the person: stay on the camera
  }
  audioContext(); // a click started this: the mixer may run
  const video = stream.getVideoTracks()[0];
  if (video && 'contentHint' in video) video.contentHint = 'detail';
  video?.addEventListener('ended', () => { if (media.screenStream === stream) selectSource('camera'); });
  const old = media.screenStream;
  media.screenStream = stream;
  media.source = 'screen';
  markSource();
  await useTrack('video', video);
  await applyAudio();
  showPreview();
  old?.getTracks().forEach(stopTrack);
}

async function selectSource(source) {
  clearError();
  if (source === 'screen') {
    await shareScreen();
    return;
  }
  media.source = 'camera';
  markSource();
  media.screenStream?.getTracks().forEach(stopTrack);
  media.screenStream = null;
  ui.micHint.hidden = true;
  if (!media.cameraStream || media.cameraStream.getVideoTracks()[0]?.readyState !== 'live') {
    await startCameraPreview();
  } else {
    await useTrack('video', media.cameraStream.getVideoTracks()[0]);
    await applyAudio();
    showPreview();
  }
}

function markSource() {
  ui.srcCamera.setAttribute('aria-pressed', String(media.source === 'camera'));
  ui.srcScreen.setAttribute('aria-pressed', String(media.source === 'screen'));
  ui.cameraField.hidden = media.source !== 'camera';
}

async function applyVideoSettings() {
  const track = media.video;
  if (!track) return;
  const height = Number(ui.resolution.value);
  const frameRate = Number(ui.fps.value);
  const constraints = media.source === 'screen'
    ? { height: { max: height }, frameRate: { ideal: frameRate } }
    : { height: { ideal: height }, width: { ideal: Math.round((height * 16) / 9) }, frameRate: { ideal: frameRate } };
  try {
    await track.applyConstraints(constraints);
  } catch {
    if (media.source === 'camera') await switchCamera();
  }
}

// ---------------------------------------------------------------- level meter

function audioContext() {
  if (!audioCtx) {
    const Ctx = window.AudioContext ?? window.webkitAudioContext;
    if (!Ctx) return null;
    audioCtx = new Ctx();
  }
  if (audioCtx.state === 'suspended') audioCtx.resume().catch(() => {});
  return audioCtx;
}

function watchLevel(track) {
  meterSource?.disconnect();
  meterSource = null;
  ui.meterWrap.hidden = !track;
  if (!track) return;
  const ctx = audioContext();
  if (!ctx) return;
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  meterSource = ctx.createMediaStreamSource(new MediaStream([track]));
  meterSource.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const mine = meterSource;
  const draw = () => {
    if (meterSource !== mine) return;
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const db = 20 * Math.log10(Math.sqrt(sum / samples.length) + 1e-9);
    const level = Math.min(1, Math.max(0, (db + 60) / 60));
    ui.meter.style.transform = `scaleX(${level.toFixed(3)})`;
    requestAnimationFrame(draw);
  };
  requestAnimationFrame(draw);
}

document.addEventListener('pointerdown', () => { if (audioCtx?.state === 'suspended') audioCtx.resume().catch(() => {}); });

// ---------------------------------------------------------------- publishing

function watchLink() {
  const name = ui.name.value.trim();
  return `${location.origin}/watch/${encodeURIComponent(name || 'my-stream')}`;
}

function updateWatchLink() {
  ui.watchUrl.value = watchLink();
  ui.openWatch.href = watchLink();
  const problem = ui.name.value.trim() ? streamNameProblem(ui.name.value.trim()) : null;
  ui.name.setAttribute('aria-invalid', String(Boolean(problem)));
  ui.nameHint.textContent = problem ?? NAME_HINT;
  ui.nameHint.classList.toggle('error-text', Boolean(problem));
}

function setLive(live) {
  ui.start.hidden = live;
  ui.stop.hidden = !live;
  for (const el of [ui.codec, ui.simulcast, ui.name, ui.token]) el.disabled = live;
  document.body.classList.toggle('is-live', live);
}

const STATE_TEXT = {
  new: ['Offline', ''],
  connecting: ['Connecting', 'busy'],
  connected: ['Live', 'live'],
  reconnecting: ['Reconnecting', 'busy'],
  waiting: ['Waiting', 'busy'],
  failed: ['Failed', 'bad'],
  closed: ['Offline', ''],
};

function renderState() {
  const state = whip?.state ?? 'closed';
  const [label, cls] = STATE_TEXT[state] ?? [state, ''];
  ui.pill.textContent = label;
  ui.pill.className = `pill ${cls}`.trim();
  ui.pill.dataset.state = state;
  ui.figures.state.textContent = label;
  let line = 'Not streaming.';
  if (state === 'connecting') line = 'Connecting to castgate…';
  else if (state === 'connected') line = 'You are live. Share the watch link so people can see you.';
  else if (state === 'reconnecting') {
    const wait = whip.retryAt ? Math.max(0, Math.ceil((whip.retryAt - Date.now()) / 1000)) : 0;
    const why = whip.error ? ` Last attempt: ${explain(whip.error, 'publish').detail}` : '';
    line = `The connection was lost. Reconnecting${wait ? ` (next try in ${wait} s)` : '…'}${why}`;
  }
  ui.statusLine.textContent = line;
  ui.statusLine.dataset.state = state;
}

async function start(event) {
  event?.preventDefault();
  clearError();
  const name = ui.name.value.trim();
  const problem = streamNameProblem(name);
  if (problem) {
    showError({ title: 'Check the stream name', detail: problem });
    ui.name.focus();
    return;
  }
  if (!media.video && !media.audio) {
    showError({ title: 'Nothing to send', detail: 'Turn on the camera or share the screen first.' });
    return;
  }
  saveSettings();
  let client;
  try {
    client = new WhipClient(`/whip/${encodeURIComponent(name)}`, {
      token: ui.token.value.trim() || null,
      videoCodec: ui.codec.value || null,
      maxBitrate: Number(ui.bitrate.value) || null,
      simulcast: ui.simulcast.checked,
      gatherMs: 0, // castgate is ICE-lite: candidates can all follow over PATCH
    });
  } catch (e) {
    showError({ title: 'Check the token', detail: `${e.message.charAt(0).toUpperCase()}${e.message.slice(1)}.` });
    return;
  }
  whip = client;
  client.addEventListener('statechange', () => {
    if (whip !== client) return;
    renderState();
    if (client.state === 'failed') {
      showError(client.error);
      finish();
    }
  });
  setLive(true);
  renderState();
  try {
    await client.publish(currentTracks());
  } catch (e) {
    if (whip === client) {
      showError(e);
      finish();
    }
    return;
  }
  startStats(client);
}

function finish() {
  clearInterval(statsTimer);
  statsTimer = null;
  setLive(false);
  whip = null;
  renderState();
  for (const [key, el] of Object.entries(ui.figures)) if (key !== 'state') el.textContent = '–';
}

async function stop() {
  const client = whip;
  ui.stop.disabled = true;
  try {
    await client?.stop();
  } finally {
    ui.stop.disabled = false;
    finish();
    ui.statusLine.textContent = 'Stopped. Viewers see that the stream has ended.';
  }
}

function startStats(client) {
  const meter = new RateMeter();
  clearInterval(statsTimer);
  statsTimer = setInterval(async () => {
    if (whip !== client) return;
    if (client.state === 'reconnecting') renderState();
    if (!client.pc) return;
    try {
      const f = await senderFigures(client.pc, meter);
      ui.figures.bitrate.textContent = formatBitrate(f.bitrate);
      ui.figures.fps.textContent = f.fps != null ? `${Math.round(f.fps)} fps` : '–';
      ui.figures.resolution.textContent = f.width ? `${f.width}×${f.height}` : '–';
      ui.figures.codec.textContent = f.codec ? codecName(f.codec) : '–';
      ui.figures.loss.textContent = f.lost != null ? `${f.lost} (${(f.lossPct ?? 0).toFixed(1)} %)` : '–';
      ui.figures.rtt.textContent = f.rtt != null ? `${Math.round(f.rtt)} ms` : '–';
      ui.figures.limit.textContent = { none: 'Nothing', cpu: 'CPU', bandwidth: 'Bandwidth', other: 'Other' }[f.limit] ?? '–';
    } catch { /* the connection closed between two samples */ }
  }, 1000);
}

// ---------------------------------------------------------------- wiring

function fillCodecs() {
  const codecs = sendableVideoCodecs();
  ui.codec.replaceChildren(...(codecs.length
    ? codecs.map((c) => h('option', { value: c }, codecName(c)))
    : [h('option', { value: '' }, 'Browser default')]));
}

function init() {
  fillCodecs();
  const saved = loadSettings();
  updateWatchLink();
  renderState();

  ui.form.addEventListener('submit', start);
  ui.stop.addEventListener('click', stop);
  ui.srcCamera.addEventListener('click', () => selectSource('camera'));
  ui.srcScreen.addEventListener('click', () => selectSource('screen'));
  ui.overlayRetry.addEventListener('click', () => startCameraPreview());
  ui.camera.addEventListener('change', () => { saveSettings(); switchCamera(); });
  ui.mic.addEventListener('change', () => { saveSettings(); switchMic(); });
  ui.resolution.addEventListener('change', () => { saveSettings(); applyVideoSettings(); });
  ui.fps.addEventListener('change', () => { saveSettings(); applyVideoSettings(); });
  ui.bitrate.addEventListener('change', () => { saveSettings(); whip?.setMaxBitrate(Number(ui.bitrate.value)).catch(() => {}); });
  ui.codec.addEventListener('change', saveSettings);
  ui.simulcast.addEventListener('change', saveSettings);
  ui.name.addEventListener('input', updateWatchLink);
  $('#copy-watch').addEventListener('click', (e) => copyText(watchLink(), e.currentTarget));
  window.addEventListener('beforeunload', (e) => {
    if (whip && whip.state !== 'failed') { e.preventDefault(); e.returnValue = ''; }
  });

  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    overlay('idle', 'This page needs a secure connection', 'Browsers only allow the camera, microphone and screen on HTTPS pages or on localhost. Open castgate over HTTPS.');
    showError({ title: 'Publishing is not possible here', detail: 'Open this page over HTTPS (or on localhost) to use the camera, microphone or screen.' });
    ui.start.disabled = true;
    ui.srcScreen.disabled = true;
    return;
  }
  if (saved.mic) ui.mic.value = saved.mic === 'none' ? 'none' : '';
  refreshDevices(saved).then(() => startCameraPreview()).then(() => refreshDevices(saved));
  navigator.mediaDevices.addEventListener?.('devicechange', () => refreshDevices());
}

/** For tests and debugging: the current WHIP client. */
window.castgate = { get whip() { return whip; }, media };

init();
