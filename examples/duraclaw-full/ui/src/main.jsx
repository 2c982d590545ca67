import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, onUnauthorized } from './api.js';
import { Login } from './components/Login.jsx';
import { SessionList } from './components/SessionList.jsx';
import { NewSession } from './components/NewSession.jsx';
import { SessionView } from './components/SessionView.jsx';
import { InboxView } from './components/Inbox.jsx';
import { inbox } from './inbox-store.js';
import './style.css';

function parseRoute() {
  const h = location.hash.replace(/^#/, '') || '/';
  const m = /^\/s\/([^/?#]+)/.exec(h);
  if (m) return { name: 'session', id: decodeURIComponent(m[1]) };
  if (h === '/new') return { name: 'new' };
  if (h === '/inbox') return { name: 'inbox' };
  return { name: 'list' };
}

/** Navigates to a hash route ("/", "/new", "/inbox", "/s/<id>"). */
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

  // The inbox stream runs while someone is logged in.
  const signedIn = !!(user && !user.offline);
  useEffect(() => {
    if (!signedIn) return undefined;
    inbox.start();
    return () => inbox.stop();
  }, [signedIn]);

  if (user === undefined) return <div class="boot">Loading…</div>;
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

  if (route.name === 'session') return <SessionView key={route.id} id={route.id} user={user} onLogout={logout} />;
  if (route.name === 'new') return <NewSession user={user} onLogout={logout} />;
  if (route.name === 'inbox') return <InboxView user={user} onLogout={logout} />;
  return <SessionList user={user} onLogout={logout} />;
}

render(<App />, document.getElementById('app'));
