// A fresh worktree per session, chosen in the form, and the session's diff:
// the form offers "new worktree from <repo> at <branch>" by default; the
// session runs in its own worktree; the Diff panel lists the changed files
// (hostile names and content shown as text) with a patch download; closing
// offers keep / remove, and a refused remove (uncommitted changes) says so
// and offers to force it.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { DEMO_URL, gatewayConnected, getJson, launch, loggedIn, screenshot, sessionState, since, until } from './lib/harness.js';

const HOSTILE = '<img src=x onerror="window.__pwned=1">.txt';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('a new worktree from the form, its diff, and a close that removes it', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  await gatewayConnected(ctx);
  const page = await ctx.newPage();
  await page.goto('/#/new');
  const option = page.locator('[data-testid=worktree-select] option[value$="/worktree-choice"]');
  await option.waitFor({ state: 'attached' });
  const repo = await option.getAttribute('value');
  await page.getByTestId('worktree-select').selectOption(repo);
  // Offered, and on by default, at the repository's branch.
  assert.equal(await page.getByTestId('new-worktree').isChecked(), true);
  assert.notEqual(await page.getByTestId('new-worktree-base').inputValue(), '');
  await page.getByTestId('prompt').fill(JSON.stringify({ turn: [{ step: 'text', text: 'ok', chunks: 1 }] }));
  await page.getByTestId('create-session').click();
  await page.waitForURL(/#\/s\//);
  const id = decodeURIComponent(new URL(page.url()).hash.replace('#/s/', ''));
  await page.locator('[data-testid=notice-event][data-code=worktree]', { hasText: 'new worktree' }).waitFor();
  await sessionState(ctx, id, 'paused', 'idle');
  const meta = await getJson(ctx, `/api/sessions/${encodeURIComponent(id)}`);
  assert.notEqual(meta.worktree, repo, 'the session runs in a worktree of its own');
  assert.ok(fs.existsSync(path.join(meta.worktree, 'README.md')));
  console.log(`session in ${meta.worktree}: ${since(t0)}`);

  // What an agent would have changed: shown as text, never as markup.
  fs.appendFileSync(path.join(meta.worktree, 'README.md'), 'More <b>words</b>.\n');
  fs.writeFileSync(path.join(meta.worktree, HOSTILE), '<script>window.__pwned=2</script>\n');
  await page.getByTestId('diff-toggle').click();
  const panel = page.getByTestId('diff-panel');
  await until('two changed files', async () => (await panel.getByTestId('diff-file').count()) === 2);
  const text = await panel.innerText();
  assert.ok(text.includes(HOSTILE), text);
  assert.ok(text.includes('+More <b>words</b>.'), text);
  assert.ok(text.includes('+<script>window.__pwned=2</script>'), text);
  assert.equal(await panel.locator('img, script, b').count(), 0, 'no markup from the worktree');
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  const href = await page.getByTestId('download-patch').getAttribute('href');
  assert.equal(href, `/api/sessions/${encodeURIComponent(id)}/diff?format=patch`);
  const patch = await ctx.request.get(href);
  assert.equal(patch.status(), 200);
  assert.match(await patch.text(), /^diff --git a\/README\.md b\/README\.md/m);
  await screenshot(page, 'diff-panel');

  // Close: remove is refused while the worktree has uncommitted changes;
  // forced, the worktree goes and the session ends.
  await page.getByTestId('end-session').click();
  await page.getByTestId('close-choice').waitFor();
  await page.getByTestId('close-remove').click();
  await page.getByTestId('close-error').filter({ hasText: 'uncommitted changes' }).waitFor();
  assert.ok(fs.existsSync(meta.worktree), 'a refused remove leaves the worktree');
  await screenshot(page, 'close-refused');
  await page.getByTestId('close-remove-force').click();
  await page.getByTestId('close-choice').waitFor({ state: 'detached' });
  await sessionState(ctx, id, 'terminated');
  assert.ok(!fs.existsSync(meta.worktree), 'removed');
  console.log(`worktree scenario: ${since(t0)}`);
  await ctx.close();
});
