//! Frames in, frames out.

use duraclaw_core::Error;
use duraclaw_core::backend::actor::{IngestOutcome, SessionActor};
use duraclaw_core::clock::ManualClock;
use duraclaw_core::protocol::{
    Abort, Command, CommandEnvelope, CommandResult, Execute, FromGateway, Gseq, Hello,
    PROTOCOL_VERSION, Role, ToGateway, UserTurn, WireError, Worktree, decode_frame, encode_frame,
};
use duraclaw_core::store::{SessionDirectory, SessionMeta};

use super::*;

fn command(session: &str, id: &str, command: Command) -> ToGateway {
    ToGateway::Command(CommandEnvelope {
        id: id.into(),
        session_id: session.into(),
        command,
    })
}

fn message(session: &str, id: &str) -> ToGateway {
    command(
        session,
        id,
        Command::Message(UserTurn { text: "hi".into() }),
    )
}

fn result(link_id: &str, error: Option<&str>) -> String {
    encode_frame(&FromGateway::CommandResult(CommandResult {
        id: link_id.into(),
        ok: error.is_none(),
        error: error.map(|code| WireError::new(code, "no")),
    }))
    .unwrap()
}

/// A gateway `event` frame with `event` as its text.
fn event(session: &str, gseq: Gseq, event: &str) -> String {
    format!(r#"{{"type":"event","session_id":"{session}","gseq":{gseq},"event":{event}}}"#)
}

fn gateway_hello(v: u32, executor_error: Option<&str>) -> String {
    encode_frame(&FromGateway::Hello(Hello {
        v,
        role: Role::Gateway,
        agent: Some("duraclaw-gateway/test".into()),
        executor_error: executor_error.map(Into::into),
    }))
    .unwrap()
}

/// The session and event texts of every `Events` input, in order.
fn groups<W>(inputs: &[Input<W>]) -> Vec<(String, Vec<(Gseq, String)>)> {
    inputs
        .iter()
        .filter_map(|i| match i {
            Input::Events { session_id, events } => Some((
                session_id.clone(),
                events
                    .iter()
                    .map(|(g, e)| (*g, e.json().to_string()))
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn hellos_are_exchanged_and_the_version_checked() {
    let ours: ToGateway = decode_frame(&hello().unwrap(), "hello").unwrap();
    let ToGateway::Hello(h) = ours else {
        panic!("not a hello: {ours:?}")
    };
    assert_eq!((h.v, h.role), (PROTOCOL_VERSION, Role::Orchestrator));

    let info = read_hello(&gateway_hello(
        PROTOCOL_VERSION,
        Some("claude 1.0 is too old"),
    ))
    .unwrap();
    assert_eq!(info.agent.as_deref(), Some("duraclaw-gateway/test"));
    assert_eq!(
        info.executor_error.as_deref(),
        Some("claude 1.0 is too old")
    );

    let err = read_hello(&gateway_hello(PROTOCOL_VERSION + 1, None)).unwrap_err();
    assert!(matches!(err, Error::UnsupportedVersion { .. }), "{err}");
    let refused = encode_frame(&FromGateway::Error(WireError::new(
        "unauthorized",
        "bad secret",
    )));
    let err = read_hello(&refused.unwrap()).unwrap_err();
    assert!(err.to_string().contains("bad secret"), "{err}");
    let err = read_hello(&result("s/c", None)).unwrap_err();
    assert!(err.to_string().contains("did not say hello"), "{err}");
    assert!(matches!(read_hello("{not json"), Err(Error::Decode { .. })));
}

#[test]
fn commands_are_qualified_with_their_session_and_other_frames_left_alone() {
    let mut link: Link<()> = Link::new();
    let text = link.outgoing(&message("s1", "c1")).unwrap();
    let sent: ToGateway = decode_frame(&text, "sent").unwrap();
    assert_eq!(sent, message("s1", "s1/c1"));
    let ack = ToGateway::Ack {
        session_id: "s1".into(),
        gseq: 3,
    };
    assert_eq!(link.outgoing(&ack).unwrap(), encode_frame(&ack).unwrap());
    assert_eq!(link.in_flight(), 1);
}

#[test]
fn a_result_goes_back_to_its_session_with_its_own_id() {
    let mut link = Link::new();
    link.outgoing(&message("s1", "c1")).unwrap();
    link.outgoing(&command("s2", "c1", Command::Abort(Abort {})))
        .unwrap();
    link.wait("s2", "c1", "waiter of s2");
    assert!(link.is_waited("s2", "c1") && !link.is_waited("s1", "c1"));

    let inputs = link.read([result("s2/c1", None), result("s1/c1", None)]);
    let routed: Vec<_> = inputs
        .into_iter()
        .map(|i| match i {
            Input::Result {
                session_id,
                result,
                starts_turn,
                ends_turn,
                waiter,
            } => (session_id, result, starts_turn, ends_turn, waiter),
            other => panic!("not a result: {other:?}"),
        })
        .collect();
    let ok = |id: &str| CommandResult {
        id: id.into(),
        ok: true,
        error: None,
    };
    assert_eq!(
        routed,
        [
            (
                "s2".to_owned(),
                ok("c1"),
                false,
                false,
                Some("waiter of s2")
            ),
            ("s1".to_owned(), ok("c1"), true, false, None),
        ]
    );
    assert_eq!(link.in_flight(), 0);
}

#[test]
fn a_result_for_a_command_this_link_did_not_send_is_skipped() {
    let mut link: Link<()> = Link::new();
    link.outgoing(&message("s1", "c1")).unwrap();
    // Another session's command with the same id, an unqualified id, and
    // the same result twice.
    let inputs = link.read([
        result("s2/c1", None),
        result("c1", None),
        result("s1/c1", None),
        result("s1/c1", None),
    ]);
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert!(matches!(&inputs[0], Input::Result { session_id, .. } if session_id == "s1"));
}

#[test]
fn a_refused_turn_is_ended_unless_someone_waits_for_it() {
    let mut link = Link::new();
    let execute: Execute = serde_json::from_str(r#"{"worktree":"/w","prompt":"go"}"#).unwrap();
    let execute = Command::Execute(execute);
    link.outgoing(&message("s1", "m1")).unwrap();
    link.outgoing(&command("s1", "a1", Command::Abort(Abort {})))
        .unwrap();
    link.outgoing(&command("s1", "e1", execute)).unwrap();
    link.wait("s1", "e1", 7u8);
    let inputs = link.read([
        result("s1/m1", Some("executor")),
        result("s1/a1", Some("not_running")),
        result("s1/e1", Some("worktree_busy")),
    ]);
    let flags: Vec<_> = inputs
        .iter()
        .map(|i| match i {
            Input::Result {
                result,
                starts_turn,
                ends_turn,
                waiter,
                ..
            } => (
                result.id.as_str(),
                result.ok,
                *starts_turn,
                *ends_turn,
                *waiter,
            ),
            other => panic!("not a result: {other:?}"),
        })
        .collect();
    assert_eq!(
        flags,
        [
            ("m1", false, true, true, None),
            ("a1", false, false, false, None),
            ("e1", false, true, false, Some(7)),
        ]
    );
}

#[test]
fn a_closed_link_forgets_what_it_sent_and_drops_its_waiters() {
    let mut link = Link::new();
    let first = link.outgoing(&message("s1", "c1")).unwrap();
    let (tx, rx) = futures::channel::oneshot::channel::<CommandResult>();
    link.wait("s1", "c1", tx);
    link.on_closed();
    // The waiter hears the link is gone; a late answer matches nothing.
    assert!(futures::executor::block_on(rx).is_err());
    assert!(link.read_one(&result("s1/c1", None)).is_empty());
    // The outbox resends it on the next link: the same text, answered there.
    assert_eq!(link.outgoing(&message("s1", "c1")).unwrap(), first);
    assert_eq!(link.read_one(&result("s1/c1", None)).len(), 1);
}

#[test]
fn events_are_grouped_per_session_as_they_came_and_before_the_next_frame() {
    let mut link: Link<()> = Link::new();
    link.outgoing(&message("s1", "c1")).unwrap();
    // Odd spacing, an unknown field, escapes: kept byte for byte.
    let a1 = r#"{"type":"assistant",  "text":"caf\u00e9","extra":[1,2]}"#;
    let b1 = r#"{"type":"tool_result","tool_use_id":"t","content":"ok"}"#;
    let a2 = r#"{"type":"result","subtype":"success","total_cost_usd":0.5}"#;
    let a3 = r#"{"type":"assistant","text":"after"}"#;
    let inputs = link.read([
        event("a", 1, a1),
        event("b", 1, b1),
        event("a", 2, a2),
        result("s1/c1", None),
        event("a", 3, a3),
    ]);
    assert_eq!(inputs.len(), 4, "{inputs:?}");
    assert!(matches!(inputs[2], Input::Result { .. }));
    assert_eq!(
        groups(&inputs),
        [
            ("a".into(), vec![(1, a1.into()), (2, a2.into())]),
            ("b".into(), vec![(1, b1.into())]),
            ("a".into(), vec![(3, a3.into())]),
        ]
    );
    // Stateful events are decoded for the session's state.
    let Input::Events { events, .. } = &inputs[0] else {
        panic!()
    };
    assert!(events[0].1.event().is_none() && events[1].1.event().is_some());
}

#[test]
fn worktrees_errors_and_pongs_are_passed_on() {
    let mut link: Link<()> = Link::new();
    let wt = Worktree {
        path: "/w".into(),
        repo: "/r".into(),
        branch: None,
        head: None,
        dirty: false,
        busy_session: None,
        new_worktree: false,
    };
    let inputs = link.read([
        encode_frame(&FromGateway::Worktrees {
            id: "wt-1".into(),
            worktrees: vec![wt.clone()],
        })
        .unwrap(),
        encode_frame(&FromGateway::Error(WireError::new("invalid", "what?"))).unwrap(),
        encode_frame(&FromGateway::Pong { nonce: 9 }).unwrap(),
        gateway_hello(PROTOCOL_VERSION, None),
    ]);
    assert!(matches!(&inputs[..], [
        Input::Worktrees { id, worktrees },
        Input::Error(e),
        Input::Pong { nonce: 9 },
    ] if id == "wt-1" && worktrees == &vec![wt.clone()] && e.code == "invalid"));
}

#[test]
fn bad_frames_are_reported_and_lose_nothing_around_them() {
    let mut link: Link<()> = Link::new();
    let big = format!(
        r#"{{"type":"assistant","text":"{}"}}"#,
        "x".repeat(duraclaw_core::protocol::MAX_FRAME_BYTES)
    );
    let e1 = r#"{"type":"assistant","text":"1"}"#;
    let e2 = r#"{"type":"assistant","text":"2"}"#;
    let inputs = link.read([
        event("a", 1, e1),
        "{not json".to_owned(),
        event("a", 2, "[1,2]"),
        event("a", 2, &big),
        r#"{"type":"no_such_frame"}"#.to_owned(),
        event("a", 2, e2),
    ]);
    let bad: Vec<_> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::Bad(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(bad.len(), 4, "{inputs:?}");
    assert!(matches!(bad[2], Error::TooLarge { .. }), "{}", bad[2]);
    assert_eq!(
        groups(&inputs),
        [("a".into(), vec![(1, e1.into()), (2, e2.into())])]
    );
}

#[test]
fn after_ingest_acks_and_re_attaches_after_a_gap() {
    let ack = |gseq| ToGateway::Ack {
        session_id: "s".into(),
        gseq,
    };
    let whole = IngestOutcome {
        stored: 2,
        ack: 2,
        ..IngestOutcome::default()
    };
    assert_eq!(after_ingest("s", &whole), [ack(2)]);
    let gap = IngestOutcome {
        stored: 1,
        ack: 1,
        gap_at: Some(2),
        ..IngestOutcome::default()
    };
    assert_eq!(
        after_ingest("s", &gap),
        [
            ack(1),
            ToGateway::Attach {
                session_id: "s".into(),
                after_gseq: 1
            }
        ]
    );
}

/// Frames in, through a real session actor, frames out: a gap is
/// re-attached after the last stored gseq, and the resend fills it.
#[test]
fn a_gap_in_the_gateway_stream_is_re_attached_and_filled() {
    futures::executor::block_on(async {
        let dir = duraclaw_store::MemoryDirectory::new();
        let store = dir.create(SessionMeta::new("s", "alice", 0)).await.unwrap();
        let actor = SessionActor::open(store, ManualClock::new(1).shared())
            .await
            .unwrap();
        let mut link: Link<()> = Link::new();
        let ev = |n: u32| format!(r#"{{"type":"assistant","text":"{n}"}}"#);

        let mut sent = Vec::new();
        let mut feed = async |link: &mut Link<()>, texts: Vec<String>| {
            for input in link.read(texts) {
                let Input::Events { session_id, events } = input else {
                    panic!("not events: {input:?}")
                };
                let out = actor.ingest_raw(events).await.unwrap();
                for f in after_ingest(&session_id, &out) {
                    sent.push(decode_frame::<ToGateway>(&link.outgoing(&f).unwrap(), "f").unwrap());
                }
            }
        };
        // gseq 3 is missing.
        feed(
            &mut link,
            vec![
                event("s", 1, &ev(1)),
                event("s", 2, &ev(2)),
                event("s", 4, &ev(4)),
            ],
        )
        .await;
        // The gateway resends after 2 (with a duplicate of 2).
        feed(
            &mut link,
            vec![
                event("s", 2, &ev(2)),
                event("s", 3, &ev(3)),
                event("s", 4, &ev(4)),
            ],
        )
        .await;
        let ack = |gseq| ToGateway::Ack {
            session_id: "s".into(),
            gseq,
        };
        assert_eq!(
            sent,
            [
                ack(2),
                ToGateway::Attach {
                    session_id: "s".into(),
                    after_gseq: 2
                },
                ack(4)
            ]
        );
        // Stored once each, in order, as the gateway sent them.
        let log = actor.log().store().read_after(0, 100).await.unwrap();
        let texts: Vec<_> = log.iter().map(|e| e.json.to_string()).collect();
        assert_eq!(texts, [ev(1), ev(2), ev(3), ev(4)]);
    });
}
