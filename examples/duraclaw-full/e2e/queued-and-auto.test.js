// What the session log says about a message sent mid-turn and about a call
// "Allow for this session" let through, as a person sees it: the message is
// labelled queued (not read mid-stream), and the call that ran with no
// question says so on its own card.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { DEMO_URL, assertExactlyOnce, createScriptedSession, launch, loggedIn, openSession, screenshotOf, serverLog, since, toolCard } from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('a message sent mid-turn is shown queued, and a call allowed for the session says it ran unasked', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  const call = { step: 'tool', name: 'Bash', input: { command: 'npm test', description: 'Run the tests' }, result: 'ok' };
  const id = await createScriptedSession(ctx, DEMO_URL, 'queued-and-auto', [call, call, { step: 'text', text: 'Both runs passed.' }]);
  const page = await openSession(ctx, id);

  // The first call waits for a decision: a message sent now is queued.
  const first = toolCard(page, 'Bash', 0);
  await first.getByTestId('approve').waitFor();
  await page.getByTestId('message-input').fill('And update the changelog');
  await page.getByTestId('send-message').click();
  const queued = page.locator('[data-testid=user-message]', { hasText: 'And update the changelog' });
  await page.locator('[data-testid=user-message][data-queued=waiting]', { hasText: 'And update the changelog' }).waitFor();
  const label = queued.getByTestId('queued-label');
  assert.ok(await label.isVisible(), 'the queued label is on screen');
  assert.match(await label.innerText(), /queued.*takes it when the current turn ends/);
  await screenshotOf(queued, 'queued-message');

  // "Allow for this session": the same call again runs with no question,
  // and its card says so, and why.
  await first.getByTestId('allow-session').click();
  const second = toolCard(page, 'Bash', 1);
  const auto = second.getByTestId('auto-allowed');
  await auto.waitFor();
  assert.ok(await auto.isVisible());
  const text = await auto.innerText();
  assert.match(text, /Allowed automatically/);
  assert.match(text, /Allow for this session/);
  assert.match(text, /same tool, same input/);
  assert.match(text, new RegExp(`Bash was allowed without asking: ${process.env.DURACLAW_E2E_USER}`));
  assert.equal(await second.getByTestId('question').count(), 0, 'no question on the second call');
  await second.getByTestId('tool-result').waitFor();
  await page.locator('[data-testid=assistant-message]', { hasText: 'Both runs passed.' }).waitFor();
  await screenshotOf(second, 'auto-allowed-card');

  // The queued message's own turn starts after that one ended (the demo
  // script's second turn, which runs until stopped).
  await page.locator('[data-testid=user-message][data-queued=taken]', { hasText: 'And update the changelog' }).waitFor();
  await page.locator('[data-testid=assistant-message]', { hasText: 'Running the whole test suite now' }).waitFor();
  assert.match(await label.innerText(), /queued.*taken when the turn before it ended/);
  const log = await serverLog(page, id);
  const types = log.map((e) => e.type);
  const message = types.indexOf('user.message', 1);
  const firstResult = types.indexOf('result');
  assert.ok(message > 0 && message < firstResult, `the queued message is logged during the first turn: ${types}`);
  assert.ok(types.includes('notice'), `the automatic allow is in the log: ${types}`);
  await assertExactlyOnce(page, id);
  await screenshotOf(page.getByTestId('transcript'), 'queued-and-auto');
  console.log(`queued message and automatic allow: ${since(t0)}`);
  await ctx.close();
});
