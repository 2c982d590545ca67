import { highlight, highlighter, langForPath, renderMarkdown } from '../markdown.js';
import { lazyModule } from '../lazy.js';
import { resolvePath } from '../paths.js';
import { revealText } from '../reveal.js';
import { autoAllowedNote } from '../system.js';
import { ruleDecisionNote } from '../rules.js';
import { Collapsible } from './Collapsible.jsx';
import { Question } from './Question.jsx';
import { HiddenWarning, Shown } from './Shown.jsx';

/** The text of a tool result: a string, or content blocks. */
export function resultText(content) {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((b) => {
        if (typeof b === 'string') return b;
        if (b && b.type === 'text' && typeof b.text === 'string') return b.text;
        if (b && b.type === 'image') return '[image]';
        return JSON.stringify(b, null, 2);
      })
      .join('\n');
  }
  return JSON.stringify(content, null, 2);
}

/** The `diff` package, loaded on first use (its own chunk). */
export const diffLib = lazyModule(() => import('diff'));

// Code from a tool call: escapes first (reveal.js), then highlighting.
function Code({ text, lang, testid, whole }) {
  highlighter.use();
  return (
    <Collapsible
      text={revealText(text, true)}
      class={`code hljs${lang ? ` language-${lang}` : ''}`}
      testid={testid}
      whole={whole}
      render={(s) => <code dangerouslySetInnerHTML={{ __html: highlight(s, lang) }} />}
    />
  );
}

function Json({ value, whole }) {
  let text;
  try {
    text = JSON.stringify(value, null, 2);
  } catch {
    text = String(value);
  }
  return <Code text={text ?? 'null'} lang="json" whole={whole} />;
}

/**
 * A file path, whole and wrapped: resolved, relative to the session's
 * worktree, flagged when outside it, with what was written when that
 * differs.
 */
export function FilePath({ path, worktree, extra }) {
  if (typeof path !== 'string') return extra ? <div class="tool-path muted">{extra}</div> : null;
  const r = resolvePath(path, worktree);
  return (
    <div class={`tool-path mono${r.outside ? ' outside' : ''}`} data-testid="tool-path" data-outside={r.outside ? 'true' : 'false'}>
      <div>
        {r.outside && (
          <span class="badge bad" data-testid="outside-worktree">
            outside the worktree
          </span>
        )}{' '}
        <span class="path-shown" data-testid="path-shown">
          <Shown text={r.shown} />
        </span>
        {extra && <span class="muted"> {extra}</span>}
      </div>
      {r.rewritten && (
        <div class="path-raw muted small" data-testid="path-raw">
          as written: <Shown text={path} />
        </div>
      )}
    </div>
  );
}

/**
 * A unified, coloured diff of two texts (an Edit tool call). Until the diff
 * code is loaded it shows the whole change (every old line removed, every
 * new line added): complete and true, only not minimal; the minimal hunks
 * replace it a moment later.
 */
export function Diff({ oldText, newText }) {
  const lib = diffLib.use();
  const a = String(oldText ?? '');
  const b = String(newText ?? '');
  const nl = (s) => (s === '' || s.endsWith('\n') ? s : s + '\n');
  if (nl(a) === nl(b)) return <div class="muted small">(no change)</div>;
  let hunks;
  if (lib) {
    hunks = lib.structuredPatch('a', 'b', nl(a), nl(b), '', '', { context: 3 }).hunks;
  } else {
    diffLib.load().catch(() => {});
    const lines = (s, c) => (s === '' ? [] : nl(s).slice(0, -1).split('\n').map((l) => c + l));
    hunks = [{ lines: [...lines(a, '-'), ...lines(b, '+')] }];
  }
  if (!hunks.length) return <div class="muted small">(no change)</div>;
  return (
    <pre class="diff" data-testid={lib ? 'diff' : 'diff-whole'}>
      {hunks.map((h, i) => (
        <div class="hunk" key={i}>
          {i > 0 && <span class="diff-line sep">⋯</span>}
          {h.lines
            .filter((l) => !l.startsWith('\\'))
            .map((l, j) => {
              const c = l[0];
              const cls = c === '+' ? 'add' : c === '-' ? 'del' : 'ctx';
              return (
                <span class={`diff-line ${cls}`} key={j}>
                  <span class="diff-sign">{c === ' ' ? ' ' : c}</span>
                  {l.length > 1 ? <Shown text={l.slice(1)} multiline /> : ' '}
                </span>
              );
            })}
        </div>
      ))}
    </pre>
  );
}

