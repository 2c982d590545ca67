import { test } from 'node:test';
import assert from 'node:assert/strict';

import { sockets } from './fake-websocket.js';
import { applyFrame, createInboxStore, emptyInbox, itemQuestion, mergeSessions, openItems, titleFor } from '../src/inbox.js';

const item = (sid, qid, at) => ({
  session_id: sid,
  question_id: qid,
  kind: 'permission',
  tool: 'Bash',
  input: { command: 'make' },
  worktree: '/w',
  title: 't',
  opened_at_ms: at,
});
const meta = (sid, at, extra = {}) => ({ session_id: sid, owner: 'alice', state: 'active', updated_at_ms: at, ...extra });
const change = (cursor, c) => ({ type: 'change', cursor, change: c });

function run(frames, state = emptyInbox()) {
  const gaps = [];
  for (const f of frames) {
    const r = applyFrame(state, f);
    state = r.state;
    if (r.gap) gaps.push(f.cursor);
  }
  return { state, gaps };
}

test('a snapshot then changes: opened, resolved, sessions upserted and removed', () => {
  const { state, gaps } = run([
    { type: 'snapshot', cursor: 10, reason: 'fresh', sessions: [meta('a', 1)], items: [item('a', 'q1', 5)] },
    change(11, { type: 'question_opened', item: item('b', 'q2', 3) }),
    change(12, { type: 'session', session: meta('b', 9) }),
    change(13, { type: 'question_resolved', session_id: 'a', question_id: 'q1', by: 'alice' }),
  ]);
  assert.deepEqual(gaps, []);
  assert.equal(state.cursor, 13);
  assert.deepEqual(openItems(state).map((i) => i.question_id), ['q2']);
  assert.deepEqual([...state.sessions.keys()].sort(), ['a', 'b']);
  const after = run([change(14, { type: 'session_removed', session_id: 'b' })], state).state;
  assert.deepEqual([...after.sessions.keys()], ['a']);
  assert.equal(after.items.size, 0, 'a removed session takes its questions along');
});

test('each change applies once; a skipped cursor is a gap that changes nothing', () => {
  const start = run([{ type: 'snapshot', cursor: 1, sessions: [], items: [] }]).state;
  const once = run([change(2, { type: 'question_opened', item: item('a', 'q', 1) })], start).state;
  const again = run([change(2, { type: 'question_resolved', session_id: 'a', question_id: 'q' })], once);
  assert.equal(again.state.items.size, 1, 'a change seen before is ignored');
  const gap = run([change(4, { type: 'question_resolved', session_id: 'a', question_id: 'q' })], once);
  assert.deepEqual(gap.gaps, [4]);
  assert.equal(gap.state.cursor, 2);
  assert.equal(gap.state.items.size, 1);
  // Changes before any snapshot are not applied.
  assert.equal(run([change(5, { type: 'session', session: meta('x', 1) })]).state.sessions.size, 0);
});

test('a later snapshot replaces the copy (cursor expired)', () => {
  const s = run([
    { type: 'snapshot', cursor: 1, sessions: [meta('a', 1)], items: [item('a', 'q', 1)] },
    { type: 'snapshot', cursor: 50, reason: 'cursor_expired', sessions: [meta('b', 1)], items: [] },
  ]).state;
  assert.equal(s.cursor, 50);
  assert.deepEqual([...s.sessions.keys()], ['b']);
  assert.equal(s.items.size, 0);
});

test('open questions are oldest first; the list merges and sorts newest first', () => {
  const s = run([
    { type: 'snapshot', cursor: 1, sessions: [meta('a', 30, { state: 'terminated' })], items: [item('b', 'z', 9), item('a', 'y', 2), item('c', 'x', 2)] },
  ]).state;
  assert.deepEqual(openItems(s).map((i) => i.question_id), ['y', 'x', 'z']);
  const merged = mergeSessions([meta('a', 10), meta('old', 5)], s);
  assert.deepEqual(merged.map((m) => m.session_id), ['a', 'old']);
  assert.equal(merged[0].state, 'terminated', 'the inbox is newer than the fetched list');
  assert.deepEqual(mergeSessions(null, emptyInbox()), []);
});

test('the title carries the count', () => {
  assert.equal(titleFor(0), 'Duraclaw');
  assert.equal(titleFor(3), '(3) Duraclaw');
  assert.equal(titleFor(2, 'build — Duraclaw'), '(2) build — Duraclaw');
});

test('inbox items become the questions the Question component shows', () => {
  assert.deepEqual(itemQuestion(item('a', 'q', 1)), {
    question_id: 'q',
    kind: 'permission',
    tool_name: 'Bash',
    input: { command: 'make' },
  });
  const ask = { ...item('a', 'q2', 1), kind: 'ask_user', tool: null, input: { questions: [{ question: 'Which?', options: [] }] } };
  assert.deepEqual(itemQuestion(ask), { question_id: 'q2', kind: 'ask_user', questions: [{ question: 'Which?', options: [] }] });
  assert.deepEqual(itemQuestion({ ...ask, input: 'junk' }).questions, []);
});

test('the store: resumes after its cursor, starts over on 4409, stops on 4401, and titles the page', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  sockets.length = 0;
  const titles = [];
  let ended = 0;
  const store = createInboxStore({ onLoginEnded: () => ended++, setTitle: (x) => titles.push(x) });
  store.start();
  assert.equal(sockets[0].url, 'ws://127.0.0.1:1/api/inbox/ws', 'no cursor yet: a snapshot');
  sockets[0].open();
  sockets[0].frame({ type: 'snapshot', cursor: 7, sessions: [], items: [item('a', 'q1', 1)] });
  assert.equal(titles.at(-1), '(1) Duraclaw');
  sockets[0].frame(change(8, { type: 'question_opened', item: item('a', 'q2', 2) }));
  assert.equal(titles.at(-1), '(2) Duraclaw');
  store.setPageName('build — Duraclaw');
  assert.equal(titles.at(-1), '(2) build — Duraclaw');

  // A skipped cursor: the store resumes after the last change it applied.
  sockets[0].frame(change(10, { type: 'question_resolved', session_id: 'a', question_id: 'q1' }));
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].url, 'ws://127.0.0.1:1/api/inbox/ws?after=8');
  assert.equal(store.state.items.size, 2, 'nothing applied past the gap');
  sockets[1].open();
  sockets[1].frame(change(9, { type: 'session', session: meta('a', 3) }));
  sockets[1].frame(change(10, { type: 'question_resolved', session_id: 'a', question_id: 'q1' }));
  sockets[1].frame({ type: 'resumed', cursor: 10 });
  assert.equal(store.state.cursor, 10);
  assert.equal(store.state.items.size, 1);

  // Any other close resumes from the cursor; 4409 drops the copy first.
  sockets[1].drop(1006);
  t.mock.timers.tick(60_000);
  assert.equal(sockets[2].url, 'ws://127.0.0.1:1/api/inbox/ws?after=10');
  sockets[2].open();
  sockets[2].drop(4409);
  assert.equal(store.state.cursor, null);
  t.mock.timers.tick(60_000);
  assert.equal(sockets[3].url, 'ws://127.0.0.1:1/api/inbox/ws');

  // 4401: the login is gone, nothing reconnects.
  sockets[3].open();
  sockets[3].drop(4401);
  assert.equal(ended, 1);
  t.mock.timers.tick(120_000);
  assert.equal(sockets.length, 4);
  store.stop();
});
