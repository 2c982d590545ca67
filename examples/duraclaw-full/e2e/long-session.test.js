// A long session (20,000 events: 400 messages of 50 streamed deltas each)
// opens with its tail, not its history; scrolling up loads older pages with
// the view kept in place, through a connection lost mid-scroll, until the
// start: every message is there once and the page holds every seq once. The
// DOM holds only the items near the view, however long the transcript; an
// item is brought into view by its seq, and at the bottom the view follows
// a live turn.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DEMO_URL,
  connected,
  createScriptedSession,
  gatewayConnected,
  getJson,
  launch,
  loggedIn,
  pageSeqs,
  relaySocket,
  screenshot,
  since,
  until,
} from './lib/harness.js';

const MESSAGES = 400;
const CHUNKS = 50;
/** At most this many transcript items in the DOM at once. */
const DOM_ITEMS = 150;
/** How long the session may take to stream its 20,000 events. */
const STREAM_WAIT = 240_000;
/** How long one older page may take: a page of this session is read and compacted on a two-core machine that runs both hosts' suites at once. */
const PAGE_WAIT = 45_000;

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const label = (i) => `message ${String(i).padStart(3, '0')}:`;

/** How many transcript items the DOM holds, and how many the page has. */
const held = (page) =>
  page.evaluate(() => ({ dom: document.querySelectorAll('[data-testid=transcript] > [data-seq]').length, items: window.__duraclaw.items }));

/** Two frames: what a scroll changes is rendered. */
const frames = (page) => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

