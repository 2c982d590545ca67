// Notifications and the installable app, in the real service worker
// (ui/public/sw.js): the whole chain a phone meets (subscribe, the host's
// real encrypted push to the push-service stand-in, its decrypted bytes
// delivered to the worker, Approve, the `resolved` push replacing the
// notification); a push delivered through the DevTools protocol shows
// a notification with Approve and Deny; Approve decides as the user on that
// device and the turn goes on; a replayed, expired or another user's token
// changes nothing; a tap elsewhere opens the session at the question; the
// app shell opens offline and says so, and no API answer is ever cached;
// the manifest installs.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  CONTROL_URL,
  DEMO_URL,
  OTHER_USER,
  USER,
  WAIT,
  createScriptedSession,
  createSession,
  getJson,
  launch,
  loggedIn,
  openSession,
  screenshot,
  serverLog,
  since,
  toolCard,
  until,
} from './lib/harness.js';

const DEVICE = 'Test phone';
/** A phone's viewport, for the screenshots the README shows. */
const PHONE = { width: 390, height: 760 };

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** A token as the deployment mints it (the control endpoint calls its `mint`). */
async function mint(claim) {
  const r = await fetch(`${CONTROL_URL}/push/mint`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(claim),
  });
  const text = await r.text();
  assert.equal(r.status, 200, `mint: ${text}`);
  return JSON.parse(text).token;
}

function claim(user, sessionId, questionId, decision, expiresAtMs = Date.now() + 600_000) {
  return { user, session_id: sessionId, question_id: questionId, decision, device: DEVICE, expires_at_ms: expiresAtMs };
}

/** A permission question's payload (docs/notifications.md, payload v1). */
async function questionPayload(sessionId, questionId) {
  return {
    v: 1,
    kind: 'question',
    tag: `q:${questionId}`,
    title: 'Bash wants to run',
    body: 'make deploy',
    session_id: sessionId,
    question_id: questionId,
    url: `/#/s/${sessionId}?q=${questionId}`,
    actions: [
      { action: 'approve', title: 'Approve', token: await mint(claim(USER, sessionId, questionId, 'approve')) },
      { action: 'deny', title: 'Deny', token: await mint(claim(USER, sessionId, questionId, 'deny')) },
    ],
  };
}

/** The page's service worker registration, once it is active and controls the page. */
async function activeWorker(ctx, page) {
  await page.evaluate(async () => {
    const reg = await navigator.serviceWorker.ready;
    if (!navigator.serviceWorker.controller) {
      await new Promise((resolve) => navigator.serviceWorker.addEventListener('controllerchange', resolve, { once: true }));
    }
    return reg.active.state;
  });
  return until('the service worker in the context', () => ctx.serviceWorkers().find((w) => w.url().endsWith('/sw.js')));
}

/** How many push events the worker has handled since the suite first asked (a listener beside the app's own). */
async function pushesHandled(worker) {
  return worker.evaluate(() => {
    if (self.e2ePushesHandled === undefined) {
      self.e2ePushesHandled = 0;
      self.addEventListener('push', () => {
        self.e2ePushesHandled += 1;
      });
    }
    return self.e2ePushesHandled;
  });
}

/** The bound on one delivery through CDP reaching the worker's push handler. */
const DELIVERY_WAIT = 5_000;

/**
 * Delivers `payload` (an object, or the text as a push service delivered it)
 * as a push message to the origin's service worker, through CDP, and waits
 * until the worker's push handler ran. Chromium answers the CDP call before
 * it starts the delivery and drops a delivery that fails on its side without
 * a word, so one that never reaches the worker is delivered again (as a
 * push service would), at most twice more, each retry logged.
 */
async function deliverPush(page, worker, payload) {
  const before = await pushesHandled(worker);
  const cdp = await page.context().newCDPSession(page);
  const registrations = [];
  cdp.on('ServiceWorker.workerRegistrationUpdated', (e) => registrations.push(...e.registrations));
  await cdp.send('ServiceWorker.enable');
  const reg = await until('the service worker registration over CDP', () => registrations.find((r) => r.scopeURL === `${DEMO_URL}/` && !r.isDeleted));
  const data = typeof payload === 'string' ? payload : JSON.stringify(payload);
  try {
    for (let attempt = 1; ; attempt++) {
      await cdp.send('ServiceWorker.deliverPushMessage', { origin: DEMO_URL, registrationId: reg.registrationId, data });
      try {
        await until('the push handled by the worker', async () => (await pushesHandled(worker)) > before, DELIVERY_WAIT);
        return;
      } catch (e) {
        if (attempt === 3) throw new Error(`a push delivered ${attempt} times never reached the worker: ${e.message}`);
        console.log(`the push did not reach the worker in ${DELIVERY_WAIT} ms (attempt ${attempt}); delivering it again`);
      }
    }
  } finally {
    await cdp.detach();
  }
}

