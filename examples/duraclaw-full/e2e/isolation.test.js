// Scenario 8: a session is its owner's alone (another user gets 404, in the
// UI and from the API), and a WebSocket upgrade from another origin is
// refused even with the owner's cookie.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CONTROL_URL, DEMO_URL, OTHER_USER, createSession, launch, loggedIn, openSession, since } from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** Opens a WebSocket from `page` and says how it went: "open" or the close code. */
function tryWebSocket(page, url) {
  return page.evaluate(
    (url) =>
      new Promise((resolve) => {
        const ws = new WebSocket(url);
        ws.onopen = () => {
          ws.close();
          resolve('open');
        };
        ws.onclose = (e) => resolve(`closed ${e.code}`);
      }),
    url,
  );
}

test("another user gets 404 for the session; a cross-origin WebSocket upgrade is refused", async () => {
  const t0 = Date.now();
  const alice = await loggedIn(browser, DEMO_URL);
  const id = await createSession(alice, DEMO_URL, 'isolation', 'Fix the greeting');
  const own = await openSession(alice, id);
  const wsUrl = `${DEMO_URL.replace('http://', 'ws://')}/api/sessions/${encodeURIComponent(id)}/ws?after=0&compact=0`;

  // Bob: the UI says the session is not there; the API says 404 for it,
  // exactly as for a session that does not exist.
  const bob = await loggedIn(browser, DEMO_URL, OTHER_USER);
  const page = await bob.newPage();
  await page.goto(`/#/s/${encodeURIComponent(id)}`);
  await page.getByText('This session does not exist, or it is not yours.').waitFor();
  const statuses = await page.evaluate(async (id) => {
    const get = async (p) => (await fetch(p)).status;
    return { mine: await get(`/api/sessions/${encodeURIComponent(id)}`), none: await get('/api/sessions/NO-SUCH-SESSION'), list: await (await fetch('/api/sessions')).json() };
  }, id);
  assert.equal(statuses.mine, 404);
  assert.equal(statuses.none, 404);
  assert.ok(
    statuses.list.every((s) => s.session_id !== id && s.owner === OTHER_USER),
    `alice's session is not in bob's list (bob's own are): ${JSON.stringify(statuses.list)}`,
  );
  assert.equal(await tryWebSocket(page, wsUrl), 'closed 1006', "bob's upgrade is refused");

  // A page on another origin, with alice's cookie in the same browser: the
  // upgrade is refused (403, seen in the handshake), while alice's own page
  // on the right origin connects.
  const failures = [];
  const evil = await alice.newPage();
  evil.on('websocket', (ws) => ws.on('socketerror', (e) => failures.push(e)));
  await evil.goto(`${CONTROL_URL}/elsewhere`);
  assert.notEqual(new URL(evil.url()).origin, new URL(DEMO_URL).origin);
  assert.equal(await tryWebSocket(evil, wsUrl), 'closed 1006', 'the cross-origin upgrade is refused');
  assert.ok(failures.some((f) => /403/.test(f)), `the handshake got 403: ${JSON.stringify(failures)}`);
  assert.equal(await tryWebSocket(own, wsUrl), 'open', 'the same upgrade from the right origin opens');
  console.log(`isolation scenario: ${since(t0)}`);
  await alice.close();
  await bob.close();
});
