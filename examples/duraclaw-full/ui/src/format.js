// Small formatting helpers shared by the screens.

/** "just now", "5 min ago", "3 h ago", "2 d ago", or a date. */
export function relTime(ms, now = Date.now()) {
  if (!Number.isFinite(ms) || ms <= 0) return '–';
  const s = Math.round((now - ms) / 1000);
  if (s < 10) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ago`;
  const d = Math.floor(h / 24);
  if (d < 30) return `${d} d ago`;
  return new Date(ms).toLocaleDateString();
}

/** "$0.0213", "$1.24". */
export function fmtCost(usd) {
  if (typeof usd !== 'number' || !Number.isFinite(usd)) return '–';
  if (usd === 0) return '$0.00';
  if (usd < 0.01) return `$${usd.toFixed(4)}`;
  if (usd < 1) return `$${usd.toFixed(3)}`;
  return `$${usd.toFixed(2)}`;
}

/** "820 ms", "8.4 s", "3 min 12 s". */
export function fmtDuration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

/** "1,520". */
export function fmtInt(n) {
  return typeof n === 'number' && Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–';
}

const REASONS = {
  awaiting_approval: 'waiting for approval',
  awaiting_answer: 'waiting for an answer',
  idle: 'idle',
  gateway_unreachable: 'gateway unreachable',
};

/** A state and its paused reason as words: "paused · waiting for approval". */
export function stateLabel(state, reason) {
  if (!state) return 'unknown';
  if (state === 'paused' && reason) return `paused · ${REASONS[reason] || reason.replace(/_/g, ' ')}`;
  return state;
}

/** The CSS modifier for a state badge. */
export function stateClass(state, reason) {
  if (state === 'paused' && (reason === 'awaiting_approval' || reason === 'awaiting_answer')) return 'attention';
  if (state === 'paused' && reason === 'gateway_unreachable') return 'bad';
  return state || 'unknown';
}

/** The last path segment, for compact worktree names. */
export function baseName(path) {
  if (typeof path !== 'string') return '';
  const parts = path.replace(/\/+$/, '').split('/');
  return parts[parts.length - 1] || path;
}
