import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { relTime } from '../format.js';
import { base64UrlToBytes, cleanDevice, deliveryFailed, deliveryText, guessDevice, normalizeSettings, pushSupport, subscriptionBody } from '../notify.js';
import { Header } from './Header.jsx';
import { Shown } from './Shown.jsx';

const SUPPORT_TEXT = {
  insecure: 'Notifications need HTTPS (or localhost): open Duraclaw at its https address.',
  unsupported: 'This browser cannot receive notifications (no service worker or Web Push).',
  denied: 'Notifications are blocked for this site: allow them in the browser’s site settings, then come back.',
};

/** The push subscription of this browser, if any. */
async function currentSubscription() {
  if (!('serviceWorker' in navigator)) return null;
  const reg = await navigator.serviceWorker.getRegistration('/');
  return reg ? reg.pushManager.getSubscription() : null;
}

function sameKey(a, b) {
  if (!a || !b) return false;
  const x = new Uint8Array(a);
  return x.length === b.length && x.every((v, i) => v === b[i]);
}

/** Asks for permission, subscribes with the server's key, and registers the
 * subscription under `device`. */
async function enableOnThisDevice(device) {
  const permission = await Notification.requestPermission();
  if (permission !== 'granted') throw new Error(permission === 'denied' ? SUPPORT_TEXT.denied : 'Notifications were not allowed.');
  await navigator.serviceWorker.register('/sw.js');
  const reg = await navigator.serviceWorker.ready;
  const { public_key } = await api.pushKey();
  const key = base64UrlToBytes(public_key);
  let sub = await reg.pushManager.getSubscription();
  if (sub && !sameKey(sub.options && sub.options.applicationServerKey, key)) {
    // Made with another server key: it cannot receive this server's pushes.
    await sub.unsubscribe();
    sub = null;
  }
  if (!sub) sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  return api.pushSubscribe(subscriptionBody(sub.toJSON(), device));
}

function When({ ms }) {
  if (!Number.isFinite(ms)) return <span class="muted">never</span>;
  return <span title={new Date(ms).toLocaleString()}>{relTime(ms)}</span>;
}

/** Settings: notifications on this device, the user's devices, when to
 * notify and what to show, and the recent deliveries. */
