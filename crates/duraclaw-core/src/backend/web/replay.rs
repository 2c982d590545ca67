//! What both hosts send a browser that opens a session's stream or asks
//! for older history (`docs/protocol.md`, "Tail, pages and compacted
//! ranges"): where a tail starts, the backward pages, and the compaction of
//! a closed message's deltas into one `compacted` range.
//!
//! The [`Compactor`] is sans-IO; [`tail`] and [`page`] read through a
//! [`SessionStore`] and nothing else, so both hosts call the same code.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use serde::Deserialize;

use crate::error::Result;
use crate::protocol::{Epoch, MAX_FRAME_BYTES, Seq, WireError, browser_event_frame};
use crate::store::{MAX_PAGE, SessionStore, StoredEvent};

/// The most events a `tail=<n>` asks for.
pub const MAX_TAIL: u64 = 2000;
/// How far before the last n events a tail looks for the start of their
/// turn.
pub const TAIL_LOOKBACK: u64 = 500;
/// The most events one `page` request asks for.
pub const MAX_PAGE_LIMIT: u64 = 2000;
/// How far past a page's end the server reads to find the finals of the
/// page's last deltas (a delta whose final lies further is sent as is).
pub const PAGE_LOOKAHEAD: u64 = 512;
/// The most events a [`Compactor`] holds back waiting for a final; past it
/// the oldest held delta is sent as is.
pub const MAX_HELD: usize = 4096;
/// The most bytes of items one `page` frame carries: a page over it covers
/// fewer events (its `first` says where it starts).
pub const PAGE_BYTES: usize = MAX_FRAME_BYTES;

/// Where a session stream starts, from its URL query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every event with seq > the value (`after=<seq>`, the default 0).
    After(Seq),
    /// The tail: at least the last n events, from the start of a turn when
    /// one lies close before them (`tail=<n>`).
    Tail(u64),
}

/// A session stream's query: where it starts and whether closed messages
/// are compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamQuery {
    /// Where the replay starts.
    pub start: Start,
    /// Replay a closed message as one `compacted` range (the default);
    /// `compact=0` asks for every event.
    pub compact: bool,
    /// Send the replay and pages as raw DEFLATE binary frames
    /// (`compress=deflate-raw`, see [`super::deflate`]).
    pub deflate: bool,
    /// The epoch of the log the client's copy up to `after` came from
    /// (`epoch=<16 hex digits>`, the snapshot's `epoch`).
    pub epoch: Option<Epoch>,
}

/// Parses a session stream's query parameters (`after`, `tail`,
/// `compact`, `compress`, `epoch`; others are ignored). The error is the message of the `400`.
pub fn parse_stream_query<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> std::result::Result<StreamQuery, String> {
    let mut after = None;
    let mut tail = None;
    let mut compact = true;
    let mut deflate = false;
    let mut epoch = None;
    for (k, v) in pairs {
        match k {
            "after" => {
                after = Some(v.parse::<Seq>().map_err(|_| {
                    format!("after must be a non-negative integer (a seq), not {v:?}")
                })?);
            }
            "tail" => {
                let n = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=MAX_TAIL).contains(n))
                    .ok_or_else(|| {
                        format!("tail must be an integer from 1 to {MAX_TAIL}, not {v:?}")
                    })?;
                tail = Some(n);
            }
            "compact" => {
                compact = match v {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(format!("compact must be 0 or 1, not {v:?}")),
                };
            }
            "compress" => {
                if v != super::deflate::DEFLATE_RAW {
                    return Err(format!(
                        "compress must be {}, not {v:?}",
                        super::deflate::DEFLATE_RAW
                    ));
                }
                deflate = true;
            }
            "epoch" => {
                epoch = Some(Epoch::parse(v).ok_or_else(|| {
                    format!(
                        "epoch must be 1 to 16 hexadecimal digits (a snapshot's epoch), not {v:?}"
                    )
                })?);
            }
            _ => {}
        }
    }
    let start = match (after, tail) {
        (Some(_), Some(_)) => {
            return Err("give after=<seq> or tail=<n>, not both".into());
        }
        (_, Some(n)) => Start::Tail(n),
        (a, None) => Start::After(a.unwrap_or(0)),
    };
    Ok(StreamQuery {
        start,
        compact,
        deflate,
        epoch,
    })
}

