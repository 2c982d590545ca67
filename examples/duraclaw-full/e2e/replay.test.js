// Scenario 3: close the page mid-turn; the session goes on producing events
// that nobody watches; a new page shows every missed event exactly once, in
// order, then the live ones with no gap and no duplicate.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DEMO_URL,
  assertExactlyOnce,
  gatewayConnected,
  launch,
  loggedIn,
  pageSeqs,
  screenshot,
  sessionState,
  since,
  toolCard,
  until,
} from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('a page closed mid-turn: a new page gets every missed event once, in order', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  await gatewayConnected(ctx);
  const page = await ctx.newPage();
  await page.goto('/#/new');
  const option = page.locator('[data-testid=worktree-select] option[value$="/replay"]');
  await option.waitFor({ state: 'attached' });
  await page.getByTestId('worktree-select').selectOption(await option.getAttribute('value'));
  await page.getByTestId('prompt').fill('Fix the greeting');
  await page.getByTestId('create-session').click();
  await page.waitForURL(/#\/s\//);
  const id = decodeURIComponent(new URL(page.url()).hash.replace('#/s/', ''));

  // Mid-stream: some deltas are on the page, more are coming.
  await until('a few streamed deltas', async () => (await pageSeqs(page)).seqs.length >= 6);
  assert.equal(await page.locator('[data-testid=assistant-message].streaming').count(), 1, 'the text is still streaming');
  const seen = await pageSeqs(page);
  await page.close();
  console.log(`closed the page at seq ${seen.last}: ${since(t0)}`);

  // Nobody watches while the turn streams on and reaches an approval.
  const meta = await sessionState(ctx, id, 'paused', 'awaiting_approval');
  assert.equal(meta.pending_questions, 1);

  const again = await ctx.newPage();
  await again.goto(`/#/s/${encodeURIComponent(id)}`);
  const bash = toolCard(again, 'Bash');
  await bash.getByTestId('approve').waitFor();
  const { n } = await assertExactlyOnce(again, id);
  assert.ok(n > seen.last + 10, `events happened while the page was closed (${seen.last} → ${n})`);
  const text = await again.locator('[data-testid=assistant-message]').first();
  assert.match(await text.innerText(), /where things are/);
  assert.equal(await again.locator('[data-testid=assistant-message].streaming').count(), 0);
  assert.equal(await again.getByTestId('user-message').count(), 1);
  console.log(`reopened: events 1..${n} once each (${n - seen.last} missed): ${since(t0)}`);

  // Live events follow the replay with no gap.
  await bash.getByTestId('approve').click();
  await bash.getByTestId('tool-result').waitFor();
  await toolCard(again, 'Edit').getByTestId('approve').waitFor();
  const live = await assertExactlyOnce(again, id);
  assert.ok(live.n > n);
  await screenshot(again, 'replay');
  console.log(`replay scenario: ${live.n} events, ${since(t0)}`);
  await ctx.close();
});