export function Settings({ user, onLogout }) {
  const [support, setSupport] = useState(() => pushSupport(window));
  const [subscribed, setSubscribed] = useState(null);
  const [device, setDevice] = useState(() => guessDevice(navigator.userAgent));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [done, setDone] = useState(null);
  const [devices, setDevices] = useState(null);
  const [settings, setSettings] = useState(null);
  const [deliveries, setDeliveries] = useState(null);
  const [unavailable, setUnavailable] = useState(false);

  const load = () => {
    const miss = (e) => {
      if (e.status === 404) setUnavailable(true);
      else setError(e.message);
      return null;
    };
    api.pushSubscriptions().then((list) => {
      setDevices(list || []);
      const mine = (list || []).find((d) => d.current);
      if (mine) setDevice(mine.device);
    }, miss);
    api.pushSettings().then((s) => setSettings(normalizeSettings(s)), miss);
    api.pushDeliveries(50).then((d) => setDeliveries(d || []), miss);
    currentSubscription().then((s) => setSubscribed(!!s), () => setSubscribed(false));
  };
  useEffect(load, []);

  const run = async (what, fn) => {
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      await fn();
      setDone(what);
    } catch (e) {
      setError(e.message || String(e));
    } finally {
      setBusy(false);
      setSupport(pushSupport(window));
      load();
    }
  };

  const enable = (e) => {
    e.preventDefault();
    run('Notifications are on for this device.', () => enableOnThisDevice(cleanDevice(device)));
  };
  const disable = () =>
    run('Notifications are off for this device.', async () => {
      const sub = await currentSubscription();
      if (sub) await sub.unsubscribe();
      for (const d of devices || []) if (d.current) await api.pushUnsubscribe(d.id);
    });
  const remove = (id) => run('Device removed.', () => api.pushUnsubscribe(id));
  const save = (next) => {
    const s = normalizeSettings(next);
    setSettings(s);
    run('Saved.', () => api.putPushSettings(s));
  };

  const blocked = SUPPORT_TEXT[support];
  return (
    <div class="page">
      <Header user={user} onLogout={onLogout} />
      <main class="form-main settings" data-testid="settings">
        <a class="back" href="#/">
          ← Sessions
        </a>
        <h1>Settings</h1>
        {error && (
          <p class="error-text" role="alert" data-testid="settings-error">
            {error}
          </p>
        )}
        {done && (
          <p class="notice" role="status" data-testid="settings-done">
            {done}
          </p>
        )}
        {unavailable && <p class="notice">This server does not send notifications.</p>}

        <section class="card" data-testid="this-device">
          <h2>Notifications on this device</h2>
          <p class="muted">A notification when an agent waits for you, with Approve and Deny right on it.</p>
          {blocked ? (
            <p class="notice" data-testid="push-unsupported">
              {blocked}
            </p>
          ) : (
            <form class="device-form" onSubmit={enable}>
              <label>
                Device name
                <input data-testid="device-name" value={device} maxLength={64} onInput={(e) => setDevice(e.currentTarget.value)} />
              </label>
              <button type="submit" class="primary" data-testid="enable-push" disabled={busy || unavailable}>
                {subscribed ? 'Save the name' : 'Enable notifications on this device'}
              </button>
              {subscribed && (
                <button type="button" data-testid="disable-push" disabled={busy} onClick={disable}>
                  Turn off on this device
                </button>
              )}
            </form>
          )}
        </section>

        <section class="card" data-testid="devices">
          <h2>Your devices</h2>
          {devices && devices.length === 0 && <p class="muted">No device receives notifications.</p>}
          {devices && devices.length > 0 && (
            <ul class="device-list">
              {devices.map((d) => (
                <li key={d.id} data-testid="device" data-current={d.current ? 'true' : 'false'}>
                  <div class="device-name">
                    <strong>
                      <Shown text={d.device} />
                    </strong>
                    {d.current && <span class="badge ok">this device</span>}
                    <span class="muted mono"> {d.endpoint_origin}</span>
                  </div>
                  <div class="muted">
                    Last delivered: <When ms={d.last_success_ms} /> · Last failure: <When ms={d.last_failure_ms} />
                    {d.last_failure && (
                      <span class="error-text">
                        {' '}
                        (<Shown text={d.last_failure} />)
                      </span>
                    )}
                  </div>
                  <button type="button" class="small-btn" data-testid="remove-device" disabled={busy} onClick={() => remove(d.id)}>
                    Remove
                  </button>
                </li>
              ))}
            </ul>
          )}
        </section>

        {settings && (
          <section class="card" data-testid="push-settings">
            <h2>When to notify</h2>
            {[
              ['on_question', 'An approval or a question is waiting'],
              ['on_turn_finished', 'A turn finished'],
              ['on_error', 'A session hit an error'],
            ].map(([k, label]) => (
              <label class="check" key={k}>
                <input type="checkbox" data-testid={`setting-${k}`} checked={settings[k]} disabled={busy} onChange={(e) => save({ ...settings, [k]: e.currentTarget.checked })} />
                {label}
              </label>
            ))}
            <h3>What a notification shows</h3>
            {[
              ['tool', 'The tool’s name only'],
              ['short', 'The tool and a short preview of its input'],
            ].map(([v, label]) => (
              <label class="check" key={v}>
                <input type="radio" name="preview" data-testid={`preview-${v}`} checked={settings.preview === v} disabled={busy} onChange={() => save({ ...settings, preview: v })} />
                {label}
              </label>
            ))}
          </section>
        )}

        {deliveries && (
          <section class="card" data-testid="deliveries">
            <h2>Recent deliveries</h2>
            {deliveries.length === 0 ? (
              <p class="muted">Nothing sent yet.</p>
            ) : (
              <ul class="delivery-list">
                {deliveries.map((d) => (
                  <li key={d.id} data-testid="delivery" data-status={d.status} class={deliveryFailed(d) ? 'failed' : ''}>
                    <When ms={d.updated_at_ms} /> · <Shown text={d.device || ''} /> · {d.kind} ·{' '}
                    {d.session_id && <a href={`#/s/${encodeURIComponent(d.session_id)}${d.question_id ? `?q=${encodeURIComponent(d.question_id)}` : ''}`}>session</a>} · {deliveryText(d)}
                  </li>
                ))}
              </ul>
            )}
          </section>
        )}
      </main>
    </div>
  );
}