/// What a replay sends for some events: one event, or a compacted range.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayItem {
    /// An event as logged.
    Event(StoredEvent),
    /// Events `first..=last` are deltas of messages whose final comes later
    /// in the log; when `event` is given it is the event at `last` (the
    /// final that closes them), sent in their place.
    Compacted {
        /// The first seq covered.
        first: Seq,
        /// The last seq covered.
        last: Seq,
        /// The event at `last`, if it is not a superseded delta.
        event: Option<StoredEvent>,
    },
}

impl ReplayItem {
    /// The first seq this item covers.
    pub fn first(&self) -> Seq {
        match self {
            ReplayItem::Event(e) => e.seq,
            ReplayItem::Compacted { first, .. } => *first,
        }
    }

    /// The last seq this item covers.
    pub fn last(&self) -> Seq {
        match self {
            ReplayItem::Event(e) => e.seq,
            ReplayItem::Compacted { last, .. } => *last,
        }
    }

    /// The browser frame: `event`, or `compacted` (byte-for-byte what
    /// serialising the typed `ToBrowser` frame gives).
    pub fn frame(&self) -> String {
        match self {
            ReplayItem::Event(e) => browser_event_frame(e.seq, &e.json),
            ReplayItem::Compacted { first, last, event } => {
                compacted_frame(*first, *last, event.as_ref().map(|e| &*e.json))
            }
        }
    }
}

/// The `compacted` frame for `first..=last`, with the event at `last`.
pub fn compacted_frame(first: Seq, last: Seq, event_json: Option<&str>) -> String {
    let mut s = String::with_capacity(64 + event_json.map_or(0, str::len));
    s.push_str("{\"type\":\"compacted\",\"first\":");
    s.push_str(&first.to_string());
    s.push_str(",\"last\":");
    s.push_str(&last.to_string());
    if let Some(json) = event_json {
        s.push_str(",\"event\":");
        s.push_str(json);
    }
    s.push('}');
    s
}

/// What compaction needs to know of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Delta(String),
    Final(String),
    Other,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    phase: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message_id: Option<Cow<'a, str>>,
}

fn probe(json: &str) -> Option<Probe<'_>> {
    serde_json::from_str::<Probe<'_>>(json).ok()
}

fn kind(json: &str) -> Kind {
    match probe(json) {
        Some(Probe {
            kind,
            phase: Some(phase),
            message_id: Some(id),
        }) if kind == "assistant" => match phase.as_ref() {
            "delta" => Kind::Delta(id.into_owned()),
            "final" => Kind::Final(id.into_owned()),
            _ => Kind::Other,
        },
        _ => Kind::Other,
    }
}

/// Whether `json` is an event that starts a turn (`user.message`).
pub fn starts_turn(json: &str) -> bool {
    probe(json).is_some_and(|p| p.kind == "user.message")
}

struct Held {
    event: StoredEvent,
    delta_of: Option<String>,
    closes: bool,
}

