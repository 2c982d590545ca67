import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Transcript, isRunning } from '../src/transcript.js';

test('applies each seq once, in order', () => {
  const t = new Transcript();
  assert.equal(t.apply(1, { type: 'user.message', text: 'hi', by: 'alice' }), true);
  assert.equal(t.apply(1, { type: 'user.message', text: 'hi', by: 'alice' }), false);
  assert.equal(t.apply(2, { type: 'session.state', state: 'active' }), true);
  assert.equal(t.apply(2, { type: 'session.state', state: 'active' }), false);
  assert.deepEqual(t.seqs, [1, 2]);
  assert.equal(t.items.length, 2);
  assert.equal(t.state, 'active');
});

test('deltas merge by message_id and the final text replaces them', () => {
  const t = new Transcript();
  t.apply(1, { type: 'assistant', message_id: 'm', phase: 'delta', text: 'Let me ' });
  t.apply(2, { type: 'assistant', message_id: 'm', phase: 'delta', text: 'run' });
  assert.equal(t.items[0].text, 'Let me run');
  t.apply(3, { type: 'assistant', message_id: 'm', phase: 'final', text: 'Let me run the tests.', aborted: true });
  assert.equal(t.items.length, 1);
  assert.equal(t.items[0].text, 'Let me run the tests.');
  assert.equal(t.items[0].aborted, true);
  t.apply(4, { type: 'assistant', message_id: 'm', phase: 'delta', text: 'late' });
  assert.equal(t.items[0].text, 'Let me run the tests.');
});

test('tool results and resolutions attach to their call and question', () => {
  const t = new Transcript();
  t.apply(1, { type: 'tool_use', tool_use_id: 'tu', name: 'Bash', input: { command: 'ls' } });
  t.apply(2, { type: 'user_question', question_id: 'q', tool_use_id: 'tu', kind: 'permission', tool_name: 'Bash', input: { command: 'ls' } });
  assert.equal(t.pending().length, 1);
  t.apply(3, { type: 'question.resolved', question_id: 'q', decision: 'allow', by: { who: 'alice' }, at_ms: 1 });
  t.apply(4, { type: 'tool_result', tool_use_id: 'tu', content: 'a\nb', is_error: false });
  assert.equal(t.items.length, 1);
  assert.equal(t.items[0].result.seq, 4);
  assert.equal(t.items[0].question.resolved.decision, 'allow');
  assert.equal(t.pending().length, 0);
});

test('pending questions from the snapshot take their place from the replay', () => {
  const t = new Transcript();
  t.applySnapshot({
    state: 'paused',
    reason: 'awaiting_approval',
    last_seq: 2,
    pending: [{ question_id: 'q', tool_use_id: 'tu', kind: 'permission', tool_name: 'Bash', input: {} }],
  });
  assert.equal(t.items.length, 0);
  t.apply(1, { type: 'tool_use', tool_use_id: 'tu', name: 'Bash', input: { command: 'ls' } });
  t.apply(2, { type: 'user_question', question_id: 'q', tool_use_id: 'tu', kind: 'permission', tool_name: 'Bash', input: {} });
  assert.equal(t.items.length, 1);
  assert.equal(t.items[0].question.seq, 2);
  assert.equal(t.pending().length, 1);
});

test('a pending question missing from the replay is shown from the snapshot', () => {
  const t = new Transcript();
  t.apply(1, { type: 'session.state', state: 'active' });
  t.applySnapshot({
    state: 'paused',
    reason: 'awaiting_approval',
    last_seq: 1,
    pending: [{ question_id: 'q', kind: 'permission', tool_name: 'Bash', input: {} }],
  });
  assert.equal(t.pending().length, 1);
  assert.equal(t.items[1].kind, 'question');
  assert.equal(t.items[1].seq, null);
});

test('turn cost is the difference of cumulative costs', () => {
  const t = new Transcript();
  t.apply(1, { type: 'result', cost_usd: 0.02 });
  t.apply(2, { type: 'result', cost_usd: 0.05 });
  assert.ok(Math.abs(t.items[1].turnCost - 0.03) < 1e-12);
});

test('unknown and malformed events are kept', () => {
  const t = new Transcript();
  t.apply(1, { type: 'tool_progress', x: 1 });
  t.apply(2, null);
  assert.deepEqual(
    t.items.map((i) => i.kind),
    ['unknown', 'unknown'],
  );
});

test('abort is offered while a turn runs', () => {
  assert.equal(isRunning('active'), true);
  assert.equal(isRunning('paused', 'awaiting_approval'), true);
  assert.equal(isRunning('paused', 'idle'), false);
  assert.equal(isRunning('terminated'), false);
});

test('a repeated resolution is kept but not shown as new', () => {
  const t = new Transcript();
  t.apply(1, { type: 'user_question', question_id: 'q', kind: 'permission', tool_name: 'Bash', input: {} });
  t.apply(2, { type: 'question.resolved', question_id: 'q', decision: 'allow', at_ms: 1 });
  t.apply(3, { type: 'question.resolved', question_id: 'q', decision: 'allow', at_ms: 2 });
  assert.equal(t.items[0].resolvedSeq, 2);
  assert.equal(t.items[1].repeat, true);
  t.apply(4, { type: 'question.resolved', question_id: 'q', decision: 'deny', at_ms: 3 });
  assert.equal(t.items[2].repeat, undefined);
});