test('a 20,000-event session opens with its tail and scrolls back to its start, each message once', async () => {
  const t0 = Date.now();
  const ctx = await loggedIn(browser, DEMO_URL);
  await gatewayConnected(ctx);
  // 100 characters in 50 deltas of two.
  const steps = Array.from({ length: MESSAGES }, (_, i) => ({
    step: 'text',
    text: `${label(i)} ${'lorem ipsum dolor '.repeat(10)}`.slice(0, 2 * CHUNKS),
    chunks: CHUNKS,
  }));
  const id = await createScriptedSession(ctx, DEMO_URL, 'long-session', steps);
  await until(
    'the long turn to end',
    async () => {
      const s = await getJson(ctx, `/api/sessions/${encodeURIComponent(id)}`);
      return s.state === 'paused' && s.reason === 'idle';
    },
    STREAM_WAIT,
  );
  console.log(`streamed: ${since(t0)}`);

  const page = await ctx.newPage();
  await page.setViewportSize({ width: 390, height: 844 });
  const relay = await relaySocket(page);
  await page.goto(`/#/s/${encodeURIComponent(id)}`);
  await connected(page);
  const snapshot = relay.toPage.find((f) => f.type === 'snapshot');
  const n = snapshot.last_seq;
  assert.ok(n >= MESSAGES * CHUNKS, `the session has ${n} events`);
  assert.match(relay.urls[0], /[?&]tail=\d+&compress=deflate-raw$/, 'a fresh page asks for the compressed tail');

  // Opened with the last message, not the history.
  await page.locator('[data-testid=assistant-message]', { hasText: label(MESSAGES - 1) }).waitFor();
  const opened = await pageSeqs(page);
  const open = await held(page);
  assert.ok(open.dom <= DOM_ITEMS, `the DOM holds ${open.dom} of ${open.items} items`);
  assert.equal(opened.last, n);
  const firstSeq = await page.evaluate(() => window.__duraclaw.firstSeq);
  assert.ok(firstSeq > 1, `the page opened with a tail from seq ${firstSeq}`);
  // The tail; and older pages only as far as filling the screen takes.
  assert.ok(firstSeq <= snapshot.first_seq && snapshot.first_seq > n - 1000, `the tail started at ${snapshot.first_seq}`);
  assert.ok(
    relay.toPage.filter((f) => f.type === 'event' && f.event.phase === 'delta').length === 0,
    'closed messages come as their finals, not their deltas',
  );
  await screenshot(page, 'long-session-tail');

  // Scroll up, a page at a time; each older page goes in with the view in
  // place. The third page's answer is lost with the connection.
  let cut = false;
  for (let round = 0; ; round++) {
    const state = await page.evaluate(() => ({ first: window.__duraclaw.firstSeq, pages: window.__duraclaw.pages }));
    if (state.first <= 1) break;
    assert.ok(round < 400, 'the start of the session within 400 pages');
    if (state.pages === 2 && !cut) {
      cut = true;
      relay.cutBefore((f) => f.type === 'page');
    }
    // Hold what the server sends, ask for the page (scroll to the top, the
    // window follows), note where the top item is, then let the page in.
    relay.holding = true;
    await page.evaluate(() => window.scrollTo(0, 0));
    await frames(page);
    const before = await page.evaluate(() => {
      const el = document.querySelector('[data-testid=transcript] > [data-seq]');
      return { seq: el && el.dataset.seq, top: el && el.getBoundingClientRect().top };
    });
    relay.release();
    await until(
      `page ${state.pages + 1} or a reconnect`,
      async () => {
        const now = await page.evaluate(() => ({ pages: window.__duraclaw.pages, conn: window.__duraclaw.connection }));
        return now.pages > state.pages || (cut && relay.lost.length > 0 && now.conn === 'connected' && relay.sockets.length > 1);
      },
      PAGE_WAIT
    );
    const after = await page.evaluate(() => window.__duraclaw.pages);
    if (after > state.pages && before.seq) {
      const top = await page.evaluate((seq) => {
        const el = document.querySelector(`[data-testid=transcript] > [data-seq="${seq}"]`);
        return el && el.getBoundingClientRect().top;
      }, before.seq);
      assert.ok(top !== null && Math.abs(top - before.top) <= 2, `the view jumped from ${before.top} to ${top} when page ${after} went in`);
    }
  }
  assert.ok(cut && relay.lost.length === 1, 'a page answer was lost with its connection');
  assert.ok(relay.sockets.length >= 2, 'the page reconnected mid-scroll');
  // ... naming the log's epoch the first connection's snapshot gave, where
  // the host names one (the local host does, a Durable Object does not).
  const epoch = relay.toPage.find((f) => f.type === 'snapshot').epoch;
  assert.match(
    relay.urls[1],
    new RegExp(`[?&]after=\\d+${epoch ? `&epoch=${epoch}` : ''}&compress=deflate-raw$`),
    'the reconnect resumes after what it holds'
  );

  // The whole transcript is in the model, a window of it in the DOM.
  const top = await held(page);
  assert.ok(top.items >= MESSAGES, `the page has ${top.items} items`);
  assert.ok(top.dom <= DOM_ITEMS, `the DOM holds ${top.dom} of ${top.items} items`);

  // Every seq once, in order; every message once.
  const got = await pageSeqs(page);
  assert.equal(got.seqs.length, n);
  assert.ok(
    got.seqs.every((s, i) => s === i + 1),
    'the page holds every seq once, in order',
  );
  assert.deepEqual(got.gaps, []);
  // Read top to bottom, a screen at a time: each message once, in order,
  // and never more than the window in the DOM.
  assert.equal(await page.getByTestId('older').count(), 0, 'nothing older to load');
  const seen = new Map();
  await page.evaluate(() => window.scrollTo(0, 0));
  for (let step = 0; ; step++) {
    assert.ok(step < 2000, 'the bottom within 2,000 screens');
    await frames(page);
    const view = await page.evaluate(() => {
      const el = document.scrollingElement;
      const shown = [...document.querySelectorAll('[data-testid=transcript] > [data-testid=assistant-message]')].map((e) => [
        Number(e.dataset.seq),
        e.innerText,
      ]);
      return { shown, items: document.querySelectorAll('[data-testid=transcript] > [data-seq]').length, end: el.scrollTop + el.clientHeight >= el.scrollHeight - 2 };
    });
    assert.ok(view.items <= DOM_ITEMS, `the DOM holds ${view.items} items`);
    for (const [seq, text] of view.shown) seen.set(seq, text);
    if (view.end) break;
    await page.evaluate(() => window.scrollBy(0, Math.floor(window.innerHeight * 0.8)));
  }
  const texts = [...seen.entries()].sort((a, b) => a[0] - b[0]).map(([, t]) => t);
  for (let i = 0; i < MESSAGES; i++) {
    assert.equal(texts.filter((t) => t.includes(label(i))).length, 1, `${label(i)} once`);
    assert.ok(texts[i].includes(label(i)), `${label(i)} in its place`);
  }
  assert.equal(texts.length, MESSAGES);

  // An item far from the view is brought to it by its seq, as a test (or the
  // pending-question bar) finds it.
  const middle = [...seen.entries()].find(([, t]) => t.includes(label(MESSAGES / 2)))[0];
  await page.evaluate(() => window.scrollTo(0, 0));
  await frames(page);
  await page.evaluate((seq) => window.__duraclaw.revealSeq(seq), middle);
  await until(`message ${MESSAGES / 2} in view`, () =>
    page.evaluate((seq) => {
      const el = document.querySelector(`[data-testid=transcript] > [data-seq="${seq}"]`);
      const r = el && el.getBoundingClientRect();
      return !!r && r.top >= 0 && r.bottom <= window.innerHeight;
    }, middle),
  );

  // Back at the bottom, the view follows what streams in live.
  await until('the view at the bottom', () =>
    page.evaluate(() => {
      const el = document.scrollingElement;
      el.scrollTop = el.scrollHeight;
      return el.scrollHeight - el.scrollTop - el.clientHeight < 2;
    }),
  );
  await page.getByTestId('message-input').fill('one more turn');
  await page.getByTestId('send-message').click();
  await until('the live message in view at the bottom', () =>
    page.evaluate(() => {
      const all = document.querySelectorAll('[data-testid=transcript] > [data-testid=assistant-message]');
      const el = all[all.length - 1];
      const r = el && el.getBoundingClientRect();
      return !!r && el.innerText.includes('Running the whole test suite') && r.top >= 0 && r.bottom <= window.innerHeight;
    }),
  );
  assert.ok((await held(page)).dom <= DOM_ITEMS);
  // The turn waits until it is aborted.
  await page.getByTestId('abort').click();
  await until('the turn aborted', async () => (await page.getByTestId('state-badge').getAttribute('data-state')) !== 'active');
  await screenshot(page, 'long-session-top');
  console.log(`long session: ${n} events, ${await page.evaluate(() => window.__duraclaw.pages)} pages, ${since(t0)}`);
  await ctx.close();
});
