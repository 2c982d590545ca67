import { highlighter, renderMarkdown } from '../markdown.js';
import { fmtCost, fmtDuration, fmtInt, stateLabel } from '../format.js';
import { errorHint, errorTitle, noticeText, queuedNote } from '../system.js';
import { Question, resolvedText } from './Question.jsx';
import { ToolCard } from './Tool.jsx';
import { Plan, Thought } from './Acp.jsx';

function UserMessage({ item, ctx }) {
  const q = queuedNote(item);
  return (
    <div class={`msg user${q ? ' queued' : ''}`} data-seq={item.seq} data-testid="user-message" data-queued={q ? (item.taken ? 'taken' : item.ended ? 'ended' : 'waiting') : undefined}>
      <div class="msg-by">
        {item.by || 'you'}
        {q && (
          <span class="queued-note" data-testid="queued-label">
            {' · '}
            <span class="badge warn">{q.label}</span> <span class="muted">{q.detail}</span>
          </span>
        )}
      </div>
      <div class="bubble">{item.text}</div>
      {item.turnEnded && ctx && ctx.fork && (
        <button
          type="button"
          class="link small fork-here"
          data-testid="fork-here"
          title="Start a new session with the conversation up to the end of this exchange"
          onClick={() => ctx.fork(item.seq)}
        >
          Fork from here
        </button>
      )}
    </div>
  );
}

function AssistantMessage({ item }) {
  highlighter.use();
  return (
    <div
      class={`msg assistant${item.final ? '' : ' streaming'}`}
      data-seq={item.seq}
      data-last-seq={item.lastSeq}
      data-final-seq={item.finalSeq}
      data-message-id={item.id}
      data-testid="assistant-message"
    >
      <div class="markdown" dangerouslySetInnerHTML={{ __html: renderMarkdown(item.text) }} />
      {!item.final && <span class="cursor" aria-label="streaming" />}
      {item.aborted && <div class="muted small">(interrupted)</div>}
    </div>
  );
}

function TurnResult({ item }) {
  const e = item.ev;
  const u = e.usage || {};
  const cache = (u.cache_read_input_tokens || 0) + (u.cache_creation_input_tokens || 0);
  const aborted = typeof e.terminal_reason === 'string' && e.terminal_reason.startsWith('aborted');
  const reason = e.terminal_reason && e.terminal_reason !== 'completed' ? e.terminal_reason.replace(/_/g, ' ') : null;
  return (
    <div class={`turn-result${e.is_error ? ' is-error' : ''}`} data-seq={item.seq} data-testid="turn-result">
      <span class="tr-label">{aborted ? 'Turn aborted' : e.is_error ? 'Turn failed' : 'Turn done'}</span>
      {reason && <span class="badge warn">{reason}</span>}
      <span data-testid="turn-cost" title={`session total ${fmtCost(item.totalCost)}`}>
        {fmtCost(item.turnCost)}
        <span class="muted"> (total {fmtCost(item.totalCost)})</span>
      </span>
      <span title="input / output tokens">
        {fmtInt(u.input_tokens)} in · {fmtInt(u.output_tokens)} out{cache ? <span class="muted"> · {fmtInt(cache)} cached</span> : null}
      </span>
      <span>{fmtDuration(e.duration_ms)}</span>
      {Number.isFinite(e.num_turns) && <span class="muted">{e.num_turns === 1 ? '1 step' : `${e.num_turns} steps`}</span>}
    </div>
  );
}

function ErrorEvent({ item }) {
  const e = item.ev;
  const hint = errorHint(e);
  return (
    <div class="event-error" role="alert" data-seq={item.seq} data-testid="error-event" data-code={typeof e.code === 'string' ? e.code : undefined}>
      <div>
        <b data-testid="error-title">{errorTitle(e)}</b>
        {e.code && <span class="badge bad mono">{e.code}</span>}
        {Number.isFinite(e.exit_status) && <span class="badge mono">exit {e.exit_status}</span>}
      </div>
      <div class="err-msg">{String(e.message ?? '')}</div>
      {hint && <div class="err-hint">{hint}</div>}
      {e.stderr_tail && (
        <details>
          <summary>stderr</summary>
          <pre class="term out">{e.stderr_tail}</pre>
        </details>
      )}
    </div>
  );
}

