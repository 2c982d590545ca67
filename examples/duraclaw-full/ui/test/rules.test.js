import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exactRule, groupByScope, resolvePath, ruleDecisionNote, ruleWhere } from '../src/rules.js';

const WT = '/work/repo';

test('the exact rule allows that call and nothing more', () => {
  assert.equal(exactRule(WT, 'Bash', { command: 'git status' }), 'Bash(git status)');
  assert.equal(exactRule(WT, 'Bash', { command: 'ls *.rs' }), 'Bash(ls \\*.rs)');
  assert.equal(exactRule(WT, 'Edit', { file_path: '/work/repo/src/main.rs' }), 'Edit(src/main.rs)');
  assert.equal(exactRule(WT, 'Read', { file_path: 'src/../README.md' }), 'Read(README.md)');
  assert.equal(exactRule(WT, 'Read', { file_path: '/etc/hosts' }), 'Read(/etc/hosts)');
  assert.equal(exactRule(WT, 'Read', { file_path: '/work/repo/../x' }), 'Read(/work/x)');
  assert.equal(exactRule(WT, 'Grep', { pattern: 'x' }), 'Grep');
  assert.equal(exactRule(WT, 'Task', { prompt: 'x' }), 'Task');
  assert.equal(exactRule(WT, 'WebFetch', { url: 'https://a.b/?q' }), 'WebFetch(https://a.b/\\?q)');
});

test('no rule is offered for a call it cannot name', () => {
  assert.equal(exactRule(WT, 'Bash', { command: 'a\nb' }), null);
  assert.equal(exactRule(WT, 'Bash', { command: 'ls \u202e x' }), null);
  assert.equal(exactRule(WT, 'Bash', {}), null);
  assert.equal(exactRule(WT, 'Bash', { command: 5 }), null);
  assert.equal(exactRule(WT, 'bad name', {}), null);
  assert.equal(exactRule(WT, 'Bash', { command: 'x'.repeat(2000) }), null);
});

test('paths never escape the worktree', () => {
  assert.deepEqual(resolvePath(WT, 'src/../../etc'), { inside: false, path: '/work/etc' });
  assert.deepEqual(resolvePath(WT, './a/b'), { inside: true, path: 'a/b' });
  assert.deepEqual(resolvePath(WT, '/work/repo2/a'), { inside: false, path: '/work/repo2/a' });
});

test('a rule decision names its rule and scope', () => {
  const n = ruleDecisionNote({ type: 'notice', code: 'rule_decision', rule: { rule: 'Bash(rm *)', scope: 'user', action: 'deny' } });
  assert.deepEqual(n, { verb: 'Denied by rule', rule: 'Bash(rm *)', scope: 'user', action: 'deny' });
  assert.equal(ruleDecisionNote({ code: 'rule_decision' }), null);
  assert.equal(ruleDecisionNote(null), null);
});

test('rules are grouped by scope, most specific first', () => {
  const rules = [
    { id: 'a', scope: 'user', rule: 'Read' },
    { id: 'b', scope: 'worktree', worktree: '/w', rule: 'Edit(src/**)' },
    { id: 'c', scope: 'user', rule: 'Grep' },
  ];
  const g = groupByScope(rules);
  assert.deepEqual(
    g.map((x) => [x.scope, x.rules.map((r) => r.id)]),
    [
      ['worktree', ['b']],
      ['user', ['a', 'c']],
    ],
  );
  assert.equal(ruleWhere(rules[1]), '/w');
  assert.equal(ruleWhere(rules[0]), 'every session');
  assert.deepEqual(groupByScope(null), []);
});
