// Words for the lines the system (gateway, orchestrator) adds to a
// transcript: notices and errors, by their stable codes. Pure functions, so
// the wording is tested without a DOM.

/** What a person reads for a notice's code; the notice's message otherwise. */
const NOTICE_TEXT = {
  rerun_after_restart: 'The gateway restarted before this message ran; running it now.',
};

/**
 * The line shown for a `notice` event (and for the gateway's
 * `cli.resume_failed`, which is one in all but name).
 */
export function noticeText(ev) {
  const e = ev && typeof ev === 'object' ? ev : {};
  if (e.code === 'worktree' && e.worktree && typeof e.worktree.path === 'string') {
    const w = e.worktree;
    const branch = typeof w.branch === 'string' ? ` on branch ${w.branch}` : '';
    const base = typeof w.base === 'string' ? ` from ${w.base.slice(0, 8)}` : '';
    return `${w.created ? 'Working in a new worktree' : 'Working in'} ${w.path}${branch}${base}.`;
  }
  if (e.code === 'mode_changed' && typeof e.permission_mode === 'string') return `Permission mode changed to ${e.permission_mode}.`;
  if (e.code === 'model_changed' && typeof e.model === 'string') return `Model changed to ${e.model}.`;
  if (typeof e.code === 'string' && Object.hasOwn(NOTICE_TEXT, e.code)) return NOTICE_TEXT[e.code];
  if (typeof e.message === 'string' && e.message.trim()) return sentence(e.message);
  if (typeof e.code === 'string' && e.code) return sentence(e.code.replace(/_/g, ' '));
  return 'Notice';
}

/**
 * The label on a user message sent while a turn ran (`queued`), or null:
 * the agent did not read it mid-turn, it takes it when that turn ends.
 */
export function queuedNote(item) {
  if (!item || item.queued !== true) return null;
  if (item.taken) return { label: 'queued', detail: 'taken when the turn before it ended' };
  if (item.ended) return { label: 'queued', detail: 'not taken: the session ended first' };
  return { label: 'queued', detail: 'Claude takes it when the current turn ends' };
}

/**
 * What a tool call's card says when it ran without a question because an
 * earlier "Allow for this session" covers it (notice `auto_allowed`):
 * a headline, and the gateway's own account (who allowed it, answering
 * which question).
 */
export function autoAllowedNote(ev) {
  const e = ev && typeof ev === 'object' ? ev : {};
  return {
    title: 'Allowed automatically, without a question',
    why: 'An earlier “Allow for this session” covers this exact call (same tool, same input).',
    detail: typeof e.message === 'string' && e.message.trim() ? sentence(e.message) : null,
  };
}

/**
 * The headline of an `error` event: what happened, in words, for the codes
 * the gateway and orchestrator log; "Error" for any other. The event's own
 * message is shown below it.
 */
const ERROR_TITLES = {
  gateway_restarted: 'The gateway restarted',
  executor_exited: 'Claude Code stopped',
  outbox_full: 'Message not run: the gateway is still catching up',
  session_closed: 'Message not run: this session was closed',
  unapproved_tool: 'A tool ran without approval',
};

export function errorTitle(ev) {
  const code = ev && typeof ev.code === 'string' ? ev.code : null;
  return code && Object.hasOwn(ERROR_TITLES, code) ? ERROR_TITLES[code] : 'Error';
}

/** What to do next after an error with this code, when there is a clear step. */
const ERROR_HINTS = {
  outbox_full: 'Send it again once the session has caught up.',
  unapproved_tool:
    'Nobody allowed this call, so the session was stopped. Check what the tool did in the worktree; the Claude Code CLI may be too old to ask before running tools.',
};

export function errorHint(ev) {
  const code = ev && typeof ev.code === 'string' ? ev.code : null;
  return code && Object.hasOwn(ERROR_HINTS, code) ? ERROR_HINTS[code] : null;
}

/** "the gateway did x" → "The gateway did x." */
function sentence(text) {
  const t = text.trim();
  const s = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

/** The `error` events that must be seen at once (a banner on the session): a tool that ran unapproved. */
export function alarmingErrors(items) {
  return (Array.isArray(items) ? items : []).filter((i) => i && i.kind === 'error' && i.ev && i.ev.code === 'unapproved_tool');
}

/**
 * Whether a refused answer is this page's own earlier answer coming back: a
 * command resent after a reconnect (its first `command_result` was lost)
 * that the server says was `already_decided` — by this user, with this
 * decision. That is not an error to show. `resolved` is the question's
 * resolution when the page has it.
 */
export function isOwnRetry(result, { resent, user, decision, resolved }) {
  if (!resent || !result || result.ok || !result.error || result.error.code !== 'already_decided' || !user) return false;
  if (resolved) return !!(resolved.by && resolved.by.who === user) && (!decision || resolved.decision === decision);
  const m = typeof result.error.message === 'string' ? result.error.message : '';
  const word = (w) => new RegExp(`(^|[\\s:(])${w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}($|[\\s,.;)])`);
  return word(`by ${user}`).test(m) && (!decision || word(decision).test(m));
}
