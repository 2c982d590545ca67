import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { api, loginEnded } from '../api.js';
import { SessionSocket } from '../connection.js';
import { baseName, fmtCost, stateClass, stateLabel } from '../format.js';
import { revealText } from '../reveal.js';
import { alarmingErrors, errorTitle, isOwnRetry } from '../system.js';
import { isRunning, Transcript } from '../transcript.js';
import { inbox } from '../inbox-store.js';
import { Item } from './Events.jsx';
import { Header } from './Header.jsx';
import { Shown } from './Shown.jsx';
import { DiffPanel } from './Diff.jsx';

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

export function SessionView({ id, focus, user, onLogout }) {
  const tRef = useRef(null);
  if (!tRef.current) tRef.current = new Transcript();
  const t = tRef.current;
  const sockRef = useRef(null);
  const cmds = useRef(new Map());
  const qstates = useRef(new Map());
  const [, setVersion] = useState(0);
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

  const rerender = () => {
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

  useEffect(() => {
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
          t.applySnapshot(f);
          rerender();
          break;
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
    };
    window.addEventListener('scroll', onScroll, { passive: true });
    return () => {
      sock.stop();
      clearTimeout(renderTimer.current);
      window.removeEventListener('scroll', onScroll);
    };
  }, [id]);

  useLayoutEffect(() => {
    if (stick.current) {
      const el = document.scrollingElement || document.documentElement;
      el.scrollTop = el.scrollHeight;
    }
  });

  const running = isRunning(t.state, t.reason);
  useEffect(() => {
    if (!running) setAbortState(null);
  }, [running]);

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

  const jumpTo = (qid) => {
    const el = document.getElementById(`q-${qid}`);
    if (el) el.scrollIntoView({ behavior: 'smooth', block: 'center' });
  };

  // Opened at a question (`?q=`, e.g. from a notification): shown and
  // highlighted once its card is there.
  const focused = useRef(null);
  useEffect(() => {
    if (!focus || focused.current === focus) return;
    const el = document.getElementById(`q-${focus}`);
    if (!el) return;
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
            <button type="button" class="link" onClick={() => document.querySelector(`[data-seq="${a.seq}"]`)?.scrollIntoView({ block: 'center' })}>
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
      <main class="transcript" data-testid="transcript" aria-live="polite">
        {t.items.length === 0 && <p class="muted center">{conn.state === 'connected' ? 'Nothing here yet.' : 'Loading the session…'}</p>}
        {t.items.map((item) => (
          <Item key={item.key} item={item} ctx={ctx} />
        ))}
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
            placeholder={t.state === 'terminated' ? 'The session has ended' : 'Message Claude…'}
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
