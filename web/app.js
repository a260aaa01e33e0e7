// app.js — small helpers shared by castgate's own pages (home, publish, watch, recordings).
// The reusable WHIP/WHEP clients are whip.js and whep.js; they do not need this file.

/** First element matching `selector`. */
export const $ = (selector, root = document) => root.querySelector(selector);

/** Builds an element: `h('a', { href: '/', className: 'btn' }, 'text', child)`. Strings become text. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else if (key === 'className') el.className = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }
  return el;
}

const ICONS = {
  alert: '<circle cx="12" cy="12" r="9"/><path d="M12 7.5v5M12 16.2h.01"/>',
  broadcast: '<circle cx="12" cy="12" r="2"/><path d="M16.24 7.76a6 6 0 0 1 0 8.49M7.76 16.24a6 6 0 0 1 0-8.49M19.07 4.93a10 10 0 0 1 0 14.14M4.93 19.07a10 10 0 0 1 0-14.14"/>',
  ended: '<circle cx="12" cy="12" r="2"/><path d="M16.24 7.76a6 6 0 0 1 1.3 6.5M7.76 16.24a6 6 0 0 1 0-8.49M4.93 19.07a10 10 0 0 1 0-14.14M19.07 4.93a10 10 0 0 1 2.2 10.6M3 3l18 18"/>',
  camera: '<rect x="2.5" y="6" width="13.5" height="12" rx="2.5"/><path d="m21.5 8-5.5 4 5.5 4z"/>',
  check: '<path d="M20 6 9 17l-5-5"/>',
  chevronLeft: '<path d="m15 18-6-6 6-6"/>',
  chevronRight: '<path d="m9 18 6-6-6-6"/>',
  clock: '<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 2"/>',
  close: '<path d="M18 6 6 18M6 6l12 12"/>',
  copy: '<rect x="9" y="9" width="12" height="12" rx="2"/><path d="M5 15H4a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2h9a2 2 0 0 1 2 2v1"/>',
  external: '<path d="M15 3h6v6M10 14 21 3M18 13v6a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2h6"/>',
  download: '<path d="M12 3v12M7 10l5 5 5-5"/><path d="M4 17v2a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-2"/>',
  eye: '<path d="M2 12s3.5-7 10-7 10 7 10 7-3.5 7-10 7S2 12 2 12z"/><circle cx="12" cy="12" r="3"/>',
  lock: '<rect x="4" y="11" width="16" height="10" rx="2"/><path d="M8 11V7a4 4 0 0 1 8 0v4"/>',
  maximize: '<path d="M8 3H5a2 2 0 0 0-2 2v3M21 8V5a2 2 0 0 0-2-2h-3M3 16v3a2 2 0 0 0 2 2h3M16 21h3a2 2 0 0 0 2-2v-3"/>',
  minimize: '<path d="M8 3v3a2 2 0 0 1-2 2H3M21 8h-3a2 2 0 0 1-2-2V3M3 16h3a2 2 0 0 1 2 2v3M16 21v-3a2 2 0 0 1 2-2h3"/>',
  monitor: '<rect x="2" y="3" width="20" height="14" rx="2"/><path d="M8 21h8M12 17v4"/>',
  film: '<rect x="3" y="3" width="18" height="18" rx="2"/><path d="M7 3v18M17 3v18M3 8h4M3 16h4M17 8h4M17 16h4M3 12h18"/>',
  play: '<path d="M7 4.5v15l12.5-7.5z" fill="currentColor"/>',
  record: '<circle cx="12" cy="12" r="9"/><circle cx="12" cy="12" r="4" fill="currentColor"/>',
  refresh: '<path d="M21 12a9 9 0 1 1-2.64-6.36L21 8"/><path d="M21 3v5h-5"/>',
  trash: '<path d="M3 6h18M8 6V4a1 1 0 0 1 1-1h6a1 1 0 0 1 1 1v2M19 6l-1 14a2 2 0 0 1-2 1H8a2 2 0 0 1-2-1L5 6M10 11v6M14 11v6"/>',
  volume: '<path d="M11 5 6 9H2v6h4l5 4z"/><path d="M15.5 8.5a5 5 0 0 1 0 7M19 5a10 10 0 0 1 0 14"/>',
  muted: '<path d="M11 5 6 9H2v6h4l5 4z"/><path d="m22 9-6 6M16 9l6 6"/>',
};

/** A 24×24 stroke icon by name (see ICONS). */
export function icon(name, className = '') {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('fill', 'none');
  svg.setAttribute('stroke', 'currentColor');
  svg.setAttribute('stroke-width', '2');
  svg.setAttribute('stroke-linecap', 'round');
  svg.setAttribute('stroke-linejoin', 'round');
  svg.setAttribute('aria-hidden', 'true');
  if (className) svg.setAttribute('class', className);
  svg.innerHTML = ICONS[name] ?? '';
  return svg;
}