/**
 * What the call does in a few words, for the card's header. A file tool's
 * path is not here: the card shows it whole (FilePath).
 */
export function toolSummary(name, input) {
  const i = input && typeof input === 'object' ? input : {};
  const s = (v) => (typeof v === 'string' ? v : '');
  switch (name) {
    case 'Bash':
      return s(i.description);
    case 'Glob':
    case 'Grep':
      return s(i.pattern);
    case 'WebFetch':
      return s(i.url);
    case 'WebSearch':
      return s(i.query);
    case 'Task':
    case 'Agent':
      return s(i.description);
    default:
      return '';
  }
}

/**
 * A tool call's input, shown the way a person reads it. `whole` (while it
 * waits for a decision): nothing is collapsed.
 */
export function ToolInput({ name, input, worktree, whole }) {
  highlighter.use();
  const i = input && typeof input === 'object' && !Array.isArray(input) ? input : null;
  if (!i) return <Json value={input} whole={whole} />;
  switch (name) {
    case 'ExitPlanMode':
      // The plan is the model's text: Markdown through the sanitizer.
      if (typeof i.plan !== 'string') break;
      return (
        <div class="plan" data-testid="plan">
          <div class="muted small">The plan (approving it ends plan mode):</div>
          <div class="markdown" dangerouslySetInnerHTML={{ __html: renderMarkdown(i.plan) }} />
        </div>
      );
    case 'Bash':
      if (typeof i.command !== 'string') break;
      return (
        <div>
          <Collapsible
            text={i.command}
            class="term cmd"
            testid="bash-command"
            whole={whole}
            render={(s) => [<span class="prompt-sign">$ </span>, <Shown text={s} multiline />]}
          />
          {(i.run_in_background || i.timeout) && (
            <div class="chips">
              {i.run_in_background && <span class="badge">background</span>}
              {i.timeout && <span class="badge">timeout {Math.round(i.timeout / 1000)} s</span>}
            </div>
          )}
        </div>
      );
    case 'Edit':
      if (typeof i.old_string !== 'string' || typeof i.new_string !== 'string') break;
      return (
        <div>
          <FilePath path={i.file_path} worktree={worktree} extra={i.replace_all ? '(replace all)' : null} />
          <Diff oldText={i.old_string} newText={i.new_string} />
        </div>
      );
    case 'MultiEdit':
      if (!Array.isArray(i.edits)) break;
      return (
        <div>
          <FilePath path={i.file_path} worktree={worktree} extra={`(${i.edits.length} edits)`} />
          {i.edits.map((e, k) => (
            <Diff key={k} oldText={e && e.old_string} newText={e && e.new_string} />
          ))}
        </div>
      );
    case 'Write':
      if (typeof i.content !== 'string') break;
      return (
        <div>
          <FilePath path={i.file_path} worktree={worktree} extra={`(${i.content.split('\n').length} lines)`} />
          <Code text={i.content} lang={langForPath(i.file_path)} whole={whole} />
        </div>
      );
    case 'NotebookEdit':
      if (typeof i.notebook_path !== 'string') break;
      return (
        <div>
          <FilePath path={i.notebook_path} worktree={worktree} />
          <Json value={input} whole={whole} />
        </div>
      );
    case 'Read': {
      const range = [i.offset != null ? `from line ${i.offset}` : null, i.limit != null ? `${i.limit} lines` : null].filter(Boolean).join(', ');
      if (typeof i.file_path !== 'string') break;
      return <FilePath path={i.file_path} worktree={worktree} extra={range ? `(${range})` : null} />;
    }
    case 'TodoWrite':
      if (!Array.isArray(i.todos)) break;
      return (
        <ul class="todos">
          {i.todos.map((t, k) => (
            <li key={k} class={`todo ${t && t.status}`}>
              <span class="todo-mark">{t && t.status === 'completed' ? '☑' : t && t.status === 'in_progress' ? '◐' : '☐'}</span> <Shown text={t && t.content} />
            </li>
          ))}
        </ul>
      );
    case 'AskUserQuestion':
      if (!Array.isArray(i.questions)) break;
      return (
        <ul class="asked">
          {i.questions.map((q, k) => (
            <li key={k}>
              <Shown text={q && q.question} />
            </li>
          ))}
        </ul>
      );
    default:
      break;
  }
  return <Json value={input} whole={whole} />;
}

