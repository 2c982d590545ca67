// The session WebSocket (docs/api.md): connects with `tail=<n>` when it holds
// nothing yet (older history comes by `page` requests), else with
// `after=<last seq>` (and the `epoch` of the log its copy came from, when the
// server names one in its snapshot); reconnects by itself with capped exponential backoff and jitter, and
// resends commands that have no `command_result` yet with the same id, so a
// retry is applied once. Close codes it acts on:
// 4000 (lagged): reconnect at once to catch up by replay;
// 4401 (login ended): stop and ask for a login again;
// 4409 (ahead of the log): the copy is from another history, so drop it and
// open anew (with the tail).
// Where the browser inflates raw DEFLATE, it asks for `compress=deflate-raw`:
// the replay and page answers then come as binary frames, each one or more
// text frames joined by "\n"; frames are handled strictly in arrival order.

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const PING_EVERY_MS = 25000;
const PONG_TIMEOUT_MS = 10000;
/** Events a fresh copy opens with (at least; from the start of their turn). */
const marked = new Set();
/**
 * A `performance` mark `duraclaw:<name>`, once per page: where the page's
 * start goes (the UI bench reads them).
 */
export function markOnce(name) {
  if (marked.has(name) || typeof performance === 'undefined' || !performance.mark) return;
  marked.add(name);
  performance.mark(`duraclaw:${name}`);
}

export const TAIL_EVENTS = 200;

/** Whether this browser inflates raw DEFLATE (every current one does). */
export function canInflate() {
  return typeof DecompressionStream === 'function';
}

/**
 * The session stream's URL: from `after` (in the log's `epoch`, when known),
 * or the tail when nothing is held; compressed where the browser can inflate
 * it (`public/early.js` builds the same URL).
 */
export function streamUrl(sessionId, after, epoch = null) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const from =
    after > 0 ? `after=${after}${epoch ? `&epoch=${encodeURIComponent(epoch)}` : ''}` : `tail=${TAIL_EVENTS}`;
  const compress = canInflate() ? '&compress=deflate-raw' : '';
  return `${proto}//${location.host}/api/sessions/${encodeURIComponent(sessionId)}/ws?${from}${compress}`;
}

/** The text frames of one binary frame (raw DEFLATE of them joined by "\n"). */
export async function inflateFrames(data) {
  const blob = data instanceof Blob ? data : new Blob([data]);
  const text = await new Response(blob.stream().pipeThrough(new DecompressionStream('deflate-raw'))).text();
  return text.split('\n');
}

/**
 * The socket `public/early.js` opened for `url` before the bundle ran, once,
 * with what it saw so far (`opened`, `events`, `closed`); null when there
 * is none for exactly this URL. Any other early socket is closed.
 */
export function adoptEarlySocket(url) {
  if (typeof window === 'undefined') return null;
  const early = window.__duraclawEarly;
  if (!early || !early.sockets) {
    // The early script has not run: it must not open anything now.
    window.__duraclawEarly = false;
    return null;
  }
  const s = early.sockets[url] || null;
  for (const [u, other] of Object.entries(early.sockets)) {
    if (u === url) continue;
    other.ws.onopen = other.ws.onmessage = other.ws.onclose = null;
    try {
      other.ws.close(1000, 'not needed');
    } catch {
      /* already closed */
    }
  }
  early.sockets = {};
  return s;
}

export const CLOSE_LAGGED = 4000;
export const CLOSE_LOGIN_ENDED = 4401;
export const CLOSE_AHEAD_OF_LOG = 4409;

/** A random command id; uses getRandomValues, which works on plain http too. */
export function newCommandId() {
  const b = new Uint8Array(9);
  crypto.getRandomValues(b);
  return 'b-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** The delay before reconnect attempt `n` (0-based): full jitter over 50–100 %. */
export function backoffDelay(n, rand = Math.random) {
  const ceil = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(n, 16));
  return Math.round(ceil * (0.5 + rand() * 0.5));
}

