import { test } from 'node:test';
import assert from 'node:assert/strict';
import { errorHint, errorTitle, noticeText } from '../src/system.js';
import { Transcript } from '../src/transcript.js';

test('a re-run after a restart reads as a plain sentence, not the raw event', () => {
  const ev = {
    type: 'notice',
    code: 'rerun_after_restart',
    message: 'the gateway restarted before the agent began this turn; it is run now',
    command_id: 's1/c1',
  };
  assert.equal(noticeText(ev), 'The gateway restarted before this message ran; running it now.');
});

test('a notice of another code shows its message, as a sentence', () => {
  assert.equal(noticeText({ type: 'notice', code: 'executor_upgraded', message: 'the executor was upgraded' }), 'The executor was upgraded.');
  assert.equal(noticeText({ type: 'notice', code: 'x', message: 'Done already!' }), 'Done already!');
  // No message: the code, in words; nothing at all: still a line.
  assert.equal(noticeText({ type: 'notice', code: 'cache_cleared' }), 'Cache cleared.');
  assert.equal(noticeText({ type: 'notice' }), 'Notice');
  assert.equal(noticeText(null), 'Notice');
  // A code that is an Object property is not a known code.
  assert.equal(noticeText({ type: 'notice', code: 'toString', message: 'm' }), 'M.');
});

test('notices are items of their own; other unknown types stay raw', () => {
  const t = new Transcript();
  t.apply(1, { type: 'notice', code: 'rerun_after_restart', message: 'm', command_id: 'c' });
  t.apply(2, { type: 'cli.resume_failed', message: 'The CLI has no saved transcript.' });
  t.apply(3, { type: 'tool_progress', x: 1 });
  assert.deepEqual(
    t.items.map((i) => i.kind),
    ['notice', 'notice', 'unknown'],
  );
  assert.equal(noticeText(t.items[1].ev), 'The CLI has no saved transcript.');
  // A notice changes no state.
  assert.equal(t.state, null);
});

test('the errors the gateway and orchestrator log get a headline in words', () => {
  assert.equal(errorTitle({ code: 'gateway_restarted', message: 'm' }), 'The gateway restarted');
  assert.equal(errorTitle({ code: 'executor_exited', exit_status: 137 }), 'Claude Code stopped');
  assert.equal(errorTitle({ code: 'outbox_full' }), 'Message not run: the gateway is still catching up');
  assert.equal(errorTitle({ code: 'session_closed' }), 'Message not run: this session was closed');
  assert.equal(errorTitle({ code: 'worktree_busy' }), 'Error');
  assert.equal(errorTitle({ message: 'no code' }), 'Error');
  assert.equal(errorTitle({ code: 'constructor' }), 'Error');
  assert.equal(errorHint({ code: 'outbox_full' }), 'Send it again once the session has caught up.');
  assert.equal(errorHint({ code: 'gateway_restarted' }), null);
});

test('an unapproved tool is an alarm with its own title and hint', async () => {
  const { alarmingErrors } = await import('../src/system.js');
  const ev = { type: 'error', code: 'unapproved_tool', message: 'a tool ran without approval: Bash (toolu_1)' };
  assert.equal(errorTitle(ev), 'A tool ran without approval');
  assert.match(errorHint(ev), /stopped/);
  const t = new Transcript();
  t.apply(1, { type: 'error', code: 'executor_exited', message: 'bye' });
  t.apply(2, ev);
  assert.deepEqual(
    alarmingErrors(t.items).map((i) => i.seq),
    [2],
  );
});