/** A tool result: terminal output for Bash, plain text otherwise; long ones collapsed. */
export function ToolResult({ name, result }) {
  const text = resultText(result.content);
  const cls = name === 'Bash' ? 'term out' : 'plain out';
  return (
    <div class={`tool-result${result.is_error ? ' is-error' : ''}`} data-seq={result.seq} data-testid="tool-result">
      <div class="result-label">{result.is_error ? 'error' : 'result'}</div>
      {text.trim() === '' ? <div class="muted small">(no output)</div> : <Collapsible text={text} class={cls} maxLines={name === 'Read' ? 8 : 14} />}
    </div>
  );
}

/** Says on a call's card that it ran with no question, and why (notice `auto_allowed`). */
export function AutoAllowed({ auto }) {
  const n = autoAllowedNote(auto.ev);
  return (
    <div class="auto-allowed" role="status" data-seq={auto.seq} data-testid="auto-allowed">
      <div>
        <b>{n.title}</b> <span class="badge mono">auto_allowed</span>
      </div>
      <div>{n.why}</div>
      {n.detail && (
        <div class="muted small">
          <Shown text={n.detail} />
        </div>
      )}
    </div>
  );
}

/** Says on a call's card which approval rule decided it (notice `rule_decision`). */
export function RuleDecided({ ruled }) {
  const n = ruleDecisionNote(ruled.ev);
  if (!n) return null;
  return (
    <div class={`rule-decided ${n.action}`} role="status" data-seq={ruled.seq} data-testid="rule-decision" data-rule={n.rule} data-scope={n.scope}>
      <b>{n.verb}</b> <code class="rule-text">{n.rule}</code> <span class="badge">{n.scope} scope</span>{' '}
      <span class="muted small">without asking</span>
    </div>
  );
}

/** One tool call: input, its approval prompt if any, then its result. */
export function ToolCard({ item, ctx }) {
  const q = item.question;
  const pending = q && !q.resolved;
  const name = item.name || (q && q.q.tool_name) || 'tool';
  const summary = item.orphan ? 'result of an earlier call' : toolSummary(item.name, item.input);
  return (
    <section
      class={`tool card${pending ? ' pending' : ''}${item.autoAllowed || (item.ruleDecision && item.ruleDecision.ev.rule && item.ruleDecision.ev.rule.action === 'allow') ? ' auto' : ''}${item.result && item.result.is_error ? ' failed' : ''}`}
      data-seq={item.seq}
      data-testid="tool-call"
      data-tool={name}
      data-tool-use-id={item.id}
    >
      <div class="tool-head">
        <span class="tool-name">
          <Shown text={name} />
        </span>
        {summary && (
          <span class="tool-summary">
            <Shown text={summary} />
          </span>
        )}
        {!item.result && !pending && !item.orphan && ctx.running && !(q && q.resolved && !['allow', 'answered'].includes(q.resolved.decision)) && (
          <span class="spinner small" title="running" />
        )}
      </div>
      {!item.orphan && <HiddenWarning values={[item.name, item.input, q && q.q]} />}
      {!item.orphan && name !== 'AskUserQuestion' && <ToolInput name={item.name} input={item.input} worktree={ctx.worktree} whole={pending} />}
      {q && <Question item={q} ctx={ctx} nested />}
      {item.autoAllowed && <AutoAllowed auto={item.autoAllowed} />}
      {item.ruleDecision && <RuleDecided ruled={item.ruleDecision} />}
      {item.result &&
        (name === 'AskUserQuestion' && !item.result.is_error && q && q.resolved && q.resolved.decision === 'answered' ? (
          // The answers are shown above; the tool's echo of them adds nothing.
          <span hidden data-seq={item.result.seq} />
        ) : (
          <ToolResult name={item.name} result={item.result} />
        ))}
    </section>
  );
}
