// Opening a long session in the UI, in headless Chromium (Debian's, through
// playwright-core) at phone size with the CPU throttled, driven by
// benches/ui.rs, which starts the real `duraclaw orchestrator` over two
// sessions (UI_SMALL of UI_SMALL_EVENTS events, UI_BIG of UI_BIG_EVENTS) and
// passes its address in the environment.
//
// Each round opens a fresh page (390×844, CPU throttled 4× with the DevTools
// protocol's Emulation.setCPUThrottlingRate) on `#/s/<id>`, logged in, and
// measures from the page's navigation start (`performance.now()`) until the
// last event's element is in the DOM and the stream is connected, and a
// frame was painted after both: they are looked for once per animation
// frame, and the time taken at the next frame; and, as the page's own
// floor, the time to the session view's frame (header, empty transcript)
// painted. Rounds alternate (small,
// big, big, small, ...); the ratio is big / small per pair of rounds.
//
// Then the bytes of a full replay (`after=0`) of the big session and of
// UI_TOKENS (UI_TOKENS_EVENTS events, the same text in token-sized deltas),
// with closed messages compacted (the default) and with `compact=0`, read
// over a WebSocket from inside a page; and compressed (`compress=deflate-raw`:
// the binary frames' bytes), also for UI_PROSE (the big session's shape with
// text from the repository's docs and source). Prints one JSON line.

import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through \`cargo bench -p duraclaw-full --bench ui\``);
  return v;
}

const { chromium } = require(env('UI_PLAYWRIGHT_CORE'));
const URL = env('UI_URL');
const SMALL = { id: env('UI_SMALL'), last: Number(env('UI_SMALL_EVENTS')) };
const BIG = { id: env('UI_BIG'), last: Number(env('UI_BIG_EVENTS')) };
const TOKENS = { id: env('UI_TOKENS'), last: Number(env('UI_TOKENS_EVENTS')) };
const PROSE = { id: env('UI_PROSE'), last: BIG.last };
const ROUNDS = Number(env('UI_ROUNDS'));
const USER = env('UI_USER');
const PASSWORD = env('UI_PASSWORD');
const WAIT = 300_000;

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
  // The session view's frame (its header and empty transcript) painted: the
  // page's own floor, whatever the session's length.
  window.__shell = new Promise((resolve) => {
    const look = () => {
      if (document.querySelector('[data-testid=transcript]')) requestAnimationFrame(() => resolve(performance.now()));
      else requestAnimationFrame(look);
    };
    requestAnimationFrame(look);
  });
  window.__painted = new Promise((resolve) => {
    const look = () => {
      if (document.querySelector(selector) && document.querySelector('[data-testid=connection-state][data-state=connected]')) {
        requestAnimationFrame(() => resolve(performance.now()));
      } else {
        requestAnimationFrame(look);
      }
    };
    requestAnimationFrame(look);
  });
}

async function context(browser, last) {
  const ctx = await browser.newContext({ baseURL: URL, viewport: { width: 390, height: 844 }, deviceScaleFactor: 1, locale: 'en-US' });
  ctx.setDefaultTimeout(WAIT);
  ctx.setDefaultNavigationTimeout(WAIT);
  await ctx.addInitScript(watchForLast, `[data-seq="${last}"]`);
  const r = await ctx.request.post('/api/login', { data: { username: USER, password: PASSWORD }, headers: { Origin: URL } });
  if (r.status() !== 200) throw new Error(`login: ${r.status()} ${await r.text()}`);
  return ctx;
}

async function open(browser, s, profile = false, trace = null) {
  const ctx = await context(browser, s.last);
  const page = await ctx.newPage();
  if (trace) await browser.startTracing(page, { path: trace, categories: TRACE_CATEGORIES });
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: 4 });
  if (profile) {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
    await cdp.send('Profiler.start');
  }
  await page.goto(`/#/s/${encodeURIComponent(s.id)}`);
  const ms = await page.evaluate(() => window.__painted);
  if (profile) printProfile((await cdp.send('Profiler.stop')).profile);
  if (trace) await browser.stopTracing();
  shells.push(await page.evaluate(() => window.__shell));
  starts.push(await page.evaluate(startProfile));
  const last = await page.evaluate(() => window.__duraclaw?.lastSeq);
  if (last !== s.last) throw new Error(`the UI reached seq ${last}, not ${s.last}`);
  await ctx.close();
  return ms;
}

