// Scenario 4: two browsers (a laptop and a phone, each with its own login)
// on one session. One approves; the other sees the prompt resolved at once.
// Then the phone answers a question the laptop already decided, before the
// decision reached it: it is told who decided.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DEMO_URL,
  USER,
  assertExactlyOnce,
  createSession,
  launch,
  loggedIn,
  openSession,
  relaySocket,
  screenshot,
  since,
  toolCard,
} from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('two devices: one approves, the other sees it at once; a late second answer is told who decided', async () => {
  const t0 = Date.now();
  const laptopCtx = await loggedIn(browser, DEMO_URL);
  const phoneCtx = await loggedIn(browser, DEMO_URL);
  const id = await createSession(laptopCtx, DEMO_URL, 'two-devices', 'Fix the greeting');
  const laptop = await openSession(laptopCtx, id);
  const phonePage = await phoneCtx.newPage();
  const relay = await relaySocket(phonePage);
  await phonePage.goto(`/#/s/${encodeURIComponent(id)}`);
  const phone = phonePage;

  // Both see the approval prompt.
  await toolCard(laptop, 'Bash').getByTestId('approve').waitFor();
  await toolCard(phone, 'Bash').getByTestId('approve').waitFor();

  // The laptop approves; the phone's prompt turns into the decision at once.
  const clicked = Date.now();
  await toolCard(laptop, 'Bash').getByTestId('approve').click();
  await toolCard(phone, 'Bash').getByTestId('resolution').filter({ hasText: `approved by ${USER}` }).waitFor();
  const latency = Date.now() - clicked;
  assert.equal(await toolCard(phone, 'Bash').getByTestId('approve').count(), 0, 'no buttons left on the phone');
  assert.ok(latency < 3000, `the phone saw the decision after ${latency} ms`);
  console.log(`the phone saw the laptop's approval after ${latency} ms`);

  // The Edit prompt: the phone's network stalls right after it arrives.
  await toolCard(laptop, 'Edit').getByTestId('approve').waitFor();
  await toolCard(phone, 'Edit').getByTestId('approve').waitFor();
  relay.holding = true;
  await toolCard(laptop, 'Edit').getByTestId('deny-reason').fill('not on main');
  await toolCard(laptop, 'Edit').getByTestId('deny').click();
  await toolCard(laptop, 'Edit').getByTestId('resolution').filter({ hasText: `denied by ${USER}: not on main` }).waitFor();
  // The phone still shows the question and answers it.
  await toolCard(phone, 'Edit').getByTestId('approve').click();
  // Its answer goes out; the server's reply is what stalls.
  await toolCard(phone, 'Edit').getByText('sending…').waitFor();
  relay.release();
  const told = toolCard(phone, 'Edit').getByTestId('question-error');
  await told.waitFor();
  const message = await told.innerText();
  assert.match(message, new RegExp(`\\b${USER}\\b`), `the phone is told who decided: ${message}`);
  assert.match(message, /already|decided/i, message);
  await toolCard(phone, 'Edit').getByTestId('resolution').filter({ hasText: `denied by ${USER}: not on main` }).waitFor();
  const result = toolCard(laptop, 'Edit').getByTestId('tool-result');
  await result.waitFor();
  assert.match(await result.innerText(), /not on main/);
  console.log(`the phone's late answer was told: ${message}`);

  // Both end with the same transcript, each event once.
  await laptop.locator('[data-testid=question-form]').waitFor();
  await phone.locator('[data-testid=question-form]').waitFor();
  const a = await assertExactlyOnce(laptop, id);
  const b = await assertExactlyOnce(phone, id);
  assert.equal(a.n, b.n);
  await screenshot(phone, 'two-devices-phone');
  console.log(`two-devices scenario: ${since(t0)}`);
  await laptopCtx.close();
  await phoneCtx.close();
});
