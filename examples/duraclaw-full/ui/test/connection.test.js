import { test, mock } from 'node:test';
import assert from 'node:assert/strict';

import { sockets } from './fake-websocket.js';

const { SessionSocket, streamUrl } = await import('../src/connection.js');

/** A socket on session s1 whose last seq is `seq.n`; returns it and what it reported. */
function setup() {
  sockets.length = 0;
  const seen = { frames: [], statuses: [], loginEnded: 0, resets: 0 };
  const seq = { n: 0 };
  const s = new SessionSocket('s1', () => seq.n, {
    onFrame: (f, how) => seen.frames.push([f, how]),
    onStatus: (st) => seen.statuses.push(st.state),
    onLoginEnded: () => seen.loginEnded++,
    onReset: () => {
      seen.resets++;
      seq.n = 0;
    },
  });
  return { s, seen, seq };
}

function connect(ws, lastSeq = 0) {
  ws.open();
  ws.frame({ type: 'hello', v: 1 });
  ws.frame({ type: 'snapshot', last_seq: lastSeq, state: 'active', pending: [] });
}

test('close code 4401 (login ended): the login is reported gone and nothing reconnects', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const { s, seen } = setup();
  s.start();
  connect(sockets[0]);
  sockets[0].drop(4401, 'login ended');
  assert.equal(seen.loginEnded, 1);
  t.mock.timers.tick(120_000);
  assert.equal(sockets.length, 1, 'no new connection after 4401');
  assert.equal(seen.statuses.at(-1), 'closed');
  s.stop();
});

test('any other close reconnects with the last seq', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const { s, seen, seq } = setup();
  s.start();
  connect(sockets[0]);
  seq.n = 7;
  sockets[0].drop(1006);
  t.mock.timers.tick(1000);
  assert.equal(sockets.length, 2);
  assert.match(sockets[1].url, /\/api\/sessions\/s1\/ws\?after=7&compress=deflate-raw$/);
  assert.equal(seen.loginEnded, 0);
  s.stop();
});

test('close code 4409 (ahead of the log): the copy is dropped and the next connection opens with the tail', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const { s, seen, seq } = setup();
  seq.n = 42;
  s.start();
  assert.match(sockets[0].url, /after=42&compress=deflate-raw$/);
  sockets[0].open();
  sockets[0].frame({ type: 'error', code: 'ahead_of_log', message: 'after=42 is past the last seq 3' });
  sockets[0].drop(4409, 'ahead of log');
  assert.equal(seen.resets, 1);
  t.mock.timers.tick(500);
  assert.equal(sockets.length, 2, 'reconnected at once');
  assert.match(sockets[1].url, /\?tail=\d+&compress=deflate-raw$/);
  s.stop();
});

test('a resume names the epoch of the log the copy came from; a 4409 forgets it', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const { s, seen, seq } = setup();
  s.start();
  assert.match(sockets[0].url, /\?tail=200/);
  sockets[0].open();
  sockets[0].frame({ type: 'hello', v: 1 });
  sockets[0].frame({ type: 'snapshot', last_seq: 9, state: 'active', pending: [], epoch: '00000000000000a1' });
  seq.n = 9;
  sockets[0].drop(1006);
  t.mock.timers.tick(1000);
  assert.match(sockets[1].url, /\?after=9&epoch=00000000000000a1&compress=deflate-raw$/);
  // The resumed stream is in the server's new epoch: the next resume names it.
  sockets[1].open();
  sockets[1].frame({ type: 'hello', v: 1 });
  sockets[1].frame({ type: 'snapshot', last_seq: 12, state: 'active', pending: [], epoch: '00000000000000b2' });
  seq.n = 12;
  sockets[1].drop(1006);
  t.mock.timers.tick(1000);
  assert.match(sockets[2].url, /\?after=12&epoch=00000000000000b2&/);
  // The log lost what the copy holds: the copy is dropped, and so is its epoch.
  sockets[2].open();
  sockets[2].frame({ type: 'hello', v: 1 });
  sockets[2].frame({ type: 'error', code: 'ahead_of_log', message: 'lost events' });
  sockets[2].drop(4409, 'log taken back');
  assert.equal(seen.resets, 1);
  t.mock.timers.tick(1000);
  assert.match(sockets[3].url, /\?tail=200/);
  assert.doesNotMatch(sockets[3].url, /epoch=/);
  // A server without epochs (a snapshot without one): none is sent.
  sockets[3].open();
  sockets[3].frame({ type: 'hello', v: 1 });
  sockets[3].frame({ type: 'snapshot', last_seq: 4, state: 'active', pending: [] });
  seq.n = 4;
  sockets[3].drop(1006);
  t.mock.timers.tick(1000);
  assert.match(sockets[4].url, /\?after=4&compress=deflate-raw$/);
  s.stop();
});

