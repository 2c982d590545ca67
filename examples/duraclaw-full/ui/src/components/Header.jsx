import { useInbox } from '../inbox-store.js';

/** The link to the inbox with the count of open questions, on every page. */
export function InboxBadge() {
  const state = useInbox();
  const n = state.items.size;
  return (
    <a
      class={`inbox-badge${n > 0 ? ' has-items' : ''}`}
      href="#/inbox"
      data-testid="inbox-badge"
      data-count={n}
      title={n > 0 ? `${n} waiting for you` : 'Nothing is waiting for you'}
      aria-label={`Inbox: ${n} waiting`}
    >
      Inbox <span class="count">{n}</span>
    </a>
  );
}

/** The top bar: brand (a link to the list), optional extra content, the inbox badge, user and logout. */
export function Header({ user, onLogout, children }) {
  return (
    <header class="topbar">
      <a class="brand small" href="#/" aria-label="All sessions">
        <span class="logo" aria-hidden="true" />
        <span class="brand-name">Duraclaw</span>
      </a>
      <div class="topbar-mid">{children}</div>
      {user && <InboxBadge />}
      {user && (
        <div class="topbar-user">
          <a class="link" href="#/rules" data-testid="rules-link" title="Approval rules: what runs without asking">
            Rules
          </a>
          <span class="muted user-name" title="Signed in">
            {user.name}
          </span>
          <a class="link" href="#/settings" data-testid="settings-link">
            Settings
          </a>
          <button type="button" class="link" data-testid="logout" onClick={onLogout}>
            Sign out
          </button>
        </div>
      )}
    </header>
  );
}

/** The gateway / executor banner from GET /api/status, or nothing. */
export function StatusBanner({ status, error }) {
  if (error)
    return (
      <div class="banner bad" role="status" data-testid="status-banner">
        Cannot reach the Duraclaw server: {error}
      </div>
    );
  const g = status && status.gateway;
  if (!g) return null;
  if (!g.connected) {
    return (
      <div class="banner bad" role="status" data-testid="status-banner">
        <strong>Gateway unreachable</strong>
        {g.url ? ` at ${g.url}` : ''}
        {g.error ? `: ${g.error}` : ''}. Sessions keep their history; running work resumes when it is back.
      </div>
    );
  }
  // `executor: null` alone only means this server does not know which one
  // the gateway runs; it is a problem only when there is an error.
  if (g.executor_error) {
    return (
      <div class="banner warn" role="status" data-testid="status-banner">
        <strong>New sessions cannot start.</strong> {g.executor_error}
      </div>
    );
  }
  return null;
}
