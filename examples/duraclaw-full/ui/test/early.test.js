import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { sockets } from './fake-websocket.js';

const { SessionSocket, streamUrl } = await import('../src/connection.js');

const EARLY = readFileSync(new URL('../public/early.js', import.meta.url), 'utf8');

/** Runs public/early.js as the page would, on `hash`; what it asked for. */
function runEarly(hash) {
  sockets.length = 0;
  const fetched = [];
  globalThis.location.hash = hash;
  globalThis.fetch = (path, init) => {
    fetched.push([path, init.method, init.credentials]);
    return Promise.resolve({ status: 200, path });
  };
  delete window.__duraclawEarly;
  new Function(EARLY)();
  return fetched;
}

test('on a session link the early script opens exactly the socket the app would open first', () => {
  const fetched = runEarly('#/s/a%20b%2Fc?q=q1');
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].url, streamUrl('a b/c', 0));
  assert.deepEqual(fetched, [
    ['/api/me', 'GET', 'same-origin'],
    ['/api/sessions/a%20b%2Fc', 'GET', 'same-origin'],
  ]);
});

test('elsewhere the early script asks for nothing', () => {
  for (const hash of ['', '#/', '#/new', '#/settings', '#/s/%E0%A4%A']) {
    const fetched = runEarly(hash);
    assert.equal(sockets.length, 0, hash);
    assert.deepEqual(fetched, [], hash);
  }
});

test('the app adopts the early socket and gets what it saw first, in order, then live frames', () => {
  runEarly('#/s/s1');
  const early = sockets[0];
  // The server answers before the app runs.
  early.open();
  early.frame({ type: 'hello', v: 1 });
  early.frame({ type: 'event', seq: 1, event: { type: 'user.message', text: 'hi' } });
  early.frame({ type: 'snapshot', last_seq: 1, state: 'active', pending: [] });
  const frames = [];
  const states = [];
  const s = new SessionSocket('s1', () => 0, { onFrame: (f) => frames.push(f.type), onStatus: (st) => states.push(st.state) });
  s.start();
  assert.equal(sockets.length, 1, 'no second socket');
  assert.equal(s.ready, true);
  early.frame({ type: 'event', seq: 2, event: { type: 'user.message', text: 'again' } });
  assert.deepEqual(frames, ['hello', 'event', 'snapshot', 'event']);
  assert.equal(states.at(-1), 'connected');
  s.stop();
});

test('an early socket that closed before the app ran: the app reconnects as after any drop', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  runEarly('#/s/s1');
  sockets[0].drop(1006);
  const s = new SessionSocket('s1', () => 0, { onFrame() {}, onStatus() {} });
  s.start();
  t.mock.timers.tick(2000);
  assert.equal(sockets.length, 2, 'a new connection after the early one closed');
  assert.equal(sockets[1].url, streamUrl('s1', 0));
  s.stop();
});

test('an early socket for another session is closed, not adopted', () => {
  runEarly('#/s/other');
  const s = new SessionSocket('s1', () => 0, { onFrame() {}, onStatus() {} });
  s.start();
  assert.equal(sockets.length, 2);
  assert.equal(sockets[0].readyState, 3, 'the early socket was closed');
  assert.equal(sockets[1].url, streamUrl('s1', 0));
  s.stop();
});

test('an early script that comes after the app looked for it does nothing', () => {
  sockets.length = 0;
  delete window.__duraclawEarly;
  const s = new SessionSocket('s1', () => 0, { onFrame() {}, onStatus() {} });
  s.start();
  assert.equal(sockets.length, 1);
  // early.js arrives late (it is async): no second socket, no requests.
  const fetched = [];
  globalThis.fetch = (path) => fetched.push(path);
  globalThis.location.hash = '#/s/s1';
  new Function(EARLY)();
  assert.equal(sockets.length, 1);
  assert.deepEqual(fetched, []);
  s.stop();
});

test('the early socket keeps binary frames; the app inflates them in order with the text ones', async () => {
  runEarly('#/s/s1');
  const early = sockets[0];
  assert.match(early.url, /\?tail=200&compress=deflate-raw$/);
  assert.equal(early.binaryType, 'arraybuffer');
  early.open();
  early.frame({ type: 'hello', v: 1 });
  early.frame({ type: 'snapshot', last_seq: 3, first_seq: 1, state: 'active', pending: [] });
  early.binary([
    { type: 'event', seq: 1, event: { type: 'user.message', text: 'hi' } },
    { type: 'compacted', first: 2, last: 3, event: { type: 'assistant', phase: 'final', text: 'x' } },
  ]);
  early.frame({ type: 'event', seq: 4, event: { type: 'user.message', text: 'live' } });
  const frames = [];
  const s = new SessionSocket('s1', () => 0, { onFrame: (f) => frames.push(f.seq ?? f.first ?? f.type), onStatus() {} });
  s.start();
  assert.equal(sockets.length, 1, 'no second socket');
  for (let i = 0; i < 2000 && frames.length < 5; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(frames, ['hello', 'snapshot', 1, 2, 4]);
  s.stop();
});

test('without DecompressionStream the early script and the app ask for text', () => {
  const saved = globalThis.DecompressionStream;
  try {
    delete globalThis.DecompressionStream;
    runEarly('#/s/s1');
    assert.equal(sockets[0].url, streamUrl('s1', 0));
    assert.match(sockets[0].url, /\?tail=200$/);
  } finally {
    globalThis.DecompressionStream = saved;
  }
});
