// Which transcript items are in the DOM: those near the viewport. Plain
// functions over item sizes (height plus the list's gap, measured once an
// item was rendered, estimated before), independent of the DOM.

/** Pixels rendered beyond each edge of the viewport. */
export const OVERSCAN = 1200;

/** The items' sizes: measured ones by key, the rest at the measured average. */
export class Sizes {
  constructor(estimate = 80) {
    this.map = new Map();
    this.fallback = estimate;
    this.total = 0;
    this.count = 0;
  }

  /** Records what an item measured; returns whether it changed. */
  measure(key, size) {
    if (!Number.isFinite(size) || size < 0) return false;
    const old = this.map.get(key);
    if (old === size) return false;
    if (old === undefined) {
      this.count++;
    } else {
      this.total -= old;
    }
    this.total += size;
    this.map.set(key, size);
    return true;
  }

  /** What an item not measured yet is taken to be. */
  estimate() {
    return this.count ? this.total / this.count : this.fallback;
  }

  of(key) {
    const s = this.map.get(key);
    return s === undefined ? this.estimate() : s;
  }

  /** The sizes of `keys`, in order. */
  list(keys) {
    const e = this.estimate();
    return keys.map((k) => {
      const s = this.map.get(k);
      return s === undefined ? e : s;
    });
  }
}

/**
 * The items (`lo..=hi`, indices) that cover `top..bottom`, pixels from the
 * list's start, given each item's size. Empty list: lo = 0, hi = -1.
 */
export function windowFor(sizes, top, bottom) {
  const n = sizes.length;
  if (n === 0) return { lo: 0, hi: -1 };
  let at = 0;
  let lo = -1;
  let hi = n - 1;
  for (let i = 0; i < n; i++) {
    const end = at + sizes[i];
    if (lo < 0 && end > top) lo = i;
    if (at >= bottom && lo >= 0) {
      hi = Math.max(lo, i - 1);
      break;
    }
    at = end;
  }
  // The view is below everything: the last items.
  if (lo < 0) lo = n - 1;
  return { lo, hi };
}

/** The space the items before `lo` and after `hi` take. */
export function spaceAround(sizes, lo, hi) {
  let before = 0;
  let after = 0;
  for (let i = 0; i < sizes.length; i++) {
    if (i < lo) before += sizes[i];
    else if (i > hi) after += sizes[i];
  }
  return { before, after };
}

/** Where item `i` starts, pixels from the list's start. */
export function offsetOf(sizes, i) {
  let at = 0;
  for (let j = 0; j < i && j < sizes.length; j++) at += sizes[j];
  return at;
}

/**
 * The window to render for a view (`top..bottom` from the list's start):
 * the current one (`cur`) while it covers the view with half the overscan
 * to spare and is not much larger than needed, else a new one covering the
 * view and the overscan. `stick`: the window reaches the last item.
 */
export function nextWindow(sizes, cur, top, bottom, { overscan = OVERSCAN, stick = false } = {}) {
  const n = sizes.length;
  const ideal = windowFor(sizes, top - overscan, bottom + overscan);
  if (stick && n > 0) ideal.hi = n - 1;
  if (!cur || n === 0) return ideal;
  const need = windowFor(sizes, top - overscan / 2, bottom + overscan / 2);
  if (stick) need.hi = n - 1;
  const covers = cur.lo <= need.lo && cur.hi >= need.hi && cur.hi < n;
  const small = cur.hi - cur.lo <= 2 * (ideal.hi - ideal.lo) + 20;
  return covers && small ? cur : ideal;
}

/**
 * A low guess of an item's height before it was ever rendered, from its
 * content alone (`width`: the view's width in pixels): text as if every
 * line held more characters than it can, and short lines, so that items
 * guessed to fill a screen do fill it. Kinds it cannot tell count 0.
 */
export function guessHeight(item, width) {
  if (!item) return 0;
  const text = item.kind === 'assistant' || item.kind === 'user' ? item.text : null;
  if (typeof text === 'string') {
    const perLine = Math.max(20, Math.floor(width / 6));
    return Math.ceil(text.length / perLine) * 20;
  }
  return item.kind === 'tool' ? 32 : 0;
}

/**
 * Where the first render of a session starts (an index into `items`): the
 * fewest last items guessed to fill a view `height` high (at least one, at
 * most `max`). What lies beyond the view follows once these are measured,
 * and a guess too low is widened before the first paint (moveWindow).
 */
export function firstWindowStart(items, height, width, max) {
  const n = items.length;
  let lo = n;
  let filled = 0;
  while (lo > 0 && n - lo < max && (lo === n || filled < height)) {
    lo--;
    filled += guessHeight(items[lo], width);
  }
  return lo;
}
