import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { api, loginEnded } from '../api.js';
import { markOnce, SessionSocket } from '../connection.js';
import { baseName, fmtCost, stateClass, stateLabel } from '../format.js';
import { revealText } from '../reveal.js';
import { alarmingErrors, errorTitle, isOwnRetry } from '../system.js';
import { isRunning, Transcript } from '../transcript.js';
import { inbox } from '../inbox-store.js';
import { Item } from './Events.jsx';
import { Header } from './Header.jsx';
import { Shown } from './Shown.jsx';
import { DiffPanel } from './Diff.jsx';
import { OVERSCAN, Sizes, firstWindowStart, nextWindow, spaceAround } from '../windowing.js';
import { whenIdle } from '../idle.js';

/** The most items rendered at first, before any is measured (see windowIndices). */
const FIRST_WINDOW = 6;

const CONN_TEXT = {
  connecting: 'connecting…',
  connected: 'connected',
  reconnecting: 'reconnecting…',
  offline: 'offline',
  closed: 'closed',
};

/** The permission modes offered; a mode that skips approvals never is. */
export const MODES = [
  ['default', 'Ask for every tool'],
  ['acceptEdits', 'Accept edits'],
  ['plan', 'Plan (no edits)'],
];

/** Models offered besides the one in use (aliases the CLI resolves). */
const MODELS = ['sonnet', 'opus', 'haiku'];

/**
 * The session header's mode and model selectors; `supports` (the agent's,
 * from `/api/agents`) hides those the agent cannot switch.
 */
function ModeModel({ mode, model, onMode, onModel, supports }) {
  const models = model && !MODELS.includes(model) ? [model, ...MODELS] : MODELS;
  const modes = !supports || supports.modes === true;
  const switchModels = !supports || supports.models === true;
  if (!modes && !switchModels) return null;
  return (
    <span class="mode-model">
      {modes && (<label>
        <span class="muted small">Mode </span>
        <select data-testid="mode-select" value={mode || ''} onChange={(e) => e.target.value && onMode(e.target.value)}>
          {!MODES.some(([m]) => m === mode) && <option value="">{mode || '…'}</option>}
          {MODES.map(([m, label]) => (
            <option key={m} value={m}>
              {label}
            </option>
          ))}
        </select>
      </label>)}{' '}
      {switchModels && (<label>
        <span class="muted small">Model </span>
        <select data-testid="model-select" value={model || ''} onChange={(e) => e.target.value && onModel(e.target.value)}>
          {!model && <option value="">…</option>}
          {models.map((m) => (
            <option key={m} value={m}>
              {m}
            </option>
          ))}
        </select>
      </label>)}
    </span>
  );
}

/** Events asked for per page of older history. */
const PAGE_EVENTS = 1000;

