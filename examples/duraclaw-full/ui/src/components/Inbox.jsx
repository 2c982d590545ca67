import { useEffect, useRef, useState } from 'preact/hooks';
import { loginEnded } from '../api.js';
import { SessionSocket } from '../connection.js';
import { relTime } from '../format.js';
import { itemQuestion, openItems } from '../inbox.js';
import { useInbox } from '../inbox-store.js';
import { revealText } from '../reveal.js';
import { Header } from './Header.jsx';
import { Question } from './Question.jsx';
import { Shown } from './Shown.jsx';

/**
 * Answers questions of a session through its own WebSocket (the command
 * path the session page uses: commands resent until confirmed, applied
 * once), opened on the first answer and closed once every answer is
 * confirmed.
 */
class Answerer {
  constructor(sessionId, onResult) {
    this.cmds = new Map();
    this.sock = new SessionSocket(sessionId, () => 0, {
      onFrame: (f) => {
        if (f.type !== 'command_result' || !this.cmds.has(f.id)) return;
        const qid = this.cmds.get(f.id);
        this.cmds.delete(f.id);
        onResult(qid, f);
        if (this.cmds.size === 0) this.stop();
      },
      onLoginEnded: () => loginEnded('Your login ended (signed out elsewhere, or the password changed): sign in again.'),
    });
    this.started = false;
  }

  answer(qid, decision) {
    const id = this.sock.send({ type: 'answer', question_id: qid, ...decision });
    this.cmds.set(id, qid);
    if (!this.started) {
      this.started = true;
      this.sock.start();
    }
  }

  stop() {
    this.sock.stop();
  }
}

/** Every open approval and question across the user's sessions, oldest first, answerable here. */
export function InboxView({ user, onLogout }) {
  const state = useInbox();
  const items = openItems(state);
  const answerers = useRef(new Map());
  const [qstates, setQstates] = useState(() => new Map());
  const [, setNow] = useState(0);

  useEffect(() => {
    const tick = setInterval(() => setNow(Date.now()), 30000);
    return () => {
      clearInterval(tick);
      for (const a of answerers.current.values()) a.stop();
      answerers.current.clear();
    };
  }, []);

  const setQ = (k, st) =>
    setQstates((m) => {
      const n = new Map(m);
      n.set(k, st);
      return n;
    });

  const ctxFor = (item) => {
    const k = `${item.session_id}\u0000${item.question_id}`;
    return {
      running: false,
      worktree: item.worktree || null,
      qstate: () => qstates.get(k),
      answer: (qid, decision) => {
        let a = answerers.current.get(item.session_id);
        if (!a || a.sock.stopped) {
          a = new Answerer(item.session_id, (q, r) => {
            const key = `${item.session_id}\u0000${q}`;
            if (r.ok) setQ(key, { sent: true });
            else setQ(key, { error: (r.error && r.error.message) || 'refused', code: r.error && r.error.code });
          });
          answerers.current.set(item.session_id, a);
        }
        setQ(k, { sending: true });
        a.answer(qid, decision);
      },
    };
  };

  return (
    <div class="page">
      <Header user={user} onLogout={onLogout} />
      <main class="list-main">
        <div class="list-head">
          <h2>Inbox</h2>
          <a class="button" href="#/">
            Sessions
          </a>
        </div>
        {state.cursor === null && <p class="muted">Loading…</p>}
        {state.cursor !== null && items.length === 0 && (
          <div class="empty card" data-testid="inbox-empty">
            <p>Nothing is waiting for you.</p>
            <p class="muted">Approvals and questions from all your sessions show up here as they come.</p>
          </div>
        )}
        {items.length > 0 && (
          <ul class="inbox" data-testid="inbox-list">
            {items.map((item) => (
              <li
                key={`${item.session_id}/${item.question_id}`}
                class="inbox-item card"
                data-testid="inbox-item"
                data-session-id={item.session_id}
                data-question-id={item.question_id}
              >
                <div class="inbox-where">
                  <a href={`#/s/${encodeURIComponent(item.session_id)}`} class="title" data-testid="inbox-session">
                    {item.title ? <Shown text={item.title} /> : '(untitled)'}
                  </a>
                  <span class="mono worktree" title={revealText(item.worktree)}>
                    <Shown text={item.worktree} />
                  </span>
                  <span class="muted" title={item.opened_at_ms ? new Date(item.opened_at_ms).toLocaleString() : ''}>
                    {relTime(item.opened_at_ms)}
                  </span>
                </div>
                <Question item={{ q: itemQuestion(item), resolved: null }} ctx={ctxFor(item)} />
              </li>
            ))}
          </ul>
        )}
      </main>
    </div>
  );
}
