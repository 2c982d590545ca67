// The session transcript as a plain model, independent of the DOM: events go
// in by seq (each applied once, in order), items come out for rendering. It
// may start at a tail (the snapshot's `first_seq`); older pages go in with
// `prepend`, which rebuilds the items from every record held, in seq order.
// A `compacted` range (docs/protocol.md) covers a run of seqs: the deltas a
// final replaced, and the final itself when it carries one.

/** Session states that mean a turn is running and can be aborted. */
export function isRunning(state, reason) {
  return state === 'active' || state === 'initializing' || (state === 'paused' && (reason === 'awaiting_approval' || reason === 'awaiting_answer'));
}

export class Transcript {
  constructor() {
    /** Rendered items, in order. Items are mutated in place; `version` counts changes. */
    this.items = [];
    /** Seqs applied, in order (exposed to end-to-end tests). */
    this.seqs = [];
    this.lastSeq = 0;
    /** The lowest seq held (0: none yet); older ones come by `prepend`. */
    this.firstSeq = 0;
    /** What was applied, in seq order: {first, last, ev, has} (has: an event at `last`). */
    this.records = [];
    /** The last snapshot's pending questions (shown again after a rebuild when still open). */
    this.snapAll = [];
    /** Whether a `result` was applied (a tail's first one has no turn cost). */
    this.sawResult = false;
    this.gaps = [];
    this.version = 0;
    this.state = null;
    this.reason = null;
    this.cost = 0;
    this.byMessage = new Map();
    this.byTool = new Map();
    this.byQuestion = new Map();
    this.snapPending = null;
    this.snapSeq = 0;
    /** The executor's working directory, from `session.init`. */
    this.cwd = null;
    /** The session's worktree as its `worktree` notice records it. */
    this.worktree = null;
    /** The permission mode and model in force: `session.init`, then `mode_changed`/`model_changed` notices. */
    this.mode = null;
    this.model = null;
    /** Queued messages whose turn has not started yet, oldest first. */
    this.waiting = [];
    /** User messages whose turn has not ended, oldest first (a `result` ends the oldest). */
    this.openTurns = [];
    /** Whether a turn is under way (from its start to its `result`). */
    this.turnOpen = false;
  }

  /** Forgets everything (the copy was from another history); the next replay starts at seq 1. */
  reset() {
    Object.assign(this, new Transcript());
    this.version++;
  }

  /** Applies the snapshot frame: state, and pending questions not yet shown. */
  applySnapshot(snap) {
    this.state = snap.state ?? this.state;
    this.reason = snap.reason ?? null;
    // The replay that follows normally carries each pending question's own
    // event; only questions still missing once it reaches the snapshot's
    // last seq are shown from the snapshot.
    this.snapPending = Array.isArray(snap.pending) ? snap.pending : [];
    this.snapAll = this.snapPending;
    this.snapSeq = Number.isSafeInteger(snap.last_seq) ? snap.last_seq : 0;
    // A fresh copy starting at a tail: older history comes by pages.
    if (this.lastSeq === 0 && this.records.length === 0 && Number.isSafeInteger(snap.first_seq) && snap.first_seq >= 1) {
      this.firstSeq = snap.first_seq;
      this.lastSeq = snap.first_seq - 1;
    }
    if (this.lastSeq >= this.snapSeq) this.flushSnapshot();
    this.version++;
  }

  flushSnapshot() {
    const pending = this.snapPending || [];
    this.snapPending = null;
    for (const q of pending) {
      if (!q || typeof q.question_id !== 'string' || this.byQuestion.has(q.question_id)) continue;
      const item = { kind: 'question', seq: null, key: `q:${q.question_id}`, q: { type: 'user_question', ...q }, resolved: null, resolvedSeq: null };
      this.byQuestion.set(q.question_id, item);
      this.place(item);
    }
  }

  /**
   * Applies one event with its seq. A seq at or below the last applied one is
   * ignored (replays after a reconnect may overlap); returns whether applied.
   */
  apply(seq, ev) {
    return this.applyRange(seq, seq, ev, true);
  }