/// Turns a replay's events, in seq order, into [`ReplayItem`]s: a delta
/// whose message's final comes later (up to the replay's end) is folded
/// into a `compacted` range, which carries the final when it follows the
/// deltas directly. Every seq pushed up to `end` is covered by exactly one
/// item, in order.
///
/// Events past `end` are read only to find finals (a backward page's
/// lookahead); they are never output.
pub struct Compactor {
    end: Seq,
    held: VecDeque<Held>,
    /// The seq of the latest final seen per message id, while deltas are
    /// held.
    finals: HashMap<String, Seq>,
    run: Option<(Seq, Seq)>,
    out: Vec<ReplayItem>,
    next: Option<Seq>,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor")
            .field("end", &self.end)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Compactor {
    /// A compactor for a replay that ends at seq `end`.
    pub fn new(end: Seq) -> Self {
        Compactor {
            end,
            held: VecDeque::new(),
            finals: HashMap::new(),
            run: None,
            out: Vec::new(),
            next: None,
        }
    }

    /// The replay's end.
    pub fn end(&self) -> Seq {
        self.end
    }

    /// Deltas are held waiting for their final.
    pub fn waiting(&self) -> bool {
        !self.held.is_empty()
    }

    /// The next seq this compactor expects (after the last pushed), if any
    /// was pushed.
    pub fn next_seq(&self) -> Option<Seq> {
        self.next
    }

    /// Takes the next event (seqs must come dense and in order; one out of
    /// order is ignored).
    pub fn push(&mut self, event: StoredEvent) {
        if self.next.is_some_and(|n| event.seq != n) {
            tracing::warn!(seq = event.seq, "replay: an event out of order ignored");
            return;
        }
        self.next = Some(event.seq + 1);
        let k = kind(&event.json);
        if event.seq > self.end {
            if let Kind::Final(id) = k
                && !self.held.is_empty()
            {
                self.finals.insert(id, event.seq);
                self.drain();
            }
            return;
        }
        match k {
            Kind::Delta(id) => self.held.push_back(Held {
                event,
                delta_of: Some(id),
                closes: false,
            }),
            other => {
                if self.held.is_empty() && self.run.is_none() {
                    self.out.push(ReplayItem::Event(event));
                    return;
                }
                let closes = matches!(other, Kind::Final(_));
                if let Kind::Final(id) = other {
                    self.finals.insert(id, event.seq);
                }
                self.held.push_back(Held {
                    event,
                    delta_of: None,
                    closes,
                });
            }
        }
        if self.held.len() > MAX_HELD {
            self.force_front();
        }
        self.drain();
    }

    fn superseded(&self, h: &Held) -> Option<bool> {
        let id = h.delta_of.as_ref()?;
        Some(self.finals.get(id).is_some_and(|f| *f > h.event.seq))
    }

    fn close_run(&mut self, event: Option<StoredEvent>) {
        if let Some((first, last)) = self.run.take() {
            match event {
                Some(e) => self.out.push(ReplayItem::Compacted {
                    first,
                    last: e.seq,
                    event: Some(e),
                }),
                None => self.out.push(ReplayItem::Compacted {
                    first,
                    last,
                    event: None,
                }),
            }
        } else if let Some(e) = event {
            self.out.push(ReplayItem::Event(e));
        }
    }

    /// Outputs what is decided from the front of what is held.
    fn drain(&mut self) {
        while let Some(front) = self.held.front() {
            match self.superseded(front) {
                Some(true) => {
                    let seq = front.event.seq;
                    self.held.pop_front();
                    self.run = Some(match self.run {
                        Some((first, _)) => (first, seq),
                        None => (seq, seq),
                    });
                }
                Some(false) => {
                    // Its final may still come: wait.
                    self.close_run(None);
                    break;
                }
                None => {
                    let Some(h) = self.held.pop_front() else {
                        break;
                    };
                    if h.closes {
                        self.close_run(Some(h.event));
                    } else {
                        self.close_run(None);
                        self.out.push(ReplayItem::Event(h.event));
                    }
                }
            }
        }
        if self.held.is_empty() {
            self.finals.clear();
        }
    }

    /// Sends the oldest held event as is (too much is held).
    fn force_front(&mut self) {
        self.close_run(None);
        if let Some(h) = self.held.pop_front() {
            self.out.push(ReplayItem::Event(h.event));
        }
    }

    /// The items decided so far.
    pub fn take(&mut self) -> Vec<ReplayItem> {
        std::mem::take(&mut self.out)
    }

    /// Ends the replay: every held event whose final never came goes out
    /// as is. Returns the last items.
    pub fn finish(mut self) -> Vec<ReplayItem> {
        self.drain();
        while self.waiting() {
            self.force_front();
            self.drain();
        }
        self.close_run(None);
        self.take()
    }
}

/// One event through a replay that may still be compacting: with a
/// compactor, the items it decided (and, once `event` reaches its end, the
/// rest, ending it); without, the event as is.
pub fn feed(compactor: &mut Option<Compactor>, event: StoredEvent) -> Vec<ReplayItem> {
    let Some(c) = compactor.as_mut() else {
        return vec![ReplayItem::Event(event)];
    };
    let done = event.seq >= c.end();
    c.push(event);
    let mut items = c.take();
    if done && let Some(c) = compactor.take() {
        items.extend(c.finish());
    }
    items
}

/// Compacts a complete range of events (`end` = its last seq).
pub fn compact_all(events: impl IntoIterator<Item = StoredEvent>, end: Seq) -> Vec<ReplayItem> {
    let mut c = Compactor::new(end);
    let mut out = Vec::new();
    for e in events {
        c.push(e);
        out.extend(c.take());
    }
    out.extend(c.finish());
    out
}

/// Reads the events `first..=last` (dense), a page at a time.
pub async fn read_range(
    store: &dyn SessionStore,
    first: Seq,
    last: Seq,
) -> Result<Vec<StoredEvent>> {
    let mut out = Vec::new();
    let mut after = first.saturating_sub(1);
    while after < last {
        let want = usize::try_from(last - after)
            .unwrap_or(MAX_PAGE)
            .min(MAX_PAGE);
        let page = store.read_after(after, want).await?;
        let Some(end) = page.last().map(|e| e.seq) else {
            break;
        };
        out.extend(page.into_iter().filter(|e| e.seq <= last));
        after = end;
    }
    Ok(out)
}

/// Where a tail starts and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Tail {
    /// The first seq the stream sends.
    pub first_seq: Seq,
    /// The seq of the `user.message` that started the current turn, when
    /// it lies in what was read.
    pub turn_start: Option<Seq>,
    /// The events `first_seq..=last_seq`.
    pub events: Vec<StoredEvent>,
}

