#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Gateway memory bounded by live work: sessions whose executor ended and
//! that have nothing pending are put away after the idle bound and loaded
//! again from the store on demand (the scripted executor, a real SQLite
//! outbox, and the real WebSocket link).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duraclaw_core::protocol::{
    Answer, Close, Command, Decision, Event, FromGateway, ToGateway, UserTurn,
};
use duraclaw_core::store::SessionDirectory;
use duraclaw_gateway::scripted::{Script, ScriptedExecutor, Step};
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_store::SqliteDirectory;
use serde_json::json;

mod support;
use support::{command, execute, init_repo, open, recv, send};

const SECRET: &str = "test-secret-0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_millis(50);

/// A gateway over the database `db`, sessions in `root/projects/*`,
/// putting sessions away after [`IDLE`].
async fn gateway(root: &Path, db: &Path, script: Script) -> Gateway {
    let gw = Gateway::new(GatewayOptions {
        directory: Arc::new(SqliteDirectory::open(db).await.unwrap()),
        executor: Arc::new(ScriptedExecutor::new(script)),
        worktrees: WorktreeIndex::new(vec![format!("{}/projects/*", root.display())]).unwrap(),
        approval_timeout: None,
    })
    .await
    .unwrap();
    gw.set_evict_idle(IDLE);
    gw
}

/// Waits (bounded) until `gw` holds `n` sessions in memory.
async fn until_loaded(gw: &Gateway, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = gw.loaded_count().await;
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} sessions in memory, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A temporary root with one repository, `projects/app`: (the directory,
/// its canonical path, the worktree).
fn project() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().canonicalize().unwrap();
    init_repo(&root.join("projects/app"));
    let wt = root.join("projects/app").display().to_string();
    (dir, root, wt)
}

fn one_text_turn() -> Script {
    Script {
        turns: vec![vec![Step::Text {
            text: "Done.".into(),
            chunks: 2,
            delay_ms: 0,
        }]],
    }
}

fn envelope(id: &str, session: &str, command: Command) -> duraclaw_core::protocol::CommandEnvelope {
    duraclaw_core::protocol::CommandEnvelope {
        id: id.into(),
        session_id: session.into(),
        command,
    }
}

/// 1,000 sessions run a turn and end, their events acknowledged: the
/// sessions in memory return to the baseline, each one's metadata says it
/// was put away, and a gateway started on that database loads none of them.
/// One of them is loaded again by a command for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_that_ran_and_ended_leave_memory_and_come_back_on_demand() {
    let (_dir, root, wt) = project();
    let db = root.join("gateway.db");
    let gw = gateway(&root, &db, one_text_turn()).await;
    let baseline = gw.loaded_count().await;
    for i in 0..1000 {
        let id = format!("evict-{i:04}");
        let ok = gw
            .apply(envelope(&format!("{id}/x"), &id, execute(wt.clone(), "go")))
            .await;
        assert!(ok.ok, "{ok:?}");
        until_result(&gw, &id, 0).await;
        let session = gw.session(&id).await.unwrap();
        let closed = gw
            .apply(envelope(&format!("{id}/c"), &id, Command::Close(Close {})))
            .await;
        assert!(closed.ok, "{closed:?}");
        let head = session.log().store().head().await.unwrap().last_seq;
        drop(session);
        gw.acked(&id, head).await;
    }
    until_loaded(&gw, baseline).await;

    let directory = SqliteDirectory::open(&db).await.unwrap();
    let metas = directory.list_all().await.unwrap();
    assert_eq!(metas.len(), 1000);
    assert!(metas.iter().all(|m| m.parked.is_some()), "{:?}", metas[0]);

    // A command for one loads it again (a closed one refuses a turn, as
    // before it was put away).
    let refused = gw
        .apply(envelope(
            "evict-0007/m",
            "evict-0007",
            Command::Message(UserTurn {
                text: "again".into(),
            }),
        ))
        .await;
    assert!(!refused.ok);
    assert_eq!(refused.error.unwrap().code, "session_closed");
    assert!(gw.loaded("evict-0007").await.is_some());
    let meta = directory.open("evict-0007").await.unwrap();
    assert!(
        duraclaw_core::store::SessionStore::meta(meta.as_ref())
            .await
            .unwrap()
            .parked
            .is_none()
    );
    until_loaded(&gw, baseline).await;
    drop(gw);

    // A restart loads none of them.
    let again = gateway(&root, &db, one_text_turn()).await;
    assert_eq!(again.loaded_count().await, 0);
}

