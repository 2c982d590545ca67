// Duraclaw's service worker: notifications (Web Push) with Approve / Deny,
// and the app shell for offline use. See docs/notifications.md.
//
// - `push`: shows the payload's notification (one per question, by its
//   tag); `kind: "resolved"` replaces the question's notification.
// - `notificationclick`: Approve / Deny send ONE `POST /api/push/act` with
//   the action's token and show the outcome under the same tag; a tap
//   elsewhere opens the session at the question.
// - `fetch`: navigations network first, the cached shell when offline;
//   hashed assets cache first; `/api/` is never cached nor answered here.

const SHELL = 'duraclaw-shell-v1';
const STATIC = ['/', '/manifest.webmanifest', '/favicon.svg', '/early.js', '/icons/icon-192.png', '/icons/icon-512.png', '/icons/maskable-192.png', '/icons/maskable-512.png'];

/** The built files a page links (`/assets/…`), from its HTML. */
function linkedAssets(html) {
  const found = new Set();
  for (const m of html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)) found.add(m[1]);
  return [...found];
}

/**
 * Caches the built files the page links and the chunks their scripts load
 * on first use (the highlighter, the diff code: `./name-hash.js` imports).
 */
async function cacheAssets(cache, html) {
  const linked = linkedAssets(html);
  await cache.addAll(linked);
  const chunks = new Set();
  for (const path of linked.filter((p) => p.endsWith('.js'))) {
    const hit = await cache.match(path);
    const code = hit ? await hit.text() : '';
    for (const m of code.matchAll(/["'`]\.\/([\w.-]+\.js)["'`]/g)) chunks.add(`/assets/${m[1]}`);
  }
  await cache.addAll([...chunks].filter((p) => !linked.includes(p)));
}

/** Caches the page and everything it loads; the page's HTML. */
async function cacheShell() {
  const cache = await caches.open(SHELL);
  const page = await fetch('/', { cache: 'no-cache', credentials: 'same-origin' });
  if (!page.ok) throw new Error(`the page answered ${page.status}`);
  const html = await page.clone().text();
  await cache.put('/', page);
  await cache.addAll(STATIC.filter((p) => p !== '/'));
  await cacheAssets(cache, html);
}

self.addEventListener('install', (event) => {
  event.waitUntil(cacheShell().then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) if (name !== SHELL) await caches.delete(name);
      await self.clients.claim();
    })(),
  );
});

function isApi(url) {
  return url.pathname === '/api' || url.pathname.startsWith('/api/');
}

self.addEventListener('fetch', (event) => {
  const req = event.request;
  const url = new URL(req.url);
  // Not ours to answer: API calls and sockets, other origins, writes.
  if (url.origin !== self.location.origin || isApi(url) || req.method !== 'GET') return;
  if (req.mode === 'navigate') {
    event.respondWith(navigation(req));
  } else if (url.pathname.startsWith('/assets/')) {
    event.respondWith(cacheFirst(req));
  } else if (STATIC.includes(url.pathname)) {
    event.respondWith(networkFirst(req));
  }
});

/** The page from the network (kept as the shell, with its assets), else
 * the cached shell: the page then says it is offline. */
async function navigation(req) {
  try {
    const res = await fetch(req);
    if (res.ok && (res.headers.get('Content-Type') || '').startsWith('text/html')) {
      const html = await res.clone().text();
      const cache = await caches.open(SHELL);
      await cache.put('/', res.clone());
      // A new build's files, for the next time offline.
      cacheAssets(cache, html).catch(() => {});
    }
    return res;
  } catch (e) {
    const shell = await caches.match('/');
    if (shell) return shell;
    throw e;
  }
}

async function cacheFirst(req) {
  const hit = await caches.match(req);
  if (hit) return hit;
  const res = await fetch(req);
  if (res.ok) (await caches.open(SHELL)).put(req, res.clone());
  return res;
}

async function networkFirst(req) {
  try {
    const res = await fetch(req);
    if (res.ok) (await caches.open(SHELL)).put(req, res.clone());
    return res;
  } catch (e) {
    const hit = await caches.match(req);
    if (hit) return hit;
    throw e;
  }
}

// ---------------------------------------------------------------- push

const ICON = '/icons/icon-192.png';

/** The notification a payload asks for (payload v1, docs/notifications.md). */
function fromPayload(p) {
  if (!p || p.v !== 1 || typeof p.tag !== 'string') {
    return { title: 'Duraclaw', options: { body: 'Something needs your attention.', icon: ICON, data: { url: '/' } } };
  }
  const actions = Array.isArray(p.actions) ? p.actions.filter((a) => a && typeof a.action === 'string' && typeof a.token === 'string') : [];
  const options = {
    body: typeof p.body === 'string' ? p.body : '',
    tag: p.tag,
    icon: ICON,
    badge: ICON,
    timestamp: Date.now(),
    data: { url: typeof p.url === 'string' ? p.url : '/', session_id: p.session_id, question_id: p.question_id || null, kind: p.kind, actions },
  };
  if (p.kind === 'resolved') {
    // Replaces the question's notification quietly.
    options.silent = true;
  } else {
    options.renotify = true;
    if (p.kind === 'question') options.requireInteraction = true;
    if (actions.length) options.actions = actions.map((a) => ({ action: a.action, title: typeof a.title === 'string' ? a.title : a.action }));
  }
  return { title: typeof p.title === 'string' && p.title ? p.title : 'Duraclaw', options };
}

self.addEventListener('push', (event) => {
  let payload = null;
  try {
    payload = event.data ? event.data.json() : null;
  } catch {
    payload = null;
  }
  const { title, options } = fromPayload(payload);
  event.waitUntil(self.registration.showNotification(title, options));
});

/** What an action's answer says, for the notification that replaces it. */
async function outcome(res, action) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (res.ok) return action === 'deny' ? 'Denied' : 'Approved';
  const why = body && typeof body.error === 'string' ? body.error : `the server answered ${res.status}`;
  if (res.status === 409) return why.charAt(0).toUpperCase() + why.slice(1);
  if (res.status === 401) return 'Not signed in on this device: open Duraclaw to decide.';
  return `Not decided: ${why}`;
}

/** Sends the action's one request and shows its outcome under the tag. */
async function act(notification, action) {
  const data = notification.data || {};
  notification.close();
  let text;
  try {
    const res = await fetch('/api/push/act', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ token: action.token }),
    });
    text = await outcome(res, action.action);
  } catch {
    text = 'Could not reach Duraclaw: open the session to decide.';
  }
  await self.registration.showNotification(notification.title, {
    body: text,
    tag: notification.tag,
    icon: ICON,
    silent: true,
    data: { url: data.url || '/', session_id: data.session_id, question_id: data.question_id, kind: 'outcome', actions: [] },
  });
}

/** Focuses an open Duraclaw window on `url` (a hash route), or opens one. */
async function openAt(url) {
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const here = windows.find((w) => new URL(w.url).origin === self.location.origin);
  if (here) {
    here.postMessage({ type: 'duraclaw.open', url });
    // Focus needs the click's user activation; without it the window still
    // shows the question.
    await here.focus().catch(() => {});
    return;
  }
  await self.clients.openWindow(url);
}

self.addEventListener('notificationclick', (event) => {
  const n = event.notification;
  const data = n.data || {};
  const action = event.action ? (data.actions || []).find((a) => a.action === event.action) : null;
  if (action) {
    event.waitUntil(act(n, action));
    return;
  }
  n.close();
  event.waitUntil(openAt(data.url || '/'));
});