test('a question without its tool call stands alone', () => {
  const t = new Transcript();
  t.apply(1, { type: 'user_question', question_id: 'q', kind: 'ask_user', questions: [] });
  assert.equal(t.items[0].kind, 'question');
  t.apply(2, { type: 'question.resolved', question_id: 'q', decision: 'expired', at_ms: 1 });
  assert.equal(t.items[0].resolved.decision, 'expired');
  assert.equal(t.items[0].resolvedSeq, 2);
});

test("a rule's decision is shown on the card of the call it decided, naming the rule", () => {
  const t = new Transcript();
  t.apply(1, { type: 'tool_use', tool_use_id: 't1', name: 'Read', input: { file_path: 'a' } });
  const notice = {
    type: 'notice',
    code: 'rule_decision',
    message: 'Read was allowed by rule Read (user scope), without asking',
    tool_use_id: 't1',
    rule: { rule: 'Read', scope: 'user', action: 'allow' },
  };
  t.apply(2, notice);
  const card = t.items.find((i) => i.id === 't1');
  assert.deepEqual(card.ruleDecision, { seq: 2, ev: notice });
  assert.equal(t.items.filter((i) => i.kind === 'notice').length, 0);
  // One about no call seen stays a line of its own.
  t.apply(3, { ...notice, tool_use_id: 't9' });
  assert.equal(t.items.filter((i) => i.kind === 'notice').length, 1);
});

test('the mode and model in force follow session.init and the change notices', () => {
  const t = new Transcript();
  t.apply(1, { type: 'session.init', model: 'claude-sonnet-4-5', permission_mode: 'default' });
  assert.equal(t.mode, 'default');
  assert.equal(t.model, 'claude-sonnet-4-5');
  t.apply(2, { type: 'notice', code: 'mode_changed', message: 'm', permission_mode: 'plan' });
  t.apply(3, { type: 'notice', code: 'model_changed', message: 'm', model: 'claude-opus-4-1' });
  assert.equal(t.mode, 'plan');
  assert.equal(t.model, 'claude-opus-4-1');
  t.apply(4, { type: 'notice', code: 'change_failed', message: 'nope' });
  assert.equal(t.mode, 'plan');
});

test('a user message can be forked from once its own turn ended, queued ones in order', () => {
  const t = new Transcript();
  t.apply(1, { type: 'user.message', text: 'one' });
  t.apply(2, { type: 'user.message', text: 'two', queued: true });
  const [one, two] = t.items.filter((i) => i.kind === 'user');
  assert.ok(!one.turnEnded && !two.turnEnded);
  t.apply(3, { type: 'result', is_error: false });
  assert.equal(one.turnEnded, true);
  assert.ok(!two.turnEnded);
  t.apply(4, { type: 'result', is_error: false });
  assert.equal(two.turnEnded, true);
});

test('a tail, compacted ranges and older pages make the whole log, each seq once', () => {
  const t = new Transcript();
  t.applySnapshot({ type: 'snapshot', state: 'paused', reason: 'idle', last_seq: 9, pending: [], first_seq: 6 });
  assert.equal(t.hasOlder(), true);
  t.apply(6, { type: 'user.message', text: 'again' });
  // Deltas 7..8 and their final at 9, as one range.
  assert.equal(t.applyRange(7, 9, { type: 'assistant', message_id: 'b', phase: 'final', text: 'second' }, true), true);
  t.apply(10, { type: 'result', cost_usd: 0.5 });
  assert.deepEqual(t.gaps, []);
  assert.equal(t.items.find((i) => i.kind === 'result').turnCost, null, "a tail's first result has no turn cost");
  // An older page: 1..5, with a range whose final is in it.
  const page = [
    { type: 'event', seq: 1, event: { type: 'user.message', text: 'hi' } },
    { type: 'compacted', first: 2, last: 4, event: { type: 'assistant', message_id: 'a', phase: 'final', text: 'first' } },
    { type: 'event', seq: 5, event: { type: 'result', cost_usd: 0.2 } },
  ];
  assert.equal(t.prepend(2, 5, page), false, 'a page must cover its range');
  assert.equal(t.prepend(1, 4, page), false, 'a page must end before the first seq held');
  assert.equal(t.prepend(1, 5, page), true);
  assert.equal(t.hasOlder(), false);
  assert.deepEqual(t.seqs, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual(
    t.items.filter((i) => i.kind === 'assistant').map((i) => [i.seq, i.text]),
    [
      [2, 'first'],
      [7, 'second'],
    ],
    'a message replayed as a range starts where its deltas did, as when it streamed',
  );
  const costs = t.items.filter((i) => i.kind === 'result').map((i) => Math.round(i.turnCost * 10));
  assert.deepEqual(costs, [2, 3]);
  assert.equal(t.state, 'paused');
  // A range without its final: deltas whose final comes later.
  const u = new Transcript();
  u.applyRange(1, 2, undefined, false);
  u.apply(3, { type: 'assistant', message_id: 'c', phase: 'final', text: 'whole' });
  assert.deepEqual(u.seqs, [1, 2, 3]);
  assert.deepEqual(u.items.map((i) => i.text), ['whole']);
});
