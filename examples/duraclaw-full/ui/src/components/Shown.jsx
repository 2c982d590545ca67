import { anyHidden, HIDDEN_WARNING, revealParts } from '../reveal.js';

/**
 * Text from the model (or from anything it read), with hidden, direction-
 * changing and control characters shown as visible escapes (reveal.js).
 * `multiline` keeps line feeds and tabs.
 */
export function Shown({ text, multiline }) {
  return revealParts(text, multiline).map((p, i) =>
    p.escape !== undefined ? (
      <span class="esc" key={i} data-testid="escape">
        {p.escape}
      </span>
    ) : (
      p.text
    ),
  );
}

/** The warning line of a card any of whose `values` has an escape; or nothing. */
export function HiddenWarning({ values }) {
  if (!values.some((v) => anyHidden(v))) return null;
  return (
    <p class="hidden-warning" role="alert" data-testid="hidden-warning">
      <span aria-hidden="true">⚠ </span>
      {HIDDEN_WARNING}
    </p>
  );
}
