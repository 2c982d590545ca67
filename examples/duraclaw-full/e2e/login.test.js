// Scenario 1: the login form; a wrong password is refused; the API refuses
// anyone without the cookie.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CLAUDE_URL, PASSWORD, USER, launch, newContext, since } from './lib/harness.js';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('log in: a wrong password is refused, the right one gets in, logging out locks the API again', async () => {
  const t0 = Date.now();
  const ctx = await newContext(browser, CLAUDE_URL);
  const page = await ctx.newPage();
  await page.goto('/');
  await page.getByTestId('login-name').waitFor();

  const anonymous = await page.evaluate(async () => {
    const r = await fetch('/api/sessions');
    return { status: r.status, body: await r.json() };
  });
  assert.equal(anonymous.status, 401);
  assert.equal(typeof anonymous.body.error, 'string');

  await page.getByTestId('login-name').fill(USER);
  await page.getByTestId('login-password').fill('not the password');
  await page.getByTestId('login-submit').click();
  const error = page.getByTestId('login-error');
  await error.waitFor();
  assert.match(await error.innerText(), /wrong|invalid|incorrect/i);
  assert.equal(await page.getByTestId('new-session').count(), 0, 'a wrong password does not get in');
  assert.equal((await ctx.cookies()).filter((c) => c.name === 'duraclaw_session').length, 0, 'no cookie for a wrong password');

  await page.getByTestId('login-password').fill(PASSWORD);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('new-session').waitFor();
  assert.equal(await page.locator('.topbar-user .user-name').innerText(), USER);
  const cookie = (await ctx.cookies()).find((c) => c.name === 'duraclaw_session');
  assert.ok(cookie && cookie.httpOnly, 'the login cookie is HttpOnly');
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(await page.evaluate(() => document.cookie), '', 'the page cannot read the cookie');
  assert.equal(await page.evaluate(async () => (await fetch('/api/sessions')).status), 200);

  // A reload keeps the login (the cookie is all the browser stores).
  await page.reload();
  await page.getByTestId('new-session').waitFor();

  await page.getByTestId('logout').click();
  await page.getByTestId('login-name').waitFor();
  assert.equal(await page.evaluate(async () => (await fetch('/api/sessions')).status), 401);
  console.log(`login scenario: ${since(t0)}`);
  await ctx.close();
});

test('a session link opened without a login shows the login form, and after it the session', async () => {
  const ctx = await newContext(browser, CLAUDE_URL);
  const page = await ctx.newPage();
  // The session view starts while the login is checked; the check's 401 wins.
  await page.goto('/#/s/no-such-session');
  await page.getByTestId('login-name').waitFor();
  assert.equal(await page.getByTestId('transcript').count(), 0, 'no session view without a login');
  await page.getByTestId('login-name').fill(USER);
  await page.getByTestId('login-password').fill(PASSWORD);
  await page.getByTestId('login-submit').click();
  // Logged in, the link's own view: this session is not there to show.
  await page.getByText('This session does not exist, or it is not yours.').waitFor();
  assert.equal(await page.getByTestId('login-name').count(), 0);
  await ctx.close();
});
