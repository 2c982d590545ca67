// A Claude Code CLI below the minimum supported version (older ones run
// tools without asking): the new-session form says so, naming the version
// found and the one needed, and cannot start a session. Local host only:
// tests/browser_e2e.rs starts `duraclaw up` with a stand-in `claude` that
// reports an old version.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { env, gatewayConnected, launch, loggedIn, screenshot, since } from './lib/harness.js';

const old = JSON.parse(env('DURACLAW_E2E_OLD_CLI'));

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('the new-session form refuses to start on a CLI below the minimum version, and says why', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, old.url);
  await gatewayConnected(ctx);
  const page = await ctx.newPage();
  await page.goto('/#/new');
  const why = page.getByTestId('executor-error');
  await why.waitFor();
  assert.ok(await why.isVisible(), 'the reason is on screen');
  const text = await why.innerText();
  assert.match(text, /^Sessions cannot start: unsupported Claude Code CLI/);
  assert.ok(text.includes(`version ${old.found} found, ${old.minimum} or later needed`), text);

  // A worktree and a prompt are there; the button stays disabled.
  await page.locator('[data-testid=worktree-select] option[value$="/old-cli"]').waitFor({ state: 'attached' });
  await page.getByTestId('prompt').fill('Say hello');
  const start = page.getByTestId('create-session');
  assert.equal(await start.isDisabled(), true, 'Start session is disabled');
  // Submitting the form does not start one either.
  await page.getByTestId('prompt').evaluate((el) => el.form.requestSubmit());
  assert.match(page.url(), /#\/new$/);
  const sessions = await (await ctx.request.get('/api/sessions')).json();
  assert.deepEqual(sessions, [], 'no session was created');
  await screenshot(page, 'old-cli-new-session');
  console.log(`old CLI refused in the form: ${since(t0)}`);
  await ctx.close();
});
