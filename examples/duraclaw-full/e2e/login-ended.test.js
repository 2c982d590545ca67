// A login that ends while a session is open: its socket is closed with code
// 4401 and the page goes to the login form, without reconnecting.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { DEMO_URL, USER, PASSWORD, createScriptedSession, launch, loggedIn, openSession, since, toolCard, until } from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('logging out elsewhere with the same cookie sends the open session to the login page', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  const id = await createScriptedSession(ctx, DEMO_URL, 'login-ended', [
    { step: 'tool', name: 'Bash', input: { command: 'make deploy', description: 'Deploy' }, result: 'deployed' },
  ]);
  const sockets = [];
  const page = await ctx.newPage();
  page.on('websocket', (ws) => sockets.push(ws.url()));
  await page.goto(`/#/s/${encodeURIComponent(id)}`);
  await toolCard(page, 'Bash').getByTestId('approve').waitFor();
  // The inbox stream starts once the first screen is up: count after it.
  await until('the inbox stream opened', () => sockets.some((u) => u.includes('/api/inbox/ws')));
  const opened = sockets.length;

  // Another request with the same cookie ends the login.
  const r = await ctx.request.post('/api/logout', { headers: { Origin: DEMO_URL } });
  assert.ok(r.status() < 300, `logout: ${r.status()} ${await r.text()}`);
  await page.getByTestId('login-name').waitFor();
  assert.match(await page.getByTestId('login-why').innerText(), /login ended/i);
  assert.equal(await page.getByTestId('approve').count(), 0, 'no approval is offered once the login is gone');
  assert.equal(sockets.length, opened, `no reconnect after the close: ${sockets.join(', ')}`);
  console.log(`sent to the login page: ${since(t0)}`);

  // Logging in again returns to the session, with its question still open.
  await page.getByTestId('login-name').fill(USER);
  await page.getByTestId('login-password').fill(PASSWORD);
  await page.getByTestId('login-submit').click();
  await toolCard(page, 'Bash').getByTestId('approve').waitFor();
  await toolCard(page, 'Bash').getByTestId('deny').click();
  await toolCard(page, 'Bash').getByTestId('resolution').filter({ hasText: 'denied' }).waitFor();
  await ctx.close();
});
