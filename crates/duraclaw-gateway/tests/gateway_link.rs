#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The gateway over a real WebSocket on 127.0.0.1, with the scripted
//! executor and a real SQLite outbox: auth, hello, commands applied once,
//! approvals, worktree rules, and no lost or duplicated event across a cut
//! link and a gateway restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duraclaw_core::protocol::{
    Answer, Command, DecidedBy, Decision, Event, FromGateway, ToGateway, UserTurn,
};
use duraclaw_gateway::link::Secret;
use duraclaw_gateway::scripted::{Script, ScriptedExecutor, Step};
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_store::SqliteDirectory;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{command, connect_with, events_until, execute, init_repo, open, recv, send};

const SECRET: &str = "test-secret-0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(20);

struct Harness {
    _dir: tempfile::TempDir,
    root: PathBuf,
    db: PathBuf,
    script: Script,
}

struct Running {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    gateway: Gateway,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Harness {
    fn new(script: Script) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        init_repo(&root.join("projects/app1"));
        init_repo(&root.join("projects/app2"));
        let db = root.join("gateway.db");
        Harness {
            _dir: dir,
            root,
            db,
            script,
        }
    }

    fn worktree(&self, name: &str) -> String {
        self.root.join("projects").join(name).display().to_string()
    }

    async fn start(&self) -> Running {
        let directory = Arc::new(SqliteDirectory::open(&self.db).await.unwrap());
        let worktrees =
            WorktreeIndex::new(vec![format!("{}/projects/*", self.root.display())]).unwrap();
        let gateway = Gateway::new(GatewayOptions {
            directory,
            executor: Arc::new(ScriptedExecutor::new(self.script.clone())),
            worktrees,
            approval_timeout: None,
        })
        .await
        .unwrap();
        let (addr, task) = support::serve_link(&gateway, SECRET).await;
        Running {
            addr,
            task,
            gateway,
        }
    }
}

fn tool_script() -> Script {
    Script {
        turns: vec![vec![
            Step::Text {
                text: "Let me look around.".into(),
                chunks: 4,
                delay_ms: 0,
            },
            Step::Tool {
                name: "Bash".into(),
                input: json!({"command": "ls"}),
                result: "README.md".into(),
            },
            Step::Text {
                text: "Done.".into(),
                chunks: 1,
                delay_ms: 0,
            },
        ]],
    }
}

#[tokio::test]
async fn wrong_missing_and_almost_right_bearers_get_401() {
    let h = Harness::new(Script::default());
    let gw = h.start().await;
    for auth in [
        None,
        Some("Bearer nope"),
        Some(&format!("Bearer {SECRET}x")[..]),
        Some(&format!("bearer {SECRET}")[..]),
        Some(SECRET),
    ] {
        match connect_with(gw.addr, auth).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401, "{auth:?}");
            }
            other => panic!("{auth:?} was not refused: {:?}", other.map(|_| ())),
        }
    }
    assert!(Secret::new("").is_err());
    assert!(Secret::new("short").is_err());
    assert_eq!(
        format!("{:?}", Secret::new(SECRET).unwrap()),
        "Secret(<redacted>)"
    );
}

