// The inbox: a second browser's inbox shows a question the moment it opens
// and drops it the moment it is answered elsewhere; twenty sessions waiting
// at once are listed and answered from the inbox alone, each turn going on
// to its end; the header badge and the page title carry the count.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { DEMO_URL, OTHER_USER, WAIT, createScriptedSession, launch, loggedIn, openSession, sessionState, since, screenshot, toolCard, until } from './lib/harness.js';

/** How long a change may take to reach the other browser. */
const LIVE_MS = 1000;
const MANY = 20;

let laptop;
let phone;
before(async () => {
  laptop = await launch();
  phone = await launch();
});
after(async () => {
  await laptop?.close();
  await phone?.close();
});

const call = { step: 'tool', name: 'Bash', input: { command: 'make release' }, result: 'built' };
const turn = [call, { step: 'text', text: 'Released.' }];

/** The inbox's items of `ids` on `page`. */
const itemsOf = (page, ids) => page.locator('[data-testid=inbox-item]').evaluateAll((els, ids) => els.filter((e) => ids.includes(e.dataset.sessionId)).length, ids);

/** The badge's count, the listed items and the page title agree; the count. */
async function countShown(page) {
  return until('the badge, the list and the title to agree', async () => {
    const badge = Number(await page.getByTestId('inbox-badge').getAttribute('data-count'));
    const listed = await page.locator('[data-testid=inbox-item]').count();
    const title = await page.title();
    const want = badge > 0 ? `(${badge}) Duraclaw` : 'Duraclaw';
    return badge === listed && title === want ? { n: badge } : null;
  });
}

test('the inbox updates live in a second browser, and answers twenty waiting sessions', async () => {
  const t0 = Date.now();
  const a = await loggedIn(laptop, DEMO_URL, OTHER_USER);
  const b = await loggedIn(phone, DEMO_URL, OTHER_USER);
  const inbox = await b.newPage();
  await inbox.goto('/#/inbox');
  await inbox.getByTestId('inbox-badge').waitFor();
  await inbox.locator('[data-testid=inbox-empty], [data-testid=inbox-list]').first().waitFor();
  const { n: before } = await countShown(inbox);

  // A question opens in the laptop's session: the phone's inbox lists it
  // within a second of the laptop showing it.
  const id = await createScriptedSession(a, DEMO_URL, 'inbox-live', turn);
  const session = await openSession(a, id);
  await toolCard(session, 'Bash').getByTestId('approve').waitFor();
  const item = inbox.locator(`[data-testid=inbox-item][data-session-id="${id}"]`);
  await item.waitFor({ timeout: LIVE_MS });
  assert.match(await item.innerText(), /make release/, 'the tool input is shown');
  assert.match(await item.innerText(), /inbox-live/, 'the worktree is shown');
  assert.equal((await countShown(inbox)).n, before + 1);
  await screenshot(inbox, 'inbox-one');

  // Answered on the laptop: gone from the phone's inbox within a second.
  await toolCard(session, 'Bash').getByTestId('approve').click();
  await toolCard(session, 'Bash').getByTestId('resolution').waitFor();
  await item.waitFor({ state: 'detached', timeout: LIVE_MS });
  assert.equal((await countShown(inbox)).n, before);
  await sessionState(a, id, 'paused', 'idle');
  console.log(`inbox live: opened and answered elsewhere, ${since(t0)}`);

  // Twenty sessions wait at once: the inbox lists all twenty.
  const t1 = Date.now();
  const ids = [];
  for (let i = 0; i < MANY; i++) ids.push(await createScriptedSession(a, DEMO_URL, `inbox-${i}`, turn));
  await until(`the inbox to list the ${MANY} questions`, async () => (await itemsOf(inbox, ids)) === MANY, WAIT * 4);
  assert.equal((await countShown(inbox)).n, before + MANY);
  const order = await inbox.locator('[data-testid=inbox-item]').evaluateAll((els) => els.map((e) => e.dataset.sessionId));
  assert.deepEqual(
    order.filter((s) => ids.includes(s)),
    ids,
    'oldest first: in the order the sessions asked',
  );
  await screenshot(inbox, 'inbox-twenty');
  console.log(`inbox: ${MANY} questions listed in ${since(t1)}`);

  // Answered from the inbox alone: every turn goes on to its end.
  const t2 = Date.now();
  for (const sid of ids) {
    await inbox.locator(`[data-testid=inbox-item][data-session-id="${sid}"]`).getByTestId('approve').click();
  }
  await until('the inbox to drop the answered questions', async () => (await itemsOf(inbox, ids)) === 0, WAIT * 4);
  for (const sid of ids) await sessionState(a, sid, 'paused', 'idle');
  assert.equal((await countShown(inbox)).n, before);
  console.log(`inbox: ${MANY} answered from the inbox, every turn finished, in ${since(t2)}`);

  // The session list, fed by the same stream, shows them idle.
  const list = await b.newPage();
  await list.goto('/#/');
  await until('the list to show the twenty sessions', async () => (await list.locator('[data-testid=session-row]').evaluateAll((els, ids) => els.filter((e) => ids.includes(e.dataset.sessionId)).length, ids)) === MANY);
  await a.close();
  await b.close();
  console.log(`inbox scenario: ${since(t0)}`);
});