/** What a trace (UI_TRACE) records: the main thread's tasks, scripts, layout and paint. */
const TRACE_CATEGORIES = ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'v8', 'v8.execute', 'blink.user_timing', 'loading'];

/**
 * Writes where a CPU profile's time went to the file UI_PROFILE names: self
 * time per function, the top 30, and the total sampled.
 */
function printProfile(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = profile.timeDeltas || [];
  (profile.samples || []).forEach((id, i) => {
    const f = byId.get(id).callFrame;
    const file = (f.url || '').split('/').pop();
    const key = `${f.functionName || '(anonymous)'} ${file}:${f.lineNumber + 1}:${f.columnNumber + 1}`;
    self.set(key, (self.get(key) || 0) + (dt[i + 1] || 0) / 1000);
  });
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 30);
  const lines = [`profile: ${Math.round(total)} ms sampled`];
  for (const [k, v] of top) lines.push(`${v.toFixed(1).padStart(8)} ms  ${k}`);
  writeFileSync(process.env.UI_PROFILE, `${lines.join('\n')}\n`);
  writeFileSync(`${process.env.UI_PROFILE}.cpuprofile`, JSON.stringify(profile));
}

/** Every round's time to the session view's frame painted. */
const shells = [];

/** Every round's start, from the page's resource timing (see startProfile). */
const starts = [];

/**
 * Runs in the page: when the page's own start happened (ms from navigation
 * start): the HTML, its script and style loaded, the script run (DOM
 * content loaded), and the first requests the app made (login check
 * `/api/me`, the session's meta) sent and answered.
 */
function startProfile() {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const find = (test) => res.find((r) => test(new URL(r.name).pathname));
  const at = (r, k) => (r ? Math.round(r[k]) : null);
  const js = find((p) => p.startsWith('/assets/') && p.endsWith('.js'));
  const css = find((p) => p.startsWith('/assets/') && p.endsWith('.css'));
  const me = find((p) => p === '/api/me');
  const meta = find((p) => /^\/api\/sessions\/[^/]+$/.test(p));
  // The app's own marks (connection.js `markOnce`): its socket and first render.
  const marks = {};
  for (const m of performance.getEntriesByType('mark')) {
    if (m.name.startsWith('duraclaw:')) marks[m.name.slice('duraclaw:'.length).replace(/-/g, '_')] = Math.round(m.startTime);
  }
  return {
    html: at(nav, 'responseEnd'),
    script_loaded: at(js, 'responseEnd'),
    style_loaded: at(css, 'responseEnd'),
    script_run: at(nav, 'domContentLoadedEventEnd'),
    me_sent: at(me, 'startTime'),
    me_answered: at(me, 'responseEnd'),
    meta_sent: at(meta, 'startTime'),
    meta_answered: at(meta, 'responseEnd'),
    ...marks,
  };
}

/** The median of each field over `rows`. */
function medians(rows) {
  const out = {};
  for (const k of Object.keys(rows[0] || {})) {
    const v = rows.map((r) => r[k]).filter((x) => x !== null);
    out[k] = v.length ? median(v) : null;
  }
  return out;
}

/**
 * Bytes of `after=0` replay frames of session `s` (`query` added): the
 * item frames' text, or with `compress=deflate-raw` the binary frames'
 * (inflated in order to see where the replay ends).
 */