/// Where a tail of `n` events of a log ending at `last_seq` starts, from
/// the `window` of events read before it (any dense range ending at
/// `last_seq`): at the latest `user.message` at or before the last `n`
/// events' first, when the window has one, else at that first.
pub fn tail_start(window: &[StoredEvent], last_seq: Seq, n: u64) -> (Seq, Option<Seq>) {
    let base = last_seq.saturating_sub(n).saturating_add(1).max(1);
    let mut first = None;
    let mut turn = None;
    for e in window.iter().rev() {
        if starts_turn(&e.json) {
            if turn.is_none() {
                turn = Some(e.seq);
            }
            if e.seq <= base {
                first = Some(e.seq);
                break;
            }
        }
    }
    (first.unwrap_or(base), turn)
}

/// Reads a tail of at least `n` events of a log ending at `last_seq`:
/// the window searched for a turn's start is [`TAIL_LOOKBACK`] events
/// before the last `n`.
pub async fn tail(store: &dyn SessionStore, last_seq: Seq, n: u64) -> Result<Tail> {
    if last_seq == 0 {
        return Ok(Tail {
            first_seq: 1,
            turn_start: None,
            events: Vec::new(),
        });
    }
    let from = last_seq
        .saturating_sub(n.saturating_add(TAIL_LOOKBACK))
        .saturating_add(1)
        .max(1);
    let window = read_range(store, from, last_seq).await?;
    let (first_seq, turn_start) = tail_start(&window, last_seq, n);
    let events = window.into_iter().filter(|e| e.seq >= first_seq).collect();
    Ok(Tail {
        first_seq,
        turn_start,
        events,
    })
}

