// How a file path in a tool call is shown: resolved (`.`, `..` and repeated
// slashes gone), relative to the session's worktree, and flagged when it
// points outside it. Pure string work: the page cannot see the file system,
// so symbolic links are not followed.

/** `path`'s segments with `.`/`..`/empty ones resolved; `..` above the root stays out. */
function normalize(segments) {
  const out = [];
  for (const s of segments) {
    if (s === '' || s === '.') continue;
    if (s === '..') {
      if (out.length) out.pop();
      continue;
    }
    out.push(s);
  }
  return out;
}

/**
 * Where `path` points, for a session in `worktree` (an absolute path, or
 * null when unknown):
 * - `shown`: the path relative to the worktree ("src/main.rs", "." for the
 *   worktree itself), or absolute when it is outside or the worktree is
 *   unknown;
 * - `absolute`: the resolved absolute path (null when `path` is relative and
 *   the worktree unknown);
 * - `outside`: true when it resolves outside the worktree;
 * - `rewritten`: true when what is shown differs from what was written,
 *   other than by dropping the worktree's own prefix (it had `..`, `.`,
 *   `//`, or it is outside).
 */
export function resolvePath(path, worktree) {
  const raw = String(path ?? '');
  const wt = typeof worktree === 'string' && worktree.startsWith('/') ? normalize(worktree.split('/')) : null;
  let abs = null;
  if (raw.startsWith('/')) abs = normalize(raw.split('/'));
  else if (wt) abs = normalize([...wt, ...raw.split('/')]);
  if (!abs) {
    // Relative, worktree unknown: resolved as far as it goes.
    const rel = normalize(raw.split('/'));
    const ups = raw.split('/').filter((s) => s === '..').length > 0;
    const shown = rel.join('/') || '.';
    return { shown, absolute: null, outside: ups && escapes(raw), rewritten: shown !== raw };
  }
  const absolute = '/' + abs.join('/');
  if (wt && abs.length >= wt.length && wt.every((s, i) => abs[i] === s)) {
    const shown = abs.slice(wt.length).join('/') || '.';
    const plain = raw === shown || raw === `/${wt.join('/')}/${shown}` || (shown === '.' && raw === `/${wt.join('/')}`);
    return { shown, absolute, outside: false, rewritten: !plain };
  }
  return { shown: absolute, absolute, outside: wt !== null, rewritten: absolute !== raw };
}

/** Whether a relative path climbs above where it starts. */
function escapes(rel) {
  let depth = 0;
  for (const s of rel.split('/')) {
    if (s === '' || s === '.') continue;
    depth += s === '..' ? -1 : 1;
    if (depth < 0) return true;
  }
  return false;
}
