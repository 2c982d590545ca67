import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { Shown } from './Shown.jsx';

// The session's diff since its base commit: a file list with each file's
// patch. Paths and content come from the worktree: shown as text only.

function lineClass(line) {
  if (line.startsWith('+++') || line.startsWith('---') || line.startsWith('diff --git') || line.startsWith('index ')) return 'diff-meta';
  if (line.startsWith('@@')) return 'diff-hunk';
  if (line.startsWith('+')) return 'diff-add';
  if (line.startsWith('-')) return 'diff-del';
  return '';
}

function FileDiff({ f }) {
  const lines = typeof f.patch === 'string' && f.patch ? f.patch.replace(/\n$/, '').split('\n') : [];
  return (
    <details class="diff-file" open={lines.length > 0 && lines.length < 400} data-testid="diff-file" data-path={String(f.path ?? '')}>
      <summary>
        <span class={`badge diff-status-${String(f.status ?? '')}`}>{String(f.status ?? '')}</span>{' '}
        <span class="mono">
          <Shown text={String(f.old_path ? `${f.old_path} → ${f.path}` : (f.path ?? ''))} />
        </span>{' '}
        <span class="diff-add">+{Number(f.additions) || 0}</span> <span class="diff-del">−{Number(f.deletions) || 0}</span>
        {f.binary && <span class="badge"> binary</span>}
        {f.truncated && <span class="badge warn"> too large to show</span>}
      </summary>
      {lines.length > 0 && (
        <pre class="diff-text" data-testid="diff-text">
          {lines.map((l, i) => (
            <div key={i} class={lineClass(l)}>
              {l || ' '}
            </div>
          ))}
        </pre>
      )}
    </details>
  );
}

/** The diff of session `id`, fetched again whenever `tick` changes (each turn's end). */
export function DiffPanel({ id, tick }) {
  const [diff, setDiff] = useState(null);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(false);
  const load = () => {
    setLoading(true);
    api
      .diff(id)
      .then((d) => {
        setDiff(d);
        setError(null);
      })
      .catch((e) => setError(e.message))
      .finally(() => setLoading(false));
  };
  useEffect(load, [id, tick]);
  const files = diff && Array.isArray(diff.files) ? diff.files : [];
  return (
    <section class="card diff-panel" data-testid="diff-panel">
      <div class="diff-head">
        <strong>Changes</strong>
        {diff && typeof diff.base === 'string' && <span class="muted mono small"> since {diff.base.slice(0, 8)}</span>}
        {loading && <span class="muted small"> (loading…)</span>}
        <span class="spacer" />
        <button type="button" class="link" onClick={load}>
          Refresh
        </button>{' '}
        <a class="button small-btn" data-testid="download-patch" href={`/api/sessions/${encodeURIComponent(id)}/diff?format=patch`} download>
          Download patch
        </a>
      </div>
      {error && (
        <p class="error-text" role="alert" data-testid="diff-error">
          {error}
        </p>
      )}
      {diff && diff.truncated && <p class="muted small">Some files are over the size limit: only their line counts are shown, and the patch download is refused.</p>}
      {diff && files.length === 0 && (
        <p class="muted" data-testid="diff-empty">
          No changes since the session started.
        </p>
      )}
      {files.map((f, i) => (
        <FileDiff key={`${i}:${f.path}`} f={f} />
      ))}
    </section>
  );
}