/** The notifications shown under `tag`, as the page's registration lists them. */
async function notifications(page, tag) {
  return page.evaluate(async (tag) => {
    const reg = await navigator.serviceWorker.ready;
    return (await reg.getNotifications({ tag })).map((n) => ({ title: n.title, body: n.body, tag: n.tag, actions: n.actions.map((a) => ({ action: a.action, title: a.title })), data: n.data }));
  }, tag);
}

/** The first notification under `tag` that `pred` holds for, once shown; a timeout names what was shown instead. */
async function shownUnder(page, tag, what, pred) {
  let seen = [];
  try {
    return await until(what, async () => {
      seen = await notifications(page, tag);
      return seen.find(pred);
    });
  } catch (e) {
    throw new Error(`${e.message}; under ${tag}: ${JSON.stringify(seen.map(({ title, body, actions }) => ({ title, body, actions })))}`);
  }
}

/** Clicks the notification under `tag` in the worker, as the platform would (`action` '' for the body). */
async function click(worker, tag, action) {
  return worker.evaluate(
    async ({ tag, action }) => {
      const [n] = await self.registration.getNotifications({ tag });
      if (!n) return 'no notification';
      self.dispatchEvent(new NotificationEvent('notificationclick', { notification: n, action }));
      return 'clicked';
    },
    { tag, action },
  );
}

