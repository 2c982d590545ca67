// A module loaded on first use (its own chunk), so the first screen does not
// wait for code it does not need. Components that can use it re-render once
// it is there; until then they draw their plain fallback.
import { useEffect, useState } from 'preact/hooks';

/**
 * `load` is `() => import('./x.js')`. Returns `{ current, load, use }`:
 * `current()` the module or null, `load()` starts loading (once; a failed
 * load may be tried again), `use()` a hook giving the module or null and
 * re-rendering its component when the module arrives (it does not start
 * the loading: the code that needs the module does, through `load()`).
 */
export function lazyModule(load) {
  let mod = null;
  let pending = null;
  const waiting = new Set();
  const start = () => {
    if (!pending) {
      pending = load().then(
        (m) => {
          mod = m;
          for (const f of waiting) f();
          waiting.clear();
          return m;
        },
        (e) => {
          pending = null;
          throw e;
        },
      );
    }
    return pending;
  };
  return {
    current: () => mod,
    load: start,
    use() {
      const [, redraw] = useState(0);
      const had = mod;
      useEffect(() => {
        if (had) return undefined;
        if (mod) {
          // It arrived between this render and now.
          redraw((n) => n + 1);
          return undefined;
        }
        let live = true;
        const f = () => live && redraw((n) => n + 1);
        waiting.add(f);
        return () => {
          live = false;
          waiting.delete(f);
        };
      }, [had]);
      return mod;
    },
  };
}
