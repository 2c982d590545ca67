import { useState } from 'preact/hooks';
import { HiddenWarning, Shown } from './Shown.jsx';
import { ToolInput } from './Tool.jsx';
import { exactRule } from '../rules.js';
import { baseName } from '../format.js';

/** What the model is told when a person denies without writing a reason. */
export const DEFAULT_DENY_REASON = 'The user denied this tool call.';

/** How a resolved question reads: "approved by alice", "expired (…)". */
export function resolvedText(r) {
  const who = r.by && r.by.who ? r.by.who : null;
  // A decision from a notification names the device it came from.
  const client = r.by && typeof r.by.client === 'string' ? r.by.client : '';
  const via = client.startsWith('notification') ? ` via ${client}` : '';
  const by = who ? ` by ${who}${via}` : '';
  switch (r.decision) {
    case 'allow': {
      let s = `approved${by}`;
      if (r.remember) s += ' (allowed for this session)';
      if (r.updated_input) s += ' with edited input';
      return s;
    }
    case 'deny':
      return `denied${by}${r.reason ? `: ${r.reason}` : ''}${r.interrupt ? ' (turn interrupted)' : ''}`;
    case 'answered': {
      const a = r.answers && typeof r.answers === 'object' ? Object.entries(r.answers) : [];
      return `answered${by}${a.length ? ': ' + a.map(([q, v]) => `${q} → ${v}`).join('; ') : ''}`;
    }
    case 'expired':
      return 'expired (nobody answered — not a denial)';
    case 'cancelled':
      return `cancelled${r.reason ? `: ${r.reason}` : ''}`;
    default:
      return `${r.decision || 'resolved'}${by}`;
  }
}

function Resolution({ item }) {
  const r = item.resolved;
  const when = Number.isFinite(r.at_ms) ? new Date(r.at_ms).toLocaleString() : '';
  return (
    <div class={`resolution ${r.decision}`} data-seq={item.resolvedSeq} data-testid="resolution" title={when}>
      <Shown text={resolvedText(r)} multiline />
    </div>
  );
}

/** The feedback line under a question: sending, already decided, errors. */
function Feedback({ st }) {
  if (!st) return null;
  if (st.error) {
    return (
      <p class={st.code === 'already_decided' ? 'notice' : 'error-text'} role="alert" data-testid="question-error">
        {st.error}
      </p>
    );
  }
  if (st.sending) return <p class="muted small">sending…</p>;
  if (st.sent) return <p class="muted small">sent; waiting for the session…</p>;
  return null;
}

function Permission({ item, ctx, nested }) {
  const q = item.q;
  const [reason, setReason] = useState('');
  const st = ctx.qstate(q.question_id);
  const busy = st && (st.sending || st.sent) && !st.error;
  // What "Always allow for this worktree" adds: shown before it is clicked.
  const rule = ctx.worktree ? exactRule(ctx.worktree, q.tool_name, q.input) : null;
  return (
    <div
      class={`question permission${item.resolved ? ' resolved' : ' open'}`}
      id={`q-${q.question_id}`}
      data-seq={item.seq ?? undefined}
      data-testid="question"
      data-question-id={q.question_id}
    >
      {!nested && <HiddenWarning values={[q]} />}
      {!item.resolved && (
        <div class="q-head">
          <span class="q-icon" aria-hidden="true">
            !
          </span>
          <span>
            Allow{' '}
            <b>
              <Shown text={q.tool_name || 'this tool'} />
            </b>
            ?
            {q.description && (!nested || q.description !== (q.input && q.input.description)) && (
              <span class="muted q-desc">
                {' '}
                <Shown text={q.description} multiline />
              </span>
            )}
          </span>
        </div>
      )}
      {!nested && <ToolInput name={q.tool_name} input={q.input} worktree={ctx.worktree} whole={!item.resolved} />}
      {item.resolved ? (
        <Resolution item={item} />
      ) : (
        <div class="q-actions">
          <div class="q-buttons">
            <button type="button" class="primary" data-testid="approve" disabled={busy} onClick={() => ctx.answer(q.question_id, { decision: 'allow' })}>
              Approve
            </button>
            <button
              type="button"
              data-testid="allow-session"
              disabled={busy}
              onClick={() => ctx.answer(q.question_id, { decision: 'allow', remember: true })}
              title={`Approve, and allow ${q.tool_name || 'this tool'} for the rest of this session`}
            >
              Allow for this session
            </button>
            {rule && (
              <button
                type="button"
                data-testid="allow-worktree"
                data-rule={rule}
                disabled={busy}
                onClick={() => ctx.answer(q.question_id, { decision: 'allow', allow_worktree_rule: rule })}
                data-worktree={ctx.ruleWorktree || undefined}
                title={`Approve, and add the rule “${rule}” (allow) for ${ctx.ruleWorktree}: later sessions there (and in new worktrees made from it) run it without asking`}
              >
                Always allow in <Shown text={baseName(ctx.ruleWorktree || '')} />: <code class="rule-text">{rule}</code>
              </button>
            )}
          </div>
          <div class="deny-row">
            <input
              data-testid="deny-reason"
              placeholder="Reason (Claude sees it)"
              value={reason}
              onInput={(e) => setReason(e.currentTarget.value)}
              disabled={busy}
            />
            <button
              type="button"
              class="danger"
              data-testid="deny"
              disabled={busy}
              onClick={() => {
                // The protocol needs a reason; the model is told this one when none is written.
                ctx.answer(q.question_id, { decision: 'deny', reason: reason.trim() || DEFAULT_DENY_REASON });
              }}
            >
              Deny
            </button>
          </div>
        </div>
      )}
      <Feedback st={item.resolved ? (st && st.error ? st : null) : st} />
    </div>
  );
}

