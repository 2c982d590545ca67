// Approval rules as a person sets them: the Rules view (from the header)
// lists rules by scope, adds one, refuses a malformed one with the server's
// reason, applies a preset and removes rules; the approval prompt offers
// "Always allow in this worktree" showing the exact rule it adds, and the
// next session in that worktree runs the call without asking, its card
// naming the rule.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { DEMO_URL, createScriptedSession, gatewayConnected, launch, loggedIn, openSession, screenshotOf, since, toolCard, worktree } from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** Removes every rule of the context's user (other files expect none). */
async function clearRules(ctx) {
  const r = await ctx.request.get('/api/rules');
  for (const rule of await r.json()) {
    const d = await ctx.request.delete(`/api/rules/${encodeURIComponent(rule.id)}`, { headers: { Origin: DEMO_URL } });
    assert.equal(d.status(), 204);
  }
}

test('the rules view adds, refuses, presets and removes rules', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  try {
    await clearRules(ctx);
    const page = await ctx.newPage();
    await page.goto('/#/');
    await page.getByTestId('rules-link').click();
    await page.getByTestId('no-rules').waitFor();

    // A malformed rule gets the server's reason and adds nothing.
    await page.getByTestId('rule-text').fill('Bash(git status');
    await page.getByTestId('rule-add').click();
    const err = page.getByTestId('rules-error');
    await err.waitFor();
    assert.match(await err.innerText(), /must end with `\)`/);

    // A deny at the user scope.
    await page.getByTestId('rule-text').fill('Bash(rm *)');
    await page.getByTestId('rule-action').selectOption('deny');
    await page.getByTestId('rule-add').click();
    await page.locator('[data-testid=rule-row][data-rule="Bash(rm *)"][data-action=deny][data-scope=user]').waitFor();

    // The "reads are free" preset adds its four allows.
    await page.locator('[data-testid=rule-preset][data-preset=reads_free]').click();
    for (const tool of ['Read', 'Glob', 'Grep', 'LS']) {
      await page.locator(`[data-testid=rule-row][data-rule=${tool}][data-action=allow]`).waitFor();
    }
    assert.equal(await page.getByTestId('rule-row').count(), 5);
    await screenshotOf(page.locator('main'), 'rules-view');

    // Removed, it is gone from the list and from the server.
    await page.locator('[data-testid=rule-row][data-rule="Bash(rm *)"]').getByTestId('rule-remove').click();
    await page.locator('[data-testid=rule-row][data-rule="Bash(rm *)"]').waitFor({ state: 'detached' });
    const left = await (await ctx.request.get('/api/rules')).json();
    assert.deepEqual(
      left.map((r) => r.rule),
      ['Read', 'Glob', 'Grep', 'LS'],
    );
    console.log(`rules view: ${since(t0)}`);
  } finally {
    await clearRules(ctx);
    await ctx.close();
  }
});

