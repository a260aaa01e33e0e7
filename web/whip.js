/**
 * whip.js — a small WHIP publishing client (RFC 9725). No dependencies, no
 * build step: copy this one file next to your page and import it.
 *
 *   import { WhipClient } from './whip.js';
 *
 *   const media = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
 *   const whip = new WhipClient('https://gateway.example/whip/my-stream', {
 *     token: 'secret',          // optional: sent as "Authorization: Bearer secret"
 *     videoCodec: 'VP9',        // optional: 'VP8' | 'VP9' | 'H264' | 'AV1'
 *     maxBitrate: 2_500_000,    // optional: video bits per second (the top layer's)
 *     simulcast: true,          // optional: send three layers (full, ½, ¼ size) so each
 *                               // viewer gets the one its connection carries
 *   });
 *   whip.addEventListener('statechange', () => console.log(whip.state, whip.error?.message));
 *   await whip.publish(media);  // resolves once the server accepted the offer
 *   // … later
 *   await whip.stop();          // DELETEs the session
 *
 * What it does for you:
 *  - sends the offer right away and trickles the remaining ICE candidates
 *    with PATCH (If-Match: the session's ETag);
 *  - on a lost connection, restarts ICE over PATCH (If-Match: "*"), and if that
 *    does not bring the connection back, starts a new session (with backoff,
 *    honouring Retry-After);
 *  - DELETEs the session on stop() and when the page goes away (pagehide, with
 *    fetch keepalive);
 *  - turns every refusal into a `WhipError` whose `message` is the server's
 *    reason in words and whose `status` is the HTTP status.
 *
 * States (`whip.state`, announced by a 'statechange' event):
 *   'new' → 'connecting' → 'connected'; 'reconnecting' while it recovers;
 *   'failed' when it gave up (`whip.error` says why); 'closed' after stop().
 */

// ---- shared session core: kept identical in whip.js and whep.js ----
// Duplicated on purpose: each file is copied alone next to someone's page, with
// no import and no build step, so neither may depend on the other.
// tests/browser/modules.test.mjs fails when the two copies differ.

/** A refusal from the server (or the network): `status` is the HTTP status (0 for network
 *  errors), `message` the server's reason in words, `retryAfter` its Retry-After in seconds. */
export class SessionError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.name = 'SessionError';
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

const SDPFRAG = 'application/trickle-ice-sdpfrag';

const DEFAULTS = {
  token: null, // Bearer token for POST, PATCH and DELETE
  iceServers: [], // used from the start; the server's Link headers are added
  gatherMs: 50, // longest wait for local candidates before the POST; later ones are trickled
  connectTimeoutMs: 10000, // no connection this long after the answer → recover
  disconnectGraceMs: 2000, // 'disconnected' this long → recover
  restartTimeoutMs: 5000, // an ICE restart must reconnect within this, else a new session
  maxBackoffMs: 10000, // longest pause between two attempts when the server gives no Retry-After
  closeOnPageHide: true, // DELETE the session when the page goes away
};

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

function retryAfterSecs(value) {
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, secs);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

async function errorFrom(res) {
  let text = '';
  try { text = (await res.text()).trim(); } catch { /* no body */ }
  const reason = text && text.length < 500 && !text.startsWith('<') ? text : `${res.status} ${res.statusText}`.trim();
  return new SessionError(res.status, reason, retryAfterSecs(res.headers.get('Retry-After')));
}

/** ICE servers from `Link: <stun:…>; rel="ice-server"; username="…"; credential="…"` headers. */
function iceServersFromLinks(header) {
  if (!header) return [];
  const servers = [];
  for (const link of header.split(/,(?=\s*<)/)) {
    const url = /<([^>]+)>/.exec(link)?.[1];
    if (!url || !/rel="?ice-server"?/i.test(link)) continue;
    const param = (name) => new RegExp(`${name}="([^"]*)"`, 'i').exec(link)?.[1];
    const server = { urls: url };
    if (param('username') !== undefined) server.username = param('username');
    if (param('credential') !== undefined) server.credential = param('credential');
    servers.push(server);
  }
  return servers;
}

function sdpLines(sdp) {
  return sdp.split(/\r?\n/).filter((l) => l.length > 0);
}

