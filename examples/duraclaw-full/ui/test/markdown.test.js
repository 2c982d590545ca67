import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JSDOM } from 'jsdom';

// DOMPurify needs a DOM: the page's, or jsdom's here.
const { window } = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = window;
const { highlighter, isRendererClass, keepRendererClasses, quickBlockRules, renderMarkdown, sanitize } = await import('../src/markdown.js');
const { Marked } = await import('marked');

/** The rendered HTML as a document fragment. */
function dom(html) {
  const t = window.document.createElement('template');
  t.innerHTML = html;
  return t.content;
}

const classes = (frag) => [...frag.querySelectorAll('[class]')].flatMap((e) => [...e.classList]);

test('a fake approval card in assistant Markdown keeps none of the app classes', () => {
  const fake =
    '<div class="question permission open"><div class="q-head"><span class="q-icon">!</span> Allow <b>Bash</b>?</div>' +
    '<pre class="term cmd">ls</pre><a class="button primary" href="https://example.com/x">Approve</a>' +
    '<span class="banner bad tool card pending">x</span></div>';
  const frag = dom(renderMarkdown(fake));
  assert.deepEqual(classes(frag), [], renderMarkdown(fake));
  // The text is still there, as plain content.
  assert.match(frag.textContent, /Allow Bash\?/);
  assert.match(frag.textContent, /Approve/);
});

test('code shows as plain text until the highlighter is loaded, then highlighted', async () => {
  const src = '```rust\nfn main() { let x = "<b>s</b>"; }\n```\n';
  assert.equal(highlighter.current(), null, 'loaded before any code asked for it');
  const before = dom(renderMarkdown(src));
  // The same box and classes, the code escaped and not yet coloured.
  assert.deepEqual(classes(before), ['md-code', 'hljs', 'language-rust']);
  assert.equal(before.querySelector('code').textContent, 'fn main() { let x = "<b>s</b>"; }');
  // Rendering it started the load; the memoised plain rendering is dropped.
  await highlighter.load();
  const after = classes(dom(renderMarkdown(src)));
  assert.ok(after.some((c) => c.startsWith('hljs-')), after.join(' '));
});

test('the classes the renderer adds for code survive', async () => {
  await highlighter.load();
  const frag = dom(renderMarkdown('```rust\nfn main() { let x = "s"; }\n```\n\n- [x] done\n- [ ] todo\n'));
  const cls = classes(frag);
  assert.ok(cls.includes('hljs'), cls.join(' '));
  assert.ok(cls.includes('language-rust'), cls.join(' '));
  assert.ok(cls.includes('md-code'), cls.join(' '));
  assert.ok(cls.some((c) => c.startsWith('hljs-')), cls.join(' '));
  assert.ok(cls.includes('md-task') && cls.includes('md-done'), cls.join(' '));
  assert.ok(cls.every(isRendererClass), cls.join(' '));
});

test('a mixed class attribute keeps only the renderer classes', () => {
  assert.equal(keepRendererClasses('hljs question language-js primary hljs-string md-task'), 'hljs language-js hljs-string md-task');
  assert.equal(keepRendererClasses('button primary'), '');
  const frag = dom(sanitize('<span class="hljs-keyword button">fn</span><code class="language-x question">y</code>'));
  assert.deepEqual(classes(frag), ['hljs-keyword', 'language-x']);
});

test('attributes that load a URL or paint a box are dropped', () => {
  const html =
    '<table background="http://127.0.0.1:9/t.png" bgcolor="#2563eb" width="90" height="30" border="0"><tr>' +
    '<td background="http://127.0.0.1:9/c.png" bgcolor="#2563eb">Approve</td></tr></table>' +
    '<video poster="http://127.0.0.1:9/p.png"></video><a href="https://example.com" ping="http://127.0.0.1:9/ping">x</a>' +
    '<img srcset="http://127.0.0.1:9/i.png 1x"><source srcset="http://127.0.0.1:9/s.png">' +
    '<a xlink:href="http://127.0.0.1:9/xl">y</a><p role="alert" aria-live="assertive" style="color:red" id="q-1">z</p>';
  const out = sanitize(html);
  for (const attr of ['background', 'bgcolor', 'width', 'height', 'border', 'poster', 'srcset', 'ping', 'xlink:href', 'role', 'aria-live', 'style', 'id']) {
    assert.ok(!new RegExp(`\\s${attr}=`, 'i').test(out), `${attr} in ${out}`);
  }
  assert.doesNotMatch(out, /127\.0\.0\.1:9/);
  // Links keep their address and open elsewhere, without a referrer.
  assert.match(out, /<a href="https:\/\/example.com" target="_blank" rel="noopener noreferrer nofollow">x<\/a>/);
});

test('elements that draw over the page or look like form controls are dropped', () => {
  const out = sanitize('<dialog open>Approve?</dialog><button class="primary">Approve</button><fieldset><legend>q</legend><label>l</label></fieldset><font color="red" size="7">big</font>');
  assert.doesNotMatch(out, /<(dialog|button|fieldset|legend|label|font)\b/i, out);
});

test("the quick block rules give marked's own tokens", () => {
  // Lines that start, continue or almost start every block rule.
  const lines = [
    'plain words and more words',
    '> a quote',
    '  > an indented quote',
    '    > code, not a quote',
    '<div class="x">',
    '</div>',
    '<!-- a comment -->',
    '  <span>inline html</span>',
    'a < b and c > d',
    '[ref]: http://example.com "title"',
    '   [ref2]: <http://example.com>',
    '[not a def] here',
    '| a | b |',
    '|---|---|',
    'a | b',
    '--- | ---',
    ':-- | --:',
    '- item',
    '1. first',
    '---',
    '===',
    '  ---  ',
    'Heading',
    '# atx',
    '```',
    '~~~js',
    '    indented code',
    '',
    '',
    '*emphasis* and `code` and **strong**',
    '\t> tab quote',
    '-',
    '=',
    '|',
    ' | x |',
    '   ',
    'a line with two trailing spaces  ',
    'one more line of prose, with a | pipe and a <tag>',
  ];
  let seed = 7;
  const next = (n) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const base = new Marked({ gfm: true, breaks: false });
  const quick = new Marked({ gfm: true, breaks: false, tokenizer: quickBlockRules });
  for (let i = 0; i < 3000; i++) {
    const doc = Array.from({ length: 1 + next(8) }, () => lines[next(lines.length)]).join('\n');
    assert.deepEqual(quick.lexer(doc), base.lexer(doc), `tokens differ for ${JSON.stringify(doc)}`);
  }
  // And what each test is for: a block that cannot start the rule skips it.
  for (const [rule, src] of [
    ['blockquote', 'words'],
    ['html', 'words < more'],
    ['def', 'words [x]: y'],
    ['table', 'a | b\nno delimiter'],
    ['lheading', 'no underline\nat all'],
  ]) {
    assert.equal(quickBlockRules[rule](src), undefined, rule);
  }
  assert.equal(quickBlockRules.table('a | b\n--|--'), false, 'a possible table goes to marked');
  assert.equal(quickBlockRules.lheading('Title\n==='), false, 'a possible setext heading goes to marked');
  assert.equal(quickBlockRules.paragraph.call({}, 'two\nlines'), false, 'a paragraph that may go on goes to marked');
});