export class SessionSocket {
  /**
   * @param {string} sessionId
   * @param {() => number} lastSeq the highest seq applied so far
   * @param {object} h handlers: onFrame(frame, {resent}), onStatus({state, retryInMs, attempt}),
   *   onDown(closeEvent, opened), onLoginEnded(), onReset() (drop the copy: the next connection replays from 0)
   */
  constructor(sessionId, lastSeq, h) {
    this.sessionId = sessionId;
    this.lastSeq = lastSeq;
    this.h = h;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.nonce = 0;
    this.stopped = false;
    this.ready = false;
    /** The epoch of the log the copy came from (the last snapshot's), sent on resume. */
    this.epoch = null;
    /** Commands without a command_result, in send order: id -> frame text. */
    this.unconfirmed = new Map();
    /** Connections so far; and the one each unconfirmed command last went out on. */
    this.connections = 0;
    this.sentOn = new Map();
    /** Ids of commands sent again on a later connection than their first. */
    this.resent = new Set();
    this.onOnline = () => this.kick();
    this.onOffline = () => this.status();
    this.onVisible = () => {
      if (document.visibilityState === 'visible') this.kick();
    };
  }

  start() {
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    document.addEventListener('visibilitychange', this.onVisible);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    document.removeEventListener('visibilitychange', this.onVisible);
    clearTimeout(this.timer);
    this.clearPing();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, 'leaving');
      } catch {
        /* already closed */
      }
    }
  }

  /** Whether `frame` says the stream is live (for a session: its snapshot). */
  isReadyFrame(frame) {
    return frame.type === 'snapshot';
  }

  /** Drops the connection and opens a new one at once (resuming from lastSeq). */
  reconnectNow() {
    if (this.stopped) return;
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    this.clearPing();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, 'resuming');
      } catch {
        /* already closed */
      }
    }
    clearTimeout(this.timer);
    this.attempt = 0;
    this.connect();
  }

  /** Reconnects now if waiting for a retry (page shown again, network back). */
  kick() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.attempt = 0;
    this.connect();
  }

  url() {
    return streamUrl(this.sessionId, Math.max(0, this.lastSeq() | 0), this.epoch);
  }

  connect() {
    if (this.stopped) return;
    this.ready = false;
    this.connections++;
    this.status('connecting');
    let ws;
    const url = this.url();
    const early = adoptEarlySocket(url);
    try {
      ws = early ? early.ws : new WebSocket(url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    markOnce('ws-connect');
    let opened = false;
    ws.onopen = () => {
      opened = true;
      markOnce('ws-open');
    };
    // Frames (and the close) wait behind a binary frame being inflated.
    const queue = [];
    let busy = false;
    const pump = async () => {
      if (busy) return;
      busy = true;
      while (queue.length && this.ws === ws) {
        const next = queue.shift();
        if (typeof next === 'string') {
          text(next);
        } else if (next.close) {
          closed(next.close);
        } else {
          let lines;
          try {
            lines = await inflateFrames(next);
          } catch (e) {
            // A frame that does not inflate: drop the connection and resume.
            console.warn('duraclaw: a binary frame does not inflate', e);
            if (this.ws === ws) {
              try {
                ws.close(4002, 'bad binary frame');
              } catch {
                /* already closed */
              }
              closed({ code: 4002, reason: 'bad binary frame' });
            }
            break;
          }
          for (const line of lines) {
            if (this.ws !== ws) break;
            text(line);
          }
        }
      }
      busy = false;
    };
    ws.onmessage = (m) => {
      const d = m.data;
      if (typeof d === 'string' && !busy && !queue.length) {
        text(d);
        return;
      }
      if (typeof d !== 'string' && !(d instanceof ArrayBuffer) && !(typeof Blob === 'function' && d instanceof Blob)) return;
      queue.push(d);
      pump();
    };
    const text = (data) => {
      markOnce('ws-first-frame');
      let frame;
      try {
        frame = JSON.parse(data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== 'object') return;
      if (this.isReadyFrame(frame)) {
        if (frame.type === 'snapshot') this.epoch = typeof frame.epoch === 'string' ? frame.epoch : null;
        markOnce('ws-ready');
        this.ready = true;
        this.attempt = 0;
        this.status('connected');
        this.startPing();
        this.h.onFrame(frame);
        this.flush();
        return;
      }
      if (frame.type === 'pong') {
        clearTimeout(this.pongTimer);
        return;
      }
      if (frame.type === 'command_result') {
        const resent = this.resent.has(frame.id);
        this.unconfirmed.delete(frame.id);
        this.sentOn.delete(frame.id);
        this.resent.delete(frame.id);
        this.h.onFrame(frame, { resent });
        return;
      }
      this.h.onFrame(frame, {});
    };
    ws.onclose = (ev) => {
      if (busy || queue.length) {
        queue.push({ close: ev });
        pump();
        return;
      }
      closed(ev);
    };
    const closed = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.ready = false;
      this.clearPing();
      if (ev.code === CLOSE_LOGIN_ENDED) {
        this.giveUp('closed');
        if (this.h.onLoginEnded) this.h.onLoginEnded();
        return;
      }
      if (this.h.onDown) this.h.onDown(ev, opened);
      if (ev.code === CLOSE_AHEAD_OF_LOG) {
        this.epoch = null;
        if (this.h.onReset) this.h.onReset();
      }
      if (ev.code === CLOSE_LAGGED || ev.code === CLOSE_AHEAD_OF_LOG) this.attempt = 0; // straight away
      this.scheduleReconnect();
    };
    ws.onerror = () => {
      /* onclose follows */
    };
    // What the early socket saw before these handlers, in order.
    if (early) {
      if (early.opened) ws.onopen();
      for (const e of early.events) {
        if (this.ws !== ws) return;
        ws.onmessage(e);
      }
      if (early.closed && this.ws === ws) ws.onclose(early.closed);
    }
  }

  scheduleReconnect() {
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt);
    this.attempt++;
    this.status(navigator.onLine === false ? 'offline' : 'reconnecting', delay);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Stops reconnecting for good (session gone, login gone). */
  giveUp(state) {
    this.stopped = true;
    clearTimeout(this.timer);
    this.status(state || 'closed');
  }

  status(state, retryInMs) {
    const s = state || (this.ready ? 'connected' : navigator.onLine === false ? 'offline' : 'reconnecting');
    if (this.h.onStatus) this.h.onStatus({ state: s, retryInMs: retryInMs ?? null, attempt: this.attempt });
  }

  startPing() {
    this.clearPing();
    this.pingTimer = setInterval(() => {
      if (!this.ws || !this.ready) return;
      this.raw({ type: 'ping', nonce: ++this.nonce });
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => {
        // No pong: the link is dead without a close. Drop it and reconnect.
        const ws = this.ws;
        if (ws) {
          try {
            ws.close(4001, 'no pong');
          } catch {
            /* ignore */
          }
          ws.onclose && ws.onclose({ code: 4001, reason: 'no pong' });
        }
      }, PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  clearPing() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }

  raw(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  /**
   * Sends a command (`{type: "message"|"answer"|"abort", …}`) and returns its
   * id. It is kept until its command_result arrives and resent, with the same
   * id, after every reconnect.
   */
  send(command, id = newCommandId()) {
    const text = JSON.stringify({ type: 'command', id, command });
    this.unconfirmed.set(id, text);
    if (this.ready && this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(text);
      this.sentOn.set(id, this.connections);
    }
    return id;
  }

  flush() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    for (const [id, text] of this.unconfirmed) {
      const before = this.sentOn.get(id);
      if (before !== undefined && before !== this.connections) this.resent.add(id);
      this.sentOn.set(id, this.connections);
      this.ws.send(text);
    }
  }
}
