// Markdown and code rendering. Assistant text and tool output are untrusted:
// everything that becomes HTML goes through DOMPurify last.
import { Marked } from 'marked';
import DOMPurify from 'dompurify';
import { lazyModule } from './lazy.js';

/**
 * highlight.js, loaded on first use (its own chunk): until it is there code
 * is shown as escaped plain text in the same box, and components that call
 * `highlighter.use()` render again, highlighted, once it arrives.
 */
export const highlighter = lazyModule(() =>
  import('./highlighter.js').then((m) => {
    // Rendered Markdown kept from before holds unhighlighted code.
    cache.clear();
    return m.default;
  }),
);

const EXT_LANG = {
  rs: 'rust',
  ts: 'typescript',
  tsx: 'typescript',
  mts: 'typescript',
  cts: 'typescript',
  js: 'javascript',
  jsx: 'javascript',
  mjs: 'javascript',
  cjs: 'javascript',
  py: 'python',
  sh: 'bash',
  bash: 'bash',
  zsh: 'bash',
  json: 'json',
  diff: 'diff',
  patch: 'diff',
  toml: 'toml',
  yml: 'yaml',
  yaml: 'yaml',
  go: 'go',
  lock: 'toml',
  ini: 'ini',
};

/** The languages `highlighter.js` registers, with their aliases. */
const KNOWN_LANGS = new Set([...Object.values(EXT_LANG), 'sh', 'shell', 'console', 'zsh']);

/** The highlight.js language for a file path, or null. */
export function langForPath(path) {
  if (typeof path !== 'string') return null;
  const m = /\.([A-Za-z0-9]+)$/.exec(path);
  return (m && EXT_LANG[m[1].toLowerCase()]) || null;
}

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
/** HTML-escapes text. */
export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ESC[c]);
}

/** Highlighted HTML for code in `lang` (escaped plain text when unknown). */
export function highlight(code, lang) {
  const hljs = highlighter.current();
  if (!hljs) {
    if (lang) highlighter.load().catch(() => {});
    return escapeHtml(code);
  }
  const language = lang && hljs.getLanguage(lang) ? lang : null;
  if (!language) return escapeHtml(code);
  try {
    return hljs.highlight(code, { language, ignoreIllegals: true }).value;
  } catch {
    return escapeHtml(code);
  }
}

/**
 * Block rules that cannot match a block unless it starts (or, for a setext
 * heading, goes on) as this says: each test is the start of marked's own
 * rule. marked tries every block rule on every block, and its largest rules
 * (raw HTML, tables, setext headings, quotes) cost far more to compile, the
 * first time they run, than a screen of text costs to parse: a page's first
 * Markdown would pay for all of them. Where a test fails the rule is skipped
 * (`undefined`: no match, as marked's rule would find); where it passes,
 * marked's rule decides (`false`). Either way the tokens are marked's own
 * (`test/markdown.test.js` compares them over generated documents).
 */
const BLOCK_STARTS = {
  blockquote: /^ {0,3}>/,
  html: /^ {0,3}</,
  def: /^ {0,3}\[/,
  table: /^ *[^\n ].*\n {0,3}(?:\| *)?:?-/,
  lheading: /\n {0,3}(?:=+|-+)[ \t]*(?:\n|$)/,
};

/**
 * marked's tokenizer overrides for BLOCK_STARTS, and for a paragraph of one
 * line that ends the text or is followed by an empty line (most of what an
 * agent writes): that line alone, the token marked's paragraph rule (whose
 * test for what may interrupt a paragraph is its largest) would give.
 */
export const quickBlockRules = {
  ...Object.fromEntries(Object.entries(BLOCK_STARTS).map(([rule, start]) => [rule, (src) => (start.test(src) ? false : undefined)])),
  paragraph(src) {
    const end = src.indexOf('\n');
    const line = end < 0 ? src : src.slice(0, end);
    if (line.length && (end < 0 || end + 1 === src.length || src.charCodeAt(end + 1) === 10)) {
      return { type: 'paragraph', raw: line, text: line, tokens: this.lexer.inline(line) };
    }
    return false;
  },
};

const marked = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  tokenizer: quickBlockRules,
  renderer: {
    // Nothing is fetched from elsewhere: an image becomes its description
    // (a link when it has an address).
    image({ href, text }) {
      const label = `[image${text ? `: ${escapeHtml(text)}` : ''}]`;
      return /^https?:/i.test(href || '') ? `<a href="${escapeHtml(href)}">${label}</a>` : `<span class="md-img-ref">${label}</span>`;
    },
    checkbox({ checked }) {
      return checked ? '<span class="md-task md-done">☑</span> ' : '<span class="md-task">☐</span> ';
    },
    code({ text, lang }) {
      const language = (lang || '').trim().split(/\s+/)[0].toLowerCase();
      const hljs = highlighter.current();
      const known = hljs ? hljs.getLanguage(language) : KNOWN_LANGS.has(language);
      const cls = language && known ? ` class="hljs language-${escapeHtml(language)}"` : ' class="hljs"';
      return `<pre class="md-code"><code${cls}>${highlight(text, language)}</code></pre>\n`;
    },
  },
});

/**
 * Whether a class is one the renderer adds itself: highlight.js's `hljs…`,
 * `language-…`, and the renderer's `md-…`. Any other class in the Markdown
 * (e.g. the app's own `question permission open` or `button primary`) would
 * let the text borrow the app's styles and draw a fake approval card.
 */
export function isRendererClass(c) {
  return /^hljs(-[a-z0-9_-]+)?$/.test(c) || /^language-[a-z0-9_+#.-]+$/.test(c) || /^md-(code|img-ref|task|done)$/.test(c);
}

/** `value` with only the renderer's classes. */
export function keepRendererClasses(value) {
  return String(value ?? '')
    .split(/\s+/)
    .filter((c) => c && isRendererClass(c))
    .join(' ');
}

DOMPurify.addHook('uponSanitizeAttribute', (_node, data) => {
  if (data.attrName === 'class') {
    const kept = keepRendererClasses(data.attrValue);
    if (kept) data.attrValue = kept;
    else data.keepAttr = false;
  }
});

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

const PURIFY = {
  FORBID_TAGS: [
    'img',
    'picture',
    'video',
    'audio',
    'source',
    'style',
    'form',
    'input',
    'button',
    'textarea',
    'select',
    'iframe',
    'object',
    'embed',
    'svg',
    'math',
    // Boxes that draw themselves or sit over the page.
    'dialog',
    'marquee',
    'font',
    'center',
    'fieldset',
    'legend',
    'label',
    'meter',
    'progress',
  ],
  FORBID_ATTR: [
    'style',
    'id',
    'name',
    'role',
    // Load a URL when the page's policy allows it.
    'background',
    'poster',
    'srcset',
    'ping',
    'xlink:href',
    // Paint a box the size and colour of a button.
    'bgcolor',
    'color',
    'width',
    'height',
    'border',
  ],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
};

/** Sanitises untrusted HTML. */
export function sanitize(html) {
  return DOMPurify.sanitize(html, PURIFY);
}

const cache = new Map();
const CACHE_MAX = 300;

/** Safe HTML for a Markdown text (memoised, since streamed text re-renders). */
export function renderMarkdown(text) {
  const src = String(text ?? '');
  const hit = cache.get(src);
  if (hit !== undefined) return hit;
  let html;
  try {
    html = sanitize(marked.parse(src));
  } catch {
    html = `<pre>${escapeHtml(src)}</pre>`;
  }
  if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value);
  cache.set(src, html);
  return html;
}
