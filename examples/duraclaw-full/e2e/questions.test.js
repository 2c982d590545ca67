// Scenario 5: approvals of both kinds, an AskUserQuestion answered from its
// form, a turn aborted while it runs, and a follow-up message.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { DEMO_URL, USER, assertExactlyOnce, createSession, launch, loggedIn, openSession, screenshotWhole, since, toolCard } from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('answer a question, abort a turn, send a follow-up', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  const id = await createSession(ctx, DEMO_URL, 'questions', 'Fix the greeting');
  const page = await openSession(ctx, id);

  // "Allow for this session", then an edit shown as a diff, approved.
  await toolCard(page, 'Bash').getByTestId('allow-session').click();
  await toolCard(page, 'Bash').getByTestId('resolution').filter({ hasText: 'allowed for this session' }).waitFor();
  const edit = toolCard(page, 'Edit');
  await edit.getByTestId('approve').waitFor();
  assert.match(await edit.getByTestId('diff').innerText(), /-\s*println!\("helo"\);[\s\S]*\+\s*println!\("hello"\);/);
  await edit.getByTestId('approve').click();
  await edit.getByTestId('tool-result').filter({ hasText: 'has been updated' }).waitFor();

  // The question: pick an option, send it.
  const form = page.getByTestId('question-form');
  await form.waitFor();
  await page.locator('[data-testid=state-badge][data-reason=awaiting_answer]').waitFor();
  assert.match(await form.innerText(), /Which change should I make next\?/);
  await form.getByLabel('Add a test').check();
  await form.getByTestId('question-submit').click();
  const ask = toolCard(page, 'AskUserQuestion');
  await ask.getByTestId('resolution').filter({ hasText: `answered by ${USER}` }).waitFor();
  assert.match(await ask.getByTestId('resolution').innerText(), /Which change should I make next\? → Add a test/);
  await page.locator('[data-testid=assistant-message]', { hasText: 'All done' }).waitFor();
  await page.getByTestId('turn-result').first().waitFor();
  await page.locator('[data-testid=state-badge][data-reason=idle]').waitFor();
  assert.equal(await page.getByTestId('abort').count(), 0, 'nothing to abort between turns');
  console.log(`first turn answered: ${since(t0)}`);

  // A turn that runs until aborted.
  await page.getByTestId('message-input').fill('Now run the whole test suite');
  await page.getByTestId('send-message').click();
  await page.getByTestId('user-message').filter({ hasText: 'Now run the whole test suite' }).waitFor();
  await page.locator('[data-testid=assistant-message]:not(.streaming)', { hasText: 'Running the whole test suite' }).waitFor();
  await page.locator('[data-testid=state-badge][data-state=active]').waitFor();
  await page.getByTestId('abort').click();
  const aborted = page.getByTestId('turn-result').nth(1);
  await aborted.waitFor();
  assert.match(await aborted.innerText(), /Turn aborted/);
  await page.locator('[data-testid=state-badge][data-reason=idle]').waitFor();
  assert.equal(await page.getByTestId('abort').count(), 0);
  console.log(`turn aborted: ${since(t0)}`);

  // A follow-up after the abort runs as usual.
  await page.getByTestId('message-input').fill('thanks');
  await page.getByTestId('message-input').press('Control+Enter');
  await page.locator('[data-testid=assistant-message]:not(.streaming)', { hasText: 'You said: thanks' }).waitFor();
  const done = page.getByTestId('turn-result').nth(2);
  await done.waitFor();
  assert.match(await done.innerText(), /Turn done/);
  assert.equal(await page.getByTestId('message-input').inputValue(), '', 'the composer is cleared');
  const { n } = await assertExactlyOnce(page, id);
  await screenshotWhole(page, 'session-view');
  console.log(`questions scenario: ${n} events, ${since(t0)}`);
  await ctx.close();
});
