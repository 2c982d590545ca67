// The user's inbox (docs/api.md, "The inbox"): the state built from the
// inbox stream's frames, and the stream itself. Pure functions first (unit
// tested in test/inbox.test.js), then the socket, then one shared store the
// views subscribe to.

import { SessionSocket } from './connection.js';

/** An inbox with nothing in it yet (no cursor: the first connection asks for a snapshot). */
export function emptyInbox() {
  return { cursor: null, sessions: new Map(), items: new Map(), live: false };
}

const key = (sessionId, questionId) => `${sessionId}\u0000${questionId}`;

/**
 * The inbox after `frame`. Returns `{state, gap}`: `gap` is true when a
 * change skipped a cursor (the stream must be resumed from `state.cursor`);
 * a change at or below the cursor was seen already and changes nothing.
 */
export function applyFrame(state, frame) {
  if (!frame || typeof frame !== 'object') return { state, gap: false };
  switch (frame.type) {
    case 'snapshot': {
      const sessions = new Map();
      for (const s of Array.isArray(frame.sessions) ? frame.sessions : []) {
        if (s && s.session_id) sessions.set(s.session_id, s);
      }
      const items = new Map();
      for (const i of Array.isArray(frame.items) ? frame.items : []) {
        if (i && i.session_id && i.question_id) items.set(key(i.session_id, i.question_id), i);
      }
      return { state: { cursor: frame.cursor, sessions, items, live: true }, gap: false };
    }
    case 'resumed':
      return { state: { ...state, live: true }, gap: false };
    case 'change': {
      if (!Number.isFinite(frame.cursor) || state.cursor === null) return { state, gap: false };
      if (frame.cursor <= state.cursor) return { state, gap: false };
      if (frame.cursor !== state.cursor + 1) return { state, gap: true };
      const c = frame.change || {};
      const sessions = new Map(state.sessions);
      const items = new Map(state.items);
      switch (c.type) {
        case 'session':
          if (c.session && c.session.session_id) sessions.set(c.session.session_id, c.session);
          break;
        case 'question_opened':
          if (c.item && c.item.session_id) items.set(key(c.item.session_id, c.item.question_id), c.item);
          break;
        case 'question_resolved':
          items.delete(key(c.session_id, c.question_id));
          break;
        case 'session_removed':
          sessions.delete(c.session_id);
          for (const [k, i] of items) if (i.session_id === c.session_id) items.delete(k);
          break;
        default:
          break;
      }
      return { state: { ...state, cursor: frame.cursor, sessions, items }, gap: false };
    }
    default:
      return { state, gap: false };
  }
}

/** The open questions, oldest first. */
export function openItems(state) {
  return [...state.items.values()].sort(
    (a, b) =>
      (a.opened_at_ms || 0) - (b.opened_at_ms || 0) ||
      String(a.session_id).localeCompare(String(b.session_id)) ||
      String(a.question_id).localeCompare(String(b.question_id)),
  );
}

/**
 * The session list: `fetched` (GET /api/sessions, may be null) with what
 * the inbox knows on top (newer), most recently active first.
 */
export function mergeSessions(fetched, state) {
  const all = new Map();
  for (const s of Array.isArray(fetched) ? fetched : []) if (s && s.session_id) all.set(s.session_id, s);
  for (const [id, s] of state.sessions) {
    const old = all.get(id);
    if (!old || (s.updated_at_ms || 0) >= (old.updated_at_ms || 0)) all.set(id, s);
  }
  return [...all.values()].sort((a, b) => (b.updated_at_ms || 0) - (a.updated_at_ms || 0) || String(b.session_id).localeCompare(String(a.session_id)));
}

/** The page title for `count` open questions: "(3) Duraclaw", or the name alone. */
export function titleFor(count, name = 'Duraclaw') {
  return count > 0 ? `(${count}) ${name}` : name;
}

/** A permission or ask_user question as the Question component takes it, from an inbox item. */
export function itemQuestion(item) {
  if (item.kind === 'ask_user') {
    const questions = item.input && Array.isArray(item.input.questions) ? item.input.questions : [];
    return { question_id: item.question_id, kind: 'ask_user', questions };
  }
  return { question_id: item.question_id, kind: item.kind || 'permission', tool_name: item.tool, input: item.input };
}

/**
 * The inbox stream: SessionSocket's reconnects, backoff, pings and close
 * codes (4401 login ended, 4409 start over), on /api/inbox/ws; resumes
 * after the last cursor applied (none: a snapshot).
 */
export class InboxSocket extends SessionSocket {
  constructor(cursor, h) {
    super('inbox', cursor, h);
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const c = this.lastSeq();
    return `${proto}//${location.host}/api/inbox/ws${c === null || c === undefined ? '' : `?after=${c}`}`;
  }

  isReadyFrame(frame) {
    return frame.type === 'snapshot' || frame.type === 'resumed';
  }
}

/**
 * One inbox per page: started once logged in, shared by the header badge,
 * the session list and the inbox view. `subscribe(fn)` calls `fn(state)` on
 * every change; the page title follows the count.
 */
export function createInboxStore({ onLoginEnded, setTitle = (t) => (document.title = t) } = {}) {
  let state = emptyInbox();
  let conn = null;
  let pageName = 'Duraclaw';
  const subs = new Set();
  const emit = () => {
    setTitle(titleFor(state.items.size, pageName));
    subs.forEach((fn) => fn(state));
  };
  const onFrame = (frame) => {
    const r = applyFrame(state, frame);
    state = r.state;
    if (r.gap && conn) {
      // A change was skipped: resume from the last one applied.
      conn.reconnectNow();
      return;
    }
    emit();
  };
  return {
    get state() {
      return state;
    },
    start() {
      if (conn) return;
      conn = new InboxSocket(() => state.cursor, {
        onFrame,
        onLoginEnded,
        onDown: () => {
          state = { ...state, live: false };
          emit();
        },
        onReset: () => {
          state = emptyInbox();
          emit();
        },
      });
      conn.start();
    },
    stop() {
      if (conn) conn.stop();
      conn = null;
      state = emptyInbox();
      emit();
    },
    /** What the title says after the count ("Duraclaw", or a session's "<title> — Duraclaw"). */
    setPageName(name) {
      pageName = name || 'Duraclaw';
      setTitle(titleFor(state.items.size, pageName));
    },
    subscribe(fn) {
      subs.add(fn);
      fn(state);
      return () => subs.delete(fn);
    },
  };
}