/** Replaces every `<i data-icon="name">` placeholder in the page with its SVG. */
export function renderIcons(root = document) {
  for (const el of root.querySelectorAll('i[data-icon]')) {
    const svg = icon(el.dataset.icon, el.className);
    if (el.id) svg.id = el.id;
    if (el.hasAttribute('hidden')) svg.setAttribute('hidden', '');
    el.replaceWith(svg);
  }
}

/** Shows or hides an element (HTML or SVG) with the `hidden` attribute. */
export function show(el, visible) {
  el?.toggleAttribute('hidden', !visible);
}

/** "2.4 Mbit/s", "850 kbit/s". */
export function formatBitrate(bps) {
  if (bps == null || !Number.isFinite(bps)) return '–';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(bps >= 1e7 ? 0 : 1)} Mbit/s`;
  return `${Math.round(bps / 1e3)} kbit/s`;
}

/** "45 s", "3 min 05 s", "2 h 04 min". */
export function formatDuration(secs) {
  if (secs == null || !Number.isFinite(secs)) return '–';
  const s = Math.max(0, Math.floor(secs));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** "850 B", "12 kB", "4.2 MB", "1.35 GB" (powers of 1000, as file managers show). */
export function formatBytes(bytes) {
  if (bytes == null || !Number.isFinite(bytes) || bytes < 0) return '–';
  if (bytes < 1000) return `${Math.round(bytes)} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = bytes / 1000;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  const digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${v.toFixed(i === 0 ? Math.min(digits, 1) : digits)} ${units[i]}`;
}

/**
 * A wall-clock time (RFC 3339) in the reader's locale and time zone, e.g.
 * "Nov 25, 4:10:43 PM" (the year only when it is not this one, unless `year`).
 */
export function formatDateTime(iso, { seconds = true, year = false } = {}) {
  const t = Date.parse(iso ?? '');
  if (!Number.isFinite(t)) return '–';
  const date = new Date(t);
  return date.toLocaleString(undefined, {
    year: year || date.getFullYear() !== new Date().getFullYear() ? 'numeric' : undefined,
    month: 'short', day: 'numeric',
    hour: 'numeric', minute: '2-digit', second: seconds ? '2-digit' : undefined,
  });
}

/**
 * A recording's media in words: "VP8 · 640×360 · Opus stereo", "Opus mono · audio only"
 * (`channels: false` leaves out mono/stereo).
 */
export function recordingMedia(rec, { channels = true } = {}) {
  const parts = [];
  if (rec?.video) {
    parts.push(codecName(rec.video.codec));
    if (rec.video.width && rec.video.height) parts.push(`${rec.video.width}×${rec.video.height}`);
  }
  if (rec?.audio) {
    const ch = rec.audio.channels;
    const layout = !channels ? '' : ch === 1 ? ' mono' : ch === 2 ? ' stereo' : ch ? ` ${ch} ch` : '';
    parts.push(`${codecName(rec.audio.codec)}${layout}`);
  }
  if (!parts.length) return 'No media yet';
  if (!rec.video) parts.push('audio only');
  return parts.join(' · ');
}

/**
 * Durations of recordings in progress that count on by themselves between the
 * server's figures (which come every few seconds), and never go backwards.
 */
export class RecordingClock {
  constructor() { this.clocks = new Map(); }

  /** Seconds recorded: the server's figure when finished, else a running estimate. */
  seconds(rec) {
    if (rec.state !== 'recording') {
      this.clocks.delete(rec.id);
      return rec.duration_secs;
    }
    const now = performance.now();
    let c = this.clocks.get(rec.id);
    if (!c || c.server !== rec.duration_secs) {
      c = { server: rec.duration_secs, at: now, shown: c?.shown ?? 0 };
      this.clocks.set(rec.id, c);
    }
    // The server's figure lags (it comes every few seconds, and we poll), so
    // the time since the start helps, as long as this machine's clock agrees
    // with the server's: trusted only up to a few seconds past the figure.
    const counted = (c.server ?? 0) + (now - c.at) / 1000;
    const started = Date.parse(rec.started_at ?? '');
    const wall = Number.isFinite(started) ? (Date.now() - started) / 1000 : NaN;
    const secs = wall > counted && wall <= counted + 8 ? wall : counted;
    c.shown = Math.max(c.shown, secs, 0);
    return c.shown;
  }

  /** Forgets the recordings not in `ids`. */
  keep(ids) {
    for (const id of this.clocks.keys()) if (!ids.has(id)) this.clocks.delete(id);
  }
}

/** Label, pill class and explanation of a recording's state. */
export const RECORDING_STATES = {
  recording: { label: 'Recording', pill: 'live', title: 'Being recorded now; it plays and downloads as far as it is written.' },
  finalized: { label: 'Complete', pill: 'ok', title: 'Finished normally: seekable, with its full duration.' },
  repaired: { label: 'Repaired', pill: 'warn', title: 'The gateway stopped without finishing this file; it was repaired when it started again.' },
  failed: { label: 'Failed', pill: 'bad', title: 'Recording stopped because of an error; what was written before it is kept.' },
};

/** Where a finished recording is kept, when object storage is on (`local` shows nothing). */
export const STORAGE_STATES = {
  uploading: { label: 'Uploading', pill: 'busy', title: 'Being copied to object storage now.' },
  stored: { label: 'Stored', pill: 'ok', title: 'In object storage, checked by its SHA-256: every node lists and serves it.' },
  upload_retrying: { label: 'Upload retrying', pill: 'warn', title: 'The last upload failed; it is tried again and the file stays on this node meanwhile.' },
};

/** Human codec names: 'h264' or 'video/H264' → 'H.264'. */
export function codecName(codec) {
  if (!codec) return '–';
  const c = String(codec).replace(/^(video|audio)\//i, '').toLowerCase();
  return { vp8: 'VP8', vp9: 'VP9', h264: 'H.264', av1: 'AV1', opus: 'Opus' }[c] ?? c.toUpperCase();
}

/** The rule the server applies to stream names; returns a sentence when `name` breaks it. */
export function streamNameProblem(name) {
  if (!name) return 'Enter a stream name.';
  if (name.length > 128) return 'A stream name can be at most 128 characters long.';
  if (name.startsWith('.')) return 'A stream name may not start with a dot.';
  const bad = /[^A-Za-z0-9._-]/.exec(name);
  if (bad) return `A stream name may only contain letters, digits, ".", "_" and "-" (not "${bad[0]}").`;
  return null;
}

function sentence(text) {
  const t = String(text ?? '').trim();
  if (!t) return '';
  const s = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

/**
 * Turns an error from whip.js / whep.js (or getUserMedia) into words for people:
 * `{ title, detail }`. `role` is 'publish' or 'watch'.
 */
export function explain(error, role) {
  const status = error?.status;
  const reason = sentence(error?.message);
  if (status === undefined) {
    const name = error?.name;
    if (name === 'NotAllowedError') {
      return { title: 'Access was not allowed', detail: 'The browser or you blocked access to the camera, microphone or screen. Allow it in the site settings and try again.' };
    }
    if (name === 'NotFoundError' || name === 'OverconstrainedError') {
      return { title: 'No such device', detail: 'The chosen camera or microphone is not available. Pick another one.' };
    }
    if (name === 'NotReadableError') {
      return { title: 'The device is busy', detail: 'Another application may be using the camera or microphone. Close it and try again.' };
    }
    return { title: 'Something went wrong', detail: reason || 'An unexpected error happened.' };
  }
  switch (status) {
    case 0:
      return { title: 'Cannot reach the server', detail: `${reason} Check the network connection; castgate may be down.`.trim() };
    case 401:
    case 403:
      return {
        title: role === 'publish' ? 'The server did not accept the token' : 'This stream needs a viewing token',
        detail: reason,
      };
    case 409:
      return role === 'publish'
        ? { title: 'This stream name is taken', detail: `${reason} Pick another name, or wait until the other publisher stops.` }
        : { title: 'The stream is not live', detail: reason };
    case 413:
      return { title: 'The request was too large', detail: reason };
    case 415:
    case 400:
      return { title: 'The server refused the request', detail: reason };
    case 422:
      return { title: 'The server cannot take this media', detail: `${reason} Try another codec.` };
    case 429:
      return { title: 'Too many attempts', detail: `${reason} Wait a moment and try again.` };
    case 503:
      return { title: 'The server is not available', detail: reason || 'It may be restarting. Try again in a moment.' };
    default:
      return { title: `The server answered ${status}`, detail: reason };
  }
}

/** Copies `text` and briefly shows "Copied" on `button`. Works on plain http too. */
export async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    const area = h('textarea', { readOnly: true }, text);
    area.className = 'offscreen';
    document.body.append(area);
    area.select();
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    area.remove();
  }
  if (button) {
    const label = button.querySelector('span');
    if (label) {
      const before = label.textContent;
      label.textContent = ok ? 'Copied' : 'Press Ctrl+C';
      clearTimeout(button._copyTimer);
      button._copyTimer = setTimeout(() => { label.textContent = before; }, 1600);
    }
  }
  return ok;
}

/**
 * The viewing token of this tab: ?token= in the page's address (kept for the
 * tab) or the one another page kept; '' without one. Pictures and downloads
 * carry it as ?token= (an <img> or a link cannot send headers).
 */
export function viewToken() {
  const key = 'castgate.viewToken';
  const fromUrl = new URLSearchParams(location.search).get('token');
  try {
    if (fromUrl) sessionStorage.setItem(key, fromUrl);
    return fromUrl || sessionStorage.getItem(key) || '';
  } catch {
    return fromUrl || '';
  }
}

/** Marks the nav link of the current page. */
export function markNav() {
  for (const a of document.querySelectorAll('.nav a')) {
    const here = a.getAttribute('href') === location.pathname;
    if (here) a.setAttribute('aria-current', 'page');
  }
}

/** Rates from successive getStats() reports: bits per second of a byte counter. */
export class RateMeter {
  constructor() { this.last = new Map(); }

  /** Bits/s of `value` (bytes) for key `id` at `timestamp` (ms), or null on the first sample. */
  rate(id, value, timestamp) {
    const prev = this.last.get(id);
    this.last.set(id, { value, timestamp });
    if (!prev || timestamp <= prev.timestamp || value < prev.value) return null;
    return ((value - prev.value) * 8 * 1000) / (timestamp - prev.timestamp);
  }

  /** Change of `value` since the last call for `id` (null the first time). */
  delta(id, value) {
    const prev = this.last.get(id);
    this.last.set(id, { value, timestamp: 0 });
    return prev ? value - prev.value : null;
  }
}

function codecOf(report, stat) {
  const codec = stat?.codecId && report.get(stat.codecId);
  return codec?.mimeType ? codecName(codec.mimeType) : null;
}

function selectedPair(report) {
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  if (!pair) report.forEach((s) => { if (s.type === 'candidate-pair' && (s.selected || s.nominated) && s.state === 'succeeded') pair = s; });
  return pair;
}

/** Figures of a sending connection (publish page). */
export async function senderFigures(pc, meter) {
  const report = await pc.getStats();
  const out = { bitrate: 0, fps: null, width: null, height: null, codec: null, lost: null, lossPct: null, rtt: null, limit: null };
  let haveRate = false;
  report.forEach((s) => {
    if (s.type === 'outbound-rtp') {
      const r = meter.rate(s.id, s.bytesSent ?? 0, s.timestamp);
      if (r != null) { out.bitrate += r; haveRate = true; }
      // With simulcast there is one per layer: the figures are the largest's.
      if (s.kind === 'video' && (s.frameWidth ?? 0) >= (out.width ?? 0)) {
        out.fps = s.framesPerSecond ?? out.fps;
        out.width = s.frameWidth ?? out.width;
        out.height = s.frameHeight ?? out.height;
      }
      if (s.kind === 'video') {
        out.codec = codecOf(report, s) ?? out.codec;
        out.limit = s.qualityLimitationReason ?? out.limit;
      }
    } else if (s.type === 'remote-inbound-rtp') {
      out.lost = (out.lost ?? 0) + Math.max(0, s.packetsLost ?? 0);
      if (s.fractionLost != null) out.lossPct = Math.max(out.lossPct ?? 0, s.fractionLost * 100);
      if (s.roundTripTime != null) out.rtt = s.roundTripTime * 1000;
    }
  });
  const pair = selectedPair(report);
  if (pair?.currentRoundTripTime != null) out.rtt = pair.currentRoundTripTime * 1000;
  if (!haveRate) out.bitrate = null;
  return out;
}

/**
 * The clock of the pictures a <video> presents (their RTP timestamps for
 * WebRTC, else their media time), so a frame rate is counted in the
 * stream's own time. A viewer that joins mid-stream is sent the frames since
 * the last keyframe at once, to show a picture at once: that catch-up
 * decodes many frames in little wall-clock time (the browser's own
 * `framesPerSecond` reads 170 for a 20 fps stream), but not in little
 * stream time.
 */
export class MediaClock {
  constructor(video) {
    /** Seconds of stream time presented so far (null before the first picture). */
    this.seconds = null;
    /** Whether the browser reports presented pictures (requestVideoFrameCallback). */
    this.supported = typeof video.requestVideoFrameCallback === 'function';
    this.last = null;
    this.samples = new Map();
    if (!this.supported) return;
    const onFrame = (_now, meta) => {
      this.note(meta);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  /** Moves the clock to a presented picture's time. */
  note(meta) {
    const rtp = typeof meta.rtpTimestamp === 'number';
    const at = rtp ? meta.rtpTimestamp : meta.mediaTime;
    const last = this.last;
    this.last = { rtp, at };
    if (last == null || last.rtp !== rtp) {
      this.seconds ??= 0;
      return;
    }
    // 90 kHz RTP time wraps at 2^32; a jump back or of over 10 s is a new
    // source (a reconnect), which starts counting again from here.
    const step = rtp ? ((at - last.at) >>> 0) / 90000 : at - last.at;
    if (step >= 0 && step < 10) this.seconds += step;
  }

  /**
   * Frames per second of stream time for the stats object `id` whose
   * `framesDecoded` is given, since the last call that returned a figure;
   * null until two pictures a quarter of a second apart were presented.
   */
  frameRate(id, framesDecoded) {
    const now = { frames: framesDecoded, seconds: this.seconds };
    const prev = this.samples.get(id);
    if (!prev || prev.seconds == null || now.seconds == null || now.frames < prev.frames) {
      this.samples.set(id, now);
      return null;
    }
    const elapsed = now.seconds - prev.seconds;
    if (elapsed < 0.25) return null; // keep the older sample: too little time to count
    this.samples.set(id, now);
    return (now.frames - prev.frames) / elapsed;
  }
}

/**
 * Figures of a receiving connection (watch page). With a `clock` (a
 * MediaClock of the <video> it plays in), the frame rate is counted in
 * stream time.
 */
export async function receiverFigures(pc, meter, clock = null) {
  const report = await pc.getStats();
  const out = { bitrate: 0, fps: null, width: null, height: null, codec: null, audioCodec: null, jitterMs: null, lost: 0, framesDecoded: 0, audioBytes: 0 };
  let haveRate = false;
  report.forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    const r = meter.rate(s.id, s.bytesReceived ?? 0, s.timestamp);
    if (r != null) { out.bitrate += r; haveRate = true; }
    out.lost += Math.max(0, s.packetsLost ?? 0);
    if (s.kind === 'video') {
      out.fps = clock?.supported ? clock.frameRate(s.id, s.framesDecoded ?? 0) : (s.framesPerSecond ?? out.fps);
      out.width = s.frameWidth ?? out.width;
      out.height = s.frameHeight ?? out.height;
      out.codec = codecOf(report, s) ?? out.codec;
      out.framesDecoded = s.framesDecoded ?? 0;
      const delay = meter.delta(`${s.id}:jbd`, s.jitterBufferDelay ?? 0);
      const emitted = meter.delta(`${s.id}:jbe`, s.jitterBufferEmittedCount ?? 0);
      if (emitted > 0) out.jitterMs = (delay / emitted) * 1000;
      else if (s.jitterBufferEmittedCount > 0) out.jitterMs = (s.jitterBufferDelay / s.jitterBufferEmittedCount) * 1000;
    } else if (s.kind === 'audio') {
      out.audioCodec = codecOf(report, s) ?? out.audioCodec;
      out.audioBytes = s.bytesReceived ?? 0;
    }
  });
  if (!haveRate) out.bitrate = null;
  return out;
}
