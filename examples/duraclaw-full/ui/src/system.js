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
  if (typeof e.code === 'string' && Object.hasOwn(NOTICE_TEXT, e.code)) return NOTICE_TEXT[e.code];
  if (typeof e.message === 'string' && e.message.trim()) return sentence(e.message);
  if (typeof e.code === 'string' && e.code) return sentence(e.code.replace(/_/g, ' '));
  return 'Notice';
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
};

export function errorTitle(ev) {
  const code = ev && typeof ev.code === 'string' ? ev.code : null;
  return code && Object.hasOwn(ERROR_TITLES, code) ? ERROR_TITLES[code] : 'Error';
}

/** What to do next after an error with this code, when there is a clear step. */
const ERROR_HINTS = {
  outbox_full: 'Send it again once the session has caught up.',
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