/** A POST to the control endpoint with a JSON body; its JSON answer. */
async function controlJson(route, body) {
  const r = await fetch(`${CONTROL_URL}${route}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const text = await r.text();
  assert.equal(r.status, 200, `${route}: ${text}`);
  return JSON.parse(text);
}

/** The first push the stand-in accepted at `endpoint` whose decrypted payload `pred` holds for: `{text, payload, arrival}`. */
async function pushArrived(endpoint, what, pred) {
  return until(what, async () => {
    const arrivals = await controlJson('/push/arrivals', { endpoint });
    const refused = arrivals.filter((a) => a.refused);
    assert.deepEqual(refused, [], 'every push passed the VAPID and decryption checks');
    for (const a of arrivals) {
      if (a.status !== 201 || a.text === null) continue;
      const payload = JSON.parse(a.text);
      if (pred(payload)) return { text: a.text, payload, arrival: a };
    }
    return null;
  });
}

async function act(ctx, token) {
  const r = await ctx.request.post('/api/push/act', { data: { token }, headers: { Origin: DEMO_URL } });
  return { status: r.status(), body: await r.json().catch(() => null) };
}

test('Approve on a notification decides as the user on that device; replays, expired and foreign tokens change nothing', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  await ctx.grantPermissions(['notifications'], { origin: DEMO_URL });
  const call = { step: 'tool', name: 'Bash', input: { command: 'make deploy', description: 'Deploy' }, result: 'deployed' };
  const id = await createScriptedSession(ctx, DEMO_URL, 'notifications', [call, { step: 'text', text: 'Deployed from your phone.' }]);
  const page = await openSession(ctx, id);
  const worker = await activeWorker(ctx, page);
  const card = toolCard(page, 'Bash');
  await card.getByTestId('approve').waitFor();
  const qid = await page.locator('[data-testid=question]').first().getAttribute('data-question-id');
  const tag = `q:${qid}`;
  console.log(`question open, worker active: ${since(t0)}`);

  // The push shows one notification with Approve and Deny.
  const payload = await questionPayload(id, qid);
  await deliverPush(page, worker, payload);
  const shown = await shownUnder(page, tag, 'the notification', (n) => n.actions.length);
  assert.equal(shown.title, 'Bash wants to run');
  assert.equal(shown.body, 'make deploy');
  assert.deepEqual(shown.actions, [
    { action: 'approve', title: 'Approve' },
    { action: 'deny', title: 'Deny' },
  ]);
  assert.equal(shown.data.url, `/#/s/${id}?q=${qid}`);

  // Tokens that must change nothing, through the API.
  const before = (await serverLog(page, id)).length;
  const bob = await loggedIn(browser, DEMO_URL, OTHER_USER);
  const foreign = await act(bob, payload.actions[0].token);
  assert.equal(foreign.status, 403, `another user's token: ${JSON.stringify(foreign.body)}`);
  const expired = await act(ctx, await mint(claim(USER, id, qid, 'approve', Date.now() - 1000)));
  assert.equal(expired.status, 410, `an expired token: ${JSON.stringify(expired.body)}`);
  const forged = await act(ctx, payload.actions[0].token.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')));
  assert.equal(forged.status, 400, `a forged token: ${JSON.stringify(forged.body)}`);
  assert.equal((await serverLog(page, id)).length, before, 'refused tokens logged nothing');
  assert.ok(await card.getByTestId('approve').isVisible(), 'the question still waits');
  await bob.close();

  // Approve, in the worker: one request, and the outcome under the same tag.
  assert.equal(await click(worker, tag, 'approve'), 'clicked');
  await card.getByTestId('resolution').filter({ hasText: `approved by ${USER} via notification ${DEVICE}` }).waitFor();
  await page.locator('[data-testid=assistant-message]', { hasText: 'Deployed from your phone.' }).waitFor();
  await page.locator('[data-testid=state-badge][data-reason=idle]').waitFor();
  const outcome = await shownUnder(page, tag, 'the outcome notification', (n) => n.body === 'Approved');
  assert.deepEqual(outcome.actions, [], 'the outcome has no actions');
  const log = await serverLog(page, id);
  const resolved = log.filter((e) => e.type === 'question.resolved').map((e) => e.event);
  assert.ok(resolved.length >= 1, `resolved: ${JSON.stringify(log.map((e) => e.type))}`);
  for (const r of resolved) {
    assert.equal(r.decision, 'allow');
    assert.deepEqual(r.by, { who: USER, client: `notification ${DEVICE}` });
  }
  assert.ok(log.some((e) => e.type === 'tool_result' && e.event.content === 'deployed'), 'the approved tool ran');
  await screenshot(page, 'approved-from-notification');
  console.log(`approved from the notification: ${since(t0)}`);

  // The same notification again (a replayed token): told who decided, nothing logged.
  const settled = log.length;
  await deliverPush(page, worker, payload);
  await shownUnder(page, tag, 'the replayed notification', (n) => n.actions.length);
  assert.equal(await click(worker, tag, 'deny'), 'clicked');
  const late = await shownUnder(page, tag, 'the late outcome', (n) => /^Already decided by/.test(n.body));
  assert.match(late.body, new RegExp(`^Already decided by ${USER} from notification ${DEVICE} \\(allow\\)`));
  const replay = await act(ctx, payload.actions[0].token);
  assert.equal(replay.status, 409, JSON.stringify(replay.body));
  assert.match(replay.body.error, new RegExp(`^already decided by ${USER}`));
  assert.equal((await serverLog(page, id)).length, settled, 'a replayed token logged nothing');

  // A tap elsewhere opens the session at the question.
  await page.goto('/#/');
  await page.getByTestId('settings-link').waitFor();
  await deliverPush(page, worker, { ...payload, actions: [] });
  await shownUnder(page, tag, 'the plain notification', () => true);
  assert.equal(await click(worker, tag, ''), 'clicked');
  await page.locator(`[data-question-id="${qid}"][data-focused=true]`).first().waitFor();
  assert.equal(await page.evaluate(() => location.hash), `#/s/${id}?q=${qid}`);
  console.log(`notification scenario: ${since(t0)}`);
  await ctx.close();
});

test('the chain a phone meets: subscribe, the real encrypted push, Approve from it, the resolved push replaces it', async () => {
  const t0 = Date.now();
  const device = 'Chain phone';
  const ctx = await loggedIn(browser, DEMO_URL);
  await ctx.grantPermissions(['notifications'], { origin: DEMO_URL });
  const page = await ctx.newPage();
  await page.goto('/');
  await page.getByTestId('settings-link').waitFor();
  const worker = await activeWorker(ctx, page);

  // (1) Subscribe from the page, with keys the stand-in made (headless
  // Chromium cannot subscribe to a push service).
  const { public_key } = await page.evaluate(() => fetch('/api/push/key').then((r) => r.json()));
  const body = await controlJson('/push/subscriber', { device, public_key });
  const made = await page.evaluate(async (body) => {
    const r = await fetch('/api/push/subscriptions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    return { status: r.status, body: await r.json() };
  }, body);
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const subscription = made.body;
  assert.equal(subscription.device, device);

  // (2) A session asks for permission: the demo turn (a plain prompt),
  // whose first tool call is Bash `ls`.
  const prompt = 'Fix the greeting and add a test';
  const id = await createSession(ctx, DEMO_URL, 'push-chain', prompt);

  // (3) The host's push, as the push service got it: TLS with the test CA,
  // VAPID checked, decrypted with the subscriber's key.
  const question = await pushArrived(body.endpoint, 'the question push at the stand-in', (p) => p.kind === 'question' && p.session_id === id);
  const qid = question.payload.question_id;
  const tag = `q:${qid}`;
  assert.equal(question.payload.tag, tag);
  assert.equal(question.payload.title, 'Approve Bash?');
  assert.equal(question.payload.url, `/#/s/${id}?q=${qid}`);
  assert.equal(question.arrival.urgency, 'high');
  console.log(`question push decrypted at the stand-in: ${since(t0)}`);

  // The inbox lists it (phone-sized, for the README).
  await page.setViewportSize(PHONE);
  await page.goto('/#/inbox');
  await page.locator(`[data-testid=inbox-item][data-session-id="${id}"]`).getByTestId('approve').waitFor();
  await screenshot(page, 'push-chain-inbox');

  // (4, 5) Exactly those bytes, delivered to the worker: the notification with Approve and Deny.
  await page.goto(`/#/s/${id}`);
  const card = toolCard(page, 'Bash');
  await card.getByTestId('approve').waitFor();
  assert.equal(await page.locator('[data-testid=question]').first().getAttribute('data-question-id'), qid);
  await deliverPush(page, worker, question.text);
  const shown = await shownUnder(page, tag, 'the notification', (n) => n.actions.length);
  assert.equal(shown.title, 'Approve Bash?');
  assert.equal(shown.body, question.payload.body);
  assert.deepEqual(shown.actions, [
    { action: 'approve', title: 'Approve' },
    { action: 'deny', title: 'Deny' },
  ]);
  assert.equal(shown.data.url, `/#/s/${id}?q=${qid}`);
  console.log(`notification "${shown.title}" / "${shown.body}" with Approve and Deny: ${since(t0)}`);

  // (6, 7) Approve in the worker: the turn goes on (Bash runs, the next
  // tool call asks), decided by this user on this device.
  assert.equal(await click(worker, tag, 'approve'), 'clicked');
  await card.getByTestId('resolution').filter({ hasText: `approved by ${USER} via notification ${device}` }).waitFor();
  await toolCard(page, 'Edit').getByTestId('approve').waitFor();
  const log = await serverLog(page, id);
  const resolved = log.filter((e) => e.type === 'question.resolved' && e.event.question_id === qid).map((e) => e.event);
  assert.ok(resolved.length >= 1, `resolved: ${JSON.stringify(log.map((e) => e.type))}`);
  for (const r of resolved) {
    assert.equal(r.decision, 'allow');
    assert.deepEqual(r.by, { who: USER, client: `notification ${device}` });
  }
  assert.ok(log.some((e) => e.type === 'tool_result' && e.event.content === 'README.md\nsrc'), 'the approved tool ran');
  await shownUnder(page, tag, "the action's outcome", (n) => n.body === 'Approved');
  await card.scrollIntoViewIfNeeded();
  await screenshot(page, 'push-chain-approved');

  // The resolved push for the same tag replaces the notification.
  const done = await pushArrived(body.endpoint, 'the resolved push at the stand-in', (p) => p.kind === 'resolved' && p.question_id === qid);
  assert.equal(done.payload.tag, tag);
  assert.equal(done.payload.title, `Approved by ${USER}`);
  await deliverPush(page, worker, done.text);
  const replaced = await until('the replaced notification', async () => {
    const list = await notifications(page, tag);
    return list.length === 1 && list[0].title === `Approved by ${USER}` ? list[0] : null;
  });
  assert.equal(replaced.body, done.payload.body);
  assert.deepEqual(replaced.actions, [], 'the replaced notification has no actions');
  console.log(`resolved push replaced the notification: ${since(t0)}`);

  // Settings lists the subscription, this device, delivered to.
  await page.goto('/#/settings');
  const row = page.getByTestId('device').filter({ hasText: device });
  await row.waitFor();
  assert.equal(await row.getAttribute('data-current'), 'true');
  await until('a last success in the device list', async () => {
    const text = await row.innerText();
    return /Last delivered: (?!never)/.test(text) && /Last failure: never/.test(text);
  });
  const [listed] = (await getJson(ctx, '/api/push/subscriptions')).filter((s) => s.id === subscription.id);
  assert.ok(Number.isFinite(listed.last_success_ms), JSON.stringify(listed));
  // The triggers are checkboxes beside their labels, not stretched across the card.
  const box = await page.getByTestId('setting-on_question').boundingBox();
  assert.ok(box && box.width < 40, `the checkbox is ${JSON.stringify(box)}`);
  await screenshot(page, 'push-chain-settings');

  // Nothing more for the rest of the suite: the session ends, the subscription goes.
  const closed = await ctx.request.post(`/api/sessions/${encodeURIComponent(id)}/close`, { headers: { Origin: DEMO_URL } });
  assert.equal(closed.status(), 200, await closed.text());
  const gone = await page.evaluate((id) => fetch(`/api/push/subscriptions/${encodeURIComponent(id)}`, { method: 'DELETE' }).then((r) => r.status), subscription.id);
  assert.equal(gone, 204);
  console.log(`push chain: ${since(t0)}`);
  await ctx.close();
});

test('the app installs: manifest, icons, service worker', async () => {
  const ctx = await loggedIn(browser, DEMO_URL);
  const page = await ctx.newPage();
  await page.goto('/');
  assert.equal(await page.locator('link[rel=manifest]').getAttribute('href'), '/manifest.webmanifest');
  const m = await ctx.request.get('/manifest.webmanifest');
  assert.equal(m.status(), 200);
  assert.match(m.headers()['content-type'], /^application\/(manifest\+)?json/);
  const manifest = await m.json();
  assert.equal(manifest.name, 'Duraclaw');
  assert.equal(manifest.short_name, 'Duraclaw');
  assert.equal(manifest.start_url, '/');
  assert.equal(manifest.display, 'standalone');
  const sizes = new Set();
  for (const icon of manifest.icons) {
    const r = await ctx.request.get(icon.src);
    assert.equal(r.status(), 200, icon.src);
    assert.equal(r.headers()['content-type'], 'image/png', icon.src);
    const png = await r.body();
    // The PNG's IHDR: width and height at bytes 16..24.
    const [w, h] = [png.readUInt32BE(16), png.readUInt32BE(20)];
    assert.equal(icon.sizes, `${w}x${h}`, icon.src);
    sizes.add(`${icon.sizes} ${icon.purpose}`);
  }
  for (const want of ['192x192 any', '512x512 any', '192x192 maskable', '512x512 maskable']) assert.ok(sizes.has(want), `${want} in ${[...sizes]}`);
  const sw = await ctx.request.get('/sw.js');
  assert.equal(sw.status(), 200);
  assert.match(sw.headers()['content-type'], /javascript/);
  // Settings, from the top bar: notifications on this device, named.
  await page.getByTestId('settings-link').click();
  await page.getByTestId('this-device').waitFor();
  assert.equal(await page.evaluate(() => location.hash), '#/settings');
  assert.equal(await page.getByTestId('device-name').inputValue(), 'Chrome on Linux');
  assert.ok(await page.getByTestId('enable-push').isVisible());
  await screenshot(page, 'settings');
  await ctx.close();
});

test('offline, the app shell opens and says so; no API answer was ever cached', async () => {
  const ctx = await loggedIn(browser, DEMO_URL);
  const page = await ctx.newPage();
  await page.goto('/');
  await page.getByTestId('settings-link').waitFor();
  const worker = await activeWorker(ctx, page);
  // Use the API while the worker controls the page.
  assert.equal(await page.evaluate(() => fetch('/api/sessions').then((r) => r.status)), 200);

  await ctx.setOffline(true);
  const network = await worker.evaluate(() => fetch('/api/health').then(() => 'reached', () => 'offline'));
  assert.equal(network, 'offline', 'the worker has no network either');
  await page.reload();
  await page.getByTestId('offline-banner').waitFor();
  assert.match(await page.getByTestId('offline-banner').innerText(), /offline/i);
  assert.ok(await page.locator('.brand-name').isVisible(), 'the shell is there');
  assert.equal(await page.evaluate(() => fetch('/api/sessions').then(() => 'answered', () => 'failed')), 'failed', 'no API answer comes from a cache');
  const cached = await page.evaluate(async () => {
    const out = [];
    for (const name of await caches.keys()) for (const r of await (await caches.open(name)).keys()) out.push(new URL(r.url).pathname);
    return out;
  });
  assert.ok(cached.includes('/'), `the page is cached: ${cached}`);
  assert.ok(cached.some((p) => p.startsWith('/assets/')), `the assets are cached: ${cached}`);
  assert.ok(cached.includes('/manifest.webmanifest') && cached.includes('/icons/icon-192.png'), `manifest and icons: ${cached}`);
  assert.deepEqual(
    cached.filter((p) => p === '/api' || p.startsWith('/api/')),
    [],
    'nothing under /api/ is cached',
  );
  await screenshot(page, 'offline-shell');
  await ctx.setOffline(false);
  await page.reload();
  await until('the banner to go', async () => (await page.getByTestId('offline-banner').count()) === 0, WAIT);
  await ctx.close();
});
