// The UI rendering a long session's replay in headless Chromium (Debian's,
// through playwright-core), driven by benches/ui.rs, which starts the real
// `duraclaw orchestrator` over a session of UI_EVENTS events and a raw page
// server, and passes their addresses in the environment.
//
// Each round opens a fresh page and measures, from the page's navigation
// start (`performance.now()`), the time until the last event's element is
// in the DOM and a frame was painted after it: the element is looked for
// once per animation frame (a query per frame, not per mutation, so the
// looking costs the page nothing measurable), and the time taken at the
// next frame.
//
// - ours: the UI, logged in, on `#/s/<id>`: it connects, replays
//   and renders every event (messages assembled from deltas, tool cards);
// - raw: a minimal page on a raw WebSocket that receives the same frames
//   and appends one <div> per event: the same bytes, the least DOM work.
//
// Rounds alternate (ours, raw, raw, ours, ...). Prints one JSON line.

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through \`cargo bench -p duraclaw-full --bench ui\``);
  return v;
}

const { chromium } = require(env('UI_PLAYWRIGHT_CORE'));
const OURS_URL = env('UI_OURS_URL');
const RAW_URL = env('UI_RAW_URL');
const SESSION = env('UI_SESSION');
const LAST = Number(env('UI_EVENTS'));
const ROUNDS = Number(env('UI_ROUNDS'));
const USER = env('UI_USER');
const PASSWORD = env('UI_PASSWORD');
const WAIT = 120_000;

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// Runs in the page before its own scripts.
function watchForLast(selector) {
  window.__painted = new Promise((resolve) => {
    const look = () => {
      if (document.querySelector(selector)) {
        requestAnimationFrame(() => resolve(performance.now()));
      } else {
        requestAnimationFrame(look);
      }
    };
    requestAnimationFrame(look);
  });
}

async function context(browser, baseURL) {
  const ctx = await browser.newContext({ baseURL, viewport: { width: 1180, height: 860 }, deviceScaleFactor: 1, locale: 'en-US' });
  ctx.setDefaultTimeout(WAIT);
  ctx.setDefaultNavigationTimeout(WAIT);
  await ctx.addInitScript(watchForLast, `[data-seq="${LAST}"]`);
  return ctx;
}

async function ours(browser) {
  const ctx = await context(browser, OURS_URL);
  const r = await ctx.request.post('/api/login', { data: { username: USER, password: PASSWORD }, headers: { Origin: OURS_URL } });
  if (r.status() !== 200) throw new Error(`login: ${r.status()} ${await r.text()}`);
  const page = await ctx.newPage();
  await page.goto(`/#/s/${encodeURIComponent(SESSION)}`);
  const ms = await page.evaluate(() => window.__painted);
  const seqs = await page.evaluate(() => [...(window.__duraclaw?.seqs ?? [])].length);
  if (seqs !== LAST) throw new Error(`the UI applied ${seqs} events, not ${LAST}`);
  await ctx.close();
  return ms;
}

async function raw(browser) {
  const ctx = await context(browser, RAW_URL);
  const page = await ctx.newPage();
  await page.goto('/');
  const ms = await page.evaluate(() => window.__painted);
  const n = await page.evaluate(() => document.querySelectorAll('[data-seq]').length);
  if (n !== LAST) throw new Error(`the raw page shows ${n} events, not ${LAST}`);
  await ctx.close();
  return ms;
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

const browser = await chromium.launch({ executablePath: env('UI_CHROMIUM'), headless: true, args: FLAGS, timeout: 30_000 });
try {
  // Warm up both (Chromium's caches, the server's read pool).
  await ours(browser);
  await raw(browser);
  const o = [];
  const w = [];
  const ratios = [];
  for (let i = 0; i < ROUNDS; i++) {
    let a;
    let b;
    if (i % 2 === 0) {
      a = await ours(browser);
      b = await raw(browser);
    } else {
      b = await raw(browser);
      a = await ours(browser);
    }
    o.push(a);
    w.push(b);
    ratios.push(a / b);
  }
  console.log(JSON.stringify({ events: LAST, rounds: ROUNDS, ours_ms: o, raw_ms: w, ours_median_ms: median(o), raw_median_ms: median(w), ratio_median: median(ratios) }));
} finally {
  await browser.close();
}