test("an answer resent after a reconnect and refused as already decided by the same person is that person's own answer", async () => {
  const { isOwnRetry } = await import('../src/system.js');
  const refused = (message) => ({ type: 'command_result', id: 'b-1', ok: false, error: { code: 'already_decided', message } });
  const mine = refused('already decided (allow) by alice at 2026-12-05 10:00:00 UTC');
  assert.equal(isOwnRetry(mine, { resent: true, user: 'alice', decision: 'allow' }), true);
  // Not resent: a second answer from this page, which the person should be told about.
  assert.equal(isOwnRetry(mine, { resent: false, user: 'alice', decision: 'allow' }), false);
  // Someone else, or another decision, or a name that only starts the same.
  assert.equal(isOwnRetry(refused('already decided (allow) by bob at …'), { resent: true, user: 'alice', decision: 'allow' }), false);
  assert.equal(isOwnRetry(refused('already decided (deny) by alice at …'), { resent: true, user: 'alice', decision: 'allow' }), false);
  assert.equal(isOwnRetry(refused('already decided (allow) by alice2 at …'), { resent: true, user: 'alice', decision: 'allow' }), false);
  // Another error code is an error.
  assert.equal(isOwnRetry({ ok: false, error: { code: 'not_found', message: 'by alice' } }, { resent: true, user: 'alice' }), false);
  // When the page has the resolution, it decides.
  assert.equal(isOwnRetry(mine, { resent: true, user: 'alice', decision: 'allow', resolved: { decision: 'allow', by: { who: 'alice' } } }), true);
  assert.equal(isOwnRetry(mine, { resent: true, user: 'alice', decision: 'allow', resolved: { decision: 'allow', by: { who: 'bob' } } }), false);
});

test('a reset transcript is empty and takes a replay from seq 1', () => {
  const t = new Transcript();
  t.apply(1, { type: 'user.message', text: 'hi' });
  t.apply(2, { type: 'session.init', cwd: '/w/app' });
  assert.equal(t.cwd, '/w/app');
  t.reset();
  assert.deepEqual([t.items.length, t.seqs.length, t.lastSeq, t.cwd], [0, 0, 0, null]);
  assert.equal(t.apply(1, { type: 'user.message', text: 'again' }), true);
  assert.deepEqual(t.seqs, [1]);
  assert.deepEqual(t.gaps, []);
});

test('a message sent while a turn ran is labelled queued until its own turn starts, and after', async () => {
  const { queuedNote } = await import('../src/system.js');
  const t = new Transcript();
  t.apply(1, { type: 'user.message', text: 'first', by: 'alice' });
  t.apply(2, { type: 'session.state', state: 'active' });
  t.apply(3, { type: 'session.init', cwd: '/w' });
  t.apply(4, { type: 'assistant', message_id: 'm', phase: 'delta', text: 'Work' });
  t.apply(5, { type: 'user.message', text: 'and the changelog', by: 'alice', queued: true });
  t.apply(6, { type: 'user.message', text: 'and the readme', by: 'bob', queued: true });
  const [first, , , , second, third] = t.items;
  // A message sent while idle carries no label.
  assert.equal(queuedNote(first), null);
  assert.deepEqual(queuedNote(second), { label: 'queued', detail: 'Claude takes it when the current turn ends' });
  assert.equal(queuedNote(third).label, 'queued');
  // A question in the turn is still that turn.
  t.apply(7, { type: 'session.state', state: 'paused', reason: 'awaiting_approval' });
  t.apply(8, { type: 'session.state', state: 'active' });
  assert.equal(second.taken, false);
  t.apply(9, { type: 'assistant', message_id: 'm', phase: 'final', text: 'Work done.' });
  t.apply(10, { type: 'result', cost_usd: 0.01 });
  t.apply(11, { type: 'session.state', state: 'paused', reason: 'idle' });
  assert.equal(second.taken, false);
  // Its turn (`active`, then its `session.init`): the oldest queued message
  // is taken, once; the next still waits.
  t.apply(12, { type: 'session.state', state: 'active' });
  t.apply(13, { type: 'session.init', cwd: '/w' });
  assert.deepEqual(queuedNote(second), { label: 'queued', detail: 'taken when the turn before it ended' });
  assert.equal(queuedNote(third).detail, 'Claude takes it when the current turn ends');
  // The session ends before the last one's turn.
  t.apply(14, { type: 'result', cost_usd: 0.02 });
  t.apply(15, { type: 'session.state', state: 'terminated' });
  assert.deepEqual(queuedNote(third), { label: 'queued', detail: 'not taken: the session ended first' });
  // Only `true` queues: anything else is a plain message.
  t.apply(16, { type: 'user.message', text: 'x', queued: 'yes' });
  assert.equal(queuedNote(t.items.at(-1)), null);
  assert.equal(queuedNote(null), null);
});