export function SessionView({ id, focus, user, onLogout }) {
  const tRef = useRef(null);
  if (!tRef.current) tRef.current = new Transcript();
  const t = tRef.current;
  const sockRef = useRef(null);
  const cmds = useRef(new Map());
  const qstates = useRef(new Map());
  const [version, setVersion] = useState(0);
  const [conn, setConn] = useState({ state: 'connecting' });
  const [meta, setMeta] = useState(null);
  // What the session's agent supports, for an agent other than the built-in one.
  const [supports, setSupports] = useState(null);
  const agentName = meta && meta.agent && meta.agent !== 'claude' ? meta.agent : null;
  useEffect(() => {
    if (!agentName) return undefined;
    let gone = false;
    api
      .agents()
      .then((list) => {
        const a = Array.isArray(list) ? list.find((x) => x && x.name === agentName) : null;
        if (!gone && a) setSupports(a.supports || {});
      })
      .catch(() => {});
    return () => {
      gone = true;
    };
  }, [agentName]);
  const [fatal, setFatal] = useState(null);
  const [notice, setNotice] = useState(null);
  const [composer, setComposer] = useState({ text: '', sending: false, error: null });
  const [abortState, setAbortState] = useState(null);
  const [showDiff, setShowDiff] = useState(false);
  const [turnsEnded, setTurnsEnded] = useState(0);
  // The close choice for a worktree the gateway made: null, or {busy, error, dirty, done}.
  const [closing, setClosing] = useState(null);
  const [change, setChange] = useState(null);
  const stick = useRef(true);
  const [atBottom, setAtBottom] = useState(true);
  const renderTimer = useRef(null);
  // The page request in flight ({id, before}).
  const paging = useRef(null);
  const pages = useRef(0);
  // The window of items in the DOM ({from, to}: keys), their sizes, the
  // keys rendered, the item the view keeps in place ({key, top}) and one
  // to bring into view ({key, qid}).
  const win = useRef(null);
  const sizes = useRef(null);
  if (!sizes.current) sizes.current = new Sizes();
  const shownKeys = useRef([]);
  const anchor = useRef(null);
  const target = useRef(null);
  const listRef = useRef(null);
  const aboveRef = useRef(null);
  const belowRef = useRef(null);
  const gap = useRef(0);
  const settle = useRef({ frame: 0, n: 0 });
  // Whether the transcript's first screen has been painted (see moveWindow).
  const painted = useRef(false);
  const paintTimer = useRef(null);

  const rerender = () => {
    // The replay that opened the session is in: its first screen now, not
    // at the next batch (live frames are batched below).
    if (!painted.current && !paintTimer.current && t.snapSeq > 0 && t.lastSeq >= t.snapSeq && t.items.length) {
      clearTimeout(renderTimer.current);
      renderTimer.current = null;
      setVersion((v) => v + 1);
      return;
    }
    if (renderTimer.current) return;
    renderTimer.current = setTimeout(() => {
      renderTimer.current = null;
      setVersion((v) => v + 1);
    }, 16);
  };

  const loadMeta = () =>
    api
      .session(id)
      .then((m) => {
        setMeta(m);
        return m;
      })
      .catch((e) => {
        if (e.status === 404) {
          setFatal('This session does not exist, or it is not yours.');
          if (sockRef.current) sockRef.current.giveUp('closed');
        }
        return null;
      });

  // Before the first paint: the socket the early script opened has the
  // session's first frames already, and the view renders them at once
  // rather than painting an empty frame first.
  useLayoutEffect(() => {
    window.__duraclaw = {
      sessionId: id,
      connection: 'connecting',
      resets: 0,
      /** Each command_result handled: {id, ok, code, resent, shownAsError}. */
      results: [],
      get seqs() {
        return t.seqs;
      },
      get gaps() {
        return t.gaps;
      },
      get lastSeq() {
        return t.lastSeq;
      },
      get firstSeq() {
        return t.firstSeq;
      },
      /** Older pages that went in. */
      get pages() {
        return pages.current;
      },
      /** Transcript items in the model (the DOM holds those near the view). */
      get items() {
        return t.items.length;
      },
      /** Brings the item showing `seq` into view (tests look items up this way). */
      revealSeq(seq) {
        let key = null;
        for (const i of t.items) if (i.seq !== null && i.seq <= seq) key = i.key;
        if (key) reveal(key);
        return key;
      },
    };
    loadMeta();

    const onFrame = (f, how) => {
      switch (f.type) {
        case 'hello':
          if (f.v !== 1) {
            setNotice(`The server speaks protocol version ${f.v}; this page speaks version 1. Reload the page.`);
            sockRef.current.giveUp('closed');
          }
          break;
        case 'snapshot':
          // A new connection: a page asked on the old one is asked again.
          paging.current = null;
          t.applySnapshot(f);
          rerender();
          break;
        case 'compacted':
          if (t.applyRange(f.first, f.last, f.event, 'event' in f)) rerender();
          break;
        case 'page': {
          const p = paging.current;
          if (!p || p.id !== f.id) break;
          paging.current = null;
          if (f.error) {
            setNotice(`Server: ${f.error.message || f.error.code}`);
            break;
          }
          // The view keeps its anchor item in place (the layout effect).
          if (t.prepend(f.first, f.last, f.items)) {
            pages.current++;
            setVersion((v) => v + 1);
          }
          break;
        }
        case 'event':
          if (t.apply(f.seq, f.event)) {
            rerender();
            if (f.event && f.event.type === 'result') {
              loadMeta();
              setTurnsEnded((n) => n + 1);
            }
          }
          break;
        case 'command_result':
          onCommandResult(f, how || {});
          break;
        case 'error':
          // ahead_of_log: the close (4409) that follows reloads the transcript.
          if (f.code !== 'ahead_of_log') setNotice(`Server: ${f.message || f.code || 'error'}`);
          break;
        default:
          break;
      }
    };

    const onCommandResult = (f, { resent }) => {
      const c = cmds.current.get(f.id);
      if (!c) return;
      cmds.current.delete(f.id);
      const err = f.ok ? null : (f.error && f.error.message) || (f.error && f.error.code) || 'refused';
      const code = f.ok ? null : f.error && f.error.code;
      if (c.kind === 'answer') {
        const q = t.byQuestion.get(c.qid);
        const own = isOwnRetry(f, { resent, user: user && user.name, decision: c.decision, resolved: q && q.resolved });
        qstates.current.set(c.qid, f.ok || own ? { sent: true } : { error: err, code });
        window.__duraclaw.results.push({ id: f.id, ok: f.ok, code, resent: !!resent, shownAsError: !(f.ok || own) });
      } else if (c.kind === 'message') {
        setComposer((s) => ({ text: f.ok ? s.text : s.text || c.text, sending: false, error: f.ok ? null : `Not sent: ${err}` }));
      } else if (c.kind === 'abort') {
        setAbortState(f.ok ? 'sent' : `Abort refused: ${err}`);
      } else if (c.kind === 'change') {
        setChange(f.ok ? null : `Not changed: ${err}`);
      }
      rerender();
    };

    const sock = new SessionSocket(id, () => t.lastSeq, {
      onFrame,
      onStatus: (s) => {
        window.__duraclaw.connection = s.state;
        setConn(s);
      },
      onDown: (_ev, opened) => {
        if (!opened) loadMeta();
      },
      // The server ended this login (logout, password change, user
      // removed): log in again, no reconnecting.
      onLoginEnded: () => loginEnded('Your login ended (signed out elsewhere, or the password changed): sign in again.'),
      // The page's copy is from another history: drop it, replay from 0.
      onReset: () => {
        t.reset();
        win.current = null;
        qstates.current.clear();
        window.__duraclaw.resets++;
        rerender();
      },
    });
    sockRef.current = sock;
    sock.start();

    const onScroll = () => {
      const el = document.scrollingElement || document.documentElement;
      const near = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
      stick.current = near;
      setAtBottom(near);
      markAnchor();
      moveWindow();
      if (el.scrollTop < el.clientHeight) loadOlder();
    };
    window.addEventListener('scroll', onScroll, { passive: true });
    // The page keeps its place itself when older history goes in above.
    const root = document.documentElement;
    const anchoring = root.style.overflowAnchor;
    root.style.overflowAnchor = 'none';
    return () => {
      sock.stop();
      clearTimeout(renderTimer.current);
      if (paintTimer.current) {
        cancelAnimationFrame(paintTimer.current.frame);
        if (paintTimer.current.idle) paintTimer.current.idle.cancel();
      }
      window.removeEventListener('scroll', onScroll);
      root.style.overflowAnchor = anchoring;
    };
  }, [id]);

  /**
   * Asks for the page of history before what is held (one at a time), once
   * the replay that opened the stream is in: until then the view is not
   * what it will be, and the page would race the replay to the screen.
   */
  const loadOlder = () => {
    const sock = sockRef.current;
    if (!sock || !sock.ready || paging.current || !t.hasOlder() || t.lastSeq < t.snapSeq) return;
    const p = { id: `page-${t.firstSeq}-${Date.now()}`, before: t.firstSeq };
    if (sock.raw({ type: 'page', id: p.id, before: p.before, limit: PAGE_EVENTS })) paging.current = p;
  };

  /** The rendered items' elements, by key. */
  const shownNodes = () => {
    const nodes = new Map();
    const end = belowRef.current;
    let node = aboveRef.current && aboveRef.current.nextElementSibling;
    for (const key of shownKeys.current) {
      if (!node || node === end) break;
      nodes.set(key, node);
      node = node.nextElementSibling;
    }
    return nodes;
  };

  /** Notes the first item in view and where it is, to keep it there. */
  const markAnchor = () => {
    anchor.current = null;
    for (const [key, node] of shownNodes()) {
      const r = node.getBoundingClientRect();
      if (r.height > 0 && r.bottom > 0) {
        anchor.current = { key, top: r.top };
        return;
      }
    }
  };

  /** Moves the window to the view; returns whether it changed. */
  const moveWindow = () => {
    if (!aboveRef.current) return false;
    const keys = t.items.map((i) => i.key);
    const list = sizes.current.list(keys);
    const at = windowIndices(keys);
    const origin = aboveRef.current.getBoundingClientRect().top;
    // Until the first screen is painted only the view itself: what lies
    // beyond it can wait a frame.
    const overscan = painted.current ? OVERSCAN : 0;
    const next = nextWindow(list, at, -origin, window.innerHeight - origin, { stick: stick.current, overscan });
    if (keys.length === 0 || (next.lo === at.lo && next.hi === at.hi)) return false;
    win.current = { from: keys[next.lo], to: keys[next.hi] };
    setVersion((v) => v + 1);
    return true;
  };

  /**
   * The window as indices into the items. Unknown (a session just opened):
   * the last items guessed to fill the view, which the layout effect then
   * widens to the view and its overscan once they are measured. A wider
   * first guess would lay out and render Markdown for screens nobody sees
   * before the first paint.
   */
  const windowIndices = (keys) => {
    const n = keys.length;
    let lo = -1;
    let hi = -1;
    if (win.current) {
      lo = keys.indexOf(win.current.from);
      hi = keys.indexOf(win.current.to);
    }
    if (lo < 0 || hi < lo) {
      hi = n - 1;
      lo = firstWindowStart(t.items, window.innerHeight, window.innerWidth, FIRST_WINDOW);
    }
    if (stick.current) hi = n - 1;
    return { lo, hi };
  };

  /** Brings item `key` (and question `qid` in it) into view. */
  const reveal = (key, qid) => {
    const keys = t.items.map((i) => i.key);
    const i = keys.indexOf(key);
    if (i < 0) return;
    stick.current = false;
    target.current = { key, qid };
    win.current = { from: keys[Math.max(0, i - 5)], to: keys[Math.min(keys.length - 1, i + 5)] };
    setVersion((v) => v + 1);
  };

  // What the last measuring pass saw (see below).
  const measuredFor = useRef(null);
  useLayoutEffect(() => {
    // Nothing in the transcript yet, or nothing it shows changed since the
    // last pass (a keystroke in the composer, the view's own bookkeeping):
    // no reading of the layout, which would force one more between paints.
    const seen = [version, shownKeys.current.join('\n'), meta, conn.state, supports];
    const last = measuredFor.current;
    if ((!t.items.length && !t.hasOlder()) || (last && seen.every((v, i) => v === last[i]))) return;
    measuredFor.current = seen;
    const el = document.scrollingElement || document.documentElement;
    if (listRef.current) gap.current = parseFloat(getComputedStyle(listRef.current).rowGap) || 0;
    // What the rendered items measure (hidden ones take no space, not even the gap).
    const nodes = shownNodes();
    if (nodes.size && !painted.current && !paintTimer.current) {
      markOnce('transcript-rendered');
      // The frame after this one, when the page is idle: the rest of the
      // window around the view (a scroll moves the window at once anyway).
      const p = { frame: 0, idle: null };
      paintTimer.current = p;
      p.frame = requestAnimationFrame(() => {
        p.idle = whenIdle(() => {
          painted.current = true;
          moveWindow();
        }, 300);
      });
    }
    for (const [key, node] of nodes) {
      const h = node.getBoundingClientRect().height;
      sizes.current.measure(key, h === 0 && node.getClientRects().length === 0 ? 0 : h + gap.current);
    }
    const aim = target.current && nodes.get(target.current.key);
    if (aim) {
      const q = target.current.qid && document.getElementById(`q-${target.current.qid}`);
      target.current = null;
      (q || aim).scrollIntoView({ block: 'center' });
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    } else if (anchor.current && nodes.has(anchor.current.key)) {
      // Whatever changed above (an older page, items measured): no jump.
      const moved = nodes.get(anchor.current.key).getBoundingClientRect().top - anchor.current.top;
      if (Math.abs(moved) >= 0.5) el.scrollTop += moved;
    }
    markAnchor();
    // The window follows the view; a bounded number of passes per frame.
    const now = performance.now();
    if (now - settle.current.frame > 100) settle.current = { frame: now, n: 0 };
    if (settle.current.n < 12 && moveWindow()) settle.current.n++;
    // Near the top, or not a screenful yet: the next older page.
    if (t.hasOlder() && (el.scrollTop < el.clientHeight || el.scrollHeight <= el.clientHeight * 1.5)) loadOlder();
  });

  const running = isRunning(t.state, t.reason);
  useEffect(() => {
    if (!running) setAbortState(null);
  }, [running]);

  if (t.items.length) markOnce('transcript-render');
  const pending = t.pending();
  const title = (meta && meta.title) || 'Session';
  useEffect(() => {
    // The inbox puts the count of everything waiting in front.
    inbox.setPageName(`${pending.length ? '(!) ' : ''}${revealText(title)} — Duraclaw`);
    return () => inbox.setPageName('Duraclaw');
  }, [pending.length, title]);

  const ctx = {
    fork: (seq) => fork(seq),
    running: running && t.state === 'active',
    worktree: (meta && meta.worktree) || t.cwd || null,
    // The worktree "always allow for this worktree" names: the repository a new worktree was made from.
    ruleWorktree: (t.worktree && t.worktree.origin) || (meta && (meta.origin || meta.worktree)) || t.cwd || null,
    qstate: (qid) => qstates.current.get(qid),
    answer: (qid, decision) => {
      const cmdId = sockRef.current.send({ type: 'answer', question_id: qid, ...decision });
      cmds.current.set(cmdId, { kind: 'answer', qid, decision: decision.decision });
      qstates.current.set(qid, { sending: true });
      rerender();
    },
  };

  const send = (e) => {
    if (e) e.preventDefault();
    const text = composer.text;
    if (!text.trim() || composer.sending) return;
    const cmdId = sockRef.current.send({ type: 'message', text });
    cmds.current.set(cmdId, { kind: 'message', text });
    stick.current = true;
    setComposer({ text: '', sending: true, error: null });
  };

  // A fork runs in this session's worktree: a live session ends first.
  const fork = async (seq) => {
    const live = t.state && t.state !== 'terminated';
    if (live && !window.confirm('The fork runs in this worktree, so this session ends first (its history stays). Fork from here?')) return;
    const prompt = window.prompt('First message of the fork:');
    if (!prompt || !prompt.trim()) return;
    try {
      if (live) await api.closeSession(id);
      const s = await api.forkSession(id, { from_seq: seq, prompt });
      window.location.hash = `#/s/${encodeURIComponent(s.session_id)}`;
    } catch (e) {
      setNotice(`Fork failed: ${e.message || e}`);
    }
  };

  // Mode and model changes: the executor's answer arrives as a notice.
  const setMode = (mode) => {
    const cmdId = sockRef.current.send({ type: 'set_mode', mode });
    cmds.current.set(cmdId, { kind: 'change' });
    setChange(null);
  };
  const setModel = (model) => {
    const cmdId = sockRef.current.send({ type: 'set_model', model });
    cmds.current.set(cmdId, { kind: 'change' });
    setChange(null);
  };

  const abort = () => {
    const cmdId = sockRef.current.send({ type: 'abort' });
    cmds.current.set(cmdId, { kind: 'abort' });
    setAbortState('sending');
  };

  const created = !!(t.worktree && t.worktree.created);
  const closeWith = (worktree, force) => {
    setClosing((c) => ({ ...c, busy: true, error: null }));
    api
      .closeSession(id, { worktree, force })
      .then((m) => {
        if (m) setMeta(m);
        setClosing({ done: true });
      })
      .catch((e) => {
        // 409: uncommitted changes (offer to force), or not Duraclaw's.
        const dirty = e.status === 409 && /uncommitted/.test(e.message);
        setClosing({ busy: false, dirty, error: e.status === 409 ? `Not removed: ${e.message}` : e.message });
      });
  };

  /** The key of the item a question shows in (its own, or its tool call's). */
  const questionKey = (qid) => {
    const q = t.byQuestion.get(qid);
    return q ? (q.inTool ? q.inTool.key : q.key) : null;
  };

  const jumpTo = (qid) => {
    const el = document.getElementById(`q-${qid}`);
    if (el) el.scrollIntoView({ behavior: 'smooth', block: 'center' });
    else if (questionKey(qid)) reveal(questionKey(qid), qid);
  };

  // Opened at a question (`?q=`, e.g. from a notification): shown and
  // highlighted once its card is there.
  const focused = useRef(null);
  const brought = useRef(null);
  useEffect(() => {
    if (!focus || focused.current === focus) return;
    const el = document.getElementById(`q-${focus}`);
    if (!el) {
      // Not near the view: brought in, then focused.
      const key = questionKey(focus);
      if (key && !target.current && brought.current !== focus) {
        brought.current = focus;
        reveal(key, focus);
      }
      return;
    }
    focused.current = focus;
    stick.current = false;
    for (const old of document.querySelectorAll('.focused-question')) old.classList.remove('focused-question');
    el.classList.add('focused-question');
    el.setAttribute('data-focused', 'true');
    el.scrollIntoView({ block: 'center' });
  });

  if (fatal) {
    return (
      <div class="page">
        <Header user={user} onLogout={onLogout} />
        <main class="form-main">
          <a class="back" href="#/">
            ← Sessions
          </a>
          <div class="card">
            <p class="error-text">{fatal}</p>
          </div>
        </main>
      </div>
    );
  }

  const cost = t.cost || (meta && meta.cost_usd) || 0;
  // Mode and model can change while the session lives.
  const live = !!t.state && t.state !== 'terminated';
  const alarms = alarmingErrors(t.items);
  // Only the items near the view are rendered; the rest is space.
  const keys = t.items.map((i) => i.key);
  const at = windowIndices(keys);
  const space = spaceAround(sizes.current.list(keys), at.lo, at.hi);
  const shown = t.items.slice(at.lo, at.hi + 1);
  shownKeys.current = shown.map((i) => i.key);

  return (
    <div class="page session-page">
      <div class="sticky-top">
        <Header user={user} onLogout={onLogout}>
          <span
            class={`conn conn-${conn.state}`}
            data-testid="connection-state"
            data-state={conn.state}
            title={conn.retryInMs ? `next try in ${Math.ceil(conn.retryInMs / 1000)} s` : ''}
          >
            <span class="dot" aria-hidden="true" />
            {CONN_TEXT[conn.state] || conn.state}
          </span>
        </Header>
        <div class="session-bar">
          <a class="back-icon" href="#/" aria-label="All sessions" title="All sessions">
            ←
          </a>
          <div class="session-title">
            <div class="title" data-testid="session-title">
              <Shown text={title} />
            </div>
            <div class="sub">
              <span class={`badge state-${stateClass(t.state, t.reason)}`} data-testid="state-badge" data-state={t.state || ''} data-reason={t.reason || ''}>
                {t.state ? stateLabel(t.state, t.reason) : '…'}
              </span>
              <span class="muted">
                {meta && (
                  <span class="mono" title={revealText(meta.worktree)}>
                    {' '}
                    <Shown text={baseName(meta.worktree)} />
                  </span>
                )}
                {meta && <span data-testid="session-agent" title="The agent that runs this session"> · {revealText(meta.agent || 'claude')}</span>}
                {!live && (t.model || (meta && meta.model)) && <span> · {t.model || meta.model}</span>}
                <span> · {fmtCost(cost)}</span>
                {meta && meta.forked_from && (
                  <span data-testid="forked-from">
                    {' · fork of '}
                    <a class="link" href={`#/s/${encodeURIComponent(meta.forked_from.session_id)}`} data-testid="parent-link">
                      session …{String(meta.forked_from.session_id).slice(-6)}
                    </a>
                    {` at message ${meta.forked_from.seq}`}
                  </span>
                )}
              </span>
              {live && <ModeModel mode={t.mode} model={t.model || (meta && meta.model)} onMode={setMode} onModel={setModel} supports={supports} />}
            </div>
            {change && (
              <p class="error-text small" role="alert" data-testid="change-error">
                {change}
              </p>
            )}
          </div>
          {running && (
            <button type="button" class="danger small-btn" data-testid="abort" onClick={abort} disabled={abortState === 'sending' || abortState === 'sent'}>
              {abortState === 'sending' || abortState === 'sent' ? 'Aborting…' : 'Abort'}
            </button>
          )}
          <button type="button" class="small-btn" data-testid="diff-toggle" aria-pressed={showDiff} onClick={() => setShowDiff((v) => !v)}>
            {showDiff ? 'Hide diff' : 'Diff'}
          </button>
          {!running && t.state && t.state !== 'terminated' && (
            <button
              type="button"
              class="small-btn"
              data-testid="end-session"
              title="Stop the agent and free the worktree; the history stays"
              onClick={() => {
                if (created) {
                  setClosing({});
                } else if (window.confirm('End this session? The agent stops and the worktree is freed; the history stays.')) {
                  sockRef.current.send({ type: 'close' });
                }
              }}
            >
              End session
            </button>
          )}
          {t.state === 'terminated' && created && !(closing && closing.done) && (
            <button type="button" class="small-btn" data-testid="remove-worktree-later" onClick={() => setClosing({})}>
              Remove worktree…
            </button>
          )}
        </div>
        {alarms.map((a) => (
          <div class="banner bad alarm" role="alert" data-testid="unapproved-banner" key={a.key}>
            <strong>{errorTitle(a.ev)}.</strong> <Shown text={String(a.ev.message ?? '')} /> The session was stopped.{' '}
            <button type="button" class="link" onClick={() => reveal(a.key)}>
              show
            </button>
          </div>
        ))}
      </div>
      {closing && !closing.done && (
        <div class="card close-choice" data-testid="close-choice">
          <p>
            This session runs in a worktree Duraclaw made
            {t.worktree && (
              <span class="mono">
                {' '}
                <Shown text={String(t.worktree.path ?? '')} />
              </span>
            )}
            {t.worktree && t.worktree.branch && (
              <span>
                {' '}
                on branch <Shown text={String(t.worktree.branch)} />
              </span>
            )}
            . Keep it, or remove it? Removing keeps the branch if it has commits.
          </p>
          {closing.error && (
            <p class="error-text" role="alert" data-testid="close-error">
              {closing.error}
            </p>
          )}
          <div class="actions">
            <button type="button" class="link" onClick={() => setClosing(null)}>
              Cancel
            </button>
            {t.state !== 'terminated' && (
              <button type="button" data-testid="close-keep" disabled={closing.busy} onClick={() => closeWith('keep', false)}>
                Keep worktree
              </button>
            )}
            {closing.dirty ? (
              <button type="button" class="danger" data-testid="close-remove-force" disabled={closing.busy} onClick={() => closeWith('remove', true)}>
                Remove anyway (lose the changes)
              </button>
            ) : (
              <button type="button" class="danger" data-testid="close-remove" disabled={closing.busy} onClick={() => closeWith('remove', false)}>
                Remove worktree
              </button>
            )}
          </div>
        </div>
      )}
      {showDiff && <DiffPanel id={id} tick={turnsEnded} />}
      {notice && (
        <div class="banner warn" role="alert">
          {notice}{' '}
          <button type="button" class="link" onClick={() => setNotice(null)}>
            dismiss
          </button>
        </div>
      )}
      {abortState && abortState !== 'sending' && abortState !== 'sent' && (
        <div class="banner bad" role="alert">
          {abortState}{' '}
          <button type="button" class="link" onClick={() => setAbortState(null)}>
            dismiss
          </button>
        </div>
      )}
      <main class="transcript" data-testid="transcript" aria-live="polite" ref={listRef}>
        {t.hasOlder() && (
          <p class="muted center small" data-testid="older" data-first-seq={t.firstSeq}>
            <span class="spinner small" /> Loading earlier messages…
          </p>
        )}
        {t.items.length === 0 && <p class="muted center">{conn.state === 'connected' ? 'Nothing here yet.' : 'Loading the session…'}</p>}
        <div class="win-space" ref={aboveRef} aria-hidden="true" data-testid="space-above" style={{ height: `${space.before}px`, marginBottom: `${-gap.current}px` }} />
        {shown.map((item) => (
          <Item key={item.key} item={item} ctx={ctx} />
        ))}
        <div class="win-space" ref={belowRef} aria-hidden="true" style={{ height: `${space.after}px`, marginTop: `${-gap.current}px` }} />
        {running && t.state === 'active' && (
          <div class="working muted small">
            <span class="spinner small" /> Claude is working…
          </div>
        )}
      </main>
      <div class="composer-wrap">
        {pending.length > 0 && !atBottom && (
          <button type="button" class="pending-bar" onClick={() => jumpTo(pending[0].q.question_id)} data-testid="pending-bar">
            {pending.length === 1 ? '1 question is waiting for you' : `${pending.length} questions are waiting for you`} — show
          </button>
        )}
        {composer.error && (
          <p class="error-text composer-error" role="alert">
            {composer.error}
          </p>
        )}
        <form class="composer" onSubmit={send}>
          <textarea
            data-testid="message-input"
            rows={1}
            placeholder={t.state === 'terminated' ? 'The session has ended' : `Message ${agentName ? revealText(agentName) : 'Claude'}…`}
            title="Ctrl+Enter sends"
            value={composer.text}
            onInput={(e) => {
              const v = e.currentTarget.value;
              setComposer((s) => ({ ...s, text: v }));
              autoGrow(e.currentTarget);
            }}
            onKeyDown={(e) => {
              if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) send(e);
            }}
          />
          <button type="submit" class="primary" data-testid="send-message" disabled={!composer.text.trim() || composer.sending}>
            {composer.sending ? 'Sending…' : 'Send'}
          </button>
        </form>
      </div>
    </div>
  );
}

function autoGrow(el) {
  el.style.height = 'auto';
  el.style.height = `${Math.min(el.scrollHeight, 200)}px`;
}