/// Over the link: a session waits for an approval when the gateway stops;
/// the restarted gateway withdraws the question and, once the orchestrator
/// has every event, puts the session away. A late answer then gets a
/// clear refusal, and a message resumes the session: its events reach
/// the orchestrator through the forwarder it attached before, which
/// followed the session as it was loaded again (no new attach).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_sessions_late_answer_and_resume_work_over_the_link() {
    let (_dir, root, wt) = project();
    let db = root.join("gateway.db");
    let script = Script {
        turns: vec![vec![Step::Tool {
            name: "Bash".into(),
            input: json!({"command": "make"}),
            result: "built".into(),
        }]],
    };

    let first = gateway(&root, &db, script.clone()).await;
    let (addr, task) = support::serve_link(&first, SECRET).await;
    let mut ws = open(addr, SECRET, DEADLINE).await;
    send(&mut ws, &command("c1", "late", execute(wt, "build it"))).await;
    send(
        &mut ws,
        &ToGateway::Attach {
            session_id: "late".into(),
            after_gseq: 0,
        },
    )
    .await;
    let (mut last, question) = loop {
        if let FromGateway::Event { gseq, event, .. } = recv(&mut ws, DEADLINE).await
            && let Event::UserQuestion(q) = event
        {
            break (gseq, q.question_id);
        }
    };
    drop(ws);
    task.abort();
    first.shutdown().await;
    drop(first);

    let second = gateway(&root, &db, script).await;
    let (addr, _task) = support::serve_link(&second, SECRET).await;
    let mut ws = open(addr, SECRET, DEADLINE).await;
    send(
        &mut ws,
        &ToGateway::Attach {
            session_id: "late".into(),
            after_gseq: last,
        },
    )
    .await;
    // Everything up to the withdrawal reaches the orchestrator, acked.
    let deadline = Instant::now() + DEADLINE;
    while second.loaded("late").await.is_some() {
        assert!(Instant::now() < deadline, "the session was never put away");
        if let Ok(frame) =
            tokio::time::timeout(Duration::from_millis(20), recv(&mut ws, DEADLINE)).await
            && let FromGateway::Event { gseq, .. } = frame
        {
            last = gseq;
            send(
                &mut ws,
                &ToGateway::Ack {
                    session_id: "late".into(),
                    gseq,
                },
            )
            .await;
        }
    }

    // The late answer: refused clearly (the decision is the host's record).
    send(
        &mut ws,
        &command(
            "c2",
            "late",
            Command::Answer(Answer {
                question_id: question.clone(),
                decision: Decision::Allow {
                    updated_input: None,
                    remember: false,
                },
                by: None,
                allow_worktree_rule: None,
            }),
        ),
    )
    .await;
    let refused = loop {
        if let FromGateway::CommandResult(r) = recv(&mut ws, DEADLINE).await {
            break r;
        }
    };
    assert_eq!(refused.id, "c2");
    assert!(!refused.ok);
    assert_eq!(refused.error.unwrap().code, "not_found");
    until_loaded(&second, 0).await;

    // A message resumes it; its events come over the link unasked.
    send(
        &mut ws,
        &command(
            "c3",
            "late",
            Command::Message(UserTurn {
                text: "continue".into(),
            }),
        ),
    )
    .await;
    let mut ok = None;
    let mut said = None;
    while said.is_none() {
        match recv(&mut ws, DEADLINE).await {
            FromGateway::CommandResult(r) if r.id == "c3" => ok = Some(r.ok),
            FromGateway::Event { gseq, event, .. } => {
                assert!(gseq > last, "gseq {gseq} sent again (last {last})");
                last = gseq;
                if let Event::Assistant(a) = &event
                    && a.text.contains("You said: continue")
                {
                    said = Some(a.text.clone());
                }
            }
            _ => {}
        }
    }
    assert_eq!(ok, Some(true));
}

