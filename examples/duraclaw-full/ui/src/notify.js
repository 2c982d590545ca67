// The pure parts of notifications on this device: the VAPID key's bytes,
// the subscription body the server takes, a default device name, the
// question a route points at, and how a delivery is described.

/** The bytes of a base64url string (the VAPID public key). */
export function base64UrlToBytes(text) {
  const clean = String(text || '').trim().replace(/-/g, '+').replace(/_/g, '/');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(clean)) throw new Error('the server key is not base64url');
  const padded = clean + '='.repeat((4 - (clean.length % 4)) % 4);
  const raw = atob(padded);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

/** The most characters of a device name. */
export const MAX_DEVICE = 64;

/** The `POST /api/push/subscriptions` body for a subscription (its
 * `toJSON()`) and a device name. */
export function subscriptionBody(json, device) {
  const keys = (json && json.keys) || {};
  if (!json || typeof json.endpoint !== 'string' || !keys.p256dh || !keys.auth) {
    throw new Error('the browser gave a subscription without an endpoint or keys');
  }
  return { endpoint: json.endpoint, keys: { p256dh: keys.p256dh, auth: keys.auth }, device: cleanDevice(device) };
}

/** A device name as sent: no control characters, trimmed, bounded; never empty. */
export function cleanDevice(name) {
  const text = String(name || '')
    .replace(/\p{Cc}/gu, '')
    .trim()
    .slice(0, MAX_DEVICE)
    .trim();
  return text || 'This device';
}

/** "Chrome on Android", "Firefox on Linux", … from a user agent. */
export function guessDevice(ua) {
  const s = String(ua || '');
  const browser = /Edg\//.test(s)
    ? 'Edge'
    : /Firefox\//.test(s)
      ? 'Firefox'
      : /(Chrome|Chromium)\//.test(s)
        ? 'Chrome'
        : /Safari\//.test(s)
          ? 'Safari'
          : 'Browser';
  const os = /Android/.test(s)
    ? 'Android'
    : /iPhone|iPad|iPod/.test(s)
      ? 'iOS'
      : /Mac OS X|Macintosh/.test(s)
        ? 'macOS'
        : /Windows/.test(s)
          ? 'Windows'
          : /CrOS/.test(s)
            ? 'ChromeOS'
            : /Linux/.test(s)
              ? 'Linux'
              : null;
  return os ? `${browser} on ${os}` : browser;
}

/** The question a hash route points at (`/s/<id>?q=<question id>`), or null. */
export function questionParam(hash) {
  const h = String(hash || '').replace(/^#/, '');
  const i = h.indexOf('?');
  if (i < 0) return null;
  for (const pair of h.slice(i + 1).split('&')) {
    const [k, v] = pair.split('=');
    if (k === 'q' && v) {
      try {
        return decodeURIComponent(v);
      } catch {
        return null;
      }
    }
  }
  return null;
}

const STATUS_TEXT = {
  sending: 'sending',
  accepted: 'accepted by the push service',
  retrying: 'retrying',
  failed: 'failed',
  removed: 'subscription removed',
};

/** A delivery's status in words, with why when it did not go through. */
export function deliveryText(d) {
  if (!d) return '';
  let text = STATUS_TEXT[d.status] || String(d.status || 'unknown');
  const why = [];
  if (Number.isFinite(d.http_status)) why.push(`HTTP ${d.http_status}`);
  if (typeof d.error === 'string' && d.error) why.push(d.error);
  if (why.length && d.status !== 'accepted') text += `: ${why.join(', ')}`;
  if (Number.isFinite(d.attempts) && d.attempts > 1) text += ` (${d.attempts} attempts)`;
  return text;
}

/** Whether a delivery's status is a failure the user should see. */
export function deliveryFailed(d) {
  return !!d && (d.status === 'failed' || d.status === 'removed');
}

/** The notification settings with every field the server takes, from what
 * it gave (missing fields get their defaults). */
export function normalizeSettings(s) {
  const v = s || {};
  return {
    on_question: v.on_question !== false,
    on_turn_finished: v.on_turn_finished === true,
    on_error: v.on_error !== false,
    preview: v.preview === 'short' ? 'short' : 'tool',
  };
}

/** What this browser can do: `unsupported` (no service worker, push or
 * notifications), `insecure` (not a secure context), or the permission
 * (`default`, `granted`, `denied`). */
export function pushSupport(win) {
  const w = win || {};
  if (w.isSecureContext === false) return 'insecure';
  const nav = w.navigator || {};
  if (!('serviceWorker' in nav) || !w.PushManager || !w.Notification) return 'unsupported';
  return w.Notification.permission || 'default';
}
