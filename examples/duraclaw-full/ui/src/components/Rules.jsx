import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { groupByScope, ruleWhere, SCOPE_TITLES } from '../rules.js';
import { Header } from './Header.jsx';
import { Shown } from './Shown.jsx';

/**
 * The user's approval rules (`#/rules`): listed by scope with remove
 * buttons, a form to add one, and the presets to start from. What each
 * rule matches is in docs/approvals.md.
 */
export function Rules({ user, onLogout }) {
  const [rules, setRules] = useState(null);
  const [presets, setPresets] = useState([]);
  const [worktrees, setWorktrees] = useState([]);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [form, setForm] = useState({ scope: 'user', worktree: '', session_id: '', rule: '', action: 'allow' });

  const load = () => {
    api
      .rules()
      .then((r) => setRules(Array.isArray(r) ? r : []))
      .catch((e) => e.status !== 401 && setError(e.message));
  };
  useEffect(() => {
    load();
    api
      .rulePresets()
      .then((p) => setPresets(Array.isArray(p) ? p : []))
      .catch(() => {});
    api
      .worktrees()
      .then((w) => setWorktrees(Array.isArray(w) ? w : []))
      .catch(() => {});
  }, []);

  const act = async (what) => {
    setBusy(true);
    setError(null);
    try {
      await what();
      load();
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };

  const add = (e) => {
    e.preventDefault();
    const body = { scope: form.scope, rule: form.rule.trim(), action: form.action };
    if (form.scope === 'worktree') body.worktree = form.worktree;
    if (form.scope === 'session') body.session_id = form.session_id.trim();
    act(async () => {
      await api.addRule(body);
      setForm((f) => ({ ...f, rule: '' }));
    });
  };
  const set = (k) => (e) => {
    const v = e.currentTarget.value;
    setForm((f) => ({ ...f, [k]: v }));
  };

  return (
    <div class="page">
      <Header user={user} onLogout={onLogout} />
      <main class="form-main rules-main">
        <a class="back" href="#/">
          ← Sessions
        </a>
        <section class="card">
          <h2>Approval rules</h2>
          <p class="muted">
            A rule lets a tool call run without asking, asks, or refuses it: <code>Read</code>, <code>Bash(git status*)</code>,{' '}
            <code>Edit(src/**)</code>. A deny always wins; otherwise the most specific scope decides. With no rule, you are asked.
          </p>
          {error && (
            <p class="error-text" role="alert" data-testid="rules-error">
              {error}
            </p>
          )}
          {rules === null && !error && <p class="muted">Loading…</p>}
          {rules && rules.length === 0 && (
            <p class="muted" data-testid="no-rules">
              No rules: every tool call asks.
            </p>
          )}
          {groupByScope(rules).map((g) => (
            <div key={g.scope} class="rule-group" data-testid="rule-group" data-scope={g.scope}>
              <h3>{g.title}</h3>
              <ul class="rules">
                {g.rules.map((r) => (
                  <li key={r.id} class="rule-row" data-testid="rule-row" data-rule={r.rule} data-action={r.action} data-scope={r.scope}>
                    <span class={`badge action-${r.action}`}>{r.action}</span> <code class="rule-text">{r.rule}</code>{' '}
                    <span class="muted small mono">
                      <Shown text={ruleWhere(r)} />
                    </span>
                    <button type="button" class="link danger" data-testid="rule-remove" disabled={busy} onClick={() => act(() => api.deleteRule(r.id))}>
                      Remove
                    </button>
                  </li>
                ))}
              </ul>
            </div>
          ))}
        </section>
        <form class="card rule-form" onSubmit={add} data-testid="rule-form">
          <h3>Add a rule</h3>
          <label>
            Rule
            <input
              data-testid="rule-text"
              value={form.rule}
              onInput={set('rule')}
              placeholder="Bash(git status*)"
              autocapitalize="none"
              spellcheck={false}
              required
            />
          </label>
          <label>
            Action
            <select data-testid="rule-action" value={form.action} onChange={set('action')}>
              <option value="allow">allow (run without asking)</option>
              <option value="ask">ask</option>
              <option value="deny">deny (never run)</option>
            </select>
          </label>
          <label>
            Scope
            <select data-testid="rule-scope" value={form.scope} onChange={set('scope')}>
              {['user', 'worktree', 'session'].map((s) => (
                <option key={s} value={s}>
                  {SCOPE_TITLES[s]}
                </option>
              ))}
            </select>
          </label>
          {form.scope === 'worktree' && (
            <label>
              Worktree
              <select data-testid="rule-worktree" value={form.worktree} onChange={set('worktree')} required>
                <option value="">Choose a worktree</option>
                {worktrees.map((w) => (
                  <option key={w.path} value={w.path}>
                    {w.path}
                  </option>
                ))}
              </select>
            </label>
          )}
          {form.scope === 'session' && (
            <label>
              Session id
              <input data-testid="rule-session" value={form.session_id} onInput={set('session_id')} required spellcheck={false} />
            </label>
          )}
          <div class="actions">
            <button type="submit" class="primary" data-testid="rule-add" disabled={busy}>
              Add rule
            </button>
          </div>
        </form>
        {presets.length > 0 && (
          <section class="card">
            <h3>Start from a preset</h3>
            <ul class="presets">
              {presets.map((p) => (
                <li key={p.id}>
                  <button type="button" data-testid="rule-preset" data-preset={p.id} disabled={busy || !p.rules.length} onClick={() => act(() => api.applyPreset(p.id))}>
                    {p.title}
                  </button>{' '}
                  <span class="muted small">
                    {p.rules.length ? p.rules.map((r) => `${r.action} ${r.rule}`).join(', ') : 'no rules: every call asks (remove the rules above)'}
                  </span>
                </li>
              ))}
            </ul>
          </section>
        )}
      </main>
    </div>
  );
}