test('a command resent after a reconnect is marked as resent in its command_result', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const { s, seen } = setup();
  s.start();
  connect(sockets[0]);
  const id = s.send({ type: 'answer', question_id: 'q1', decision: 'allow' });
  assert.deepEqual(sockets[0].sent.map((f) => f.id), [id]);
  // Its result is lost with the connection.
  sockets[0].drop(1006);
  // A command written while offline goes out first on the next connection: not a resend.
  const later = s.send({ type: 'message', text: 'hi' });
  t.mock.timers.tick(1000);
  connect(sockets[1]);
  assert.deepEqual(sockets[1].sent.map((f) => f.id), [id, later], 'both go out, the answer with its first id');
  sockets[1].frame({ type: 'command_result', id, ok: false, error: { code: 'already_decided', message: 'already decided (allow) by alice at …' } });
  sockets[1].frame({ type: 'command_result', id: later, ok: true });
  const results = seen.frames.filter(([f]) => f.type === 'command_result');
  assert.deepEqual(
    results.map(([f, how]) => [f.id, how.resent]),
    [
      [id, true],
      [later, false],
    ],
  );
  // Confirmed: not sent again.
  sockets[1].drop(1006);
  t.mock.timers.tick(1000);
  connect(sockets[2]);
  assert.deepEqual(sockets[2].sent, []);
  s.stop();
});

/** Waits (bounded) until `done()` holds, letting inflation run. */
async function until(done) {
  for (let i = 0; i < 2000 && !done(); i++) await new Promise((r) => setImmediate(r));
  assert.ok(done(), 'in time');
}

test('the stream asks for compress=deflate-raw only where the browser inflates it', () => {
  assert.match(streamUrl('s1', 0), /\?tail=200&compress=deflate-raw$/);
  const saved = globalThis.DecompressionStream;
  try {
    delete globalThis.DecompressionStream;
    assert.match(streamUrl('s1', 3), /\?after=3$/);
  } finally {
    globalThis.DecompressionStream = saved;
  }
});

test('a binary frame is several frames; text frames and the close that come meanwhile wait for it', async () => {
  const { s, seen } = setup();
  const order = [];
  s.h.onFrame = (f) => order.push(f.type === 'event' ? f.seq : f.type === 'compacted' ? `${f.first}-${f.last}` : f.type);
  s.h.onDown = (ev) => order.push(`down ${ev.code}`);
  s.start();
  const ws = sockets[0];
  assert.equal(ws.binaryType, 'arraybuffer');
  ws.open();
  ws.frame({ type: 'hello', v: 1 });
  ws.frame({ type: 'snapshot', last_seq: 5, first_seq: 1, state: 'idle', pending: [] });
  ws.binary([
    { type: 'event', seq: 1, event: { type: 'user.message', text: 'a\nb' } },
    { type: 'compacted', first: 2, last: 4, event: { type: 'assistant', phase: 'final', text: 'x' } },
  ]);
  ws.binary([{ type: 'event', seq: 5, event: { type: 'result' } }]);
  ws.frame({ type: 'event', seq: 6, event: { type: 'user.message', text: 'live' } });
  ws.drop(1006);
  await until(() => order.length === 7);
  assert.deepEqual(order, ['hello', 'snapshot', 1, '2-4', 5, 6, 'down 1006']);
  assert.equal(seen.statuses.at(-1), 'reconnecting');
  s.stop();
});

test('a binary frame that does not inflate drops the connection, which resumes', async (t) => {
  const { s, seen } = setup();
  const downs = [];
  s.h.onDown = (ev) => downs.push(ev.code);
  const warn = t.mock.method(console, 'warn', () => {});
  s.start();
  const ws = sockets[0];
  connect(ws);
  ws.bytes(new Uint8Array([0xff, 0xff, 0xff]));
  ws.frame({ type: 'event', seq: 1, event: { type: 'user.message', text: 'after' } });
  await until(() => downs.length === 1);
  assert.deepEqual(downs, [4002]);
  assert.equal(ws.readyState, 3);
  assert.equal(warn.mock.callCount(), 1);
  assert.ok(!seen.frames.some(([f]) => f.seq === 1), 'nothing after the bad frame is applied');
  s.stop();
});