  /**
   * Applies seqs `first..=last`: a `compacted` range (with `has`, the event
   * at `last`), or one event (first = last). Returns whether applied.
   */
  applyRange(first, last, ev, has) {
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(last) || last < first || last <= this.lastSeq) return false;
    if (first <= this.lastSeq) first = this.lastSeq + 1;
    if (this.lastSeq !== 0 && first !== this.lastSeq + 1) this.gaps.push([this.lastSeq, first]);
    if (this.firstSeq === 0) this.firstSeq = first;
    this.lastSeq = last;
    for (let s = first; s <= last; s++) this.seqs.push(s);
    this.records.push({ first, last, ev, has });
    this.version++;
    if (has) {
      const e = ev && typeof ev === 'object' ? ev : { type: '(not an object)', value: ev };
      this.turns(e);
      // A message replayed as a range starts where its deltas did, as it
      // does when it streams live.
      if (e.type === 'assistant' && first < last) this.assistant(first, e, last);
      else this.applyEvent(last, e);
    }
    if (this.snapPending && last >= this.snapSeq) this.flushSnapshot();
    return true;
  }

  /** Whether history older than what is held exists. */
  hasOlder() {
    return this.firstSeq > 1;
  }

  /**
   * Puts an older page (`first..=last`, its `event`/`compacted` frames) in
   * front: it must end right before `firstSeq` and cover its range. The items
   * are rebuilt from every record, in order; the session's state stays what
   * the stream said. Returns whether the page went in.
   */
  prepend(first, last, frames) {
    if (!Number.isSafeInteger(first) || first < 1 || this.firstSeq === 0 || last !== this.firstSeq - 1 || !Array.isArray(frames)) return false;
    const older = [];
    let at = first;
    for (const f of frames) {
      const r = recordOf(f);
      if (!r || r.first !== at) return false;
      older.push(r);
      at = r.last + 1;
    }
    if (at !== last + 1) return false;
    const n = new Transcript();
    n.firstSeq = first;
    n.lastSeq = first - 1;
    for (const r of older.concat(this.records)) n.applyRange(r.first, r.last, r.ev, r.has);
    n.snapshotAgain(this);
    const version = this.version + 1;
    Object.assign(this, n);
    this.version = version;
    return true;
  }

  /** After a rebuild: the state `old` had, and its snapshot's questions still open. */
  snapshotAgain(old) {
    this.state = old.state;
    this.reason = old.reason;
    this.gaps = old.gaps.slice();
    this.snapSeq = old.snapSeq;
    this.snapAll = old.snapAll;
    const resolved = new Set(this.items.filter((i) => i.kind === 'resolved').map((i) => i.ev && i.ev.question_id));
    this.snapPending = old.snapPending === null ? this.snapAll.filter((q) => q && !resolved.has(q.question_id)) : old.snapPending;
    if (old.snapPending === null) this.flushSnapshot();
  }

  /**
   * Follows where turns start and end. A turn that starts with no message
   * of its own (after a `result`: `active`, `session.init` or the agent's
   * work) is the oldest queued message's.
   */
  turns(e) {
    if (e.type === 'result' || (e.type === 'session.state' && ((e.state === 'paused' && e.reason === 'idle') || e.state === 'terminated'))) {
      this.turnOpen = false;
    } else if (e.type === 'user.message') {
      if (e.queued !== true) this.turnOpen = true;
    } else if (!this.turnOpen && ((e.type === 'session.state' && e.state === 'active') || TURN_WORK.has(e.type))) {
      this.turnOpen = true;
      const next = this.waiting.shift();
      if (next) next.taken = true;
    }
  }

  applyEvent(seq, e) {
    switch (e.type) {
      case 'user.message': {
        // Sent while a turn ran: the agent takes it when that turn ends.
        const item = { kind: 'user', seq, key: `s${seq}`, text: str(e.text), by: e.by, queued: e.queued === true, taken: false };
        if (item.queued) this.waiting.push(item);
        this.openTurns.push(item);
        this.items.push(item);
        break;
      }
      case 'assistant':
        this.assistant(seq, e);
        break;
      case 'tool_use': {
        const item = { kind: 'tool', seq, key: `s${seq}`, id: e.tool_use_id, name: str(e.name), input: e.input ?? {}, result: null };
        if (typeof e.tool_use_id === 'string') this.byTool.set(e.tool_use_id, item);
        this.items.push(item);
        break;
      }
      case 'tool_result': {
        const tool = this.byTool.get(e.tool_use_id);
        const result = { seq, content: e.content, is_error: !!e.is_error };
        if (tool && !tool.result) tool.result = result;
        else this.items.push({ kind: 'tool', seq, key: `s${seq}`, id: e.tool_use_id, name: null, input: null, result, orphan: true });
        break;
      }
      case 'user_question': {
        const existing = this.byQuestion.get(e.question_id);
        if (existing && existing.seq === null) {
          // Shown from the snapshot before its event arrived: adopt the event.
          existing.seq = seq;
          existing.q = e;
          break;
        }
        const item = { kind: 'question', seq, key: `s${seq}`, q: e, resolved: null, resolvedSeq: null };
        if (typeof e.question_id === 'string') this.byQuestion.set(e.question_id, item);
        this.place(item);
        break;
      }
      case 'question.resolved': {
        const q = this.byQuestion.get(e.question_id);
        if (q && !q.resolved) {
          q.resolved = e;
          q.resolvedSeq = seq;
        } else if (q && q.resolved.decision === e.decision) {
          // The same decision logged again (e.g. once when decided, once when
          // the executor applied it): nothing new to show.
          this.items.push({ kind: 'resolved', seq, key: `s${seq}`, ev: e, repeat: true });
        } else {
          this.items.push({ kind: 'resolved', seq, key: `s${seq}`, ev: e });
        }
        break;
      }
      case 'result': {
        const total = num(e.cost_usd);
        let turnCost = null;
        // A tail's first result: the turns before it are not held.
        const known = this.sawResult || this.firstSeq <= 1;
        if (total !== null) {
          if (known) turnCost = total >= this.cost ? total - this.cost : total;
          this.cost = total;
        }
        this.sawResult = true;
        this.items.push({ kind: 'result', seq, key: `s${seq}`, ev: e, turnCost, totalCost: total });
        // Its message can be forked from (the fork carries this turn).
        const ended = this.openTurns.shift();
        if (ended) ended.turnEnded = true;
        break;
      }
      case 'error':
        this.items.push({ kind: 'error', seq, key: `s${seq}`, ev: e });
        break;
      case 'session.init':
        if (typeof e.cwd === 'string') this.cwd = e.cwd;
        if (typeof e.permission_mode === 'string') this.mode = e.permission_mode;
        if (typeof e.model === 'string') this.model = e.model;
        this.items.push({ kind: 'init', seq, key: `s${seq}`, ev: e });
        break;
      case 'notice': {
        // Where the session runs and its diff's base (the first event).
        if (e.code === 'worktree' && e.worktree && typeof e.worktree === 'object') this.worktree = e.worktree;
        if (e.code === 'mode_changed' && typeof e.permission_mode === 'string') this.mode = e.permission_mode;
        if (e.code === 'model_changed' && typeof e.model === 'string') this.model = e.model;
        // An automatic allow is shown on the card of the call it allowed.
        const tool = e.code === 'auto_allowed' && typeof e.tool_use_id === 'string' ? this.byTool.get(e.tool_use_id) : null;
        if (tool && !tool.autoAllowed) {
          tool.autoAllowed = { seq, ev: e };
          break;
        }
        // So is an approval rule's decision, naming the rule.
        const ruled = e.code === 'rule_decision' && typeof e.tool_use_id === 'string' ? this.byTool.get(e.tool_use_id) : null;
        if (ruled && !ruled.ruleDecision) {
          ruled.ruleDecision = { seq, ev: e };
          break;
        }
        this.items.push({ kind: 'notice', seq, key: `s${seq}`, ev: e });
        break;
      }
      // The gateway's older way of saying what a notice says.
      case 'cli.resume_failed':
        this.items.push({ kind: 'notice', seq, key: `s${seq}`, ev: e });
        break;
      case 'session.state':
        this.state = e.state ?? this.state;
        this.reason = e.reason ?? null;
        // Nothing takes a queued message after the session ended.
        if (e.state === 'terminated') {
          for (const m of this.waiting) m.ended = true;
          this.waiting = [];
        }
        this.items.push({ kind: 'state', seq, key: `s${seq}`, ev: e });
        break;
      default:
        this.items.push({ kind: 'unknown', seq, key: `s${seq}`, ev: e });
    }
  }

  /**
   * Shows a question inside the card of the tool call it is about (one card:
   * input, approval, result), or on its own when there is no such card.
   */
  place(item) {
    const tool = typeof item.q.tool_use_id === 'string' ? this.byTool.get(item.q.tool_use_id) : null;
    if (tool && !tool.question) {
      tool.question = item;
      item.inTool = tool;
    } else {
      this.items.push(item);
    }
  }

  assistant(seq, e, last = seq) {
    const id = typeof e.message_id === 'string' ? e.message_id : `seq-${seq}`;
    let item = this.byMessage.get(id);
    if (!item) {
      item = { kind: 'assistant', seq, key: `s${seq}`, id, text: '', final: false, aborted: false, lastSeq: last };
      this.byMessage.set(id, item);
      this.items.push(item);
    }
    item.lastSeq = last;
    seq = last;
    if (e.phase === 'final') {
      item.text = str(e.text);
      item.final = true;
      item.finalSeq = seq;
      item.aborted = !!e.aborted;
    } else if (!item.final) {
      item.text += str(e.text);
    }
  }

  /** Questions still waiting for a decision. */
  pending() {
    return [...this.byQuestion.values()].filter((i) => !i.resolved);
  }
}

/** A stream or page item as a record, or null when it is neither. */
function recordOf(f) {
  if (!f || typeof f !== 'object') return null;
  if (f.type === 'event' && Number.isSafeInteger(f.seq)) return { first: f.seq, last: f.seq, ev: f.event, has: true };
  if (f.type === 'compacted' && Number.isSafeInteger(f.first) && Number.isSafeInteger(f.last) && f.first <= f.last) {
    return { first: f.first, last: f.last, ev: f.event, has: 'event' in f };
  }
  return null;
}

/** Events that mean a turn is under way. */
const TURN_WORK = new Set(['session.init', 'assistant', 'tool_use', 'user_question']);

function str(v) {
  return typeof v === 'string' ? v : v == null ? '' : String(v);
}

function num(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}