test("a queued message's turn is seen from the agent's work when no state says it began", () => {
  const t = new Transcript();
  t.apply(1, { type: 'user.message', text: 'first' });
  t.apply(2, { type: 'assistant', message_id: 'a', phase: 'delta', text: 'x' });
  t.apply(3, { type: 'user.message', text: 'second', queued: true });
  t.apply(4, { type: 'result' });
  assert.equal(t.items[2].taken, false);
  t.apply(5, { type: 'tool_use', tool_use_id: 'tu', name: 'Bash', input: {} });
  assert.equal(t.items[2].taken, true);
  // A message sent while idle starts its own turn: it takes no queued one.
  t.apply(6, { type: 'user.message', text: 'third', queued: true });
  t.apply(7, { type: 'result' });
  t.apply(8, { type: 'user.message', text: 'fourth' });
  t.apply(9, { type: 'session.state', state: 'active' });
  assert.equal(t.items.find((i) => i.text === 'third').taken, false);
});

test('an automatic allow is shown on the card of the call it allowed, saying why', async () => {
  const { autoAllowedNote } = await import('../src/system.js');
  const t = new Transcript();
  const input = { file_path: '/w/notes.txt' };
  t.apply(1, { type: 'tool_use', tool_use_id: 'tu1', name: 'Read', input });
  t.apply(2, { type: 'user_question', question_id: 'q1', tool_use_id: 'tu1', kind: 'permission', tool_name: 'Read', input });
  t.apply(3, { type: 'question.resolved', question_id: 'q1', decision: 'allow', remember: true, by: { who: 'alice' }, at_ms: 1 });
  t.apply(4, { type: 'tool_result', tool_use_id: 'tu1', content: 'x' });
  t.apply(5, { type: 'tool_use', tool_use_id: 'tu2', name: 'Read', input });
  const message = 'Read was allowed without asking: alice allowed the same call (same tool, same input) for this session when answering question q1';
  t.apply(6, { type: 'notice', code: 'auto_allowed', message, tool_use_id: 'tu2' });
  t.apply(7, { type: 'tool_result', tool_use_id: 'tu2', content: 'x' });
  assert.deepEqual(
    t.items.map((i) => [i.kind, i.seq]),
    [
      ['tool', 1],
      ['tool', 5],
    ],
  );
  const card = t.items[1];
  assert.deepEqual(card.autoAllowed, { seq: 6, ev: { type: 'notice', code: 'auto_allowed', message, tool_use_id: 'tu2' } });
  assert.equal(t.items[0].autoAllowed, undefined);
  const n = autoAllowedNote(card.autoAllowed.ev);
  assert.match(n.title, /Allowed automatically/);
  assert.match(n.why, /Allow for this session/);
  assert.match(n.why, /same tool, same input/);
  assert.equal(n.detail, `${message}.`);
  // No card for the call (or none named): the notice stays a line of its own.
  t.apply(8, { type: 'notice', code: 'auto_allowed', message: 'Bash was allowed without asking', tool_use_id: 'tu-unknown' });
  t.apply(9, { type: 'notice', code: 'auto_allowed', message: 'no id' });
  assert.deepEqual(
    t.items.slice(2).map((i) => [i.kind, i.seq]),
    [
      ['notice', 8],
      ['notice', 9],
    ],
  );
  assert.equal(autoAllowedNote({ code: 'auto_allowed' }).detail, null);
});

test('the worktree notice says where the session runs, and the transcript keeps it', () => {
  const ev = {
    type: 'notice',
    code: 'worktree',
    message: "the session's worktree",
    worktree: { path: '/w/app-4k2m9x1c', branch: 'duraclaw/4k2m9x1c', base: '9fceb02d0ae598e9', created: true },
  };
  assert.equal(noticeText(ev), 'Working in a new worktree /w/app-4k2m9x1c on branch duraclaw/4k2m9x1c from 9fceb02d.');
  assert.equal(noticeText({ ...ev, worktree: { path: '/w/app' } }), 'Working in /w/app.');
  const t = new Transcript();
  t.apply(1, ev);
  assert.deepEqual(t.worktree, ev.worktree);
  assert.equal(t.items.length, 1);
  t.reset();
  assert.equal(t.worktree, null);
});

test('mode and model changes read as what they now are', () => {
  assert.equal(noticeText({ type: 'notice', code: 'mode_changed', message: 'x', permission_mode: 'plan' }), 'Permission mode changed to plan.');
  assert.equal(noticeText({ type: 'notice', code: 'model_changed', message: 'x', model: 'claude-opus-4-1' }), 'Model changed to claude-opus-4-1.');
});
