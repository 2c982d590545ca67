//! The ACP executor beyond the conformance suite: every update kind, each
//! permission option kind, crash, garbage, hang, resume with and without
//! `loadSession`, unapproved tools, and the client side (files, terminals).

use std::sync::Arc;
use std::time::Duration;

use duraclaw_approval::rules::RuleSet;
use duraclaw_approval::{MemoryGate, PolicyGate};
use duraclaw_core::approval::DynApprovalGate;
use duraclaw_core::executor::{EventSink, ExecutorSession, StartSpec};
use duraclaw_core::protocol::{
    AssistantPhase, DecidedBy, Decision, Event, QuestionKind, RuleAction, RuleEntry, RuleScope,
};
use duraclaw_gateway::acp::{AcpAgent, AcpLimits};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{AcpRig, acp_limits, acp_rig};

#[derive(Debug)]
struct Collect(mpsc::UnboundedSender<Event>);

#[async_trait::async_trait]
impl EventSink for Collect {
    async fn emit(&self, event: Event) -> duraclaw_core::Result<()> {
        let _ = self.0.send(event);
        Ok(())
    }
}

/// A started session and what it logged.
struct Run {
    rig: AcpRig,
    gate: DynApprovalGate,
    session: Box<dyn ExecutorSession>,
    rx: mpsc::UnboundedReceiver<Event>,
    events: Vec<Event>,
}

const WAIT: Duration = Duration::from_secs(30);

impl Run {
    async fn start(rig: AcpRig, gate: DynApprovalGate, prompt: &str) -> Run {
        let (tx, rx) = mpsc::unbounded_channel();
        let spec = StartSpec::new("s1", rig.worktree.display().to_string()).with_prompt(prompt);
        let session = tokio::time::timeout(
            WAIT,
            rig.executor
                .start_with(spec, gate.clone(), Arc::new(Collect(tx))),
        )
        .await
        .expect("the session started in time")
        .expect("the session started");
        Run {
            rig,
            gate,
            session,
            rx,
            events: Vec::new(),
        }
    }

    /// Takes events until `done` holds for one; returns it.
    async fn until(&mut self, what: &str, done: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some(event)) = next else {
                panic!("no {what} in time; events: {:#?}", self.events);
            };
            self.events.push(event.clone());
            if done(&event) {
                return event;
            }
        }
    }

    async fn result(&mut self) -> duraclaw_core::protocol::TurnResult {
        match self
            .until("result", |e| matches!(e, Event::Result(_)))
            .await
        {
            Event::Result(r) => r,
            _ => unreachable!(),
        }
    }

    async fn question(&mut self) -> duraclaw_core::protocol::UserQuestion {
        match self
            .until("question", |e| matches!(e, Event::UserQuestion(_)))
            .await
        {
            Event::UserQuestion(q) => q,
            _ => unreachable!(),
        }
    }

    async fn decide(&self, question_id: &str, decision: Decision) {
        self.gate
            .decide(question_id, decision, DecidedBy::new("test"))
            .await
            .unwrap();
    }

    async fn error(&mut self, code: &str) -> duraclaw_core::protocol::ErrorEvent {
        let code = code.to_owned();
        match self
            .until(
                &format!("error {code}"),
                |e| matches!(e, Event::Error(x) if x.code.as_deref() == Some(code.as_str())),
            )
            .await
        {
            Event::Error(e) => e,
            _ => unreachable!(),
        }
    }

    fn tool_results(&self) -> Vec<duraclaw_core::protocol::ToolResult> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::ToolResult(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    fn finals(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Assistant(a) if a.phase == AssistantPhase::Final => Some(a.text.clone()),
                _ => None,
            })
            .collect()
    }

    /// Waits until the agent's process ended.
    async fn ended(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.session.is_running() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the agent still runs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starting with the gate (a helper so that tests read as one call).
trait StartWith {
    async fn start_with(
        &self,
        spec: StartSpec,
        gate: DynApprovalGate,
        sink: Arc<Collect>,
    ) -> duraclaw_core::Result<Box<dyn ExecutorSession>>;
}

impl StartWith for duraclaw_gateway::acp::AcpExecutor {
    async fn start_with(
        &self,
        spec: StartSpec,
        gate: DynApprovalGate,
        sink: Arc<Collect>,
    ) -> duraclaw_core::Result<Box<dyn ExecutorSession>> {
        use duraclaw_core::executor::Executor;
        self.start(spec, gate, sink).await
    }
}

fn memory_gate() -> DynApprovalGate {
    Arc::new(MemoryGate::new())
}

fn rig(turns: Value) -> AcpRig {
    acp_rig(turns, json!({}), |_| {}, acp_limits())
}

fn allow(remember: bool) -> Decision {
    Decision::Allow {
        updated_input: None,
        remember,
    }
}

#[tokio::test]
async fn every_update_kind_is_shown() {
    let turns = json!([[
        { "do": "thought", "text": "Let me think. " },
        { "do": "thought", "text": "Done thinking." },
        { "do": "plan", "entries": ["Read the code", "Fix it"] },
        { "do": "text", "text": "Here is the answer.", "chunks": 4 },
        { "do": "usage", "cost": 0.25 },
        { "do": "mode", "mode": "plan" },
    ]]);
    let mut run = Run::start(rig(turns), memory_gate(), "Go").await;
    let r = run.result().await;
    assert!(!r.is_error, "{r:?}");
    assert_eq!(r.subtype.as_deref(), Some("end_turn"));
    assert_eq!(r.cost_usd, Some(0.25));
    assert_eq!(
        r.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((20, 10))
    );
    let kinds: Vec<String> = run
        .events
        .iter()
        .map(|e| match e {
            Event::Unknown(v) => v["type"].as_str().unwrap_or("?").to_owned(),
            Event::Assistant(a) => format!("assistant.{:?}", a.phase),
            other => other.type_name().to_owned(),
        })
        .collect();
    let first = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k}: {kinds:?}"))
    };
    assert_eq!(kinds[0], "session.init");
    assert!(first("acp.thought") < first("acp.plan"), "{kinds:?}");
    assert!(first("acp.plan") < first("assistant.Delta"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "assistant.Delta").count(),
        4,
        "{kinds:?}"
    );
    assert!(first("assistant.Final") < first("result"), "{kinds:?}");
    let thought = run.events.iter().find_map(|e| match e {
        Event::Unknown(v) if v["type"] == "acp.thought" => Some(v["text"].clone()),
        _ => None,
    });
    assert_eq!(thought, Some(json!("Let me think. Done thinking.")));
    let plan = run.events.iter().find_map(|e| match e {
        Event::Unknown(v) if v["type"] == "acp.plan" => Some(v["entries"].clone()),
        _ => None,
    });
    assert_eq!(plan.unwrap()[1]["content"], "Fix it");
    assert_eq!(run.finals(), ["Here is the answer."]);
    assert!(run.events.iter().any(|e| matches!(e,
        Event::Notice(n) if n.code == "mode_changed" && n.permission_mode.as_deref() == Some("plan"))));
    run.session.shutdown().await.unwrap();
}

