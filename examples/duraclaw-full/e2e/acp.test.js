// An ACP agent's session in the browser: the real codex-acp against a fake
// OpenAI API, picked in the new-session form. Its plan shows as a
// checklist and its thought collapsed (not as unknown events), its text
// streams in, a command is
// approved and runs, another is denied; the header offers no mode or
// model switch, which Codex's entry says it does not support.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { DEMO_URL, gatewayConnected, launch, loggedIn, screenshot, since, toolCard } from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('a Codex session picked in the form: plan, thought, streamed text, a command approved, one denied', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  await gatewayConnected(ctx);
  const page = await ctx.newPage();
  await page.goto('/#/new');
  const codex = page.getByTestId('agent-codex');
  await codex.waitFor({ state: 'attached' });
  assert.equal(await codex.isDisabled(), false, 'Codex is installed and offered');
  await page.getByTestId('agent-select').selectOption('codex');
  const option = page.locator('[data-testid=worktree-select] option[value$="/acp"]');
  await option.waitFor({ state: 'attached' });
  await page.getByTestId('worktree-select').selectOption(await option.getAttribute('value'));
  await page.getByTestId('prompt').fill('say hello');
  await page.getByTestId('create-session').click();
  await page.waitForURL(/#\/s\//);
  await page.getByTestId('session-agent').filter({ hasText: 'codex' }).waitFor();
  // The composer names the session's agent, not Claude.
  await page.waitForFunction(() => document.querySelector('[data-testid=message-input]')?.placeholder === 'Message codex…');

  // The plan as a checklist, then the streamed greeting.
  const plan = page.getByTestId('acp-plan');
  await plan.waitFor();
  const steps = plan.locator('li');
  assert.equal(await steps.count(), 3);
  assert.deepEqual(
    await steps.evaluateAll((li) => li.map((l) => [l.dataset.status, l.textContent.trim()])),
    [
      ['completed', '☑ Say hello'],
      ['in_progress', '◐ Write made.txt'],
      ['pending', '☐ Report back'],
    ],
  );
  await page.locator('[data-testid=assistant-message]:not(.streaming)', { hasText: 'Hello from Codex, through the gate.' }).waitFor();
  // The thought, collapsed until opened.
  const thought = page.getByTestId('acp-thought');
  assert.equal(await thought.count(), 1);
  assert.equal(await thought.evaluate((d) => d.open), false, 'a thought starts collapsed');
  assert.equal(await thought.locator('summary').innerText(), 'Thought');
  await thought.locator('summary').click();
  assert.equal(await thought.locator('div').innerText(), 'The user wants a greeting first.');
  await page.locator('[data-testid=state-badge][data-reason=idle]').waitFor();
  assert.equal(await page.getByTestId('unknown-event').count(), 0, 'no ACP event shown as unknown');
  // Codex's entry supports neither mode nor model switches.
  await page.getByTestId('mode-select').waitFor({ state: 'detached' });
  assert.equal(await page.getByTestId('model-select').count(), 0);

  // A command, approved: it runs and Codex goes on.
  await page.getByTestId('message-input').fill('make a file');
  await page.getByTestId('send-message').click();
  const made = toolCard(page, 'execute', 0);
  await made.getByTestId('approve').click();
  await made.getByTestId('resolution').filter({ hasText: 'approved' }).waitFor();
  await made.getByTestId('tool-result').waitFor();
  await page.locator('[data-testid=assistant-message]:not(.streaming)', { hasText: 'Made made.txt.' }).waitFor();
  await screenshot(page, 'acp-codex-approved');

  // Another, denied: the turn ends without it.
  await page.locator('[data-testid=state-badge][data-reason=idle]').waitFor();
  await page.getByTestId('message-input').fill('make another');
  await page.getByTestId('send-message').click();
  const denied = toolCard(page, 'execute', 1);
  await denied.getByTestId('deny').click();
  await denied.getByTestId('resolution').filter({ hasText: 'denied' }).waitFor();
  await page.getByTestId('turn-result').nth(2).waitFor();
  await page.locator('[data-testid=state-badge][data-reason=idle]').waitFor();
  await screenshot(page, 'acp-codex-denied');
  console.log(`acp scenario: ${since(t0)}`);
  await ctx.close();
});