#[tokio::test]
async fn hello_version_and_bad_frames() {
    let h = Harness::new(Script::default());
    let gw = h.start().await;
    let mut ws = connect_with(gw.addr, Some(&format!("Bearer {SECRET}")))
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"type":"hello","v":2,"role":"orchestrator"}"#,
    ))
    .await
    .unwrap();
    match recv(&mut ws, DEADLINE).await {
        FromGateway::Error(e) => assert_eq!(e.code, "unsupported_version"),
        other => panic!("{other:?}"),
    }

    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    ws.send(Message::text("{not json")).await.unwrap();
    assert!(
        matches!(recv(&mut ws, DEADLINE).await, FromGateway::Error(e) if e.code == "bad_frame")
    );
    ws.send(Message::text(r#"{"type":"launch_missiles"}"#))
        .await
        .unwrap();
    assert!(
        matches!(recv(&mut ws, DEADLINE).await, FromGateway::Error(e) if e.code == "bad_frame")
    );
    // The link still works.
    send(&mut ws, &ToGateway::Ping { nonce: 7 }).await;
    assert!(matches!(
        recv(&mut ws, DEADLINE).await,
        FromGateway::Pong { nonce: 7 }
    ));
    // An oversized frame ends the link; the gateway stays up.
    let big = format!(
        r#"{{"type":"ping","nonce":1,"pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let _ = ws.send(Message::text(big)).await;
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the oversized frame should end the link");
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    send(&mut ws, &ToGateway::Ping { nonce: 8 }).await;
    assert!(matches!(
        recv(&mut ws, DEADLINE).await,
        FromGateway::Pong { nonce: 8 }
    ));
}

#[tokio::test]
async fn worktree_rules_traversal_and_busy() {
    let h = Harness::new(Script {
        turns: vec![vec![Step::Stall]],
    });
    let gw = h.start().await;
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    send(&mut ws, &ToGateway::ListWorktrees { id: "w1".into() }).await;
    match recv(&mut ws, DEADLINE).await {
        FromGateway::Worktrees { id, worktrees } => {
            assert_eq!(id, "w1");
            assert_eq!(worktrees.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    let sneaky = format!("{}/../app2", h.worktree("app1"));
    for (i, bad) in [sneaky, "/etc".to_string(), "app1".to_string()]
        .into_iter()
        .enumerate()
    {
        send(
            &mut ws,
            &command(
                &format!("bad{i}"),
                &format!("sbad{i}"),
                execute(bad.clone(), "hi"),
            ),
        )
        .await;
        match recv(&mut ws, DEADLINE).await {
            FromGateway::CommandResult(r) => {
                assert!(!r.ok, "{bad} was accepted");
                assert_eq!(r.error.unwrap().code, "invalid", "{bad}");
            }
            other => panic!("{other:?}"),
        }
    }
    send(
        &mut ws,
        &command("c1", "s1", execute(h.worktree("app1"), "stall")),
    )
    .await;
    assert!(matches!(recv(&mut ws, DEADLINE).await, FromGateway::CommandResult(r) if r.ok));
    send(
        &mut ws,
        &command("c2", "s2", execute(h.worktree("app1"), "me too")),
    )
    .await;
    match recv(&mut ws, DEADLINE).await {
        FromGateway::CommandResult(r) => {
            let e = r.error.unwrap();
            assert_eq!(e.code, "worktree_busy");
            assert!(e.message.contains("s1"), "names the holder: {}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // The other worktree is free.
    send(
        &mut ws,
        &command("c3", "s3", execute(h.worktree("app2"), "stall")),
    )
    .await;
    assert!(matches!(recv(&mut ws, DEADLINE).await, FromGateway::CommandResult(r) if r.ok));
    send(&mut ws, &ToGateway::ListWorktrees { id: "w2".into() }).await;
    match recv(&mut ws, DEADLINE).await {
        FromGateway::Worktrees { worktrees, .. } => {
            let busy: Vec<_> = worktrees
                .iter()
                .filter_map(|w| w.busy_session.clone())
                .collect();
            assert_eq!(busy, vec!["s1".to_string(), "s3".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn a_session_streams_asks_and_applies_each_command_once() {
    let h = Harness::new(tool_script());
    let gw = h.start().await;
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    let exec = command("c1", "s1", execute(h.worktree("app1"), "look around"));
    send(&mut ws, &exec).await;
    assert!(matches!(recv(&mut ws, DEADLINE).await, FromGateway::CommandResult(r) if r.ok));
    // Sent again: applied once, acknowledged.
    send(&mut ws, &exec).await;
    assert!(matches!(recv(&mut ws, DEADLINE).await, FromGateway::CommandResult(r) if r.ok));
    send(
        &mut ws,
        &ToGateway::Attach {
            session_id: "s1".into(),
            after_gseq: 0,
        },
    )
    .await;
    let got = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::UserQuestion(_))).await;
    let Event::UserQuestion(q) = &got.last().unwrap().1 else {
        unreachable!()
    };
    // The first event records the worktree and the base commit.
    match &got[0].1 {
        Event::Notice(n) => {
            let w = n.worktree.as_ref().unwrap();
            assert_eq!(n.code, duraclaw_core::protocol::NOTICE_WORKTREE);
            assert!(!w.created && w.base.is_some(), "{w:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(got[1].1, Event::SessionInit(_)));
    let answer = command(
        "a1",
        "s1",
        Command::Answer(Answer {
            question_id: q.question_id.clone(),
            decision: Decision::Allow {
                updated_input: None,
                remember: false,
            },
            by: Some(DecidedBy::new("alice")),
            allow_worktree_rule: None,
        }),
    );
    send(&mut ws, &answer).await;
    let rest = {
        let mut rest = Vec::new();
        let mut results = 0;
        while results < 1
            || !rest
                .iter()
                .any(|(_, e): &(u64, Event)| matches!(e, Event::Result(_)))
        {
            match recv(&mut ws, DEADLINE).await {
                FromGateway::CommandResult(r) => {
                    assert!(r.ok);
                    results += 1;
                }
                FromGateway::Event { gseq, event, .. } => rest.push((gseq, event)),
                other => panic!("{other:?}"),
            }
        }
        rest
    };
    let all: Vec<u64> = got.iter().chain(&rest).map(|(g, _)| *g).collect();
    assert_eq!(
        all,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "dense gseqs, no duplicate"
    );
    assert!(
        rest.iter()
            .any(|(_, e)| matches!(e, Event::QuestionResolved(r) if r.by.who == "alice"))
    );
    assert!(rest.iter().any(
        |(_, e)| matches!(e, Event::ToolResult(r) if !r.is_error && r.content == json!("README.md"))
    ));
    // A second answer is refused and names the first.
    send(
        &mut ws,
        &command(
            "a2",
            "s1",
            Command::Answer(Answer {
                question_id: q.question_id.clone(),
                decision: Decision::Deny {
                    reason: "late".into(),
                    interrupt: false,
                },
                by: Some(DecidedBy::new("bob")),
                allow_worktree_rule: None,
            }),
        ),
    )
    .await;
    assert!(matches!(recv(&mut ws, DEADLINE).await, FromGateway::CommandResult(r) if r.ok));
    // A follow-up turn.
    send(
        &mut ws,
        &command(
            "m1",
            "s1",
            Command::Message(UserTurn {
                text: "thanks".into(),
            }),
        ),
    )
    .await;
    let more = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    assert!(
        more.iter()
            .any(|(_, e)| matches!(e, Event::Assistant(a) if a.text.contains("thanks")))
    );
    assert_eq!(more[0].0, *all.last().unwrap() + 1);
}

#[tokio::test]
async fn a_cut_link_and_a_gateway_restart_lose_nothing() {
    let script = Script {
        turns: vec![vec![
            Step::Text {
                text: "a".repeat(200),
                chunks: 50,
                delay_ms: 0,
            },
            Step::Tool {
                name: "Read".into(),
                input: json!({"file_path": "README.md"}),
                result: "hello".into(),
            },
        ]],
    };
    let h = Harness::new(script);
    let gw = h.start().await;
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    send(
        &mut ws,
        &command("c1", "s1", execute(h.worktree("app1"), "go")),
    )
    .await;
    assert!(matches!(recv(&mut ws, DEADLINE).await, FromGateway::CommandResult(r) if r.ok));
    send(
        &mut ws,
        &ToGateway::Attach {
            session_id: "s1".into(),
            after_gseq: 0,
        },
    )
    .await;
    // Read part of the stream, then cut the link mid-stream.
    let mut seen = Vec::new();
    while seen.len() < 10 {
        if let FromGateway::Event { gseq, .. } = recv(&mut ws, DEADLINE).await {
            seen.push(gseq);
        }
    }
    drop(ws);
    // Reattach after the last persisted gseq: the rest, exactly once.
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    send(
        &mut ws,
        &ToGateway::Attach {
            session_id: "s1".into(),
            after_gseq: *seen.last().unwrap(),
        },
    )
    .await;
    let rest = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::UserQuestion(_))).await;
    seen.extend(rest.iter().map(|(g, _)| *g));
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>());
    let last = *seen.last().unwrap();
    drop(ws);

    // Restart the gateway over the same outbox: the executor withdraws
    // its question as it stops, and after the ack exactly what came later
    // is sent.
    gw.gateway.shutdown().await;
    drop(gw);
    let gw = h.start().await;
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    send(
        &mut ws,
        &ToGateway::Attach {
            session_id: "s1".into(),
            after_gseq: last,
        },
    )
    .await;
    let after = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    assert_eq!(after[0].0, last + 1);
    match &after[0].1 {
        Event::QuestionResolved(r) => {
            assert!(matches!(r.decision, Decision::Cancelled { .. }));
            assert_eq!(r.by.who, "executor");
        }
        other => panic!("{other:?}"),
    }
    let last = after.last().unwrap().0;
    // A message resumes the session with its executor session id.
    send(
        &mut ws,
        &command(
            "m1",
            "s1",
            Command::Message(UserTurn {
                text: "continue".into(),
            }),
        ),
    )
    .await;
    let resumed = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    match &resumed
        .iter()
        .find(|(_, e)| matches!(e, Event::SessionInit(_)))
        .unwrap()
        .1
    {
        Event::SessionInit(init) => {
            assert_eq!(init.executor_session_id.as_deref(), Some("scripted-s1"))
        }
        _ => unreachable!(),
    }
    let gseqs: Vec<u64> = resumed.iter().map(|(g, _)| *g).collect();
    assert_eq!(
        gseqs,
        (last + 1..last + 1 + gseqs.len() as u64).collect::<Vec<_>>()
    );
}

/// A script of one turn: `text`, streamed in two chunks.
fn one_text_turn(text: &str) -> Script {
    Script {
        turns: vec![vec![Step::Text {
            text: text.into(),
            chunks: 2,
            delay_ms: 0,
        }]],
    }
}

/// Starts session `s1` in `app1` (the command's result read).
async fn start_s1(h: &Harness, ws: &mut support::Ws) {
    send(ws, &command("c1", "s1", execute(h.worktree("app1"), "go"))).await;
    assert!(matches!(recv(ws, DEADLINE).await, FromGateway::CommandResult(r) if r.ok));
}

/// Attaches session `s1` after gseq `after_gseq`.
async fn attach(ws: &mut support::Ws, after_gseq: u64) {
    send(
        ws,
        &ToGateway::Attach {
            session_id: "s1".into(),
            after_gseq,
        },
    )
    .await;
}

/// The events of session `s1` logged after seq `after`, once they end with
/// a turn's end (`result`), within the deadline.
async fn turn_logged(gateway: &Gateway, after: u64) -> Vec<Event> {
    let session = gateway.session("s1").await.unwrap();
    let until = std::time::Instant::now() + DEADLINE;
    loop {
        let events: Vec<Event> = session
            .log()
            .store()
            .read_after(after, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event().unwrap())
            .collect();
        if events.last().is_some_and(|e| matches!(e, Event::Result(_))) {
            return events;
        }
        assert!(
            std::time::Instant::now() < until,
            "no turn logged after seq {after}: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last seq of session `s1`'s log (loading it).
async fn log_head(gateway: &Gateway) -> u64 {
    let session = gateway.session("s1").await.unwrap();
    session.log().store().head().await.unwrap().last_seq
}

fn message(id: &str, text: &str) -> ToGateway {
    command(id, "s1", Command::Message(UserTurn { text: text.into() }))
}

fn gseqs(events: &[(u64, Event)]) -> Vec<u64> {
    events.iter().map(|(g, _)| *g).collect()
}

/// A machine crash (power loss, a kernel panic) can take back the last
/// commits of the gateway's log — SQLite's WAL with `synchronous=NORMAL`
/// outlives the process, not the machine — while the orchestrator holds
/// those events already: it attaches after a gseq beyond the log's end.
/// Numbered from the log's end, the gateway's next events would take gseqs
/// the orchestrator has and be dropped as resends. They must go out after
/// the orchestrator's gseq, every one, in order: those logged between the
/// restart and the attach, and those after an attach that came first;
/// and the numbering must hold across the next restart (a resend under
/// the same gseqs). An orchestrator that lost its own log back to before
/// the skipped stretch gets what follows it densely.
#[tokio::test]
async fn events_after_a_crash_took_back_what_the_orchestrator_has_are_numbered_after_it() {
    let h = Harness::new(one_text_turn("first turn"));
    let gw = h.start().await;
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    start_s1(&h, &mut ws).await;
    attach(&mut ws, 0).await;
    events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    drop(ws);
    gw.gateway.shutdown().await;
    drop(gw);

    // The log ends at `head`; the orchestrator holds 40 events more, which
    // the crash took back. A message comes before the attach (an
    // orchestrator resends what is unconfirmed first) and its turn is
    // logged after `head`.
    let gw = h.start().await;
    let head = log_head(&gw.gateway).await;
    let held = head + 40;
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    send(&mut ws, &message("m1", "after the crash")).await;
    assert!(matches!(recv(&mut ws, DEADLINE).await, FromGateway::CommandResult(r) if r.ok));
    let logged = turn_logged(&gw.gateway, head).await;
    assert!(logged.len() >= 3, "{logged:?}");
    attach(&mut ws, held).await;
    let got = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    assert_eq!(
        gseqs(&got),
        (held + 1..=held + logged.len() as u64).collect::<Vec<_>>()
    );
    let sent: Vec<Event> = got.into_iter().map(|(_, e)| e).collect();
    assert_eq!(sent, logged, "the turn, every event once, in order");
    let last = held + logged.len() as u64;
    drop(ws);
    gw.gateway.shutdown().await;
    drop(gw);

    // Restarted with nothing lost, and an orchestrator two events behind
    // (it persisted all but the last two): it gets those two again under
    // the same gseqs, then the next turn's events after them. The
    // numbering is the one recorded, not found again.
    let gw = h.start().await;
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    attach(&mut ws, last - 2).await;
    let resent = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    assert_eq!(gseqs(&resent), vec![last - 1, last]);
    let resent: Vec<Event> = resent.into_iter().map(|(_, e)| e).collect();
    assert_eq!(resent, sent[sent.len() - 2..]);
    send(&mut ws, &message("m2", "and again")).await;
    let more = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    assert_eq!(
        gseqs(&more),
        (last + 1..=last + more.len() as u64).collect::<Vec<_>>()
    );
    let last = last + more.len() as u64;
    drop(ws);
    gw.gateway.shutdown().await;
    drop(gw);

    // Another crash, found by an attach before anything is logged: the
    // next turn goes out after the orchestrator's gseq too.
    let gw = h.start().await;
    let held = last + 7;
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    attach(&mut ws, held).await;
    send(&mut ws, &message("m3", "once more")).await;
    let third = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    assert_eq!(
        gseqs(&third),
        (held + 1..=held + third.len() as u64).collect::<Vec<_>>()
    );
    drop(ws);

    // An orchestrator that lost its own log down to the first crash's
    // point (restored from a backup: its highest gseq is `head`, which the
    // gateway's numbering skipped past) gets what follows right after it,
    // not a hole it would wait on forever.
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    attach(&mut ws, head).await;
    let again = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    assert_eq!(
        gseqs(&again),
        (head + 1..=head + logged.len() as u64).collect::<Vec<_>>()
    );
    let again: Vec<Event> = again.into_iter().map(|(_, e)| e).collect();
    assert_eq!(again, sent);
}

/// The outbox publishes each batch of events while it commits it. A
/// commit that fails then (a full disk: a trigger refuses the insert, so the
/// real transaction fails) has sent events its log does not keep; the log
/// stops, the session is loaded again from its store at its next use, and
/// what the orchestrator gets stays dense: no later event takes a gseq it
/// holds, and the next turn reaches it whole.
#[tokio::test]
async fn after_a_commit_failed_under_published_events_the_next_turn_is_numbered_after_them() {
    let h = Harness::new(one_text_turn("first turn"));
    let gw = h.start().await;
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    start_s1(&h, &mut ws).await;
    attach(&mut ws, 0).await;
    let first = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    let mut got = gseqs(&first);

    let raw = rusqlite::Connection::open(&h.db).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON events \
         BEGIN SELECT RAISE(ABORT, 'no space left on the device'); END;",
    )
    .unwrap();
    send(&mut ws, &message("m1", "this one fails")).await;
    // Its turn's first commit fails: the session's log stops.
    let session = gw.gateway.session("s1").await.unwrap();
    let until = std::time::Instant::now() + DEADLINE;
    while !session.log().has_failed() {
        assert!(std::time::Instant::now() < until, "the commit never failed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    raw.execute_batch("DROP TRIGGER refuse").unwrap();
    send(&mut ws, &message("m2", "and this one runs")).await;
    let said = |e: &Event| {
        matches!(e, Event::Assistant(a) if a.phase == duraclaw_core::protocol::AssistantPhase::Final
            && a.text.contains("and this one runs"))
    };
    let rest = events_until(&mut ws, DEADLINE, said).await;
    got.extend(gseqs(&rest));
    // The next turn whole: its start, and every delta of its message.
    let Some((_, Event::Assistant(last))) = rest.last() else {
        unreachable!()
    };
    let deltas: String = rest
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Assistant(a) if a.message_id == last.message_id && a.phase != last.phase => {
                Some(a.text.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(deltas, last.text, "{rest:?}");
    assert!(
        rest.iter().any(|(_, e)| matches!(e, Event::SessionInit(_))),
        "{rest:?}"
    );
    let end = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    got.extend(gseqs(&end));
    assert_eq!(
        got,
        (1..=got.len() as u64).collect::<Vec<_>>(),
        "every gseq once, in order"
    );
}

/// A question goes out only once the outbox keeps it (a restart reads
/// questions back to withdraw them; one the orchestrator held and the
/// gateway lost would wait forever). Its commit refused (a trigger, as a
/// full disk would), the orchestrator never gets it, while the events
/// before it went out as they were committed; the session takes the next
/// message.
#[tokio::test]
async fn a_question_goes_out_only_once_it_is_kept() {
    // The text streams slowly, so the link follows the session live
    // before the question comes.
    let h = Harness::new(Script {
        turns: vec![vec![
            Step::Text {
                text: "Let me look around.".into(),
                chunks: 3,
                delay_ms: 100,
            },
            Step::Tool {
                name: "Bash".into(),
                input: json!({"command": "ls"}),
                result: "README.md".into(),
            },
        ]],
    });
    let gw = h.start().await;
    let raw = rusqlite::Connection::open(&h.db).unwrap();
    let mut ws = open(gw.addr, SECRET, DEADLINE).await;
    start_s1(&h, &mut ws).await;
    raw.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON events \
         WHEN NEW.json LIKE '%\"type\":\"user_question\"%' \
         BEGIN SELECT RAISE(ABORT, 'no space left on the device'); END;",
    )
    .unwrap();
    attach(&mut ws, 0).await;
    // Up to the tool call, then its question's commit fails.
    let before = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::ToolUse(_))).await;
    let session = gw.gateway.session("s1").await.unwrap();
    let until = std::time::Instant::now() + DEADLINE;
    while session.is_running().await {
        assert!(std::time::Instant::now() < until, "the turn never stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    raw.execute_batch("DROP TRIGGER refuse").unwrap();
    send(&mut ws, &message("m1", "go on")).await;
    let after = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    assert!(
        !after
            .iter()
            .any(|(_, e)| matches!(e, Event::UserQuestion(_))),
        "a question the outbox did not keep went out: {after:?}"
    );
    let all: Vec<u64> = gseqs(&before).into_iter().chain(gseqs(&after)).collect();
    assert_eq!(all, (1..=all.len() as u64).collect::<Vec<_>>());
}
