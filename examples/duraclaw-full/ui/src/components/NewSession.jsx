import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { baseName } from '../format.js';
import { revealText } from '../reveal.js';
import { Header, StatusBanner } from './Header.jsx';
import { useGatewayStatus } from './SessionList.jsx';

const DEFAULT_MODEL = 'sonnet';

function worktreeLabel(w) {
  // The folder name first: on a phone only the start of an option shows.
  // Names and branches are shown with their hidden characters escaped.
  const parts = [revealText(baseName(w.path) || w.path)];
  if (w.branch) parts.push(`[${revealText(w.branch)}]`);
  else if (w.head) parts.push(`[detached ${w.head.slice(0, 8)}]`);
  if (w.dirty) parts.push('• dirty');
  if (w.busy_session) parts.push('• busy');
  parts.push(`— ${revealText(w.path)}`);
  return parts.join(' ');
}

/** The built-in agent, what a session runs unless another is picked. */
const BUILTIN_AGENT = 'claude';

function agentLabel(a) {
  const title = revealText(a.title || a.name);
  return a.available ? title : `${title} — unavailable: ${revealText(a.error || 'cannot run')}`;
}

function shortId(id) {
  return id.length > 10 ? `…${id.slice(-8)}` : id;
}

export function NewSession({ user, onLogout }) {
  const [worktrees, setWorktrees] = useState(null);
  const [wtError, setWtError] = useState(null);
  const [worktree, setWorktree] = useState('');
  const [model, setModel] = useState(DEFAULT_MODEL);
  const [prompt, setPrompt] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  // A new worktree from the selected one's repository (the default when the gateway offers it).
  const [fresh, setFresh] = useState(true);
  const [base, setBase] = useState('');
  const [status, statusError] = useGatewayStatus();
  // The agents the gateway offers (null: not known yet or not told).
  const [agents, setAgents] = useState(null);
  const [agent, setAgent] = useState(BUILTIN_AGENT);
  const [agentsError, setAgentsError] = useState(null);

  const load = () => {
    setWtError(null);
    api
      .worktrees()
      .then((list) => {
        const l = Array.isArray(list) ? list : [];
        setWorktrees(l);
        // A repository the gateway makes new worktrees from first, then a free one.
        setWorktree((cur) => cur || (l.find((w) => w.new_worktree && w.path === w.repo) || l.find((w) => !w.busy_session) || l[0] || {}).path || '');
      })
      .catch((e) => {
        if (e.status !== 401) setWtError(e.status === 502 ? `The gateway is unreachable, so its worktrees are unknown: ${e.message}` : e.message);
      });
  };
  useEffect(load, []);

  const loadAgents = () => {
    setAgentsError(null);
    api
      .agents()
      .then((list) => {
        const l = Array.isArray(list) ? list : [];
        setAgents(l);
        // Claude unless it cannot run and another can.
        setAgent((cur) => {
          const ok = (n) => l.some((a) => a.name === n && a.available);
          if (ok(cur)) return cur;
          const first = l.find((a) => a.available);
          return first ? first.name : cur;
        });
      })
      .catch((e) => {
        if (e.status !== 401) setAgentsError(e.message);
      });
  };
  useEffect(loadAgents, []);
  const chosen = agents && agents.find((a) => a.name === agent);

  const selected = worktrees && worktrees.find((w) => w.path === worktree);
  const offersNew = !!(selected && selected.new_worktree);
  const useNew = offersNew && fresh;
  useEffect(() => setBase((selected && selected.branch) || ''), [worktree, worktrees]);
  // The built-in executor cannot run sessions (e.g. the Claude Code CLI is too old).
  const executorError = agent === BUILTIN_AGENT && status && status.gateway && status.gateway.connected && status.gateway.executor_error;

  const submit = async (e) => {
    e.preventDefault();
    if (busy || executorError) return;
    setError(null);
    if (!prompt.trim()) {
      setError('Write a first prompt.');
      return;
    }
    setBusy(true);
    try {
      const body = { worktree, prompt };
      if (useNew) body.new_worktree = base.trim() ? { base: base.trim() } : {};
      if (model.trim()) body.model = model.trim();
      if (agents) body.agent = agent;
      const s = await api.createSession(body);
      location.hash = `#/s/${encodeURIComponent(s.session_id)}`;
    } catch (err) {
      const what = { 400: 'Refused', 409: 'Worktree busy', 502: 'Gateway unreachable', 503: 'Executor unavailable' }[err.status];
      setError(what && !err.message.toLowerCase().startsWith(what.toLowerCase()) ? `${what}: ${err.message}` : err.message);
      setBusy(false);
    }
  };

  return (
    <div class="page">
      <Header user={user} onLogout={onLogout} />
      <StatusBanner status={status} error={statusError} />
      <main class="form-main">
        <a class="back" href="#/">
          ← Sessions
        </a>
        <form class="card new-session" onSubmit={submit}>
          <h2>New session</h2>
          <label>
            Worktree
            {worktrees === null && !wtError && <span class="muted"> (loading…)</span>}
            <select
              data-testid="worktree-select"
              required
              value={worktree}
              onChange={(e) => setWorktree(e.currentTarget.value)}
              disabled={!worktrees || worktrees.length === 0}
            >
              {worktrees && worktrees.length === 0 && <option value="">No worktrees discovered on the gateway</option>}
              {(worktrees || []).map((w) => (
                <option key={w.path} value={w.path}>
                  {worktreeLabel(w)}
                </option>
              ))}
            </select>
          </label>
          {wtError && (
            <p class="error-text" role="alert">
              {wtError}{' '}
              <button type="button" class="link" onClick={load}>
                Retry
              </button>
            </p>
          )}
          {selected && (
            <p class="wt-info muted">
              {selected.branch ? <span class="badge">{revealText(selected.branch)}</span> : <span class="badge">detached</span>}{' '}
              {selected.dirty ? <span class="badge warn">uncommitted changes</span> : <span class="badge ok">clean</span>}{' '}
              {selected.busy_session && (
                <span class="badge attention">
                  busy:{' '}
                  <a href={`#/s/${encodeURIComponent(selected.busy_session)}`} title={selected.busy_session}>
                    session {shortId(selected.busy_session)}
                  </a>
                </span>
              )}
              {selected.repo && selected.repo !== selected.path && <span class="mono small"> repo {revealText(selected.repo)}</span>}
            </p>
          )}
          {offersNew && (
            <div class="new-worktree" data-testid="new-worktree-choice">
              <label class="check">
                <input type="checkbox" data-testid="new-worktree" checked={fresh} onChange={(e) => setFresh(e.currentTarget.checked)} /> New worktree from{' '}
                <span class="mono">{revealText(baseName(selected.repo || selected.path) || selected.repo || '')}</span> at
              </label>
              <input
                data-testid="new-worktree-base"
                value={base}
                disabled={!fresh}
                onInput={(e) => setBase(e.currentTarget.value)}
                placeholder={selected.head ? selected.head.slice(0, 8) : 'HEAD'}
                aria-label="Base branch"
                autocapitalize="none"
                spellcheck={false}
              />
              <p class="muted small">{fresh ? 'The session gets its own branch and worktree, so it never waits for another session.' : 'The session runs in this worktree itself.'}</p>
            </div>
          )}
          <label>
            Agent
            {agents === null && !agentsError && <span class="muted"> (loading…)</span>}
            <select data-testid="agent-select" value={agent} onChange={(e) => setAgent(e.currentTarget.value)} disabled={!agents || agents.length === 0}>
              {!agents && <option value={BUILTIN_AGENT}>Claude Code</option>}
              {(agents || []).map((a) => (
                <option key={a.name} value={a.name} disabled={!a.available} title={a.error || ''} data-testid={`agent-${a.name}`}>
                  {agentLabel(a)}
                </option>
              ))}
            </select>
          </label>
          {agentsError && (
            <p class="error-text" role="alert" data-testid="agents-error">
              The gateway's agents are unknown: {agentsError}{' '}
              <button type="button" class="link" onClick={loadAgents}>
                Retry
              </button>
            </p>
          )}
          {chosen && !chosen.available && (
            <p class="error-text small" data-testid="agent-unavailable">
              {revealText(chosen.title || chosen.name)} cannot run: {revealText(chosen.error || 'unavailable')}
            </p>
          )}
          <label>
            Model
            <input
              data-testid="model"
              value={model}
              onInput={(e) => setModel(e.currentTarget.value)}
              placeholder={DEFAULT_MODEL}
              autocapitalize="none"
              spellcheck={false}
            />
          </label>
          <label>
            First prompt
            <textarea
              data-testid="prompt"
              rows={6}
              value={prompt}
              onInput={(e) => setPrompt(e.currentTarget.value)}
              placeholder="What should Claude do in this worktree?"
            />
          </label>
          {error && (
            <p class="error-text" role="alert" data-testid="create-error">
              {error}
            </p>
          )}
          {executorError && (
            <p class="error-text" role="alert" data-testid="executor-error">
              Sessions cannot start: {executorError}
            </p>
          )}
          <div class="actions">
            <a class="button" href="#/">
              Cancel
            </a>
            <button data-testid="create-session" class="primary" type="submit" disabled={busy || !worktree || !!executorError || (chosen && !chosen.available) || (useNew && !base.trim() && !selected.head)}>
              {busy ? 'Starting…' : 'Start session'}
            </button>
          </div>
        </form>
      </main>
    </div>
  );
}
