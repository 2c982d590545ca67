// Characters that make text read differently from what it is. A tool call's
// fields come from the model (or whatever it read), so before a person
// decides on one, these are shown as visible escapes such as ⟨U+2067⟩:
// direction changes (a command that reads as commented out but is not),
// zero-width and other invisible characters, control characters (ESC, CR,
// …) and characters that look blank (a command padded until its end is off
// screen). CSS cannot do this: bidi reordering happens whatever the styles.

// Control (Cc), format (Cf: bidi controls, zero-width, U+FEFF, tags …),
// unassigned (Cn), private use (Co), lone surrogates (Cs), line and paragraph
// separators (Zl, Zp), variation selectors and other invisible marks, and
// letters or symbols that render as blank space.
const HIDDEN_SRC = [
  '[\\p{Cc}\\p{Cf}\\p{Cn}\\p{Co}\\p{Cs}\\p{Zl}\\p{Zp}]',
  '[\\u034F\\u115F\\u1160\\u17B4\\u17B5\\u180B-\\u180F\\u2800\\u3164\\uFE00-\\uFE0F\\uFFA0]',
  '[\\u{E0100}-\\u{E01EF}]',
].join('|');
const HIDDEN = new RegExp(`^(?:${HIDDEN_SRC})$`, 'u');
// The same, anywhere in a text: one-line (a tab stays) and multi-line (line feeds and tabs stay).
const ANY_ONE_LINE = new RegExp(`(?!\\t)(?:${HIDDEN_SRC})`, 'u');
const ANY_MULTILINE = new RegExp(`(?![\\n\\t])(?:${HIDDEN_SRC})`, 'u');
const SPACE_RUN = /(?! )(\p{Zs})\1/u;

// Spaces other than U+0020 (no-break, en, em, ideographic, …) are escaped
// when two or more stand together: one is typography, a run is padding.
const SPACE = /\p{Zs}/u;

/** The code point as "U+XXXX" (at least four hex digits). */
function uplus(cp) {
  return `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** Whether this one character is shown as an escape (`multiline`: \n and \t stay). */
export function isHidden(ch, multiline = false) {
  if (multiline && (ch === '\n' || ch === '\t')) return false;
  if (!multiline && ch === '\t') return false;
  return HIDDEN.test(ch);
}

/**
 * `text` split into parts: `{text}` to show as it is and `{escape}` for a
 * run of one hidden character (`escape` is "⟨U+2067⟩", or "⟨U+2800 ×2000⟩"
 * for a run). `multiline` keeps line feeds and tabs (commands, file
 * contents); otherwise a line feed is hidden too (paths, names, titles).
 */
export function revealParts(text, multiline = false) {
  const s = String(text ?? '');
  const parts = [];
  let plain = '';
  const chars = Array.from(s);
  for (let i = 0; i < chars.length; ) {
    const ch = chars[i];
    const hidden = isHidden(ch, multiline);
    const odd = !hidden && ch !== ' ' && SPACE.test(ch) && chars[i + 1] === ch;
    if (!hidden && !odd) {
      plain += ch;
      i++;
      continue;
    }
    let n = 1;
    while (chars[i + n] === ch) n++;
    if (plain) parts.push({ text: plain });
    plain = '';
    const cp = ch.codePointAt(0);
    parts.push({ escape: n > 1 ? `⟨${uplus(cp)} ×${n}⟩` : `⟨${uplus(cp)}⟩`, count: n });
    i += n;
  }
  if (plain) parts.push({ text: plain });
  return parts;
}

/** `text` with every hidden character as a visible escape. */
export function revealText(text, multiline = false) {
  return revealParts(text, multiline)
    .map((p) => (p.escape !== undefined ? p.escape : p.text))
    .join('');
}

/** Whether `text` has anything `revealText` would escape. */
export function hasHidden(text, multiline = false) {
  const s = String(text ?? '');
  return (multiline ? ANY_MULTILINE : ANY_ONE_LINE).test(s) || SPACE_RUN.test(s);
}

// Tool inputs do not change once logged: each is looked at once.
const seen = new WeakMap();

/**
 * Whether any string in `value` (a tool input: strings, arrays, objects,
 * their keys included) has a hidden character. Line feeds and tabs count
 * only in keys.
 */
export function anyHidden(value, depth = 0) {
  if (depth > 64) return false;
  if (typeof value === 'string') return hasHidden(value, true);
  if (!value || typeof value !== 'object') return false;
  if (seen.has(value)) return seen.get(value);
  const found = Array.isArray(value) ? value.some((v) => anyHidden(v, depth + 1)) : Object.entries(value).some(([k, v]) => hasHidden(k) || anyHidden(v, depth + 1));
  seen.set(value, found);
  return found;
}

/** The warning shown on a card whose fields have escapes. */
export const HIDDEN_WARNING = 'This request contains hidden or direction-changing characters, shown as ⟨U+…⟩.';