function AskUser({ item, ctx, nested }) {
  const q = item.q;
  const questions = Array.isArray(q.questions) ? q.questions : [];
  const [picked, setPicked] = useState(() => questions.map(() => []));
  const [other, setOther] = useState(() => questions.map(() => ''));
  const [err, setErr] = useState(null);
  const st = ctx.qstate(q.question_id);
  const busy = st && (st.sending || st.sent) && !st.error;

  const toggle = (qi, label, multi) => {
    setPicked((p) => p.map((cur, k) => (k !== qi ? cur : multi ? (cur.includes(label) ? cur.filter((x) => x !== label) : [...cur, label]) : [label])));
  };

  const submit = (e) => {
    e.preventDefault();
    const answers = {};
    for (let k = 0; k < questions.length; k++) {
      const qq = questions[k] || {};
      const free = other[k].trim();
      const chosen = qq.multi_select ? [...picked[k], ...(free ? [free] : [])] : free ? [free] : picked[k];
      if (!chosen.length) {
        setErr(`Answer “${qq.question || `question ${k + 1}`}” first.`);
        return;
      }
      answers[String(qq.question ?? `question ${k + 1}`)] = chosen.join(', ');
    }
    setErr(null);
    ctx.answer(q.question_id, { decision: 'answered', answers });
  };

  return (
    <div
      class={`question ask${item.resolved ? ' resolved' : ' open'}`}
      id={`q-${q.question_id}`}
      data-seq={item.seq ?? undefined}
      data-testid="question"
      data-question-id={q.question_id}
    >
      {!nested && <HiddenWarning values={[q]} />}
      {item.resolved ? (
        <>
          <ul class="asked">
            {questions.map((qq, k) => (
              <li key={k}>
                <Shown text={qq && qq.question} />
              </li>
            ))}
          </ul>
          <Resolution item={item} />
        </>
      ) : (
        <form class="question-form" data-testid="question-form" onSubmit={submit}>
          <div class="q-head">
            <span class="q-icon" aria-hidden="true">
              ?
            </span>
            <span>Claude asks</span>
          </div>
          {questions.map((qq, k) => {
            const multi = !!(qq && qq.multi_select);
            const opts = qq && Array.isArray(qq.options) ? qq.options : [];
            return (
              <fieldset key={k} disabled={busy}>
                <legend>
                  {qq && qq.header && (
                    <span class="badge">
                      <Shown text={qq.header} />
                    </span>
                  )}{' '}
                  <Shown text={qq && qq.question} multiline />
                  {multi && <span class="muted small"> (choose any)</span>}
                </legend>
                {opts.map((o, j) => (
                  <label class="option" key={j}>
                    <input
                      type={multi ? 'checkbox' : 'radio'}
                      name={`${q.question_id}-${k}`}
                      value={o.label}
                      checked={picked[k].includes(o.label)}
                      onChange={() => toggle(k, o.label, multi)}
                      data-testid="question-option"
                    />
                    <span>
                      <span class="opt-label">
                        <Shown text={o.label} />
                      </span>
                      {o.description && (
                        <span class="muted opt-desc">
                          {' '}
                          — <Shown text={o.description} multiline />
                        </span>
                      )}
                    </span>
                  </label>
                ))}
                <input
                  class="other"
                  placeholder={opts.length ? 'Or write your own answer' : 'Your answer'}
                  value={other[k]}
                  data-testid="question-other"
                  onInput={(e) => {
                    const v = e.currentTarget.value;
                    setOther((o) => o.map((x, i) => (i === k ? v : x)));
                  }}
                />
              </fieldset>
            );
          })}
          {err && <p class="error-text">{err}</p>}
          <div class="q-buttons">
            <button type="submit" class="primary" data-testid="question-submit" disabled={busy}>
              Send answer
            </button>
            <button
              type="button"
              class="link"
              disabled={busy}
              onClick={() => ctx.answer(q.question_id, { decision: 'deny', reason: 'The user declined to answer.' })}
            >
              Decline
            </button>
          </div>
        </form>
      )}
      <Feedback st={item.resolved ? (st && st.error ? st : null) : st} />
    </div>
  );
}

/** A pending or resolved user_question. */
export function Question({ item, ctx, nested }) {
  if (item.q.kind === 'ask_user') return <AskUser item={item} ctx={ctx} nested={nested} />;
  return <Permission item={item} ctx={ctx} nested={nested} />;
}