function iceCredentials(sdp) {
  const ufrag = /^a=ice-ufrag:(.+)$/m.exec(sdp)?.[1]?.trim();
  const pwd = /^a=ice-pwd:(.+)$/m.exec(sdp)?.[1]?.trim();
  return { ufrag, pwd };
}

/** The m= line of each media section, by mid. */
function mediaSections(sdp) {
  const sections = [];
  for (const line of sdpLines(sdp)) {
    if (line.startsWith('m=')) sections.push({ mline: line, mid: null });
    else if (line.startsWith('a=mid:') && sections.length) sections[sections.length - 1].mid = line.slice(6).trim();
  }
  return sections;
}

/** An RFC 8840 fragment with `candidates` ({ line, mid }) for PATCH. */
function trickleFragment(localSdp, candidates, end) {
  const { ufrag, pwd } = iceCredentials(localSdp);
  const sections = mediaSections(localSdp);
  if (!sections.length) return null;
  let frag = `a=ice-ufrag:${ufrag}\r\na=ice-pwd:${pwd}\r\n`;
  sections.forEach((section, i) => {
    const mine = candidates.filter((c) => (c.mid ?? sections[0].mid) === section.mid);
    if (!mine.length && !(end && i === 0)) return;
    frag += `${section.mline}\r\na=mid:${section.mid}\r\n`;
    for (const c of mine) frag += `a=${c.line}\r\n`;
    if (end) frag += 'a=end-of-candidates\r\n';
  });
  return frag;
}

/** The previous answer with the new ICE credentials (and candidates) of an ICE restart. */
function answerAfterRestart(oldAnswer, fragText) {
  const { ufrag, pwd } = iceCredentials(fragText);
  if (!ufrag || !pwd) throw new SessionError(0, 'the server answered the ICE restart without new ICE credentials');
  const candidates = sdpLines(fragText).filter((l) => l.startsWith('a=candidate:'));
  const out = [];
  const flush = (section) => { if (section && candidates.length) out.push(...candidates); };
  let inMedia = false;
  for (const line of sdpLines(oldAnswer)) {
    if (line.startsWith('m=')) { flush(inMedia); inMedia = true; }
    if (line.startsWith('a=ice-ufrag:')) out.push(`a=ice-ufrag:${ufrag}`);
    else if (line.startsWith('a=ice-pwd:')) out.push(`a=ice-pwd:${pwd}`);
    else if (candidates.length && line.startsWith('a=candidate:')) continue;
    else out.push(line);
  }
  flush(inMedia);
  return out.join('\r\n') + '\r\n';
}

/** What WhipClient and WhepClient share: one WHIP/WHEP session at a time, kept alive. */
class Session extends EventTarget {
  constructor(url, options) {
    super();
    /** The endpoint (absolute URL). */
    this.url = new URL(url, globalThis.location?.href).href;
    /** The options in force (see DEFAULTS). */
    this.options = { ...DEFAULTS, ...options };
    if (this.options.token && !/^[\x21-\x7e]+$/.test(this.options.token)) {
      throw new SessionError(0, 'a token may only contain printable ASCII characters, without spaces');
    }
    /** 'new' | 'connecting' | 'waiting' | 'connected' | 'reconnecting' | 'failed' | 'closed'. */
    this.state = 'new';
    /** The last error (a SessionError or Error), or null. */
    this.error = null;
    /** When the next attempt starts (Date.now() ms) while waiting to retry, else null. */
    this.retryAt = null;
    /** The current RTCPeerConnection (a new one for each session). */
    this.pc = null;
    /** The current session's URL (from Location), or null. */
    this.resource = null;
    /** The current session's ETag, sent as If-Match with trickled candidates. */
    this.etag = null;
    this._iceServers = [...(this.options.iceServers || [])];
    this._gen = 0;
    this._stopped = true;
    this._started = false;
    this._recovering = false;
    this._abort = null;
    this._timer = null;
    this._pending = [];
    this._sent = new Set();
    this._endOfCandidates = false;
    this._trickleOk = true;
    this._trickleReady = false;
    this._patching = Promise.resolve();
    this._onPageHide = () => this._leave();
  }

