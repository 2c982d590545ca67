// Scenarios 6 and 7, on the split deployment (gateway and orchestrator as
// separate processes, killed with SIGKILL through the control endpoint):
// the gateway killed mid-turn and restarted, and the orchestrator restarted
// while an approval waits.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  SPLIT_URL,
  WAIT,
  assertExactlyOnce,
  connected,
  connectionStates,
  control,
  createSession,
  gatewayConnected,
  launch,
  loggedIn,
  openSession,
  pageSeqs,
  recordConnectionStates,
  screenshot,
  since,
  toolCard,
  transcriptText,
  until,
} from './lib/harness.js';

// The first text of the script, as the page shows it (Markdown's ** are
// markup once closed and text while open, so none are compared).
const STREAMED = "I'll look at the project first, then list its files so I know where things are, and finally make the change you asked for.";
const firstMessage = async (page) => (await page.locator('[data-testid=assistant-message]').first().innerText()).replace(/\*\*/g, '').trim();

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** The same session in a fresh page reads the same, item for item. */
async function sameInAFreshPage(ctx, page, id) {
  const fresh = await openSession(ctx, id);
  const { n } = await assertExactlyOnce(fresh, id);
  await until('the fresh page to read like the old one', async () => (await pageSeqs(page)).last === n);
  assert.deepEqual(await transcriptText(fresh), await transcriptText(page));
  await fresh.close();
}

test('the gateway killed mid-turn: the UI shows it unreachable, then the session goes on with nothing lost', async (t) => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, SPLIT_URL);
  const id = await createSession(ctx, SPLIT_URL, 'gateway-kill', 'Fix the greeting');
  const page = await openSession(ctx, id);
  const list = await ctx.newPage();
  await list.goto('/#/');
  await list.locator(`[data-testid=session-row][data-session-id="${id}"]`).waitFor();

  await until('a few streamed deltas', async () => (await pageSeqs(page)).seqs.length >= 6);
  await control('/split/gateway/kill');
  t.after(() => control('/split/gateway/start'));
  const killedAt = Date.now();
  console.log(`gateway killed mid-stream: ${since(t0)}`);

  // The session view and the session list both say so.
  await page.locator('[data-testid=state-badge][data-reason=gateway_unreachable]').waitFor();
  await page.locator('.state-line', { hasText: 'gateway unreachable' }).waitFor();
  await list.reload();
  await list.getByTestId('status-banner').filter({ hasText: 'Gateway unreachable' }).waitFor();
  console.log(`the UI shows the gateway unreachable after ${Date.now() - killedAt} ms`);
  await screenshot(page, 'gateway-unreachable');
  const cut = await assertExactlyOnce(page, id);
  const text = await firstMessage(page);
  assert.ok(text.length > 0 && STREAMED.startsWith(text), `what streamed before the kill is kept: ${JSON.stringify(text)}`);

  await control('/split/gateway/start');
  await gatewayConnected(ctx);
  await page.locator('[data-testid=state-badge]:not([data-reason=gateway_unreachable])').waitFor();
  await list.reload();
  await list.locator(`[data-testid=session-row][data-session-id="${id}"]`).waitFor();
  assert.equal(await list.getByTestId('status-banner').count(), 0, 'no banner once the gateway is back');
  console.log(`gateway back: ${since(t0)}`);
  // The restarted gateway ended the turn it had cut; the page says so in
  // words, not only with the error's code.
  await page
    .locator('[data-testid=error-event][data-code=gateway_restarted] [data-testid=error-title]', { hasText: 'The gateway restarted' })
    .waitFor();

  // Nothing the page had is gone or doubled, and the session takes the next
  // message: a new turn, shown as a message of its own.
  const back = await assertExactlyOnce(page, id);
  assert.ok(back.n >= cut.n);
  assert.deepEqual(back.server.slice(0, cut.n), cut.server, 'the log before the kill is unchanged');
  await page.getByTestId('message-input').fill('are you still there?');
  await page.getByTestId('send-message').click();
  await page.locator('[data-testid=assistant-message]:not(.streaming)', { hasText: 'You said: are you still there?' }).waitFor();
  await page.getByTestId('turn-result').last().waitFor();
  await page.locator('[data-testid=state-badge][data-reason=idle]').waitFor();
  assert.equal(await page.locator('[data-testid=assistant-message]', { hasText: 'You said' }).count(), 1);
  // (It may have grown by what the gateway had logged but not yet sent.)
  const later = await firstMessage(page);
  assert.ok(later.startsWith(text) && STREAMED.startsWith(later), `the cut message still reads as it was cut: ${JSON.stringify(later)}`);
  await assertExactlyOnce(page, id);
  await sameInAFreshPage(ctx, page, id);
  await screenshot(page, 'gateway-back');
  console.log(`gateway scenario: ${since(t0)}`);
  await ctx.close();
});

test('the orchestrator restarted mid-session: the history and the pending approval are still there', async () => {
  const t0 = Date.now();
  await control('/split/gateway/start'); // whatever the scenario before left
  const ctx = await loggedIn(browser, SPLIT_URL);
  const id = await createSession(ctx, SPLIT_URL, 'orchestrator-restart', 'Fix the greeting');
  const page = await openSession(ctx, id);
  await toolCard(page, 'Bash').getByTestId('approve').waitFor();
  const before = await assertExactlyOnce(page, id);
  const shown = await transcriptText(page);
  await recordConnectionStates(page);

  await control('/split/orchestrator/restart');
  console.log(`orchestrator restarted: ${since(t0)}`);
  // The page noticed, reconnected by itself (with after=<its last seq>),
  // and shows what it showed, the approval still open.
  await until('the page to reconnect', async () => {
    const states = await connectionStates(page);
    return states.includes('reconnecting') && states[states.length - 1] === 'connected';
  }, WAIT);
  await connected(page);
  console.log(`page reconnected: ${since(t0)}; went through ${(await connectionStates(page)).join(' → ')}`);
  await gatewayConnected(ctx);
  const after = await assertExactlyOnce(page, id);
  assert.deepEqual(after.server.slice(0, before.n), before.server, 'the history survived the restart');
  assert.deepEqual((await transcriptText(page)).slice(0, shown.length), shown);
  await toolCard(page, 'Bash').getByTestId('approve').waitFor();
  const meta = await (await ctx.request.get(`/api/sessions/${encodeURIComponent(id)}`)).json();
  assert.equal(meta.pending_questions, 1, JSON.stringify(meta));
  await sameInAFreshPage(ctx, page, id);

  // The approval still works, and the session goes on.
  await toolCard(page, 'Bash').getByTestId('approve').click();
  await toolCard(page, 'Bash').getByTestId('tool-result').waitFor();
  await toolCard(page, 'Edit').getByTestId('approve').waitFor();
  await assertExactlyOnce(page, id);
  await screenshot(page, 'orchestrator-restart');
  console.log(`orchestrator scenario: ${since(t0)}`);
  await ctx.close();
});