/// Sessions whose executor sits idle after a turn (the scripted executor
/// keeps running between turns, as the Claude Code CLI does) have it
/// stopped, with no error logged, and are put away. A link that then
/// reconnects and attaches every one of them, and a rule change pushed to
/// each, load none of them: the rules are kept with the sessions on disk.
/// A message then resumes one, with the new rules in force, and its events
/// come through the forwarder attached while it was put away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_executors_are_stopped_and_a_reconnect_or_rule_push_loads_no_session_put_away() {
    use duraclaw_core::protocol::{RuleAction, RuleEntry, RuleScope};
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().canonicalize().unwrap();
    let db = root.join("gateway.db");
    let mut ids = Vec::new();
    for i in 0..N {
        // One worktree each: a running executor holds its worktree.
        init_repo(&root.join(format!("projects/app{i}")));
        ids.push(format!("idle-{i:02}"));
    }
    let gw = gateway(&root, &db, one_text_turn()).await;
    gw.set_executor_idle(IDLE);
    let (addr, _task) = support::serve_link(&gw, SECRET).await;
    let mut ws = open(addr, SECRET, DEADLINE).await;
    for (i, id) in ids.iter().enumerate() {
        let wt = root.join(format!("projects/app{i}")).display().to_string();
        send(&mut ws, &command(&format!("{id}/x"), id, execute(wt, "go"))).await;
        send(
            &mut ws,
            &ToGateway::Attach {
                session_id: id.clone(),
                after_gseq: 0,
            },
        )
        .await;
    }
    // Every event acknowledged as it comes, until all are put away.
    let mut last = std::collections::HashMap::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let ended = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e, Event::Result(_)))
            .count()
    };
    while ended(&events) < N || gw.loaded_count().await > 0 {
        assert!(
            Instant::now() < deadline,
            "{} sessions still in memory",
            gw.loaded_count().await
        );
        if let Ok(frame) =
            tokio::time::timeout(Duration::from_millis(20), recv(&mut ws, DEADLINE)).await
        {
            match frame {
                FromGateway::Event {
                    session_id,
                    gseq,
                    event,
                } => {
                    send(
                        &mut ws,
                        &ToGateway::Ack {
                            session_id: session_id.clone(),
                            gseq,
                        },
                    )
                    .await;
                    last.insert(session_id, gseq);
                    events.push(event);
                }
                FromGateway::CommandResult(r) => assert!(r.ok, "{r:?}"),
                _ => {}
            }
        }
    }
    assert_eq!(ended(&events), N);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Error(_))),
        "a stopped executor was reported as a failure: {events:?}"
    );
    drop(ws);

    // The host's reconnect: attach each after what it has, push rules.
    let mut loads = gw.loads();
    let rules = vec![RuleEntry {
        id: Some("r1".into()),
        scope: RuleScope::User,
        rule: "Bash(make)".into(),
        action: RuleAction::Allow,
    }];
    let mut ws = open(addr, SECRET, DEADLINE).await;
    for id in &ids {
        send(
            &mut ws,
            &ToGateway::Attach {
                session_id: id.clone(),
                after_gseq: last[id],
            },
        )
        .await;
        send(
            &mut ws,
            &ToGateway::Rules {
                session_id: id.clone(),
                rules: rules.clone(),
            },
        )
        .await;
    }
    // The link handles frames in order: once the pong is back, it has
    // handled every attach and rules frame.
    send(&mut ws, &ToGateway::Ping { nonce: 7 }).await;
    loop {
        match recv(&mut ws, DEADLINE).await {
            FromGateway::Pong { nonce: 7 } => break,
            FromGateway::Event { event, .. } => panic!("an event of a session put away: {event:?}"),
            _ => {}
        }
    }
    assert!(
        loads.try_recv().is_err(),
        "a reconnect or a rule push loaded a session put away"
    );
    assert_eq!(gw.loaded_count().await, 0);
    let directory = SqliteDirectory::open(&db).await.unwrap();
    for meta in directory.list_all().await.unwrap() {
        let parked = meta.parked.expect("still put away");
        assert_eq!(parked.rules, rules, "{}", meta.session_id);
    }

    // A message resumes one; its events come over the dormant forwarder.
    let id = &ids[3];
    send(
        &mut ws,
        &command(
            "m1",
            id,
            Command::Message(UserTurn {
                text: "continue".into(),
            }),
        ),
    )
    .await;
    let mut ok = None;
    let mut said = false;
    while !said || ok.is_none() {
        match recv(&mut ws, DEADLINE).await {
            FromGateway::CommandResult(r) if r.id == "m1" => ok = Some(r.ok),
            FromGateway::Event {
                session_id,
                gseq,
                event,
            } => {
                assert_eq!(&session_id, id);
                assert!(gseq > last[id], "gseq {gseq} sent again");
                assert!(!matches!(event, Event::Error(_)), "{event:?}");
                said |=
                    matches!(&event, Event::Assistant(a) if a.text.contains("You said: continue"));
            }
            _ => {}
        }
    }
    assert_eq!(ok, Some(true));
    let session = gw.loaded(id).await.expect("loaded again");
    assert_eq!(session.policy().scoped_rules().rules().len(), 1);
}