async function replayBytes(browser, s, query) {
  const ctx = await context(browser, s.last);
  const page = await ctx.newPage();
  await page.goto('/');
  const bytes = await page.evaluate(
    ({ id, last, query }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${location.host}/api/sessions/${encodeURIComponent(id)}/ws?after=0${query}`);
        ws.binaryType = 'arraybuffer';
        let bytes = 0;
        let done = false;
        const take = (text, size) => {
          const f = JSON.parse(text);
          if (done || (f.type !== 'event' && f.type !== 'compacted')) return;
          bytes += size;
          if ((f.type === 'event' ? f.seq : f.last) >= last) {
            done = true;
            ws.close();
            resolve(bytes);
          }
        };
        let chain = Promise.resolve();
        ws.onmessage = (m) => {
          chain = chain.then(async () => {
            if (typeof m.data === 'string') {
              take(m.data, new TextEncoder().encode(m.data).length);
              return;
            }
            const stream = new Blob([m.data]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
            const lines = (await new Response(stream).text()).split('\n');
            lines.forEach((l, i) => take(l, i === 0 ? m.data.byteLength : 0));
          });
          chain.catch(reject);
        };
        ws.onerror = () => reject(new Error('replay socket failed'));
      }),
    { id: s.id, last: s.last, query },
  );
  await ctx.close();
  return bytes;
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** The bytes of full replays (`after=0`) of the big, token and prose sessions, as text and compressed. */
async function countBytes(browser) {
  const compact = await replayBytes(browser, BIG, '');
  const full = await replayBytes(browser, BIG, '&compact=0');
  const tokensCompact = await replayBytes(browser, TOKENS, '');
  const tokensFull = await replayBytes(browser, TOKENS, '&compact=0');
  const deflate = '&compress=deflate-raw';
  const compactDeflate = await replayBytes(browser, BIG, deflate);
  const fullDeflate = await replayBytes(browser, BIG, `&compact=0${deflate}`);
  const tokensDeflate = await replayBytes(browser, TOKENS, deflate);
  const prose = await replayBytes(browser, PROSE, '');
  const proseFull = await replayBytes(browser, PROSE, '&compact=0');
  const proseDeflate = await replayBytes(browser, PROSE, deflate);
  const proseFullDeflate = await replayBytes(browser, PROSE, `&compact=0${deflate}`);
  return {
    replay_bytes_compacted: compact,
    replay_bytes_full: full,
    replay_bytes_ratio: compact / full,
    token_deltas_events: TOKENS.last,
    token_deltas_replay_bytes_compacted: tokensCompact,
    token_deltas_replay_bytes_full: tokensFull,
    token_deltas_replay_bytes_ratio: tokensCompact / tokensFull,
    // Compressed: the binary frames' bytes; ratios to `compact=0` as text.
    replay_bytes_compacted_deflate: compactDeflate,
    replay_bytes_full_deflate: fullDeflate,
    replay_bytes_deflate_ratio: compactDeflate / full,
    token_deltas_replay_bytes_compacted_deflate: tokensDeflate,
    token_deltas_replay_bytes_deflate_ratio: tokensDeflate / tokensFull,
    prose_replay_bytes_compacted: prose,
    prose_replay_bytes_full: proseFull,
    prose_replay_bytes_ratio: prose / proseFull,
    prose_replay_bytes_compacted_deflate: proseDeflate,
    prose_replay_bytes_full_deflate: proseFullDeflate,
    prose_replay_bytes_deflate_ratio: proseDeflate / proseFull,
  };
}

const browser = await chromium.launch({ executablePath: env('UI_CHROMIUM'), headless: true, args: FLAGS, timeout: 30_000 });
try {
  // Warm up (Chromium's caches, the server's read pool).
  await open(browser, SMALL);
  await open(browser, BIG);
  const small = [];
  const big = [];
  const ratios = [];
  for (let i = 0; i < ROUNDS; i++) {
    let a;
    let b;
    if (i % 2 === 0) {
      a = await open(browser, SMALL);
      b = await open(browser, BIG);
    } else {
      b = await open(browser, BIG);
      a = await open(browser, SMALL);
    }
    small.push(a);
    big.push(b);
    ratios.push(b / a);
  }
  // UI_PROFILE=<file>: one more open of the big session under the CPU profiler.
  if (process.env.UI_PROFILE) await open(browser, BIG, true);
  // UI_TRACE=<file>: one more open of the big session with a Chromium trace
  // written to the file (chrome://tracing / Perfetto format).
  if (process.env.UI_TRACE) await open(browser, BIG, false, process.env.UI_TRACE);
  const shellFloor = median(shells.slice(2));
  // UI_BYTES=0: times only (e.g. against a server without compress=deflate-raw).
  const bytes = process.env.UI_BYTES === '0' ? null : await countBytes(browser);
  console.log(
    JSON.stringify({
      events_small: SMALL.last,
      events_big: BIG.last,
      rounds: ROUNDS,
      small_ms: small,
      big_ms: big,
      small_median_ms: median(small),
      big_median_ms: median(big),
      ratio_median: median(ratios),
      shell_median_ms: shellFloor,
      start_median_ms: medians(starts.slice(2)),
      ...bytes,
    }),
  );
} finally {
  await browser.close();
}
