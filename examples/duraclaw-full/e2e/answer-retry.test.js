// A retried answer is not someone else's decision. The page answers a
// question; the server applies it, but its command_result is lost with the
// connection. The page reconnects and resends the answer with the same
// command id (as it does with every unconfirmed command): whatever the
// server answers the retry, the page shows the person's own decision and no
// "already decided" under it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { DEMO_URL, USER, connected, createScriptedSession, launch, loggedIn, relaySocket, since, toolCard, until } from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('an answer resent after its result was lost shows no "already decided" under it', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  const id = await createScriptedSession(ctx, DEMO_URL, 'answer-retry', [
    { step: 'tool', name: 'Bash', input: { command: 'cargo test', description: 'Run the tests' }, result: 'ok' },
    { step: 'text', text: 'The tests pass.' },
  ]);
  const page = await ctx.newPage();
  const relay = await relaySocket(page);
  await page.goto(`/#/s/${encodeURIComponent(id)}`);
  await connected(page);
  const card = toolCard(page, 'Bash');
  await card.getByTestId('approve').waitFor();

  // The answer's command_result never arrives: the connection breaks first.
  relay.cutBefore((f) => f.type === 'command_result');
  await card.getByTestId('approve').click();
  await until('the first command_result to be lost', () => relay.lost.length === 1);
  const answers = () => relay.fromPage.filter((f) => f.type === 'command' && f.command.type === 'answer');
  // The page reconnects and sends the same answer again, with the same id.
  await until('the answer to be resent after the reconnect', () => answers().length === 2);
  assert.equal(answers()[1].id, answers()[0].id);
  assert.equal(relay.sockets.length, 2);
  await connected(page);
  await card.getByTestId('resolution').filter({ hasText: `approved by ${USER}` }).waitFor();
  await page.locator('[data-testid=assistant-message]', { hasText: 'The tests pass.' }).waitFor();
  // The retry's command_result reaches the page, which takes it as its own answer…
  const answerId = answers()[0].id;
  const handled = await until('the page to handle the retry\'s command_result', () =>
    page.evaluate((id) => window.__duraclaw.results.find((r) => r.id === id), answerId),
  );
  console.log(`the retry was answered ${JSON.stringify(handled)}`);
  assert.equal(handled.resent, true);
  assert.equal(handled.shownAsError, false, `the page calls its own answer an error: ${JSON.stringify(handled)}`);
  // …and shows no refusal under it.
  assert.equal(await page.getByTestId('question-error').count(), 0, await page.locator('[data-testid=transcript]').innerText());
  assert.doesNotMatch(await card.innerText(), /already decided/i);
  assert.match(await card.getByTestId('tool-result').innerText(), /\bok\b/);
  console.log(`answer retried after a lost result: ${since(t0)}`);
  await ctx.close();
});