  _setState(state, error = this.error) {
    const changed = state !== this.state || error !== this.error;
    this.state = state;
    this.error = error;
    if (state !== 'waiting' && state !== 'reconnecting' && state !== 'connecting') this.retryAt = null;
    if (changed) this.dispatchEvent(new CustomEvent('statechange', { detail: { state, error } }));
  }

  _headers(extra = {}) {
    const h = { ...extra };
    if (this.options.token) h.Authorization = `Bearer ${this.options.token}`;
    return h;
  }

  async _fetch(url, init) {
    try {
      return await fetch(url, { ...init, headers: this._headers(init.headers), signal: this._abort?.signal });
    } catch (e) {
      if (e?.name === 'AbortError') throw e;
      throw new SessionError(0, 'the server cannot be reached');
    }
  }

  /** Starts the first session; resolves once the server answered. */
  async _start() {
    if (this._started) throw new Error('already started; call stop() first');
    this._started = true;
    this._stopped = false;
    this._abort = new AbortController();
    if (this.options.closeOnPageHide) globalThis.addEventListener?.('pagehide', this._onPageHide);
    await this._open(true);
  }

  /** Tries until one session is up, the error is final, or stop() is called. */
  async _open(initial) {
    for (let attempt = 0; !this._stopped; attempt++) {
      try {
        if (attempt === 0) this._setState(initial ? 'connecting' : 'reconnecting', initial ? null : this.error);
        await this._negotiate();
        return;
      } catch (e) {
        this._teardown(true);
        if (this._stopped || e?.name === 'AbortError') return;
        if (!this._shouldRetry(e, initial)) {
          this._fail(e);
          throw e;
        }
        const backoff = Math.min(this.options.maxBackoffMs, 1000 * 2 ** Math.min(attempt, 5));
        const waitMs = e.retryAfter != null ? e.retryAfter * 1000 : backoff * (0.8 + Math.random() * 0.4);
        this.retryAt = Date.now() + waitMs;
        this._setState(this._retryState(e, initial), e);
        await sleep(waitMs, this._abort?.signal);
      }
    }
  }

