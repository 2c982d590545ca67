// Events only ACP agents send (the gateway logs them under `acp.*`).

const str = (v) => (typeof v === 'string' ? v : '');

/** `acp.thought`: the agent's reasoning, collapsed. */
export function Thought({ item }) {
  return (
    <details class="acp-thought" data-seq={item.seq} data-testid="acp-thought">
      <summary class="muted small">Thought</summary>
      <div class="plain small">{str(item.ev.text).trim()}</div>
    </details>
  );
}

const MARK = { completed: '☑', in_progress: '◐', pending: '☐' };

/** `acp.plan`: the agent's plan as a checklist (its latest state). */
export function Plan({ item }) {
  const entries = Array.isArray(item.ev.entries) ? item.ev.entries : [];
  return (
    <div class="acp-plan" data-seq={item.seq} data-testid="acp-plan">
      <div class="muted small">Plan</div>
      <ul class="checklist">
        {entries.map((p, i) => {
          const status = str(p && p.status) || 'pending';
          return (
            <li key={i} data-status={status} class={`plan-${status}`}>
              <span class="mark" aria-label={status.replace('_', ' ')}>{MARK[status] || '☐'}</span> {str(p && p.content)}
            </li>
          );
        })}
      </ul>
    </div>
  );
}