/// The events of session `id` after `after` up to (and with) the first
/// that `last` matches, read from its log (bounded).
async fn events_through(
    gw: &Gateway,
    id: &str,
    after: u64,
    last: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let session = gw.session(id).await.unwrap();
    let mut sub = session.log().subscribe(after);
    let mut events = Vec::new();
    loop {
        let e = tokio::time::timeout(DEADLINE, sub.next())
            .await
            .unwrap_or_else(|_| panic!("not there within the deadline: {events:?}"))
            .expect("the log closed")
            .unwrap();
        let event = e.event().unwrap();
        let done = last(&event);
        events.push(event);
        if done {
            return events;
        }
    }
}

/// The events of session `id` after `after` through the turn's `result`.
async fn until_result(gw: &Gateway, id: &str, after: u64) -> Vec<Event> {
    events_through(gw, id, after, |e| matches!(e, Event::Result(_))).await
}

/// A turn silent past the executor's idle bound before its first word (a
/// model thinking; the executor's `session.init`, which the Claude Code CLI
/// sends at the start of every turn, already logged and the turn's
/// command no longer waiting) is a turn at work, not an idle executor: it
/// is not stopped, and ends with its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_silent_past_the_idle_bound_before_its_first_word_is_not_stopped() {
    let (_dir, root, wt) = project();
    let script = Script {
        turns: vec![vec![Step::Text {
            text: "Thought it over.".into(),
            chunks: 1,
            // Ten times the idle bound before the first word.
            delay_ms: 1_000,
        }]],
    };
    let gw = gateway(&root, &root.join("gateway.db"), script).await;
    gw.set_executor_idle(Duration::from_millis(100));
    let ok = gw
        .apply(envelope("think/x", "think", execute(wt, "go")))
        .await;
    assert!(ok.ok, "{ok:?}");
    let events = until_result(&gw, "think", 0).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Assistant(a) if a.text == "Thought it over.")),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(Event::Result(r)) if !r.is_error),
        "{events:?}"
    );
}

/// An executor resumed without a prompt announces itself
/// (`session.init`) before any turn: that is not the start of the turn of
/// the message sent next. The message's own turn clears its mark, so a
/// gateway restarted after that turn ended does not run the message again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_after_a_resume_without_prompt_is_not_run_again_after_a_restart() {
    use duraclaw_core::protocol::Resume;
    let (_dir, root, wt) = project();
    let db = root.join("gateway.db");
    let gw = gateway(&root, &db, one_text_turn()).await;
    let ok = gw
        .apply(envelope("r/x", "r", execute(wt.clone(), "go")))
        .await;
    assert!(ok.ok, "{ok:?}");
    let first = until_result(&gw, "r", 0).await;
    let executor_session_id = first
        .iter()
        .find_map(|e| match e {
            Event::SessionInit(i) => i.executor_session_id.clone(),
            _ => None,
        })
        .expect("a session.init");
    gw.shutdown().await;
    drop(gw);

    // Restarted: resumed with no prompt, then a message.
    let gw = gateway(&root, &db, one_text_turn()).await;
    let store = gw.session("r").await.unwrap().log().store().clone();
    let head = store.head().await.unwrap().last_seq;
    let ok = gw
        .apply(envelope(
            "r/resume",
            "r",
            Command::Resume(Resume {
                executor_session_id,
                worktree: wt,
                prompt: None,
                model: None,
                agent: None,
            }),
        ))
        .await;
    assert!(ok.ok, "{ok:?}");
    // The resumed executor announced itself before the message is sent.
    events_through(&gw, "r", head, |e| matches!(e, Event::SessionInit(_))).await;
    let ok = gw
        .apply(envelope(
            "r/m1",
            "r",
            Command::Message(UserTurn {
                text: "once".into(),
            }),
        ))
        .await;
    assert!(ok.ok, "{ok:?}");
    let turn = until_result(&gw, "r", head).await;
    assert!(
        turn.iter()
            .any(|e| matches!(e, Event::Assistant(a) if a.text.contains("You said: once"))),
        "{turn:?}"
    );
    assert!(
        store.unforwarded().await.unwrap().is_empty(),
        "the message's turn ran and its mark is still set"
    );
    let ran = store.head().await.unwrap().last_seq;
    gw.shutdown().await;
    drop((gw, store));

    // Restarted again: nothing is run again, nothing is logged.
    let gw = gateway(&root, &db, one_text_turn()).await;
    let store = gw.session("r").await.unwrap().log().store().clone();
    let after = store.read_after(ran, 16).await.unwrap();
    assert!(
        after.is_empty(),
        "the restart logged {:?}",
        after.iter().map(|e| e.event()).collect::<Vec<_>>()
    );
    gw.shutdown().await;
}