  async _negotiate() {
    const gen = ++this._gen;
    const pc = new RTCPeerConnection({ iceServers: this._iceServers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    this._pending = [];
    this._sent = new Set();
    this._endOfCandidates = false;
    this._trickleReady = false;
    const onState = () => { if (gen === this._gen) this._onConnectionState(); };
    pc.addEventListener('connectionstatechange', onState);
    pc.addEventListener('iceconnectionstatechange', onState);
    pc.addEventListener('icecandidate', (e) => { if (gen === this._gen) this._onCandidate(e.candidate); });
    this._prepare(pc);
    await pc.setLocalDescription(await pc.createOffer());
    await this._gathered(pc, this.options.gatherMs);
    const offer = pc.localDescription.sdp;
    for (const line of sdpLines(offer)) if (line.startsWith('a=candidate:')) this._sent.add(line.slice(2));
    const res = await this._fetch(this.url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp' },
      body: offer,
    });
    if (!res.ok) throw await errorFrom(res);
    const location = res.headers.get('Location');
    // Relative to where the answer came from: a cluster node may have
    // redirected the request to the stream's origin.
    this.resource = location ? new URL(location, res.url || this.url).href : null;
    this.etag = res.headers.get('ETag');
    const fromLinks = iceServersFromLinks(res.headers.get('Link'));
    if (fromLinks.length) {
      this._iceServers = [...(this.options.iceServers || []), ...fromLinks];
      try { pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this._iceServers }); } catch { /* kept for the next session */ }
    }
    const answer = await res.text();
    if (this._stopped || gen !== this._gen) throw new DOMException('stopped', 'AbortError');
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    } catch (e) {
      throw new SessionError(0, `the server's answer was not usable: ${e.message}`);
    }
    this._trickleReady = true;
    this._flush();
    this._armTimer(this.options.connectTimeoutMs);
    this._accepted();
  }

  _gathered(pc, ms) {
    if (pc.iceGatheringState === 'complete' || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { pc.removeEventListener('icegatheringstatechange', check); clearTimeout(timer); resolve(); };
      const check = () => { if (pc.iceGatheringState === 'complete') done(); };
      const timer = setTimeout(done, ms);
      pc.addEventListener('icegatheringstatechange', check);
    });
  }

  _armTimer(ms) {
    clearTimeout(this._timer);
    const gen = this._gen;
    this._timer = setTimeout(() => {
      if (gen === this._gen && !this._stopped && this._connState() !== 'connected') this._recover(true);
    }, ms);
  }

  _connState() {
    const pc = this.pc;
    if (!pc) return 'closed';
    if (pc.connectionState) return pc.connectionState;
    const ice = pc.iceConnectionState; // browsers without connectionState
    return ice === 'completed' ? 'connected' : ice === 'checking' ? 'connecting' : ice;
  }

  _onConnectionState() {
    if (this._stopped) return;
    const s = this._connState();
    if (s === 'connected') {
      clearTimeout(this._timer);
      this._setState('connected', null);
    } else if (s === 'failed') {
      this._recover(true);
    } else if (s === 'disconnected' && !this._recovering) {
      this._setState('reconnecting', this.error);
      this._armTimer(this.options.disconnectGraceMs);
    }
  }

  _onCandidate(candidate) {
    if (!candidate || !candidate.candidate) {
      this._endOfCandidates = true;
    } else if (!this._sent.has(candidate.candidate)) {
      this._sent.add(candidate.candidate);
      this._pending.push({ line: candidate.candidate, mid: candidate.sdpMid });
    }
    this._flush();
  }

  /** PATCHes queued candidates, one request at a time. */
  _flush() {
    if (!this._trickleReady || !this._trickleOk || !this.resource || !this.etag) return;
    if (!this._pending.length && !this._endOfCandidates) return;
    const gen = this._gen;
    this._patching = this._patching.then(async () => {
      if (gen !== this._gen || this._stopped || !this._trickleReady) return;
      const batch = this._pending.splice(0);
      const end = this._endOfCandidates;
      if (!batch.length && !end) return;
      this._endOfCandidates = false;
      const frag = trickleFragment(this.pc.localDescription.sdp, batch, end);
      if (!frag) return;
      try {
        const res = await this._fetch(this.resource, {
          method: 'PATCH',
          headers: { 'Content-Type': SDPFRAG, 'If-Match': this.etag },
          body: frag,
        });
        if (res.status === 405 || res.status === 501) this._trickleOk = false; // no trickle here
      } catch { /* trickling is best effort: the connection may not need these */ }
    });
  }

  /** Restarts ICE on the current session (PATCH with If-Match: "*"). */
  async restartIce() {
    const pc = this.pc;
    if (!pc || !this.resource || pc.signalingState !== 'stable' || !pc.remoteDescription) {
      throw new SessionError(0, 'there is no session to restart');
    }
    const gen = this._gen;
    const oldAnswer = pc.remoteDescription.sdp;
    this._trickleReady = false;
    this._pending = [];
    this._sent = new Set();
    this._endOfCandidates = false;
    pc.restartIce?.();
    const offer = await pc.createOffer({ iceRestart: true });
    await pc.setLocalDescription(offer);
    const { ufrag, pwd } = iceCredentials(offer.sdp);
    const frag = trickleFragment(offer.sdp, [], false) ?? `a=ice-ufrag:${ufrag}\r\na=ice-pwd:${pwd}\r\n`;
    const res = await this._fetch(this.resource, {
      method: 'PATCH',
      headers: { 'Content-Type': SDPFRAG, 'If-Match': '*' },
      body: frag,
    });
    if (!res.ok) throw await errorFrom(res);
    if (gen !== this._gen) throw new DOMException('stopped', 'AbortError');
    this.etag = res.headers.get('ETag') ?? this.etag;
    await pc.setRemoteDescription({ type: 'answer', sdp: answerAfterRestart(oldAnswer, await res.text()) });
    this._trickleReady = true;
    this._flush();
  }

  /** Drops the current session and starts a new one (after an ICE restart failed, or on demand). */
  async reconnect() {
    await this._recover(false);
  }

  async _recover(tryIceRestart) {
    if (this._recovering || this._stopped || !this._started) return;
    this._recovering = true;
    clearTimeout(this._timer);
    try {
      this._setState('reconnecting', this.error);
      if (tryIceRestart && this.pc && this.resource) {
        try {
          await this.restartIce();
          if (await this._connectedWithin(this.options.restartTimeoutMs)) return;
        } catch (e) {
          if (e?.name === 'AbortError' || this._stopped) return;
        }
      }
      if (this._stopped) return;
      this._teardown(true);
      await this._open(false).catch(() => {});
    } finally {
      this._recovering = false;
    }
  }

  _connectedWithin(ms) {
    return new Promise((resolve) => {
      const pc = this.pc;
      const deadline = Date.now() + ms;
      const tick = () => {
        if (this._stopped || pc !== this.pc) return resolve(false);
        if (this._connState() === 'connected') return resolve(true);
        if (this._connState() === 'failed' || Date.now() > deadline) return resolve(false);
        setTimeout(tick, 100);
      };
      tick();
    });
  }

  /** Closes the peer connection; with `sendDelete`, DELETEs the session too (not awaited). */
  _teardown(sendDelete) {
    this._gen++;
    clearTimeout(this._timer);
    const { pc, resource } = this;
    this.pc = null;
    this.resource = null;
    this.etag = null;
    this._trickleReady = false;
    if (sendDelete && resource) {
      fetch(resource, { method: 'DELETE', headers: this._headers(), keepalive: true }).catch(() => {});
    }
    if (pc) { try { pc.close(); } catch { /* already closed */ } }
  }

  _fail(error) {
    this._stopped = true;
    this._started = false;
    globalThis.removeEventListener?.('pagehide', this._onPageHide);
    this._setState('failed', error);
  }

  _leave() {
    if (this._stopped) return;
    this._stopped = true;
    this._started = false;
    this._abort?.abort();
    this._teardown(true);
  }

  /** Ends the session: DELETE on the server, close the connection. */
  async stop() {
    const resource = this.resource;
    this._stopped = true;
    this._started = false;
    this._abort?.abort();
    globalThis.removeEventListener?.('pagehide', this._onPageHide);
    this._teardown(false);
    if (resource) {
      try {
        await fetch(resource, { method: 'DELETE', headers: this._headers(), keepalive: true });
      } catch { /* the server may already be gone */ }
    }
    this._setState('closed', null);
  }
}

