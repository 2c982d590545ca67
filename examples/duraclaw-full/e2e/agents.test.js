// The agent a session runs, chosen in the form: the form lists the
// gateway's agents (`GET /api/agents`), Claude by default, one that cannot
// run shown disabled with its reason; the session records its agent and
// its header shows it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { DEMO_URL, gatewayConnected, getJson, launch, loggedIn, screenshot, sessionState, since } from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('the form picks an agent, an unavailable one is disabled with its reason, and the header shows it', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  await gatewayConnected(ctx);
  const page = await ctx.newPage();
  await page.goto('/#/new');
  const ghost = page.getByTestId('agent-ghost');
  await ghost.waitFor({ state: 'attached' });
  assert.equal(await page.getByTestId('agent-select').inputValue(), 'claude', 'Claude by default');
  assert.equal(await ghost.isDisabled(), true, 'an agent that cannot run is not offered');
  const label = await ghost.innerText();
  assert.ok(label.startsWith('Ghost agent — unavailable: '), label);
  assert.ok(label.includes('duraclaw-no-such-agent'), label);
  assert.equal(await page.getByTestId('agent-claude').isDisabled(), false);
  assert.equal(await page.getByTestId('agent-claude').innerText(), 'Scripted demo', 'the demo says what its built-in agent is');
  await screenshot(page, 'agent-picker');

  const option = page.locator('[data-testid=worktree-select] option[value$="/agents"]');
  await option.waitFor({ state: 'attached' });
  await page.getByTestId('worktree-select').selectOption(await option.getAttribute('value'));
  await page.getByTestId('prompt').fill(JSON.stringify({ turn: [{ step: 'text', text: 'ok', chunks: 1 }] }));
  await page.getByTestId('create-session').click();
  await page.waitForURL(/#\/s\//);
  const id = decodeURIComponent(new URL(page.url()).hash.replace('#/s/', ''));
  await page.getByTestId('session-agent').filter({ hasText: 'claude' }).waitFor();
  await sessionState(ctx, id, 'paused', 'idle');
  // The built-in agent switches modes and models (an ACP agent may not: acp.test.js).
  await page.getByTestId('mode-select').waitFor();
  const meta = await getJson(ctx, `/api/sessions/${encodeURIComponent(id)}`);
  assert.equal(meta.agent, 'claude', 'the session records its agent');
  const list = await getJson(ctx, '/api/sessions');
  assert.equal(list.find((s) => s.session_id === id).agent, 'claude');
  await screenshot(page, 'session-agent');
  console.log(`agents scenario: ${since(t0)}`);
  await ctx.close();
});
