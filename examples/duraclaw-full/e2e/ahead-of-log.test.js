// A page whose copy of a session is from another history (it holds an event
// past the server's last seq): when it reconnects with that seq, the server
// answers `ahead_of_log` and closes with 4409; the page drops its copy and
// loads the session again from seq 1.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DEMO_URL,
  assertExactlyOnce,
  connected,
  createScriptedSession,
  launch,
  loggedIn,
  pageSeqs,
  relaySocket,
  serverLog,
  since,
  transcriptText,
  until,
} from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('a page ahead of the log drops its copy and reloads the transcript from seq 1', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  const id = await createScriptedSession(ctx, DEMO_URL, 'ahead-of-log', [{ step: 'text', text: 'The only answer.' }]);
  const page = await ctx.newPage();
  const relay = await relaySocket(page);
  await page.goto(`/#/s/${encodeURIComponent(id)}`);
  await connected(page);
  await page.locator('[data-testid=state-badge][data-reason=idle]').waitFor();
  // The server's last seq, from what it sent (the page's own sockets only:
  // the harness's log reader would be one more connection).
  const lastSent = () => Math.max(0, ...relay.toPage.filter((f) => f.type === 'event').map((f) => f.seq));
  await until('the page to apply all it was sent', async () => (await pageSeqs(page)).last === lastSent());
  const before = { n: lastSent() };
  const shown = await transcriptText(page);

  // An event the server never logged reaches the page: its copy is now
  // from another history, one seq past the server's log.
  const other = 'A line from another history.';
  relay.sockets[0].send(JSON.stringify({ type: 'event', seq: before.n + 1, event: { type: 'assistant', message_id: 'm-other', phase: 'final', text: other } }));
  await page.locator('[data-testid=assistant-message]', { hasText: other }).waitFor();
  assert.equal((await pageSeqs(page)).last, before.n + 1);

  // The connection breaks; the page comes back asking for what follows.
  relay.sockets[0].close({ code: 1012, reason: 'connection lost' });
  await until('the page to reconnect twice (ahead, then anew)', () => relay.urls.length >= 3);
  const epoch = relay.toPage.find((f) => f.type === 'snapshot').epoch;
  assert.match(relay.urls[1], new RegExp(`after=${before.n + 1}${epoch ? `&epoch=${epoch}` : ''}&compress=deflate-raw$`));
  assert.ok(
    relay.toPage.some((f) => f.type === 'error' && f.code === 'ahead_of_log'),
    'the server said the page is ahead of its log',
  );
  assert.match(relay.urls[2], /[?&]tail=\d+&compress=deflate-raw$/, 'a dropped copy opens anew with the tail');
  await connected(page);

  // The copy was dropped and loaded again: the server's events, each once.
  await page.locator('[data-testid=assistant-message]', { hasText: other }).waitFor({ state: 'detached' });
  const again = await assertExactlyOnce(page, id);
  assert.equal(again.n, before.n);
  assert.deepEqual(await transcriptText(page), shown);
  assert.deepEqual(
    (await serverLog(page, id)).map((e) => e.seq),
    (await pageSeqs(page)).seqs,
  );
  assert.equal(await page.evaluate(() => window.__duraclaw.resets), 1);
  assert.equal(await page.getByRole('alert').filter({ hasText: 'Server:' }).count(), 0, 'no error banner for it');
  console.log(`reloaded after ahead_of_log: ${since(t0)}`);
  await ctx.close();
});
