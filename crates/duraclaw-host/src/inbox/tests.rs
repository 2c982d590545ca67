#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use duraclaw_core::backend::migrate::Migrations;
use duraclaw_core::protocol::{
    DecidedBy, Decision, Event, QuestionResolved, StateChange, TurnResult,
};
use duraclaw_core::state::{PauseReason, SessionState};
use duraclaw_core::store::{SessionMeta, StoredEvent};
use duraclaw_store::SqliteConn;
use proptest::prelude::*;
use serde_json::json;

use super::*;

const BASE: u64 = 1_000_000;

fn meta(id: &str) -> SessionMeta {
    let mut m = SessionMeta::new(id, "alice", 10);
    m.title = format!("title of {id}");
    m.worktree = format!("/w/{id}");
    m
}

fn stored(seq: u64, at_ms: i64, event: &Event) -> StoredEvent {
    StoredEvent {
        seq,
        gseq: None,
        at_ms,
        json: serde_json::to_string(event).unwrap().into(),
    }
}

fn ask(q: &str) -> Event {
    Event::UserQuestion(UserQuestion::permission(
        q,
        format!("tu-{q}"),
        "Bash",
        json!({"command": "make"}),
    ))
}

fn resolved(q: &str) -> Event {
    Event::QuestionResolved(QuestionResolved {
        question_id: q.into(),
        decision: Decision::Allow {
            updated_input: None,
            remember: false,
        },
        by: DecidedBy::new("alice"),
        at_ms: 5,
    })
}

fn text() -> Event {
    Event::from_value(
        json!({"type": "assistant", "message_id": "m", "phase": "final", "text": "hi"}),
    )
    .unwrap()
}

fn state(s: SessionState) -> Event {
    Event::SessionState(StateChange { state: s })
}

