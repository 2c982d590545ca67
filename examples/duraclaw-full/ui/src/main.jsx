import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, onUnauthorized } from './api.js';
import { Login } from './components/Login.jsx';
import { SessionList } from './components/SessionList.jsx';
import { NewSession } from './components/NewSession.jsx';
import { SessionView } from './components/SessionView.jsx';
import { Settings } from './components/Settings.jsx';
import { OfflineBanner } from './components/Offline.jsx';
import { questionParam } from './notify.js';
import { Rules } from './components/Rules.jsx';
import { InboxView } from './components/Inbox.jsx';
import { inbox } from './inbox-store.js';
import { highlighter } from './markdown.js';
import { diffLib } from './components/Tool.jsx';
import { whenIdle } from './idle.js';
import './style.css';

function parseRoute() {
  const h = location.hash.replace(/^#/, '') || '/';
  const m = /^\/s\/([^/?#]+)/.exec(h);
  if (m) return { name: 'session', id: decodeURIComponent(m[1]), q: questionParam(h) };
  if (h === '/new') return { name: 'new' };
  if (h === '/settings') return { name: 'settings' };
  if (h === '/rules') return { name: 'rules' };
  if (h === '/inbox') return { name: 'inbox' };
  return { name: 'list' };
}

/** Navigates to a hash route ("/", "/new", "/inbox", "/rules", "/settings", "/s/<id>"). */
export function go(path) {
  location.hash = '#' + path;
}

function App() {
  const [user, setUser] = useState(undefined);
  const [route, setRoute] = useState(parseRoute);
  const [why, setWhy] = useState(null);

  useEffect(() => {
    const onHash = () => setRoute(parseRoute());
    window.addEventListener('hashchange', onHash);
    const off = onUnauthorized((reason) => {
      setWhy(reason || null);
      setUser(null);
    });
    api
      .me()
      .then((r) => setUser(r && r.user ? r.user : null))
      .catch((e) => setUser(e.status === 401 ? null : { name: '?', offline: true }));
    return () => {
      window.removeEventListener('hashchange', onHash);
      off();
    };
  }, []);

  // The inbox stream runs while someone is logged in; it starts once the
  // first screen is up (idle), not in its way.
  const signedIn = !!(user && !user.offline);
  useEffect(() => {
    if (!signedIn) return undefined;
    const start = afterFirstScreen(() => inbox.start());
    return () => {
      start.cancel();
      inbox.stop();
    };
  }, [signedIn]);

  // The highlighter and the diff code are their own chunks, loaded on first
  // use; fetch them once the first screen is up so they are there (and in
  // the offline cache) before anyone needs them.
  useEffect(() => {
    const fetchChunks = afterFirstScreen(() => {
      highlighter.load().catch(() => {});
      diffLib.load().catch(() => {});
    });
    return () => fetchChunks.cancel();
  }, []);

  // A session opens while the login is checked (its stream, meta and the
  // login check go out together); a 401 from any of them shows the login.
  if (user === undefined && route.name !== 'session') return <div class="boot">Loading…</div>;
  return (
    <>
      <OfflineBanner unreachable={!!user && user.offline} />
      <View user={user} route={route} why={why} setWhy={setWhy} setUser={setUser} />
    </>
  );
}

function View({ user, route, why, setWhy, setUser }) {
  if (user === null)
    return (
      <Login
        why={why}
        onLogin={(u) => {
          setWhy(null);
          setUser(u);
        }}
      />
    );

  const logout = async () => {
    try {
      await api.logout();
    } catch {
      /* the cookie is cleared either way */
    }
    setUser(null);
  };

  if (route.name === 'session') return <SessionView key={route.id} id={route.id} focus={route.q} user={user} onLogout={logout} />;
  if (route.name === 'new') return <NewSession user={user} onLogout={logout} />;
  if (route.name === 'settings') return <Settings user={user} onLogout={logout} />;
  if (route.name === 'rules') return <Rules user={user} onLogout={logout} />;
  if (route.name === 'inbox') return <InboxView user={user} onLogout={logout} />;
  return <SessionList user={user} onLogout={logout} />;
}

/**
 * Runs `fn` once the first screen is up and the page is idle: a second
 * after the app started, then when idle (at most a second more).
 * `cancel()` stops it.
 */
function afterFirstScreen(fn) {
  let idle = null;
  const timer = setTimeout(() => {
    idle = whenIdle(fn);
  }, 1000);
  return {
    cancel: () => {
      clearTimeout(timer);
      if (idle) idle.cancel();
    },
  };
}

// The service worker: notifications, and the app shell offline. A tap on a
// notification asks an open window to show the session at its question.
// Registered once the page has loaded, out of the first screen's way.
if ('serviceWorker' in navigator && window.isSecureContext) {
  window.addEventListener('load', () => whenIdle(() => navigator.serviceWorker.register('/sw.js').catch(() => {})), { once: true });
  navigator.serviceWorker.addEventListener('message', (e) => {
    const url = e.data && e.data.type === 'duraclaw.open' && typeof e.data.url === 'string' ? e.data.url : null;
    if (url && url.startsWith('/#/')) location.hash = url.slice(2);
  });
  navigator.serviceWorker.startMessages();
}

render(<App />, document.getElementById('app'));
