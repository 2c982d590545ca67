// Approval rules in the UI: the words for a rule's decision, the rule the
// prompt's "Always allow for this worktree" adds, and the rules view's
// grouping. Pure functions, tested without a DOM. The server checks every
// rule it is sent (docs/approvals.md); this only proposes and shows.

/** Tools whose input a pattern matches, and the field (as the gateway reads it). */
const PATTERN_FIELDS = {
  Bash: 'command',
  Read: 'file_path',
  Edit: 'file_path',
  Write: 'file_path',
  MultiEdit: 'file_path',
  NotebookEdit: 'notebook_path',
  Glob: 'path',
  Grep: 'path',
  LS: 'path',
  WebFetch: 'url',
  WebSearch: 'query',
};

const PATH_TOOLS = new Set(['Read', 'Edit', 'Write', 'MultiEdit', 'NotebookEdit', 'Glob', 'Grep', 'LS']);

/** `path` against `worktree` with `.` and `..` applied: {inside, path}. */
export function resolvePath(worktree, path) {
  const wt = typeof worktree === 'string' ? worktree : '';
  const full = path.startsWith('/') ? path : `${wt.replace(/\/+$/, '')}/${path}`;
  const parts = [];
  for (const seg of full.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') parts.pop();
    else parts.push(seg);
  }
  const root = wt.split('/').filter((s) => s && s !== '.');
  const inside = wt.startsWith('/') && parts.length >= root.length && root.every((s, i) => parts[i] === s);
  return inside ? { inside: true, path: parts.slice(root.length).join('/') } : { inside: false, path: '/' + parts.join('/') };
}

/**
 * The rule that allows exactly this call (what "Always allow for this
 * worktree" adds), or null when there is none to offer: the tool with its
 * command, path (relative to the worktree inside it), URL or query,
 * wildcards escaped; the bare name for tools that take no pattern.
 */
export function exactRule(worktree, tool, input) {
  if (typeof tool !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(tool)) return null;
  const field = PATTERN_FIELDS[tool];
  if (!field) return tool;
  const raw = input && typeof input === 'object' ? input[field] : undefined;
  let subject;
  if (PATH_TOOLS.has(tool)) {
    const r = resolvePath(worktree, typeof raw === 'string' ? raw : '.');
    if (r.inside && r.path === '') return tool;
    subject = r.path;
  } else {
    if (typeof raw !== 'string') return null;
    subject = raw.trim();
  }
  // The server refuses control, invisible and direction characters in a rule.
  if (!subject || /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/.test(subject)) return null;
  const rule = `${tool}(${subject.replace(/[*?\\]/g, (c) => '\\' + c)})`;
  return rule.length > 1024 ? null : rule;
}

/** What a `rule_decision` notice says: {verb, rule, scope, action}, or null. */
export function ruleDecisionNote(ev) {
  const r = ev && typeof ev === 'object' && ev.rule && typeof ev.rule === 'object' ? ev.rule : null;
  if (!r || typeof r.rule !== 'string') return null;
  const action = r.action === 'deny' ? 'deny' : 'allow';
  return {
    verb: action === 'deny' ? 'Denied by rule' : 'Allowed by rule',
    rule: r.rule,
    scope: typeof r.scope === 'string' ? r.scope : 'user',
    action,
  };
}

/** How a scope reads in the rules view. */
export const SCOPE_TITLES = {
  session: 'This session only',
  worktree: 'One worktree',
  user: 'All my sessions',
};

/** Rules grouped by scope, most specific first: [{scope, title, rules}]. */
export function groupByScope(rules) {
  const list = Array.isArray(rules) ? rules : [];
  return ['session', 'worktree', 'user']
    .map((scope) => ({ scope, title: SCOPE_TITLES[scope], rules: list.filter((r) => r && r.scope === scope) }))
    .filter((g) => g.rules.length > 0);
}

/** Where a rule applies, in words: "everywhere", the worktree, the session. */
export function ruleWhere(r) {
  if (!r) return '';
  if (r.scope === 'worktree') return r.worktree || '';
  if (r.scope === 'session') return `session ${r.session_id || ''}`.trim();
  return 'every session';
}
