import { useEffect, useState } from 'preact/hooks';

/** Whether the browser says it is online, kept up to date. */
function useOnline() {
  const [online, setOnline] = useState(() => navigator.onLine !== false);
  useEffect(() => {
    const on = () => setOnline(true);
    const off = () => setOnline(false);
    window.addEventListener('online', on);
    window.addEventListener('offline', off);
    return () => {
      window.removeEventListener('online', on);
      window.removeEventListener('offline', off);
    };
  }, []);
  return online;
}

/** "You are offline" while the browser is, or while the server cannot be
 * reached (`unreachable`); the page then runs from the cached app shell. */
export function OfflineBanner({ unreachable }) {
  const online = useOnline();
  if (online && !unreachable) return null;
  return (
    <div class="banner bad offline-banner" role="status" data-testid="offline-banner">
      <strong>You are offline.</strong> {online ? 'The Duraclaw server cannot be reached.' : 'This device has no network.'} What you see may be out of date; it
      updates when the connection is back.
    </div>
  );
}
