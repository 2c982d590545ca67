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
