// The REST half of the contract in docs/api.md. Every call goes to the same
// origin with the login cookie; errors become ApiError with the server's
// human-readable message.

/** An error answer from the API: `status` and the server's `message`. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body || {};
  }
}

const listeners = new Set();

/** Calls `fn()` whenever the login is gone: an API answer 401, or loginEnded(). */
export function onUnauthorized(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Says the login is gone (the session socket closed with 4401): back to the login page. */
export function loginEnded(why) {
  listeners.forEach((fn) => fn(why));
}

/**
 * The answer `public/early.js` already asked for `GET path`, once; null
 * when it asked for no such thing (or it was taken).
 */
function takeEarly(path) {
  if (typeof window === 'undefined') return null;
  const early = window.__duraclawEarly;
  if (!early) {
    // The early script has not run: it must not ask for anything now.
    window.__duraclawEarly = false;
    return null;
  }
  if (!early.fetches || !early.fetches[path]) return null;
  const res = early.fetches[path];
  delete early.fetches[path];
  return res;
}

async function request(method, path, body, { quiet401 = false } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    const early = method === 'GET' && body === undefined ? takeEarly(path) : null;
    res = await (early || fetch(path, init));
  } catch (e) {
    throw new ApiError(0, 'cannot reach the Duraclaw server (network error)');
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    let message = (data && typeof data.error === 'string' && data.error) || `${res.status} ${res.statusText}`.trim();
    if (res.status === 429) {
      const secs = retryAfter(res, data);
      if (secs != null) message += ` (try again in ${secs} s)`;
    }
    const err = new ApiError(res.status, message, data);
    if (res.status === 429) err.retryAfterSecs = retryAfter(res, data);
    if (res.status === 401 && !quiet401) listeners.forEach((fn) => fn());
    throw err;
  }
  return data;
}

function retryAfter(res, data) {
  if (data && Number.isFinite(data.retry_after_secs)) return data.retry_after_secs;
  const h = Number.parseInt(res.headers.get('Retry-After') || '', 10);
  return Number.isFinite(h) ? h : null;
}

export const api = {
  me: () => request('GET', '/api/me', undefined, { quiet401: true }),
  login: (username, password) => request('POST', '/api/login', { username, password }, { quiet401: true }),
  logout: () => request('POST', '/api/logout'),
  status: () => request('GET', '/api/status'),
  worktrees: () => request('GET', '/api/worktrees'),
  agents: () => request('GET', '/api/agents'),
  sessions: () => request('GET', '/api/sessions'),
  session: (id) => request('GET', `/api/sessions/${encodeURIComponent(id)}`),
  createSession: (body) => request('POST', '/api/sessions', body),
  closeSession: (id) => request('POST', `/api/sessions/${encodeURIComponent(id)}/close`, {}),
  forkSession: (id, body) => request('POST', `/api/sessions/${encodeURIComponent(id)}/fork`, body),
  // Notifications (docs/notifications.md).
  pushKey: () => request('GET', '/api/push/key'),
  pushSubscriptions: () => request('GET', '/api/push/subscriptions'),
  pushSubscribe: (body) => request('POST', '/api/push/subscriptions', body),
  pushUnsubscribe: (id) => request('DELETE', `/api/push/subscriptions/${encodeURIComponent(id)}`),
  pushSettings: () => request('GET', '/api/push/settings'),
  putPushSettings: (settings) => request('PUT', '/api/push/settings', settings),
  pushDeliveries: (limit = 50) => request('GET', `/api/push/deliveries?limit=${limit}`),
  rules: () => request('GET', '/api/rules'),
  addRule: (body) => request('POST', '/api/rules', body),
  deleteRule: (id) => request('DELETE', `/api/rules/${encodeURIComponent(id)}`),
  rulePresets: () => request('GET', '/api/rules/presets'),
  applyPreset: (preset) => request('POST', '/api/rules/preset', { preset }),
  closeSession: (id, body) => request('POST', `/api/sessions/${encodeURIComponent(id)}/close`, body),
  diff: (id) => request('GET', `/api/sessions/${encodeURIComponent(id)}/diff`),
};