#[test]
fn a_question_opens_and_resolves_with_its_session_changes() {
    let mut inbox = Inbox::new(BASE);
    let c = inbox.session(meta("s1"));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, BASE + 1);
    let c = inbox.events(
        "s1",
        &[
            stored(1, 20, &state(SessionState::Active)),
            stored(2, 21, &text()),
            stored(3, 22, &ask("q1")),
            stored(
                4,
                22,
                &state(SessionState::paused(PauseReason::AwaitingApproval)),
            ),
        ],
    );
    let kinds: Vec<_> = c.iter().map(|(_, ch)| ch.clone()).collect();
    assert!(
        matches!(&kinds[0], InboxChange::QuestionOpened { item } if item.question_id == "q1" && item.tool.as_deref() == Some("Bash") && item.worktree == "/w/s1" && item.opened_at_ms == 22)
    );
    match &kinds[1] {
        InboxChange::Session { session } => {
            assert_eq!(
                session.state,
                SessionState::paused(PauseReason::AwaitingApproval)
            );
            assert_eq!(session.pending_questions, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(inbox.items().len(), 1);

    let c = inbox.events(
        "s1",
        &[
            stored(5, 30, &resolved("q1")),
            stored(6, 30, &state(SessionState::Active)),
            stored(
                7,
                31,
                &Event::Result(TurnResult {
                    cost_usd: Some(0.5),
                    ..Default::default()
                }),
            ),
        ],
    );
    assert!(matches!(&c[0].1, InboxChange::QuestionResolved { by: Some(by), .. } if by == "alice"));
    assert!(
        matches!(&c[1].1, InboxChange::Session { session } if session.cost_usd == 0.5 && session.pending_questions == 0)
    );
    assert!(inbox.items().is_empty());
    // Text alone changes nothing the inbox shows.
    assert!(inbox.events("s1", &[stored(8, 40, &text())]).is_empty());
}

#[test]
fn an_ended_session_closes_its_questions_and_unknown_sessions_are_ignored() {
    let mut inbox = Inbox::new(BASE);
    inbox.session(meta("s1"));
    inbox.events("s1", &[stored(1, 1, &ask("q1")), stored(2, 1, &ask("q2"))]);
    assert_eq!(inbox.items().len(), 2);
    let c = inbox.events("s1", &[stored(3, 2, &state(SessionState::Terminated))]);
    assert_eq!(
        c.iter()
            .filter(|(_, ch)| matches!(ch, InboxChange::QuestionResolved { by: None, .. }))
            .count(),
        2
    );
    assert!(inbox.items().is_empty());
    assert!(
        inbox
            .events("nobody", &[stored(1, 1, &ask("q"))])
            .is_empty()
    );
    // The same question twice opens once.
    inbox.session(meta("s2"));
    inbox.events("s2", &[stored(1, 1, &ask("q"))]);
    assert!(inbox.events("s2", &[stored(1, 1, &ask("q"))]).is_empty());
}

#[test]
fn items_are_oldest_first_across_sessions() {
    let mut inbox = Inbox::new(BASE);
    inbox.session(meta("a"));
    inbox.session(meta("b"));
    inbox.events("b", &[stored(1, 5, &ask("qb"))]);
    inbox.events("a", &[stored(1, 9, &ask("qa"))]);
    let ids: Vec<_> = inbox.items().into_iter().map(|i| i.question_id).collect();
    assert_eq!(ids, ["qb", "qa"]);
}

#[test]
fn resume_rules() {
    let mut inbox = Inbox::new(BASE);
    inbox.session(meta("s1"));
    inbox.events("s1", &[stored(1, 1, &ask("q1"))]);
    let now = inbox.cursor();
    assert!(
        matches!(inbox.resume(None), Resume::Snapshot(s) if s.reason == SnapshotReason::Fresh && s.cursor == now && s.items.len() == 1)
    );
    assert!(matches!(inbox.resume(Some(now)), Resume::Changes(c) if c.is_empty()));
    assert!(matches!(inbox.resume(Some(BASE)), Resume::Changes(c) if c.len() as u64 == now - BASE));
    // From an earlier inbox (below the base): a snapshot, never a gap.
    assert!(
        matches!(inbox.resume(Some(3)), Resume::Snapshot(s) if s.reason == SnapshotReason::CursorExpired)
    );
    match inbox.resume(Some(now + 1)) {
        Resume::Refused(r) => {
            assert_eq!(
                (r.error.code.as_str(), r.close_code),
                ("ahead_of_log", 4409)
            );
        }
        other => panic!("{other:?}"),
    }
    // Past the retained window: expired.
    for i in 0..=MAX_RETAINED {
        let s = if i % 2 == 0 {
            SessionState::Active
        } else {
            SessionState::paused(PauseReason::Idle)
        };
        inbox.events("s1", &[stored(2 + i as u64, 2, &state(s))]);
    }
    assert!(
        matches!(inbox.resume(Some(now)), Resume::Snapshot(s) if s.reason == SnapshotReason::CursorExpired)
    );
    assert!(
        matches!(inbox.resume(Some(inbox.floor())), Resume::Changes(c) if c.len() == MAX_RETAINED)
    );
}

#[test]
fn frames_and_after() {
    assert_eq!(parse_after(None), Ok(None));
    assert_eq!(parse_after(Some("12")), Ok(Some(12)));
    for bad in ["-1", "x", "", "1.5", "99999999999999999999999"] {
        assert!(parse_after(Some(bad)).is_err(), "{bad}");
    }
    assert_eq!(
        answer(r#"{"type":"ping","nonce":7}"#).unwrap(),
        r#"{"type":"pong","nonce":7}"#
    );
    let bad: Value = serde_json::from_str(&answer("nope").unwrap()).unwrap();
    assert_eq!(
        (bad["type"].as_str(), bad["code"].as_str()),
        (Some("error"), Some("invalid"))
    );
    let mut inbox = Inbox::new(BASE);
    inbox.session(meta("s1"));
    let first = first_frames(&inbox, Some(BASE)).unwrap();
    let f: Value = serde_json::from_str(&first[0]).unwrap();
    assert_eq!(f["type"], "change");
    assert_eq!(f["cursor"], BASE + 1);
    assert_eq!(f["change"]["type"], "session");
    let end: Value = serde_json::from_str(&first[1]).unwrap();
    assert_eq!(end, json!({"type": "resumed", "cursor": BASE + 1}));
    assert_eq!(first.len(), 2);
    let snap: Value = serde_json::from_str(&first_frames(&inbox, None).unwrap()[0]).unwrap();
    assert_eq!(
        (snap["type"].as_str(), snap["reason"].as_str()),
        (Some("snapshot"), Some("fresh"))
    );
    assert!(first_frames(&inbox, Some(BASE + 2)).is_err());
    assert!(is_relevant(r#"{"type":"user_question"}"#));
    assert!(is_relevant(
        r#"{"question_id":"q","type":"question.resolved"}"#
    ));
    assert!(!is_relevant(r#"{"type":"resultx"}"#));
    assert!(!is_relevant(
        r#"{"text":"{"type":"result"}","type":"assistant"}"#
    ));
    assert!(!is_relevant(r#"{"type":"assistant","text":"x"}"#));
    assert!(!is_relevant("garbage"));
}

#[test]
fn the_sql_copy_loads_as_the_inbox_it_saved() {
    let mut conn = SqliteConn::open_in_memory().unwrap();
    Migrations::new(sql::INBOX_MIGRATIONS)
        .unwrap()
        .apply(&mut conn)
        .unwrap();
    assert_eq!(sql::load(&mut conn, BASE).unwrap(), Inbox::new(BASE));
    let mut inbox = Inbox::new(BASE);
    let mut step = |inbox: &mut Inbox, c: Vec<(u64, InboxChange)>| {
        sql::save(&mut conn, inbox, &c).unwrap();
    };
    let c = inbox.session(meta("s1"));
    step(&mut inbox, c);
    let c = inbox.events("s1", &[stored(1, 1, &ask("q1")), stored(2, 1, &ask("q2"))]);
    step(&mut inbox, c);
    let c = inbox.events("s1", &[stored(3, 2, &resolved("q1"))]);
    step(&mut inbox, c);
    let c = inbox.session(meta("s2"));
    step(&mut inbox, c);
    let c = inbox.remove_session("s2");
    step(&mut inbox, c);
    let loaded = sql::load(&mut conn, 0).unwrap();
    assert_eq!(loaded.cursor(), inbox.cursor());
    assert_eq!(loaded.items(), inbox.items());
    assert_eq!(loaded.sessions(), inbox.sessions());
    assert_eq!(
        loaded.changes().collect::<Vec<_>>(),
        inbox.changes().collect::<Vec<_>>()
    );
}

/// What a client holds: the sessions and open questions it built from a
/// snapshot and the changes after it.
#[derive(Debug, Default, PartialEq)]
struct Copy {
    cursor: u64,
    sessions: BTreeMap<String, SessionMeta>,
    items: BTreeMap<(String, String), InboxItem>,
}

impl Copy {
    fn take(&mut self, inbox: &Inbox, after: Option<u64>) {
        match inbox.resume(after) {
            Resume::Snapshot(s) => {
                self.cursor = s.cursor;
                self.sessions = s
                    .sessions
                    .into_iter()
                    .map(|m| (m.session_id.clone(), m))
                    .collect();
                self.items = s
                    .items
                    .into_iter()
                    .map(|i| ((i.session_id.clone(), i.question_id.clone()), i))
                    .collect();
            }
            Resume::Changes(changes) => {
                for (cursor, change) in changes {
                    assert_eq!(cursor, self.cursor + 1, "every change once, in order");
                    self.cursor = cursor;
                    match change {
                        InboxChange::Session { session } => {
                            self.sessions.insert(session.session_id.clone(), *session);
                        }
                        InboxChange::QuestionOpened { item } => {
                            self.items
                                .insert((item.session_id.clone(), item.question_id.clone()), item);
                        }
                        InboxChange::QuestionResolved {
                            session_id,
                            question_id,
                            ..
                        } => {
                            self.items.remove(&(session_id, question_id));
                        }
                        InboxChange::SessionRemoved { session_id } => {
                            self.sessions.remove(&session_id);
                            self.items.retain(|(s, _), _| *s != session_id);
                        }
                    }
                }
            }
            Resume::Refused(r) => panic!("refused {r:?}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Start(u8),
    Ask(u8, u8),
    Resolve(u8, u8),
    State(u8, u8),
    Cost(u8, u16),
    Remove(u8),
    /// The client reads what is new (resumes from its cursor).
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4u8).prop_map(Op::Start),
        (0..4u8, 0..4u8).prop_map(|(s, q)| Op::Ask(s, q)),
        (0..4u8, 0..4u8).prop_map(|(s, q)| Op::Resolve(s, q)),
        (0..4u8, 0..4u8).prop_map(|(s, k)| Op::State(s, k)),
        (0..4u8, 0..1000u16).prop_map(|(s, c)| Op::Cost(s, c)),
        (0..4u8).prop_map(Op::Remove),
        Just(Op::Sync),
    ]
}

proptest! {
    /// Whatever happens to the sessions and whenever the client resumes,
    /// it gets each change once and in order, and its copy ends equal to
    /// the inbox's own snapshot.
    #[test]
    fn a_resuming_client_ends_with_the_inbox(ops in proptest::collection::vec(op(), 0..120), start_late in any::<bool>()) {
        let mut inbox = Inbox::new(BASE);
        let mut copy = Copy::default();
        let mut connected = false;
        if !start_late {
            copy.take(&inbox, None);
            connected = true;
        }
        let mut seq = 0u64;
        for op in ops {
            seq += 1;
            let sid = |s: u8| format!("s{s}");
            match op {
                Op::Start(s) => { inbox.session(meta(&sid(s))); }
                Op::Ask(s, q) => { inbox.events(&sid(s), &[stored(seq, seq as i64, &ask(&format!("q{q}")))]); }
                Op::Resolve(s, q) => { inbox.events(&sid(s), &[stored(seq, seq as i64, &resolved(&format!("q{q}")))]); }
                Op::State(s, k) => {
                    let st = match k { 0 => SessionState::Active, 1 => SessionState::paused(PauseReason::AwaitingApproval), 2 => SessionState::paused(PauseReason::Idle), _ => SessionState::Terminated };
                    inbox.events(&sid(s), &[stored(seq, seq as i64, &state(st))]);
                }
                Op::Cost(s, c) => {
                    let r = Event::Result(TurnResult { cost_usd: Some(f64::from(c) / 100.0), ..Default::default() });
                    inbox.events(&sid(s), &[stored(seq, seq as i64, &r)]);
                }
                Op::Remove(s) => { inbox.remove_session(&sid(s)); }
                Op::Sync => {
                    let after = connected.then_some(copy.cursor);
                    copy.take(&inbox, after);
                    connected = true;
                }
            }
        }
        let after = connected.then_some(copy.cursor);
        copy.take(&inbox, after);
        let mut want = Copy::default();
        want.take(&inbox, None);
        prop_assert_eq!(&copy, &want);
        // Open questions are exactly those of known sessions.
        for (s, _) in want.items.keys() {
            prop_assert!(want.sessions.contains_key(s));
        }
    }
}