function Init({ item }) {
  const e = item.ev;
  const tools = Array.isArray(e.tools) ? e.tools : [];
  return (
    <details class="init" data-seq={item.seq} data-testid="session-init">
      <summary>
        <span class="muted">
          Session ready{e.model ? ` · ${e.model}` : ''}
          {e.executor_version ? ` · executor ${e.executor_version}` : ''}
          {e.permission_mode && e.permission_mode !== 'default' ? ` · ${e.permission_mode}` : ''}
        </span>
      </summary>
      <div class="small mono">{e.cwd}</div>
      {tools.length > 0 && <div class="small muted">tools: {tools.join(', ')}</div>}
      {e.executor_session_id && <div class="small muted mono">executor session {e.executor_session_id}</div>}
    </details>
  );
}

const SHOWN_STATES = new Set(['terminated', 'gateway_unreachable']);

function StateChange({ item }) {
  const e = item.ev;
  const shown = SHOWN_STATES.has(e.state) || SHOWN_STATES.has(e.reason);
  if (!shown) return <span class="state-marker" hidden data-seq={item.seq} data-state={e.state} />;
  return (
    <div class={`state-line ${e.state}`} data-seq={item.seq} data-state={e.state}>
      — {stateLabel(e.state, e.reason)} —
    </div>
  );
}

function Notice({ item }) {
  const e = item.ev;
  const code = typeof e.code === 'string' ? e.code : e.type;
  // The wording is the UI's; the gateway's own message stays one hover away.
  const detail = typeof e.message === 'string' ? e.message : undefined;
  return (
    <div class="notice-line" role="status" data-seq={item.seq} data-testid="notice-event" data-code={code} title={detail}>
      {noticeText(e)}
    </div>
  );
}

function Unknown({ item }) {
  const e = item.ev;
  // The CLI's per-request status is noise for a person; keep its seq only.
  if (e && e.type === 'cli.status') return <span hidden data-seq={item.seq} />;
  if (e && e.type === 'acp.thought') return <Thought item={item} />;
  if (e && e.type === 'acp.plan') return <Plan item={item} />;
  if (e && e.type === 'cli.api_retry') {
    return (
      <div class="muted small" data-seq={item.seq}>
        API retry {e.attempt ?? '?'}
        {e.max_retries ? `/${e.max_retries}` : ''}
        {e.error_status ? ` after HTTP ${e.error_status}` : ''}
      </div>
    );
  }
  let text;
  try {
    text = JSON.stringify(e, null, 2);
  } catch {
    text = String(e);
  }
  return (
    <details class="unknown" data-seq={item.seq} data-testid="unknown-event">
      <summary class="muted small">
        event <span class="mono">{e && typeof e.type === 'string' ? e.type : '(no type)'}</span>
      </summary>
      <pre class="plain small">{text}</pre>
    </details>
  );
}

function OrphanResolution({ item }) {
  if (item.repeat) return <span hidden data-seq={item.seq} data-question-id={item.ev.question_id} />;
  return (
    <div class="resolution standalone" data-seq={item.seq} data-testid="resolution">
      question {item.ev.question_id}: {resolvedText(item.ev)}
    </div>
  );
}

/** Renders one transcript item. */
export function Item({ item, ctx }) {
  switch (item.kind) {
    case 'user':
      return <UserMessage item={item} ctx={ctx} />;
    case 'assistant':
      return <AssistantMessage item={item} />;
    case 'tool':
      return <ToolCard item={item} ctx={ctx} />;
    case 'question':
      return <Question item={item} ctx={ctx} />;
    case 'resolved':
      return <OrphanResolution item={item} />;
    case 'result':
      return <TurnResult item={item} />;
    case 'error':
      return <ErrorEvent item={item} />;
    case 'init':
      return <Init item={item} />;
    case 'state':
      return <StateChange item={item} />;
    case 'notice':
      return <Notice item={item} />;
    default:
      return <Unknown item={item} />;
  }
}
