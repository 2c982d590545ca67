import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { fmtCost, relTime, stateClass, stateLabel } from '../format.js';
import { mergeSessions } from '../inbox.js';
import { useInbox } from '../inbox-store.js';
import { revealText } from '../reveal.js';
import { Header, StatusBanner } from './Header.jsx';
import { Shown } from './Shown.jsx';

const REFRESH_MS = 5000;

/** Re-runs `fn` every `ms` while the page is visible, and on focus. */
export function usePoll(fn, ms) {
  useEffect(() => {
    let timer = null;
    let alive = true;
    const run = () => {
      if (!alive) return;
      fn();
    };
    const arm = () => {
      clearInterval(timer);
      timer = setInterval(() => {
        if (document.visibilityState === 'visible') run();
      }, ms);
    };
    const onFocus = () => run();
    const onVis = () => {
      if (document.visibilityState === 'visible') run();
    };
    run();
    arm();
    window.addEventListener('focus', onFocus);
    document.addEventListener('visibilitychange', onVis);
    return () => {
      alive = false;
      clearInterval(timer);
      window.removeEventListener('focus', onFocus);
      document.removeEventListener('visibilitychange', onVis);
    };
  }, []);
}

/** GET /api/status, polled; returns [status, error message]. */
export function useGatewayStatus(ms = REFRESH_MS) {
  const [status, setStatus] = useState(null);
  const [error, setError] = useState(null);
  usePoll(() => {
    api
      .status()
      .then((s) => {
        setStatus(s);
        setError(null);
      })
      .catch((e) => {
        if (e.status !== 401) setError(e.message);
      });
  }, ms);
  return [status, error];
}

export function SessionList({ user, onLogout }) {
  const [fetched, setFetched] = useState(null);
  const [error, setError] = useState(null);
  const [status, statusError] = useGatewayStatus();
  const [, setNow] = useState(0);
  const live = useInbox();

  // The list once; every change after comes from the inbox stream.
  useEffect(() => {
    api
      .sessions()
      .then((list) => {
        setFetched(Array.isArray(list) ? list : []);
        setError(null);
      })
      .catch((e) => {
        if (e.status !== 401) setError(e.message);
      });
    const tick = setInterval(() => setNow(Date.now()), 30000);
    return () => clearInterval(tick);
  }, []);
  const sessions = fetched === null && live.cursor === null ? null : mergeSessions(fetched, live);

  return (
    <div class="page">
      <Header user={user} onLogout={onLogout} />
      <StatusBanner status={status} error={statusError} />
      <main class="list-main">
        <div class="list-head">
          <h2>Sessions</h2>
          <a class="button primary" href="#/new" data-testid="new-session">
            + New session
          </a>
        </div>
        {error && (
          <p class="error-text" role="alert">
            {error}
          </p>
        )}
        {sessions === null && !error && <p class="muted">Loading…</p>}
        {sessions && sessions.length === 0 && (
          <div class="empty card">
            <p>No sessions yet.</p>
            <p class="muted">Start one in a git worktree on the gateway; you can close this tab and come back any time.</p>
          </div>
        )}
        {sessions && sessions.length > 0 && (
          <ul class="sessions">
            {sessions.map((s) => (
              <SessionRow key={s.session_id} s={s} />
            ))}
          </ul>
        )}
      </main>
    </div>
  );
}

function SessionRow({ s }) {
  const attention = (s.pending_questions || 0) > 0;
  return (
    <li>
      <a
        class={`session-row card${attention ? ' needs-attention' : ''}`}
        href={`#/s/${encodeURIComponent(s.session_id)}`}
        data-testid="session-row"
        data-session-id={s.session_id}
      >
        <div class="row-top">
          <span class="title">{s.title ? <Shown text={s.title} /> : '(untitled)'}</span>
          {attention && (
            <span class="badge attention" data-testid="attention-badge" title="A question is waiting for you">
              needs attention{s.pending_questions > 1 ? ` · ${s.pending_questions}` : ''}
            </span>
          )}
        </div>
        <div class="row-meta">
          <span class={`badge state-${stateClass(s.state, s.reason)}`} data-testid="session-state">
            {stateLabel(s.state, s.reason)}
          </span>
          <span class="mono worktree" title={revealText(s.worktree)}>
            <Shown text={s.worktree} />
          </span>
          <span class="muted" title={s.updated_at_ms ? new Date(s.updated_at_ms).toLocaleString() : ''}>
            {relTime(s.updated_at_ms)}
          </span>
          <span class="muted cost">{fmtCost(s.cost_usd)}</span>
          {s.forked_from && (
            <span class="badge" data-testid="fork-badge" title={`forked from session ${s.forked_from.session_id}`}>
              fork
            </span>
          )}
        </div>
      </a>
    </li>
  );
}