/// A page request's range: the events `after+1..=before-1`, at most
/// `limit`, in a log ending at `last_seq`. The error is the page's.
pub fn page_range(
    before: Seq,
    limit: u64,
    last_seq: Seq,
) -> std::result::Result<(Seq, Seq), WireError> {
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(WireError::new(
            "invalid",
            format!("page: limit must be from 1 to {MAX_PAGE_LIMIT}, not {limit}"),
        ));
    }
    if before < 2 || before > last_seq.saturating_add(1) {
        return Err(WireError::new(
            "invalid",
            format!(
                "page: before must be from 2 to {} (one past this session's last seq), not {before}",
                last_seq.saturating_add(1)
            ),
        ));
    }
    let last = before - 1;
    let first = before.saturating_sub(limit).max(1);
    Ok((first, last))
}

/// A `page` frame: the answer to request `id`, covering `first..=last`.
/// `items` are frames (`event` / `compacted`).
pub fn page_frame(id: &str, first: Seq, last: Seq, items: &[String]) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
    let mut s = String::with_capacity(64 + items.iter().map(|i| i.len() + 1).sum::<usize>());
    s.push_str("{\"type\":\"page\",\"id\":");
    s.push_str(&id);
    s.push_str(",\"first\":");
    s.push_str(&first.to_string());
    s.push_str(",\"last\":");
    s.push_str(&last.to_string());
    s.push_str(",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(item);
    }
    s.push_str("]}");
    s
}

/// A `page` frame that refuses request `id`.
pub fn page_error_frame(id: &str, error: &WireError) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
    let error = serde_json::to_string(error).unwrap_or_else(|_| "{}".into());
    format!("{{\"type\":\"page\",\"id\":{id},\"error\":{error}}}")
}

/// Answers a page request: the frame to send (a page, or a page that
/// carries the error). Reads `before-limit..before-1`, then, when
/// compacting, up to [`PAGE_LOOKAHEAD`] events more for the finals of the
/// page's last deltas. Items over [`PAGE_BYTES`] are dropped from the old
/// end (the page's `first` says what it covers).
pub async fn page(
    store: &dyn SessionStore,
    id: &str,
    before: Seq,
    limit: u64,
    last_seq: Seq,
    compact: bool,
) -> String {
    let (first, last) = match page_range(before, limit, last_seq) {
        Ok(r) => r,
        Err(e) => return page_error_frame(id, &e),
    };
    match page_items(store, first, last, last_seq, compact).await {
        Ok(items) => {
            let mut frames: Vec<(Seq, String)> =
                items.iter().map(|i| (i.first(), i.frame())).collect();
            let mut bytes = 0usize;
            let mut keep = frames.len();
            for (i, (_, f)) in frames.iter().enumerate().rev() {
                if bytes + f.len() > PAGE_BYTES && keep < frames.len() {
                    break;
                }
                bytes += f.len();
                keep = i;
            }
            let frames = frames.split_off(keep);
            let first = frames.first().map_or(first, |(s, _)| *s);
            let texts: Vec<String> = frames.into_iter().map(|(_, f)| f).collect();
            page_frame(id, first, last, &texts)
        }
        Err(e) => {
            tracing::error!(error = %e, before, limit, "cannot read a page of the log");
            page_error_frame(id, &WireError::from(&e))
        }
    }
}

