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
