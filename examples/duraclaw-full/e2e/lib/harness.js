// What every scenario shares: the deployments' addresses (from the
// DURACLAW_E2E_* variables that tests/browser_e2e.rs sets), Debian's
// Chromium launched through playwright-core, logins, sessions, bounded waits
// and the exactly-once checks.
//
// No scenario sleeps to synchronise: each waits for a selector or polls a
// condition, and every wait is bounded.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { inflateRawSync } from 'node:zlib';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);

/** A required setting; the suite runs only under tests/browser_e2e.rs. */
export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the suite with \`cargo test -p duraclaw-full --test browser_e2e\``);
  return v;
}

const playwrightCore = env('DURACLAW_E2E_PLAYWRIGHT_CORE');
const { chromium } = require(playwrightCore);
const pinned = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')).devDependencies['playwright-core'];
const found = require(path.join(playwrightCore, 'package.json')).version;
if (found !== pinned) throw new Error(`playwright-core at ${playwrightCore} is ${found}; package.json pins ${pinned}`);

/** The bound on every wait for the page or the server. */
export const WAIT = 15_000;

export const CLAUDE_URL = env('DURACLAW_E2E_CLAUDE_URL');
export const DEMO_URL = env('DURACLAW_E2E_DEMO_URL');
export const SPLIT_URL = env('DURACLAW_E2E_SPLIT_URL');
export const CONTROL_URL = env('DURACLAW_E2E_CONTROL_URL');
export const USER = env('DURACLAW_E2E_USER');
export const OTHER_USER = env('DURACLAW_E2E_OTHER_USER');
export const PASSWORD = env('DURACLAW_E2E_PASSWORD');
export const ARTIFACTS = env('DURACLAW_E2E_ARTIFACTS');

/** Chromium's flags: nothing reaches outside 127.0.0.1. */
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Debian's Chromium. playwright-core gives every launch a fresh, empty
 * profile (its --user-data-dir) under TMPDIR and removes it on close.
 */
export async function launch() {
  return chromium.launch({
    executablePath: env('DURACLAW_E2E_CHROMIUM'),
    headless: true,
    args: CHROMIUM_FLAGS,
    timeout: 30_000,
  });
}

/** A context (its own cookie jar: another device) on `baseURL`. */
export async function newContext(browser, baseURL) {
  const ctx = await browser.newContext({ baseURL, viewport: { width: 1180, height: 860 }, deviceScaleFactor: 1, locale: 'en-US' });
  ctx.setDefaultTimeout(WAIT);
  ctx.setDefaultNavigationTimeout(WAIT);
  return ctx;
}

/** A context logged in as `user` through the API (the login form has its own scenario). */
export async function loggedIn(browser, baseURL, user = USER) {
  const ctx = await newContext(browser, baseURL);
  const r = await ctx.request.post('/api/login', { data: { username: user, password: PASSWORD }, headers: { Origin: baseURL } });
  assert.equal(r.status(), 200, `login as ${user}: ${await r.text()}`);
  return ctx;
}

/** Polls `fn` until it returns a truthy value, which it returns; fails after `timeout`. */
export async function until(what, fn, timeout = WAIT) {
  const give_up = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > give_up) throw new Error(`gave up after ${timeout} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** GET a JSON route with the context's cookie. */
export async function getJson(ctx, route) {
  const r = await ctx.request.get(route);
  assert.equal(r.status(), 200, `GET ${route}: ${r.status()} ${await r.text()}`);
  return r.json();
}

/** Waits until the orchestrator's link to the gateway is `connected`. */
export async function gatewayConnected(ctx, connected = true, timeout = WAIT) {
  await until(`the gateway link to be ${connected ? 'up' : 'down'}`, async () => (await getJson(ctx, '/api/status')).gateway.connected === connected, timeout);
}

/** The worktree whose directory is named `name`. */
export async function worktree(ctx, name) {
  const list = await getJson(ctx, '/api/worktrees');
  const wt = list.find((w) => path.basename(w.path) === name);
  assert.ok(wt, `no worktree ${name} in ${JSON.stringify(list)}`);
  return wt.path;
}

/** Starts a session through the API; returns its id. */
export async function createSession(ctx, baseURL, worktreeName, prompt) {
  await gatewayConnected(ctx);
  const r = await ctx.request.post('/api/sessions', {
    data: { worktree: await worktree(ctx, worktreeName), prompt },
    headers: { Origin: baseURL },
  });
  assert.equal(r.status(), 201, `create a session in ${worktreeName}: ${await r.text()}`);
  return (await r.json()).session_id;
}

/** Waits until the session's REST state is `state` (and `reason`, if given). */
export async function sessionState(ctx, id, state, reason) {
  return until(`session ${id} to be ${state}${reason ? ` (${reason})` : ''}`, async () => {
    const s = await getJson(ctx, `/api/sessions/${encodeURIComponent(id)}`);
    return s.state === state && (reason === undefined || s.reason === reason) ? s : null;
  });
}

/** Opens the session view and waits until its stream is connected. */
export async function openSession(ctx, id) {
  const page = await ctx.newPage();
  await page.goto(`/#/s/${encodeURIComponent(id)}`);
  await connected(page);
  return page;
}