async fn page_items(
    store: &dyn SessionStore,
    first: Seq,
    last: Seq,
    last_seq: Seq,
    compact: bool,
) -> Result<Vec<ReplayItem>> {
    let events = read_range(store, first, last).await?;
    if let Some(e) = events.first().filter(|e| e.seq != first) {
        return Err(crate::Error::storage(
            "log",
            format!("the store returned seq {} for a page from {first}", e.seq),
        ));
    }
    if !compact {
        return Ok(events.into_iter().map(ReplayItem::Event).collect());
    }
    let mut c = Compactor::new(last);
    let mut out = Vec::new();
    for e in events {
        c.push(e);
        out.extend(c.take());
    }
    let horizon = last_seq.min(last.saturating_add(PAGE_LOOKAHEAD));
    let mut after = last;
    while c.waiting() && after < horizon {
        let want = usize::try_from(horizon - after)
            .unwrap_or(MAX_PAGE)
            .min(MAX_PAGE);
        let more = store.read_after(after, want).await?;
        let Some(end) = more.last().map(|e| e.seq) else {
            break;
        };
        for e in more {
            c.push(e);
            if !c.waiting() {
                break;
            }
        }
        out.extend(c.take());
        after = end;
    }
    out.extend(c.finish());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ev(seq: Seq, json: &str) -> StoredEvent {
        StoredEvent {
            seq,
            gseq: None,
            at_ms: 0,
            json: Arc::from(json),
        }
    }

    fn delta(seq: Seq, id: &str) -> StoredEvent {
        ev(
            seq,
            &format!(r#"{{"type":"assistant","message_id":"{id}","phase":"delta","text":"x"}}"#),
        )
    }

    fn fin(seq: Seq, id: &str) -> StoredEvent {
        ev(
            seq,
            &format!(r#"{{"type":"assistant","message_id":"{id}","phase":"final","text":"xx"}}"#),
        )
    }

    fn other(seq: Seq) -> StoredEvent {
        ev(seq, r#"{"type":"user.message","text":"hi"}"#)
    }

    fn shape(items: &[ReplayItem]) -> Vec<(Seq, Seq, bool)> {
        items
            .iter()
            .map(|i| match i {
                ReplayItem::Event(e) => (e.seq, e.seq, true),
                ReplayItem::Compacted { first, last, event } => (*first, *last, event.is_some()),
            })
            .collect()
    }

    #[test]
    fn a_closed_message_is_one_range_with_its_final() {
        let log = vec![
            other(1),
            delta(2, "a"),
            delta(3, "a"),
            fin(4, "a"),
            other(5),
        ];
        let items = compact_all(log, 5);
        assert_eq!(shape(&items), [(1, 1, true), (2, 4, true), (5, 5, true)]);
        assert!(
            items[1].frame().starts_with(
                r#"{"type":"compacted","first":2,"last":4,"event":{"type":"assistant""#
            )
        );
    }

    #[test]
    fn an_open_message_and_interleaved_deltas_keep_every_seq() {
        // b's deltas are cut by a's final; c never closes.
        let log = vec![
            delta(1, "b"),
            delta(2, "a"),
            fin(3, "a"),
            delta(4, "b"),
            fin(5, "b"),
            delta(6, "c"),
        ];
        let items = compact_all(log, 6);
        assert_eq!(shape(&items), [(1, 3, true), (4, 5, true), (6, 6, true)]);
        // Past the end: read for finals only.
        let mut c = Compactor::new(2);
        c.push(delta(1, "a"));
        c.push(delta(2, "a"));
        assert!(c.waiting());
        c.push(other(3));
        c.push(fin(4, "a"));
        assert!(!c.waiting());
        assert_eq!(shape(&c.finish()), [(1, 2, false)]);
    }

    #[test]
    fn a_message_longer_than_what_is_held_still_covers_every_seq_once() {
        let n = MAX_HELD as Seq + 10;
        let log = (1..=n).map(|s| delta(s, "a")).chain([fin(n + 1, "a")]);
        let items = compact_all(log, n + 1);
        let mut next = 1;
        for i in &items {
            assert_eq!(i.first(), next);
            next = i.last() + 1;
        }
        assert_eq!(next, n + 2);
        // The oldest went as they are; the rest with the final.
        assert!(matches!(
            items.last(),
            Some(ReplayItem::Compacted { event: Some(_), .. })
        ));
        assert!(items.len() < 20, "{} items", items.len());
    }

    #[test]
    fn queries_parse_and_bad_ones_say_why() {
        let q = |s: &[(&'static str, &'static str)]| parse_stream_query(s.iter().copied());
        assert_eq!(
            q(&[]),
            Ok(StreamQuery {
                start: Start::After(0),
                compact: true,
                deflate: false,
                epoch: None,
            })
        );
        assert_eq!(
            q(&[("after", "9"), ("epoch", "00000000000000aF")]).map(|q| q.epoch),
            Ok(Some(Epoch(0xaf)))
        );
        assert_eq!(
            q(&[
                ("tail", "50"),
                ("compact", "0"),
                ("compress", "deflate-raw")
            ]),
            Ok(StreamQuery {
                start: Start::Tail(50),
                compact: false,
                deflate: true,
                epoch: None,
            })
        );
        for (bad, word) in [
            (&[("after", "x")][..], "after"),
            (&[("tail", "0")][..], "tail"),
            (&[("tail", "99999")][..], "tail"),
            (&[("compact", "yes")][..], "compact"),
            (&[("compress", "gzip")][..], "compress must be deflate-raw"),
            (&[("after", "1"), ("tail", "2")][..], "not both"),
            (&[("after", "1"), ("epoch", "")][..], "epoch"),
            (&[("after", "1"), ("epoch", "0x12")][..], "epoch"),
            (&[("after", "1"), ("epoch", "+12")][..], "epoch"),
            (
                &[("after", "1"), ("epoch", "11112222333344445")][..],
                "epoch",
            ),
            (&[("after", "1"), ("epoch", "\u{202e}12")][..], "epoch"),
        ] {
            let e = q(bad).unwrap_err();
            assert!(e.contains(word), "{e}");
        }
    }

    #[test]
    fn a_tail_starts_at_its_turn_when_one_is_near() {
        let log: Vec<_> = (1..=10)
            .map(|s| {
                if s == 4 || s == 9 {
                    other(s)
                } else {
                    delta(s, "m")
                }
            })
            .collect();
        assert_eq!(tail_start(&log, 10, 3), (4, Some(9)));
        assert_eq!(tail_start(&log[6..], 10, 3), (8, Some(9)));
        assert_eq!(tail_start(&[], 0, 3), (1, None));
        assert!(page_range(1, 10, 5).is_err());
        assert!(page_range(7, 10, 5).is_err());
        assert!(page_range(3, 0, 5).is_err());
        assert_eq!(page_range(6, 3, 5), Ok((3, 5)));
        assert_eq!(page_range(3, 10, 5), Ok((1, 2)));
    }

    #[test]
    fn built_frames_are_what_the_typed_frames_encode() {
        use crate::protocol::{Page, ToBrowser, decode_frame, encode_frame};
        let items = compact_all(vec![delta(1, "a"), fin(2, "a"), other(3)], 3);
        let frames: Vec<String> = items.iter().map(ReplayItem::frame).collect();
        let built = page_frame("p\"1", 1, 3, &frames);
        let typed: ToBrowser = decode_frame(&built, "page").unwrap();
        assert_eq!(encode_frame(&typed).unwrap(), built);
        let ToBrowser::Page(Page {
            items, first, last, ..
        }) = typed
        else {
            panic!("{built}")
        };
        assert_eq!((first, last, items.len()), (Some(1), Some(3), 2));
        let err = page_error_frame("x", &WireError::new("invalid", "no"));
        let typed: ToBrowser = decode_frame(&err, "page").unwrap();
        assert_eq!(encode_frame(&typed).unwrap(), err);
        let bare = compacted_frame(4, 9, None);
        let typed: ToBrowser = decode_frame(&bare, "compacted").unwrap();
        assert_eq!(encode_frame(&typed).unwrap(), bare);
    }
}
