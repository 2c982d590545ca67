import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sizes, firstWindowStart, guessHeight, nextWindow, offsetOf, spaceAround, windowFor } from '../src/windowing.js';

test('sizes: measured by key, the rest at the measured average', () => {
  const s = new Sizes(50);
  assert.equal(s.of('a'), 50, 'nothing measured: the given estimate');
  assert.equal(s.measure('a', 100), true);
  assert.equal(s.measure('a', 100), false, 'the same size again is no change');
  s.measure('b', 20);
  assert.equal(s.estimate(), 60);
  assert.deepEqual(s.list(['a', 'x', 'b']), [100, 60, 20]);
  s.measure('a', 40);
  assert.equal(s.estimate(), 30, 'a new measure replaces the old one in the average');
  assert.equal(s.measure('c', Number.NaN), false);
  assert.equal(s.measure('c', -1), false);
});

test('the window covers the view and no more', () => {
  const sizes = Array(100).fill(10); // items at 0, 10, 20, …
  assert.deepEqual(windowFor(sizes, 0, 30), { lo: 0, hi: 2 });
  assert.deepEqual(windowFor(sizes, 15, 35), { lo: 1, hi: 3 });
  assert.deepEqual(windowFor(sizes, 995, 2000), { lo: 99, hi: 99 });
  assert.deepEqual(windowFor(sizes, 5000, 6000), { lo: 99, hi: 99 }, 'below everything: the last item');
  assert.deepEqual(windowFor(sizes, -100, -50), { lo: 0, hi: 0 }, 'above everything: the first item');
  assert.deepEqual(windowFor([], 0, 100), { lo: 0, hi: -1 });
  // Hidden items (size 0) take no space: the view starts at the next one.
  assert.deepEqual(windowFor([10, 0, 0, 10, 10], 10, 20), { lo: 3, hi: 3 });
  assert.deepEqual(windowFor([10, 0, 0, 10, 10], 5, 20), { lo: 0, hi: 3 });
});

test('the space around the window is what the other items take', () => {
  const sizes = [5, 10, 20, 40, 80];
  assert.deepEqual(spaceAround(sizes, 1, 2), { before: 5, after: 120 });
  assert.deepEqual(spaceAround(sizes, 0, 4), { before: 0, after: 0 });
  assert.equal(offsetOf(sizes, 3), 35);
  assert.equal(offsetOf(sizes, 0), 0);
  // Window + space = the whole list, wherever the window is.
  for (let lo = 0; lo < 5; lo++) {
    for (let hi = lo; hi < 5; hi++) {
      const { before, after } = spaceAround(sizes, lo, hi);
      assert.equal(before + (offsetOf(sizes, hi + 1) - offsetOf(sizes, lo)) + after, 155);
      assert.equal(before, offsetOf(sizes, lo));
    }
  }
});

test('a window is bounded by the view, not by the length of the transcript', () => {
  for (const n of [1000, 20000]) {
    const sizes = Array.from({ length: n }, (_, i) => 40 + (i % 7) * 30);
    const w = nextWindow(sizes, null, 10_000, 10_844, { overscan: 1200 });
    assert.ok(w.hi - w.lo + 1 <= 100, `${w.hi - w.lo + 1} items for ${n}`);
    const top = offsetOf(sizes, w.lo);
    const bottom = offsetOf(sizes, w.hi + 1);
    assert.ok(top <= 10_000 - 1200 && bottom >= 10_844 + 1200, 'covers the view and the overscan');
  }
});

test('the window stays while it covers the view, moves when it does not', () => {
  const sizes = Array(1000).fill(50);
  const first = nextWindow(sizes, null, 20_000, 20_800, { overscan: 1000 });
  assert.deepEqual(first, { lo: 380, hi: 435 });
  // A small scroll: the window stays (no render for every pixel).
  assert.equal(nextWindow(sizes, first, 20_100, 20_900, { overscan: 1000 }), first);
  // Past half the overscan: a new window around the view.
  const moved = nextWindow(sizes, first, 21_000, 21_800, { overscan: 1000 });
  assert.deepEqual(moved, { lo: 400, hi: 455 });
  // A window far larger than the view needs is cut down.
  assert.deepEqual(nextWindow(sizes, { lo: 0, hi: 999 }, 20_000, 20_800, { overscan: 1000 }), first);
  // A window past the end of a shorter list is redone.
  assert.deepEqual(nextWindow(sizes.slice(0, 400), { lo: 380, hi: 435 }, 19_000, 19_800, { overscan: 1000 }), { lo: 360, hi: 399 });
});

test('stuck to the bottom, the window reaches the last item as items arrive', () => {
  const sizes = Array(500).fill(50);
  const w = nextWindow(sizes, null, 24_200, 25_000, { overscan: 1000, stick: true });
  assert.equal(w.hi, 499);
  const more = sizes.concat([50, 50, 50]);
  const next = nextWindow(more, w, 24_200, 25_000, { overscan: 1000, stick: true });
  assert.equal(next.hi, 502, 'new items at the end are in the window');
  assert.ok(next.hi - next.lo + 1 <= 60);
});

test('the first render: the fewest last items guessed to fill the view', () => {
  const long = { kind: 'assistant', text: 'word '.repeat(960) }; // 4,800 characters
  const tool = { kind: 'tool' };
  const result = { kind: 'result' };
  const turn = [long, tool, result];
  // A phone: one long message fills the view; its tool call and result come after it.
  assert.equal(firstWindowStart([...turn, ...turn], 844, 390, 6), 3);
  assert.ok(guessHeight(long, 390) >= 844, 'a 4,800-character message is guessed to fill a phone');
  // A wide screen: the same message is shorter, so the turn before it comes too.
  assert.equal(guessHeight(long, 1920) < 844, true);
  assert.equal(firstWindowStart([...turn, ...turn, ...turn], 1000, 1920, 9), 0);
  assert.equal(firstWindowStart([...turn, ...turn, ...turn], 1000, 1920, 6), 3, 'at most `max` items');
  // Never more than `max`, never fewer than one, nothing for nothing.
  const small = Array(20).fill({ kind: 'user', text: 'ok' });
  assert.equal(firstWindowStart(small, 844, 390, 6), 14);
  assert.equal(firstWindowStart([long, long], 10, 390, 6), 1);
  assert.equal(firstWindowStart([], 844, 390, 6), 0);
  // Kinds it cannot tell count nothing: the guess stays low.
  assert.equal(guessHeight({ kind: 'notice' }, 390), 0);
  assert.equal(guessHeight(null, 390), 0);
  assert.equal(guessHeight({ kind: 'assistant', text: null }, 390), 0);
});
