// Scenario 2: a session with the REAL Claude Code CLI, whose model is the
// fake Anthropic API. The first answer stalls on the fake's latch, so the
// page shows streamed text before the rest exists; then a Read is approved,
// its result shown, and the turn's cost. Then the mode selector in the
// session header switches the running CLI to plan mode (bypassing
// permissions is never offered) and the transcript says so. Last, "Fork
// from here" on the first message ends the session and opens its fork,
// whose header links back to it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  CLAUDE_URL,
  assertExactlyOnce,
  control,
  env,
  gatewayConnected,
  launch,
  loggedIn,
  screenshot,
  screenshotOf,
  screenshotWhole,
  since,
  toolCard,
} from './lib/harness.js';

const script = JSON.parse(env('DURACLAW_E2E_CLAUDE_SCRIPT'));
let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('the real CLI: streamed text, an approved Read and its result, the turn cost', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, CLAUDE_URL);
  await gatewayConnected(ctx);
  const page = await ctx.newPage();
  await page.goto('/#/new');
  const select = page.getByTestId('worktree-select');
  await page.locator(`[data-testid=worktree-select] option[value$="/${script.worktree}"]`).waitFor({ state: 'attached' });
  const value = await page.locator(`[data-testid=worktree-select] option[value$="/${script.worktree}"]`).getAttribute('value');
  await select.selectOption(value);
  // In the repository itself: the fake model reads its notes.txt by path.
  await page.getByTestId('new-worktree').uncheck();
  await page.getByTestId('prompt').fill('What do the notes say?');
  await page.getByTestId('create-session').click();
  await page.waitForURL(/#\/s\//);
  const id = decodeURIComponent(new URL(page.url()).hash.replace('#/s/', ''));
  console.log(`session ${id} created: ${since(t0)}`);

  // The fake holds its stream after a few deltas: the page shows part of
  // the text, still streaming.
  const streaming = page.locator('[data-testid=assistant-message].streaming');
  await streaming.waitFor({ timeout: 45_000 });
  const partial = (await streaming.innerText()).trim();
  assert.ok(partial.length > 0 && partial.length < script.intro.length, `partial text: ${JSON.stringify(partial)}`);
  assert.ok(script.intro.startsWith(partial), `${JSON.stringify(partial)} begins the answer`);
  await screenshot(page, 'claude-streaming');
  console.log(`streamed text shown: ${since(t0)}`);
  await control('/fake/release');

  // The rest of the answer, then the Read waits for a human.
  await page.locator('[data-testid=assistant-message]:not(.streaming)', { hasText: script.intro }).waitFor();
  const read = toolCard(page, 'Read');
  await read.getByTestId('approve').waitFor();
  assert.match(await read.innerText(), /notes\.txt/);
  await page.locator('[data-testid=state-badge][data-reason=awaiting_approval]').waitFor();
  await read.getByTestId('approve').click();
  await read.getByTestId('resolution').filter({ hasText: 'approved by alice' }).waitFor();
  const result = read.getByTestId('tool-result');
  await result.waitFor({ timeout: 30_000 });
  assert.match(await result.innerText(), /The launch code is 0451\./);
  console.log(`tool approved, result shown: ${since(t0)}`);

  await page.locator('[data-testid=assistant-message]', { hasText: script.outro }).waitFor({ timeout: 30_000 });
  const cost = page.getByTestId('turn-cost');
  await cost.waitFor({ timeout: 30_000 });
  const dollars = Number(/\$([0-9.]+)/.exec(await cost.innerText())?.[1]);
  assert.ok(dollars > 0, `the turn cost is shown: ${await cost.innerText()}`);
  await page.locator('[data-testid=state-badge][data-reason=idle]').waitFor();

  // The model got the file's content as the tool's result.
  const fake = await control('/fake/state', 'GET');
  assert.equal(fake.model_requests, 2);
  assert.ok(JSON.stringify(fake.tool_results).includes('0451'), JSON.stringify(fake.tool_results));

  // The header shows the mode and model in force; plan mode is chosen there.
  const mode = page.getByTestId('mode-select');
  await page.locator('[data-testid=mode-select] option[value=default]').waitFor({ state: 'attached' });
  assert.equal(await mode.inputValue(), 'default');
  const offered = await mode.locator('option').evaluateAll((os) => os.map((o) => o.value));
  assert.deepEqual(offered, ['default', 'acceptEdits', 'plan']);
  assert.match(await page.getByTestId('model-select').inputValue(), /\S/);
  await mode.selectOption('plan');
  await page.locator('[data-testid=notice-event][data-code=mode_changed]', { hasText: 'Permission mode changed to plan.' }).waitFor({ timeout: 30_000 });
  await page.waitForFunction(() => document.querySelector('[data-testid=mode-select]').value === 'plan');
  await screenshotOf(page.locator('.session-bar'), 'claude-plan-mode');
  console.log(`switched to plan mode: ${since(t0)}`);

  const { n } = await assertExactlyOnce(page, id);
  await screenshotWhole(page, 'claude-session');
  console.log(`real CLI scenario: ${n} events, turn cost $${dollars}, ${since(t0)}`);

  // Fork from the first message: confirm ending this session, give the
  // fork's first message; the fork opens, its header names the parent.
  page.on('dialog', (d) => (d.type() === 'prompt' ? d.accept('Fork: what else?') : d.accept()));
  await page.getByTestId('fork-here').first().click();
  await page.waitForURL((u) => !u.hash.includes(encodeURIComponent(id)) && u.hash.startsWith('#/s/'));
  const parent = page.getByTestId('parent-link');
  await parent.waitFor({ timeout: 30_000 });
  assert.equal(await parent.getAttribute('href'), `#/s/${encodeURIComponent(id)}`);
  await page.locator('[data-testid=user-message]', { hasText: 'Fork: what else?' }).waitFor();
  await page.locator('[data-testid=state-badge][data-reason=idle]').waitFor({ timeout: 30_000 });
  await screenshotOf(page.locator('.session-bar'), 'claude-fork');
  console.log(`forked: ${since(t0)}`);
  await ctx.close();
});