/// Each decision reaches the agent as the option of the right kind.
#[tokio::test]
async fn decisions_map_to_each_permission_option_kind() {
    // Each call differs: an "allow for this session" answers only the same input.
    let tool = |n: u32, options: Value| json!([{ "do": "tool", "input": { "command": format!("ls {n}") }, "result": "ran", "options": options }]);
    let all = json!(["allow_once", "allow_always", "reject_once", "reject_always"]);
    let turns = json!([
        tool(0, all.clone()),
        tool(1, all.clone()),
        tool(2, all.clone()),
        tool(3, json!(["allow_once", "reject_always"])),
        tool(4, all.clone()),
    ]);
    let mut run = Run::start(rig(turns), memory_gate(), "1").await;
    let deny = Decision::Deny {
        reason: "no".into(),
        interrupt: false,
    };
    let plays = [
        (allow(false), "opt-allow_once", false),
        (allow(true), "opt-allow_always", false),
        (deny.clone(), "opt-reject_once", true),
        (deny, "opt-reject_always", true),
        (Decision::Cancelled { reason: None }, "cancelled", true),
    ];
    for (i, (decision, option, is_error)) in plays.into_iter().enumerate() {
        if i > 0 {
            run.session
                .send_message(&format!("{}", i + 1))
                .await
                .unwrap();
        }
        let q = run.question().await;
        let QuestionKind::Permission {
            tool_name, input, ..
        } = &q.kind
        else {
            panic!("not a permission question: {q:?}");
        };
        assert_eq!(tool_name, "execute");
        assert_eq!(input, &json!({ "command": format!("ls {i}") }));
        run.decide(&q.question_id, decision).await;
        let r = run.result().await;
        let results = run.tool_results();
        let last = results.last().expect("a tool result");
        assert_eq!(Some(last.tool_use_id.clone()), q.tool_use_id);
        assert_eq!(last.is_error, is_error, "{last:?}");
        let text = last.content.as_str().unwrap_or_default();
        assert!(text.contains(&format!("[{option}]")), "turn {i}: {text}");
        assert_eq!(r.is_error, option == "cancelled", "{r:?}");
    }
    run.session.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_crash_is_an_error_with_the_exit_status_and_stderr() {
    let turns = json!([[{ "do": "text", "text": "About to crash." }, { "do": "crash" }]]);
    let mut run = Run::start(rig(turns), memory_gate(), "Go").await;
    let e = run.error("executor_exited").await;
    assert_eq!(e.exit_status, Some(3));
    assert!(
        e.stderr_tail
            .as_deref()
            .unwrap_or_default()
            .contains("the script crashes here"),
        "{e:?}"
    );
    run.ended().await;
    assert!(!run.events.iter().any(|e| matches!(e, Event::Result(_))));
    assert!(run.session.send_message("again").await.is_err());
}

#[tokio::test]
async fn garbage_is_an_error_and_a_flood_of_it_stops_the_agent() {
    let turns = json!([[{ "do": "garbage", "lines": 25 }, { "do": "stall" }]]);
    let mut run = Run::start(rig(turns), memory_gate(), "Go").await;
    let first = run.error("executor_garbage").await;
    assert!(
        first.message.contains("this is not JSON, line 0"),
        "{first:?}"
    );
    let stopped = run.error("executor_garbage").await;
    assert!(stopped.message.contains("it was stopped"), "{stopped:?}");
    run.ended().await;
}

#[tokio::test]
async fn a_hung_agent_is_an_error_and_is_stopped() {
    let turns = json!([[{ "do": "text", "text": "Then silence." }, { "do": "hang" }]]);
    let limits = AcpLimits {
        idle_timeout: Duration::from_millis(500),
        ..acp_limits()
    };
    let mut run = Run::start(
        acp_rig(turns, json!({}), |_| {}, limits),
        memory_gate(),
        "Go",
    )
    .await;
    let e = run.error("executor_hung").await;
    assert!(e.message.contains("wrote nothing"), "{e:?}");
    run.ended().await;
}

#[tokio::test]
async fn an_agent_that_never_answers_a_request_fails_the_start() {
    let limits = AcpLimits {
        request_timeout: Duration::from_millis(500),
        ..acp_limits()
    };
    let rig = acp_rig(
        json!([]),
        json!({ "hang_on": "session/new" }),
        |_| {},
        limits,
    );
    let (tx, _rx) = mpsc::unbounded_channel();
    let spec = StartSpec::new("s1", rig.worktree.display().to_string());
    let started = tokio::time::timeout(
        WAIT,
        rig.executor
            .start_with(spec, memory_gate(), Arc::new(Collect(tx))),
    )
    .await
    .expect("the start gave up in time");
    let err = started.expect_err("a start with no answer fails");
    assert!(err.to_string().contains("did not start a session"), "{err}");
}

#[tokio::test]
async fn a_missing_command_is_refused_by_check() {
    use duraclaw_core::executor::Executor;
    let rig = acp_rig(
        json!([]),
        json!({}),
        |a: &mut AcpAgent| a.command = "no-such-agent-anywhere".into(),
        acp_limits(),
    );
    let err = rig.executor.check().await.expect_err("no such command");
    assert!(err.to_string().contains("no-such-agent-anywhere"), "{err}");
}

/// With `loadSession`, a resume loads the session and shows none of the
/// replayed history; without, a fresh session starts with a notice.
#[tokio::test]
async fn resume_loads_or_starts_fresh_with_a_notice() {
    for load in [true, false] {
        let turns = json!([
            [{ "do": "text", "text": "First answer." }],
            [{ "do": "text", "text": "Second answer." }],
        ]);
        let rig = acp_rig(turns, json!({ "load_session": load }), |_| {}, acp_limits());
        let mut run = Run::start(rig, memory_gate(), "One").await;
        run.result().await;
        run.session.shutdown().await.unwrap();
        let first_id = run.events.iter().find_map(|e| match e {
            Event::SessionInit(i) => i.executor_session_id.clone(),
            _ => None,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let spec = StartSpec::new("s1", run.rig.worktree.display().to_string())
            .with_resume(first_id.clone().unwrap())
            .with_prompt("Two");
        let session = run
            .rig
            .executor
            .start_with(spec, run.gate.clone(), Arc::new(Collect(tx)))
            .await
            .unwrap();
        run.rx = rx;
        run.session = session;
        let mark = run.events.len();
        run.result().await;
        let after = &run.events[mark..];
        let Some(Event::SessionInit(init)) = after.first() else {
            panic!("no session_init first: {after:?}");
        };
        let fresh_notice = after
            .iter()
            .any(|e| matches!(e, Event::Notice(n) if n.code == "agent_resumed_fresh"));
        if load {
            assert_eq!(init.executor_session_id, first_id);
            assert!(!fresh_notice);
        } else {
            assert_ne!(init.executor_session_id, first_id);
            assert!(fresh_notice, "{after:?}");
        }
        let finals: Vec<&str> = after
            .iter()
            .filter_map(|e| match e {
                Event::Assistant(a) => Some(a.text.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            !finals.iter().any(|t| t.contains("First")),
            "history shown again: {finals:?}"
        );
        assert!(finals.contains(&"Second answer."), "{finals:?}");
        run.session.shutdown().await.unwrap();
    }
}

/// A tool the agent runs without asking ends the session, unless a rule
/// allows it.
#[tokio::test]
async fn a_tool_run_without_asking_ends_the_session() {
    let turns = json!([[
        { "do": "tool", "title": "Sneaky", "kind": "edit", "input": { "path": "x" }, "ask": false, "result": "done" },
        { "do": "text", "text": "After." },
    ]]);
    let mut run = Run::start(rig(turns.clone()), memory_gate(), "Go").await;
    let e = run.error("unapproved_tool").await;
    assert!(
        e.message
            .starts_with("a tool ran without approval: edit (call-1)"),
        "{e:?}"
    );
    run.ended().await;
    assert!(run.session.send_message("more").await.is_err());
    assert!(!run.finals().iter().any(|t| t.contains("After")));

    // A rule allowing `edit`: logged as the rule's decision, and the turn goes on.
    let gate = allowed_by("r-edit", "edit");
    let mut run = Run::start(rig(turns), gate, "Go").await;
    let r = run.result().await;
    assert!(!r.is_error, "{r:?}");
    assert!(run.events.iter().any(|e| matches!(e,
        Event::Notice(n) if n.code == "rule_decision" && n.tool_use_id.as_deref() == Some("call-1"))));
    assert!(
        !run.events.iter().any(|e| matches!(e, Event::Error(_))),
        "{:?}",
        run.events
    );
    assert_eq!(run.finals().last().map(String::as_str), Some("After."));
    run.session.shutdown().await.unwrap();
}

/// Files: a write needs an allowed tool call running, and stays in the
/// worktree; reads too. Terminals run in the worktree without the
/// gateway's secret.
#[tokio::test]
async fn files_and_terminals_are_confined() {
    let turns = json!([
        // Unasked write: refused.
        [{ "do": "write", "path": "unasked.txt", "content": "x" }],
        // Asked: the write runs, escapes do not, the terminal runs.
        [{ "do": "tool", "kind": "edit", "input": { "path": "ok.txt" }, "result": "edited", "effects": [
            { "do": "write", "path": "ok.txt", "content": "fine" },
            { "do": "write", "path": "../outside.txt", "content": "x" },
            { "do": "write", "path": "link/escape.txt", "content": "x" },
            { "do": "read", "path": "README.md" },
            { "do": "terminal", "command": "sh", "args": ["-c", "echo pwd=$(pwd) keep=$KEEP secret=$CC_GATEWAY_SECRET_X"] },
        ] }],
        // After the call completed: refused again.
        [{ "do": "write", "path": "late.txt", "content": "x" },
         { "do": "terminal", "command": "true" }],
    ]);
    let rig = acp_rig(
        turns,
        json!({}),
        |a: &mut AcpAgent| {
            a.env.insert("KEEP".into(), "yes".into());
            a.env.insert("CC_GATEWAY_SECRET_X".into(), "leak".into());
        },
        acp_limits(),
    );
    std::os::unix::fs::symlink(&rig.root, rig.worktree.join("link")).unwrap();
    let wt = rig.worktree.clone();
    let mut run = Run::start(rig, memory_gate(), "1").await;
    run.result().await;
    assert!(
        run.finals()[0].contains("write refused"),
        "{:?}",
        run.finals()
    );
    assert!(!wt.join("unasked.txt").exists());

    run.session.send_message("2").await.unwrap();
    let q = run.question().await;
    run.decide(&q.question_id, allow(false)).await;
    run.result().await;
    assert_eq!(std::fs::read_to_string(wt.join("ok.txt")).unwrap(), "fine");
    assert!(!wt.join("../outside.txt").exists());
    assert!(!run.rig.root.join("escape.txt").exists());
    let said = run.finals().join(" ");
    assert!(said.contains("wrote ok.txt"), "{said}");
    assert_eq!(said.matches("write refused").count(), 3, "{said}");
    assert!(said.contains("read: hello"), "{said}");
    assert!(
        said.contains(&format!(
            "terminal exited 0: pwd={} keep=yes secret=.",
            wt.display()
        )),
        "{said}"
    );

    run.session.send_message("3").await.unwrap();
    run.result().await;
    let said = run.finals().last().cloned().unwrap_or_default();
    assert!(
        said.contains("write refused") && said.contains("terminal refused"),
        "{said}"
    );
    assert!(!wt.join("late.txt").exists());
    run.session.shutdown().await.unwrap();
}

#[tokio::test]
async fn modes_switch_through_the_agent() {
    let turns = json!([[{ "do": "text", "text": "Hi." }]]);
    let rig = acp_rig(
        turns,
        json!({ "modes": ["default", "plan"] }),
        |_| {},
        acp_limits(),
    );
    let mut run = Run::start(rig, memory_gate(), "Go").await;
    run.result().await;
    let Some(Event::SessionInit(init)) = run.events.first() else {
        panic!("no session_init");
    };
    assert_eq!(init.permission_mode.as_deref(), Some("default"));
    run.session.set_permission_mode("plan").await.unwrap();
    run.until("the mode notice", |e| {
        matches!(e, Event::Notice(n) if n.code == "mode_changed" && n.permission_mode.as_deref() == Some("plan"))
    })
    .await;
    assert!(
        run.session
            .set_permission_mode("bypassPermissions")
            .await
            .is_err()
    );
    assert!(run.session.set_model("gpt-9").await.is_err());
    run.session.shutdown().await.unwrap();
}

/// A terminal still running when the session stops is killed with it.
#[tokio::test]
async fn a_running_terminal_is_killed_with_the_session() {
    let turns = json!([[{ "do": "tool", "input": { "command": "sleep" }, "effects": [
        { "do": "terminal", "command": "sh", "args": ["-c", "echo $$ > term.pid; exec sleep 300"] },
    ] }]]);
    let rig = rig(turns);
    let pid_file = rig.worktree.join("term.pid");
    let mut run = Run::start(rig, memory_gate(), "Go").await;
    let q = run.question().await;
    run.decide(&q.question_id, allow(false)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the terminal never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());
    tokio::time::timeout(WAIT, run.session.shutdown())
        .await
        .expect("the stop was quick")
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while proc_dir.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the terminal outlived the session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Through the gateway: an agent's unasked tool closes the session there
/// too (the executor found it, not the gateway's own check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_gateway_an_unasked_tool_closes_the_session() {
    use duraclaw_core::protocol::CommandEnvelope;
    use duraclaw_core::state::SessionState;
    use duraclaw_gateway::server::{Gateway, GatewayOptions};
    use duraclaw_gateway::worktree::WorktreeIndex;

    let turns = json!([[
        { "do": "tool", "kind": "edit", "input": { "path": "x" }, "ask": false },
        { "do": "text", "text": "After." },
    ]]);
    let rig = rig(turns);
    let gateway = Gateway::new(GatewayOptions {
        directory: Arc::new(
            duraclaw_store::SqliteDirectory::open(rig.root.join("gateway.db"))
                .await
                .unwrap(),
        ),
        executor: Arc::new(rig.executor.clone()),
        worktrees: WorktreeIndex::new(vec![format!("{}/*", rig.root.display())]).unwrap(),
        approval_timeout: None,
    })
    .await
    .unwrap();
    let r = gateway
        .apply(CommandEnvelope {
            id: "c-1".into(),
            session_id: "s1".into(),
            command: super::support::execute(rig.worktree.display().to_string(), "Go"),
        })
        .await;
    assert!(r.ok, "{r:?}");
    let session = gateway.session("s1").await.unwrap();
    let mut sub = session.log().subscribe(0);
    loop {
        let e = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("no unapproved_tool error in time")
            .unwrap()
            .unwrap()
            .event()
            .unwrap();
        if let Event::Error(err) = &e
            && err.code.as_deref() == Some("unapproved_tool")
        {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let meta = session.log().store().meta().await.unwrap();
        if meta.state == SessionState::Terminated && !session.is_running().await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session is not closed on the gateway: {:?}",
            meta.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A question carries the agent's whole input and title, hostile
/// characters and all: the UI shows them safely, nothing is cut here.
#[tokio::test]
async fn a_permission_question_carries_the_whole_input() {
    let long = "x".repeat(50_000);
    let title = "Run \u{202e}gnp.exe\u{202c}\nsecond line <script>";
    let input = json!({ "command": format!("echo {long}"), "note": "\u{0}\u{7}" });
    let turns = json!([[{ "do": "tool", "title": title, "input": input }]]);
    let mut run = Run::start(rig(turns), memory_gate(), "Go").await;
    let q = run.question().await;
    let QuestionKind::Permission {
        input: asked,
        description,
        ..
    } = &q.kind
    else {
        panic!("not a permission question: {q:?}");
    };
    assert_eq!(asked, &input);
    assert_eq!(description.as_deref(), Some(title));
    run.decide(
        &q.question_id,
        Decision::Deny {
            reason: "no".into(),
            interrupt: false,
        },
    )
    .await;
    run.result().await;
    run.session.shutdown().await.unwrap();
}

/// "Deny and stop" denies the call and cancels the turn.
#[tokio::test]
async fn a_deny_that_interrupts_cancels_the_turn() {
    let turns = json!([
        [{ "do": "tool", "input": { "command": "rm -rf build" } }, { "do": "stall" }],
        [{ "do": "text", "text": "Next." }],
    ]);
    let mut run = Run::start(rig(turns), memory_gate(), "Go").await;
    let q = run.question().await;
    run.decide(
        &q.question_id,
        Decision::Deny {
            reason: "stop".into(),
            interrupt: true,
        },
    )
    .await;
    let r = run.result().await;
    assert!(r.is_error, "{r:?}");
    assert_eq!(r.subtype.as_deref(), Some("cancelled"));
    let results = run.tool_results();
    assert!(results.len() == 1 && results[0].is_error, "{results:?}");
    run.session.send_message("Again").await.unwrap();
    let r = run.result().await;
    assert!(!r.is_error, "{r:?}");
    assert_eq!(run.finals().last().map(String::as_str), Some("Next."));
    run.session.shutdown().await.unwrap();
}

/// An agent that streams a call's input (an empty one first) gets one
/// `tool_use` with the whole input, named as the agent names the tool
/// (Zed's Claude adapter says `Bash` in `_meta`), so Claude's rules fit it.
#[tokio::test]
async fn a_streamed_call_is_shown_once_with_its_input_and_name() {
    let input = json!({ "command": "git status" });
    let turns =
        json!([[{ "do": "tool", "input": input, "stream_input": true, "meta_name": "Bash" }]]);
    let gate = allowed_by("r-git", "Bash(git status*)");
    let mut run = Run::start(rig(turns), gate, "Go").await;
    let r = run.result().await;
    assert!(!r.is_error, "{r:?}");
    let uses = tool_uses(&run.events);
    assert_eq!(uses, [("Bash".to_owned(), input)]);
    // The rule written for Claude decided it: no question.
    assert!(
        run.events
            .iter()
            .any(|e| matches!(e, Event::Notice(n) if n.code == "rule_decision"))
    );
    assert!(
        !run.events
            .iter()
            .any(|e| matches!(e, Event::UserQuestion(_)))
    );
    let results = run.tool_results();
    assert!(results.len() == 1 && !results[0].is_error, "{results:?}");
    run.session.shutdown().await.unwrap();
}

/// The model: set at the start from the session's choice, switched
/// mid-session through the agent's `model` option; others refused.
#[tokio::test]
async fn models_switch_through_the_agents_option() {
    let turns = json!([[{ "do": "model" }], [{ "do": "model" }]]);
    let rig = acp_rig(
        turns,
        json!({ "models": ["m1", "m2", "m3"] }),
        |_| {},
        acp_limits(),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let spec = StartSpec::new("s1", rig.worktree.display().to_string())
        .with_prompt("Which?")
        .with_model("m2");
    let session = rig
        .executor
        .start_with(spec, memory_gate(), Arc::new(Collect(tx)))
        .await
        .unwrap();
    let mut run = Run {
        rig,
        gate: memory_gate(),
        session,
        rx,
        events: Vec::new(),
    };
    run.result().await;
    assert_eq!(run.finals().last().map(String::as_str), Some("model: m2"));
    run.session.set_model("m3").await.unwrap();
    run.until("the model notice", |e| {
        matches!(e, Event::Notice(n) if n.code == "model_changed" && n.model.as_deref() == Some("m3"))
    })
    .await;
    run.session.send_message("And now?").await.unwrap();
    run.result().await;
    assert_eq!(run.finals().last().map(String::as_str), Some("model: m3"));
    let refused = run.session.set_model("gpt-9").await.unwrap_err();
    assert!(refused.to_string().contains("gpt-9"), "{refused}");
    run.session.shutdown().await.unwrap();
}

/// An agent that ignores the cancel is stopped once the request bound
/// passes (its silence would take the much longer idle bound).
#[tokio::test]
async fn an_agent_that_ignores_the_cancel_is_stopped() {
    let turns = json!([[{ "do": "text", "text": "Busy." }, { "do": "hang" }]]);
    let limits = AcpLimits {
        request_timeout: Duration::from_millis(500),
        ..acp_limits()
    };
    let mut run = Run::start(
        acp_rig(turns, json!({}), |_| {}, limits),
        memory_gate(),
        "Go",
    )
    .await;
    run.until("a delta", |e| matches!(e, Event::Assistant(_)))
        .await;
    run.session.interrupt().await.unwrap();
    let e = run.error("executor_hung").await;
    assert!(e.message.contains("being cancelled"), "{e:?}");
    run.ended().await;
}

/// A load replays the history, completed tool calls too (as Gemini does),
/// before its answer or after it: none of it is logged again or judged by
/// the gate, and the resumed session goes on.
#[tokio::test]
async fn a_loads_replayed_tool_calls_are_not_taken_as_live() {
    for after_answer in [false, true] {
        let turns = json!([
            [{ "do": "text", "text": "First answer." }],
            [{ "do": "text", "text": "Second answer." }],
            [{ "do": "text", "text": "Third answer." }],
        ]);
        let extra = json!({ "replay_tool": true, "replay_after_answer": after_answer });
        let rig = acp_rig(turns, extra, |_| {}, acp_limits());
        let mut run = Run::start(rig, memory_gate(), "One").await;
        run.result().await;
        run.session.shutdown().await.unwrap();
        let first_id = run.events.iter().find_map(|e| match e {
            Event::SessionInit(i) => i.executor_session_id.clone(),
            _ => None,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let spec = StartSpec::new("s1", run.rig.worktree.display().to_string())
            .with_resume(first_id.clone().unwrap())
            .with_prompt("Two");
        let session = run
            .rig
            .executor
            .start_with(spec, run.gate.clone(), Arc::new(Collect(tx)))
            .await
            .unwrap();
        run.rx = rx;
        run.session = session;
        let mark = run.events.len();
        let r = run.result().await;
        assert!(!r.is_error, "after_answer {after_answer}: {r:?}");
        run.session.send_message("Three").await.unwrap();
        let r = run.result().await;
        assert!(!r.is_error, "after_answer {after_answer}: {r:?}");
        let after = &run.events[mark..];
        let Some(Event::SessionInit(init)) = after.first() else {
            panic!("no session_init first: {after:?}");
        };
        assert_eq!(init.executor_session_id, first_id);
        assert!(
            !after.iter().any(|e| matches!(
                e,
                Event::ToolUse(_) | Event::ToolResult(_) | Event::Error(_)
            )),
            "after_answer {after_answer}: replay shown or judged: {after:#?}"
        );
        let finals: Vec<String> = run.finals();
        assert!(
            finals.ends_with(&["Second answer.".to_owned(), "Third answer.".to_owned()]),
            "after_answer {after_answer}: {finals:?}"
        );
        assert_eq!(
            finals.iter().filter(|t| t.contains("First")).count(),
            1,
            "history shown again: {finals:?}"
        );
        run.session.shutdown().await.unwrap();
    }
}

/// claude-agent-acp may ask before the `tool_call` that names the tool:
/// the question waits for that name, so a rule on Claude's tool name
/// decides it.
/// claude-agent-acp may ask about a call before it has sent the rest of
/// the text that comes before it: that text stays in its message, which
/// closes only when the call is announced.
#[tokio::test]
async fn text_sent_after_a_permission_request_stays_in_its_message() {
    let turns = json!([[
        { "do": "text", "text": "Making a", "chunks": 8 },
        {
            "do": "tool", "input": { "command": "git status" }, "meta_name": "Bash",
            "ask_first": true, "text_after_ask": "nother.",
        },
        { "do": "text", "text": "Done." },
    ]]);
    let gate = allowed_by("r-git", "Bash(git status*)");
    let mut run = Run::start(rig(turns), gate, "Go").await;
    let r = run.result().await;
    assert!(!r.is_error, "{r:?}");
    assert_eq!(
        run.finals(),
        ["Making another.", "Done."],
        "{:#?}",
        run.events
    );
    let use_at = run
        .events
        .iter()
        .position(|e| matches!(e, Event::ToolUse(t) if t.name == "Bash"));
    let first_final = run
        .events
        .iter()
        .position(|e| matches!(e, Event::Assistant(a) if a.phase == AssistantPhase::Final));
    assert!(
        first_final.is_some() && use_at > first_final,
        "{:#?}",
        run.events
    );
}

#[tokio::test]
async fn a_permission_asked_before_the_call_is_named_follows_claudes_rules() {
    let input = json!({ "command": "git status" });
    let turns = json!([[
        { "do": "tool", "input": input, "meta_name": "Bash", "ask_first": true },
        { "do": "text", "text": "Done." },
    ]]);
    let gate = allowed_by("r-git", "Bash(git status*)");
    let mut run = Run::start(rig(turns), gate, "Go").await;
    let r = run.result().await;
    assert!(!r.is_error, "{r:?}");
    let uses = tool_uses(&run.events);
    assert_eq!(uses, [("Bash".to_owned(), input)]);
    assert!(
        run.events.iter().any(|e| matches!(e,
            Event::Notice(n) if n.code == "rule_decision" && n.tool_use_id.as_deref() == Some("call-1"))),
        "{:#?}",
        run.events
    );
    assert!(
        !run.events
            .iter()
            .any(|e| matches!(e, Event::UserQuestion(_))),
        "{:#?}",
        run.events
    );
    let results = run.tool_results();
    assert!(results.len() == 1 && !results[0].is_error, "{results:?}");
    assert_eq!(run.finals().last().map(String::as_str), Some("Done."));
    run.session.shutdown().await.unwrap();
}

/// A turn whose agent asks about a call (`rm -rf build`, no rule for it)
/// before announcing it, and does not announce it while the request
/// waits: the gateway holds the request, waiting for the announcement.
/// The next turn says "Next.".
fn asked_before_it_is_announced() -> Value {
    json!([
        [{ "do": "tool", "input": { "command": "rm -rf build" }, "meta_name": "Bash",
           "ask_first": true, "text_after_ask": "x", "announce": false }],
        [{ "do": "text", "text": "Next." }],
    ])
}

/// A run whose agent (with `options`) asks about a call before announcing
/// it, waited on until the agent streamed the text after its request: the
/// request now waits for the call's announcement.
async fn a_request_waiting_for_its_call(options: Value) -> Run {
    a_run_past_its_first_text(asked_before_it_is_announced(), options).await
}

/// A run of `turns` (the agent with `options`), waited on until the agent
/// streamed its first text, "x".
async fn a_run_past_its_first_text(turns: Value, options: Value) -> Run {
    let rig = acp_rig(turns, options, |_| {}, long_announce_wait());
    let mut run = Run::start(rig, memory_gate(), "Go").await;
    run.until(
        "the text \"x\"",
        |e| matches!(e, Event::Assistant(a) if a.text == "x"),
    )
    .await;
    run
}

/// Limits whose wait for an announcement is far longer than any test:
/// whatever ends the wait here is not its bound.
fn long_announce_wait() -> AcpLimits {
    AcpLimits {
        announce_wait: Duration::from_secs(60),
        ..acp_limits()
    }
}

/// How the scripted agent's permission requests were answered, a line
/// each (`call-1 cancelled`).
fn permission_answers(rig: &AcpRig) -> String {
    std::fs::read_to_string(rig.root.join("state/permissions")).unwrap_or_default()
}

/// The withdrawn request showed nothing: no question opened and its call
/// (the command it asked about) was not shown; nothing ran.
fn nothing_shown_asked_or_run(events: &[Event]) {
    assert!(
        !events.iter().any(
            |e| matches!(e, Event::ToolUse(t) if t.input == json!({ "command": "rm -rf build" }))
        ),
        "a withdrawn request's call was shown: {events:#?}"
    );
    nothing_asked_or_run(events);
}

/// No question opened, and every call the agent reported failed (it
/// reports the call it was refused, as not run, with no input).
fn nothing_asked_or_run(events: &[Event]) {
    assert!(
        !events.iter().any(|e| matches!(e, Event::UserQuestion(_))),
        "a withdrawn request was asked: {events:#?}"
    );
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, Event::ToolResult(t) if !t.is_error)),
        "a call ran: {events:#?}"
    );
}

/// An interrupt while a permission request waits for its call's
/// announcement withdraws it: the agent is answered `cancelled` unasked,
/// no question opens, nothing runs, the turn ends, and the next one runs.
#[tokio::test]
async fn an_interrupt_while_a_request_waits_for_its_call_withdraws_it() {
    let mut run = a_request_waiting_for_its_call(json!({})).await;
    run.session.interrupt().await.unwrap();
    let r = run.result().await;
    assert!(r.is_error, "an interrupted turn: {r:?}");
    assert_eq!(permission_answers(&run.rig), "call-1 cancelled\n");
    run.session.send_message("Again").await.unwrap();
    let r = run.result().await;
    assert!(!r.is_error, "{r:?}");
    assert_eq!(run.finals().last().map(String::as_str), Some("Next."));
    nothing_shown_asked_or_run(&run.events);
    run.session.shutdown().await.unwrap();
}

/// An agent that ends the cancelled turn at once and answers the prompt
/// while its permission request still waits (claude-agent-acp does): the
/// request is answered `cancelled` all the same, nothing is asked, and
/// the next turn runs.
#[tokio::test]
async fn a_turn_cancelled_before_its_waiting_request_withdraws_the_request() {
    let mut run = a_request_waiting_for_its_call(json!({ "cancel_ends_prompt": true })).await;
    run.session.interrupt().await.unwrap();
    let r = run.result().await;
    assert_eq!(r.subtype.as_deref(), Some("cancelled"), "{r:?}");
    // The agent takes the next prompt only once its request is answered.
    run.session.send_message("Again").await.unwrap();
    let r = run.result().await;
    assert!(!r.is_error, "{r:?}");
    assert_eq!(run.finals().last().map(String::as_str), Some("Next."));
    assert_eq!(permission_answers(&run.rig), "call-1 cancelled\n");
    nothing_shown_asked_or_run(&run.events);
    run.session.shutdown().await.unwrap();
}

/// A permission request that crosses the cancel, sent after the agent
/// answered the cancelled prompt (claude-agent-acp's work in flight may
/// still ask), about a call announced first or not: it belongs to the
/// interrupted turn, so it is answered `cancelled` unasked, and the next
/// turn runs.
#[tokio::test]
async fn a_request_after_its_turn_was_cancelled_is_withdrawn() {
    for ask_first in [true, false] {
        let turns = json!([
            [
                { "do": "text", "text": "x" },
                { "do": "stall", "go_on": true },
                { "do": "tool", "input": { "command": "rm -rf build" }, "meta_name": "Bash",
                  "ask_first": ask_first, "announce": false },
            ],
            [{ "do": "text", "text": "Next." }],
        ]);
        // Waited on until the text before the stall.
        let mut run = a_run_past_its_first_text(turns, json!({ "cancel_ends_prompt": true })).await;
        run.session.interrupt().await.unwrap();
        let r = run.result().await;
        assert_eq!(r.subtype.as_deref(), Some("cancelled"), "{r:?}");
        // The agent reports the call it was refused.
        run.until(
            "the refused call's result",
            |e| matches!(e, Event::ToolResult(t) if t.tool_use_id == "call-1"),
        )
        .await;
        assert_eq!(permission_answers(&run.rig), "call-1 cancelled\n");
        run.session.send_message("Again").await.unwrap();
        let r = run.result().await;
        assert!(!r.is_error, "{r:?}");
        assert_eq!(run.finals().last().map(String::as_str), Some("Next."));
        if ask_first {
            nothing_shown_asked_or_run(&run.events);
        } else {
            // The agent announced the call itself: shown, but not asked.
            nothing_asked_or_run(&run.events);
        }
        run.session.shutdown().await.unwrap();
    }
}

/// A permission request about a call of the interrupted turn that comes
/// once the next turn began (the agent's work in flight asking late; ACP
/// requests carry no turn): it is not the new turn's question, so it is
/// answered `cancelled` unasked, and the new turn goes on.
#[tokio::test]
async fn a_late_request_about_an_ended_turns_call_is_not_asked_in_the_next() {
    let turns = json!([
        [{ "do": "tool", "input": { "command": "rm -rf build" } }],
        [
            { "do": "ask_again", "id": "call-1", "input": { "command": "rm -rf build" } },
            { "do": "text", "text": "Next." },
        ],
    ]);
    let mut run = Run::start(rig(turns), memory_gate(), "Go").await;
    // The first turn's question, withdrawn by the interrupt.
    run.question().await;
    run.session.interrupt().await.unwrap();
    let r = run.result().await;
    assert!(r.is_error, "an interrupted turn: {r:?}");
    let asked = run.events.len();
    run.session.send_message("Again").await.unwrap();
    let r = run.result().await;
    assert!(!r.is_error, "{r:?}");
    assert_eq!(run.finals().last().map(String::as_str), Some("Next."));
    assert_eq!(
        permission_answers(&run.rig),
        "call-1 cancelled\ncall-1 cancelled\n"
    );
    let next_turn = &run.events[asked..];
    assert!(
        !next_turn
            .iter()
            .any(|e| matches!(e, Event::UserQuestion(_) | Event::ToolUse(_))),
        "the late request was shown or asked in the next turn: {next_turn:#?}"
    );
    nothing_asked_or_run(next_turn);
    run.session.shutdown().await.unwrap();
}

/// An agent that exits while its permission request waits for the call's
/// announcement: nothing is asked for it, and the request lets go at once
/// (it does not wait out the wait), so the ended session's every task
/// ends and its sink is released.
#[tokio::test]
async fn an_agent_exiting_while_a_request_waits_leaves_no_question() {
    let mut run = a_request_waiting_for_its_call(
        json!({ "modes": ["default", "plan"], "exit_on": "session/set_mode" }),
    )
    .await;
    // The agent exits on it, while its request waits.
    let _ = run.session.set_permission_mode("plan").await;
    run.error("executor_exited").await;
    let Run {
        session,
        mut rx,
        mut events,
        ..
    } = run;
    drop(session);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => events.push(e),
            Ok(None) => break,
            Err(_) => {
                panic!("the ended session still holds its sink (a request waits?): {events:#?}")
            }
        }
    }
    nothing_shown_asked_or_run(&events);
}

/// A stop while a permission request waits for its call's announcement
/// answers it `cancelled` unasked: no question opens, nothing runs.
#[tokio::test]
async fn a_stop_while_a_request_waits_for_its_call_withdraws_it() {
    let mut run = a_request_waiting_for_its_call(json!({})).await;
    run.session.shutdown().await.unwrap();
    assert!(!run.session.is_running());
    // The agent's process has ended: it wrote every answer it got.
    assert_eq!(permission_answers(&run.rig), "call-1 cancelled\n");
    while let Ok(e) = run.rx.try_recv() {
        run.events.push(e);
    }
    nothing_shown_asked_or_run(&run.events);
}

/// An agent that dies while it is started again for a session (after a
/// gateway restart) leaves an `error` in the session's log, not only a
/// refused start.
#[tokio::test]
async fn an_agent_dying_while_it_loads_leaves_an_error() {
    let turns = json!([[{ "do": "text", "text": "First answer." }]]);
    let rig = acp_rig(turns, json!({}), |_| {}, acp_limits());
    let mut run = Run::start(rig, memory_gate(), "One").await;
    run.result().await;
    run.session.shutdown().await.unwrap();
    let first_id = run.events.iter().find_map(|e| match e {
        Event::SessionInit(i) => i.executor_session_id.clone(),
        _ => None,
    });
    // The same agent, now exiting on `session/load`.
    let script = run.rig.root.join("script.json");
    let mut s: Value = serde_json::from_str(&std::fs::read_to_string(&script).unwrap()).unwrap();
    s["exit_on"] = json!("session/load");
    std::fs::write(&script, s.to_string()).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let spec = StartSpec::new("s1", run.rig.worktree.display().to_string())
        .with_resume(first_id.unwrap())
        .with_prompt("Two");
    let started = run
        .rig
        .executor
        .start_with(spec, run.gate.clone(), Arc::new(Collect(tx)))
        .await;
    assert!(started.is_err(), "the start was not refused");
    run.rx = rx;
    let e = run.error("executor_exited").await;
    assert!(e.message.contains("agent `script`"), "{e:?}");
    assert!(
        e.stderr_tail
            .as_deref()
            .is_some_and(|t| t.contains("exits on session/load")),
        "{e:?}"
    );
}

/// A gate whose one user rule `rule` (id `id`) allows.
fn allowed_by(id: &str, rule: &str) -> DynApprovalGate {
    let policy = PolicyGate::new(Vec::new(), memory_gate());
    policy.set_rules(RuleSet::from_entries(
        "",
        &[RuleEntry {
            id: Some(id.into()),
            scope: RuleScope::User,
            rule: rule.into(),
            action: RuleAction::Allow,
        }],
    ));
    Arc::new(policy)
}

/// The `tool_use`s logged, as (name, input).
fn tool_uses(events: &[Event]) -> Vec<(String, Value)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ToolUse(t) => Some((t.name.clone(), t.input.clone())),
            _ => None,
        })
        .collect()
}
