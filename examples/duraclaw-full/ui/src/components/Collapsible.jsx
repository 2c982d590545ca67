import { useState } from 'preact/hooks';

const MAX_LINES = 14;
const MAX_CHARS = 2000;

/**
 * The first lines of a long text, with "show all"; `render` turns text into
 * children. `whole`: never collapsed (what a pending approval asks about).
 */
export function Collapsible({ text, class: cls, render, maxLines = MAX_LINES, testid, whole }) {
  const [open, setOpen] = useState(false);
  const s = String(text ?? '');
  const lines = s.split('\n');
  const long = !whole && (lines.length > maxLines + 2 || s.length > MAX_CHARS);
  let shown = s;
  if (long && !open) {
    shown = lines.slice(0, maxLines).join('\n');
    if (shown.length > MAX_CHARS) shown = shown.slice(0, MAX_CHARS);
  }
  return (
    <div class={`collapsible${long && !open ? ' collapsed' : ''}`}>
      <pre class={cls} data-testid={testid} data-whole={whole ? 'true' : undefined}>
        {render ? render(shown) : shown}
      </pre>
      {long && (
        <button type="button" class="link show-all" onClick={() => setOpen(!open)} data-testid="show-all">
          {open ? 'show less' : `show all (${lines.length.toLocaleString('en-US')} lines, ${s.length.toLocaleString('en-US')} chars)`}
        </button>
      )}
    </div>
  );
}