// ---- end of shared session core ----

export { SessionError as WhipError };

const CODEC_ORDER = {
  // H.264: packetization-mode=1 and constrained baseline first, as most receivers expect.
  'video/h264': (c) => (/packetization-mode=1/.test(c.sdpFmtpLine ?? '') ? 0 : 2) + (/profile-level-id=42e0/.test(c.sdpFmtpLine ?? '') ? 0 : 1),
  // VP9: profile 0 (8-bit 4:2:0) first.
  'video/vp9': (c) => (/profile-id=[1-3]/.test(c.sdpFmtpLine ?? '') ? 1 : 0),
};

/**
 * The video codecs this browser can send, as names for `videoCodec`
 * (a subset of 'VP8', 'VP9', 'H264', 'AV1', in that order).
 */
export function sendableVideoCodecs() {
  const canPrefer = typeof RTCRtpTransceiver !== 'undefined' && 'setCodecPreferences' in RTCRtpTransceiver.prototype;
  const codecs = (canPrefer && RTCRtpSender.getCapabilities?.('video')?.codecs) || [];
  const mimes = new Set(codecs.map((c) => c.mimeType.toLowerCase()));
  return ['VP8', 'VP9', 'H264', 'AV1'].filter((name) => mimes.has(`video/${name.toLowerCase()}`));
}

/** The three simulcast layers, smallest first (as libwebrtc expects them).
 *  VP9 and AV1 need a scalability mode on every layer, or browsers fall back
 *  to one SVC stream, which castgate does not take. */
function simulcastEncodings(options) {
  const svcCodec = ['VP9', 'AV1'].includes(options.videoCodec);
  const layer = (rid, scale, maxBitrate) => ({
    rid,
    scaleResolutionDownBy: scale,
    ...(maxBitrate ? { maxBitrate } : {}),
    ...(svcCodec ? { scalabilityMode: 'L1T3' } : {}),
  });
  return [layer('l', 4, 200_000), layer('m', 2, 700_000), layer('h', 1, options.maxBitrate)];
}