export async function connected(page) {
  await page.locator('[data-testid=connection-state][data-state=connected]').waitFor();
}

/** A call to the test's control endpoint (process kills and restarts, the fake model's latch). */
export async function control(route, method = 'POST') {
  const r = await fetch(CONTROL_URL + route, { method });
  const text = await r.text();
  assert.equal(r.status, 200, `${method} ${route}: ${text}`);
  return JSON.parse(text);
}

/** What the page's transcript model has applied: seqs, gaps, last seq. */
export async function pageSeqs(page) {
  return page.evaluate(() => ({ seqs: [...window.__duraclaw.seqs], gaps: [...window.__duraclaw.gaps], last: window.__duraclaw.lastSeq }));
}

/**
 * The session's whole log as the server has it, read over a WebSocket of
 * its own from inside `page` (same origin, same cookie): [{seq, type, event}].
 */
export async function serverLog(page, id) {
  return page.evaluate(
    ({ id, wait }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${location.host}/api/sessions/${encodeURIComponent(id)}/ws?after=0&compact=0`);
        const events = [];
        let last = null;
        const timer = setTimeout(() => {
          ws.close();
          reject(new Error(`server log: ${events.length} events of ${last} in ${wait} ms`));
        }, wait);
        const done = () => {
          clearTimeout(timer);
          ws.close();
          resolve(events);
        };
        ws.onmessage = (m) => {
          const f = JSON.parse(m.data);
          if (f.type === 'snapshot') {
            last = f.last_seq;
            if (last === 0) done();
          } else if (f.type === 'event') {
            events.push({ seq: f.seq, type: f.event.type, event: f.event });
            if (last !== null && f.seq >= last) done();
          }
        };
        ws.onerror = () => reject(new Error('server log: the WebSocket failed'));
      }),
    { id, wait: WAIT },
  );
}

const range = (a, b) => Array.from({ length: Math.max(0, b - a + 1) }, (_, i) => a + i);

/**
 * The exactly-once checks on a page at rest: the page applied seqs 1..N, in
 * order, each once, with no gap, where N is the server's last seq; the DOM
 * shows each seq at most once, and the transcript's items are in seq order.
 */
export async function assertExactlyOnce(page, id) {
  const server = await serverLog(page, id);
  const n = server.length ? server[server.length - 1].seq : 0;
  assert.deepEqual(
    server.map((e) => e.seq),
    range(1, n),
    'the server log is dense',
  );
  const got = await until('the page to catch up with the server', async () => {
    const s = await pageSeqs(page);
    return s.last >= n ? s : null;
  });
  assert.deepEqual(got.seqs, range(1, got.last), 'the page applied every seq once, in order');
  assert.deepEqual(got.gaps, [], 'the page saw no gap');
  const dom = await domSeqs(page);
  assert.equal(new Set(dom.all).size, dom.all.length, `a seq is shown twice: ${dom.all}`);
  assert.ok(
    dom.all.every((s) => s >= 1 && s <= got.last),
    `the DOM shows a seq the page never applied: ${dom.all}`,
  );
  assert.deepEqual(
    dom.items,
    [...dom.items].sort((a, b) => a - b),
    'the transcript items are in seq order',
  );
  return { n: got.last, server };
}

/** `[data-seq]` in the DOM: all of them, and those of the transcript's items. */
export async function domSeqs(page) {
  return page.evaluate(() => ({
    all: [...document.querySelectorAll('[data-testid=transcript] [data-seq]')].map((e) => Number(e.dataset.seq)),
    items: [...document.querySelectorAll('[data-testid=transcript] > [data-seq]')].map((e) => Number(e.dataset.seq)),
  }));
}

/** The transcript as a person reads it: one line per item. */
export async function transcriptText(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('[data-testid=transcript] > [data-seq]')].map((e) => `${e.dataset.seq} ${e.innerText.replace(/\s+/g, ' ').trim()}`),
  );
}

/** Records every connection state the page goes through in window.__connectionStates. */
export async function recordConnectionStates(page) {
  await page.evaluate(() => {
    const d = window.__duraclaw;
    let current = d.connection;
    window.__connectionStates = [current];
    Object.defineProperty(d, 'connection', {
      configurable: true,
      get: () => current,
      set: (v) => {
        current = v;
        window.__connectionStates.push(v);
      },
    });
  });
}

export async function connectionStates(page) {
  return page.evaluate(() => window.__connectionStates);
}

/** A screenshot under ci-output/browser-e2e/. */
export async function screenshot(page, name, opts = {}) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, ...opts });
  return file;
}

/**
 * A screenshot of the whole session view: the viewport grows to the page's
 * height (up to 3000 px), so the sticky composer sits at the bottom instead
 * of over the transcript.
 */
export async function screenshotWhole(page, name) {
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  const { width } = page.viewportSize();
  await page.setViewportSize({ width, height: Math.min(Math.max(height, 860), 3000) });
  await page.evaluate(() => window.scrollTo(0, 0));
  return screenshot(page, name);
}

/** A screenshot of one element (a card) under ci-output/…/. */
export async function screenshotOf(locator, name) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await locator.screenshot({ path: file });
  return file;
}

/**
 * Routes the page's session WebSockets through a relay to the real server.
 * Frames from the server can be held back (`holding`, then `release()`), as
 * if the network stalled, or one can be lost with the connection
 * (`cutBefore(fn)`: the first server frame for which `fn(frame)` is true is
 * not delivered and the page's connection breaks instead; a binary frame
 * of a compressed replay is lost whole when one of its frames is). `fromPage`
 * and `toPage` list the frames each way, parsed (a binary frame's inflated);
 * `urls` each connection's URL.
 */
export async function relaySocket(page) {
  const relay = { holding: false, held: [], sockets: [], urls: [], fromPage: [], toPage: [], cut: null, lost: [] };
  relay.release = () => {
    relay.holding = false;
    for (const [ws, m] of relay.held.splice(0)) ws.send(m);
  };
  relay.cutBefore = (fn) => {
    relay.cut = fn;
  };
  await page.routeWebSocket(/\/api\/sessions\/[^/]+\/ws/, (ws) => {
    const server = ws.connectToServer();
    relay.sockets.push(ws);
    relay.urls.push(ws.url());
    server.onMessage((m) => {
      const frames =
        typeof m === 'string'
          ? [JSON.parse(m)]
          : inflateRawSync(m)
              .toString('utf8')
              .split('\n')
              .map((l) => JSON.parse(l));
      const cut = relay.cut && frames.find((f) => relay.cut(f));
      if (cut) {
        relay.cut = null;
        relay.lost.push(cut);
        ws.close({ code: 1012, reason: 'connection lost' });
        return;
      }
      relay.toPage.push(...frames);
      if (relay.holding) relay.held.push([ws, m]);
      else ws.send(m);
    });
    ws.onMessage((m) => {
      if (typeof m === 'string') relay.fromPage.push(JSON.parse(m));
      server.send(m);
    });
    server.onClose((code, reason) => ws.close({ code, reason }));
    ws.onClose((code, reason) => server.close({ code, reason }));
  });
  return relay;
}

/**
 * Starts a session through the API whose scripted turn is `steps` (the
 * demo script plays a first prompt `{"turn": [steps…]}`); returns its id.
 */
export async function createScriptedSession(ctx, baseURL, worktreeName, steps) {
  return createSession(ctx, baseURL, worktreeName, JSON.stringify({ turn: steps }));
}

/** The tool card of the `n`-th (0-based) call to `tool`. */
export function toolCard(page, tool, n = 0) {
  return page.locator(`[data-testid=tool-call][data-tool=${tool}]`).nth(n);
}

/** Milliseconds since `t0`, for the timing lines. */
export const since = (t0) => `${Date.now() - t0} ms`;
