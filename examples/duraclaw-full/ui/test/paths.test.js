import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolvePath } from '../src/paths.js';

const WT = '/srv/projects/app';

test('a path in the worktree is shown relative to it', () => {
  assert.deepEqual(resolvePath(`${WT}/src/main.rs`, WT), { shown: 'src/main.rs', absolute: `${WT}/src/main.rs`, outside: false, rewritten: false });
  assert.deepEqual(resolvePath('src/main.rs', WT), { shown: 'src/main.rs', absolute: `${WT}/src/main.rs`, outside: false, rewritten: false });
  assert.equal(resolvePath(WT, WT).shown, '.');
  assert.equal(resolvePath(`${WT}/`, WT).shown, '.');
});

test('.. is resolved, and a path that climbs out of the worktree is flagged', () => {
  const sneaky = `${WT}/src/very_long_directory_name_that_goes_on_and_on/../../../../tmp/x`;
  assert.deepEqual(resolvePath(sneaky, WT), { shown: '/srv/tmp/x', absolute: '/srv/tmp/x', outside: true, rewritten: true });
  assert.deepEqual(resolvePath('src/a/../../../../tmp/x', WT), { shown: '/srv/tmp/x', absolute: '/srv/tmp/x', outside: true, rewritten: true });
  // Going up and back in stays inside, but what is shown is what it means.
  assert.deepEqual(resolvePath(`${WT}/src/../lib/./x.rs`, WT), { shown: 'lib/x.rs', absolute: `${WT}/lib/x.rs`, outside: false, rewritten: true });
  assert.equal(resolvePath(`${WT}//src///x`, WT).rewritten, true);
  // Above the root is the root.
  assert.equal(resolvePath('/../../etc/passwd', WT).shown, '/etc/passwd');
});

test('a sibling whose name starts like the worktree is outside', () => {
  assert.equal(resolvePath(`${WT}-evil/x`, WT).outside, true);
  assert.equal(resolvePath('/etc/passwd', WT).outside, true);
});

test('without a worktree, an absolute path is shown resolved and a climbing relative one is flagged', () => {
  assert.deepEqual(resolvePath('/a/b/../c', null), { shown: '/a/c', absolute: '/a/c', outside: false, rewritten: true });
  assert.equal(resolvePath('../x', null).outside, true);
  assert.equal(resolvePath('a/../x', null).outside, false);
  assert.equal(resolvePath('a/../x', null).shown, 'x');
});