function codecPreferences(name) {
  const codecs = RTCRtpSender.getCapabilities?.('video')?.codecs;
  if (!codecs) return null;
  const mime = `video/${name.toLowerCase()}`;
  const rank = CODEC_ORDER[mime] ?? (() => 0);
  const chosen = codecs.filter((c) => c.mimeType.toLowerCase() === mime).sort((a, b) => rank(a) - rank(b));
  if (!chosen.length) throw new SessionError(0, `this browser cannot send ${name}`);
  return [...chosen, ...codecs.filter((c) => c.mimeType.toLowerCase() === 'video/rtx')];
}

/**
 * Publishes one audio and one video track to a WHIP endpoint.
 *
 * Options (all optional): `token`, `videoCodec` ('VP8' | 'VP9' | 'H264' | 'AV1'),
 * `maxBitrate` (video, bits/s), `simulcast` (true: the video in three layers,
 * rids 'l', 'm', 'h' at ¼, ½ and full size; browsers make all three only from
 * about 960x540 up), `iceServers`, and the timing knobs of the shared
 * core (`gatherMs`, `connectTimeoutMs`, `disconnectGraceMs`, `restartTimeoutMs`,
 * `maxBackoffMs`, `closeOnPageHide`).
 */
export class WhipClient extends Session {
  constructor(url, options = {}) {
    super(url, options);
    this._tracks = { audio: null, video: null };
    this._kinds = [];
  }

  /**
   * Starts publishing `media` (a MediaStream or an array of tracks: at most one
   * audio and one video). Resolves when the server accepted the offer; rejects
   * with a WhipError when it refused (wrong token, name taken, bad codec…).
   */
  async publish(media) {
    const tracks = Array.isArray(media) ? media : media.getTracks();
    for (const kind of ['audio', 'video']) this._tracks[kind] = tracks.find((t) => t.kind === kind) ?? null;
    this._kinds = ['audio', 'video'].filter((kind) => this._tracks[kind]);
    if (!this._kinds.length) throw new SessionError(0, 'there is no audio or video track to publish');
    await this._start();
  }

  _prepare(pc) {
    for (const kind of this._kinds) {
      const init = { direction: 'sendonly' };
      if (kind === 'video' && this.options.simulcast) init.sendEncodings = simulcastEncodings(this.options);
      else if (kind === 'video' && this.options.maxBitrate) init.sendEncodings = [{ maxBitrate: this.options.maxBitrate }];
      const transceiver = pc.addTransceiver(this._tracks[kind] ?? kind, init);
      if (kind === 'video' && this.options.videoCodec && transceiver.setCodecPreferences) {
        const prefs = codecPreferences(this.options.videoCodec);
        if (prefs) transceiver.setCodecPreferences(prefs);
      }
    }
  }

  _shouldRetry(e, initial) {
    if (!(e instanceof SessionError)) return false;
    if (initial) return [429, 503].includes(e.status);
    // While reconnecting the server may still hold the old session (409) or be restarting.
    return e.status === 0 || e.status === 409 || e.status === 429 || e.status >= 500;
  }

  _retryState(e, initial) {
    return initial ? 'connecting' : 'reconnecting';
  }

  _accepted() {}

  _sender(kind) {
    return this.pc?.getTransceivers().find((t) => t.receiver.track?.kind === kind)?.sender ?? null;
  }

  /**
   * Swaps the audio or video track being sent (another camera, microphone or
   * screen) without renegotiating; also used by later sessions. Only kinds
   * present when publishing started can be swapped in.
   */
  async replaceTrack(track, kind = track?.kind) {
    if (!this._kinds.includes(kind)) throw new SessionError(0, `this stream was started without ${kind}; stop and start again to add it`);
    this._tracks[kind] = track;
    await this._sender(kind)?.replaceTrack(track);
  }

  /** Changes the video bitrate cap (bits/s; 0 or null removes it; with
   *  simulcast, the top layer's), live. */
  async setMaxBitrate(bps) {
    this.options.maxBitrate = bps || null;
    const sender = this._sender('video');
    if (!sender) return;
    const params = sender.getParameters();
    if (!params.encodings?.length) params.encodings = [{}];
    for (const enc of params.encodings) {
      if (this.options.simulcast && enc.rid !== 'h') continue;
      if (bps) enc.maxBitrate = bps;
      else delete enc.maxBitrate;
    }
    await sender.setParameters(params);
  }
}