test('"Always allow in this worktree" adds the rule it shows; the next session there is not asked', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  try {
    await clearRules(ctx);
    const call = { step: 'tool', name: 'Bash', input: { command: 'make lint', description: 'Lint' }, result: 'clean' };
    const first = await createScriptedSession(ctx, DEMO_URL, 'rules', [call, { step: 'text', text: 'Linted.' }]);
    const page = await openSession(ctx, first);
    const card = toolCard(page, 'Bash', 0);
    const button = card.getByTestId('allow-worktree');
    await button.waitFor();
    assert.equal(await button.getAttribute('data-rule'), 'Bash(make lint)');
    assert.match(await button.innerText(), /Bash\(make lint\)/, 'the button shows the rule it adds');
    await screenshotOf(card, 'allow-worktree-prompt');
    await button.click();
    await card.getByTestId('tool-result').waitFor();
    await page.locator('[data-testid=assistant-message]', { hasText: 'Linted.' }).waitFor();
    const rules = await (await ctx.request.get('/api/rules')).json();
    assert.deepEqual(
      rules.map((r) => [r.scope, r.rule, r.action]),
      [['worktree', 'Bash(make lint)', 'allow']],
    );
    const close = await ctx.request.post(`/api/sessions/${encodeURIComponent(first)}/close`, { headers: { Origin: DEMO_URL } });
    assert.equal(close.status(), 200);

    // The next session in that worktree runs the call with no question; its
    // card names the rule.
    const second = await createScriptedSession(ctx, DEMO_URL, 'rules', [call, { step: 'text', text: 'Linted again.' }]);
    const again = await openSession(ctx, second);
    const ruled = toolCard(again, 'Bash', 0).getByTestId('rule-decision');
    await ruled.waitFor();
    assert.equal(await ruled.getAttribute('data-rule'), 'Bash(make lint)');
    assert.equal(await ruled.getAttribute('data-scope'), 'worktree');
    assert.match(await ruled.innerText(), /Allowed by rule\s+Bash\(make lint\)\s+worktree scope/);
    await again.locator('[data-testid=assistant-message]', { hasText: 'Linted again.' }).waitFor();
    assert.equal(await toolCard(again, 'Bash', 0).getByTestId('question').count(), 0, 'no question');
    await screenshotOf(toolCard(again, 'Bash', 0), 'rule-decision-card');
    await ctx.request.post(`/api/sessions/${encodeURIComponent(second)}/close`, { headers: { Origin: DEMO_URL } });
    console.log(`always allow in this worktree: ${since(t0)}`);
  } finally {
    await clearRules(ctx);
    await ctx.close();
  }
});

test('"Always allow in this worktree" in a new worktree names its repository and holds in the next new worktree', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  try {
    await clearRules(ctx);
    await gatewayConnected(ctx);
    const repo = await worktree(ctx, 'rules');
    const call = { step: 'tool', name: 'Bash', input: { command: 'make check', description: 'Check' }, result: 'fine' };
    const start = async (text) => {
      const r = await ctx.request.post('/api/sessions', {
        data: { worktree: repo, prompt: JSON.stringify({ turn: [call, { step: 'text', text }] }), new_worktree: {} },
        headers: { Origin: DEMO_URL },
      });
      assert.equal(r.status(), 201, await r.text());
      return (await r.json()).session_id;
    };
    const first = await start('Checked.');
    const page = await openSession(ctx, first);
    const button = toolCard(page, 'Bash', 0).getByTestId('allow-worktree');
    await button.waitFor();
    assert.equal(await button.getAttribute('data-worktree'), repo, 'the rule names the repository, not the new worktree');
    const base = repo.split('/').pop();
    assert.match(await button.innerText(), new RegExp(`Always allow in ${base}`));
    await button.click();
    await page.locator('[data-testid=assistant-message]', { hasText: 'Checked.' }).waitFor();
    const rules = await (await ctx.request.get('/api/rules')).json();
    assert.deepEqual(
      rules.map((r) => [r.scope, r.worktree, r.rule]),
      [['worktree', repo, 'Bash(make check)']],
    );
    await ctx.request.post(`/api/sessions/${encodeURIComponent(first)}/close`, { headers: { Origin: DEMO_URL } });

    const second = await start('Checked again.');
    const again = await openSession(ctx, second);
    const ruled = toolCard(again, 'Bash', 0).getByTestId('rule-decision');
    await ruled.waitFor();
    assert.equal(await ruled.getAttribute('data-rule'), 'Bash(make check)');
    await again.locator('[data-testid=assistant-message]', { hasText: 'Checked again.' }).waitFor();
    assert.equal(await toolCard(again, 'Bash', 0).getByTestId('question').count(), 0, 'no question');
    await ctx.request.post(`/api/sessions/${encodeURIComponent(second)}/close`, { headers: { Origin: DEMO_URL } });
    console.log(`always allow in a new worktree: ${since(t0)}`);
  } finally {
    await clearRules(ctx);
    await ctx.close();
  }
});
