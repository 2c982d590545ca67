import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';

export function Login({ onLogin, why }) {
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [waitUntil, setWaitUntil] = useState(0);
  const [, tick] = useState(0);

  useEffect(() => {
    if (!waitUntil) return undefined;
    const t = setInterval(() => {
      if (Date.now() >= waitUntil) setWaitUntil(0);
      tick((n) => n + 1);
    }, 1000);
    return () => clearInterval(t);
  }, [waitUntil]);

  const submit = async (e) => {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      const r = await api.login(name.trim(), password);
      setPassword('');
      onLogin(r && r.user ? r.user : { name: name.trim() });
    } catch (err) {
      if (err.status === 429 && Number.isFinite(err.retryAfterSecs)) {
        setError((err.body && err.body.error) || 'Too many attempts.');
        setWaitUntil(Date.now() + err.retryAfterSecs * 1000);
      } else {
        setError(err.message);
      }
    } finally {
      setBusy(false);
    }
  };

  const wait = waitUntil ? Math.max(0, Math.ceil((waitUntil - Date.now()) / 1000)) : 0;

  return (
    <main class="login">
      <form class="card login-card" onSubmit={submit}>
        <h1 class="brand">
          <span class="logo" aria-hidden="true" />
          Duraclaw
        </h1>
        <p class="muted">Sign in to watch and steer your Claude Code sessions.</p>
        {why && (
          <p class="notice" role="status" data-testid="login-why">
            {why}
          </p>
        )}
        <label>
          Name
          <input
            data-testid="login-name"
            name="username"
            autocomplete="username"
            autocapitalize="none"
            spellcheck={false}
            required
            value={name}
            onInput={(e) => setName(e.currentTarget.value)}
          />
        </label>
        <label>
          Password
          <input
            data-testid="login-password"
            name="password"
            type="password"
            autocomplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        {error && (
          <p class="error-text" role="alert" data-testid="login-error">
            {error}
            {wait > 0 && <span class="wait"> — try again in {wait} s</span>}
          </p>
        )}
        <button data-testid="login-submit" class="primary" type="submit" disabled={busy || wait > 0}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
