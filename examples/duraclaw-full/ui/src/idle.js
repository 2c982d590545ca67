/** Runs `fn` when the page is idle (at most `ms` later); `cancel()` stops it. */
export function whenIdle(fn, ms = 1000) {
  if (typeof window.requestIdleCallback === 'function') {
    const h = window.requestIdleCallback(fn, { timeout: ms });
    return { cancel: () => window.cancelIdleCallback(h) };
  }
  const h = setTimeout(fn, 0);
  return { cancel: () => clearTimeout(h) };
}
