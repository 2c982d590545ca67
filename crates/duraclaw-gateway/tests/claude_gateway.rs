#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The REAL Claude Code CLI (the pinned version) through the gateway: a
//! WebSocket client on 127.0.0.1 speaks the protocol (hello, commands,
//! attach, answers) to an in-process gateway whose executor is
//! [`ClaudeExecutor`], and the CLI talks to the fake Messages API.
//!
//! Covered: a streamed text turn, every tool call gated (Read allowed, Bash
//! denied with a reason, Edit allowed with edited input, AskUserQuestion
//! answered), an abort mid-stream, a resume after a gateway restart (also
//! with a question pending), a CLI killed with SIGKILL (and one killed
//! before it saved its transcript), a cut link, and auth and input checks.
//! Every test bounds its waits; none sleeps to synchronise, except polling
//! for files and processes that no event announces.
//!
//! The approval, abort and resume scenarios run on the oldest supported CLI
//! too (`per_cli!`). The binaries come from `$CLAUDE_BIN` / `$CLAUDE_MIN_BIN`
//! or the cache that `scripts/install-tools.sh claude claude-min` fills;
//! without them the tests fail (they never skip). Run with `--nocapture` to see the timings, and with
//! `DURACLAW_TEST_TRACE=1` to see every event the client receives and the
//! gateway's log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use duraclaw_core::protocol::{
    Abort, Answer, AssistantPhase, Command, CommandEnvelope, CommandResult, DecidedBy, Decision,
    Event, Execute, FromGateway, Hello, NOTICE_AUTO_ALLOWED, NOTICE_RULE_DECISION, QuestionKind,
    Role, RuleAction, RuleEntry, RuleScope, ToGateway, TurnResult, UserQuestion, UserTurn,
    decode_frame, encode_frame,
};
use duraclaw_fake_anthropic::{FakeAnthropic, Latch, RecordedRequest, Turn};
use duraclaw_gateway::claude::{ClaudeConfig, ClaudeExecutor};
use duraclaw_gateway::cli::launch;
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_store::SqliteDirectory;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{Ws, connect_with, init_repo};

const SECRET: &str = "test-secret-0123456789abcdef";
/// The bound on every wait for a frame.
const DEADLINE: Duration = Duration::from_secs(45);
const MODEL: &str = "claude-sonnet-4-5";

fn tracing_on() -> bool {
    std::env::var_os("DURACLAW_TEST_TRACE").is_some()
}

/// The oldest supported CLI ([`support::claude_min_bin`]).
fn claude_min_bin() -> PathBuf {
    support::claude_min_bin()
}

/// Runs each scenario (an `async fn(bin)`) on the pinned CLI and on the
/// oldest supported one, as `<scenario>::pinned` and
/// `<scenario>::oldest_supported`: the minimum version stays true.
macro_rules! per_cli {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pinned() {
                super::$scenario(super::claude_bin()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn oldest_supported() {
                super::$scenario(super::claude_min_bin()).await;
            }
        }
    )*};
}

per_cli!(
    a_read_asks_like_any_tool_and_its_result_holds_the_file,
    a_denied_bash_does_not_run_and_the_model_gets_the_reason,
    an_edit_approved_with_edited_input_writes_the_humans_version,
    ask_user_question_answers_reach_the_model,
    abort_mid_stream_ends_the_turn_and_the_session_goes_on,
    after_a_gateway_restart_a_message_resumes_the_cli_session,
    a_restart_while_a_question_waits_withdraws_it_without_another_model_call,
    a_cli_killed_mid_turn_is_an_error_and_the_next_message_resumes,
    allow_for_this_session_runs_the_same_call_again_without_asking,
);

fn claude_bin() -> PathBuf {
    support::claude_bin()
}

// ---------------------------------------------------------------------------
// The gateway under test
// ---------------------------------------------------------------------------

/// Two git worktrees, the gateway's SQLite outbox, and the CLI's private
/// directories, all in one temporary directory.
struct Harness {
    _dir: tempfile::TempDir,
    root: PathBuf,
    db: PathBuf,
    private: PathBuf,
    bin: PathBuf,
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
    /// On the pinned CLI.
    fn new() -> Self {
        Self::on(claude_bin())
    }

    /// On the CLI `bin`.
    fn on(bin: PathBuf) -> Self {
        if tracing_on() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_writer(std::io::stderr)
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        init_repo(&root.join("projects/app1"));
        init_repo(&root.join("projects/app2"));
        let private = support::private_dirs(&root);
        Harness {
            db: root.join("gateway.db"),
            _dir: dir,
            root,
            private,
            bin,
        }
    }

    /// Whether this harness runs the pinned CLI.
    fn pinned(&self) -> bool {
        self.bin == claude_bin()
    }

    fn worktree(&self, name: &str) -> PathBuf {
        self.root.join("projects").join(name)
    }

    fn wt(&self, name: &str) -> String {
        self.worktree(name).display().to_string()
    }

    fn config(&self, fake: &FakeAnthropic) -> ClaudeConfig {
        let mut cfg = support::claude_config(&self.bin, fake, &self.private);
        cfg.model = MODEL.into();
        cfg
    }

    /// A gateway over this harness's outbox, its CLI talking to `fake`.
    async fn start(&self, fake: &FakeAnthropic) -> Running {
        let directory = Arc::new(SqliteDirectory::open(&self.db).await.unwrap());
        let worktrees = WorktreeIndex::new(vec![format!("{}/projects/*", self.root.display())])
            .unwrap()
            .with_new_worktree_root(self.root.join("wt"));
        let gateway = Gateway::new(GatewayOptions {
            directory,
            executor: Arc::new(ClaudeExecutor::new(self.config(fake))),
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

    /// The pids of CLI processes this test process started in worktree
    /// `name` ([`support::cli_pids`]).
    fn cli_pids(&self, name: &str) -> Vec<i32> {
        support::cli_pids(&self.worktree(name))
    }

    fn cli_pid(&self, name: &str) -> i32 {
        let pids = self.cli_pids(name);
        assert_eq!(pids.len(), 1, "one CLI process in {name}: {pids:?}");
        pids[0]
    }
}

impl Harness {
    /// The CLI's transcript of `executor_session`, if it saved one:
    /// `<config>/projects/<worktree, munged>/<id>.jsonl`.
    fn transcript(&self, executor_session: &str) -> Option<PathBuf> {
        let projects = self.private.join("config/projects");
        std::fs::read_dir(projects)
            .ok()?
            .flatten()
            .map(|d| d.path().join(format!("{executor_session}.jsonl")))
            .find(|p| p.is_file())
    }
}

/// Polls `cond` until it holds, for things that no event announces (files
/// another process writes, processes going away).
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn executor_session_of(events: &[(u64, Event)]) -> String {
    events
        .iter()
        .find_map(|(_, e)| match e {
            Event::SessionInit(i) => i.executor_session_id.clone(),
            _ => None,
        })
        .expect("session.init names the CLI's session")
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

fn alive(pid: i32) -> bool {
    // A zombie still has /proc/<pid>; it is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

// ---------------------------------------------------------------------------
// The test client
// ---------------------------------------------------------------------------

/// An orchestrator's side of the link: events are buffered while it waits
/// for a command's result, and the other way round.
struct Client {
    ws: Ws,
    events: VecDeque<(u64, Event)>,
    results: HashMap<String, CommandResult>,
}

impl Client {
    async fn open(addr: std::net::SocketAddr) -> Client {
        let ws = connect_with(addr, Some(&format!("Bearer {SECRET}")))
            .await
            .unwrap();
        let mut c = Client {
            ws,
            events: VecDeque::new(),
            results: HashMap::new(),
        };
        c.send(&ToGateway::Hello(Hello::new(Role::Orchestrator)))
            .await;
        match c.frame().await {
            FromGateway::Hello(h) => assert_eq!(h.role, Role::Gateway),
            other => panic!("expected hello, got {other:?}"),
        }
        c
    }

    async fn send(&mut self, frame: &ToGateway) {
        self.ws
            .send(Message::text(encode_frame(frame).unwrap()))
            .await
            .unwrap();
    }

    async fn frame(&mut self) -> FromGateway {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("no frame within the deadline")
                .expect("link closed")
                .expect("link error");
            if let Message::Text(t) = msg {
                return decode_frame(t.as_str(), "test frame").unwrap();
            }
        }
    }

    /// Reads one frame into the buffers.
    async fn pump(&mut self) {
        match self.frame().await {
            FromGateway::Event { gseq, event, .. } => self.events.push_back((gseq, event)),
            FromGateway::CommandResult(r) => {
                self.results.insert(r.id.clone(), r);
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }

    /// Sends `command` for `session` and waits for its result.
    async fn command(&mut self, session: &str, command: Command) -> CommandResult {
        // Ids are unique per process: the gateway applies each id once per
        // session, whichever link it came on.
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let id = format!("cmd-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.command_with_id(&id, session, command).await
    }

    async fn command_with_id(
        &mut self,
        id: &str,
        session: &str,
        command: Command,
    ) -> CommandResult {
        self.send(&ToGateway::Command(CommandEnvelope {
            id: id.into(),
            session_id: session.into(),
            command,
        }))
        .await;
        loop {
            if let Some(r) = self.results.remove(id) {
                return r;
            }
            self.pump().await;
        }
    }

    async fn ok(&mut self, session: &str, command: Command) {
        let r = self.command(session, command).await;
        assert!(r.ok, "command refused: {:?}", r.error);
    }

    async fn attach(&mut self, session: &str, after_gseq: u64) {
        self.send(&ToGateway::Attach {
            session_id: session.into(),
            after_gseq,
        })
        .await;
    }

    async fn next_event(&mut self) -> (u64, Event) {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            self.pump().await;
        }
    }

    /// Events up to and including the first for which `stop` holds.
    async fn until(&mut self, mut stop: impl FnMut(&Event) -> bool) -> Vec<(u64, Event)> {
        let mut got = Vec::new();
        loop {
            let (gseq, event) = self.next_event().await;
            if tracing_on() {
                eprintln!("{gseq} {}", serde_json::to_string(&event).unwrap());
            }
            let done = stop(&event);
            got.push((gseq, event));
            if done {
                return got;
            }
        }
    }

    async fn until_result(&mut self) -> Vec<(u64, Event)> {
        self.until(|e| matches!(e, Event::Result(_))).await
    }

    async fn until_question(&mut self) -> (Vec<(u64, Event)>, UserQuestion) {
        let got = self.until(|e| matches!(e, Event::UserQuestion(_))).await;
        let Some((_, Event::UserQuestion(q))) = got.last() else {
            unreachable!()
        };
        let q = q.clone();
        (got, q)
    }

    async fn answer(&mut self, session: &str, question: &UserQuestion, decision: Decision) {
        self.ok(
            session,
            Command::Answer(Answer {
                question_id: question.question_id.clone(),
                decision,
                by: Some(DecidedBy::new("alice")),
                allow_worktree_rule: None,
            }),
        )
        .await;
    }
}

fn execute(worktree: String, prompt: &str) -> Command {
    Command::Execute(Execute {
        worktree,
        prompt: prompt.into(),
        model: None,
        permission_mode: None,
        system_prompt: None,
        rules: None,
        new_worktree: None,
        fork: None,
        agent: None,
    })
}

fn message(text: &str) -> Command {
    Command::Message(UserTurn { text: text.into() })
}

fn allow() -> Decision {
    Decision::Allow {
        updated_input: None,
        remember: false,
    }
}

// ---------------------------------------------------------------------------
// Assertions on event lists
// ---------------------------------------------------------------------------

fn gseqs(events: &[(u64, Event)]) -> Vec<u64> {
    events.iter().map(|(g, _)| *g).collect()
}

#[track_caller]
fn assert_dense_from(events: &[(u64, Event)], first: u64) {
    let got = gseqs(events);
    let want: Vec<u64> = (first..first + got.len() as u64).collect();
    assert_eq!(got, want, "gseqs are not dense from {first}");
}

fn names(events: &[(u64, Event)]) -> Vec<String> {
    events
        .iter()
        .map(|(_, e)| match e {
            Event::Unknown(v) => v["type"].as_str().unwrap_or("unknown").to_owned(),
            other => other.type_name().to_owned(),
        })
        .collect()
}

#[track_caller]
fn position(events: &[(u64, Event)], pred: impl Fn(&Event) -> bool, what: &str) -> usize {
    events
        .iter()
        .position(|(_, e)| pred(e))
        .unwrap_or_else(|| panic!("no {what} in {:?}", names(events)))
}

fn result_of(events: &[(u64, Event)]) -> &TurnResult {
    match events.last() {
        Some((_, Event::Result(r))) => r,
        other => panic!("the turn did not end with a result: {other:?}"),
    }
}

fn deltas(events: &[(u64, Event)]) -> String {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Assistant(a) if a.phase == AssistantPhase::Delta => Some(a.text.as_str()),
            _ => None,
        })
        .collect()
}

fn finals(events: &[(u64, Event)]) -> Vec<&duraclaw_core::protocol::Assistant> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Assistant(a) if a.phase == AssistantPhase::Final => Some(a),
            _ => None,
        })
        .collect()
}

fn tool_result<'a>(
    events: &'a [(u64, Event)],
    tool_use_id: &str,
) -> &'a duraclaw_core::protocol::ToolResult {
    events
        .iter()
        .find_map(|(_, e)| match e {
            Event::ToolResult(r) if r.tool_use_id == tool_use_id => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no tool_result for {tool_use_id} in {:?}", names(events)))
}

fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `tool_result` block for `tool_use_id` in the first model request
/// that carries one.
fn model_saw(fake: &FakeAnthropic, tool_use_id: &str) -> Value {
    let requests = fake.model_requests();
    requests
        .iter()
        .find_map(|r: &RecordedRequest| {
            r.tool_results()
                .into_iter()
                .find(|b| b["tool_use_id"] == tool_use_id)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no model request carries a tool_result for {tool_use_id}"))
}

fn permission_tool(q: &UserQuestion) -> &str {
    match &q.kind {
        QuestionKind::Permission { tool_name, .. } => tool_name,
        other => panic!("not a permission request: {other:?}"),
    }
}

fn ms(t: Instant) -> u128 {
    t.elapsed().as_millis()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_turn_streams_deltas_a_final_message_and_a_result() {
    let t0 = Instant::now();
    let hello = "Hello! I am a scripted reply, streamed through the gateway in pieces.";
    let fake = FakeAnthropic::start([Turn::text(hello).with_usage(123, 45)])
        .await
        .unwrap();
    let h = Harness::new();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    let exec = execute(h.wt("app1"), "Say hello");
    let r = c.command_with_id("exec-s1", "s1", exec.clone()).await;
    assert!(r.ok, "{r:?}");
    c.attach("s1", 0).await;
    let events = c.until_result().await;
    // Sent again (a reconnecting orchestrator does): acknowledged, not
    // applied again.
    let r = c.command_with_id("exec-s1", "s1", exec).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(h.cli_pids("app1").len(), 1);
    assert_dense_from(&events, 1);
    // The gateway's worktree notice, then the CLI's stream.
    assert!(
        matches!(&events[0].1, Event::Notice(n) if n.worktree.as_ref().is_some_and(|w| w.path == h.wt("app1"))),
        "{:?}",
        events[0]
    );
    match &events[1].1 {
        Event::SessionInit(init) => {
            assert_eq!(init.model.as_deref(), Some(MODEL));
            assert_eq!(init.cwd.as_deref(), Some(h.wt("app1").as_str()));
            assert_eq!(init.executor_version.as_deref(), Some(launch::CLI_VERSION));
            assert!(init.executor_session_id.is_some());
        }
        other => panic!("the stream did not start with session.init: {other:?}"),
    }
    let streamed = deltas(&events);
    assert_eq!(streamed, hello);
    let n_deltas = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Assistant(a) if a.phase == AssistantPhase::Delta))
        .count();
    assert!(n_deltas >= 3, "several deltas, got {n_deltas}");
    let f = finals(&events);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].text, hello);
    assert!(!f[0].aborted);
    let r = result_of(&events);
    assert!(!r.is_error, "{r:?}");
    assert_eq!(r.subtype.as_deref(), Some("success"));
    assert_eq!(r.terminal_reason.as_deref(), Some("completed"));
    assert!(r.duration_ms.is_some());
    assert!(r.cost_usd.is_some_and(|c| c > 0.0), "{r:?}");
    let usage = r.usage.as_ref().expect("usage");
    assert_eq!(usage.output_tokens, 45);
    assert!(usage.input_tokens > 0);
    assert_eq!(r.num_turns, Some(1));
    assert_eq!(fake.model_requests().len(), 1);
    // The CLI is still there for the next turn, and the worktree is busy.
    assert_eq!(h.cli_pids("app1").len(), 1);
    gw.gateway.shutdown().await;
    assert!(h.cli_pids("app1").is_empty(), "shutdown stops the CLI");
    eprintln!("text turn through the gateway: {} ms", ms(t0));
}

async fn a_read_asks_like_any_tool_and_its_result_holds_the_file(bin: PathBuf) {
    let t0 = Instant::now();
    let h = Harness::on(bin);
    let notes = h.worktree("app1").join("notes.txt");
    std::fs::write(&notes, "The launch code is 0451.\nSecond line.\n").unwrap();
    let fake = FakeAnthropic::start([
        Turn::text("Let me read the notes.").with_tool_use_id(
            "toolu_read_1",
            "Read",
            json!({"file_path": notes.to_str().unwrap()}),
        ),
        Turn::text("The notes say the launch code is 0451."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "What do the notes say?"))
        .await;
    c.attach("s1", 0).await;
    let (mut events, q) = c.until_question().await;
    // Read is read-only, and still a human decides.
    assert_eq!(permission_tool(&q), "Read");
    assert_eq!(q.tool_use_id.as_deref(), Some("toolu_read_1"));
    match &q.kind {
        QuestionKind::Permission { input, .. } => {
            assert_eq!(input["file_path"], notes.to_str().unwrap());
        }
        other => panic!("{other:?}"),
    }
    c.answer("s1", &q, allow()).await;
    events.extend(c.until_result().await);
    assert_dense_from(&events, 1);
    let is_tool_use = |e: &Event| matches!(e, Event::ToolUse(t) if t.tool_use_id == "toolu_read_1");
    let is_question = |e: &Event| matches!(e, Event::UserQuestion(_));
    let is_resolved = |e: &Event| {
        matches!(e, Event::QuestionResolved(r)
            if r.question_id == q.question_id && r.by.who == "alice"
                && matches!(r.decision, Decision::Allow { .. }))
    };
    let is_result = |e: &Event| matches!(e, Event::ToolResult(_));
    let order = [
        position(&events, is_tool_use, "tool_use"),
        position(&events, is_question, "user_question"),
        position(&events, is_resolved, "question.resolved"),
        position(&events, is_result, "tool_result"),
    ];
    assert!(order.is_sorted(), "out of order: {:?}", names(&events));
    let read = tool_result(&events, "toolu_read_1");
    assert!(!read.is_error);
    assert!(
        content_text(&read.content).contains("The launch code is 0451."),
        "{:?}",
        read.content
    );
    assert!(content_text(&model_saw(&fake, "toolu_read_1")["content"]).contains("0451"));
    let r = result_of(&events);
    assert!(!r.is_error);
    assert_eq!(r.num_turns, Some(2));
    assert_eq!(
        finals(&events).last().unwrap().text,
        "The notes say the launch code is 0451."
    );
    gw.gateway.shutdown().await;
    eprintln!("Read allowed through the gateway: {} ms", ms(t0));
}

async fn a_denied_bash_does_not_run_and_the_model_gets_the_reason(bin: PathBuf) {
    let t0 = Instant::now();
    let h = Harness::on(bin);
    let forbidden = h.worktree("app1").join("forbidden.txt");
    let reason = "Not in this worktree, please: no shell commands today.";
    let fake = FakeAnthropic::start([
        Turn::tool_use(
            "Bash",
            json!({"command": format!("touch {}", forbidden.display()), "description": "Create a file"}),
        ),
        Turn::text("Understood, I will not run it."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "Create a file")).await;
    c.attach("s1", 0).await;
    let (mut events, q) = c.until_question().await;
    assert_eq!(permission_tool(&q), "Bash");
    let bash_id = q
        .tool_use_id
        .clone()
        .expect("the question names its tool call");
    c.answer(
        "s1",
        &q,
        Decision::Deny {
            reason: reason.into(),
            interrupt: false,
        },
    )
    .await;
    events.extend(c.until_result().await);
    assert_dense_from(&events, 1);
    assert!(events.iter().any(|(_, e)| matches!(e,
        Event::QuestionResolved(r) if r.question_id == q.question_id
            && matches!(&r.decision, Decision::Deny { reason: why, .. } if why == reason))));
    let denied = tool_result(&events, &bash_id);
    assert!(denied.is_error);
    assert!(content_text(&denied.content).contains(reason));
    // The model is told why, as an error tool_result.
    let block = model_saw(&fake, &bash_id);
    assert_eq!(block["is_error"], true, "{block}");
    assert!(content_text(&block["content"]).contains(reason), "{block}");
    let r = result_of(&events);
    assert!(!r.is_error, "a denial does not fail the turn: {r:?}");
    assert!(!forbidden.exists(), "the denied command ran");
    gw.gateway.shutdown().await;
    assert!(!forbidden.exists(), "the denied command ran");
    eprintln!("Bash denied through the gateway: {} ms", ms(t0));
}

async fn an_edit_approved_with_edited_input_writes_the_humans_version(bin: PathBuf) {
    let t0 = Instant::now();
    let h = Harness::on(bin);
    let target = h.worktree("app1").join("settings.txt");
    std::fs::write(&target, "color = red\nsize = 3\n").unwrap();
    let path = target.to_str().unwrap();
    let fake = FakeAnthropic::start([
        Turn::tool_use("Read", json!({"file_path": path})),
        Turn::tool_use(
            "Edit",
            json!({"file_path": path, "old_string": "color = red", "new_string": "color = green"}),
        ),
        Turn::text("I changed the color."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "Make it green")).await;
    c.attach("s1", 0).await;
    // The CLI's Edit needs the file read first.
    let (mut events, read_q) = c.until_question().await;
    assert_eq!(permission_tool(&read_q), "Read");
    c.answer("s1", &read_q, allow()).await;
    let (more, edit_q) = c.until_question().await;
    events.extend(more);
    assert_eq!(permission_tool(&edit_q), "Edit");
    let edited =
        json!({"file_path": path, "old_string": "color = red", "new_string": "color = blue"});
    c.answer(
        "s1",
        &edit_q,
        Decision::Allow {
            updated_input: Some(edited.clone()),
            remember: false,
        },
    )
    .await;
    events.extend(c.until_result().await);
    assert_dense_from(&events, 1);
    let edit_id = edit_q.tool_use_id.clone().unwrap();
    let done = tool_result(&events, &edit_id);
    assert!(!done.is_error, "{:?}", done.content);
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "color = blue\nsize = 3\n",
        "the file holds the human's edit, not the model's"
    );
    assert!(events.iter().any(|(_, e)| matches!(e,
        Event::QuestionResolved(r) if r.question_id == edit_q.question_id
            && matches!(&r.decision, Decision::Allow { updated_input: Some(i), .. } if *i == edited))));
    assert!(!result_of(&events).is_error);
    gw.gateway.shutdown().await;
    eprintln!("Edit with edited input through the gateway: {} ms", ms(t0));
}

/// The real CLI edits a file in a new worktree; the session's diff is what
/// `git diff <base>` prints there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diff_after_the_clis_edit_in_a_new_worktree_equals_git_diff_of_the_base() {
    let h = Harness::new();
    // The gateway names the worktree after the session id ("s1").
    let wt = h.root.join("wt/app1-s1");
    let readme = wt.join("README.md");
    let path = readme.to_str().unwrap();
    let fake = FakeAnthropic::start([
        Turn::tool_use("Read", json!({"file_path": path})),
        Turn::tool_use(
            "Edit",
            json!({"file_path": path, "old_string": "hello", "new_string": "hello, world"}),
        ),
        Turn::text("Done."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    let start = Command::Execute(duraclaw_core::protocol::Execute {
        new_worktree: Some(duraclaw_core::protocol::NewWorktree::default()),
        ..duraclaw_core::protocol::Execute::new(h.wt("app1"), "Greet the world")
    });
    c.ok("s1", start).await;
    c.attach("s1", 0).await;
    let (events, read_q) = c.until_question().await;
    let Event::Notice(notice) = &events[0].1 else {
        panic!("{:?}", events[0]);
    };
    let recorded = notice.worktree.clone().unwrap();
    assert_eq!(
        (recorded.path.as_str(), recorded.created),
        (wt.to_str().unwrap(), true)
    );
    c.answer("s1", &read_q, allow()).await;
    let (_, edit_q) = c.until_question().await;
    assert_eq!(permission_tool(&edit_q), "Edit");
    c.answer("s1", &edit_q, allow()).await;
    c.until_result().await;
    assert_eq!(std::fs::read_to_string(&readme).unwrap(), "hello, world\n");

    let value = gw
        .gateway
        .request(duraclaw_core::protocol::GatewayRequest::Diff {
            session_id: "s1".into(),
        })
        .await
        .unwrap();
    let diff: duraclaw_core::protocol::SessionDiff = serde_json::from_value(value).unwrap();
    let base = recorded.base.unwrap();
    let git = std::process::Command::new("git")
        .args(["diff", &base])
        .current_dir(&wt)
        .output()
        .unwrap();
    assert!(git.status.success(), "{git:?}");
    let expected = String::from_utf8(git.stdout).unwrap();
    assert!(expected.contains("+hello, world"), "{expected}");
    assert_eq!(diff.patch(), expected);
    assert_eq!(diff.files.len(), 1);
    assert_eq!((diff.files[0].additions, diff.files[0].deletions), (1, 1));
    gw.gateway.shutdown().await;
}

async fn ask_user_question_answers_reach_the_model(bin: PathBuf) {
    let t0 = Instant::now();
    let h = Harness::on(bin);
    let question = "Which color should the button be?";
    let fake = FakeAnthropic::start([
        Turn::tool_use(
            "AskUserQuestion",
            json!({"questions": [{
                "question": question,
                "header": "Color",
                "options": [
                    {"label": "Red", "description": "Warm and loud"},
                    {"label": "Blue", "description": "Calm and quiet"}
                ],
                "multiSelect": false
            }]}),
        ),
        Turn::text("Blue it is."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "Style the button")).await;
    c.attach("s1", 0).await;
    let (mut events, q) = c.until_question().await;
    match &q.kind {
        QuestionKind::AskUser { questions } => {
            assert_eq!(questions.len(), 1);
            assert_eq!(questions[0].question, question);
            let labels: Vec<&str> = questions[0]
                .options
                .iter()
                .map(|o| o.label.as_str())
                .collect();
            assert_eq!(labels, ["Red", "Blue"]);
        }
        other => panic!("not an AskUserQuestion: {other:?}"),
    }
    let answers = BTreeMap::from([(question.to_owned(), "Blue".to_owned())]);
    c.answer("s1", &q, Decision::Answered { answers }).await;
    events.extend(c.until_result().await);
    assert_dense_from(&events, 1);
    let ask_id = q.tool_use_id.clone().unwrap();
    let answered = tool_result(&events, &ask_id);
    assert!(!answered.is_error, "{:?}", answered.content);
    let block = model_saw(&fake, &ask_id);
    let seen = content_text(&block["content"]);
    assert!(
        seen.contains("Blue") && seen.contains(question),
        "the model did not get the answer: {block}"
    );
    assert_ne!(block["is_error"], true, "{block}");
    assert_eq!(finals(&events).last().unwrap().text, "Blue it is.");
    assert!(!result_of(&events).is_error);
    gw.gateway.shutdown().await;
    eprintln!(
        "AskUserQuestion answered through the gateway: {} ms",
        ms(t0)
    );
}

/// "Allow for this session": the same tool with the same input runs again
/// without a question, with an `auto_allowed` notice in its place; another
/// input is asked about, and a denial is not remembered.
async fn allow_for_this_session_runs_the_same_call_again_without_asking(bin: PathBuf) {
    let t0 = Instant::now();
    let h = Harness::on(bin);
    let notes = h.worktree("app1").join("notes.txt");
    let other = h.worktree("app1").join("other.txt");
    std::fs::write(&notes, "The launch code is 0451.\n").unwrap();
    std::fs::write(&other, "Nothing to see.\n").unwrap();
    let read = |p: &std::path::Path| json!({"file_path": p.to_str().unwrap()});
    let fake = FakeAnthropic::start([
        Turn::text("Reading.").with_tool_use_id("toolu_r1", "Read", read(&notes)),
        Turn::text("Again.").with_tool_use_id("toolu_r2", "Read", read(&notes)),
        Turn::text("The other one.").with_tool_use_id("toolu_r3", "Read", read(&other)),
        Turn::text("Once more.").with_tool_use_id("toolu_r4", "Read", read(&other)),
        Turn::text("Done reading."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "Read the notes twice"))
        .await;
    c.attach("s1", 0).await;
    let (mut events, q1) = c.until_question().await;
    assert_eq!(q1.tool_use_id.as_deref(), Some("toolu_r1"));
    c.answer(
        "s1",
        &q1,
        Decision::Allow {
            updated_input: None,
            remember: true,
        },
    )
    .await;
    // The next question is about the other file: the same call again was
    // not asked about.
    let (more, q3) = c.until_question().await;
    events.extend(more);
    assert_eq!(
        q3.tool_use_id.as_deref(),
        Some("toolu_r3"),
        "{:?}",
        names(&events)
    );
    c.answer(
        "s1",
        &q3,
        Decision::Deny {
            reason: "not that one".into(),
            interrupt: false,
        },
    )
    .await;
    // A denial is not remembered: the same call is asked about again.
    let (more, q4) = c.until_question().await;
    events.extend(more);
    assert_eq!(q4.tool_use_id.as_deref(), Some("toolu_r4"));
    c.answer("s1", &q4, allow()).await;
    events.extend(c.until_result().await);
    assert_dense_from(&events, 1);
    let asked: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::UserQuestion(q) => q.tool_use_id.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(asked, ["toolu_r1", "toolu_r3", "toolu_r4"]);
    let notice = position(
        &events,
        |e| {
            matches!(e, Event::Notice(n) if n.code == NOTICE_AUTO_ALLOWED
                && n.tool_use_id.as_deref() == Some("toolu_r2")
                && n.message.contains("Read") && n.message.contains("alice")
                && n.message.contains(&q1.question_id))
        },
        "auto_allowed notice",
    );
    let ran = position(
        &events,
        |e| matches!(e, Event::ToolResult(r) if r.tool_use_id == "toolu_r2"),
        "tool_result",
    );
    assert!(notice < ran, "{:?}", names(&events));
    // It ran (a CLI may answer a second read of an unchanged file with a
    // short note instead of the contents).
    let second = tool_result(&events, "toolu_r2");
    assert!(!second.is_error, "{:?}", second.content);
    assert!(content_text(&tool_result(&events, "toolu_r1").content).contains("0451"));
    assert!(tool_result(&events, "toolu_r3").is_error);
    assert!(
        !events.iter().any(|(_, e)| matches!(e, Event::Error(_))),
        "{:?}",
        names(&events)
    );
    assert_eq!(finals(&events).last().unwrap().text, "Done reading.");
    gw.gateway.shutdown().await;
    eprintln!("allow for this session: {} ms", ms(t0));
}

/// The session's allows and its conversation outlive its CLI: a CLI that
/// sits idle past the gateway's bound is stopped (no error in the
/// session) and the session put away; the next message loads it and
/// resumes the CLI session (the model sees the earlier turn), and a call
/// allowed "for this session" before runs again without a question, its
/// `auto_allowed` notice naming the first answer; another input is asked
/// about. After a gateway restart the allow still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cli_is_stopped_and_resumed_and_allows_for_the_session_outlive_it() {
    let t0 = Instant::now();
    let h = Harness::new();
    let notes = h.worktree("app1").join("notes.txt");
    let other = h.worktree("app1").join("other.txt");
    std::fs::write(&notes, "The launch code is 0451.\n").unwrap();
    std::fs::write(&other, "Nothing to see.\n").unwrap();
    let read = |p: &std::path::Path| json!({"file_path": p.to_str().unwrap()});
    let fake = FakeAnthropic::start([
        Turn::text("Reading.").with_tool_use_id("toolu_r1", "Read", read(&notes)),
        Turn::text("The code is 0451."),
        Turn::text("Again.").with_tool_use_id("toolu_r2", "Read", read(&notes)),
        Turn::text("The other one.").with_tool_use_id("toolu_r3", "Read", read(&other)),
        Turn::text("Done reading."),
        Turn::text("Once more.").with_tool_use_id("toolu_r4", "Read", read(&notes)),
        Turn::text("Still 0451."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    gw.gateway.set_executor_idle(Duration::from_millis(300));
    gw.gateway.set_evict_idle(Duration::from_millis(50));
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "Read the notes")).await;
    c.attach("s1", 0).await;
    let (mut events, q1) = c.until_question().await;
    assert_eq!(q1.tool_use_id.as_deref(), Some("toolu_r1"));
    c.answer(
        "s1",
        &q1,
        Decision::Allow {
            updated_input: None,
            remember: true,
        },
    )
    .await;
    events.extend(c.until_result().await);
    let pid = h.cli_pid("app1");

    // Idle: the CLI is stopped and the session put away, once the
    // orchestrator acknowledged every event.
    let give_up = Instant::now() + DEADLINE;
    let mut acked = 0;
    while gw.gateway.loaded("s1").await.is_some() {
        assert!(Instant::now() < give_up, "the session was never put away");
        if let Some(&(last, _)) = events.last()
            && last > acked
        {
            c.send(&ToGateway::Ack {
                session_id: "s1".into(),
                gseq: last,
            })
            .await;
            acked = last;
        }
        if tokio::time::timeout(Duration::from_millis(20), c.pump())
            .await
            .is_ok()
        {
            events.extend(c.events.drain(..));
        }
    }
    wait_until("the idle CLI to end", || !alive(pid)).await;

    // A message loads and resumes it over the same link.
    c.ok("s1", message("Read it again")).await;
    let (more, q3) = c.until_question().await;
    events.extend(more);
    assert_eq!(
        q3.tool_use_id.as_deref(),
        Some("toolu_r3"),
        "{:?}",
        names(&events)
    );
    c.answer("s1", &q3, allow()).await;
    events.extend(c.until_result().await);
    assert_dense_from(&events, 1);
    let auto = |id: &'static str| {
        let q1 = q1.question_id.clone();
        move |e: &Event| {
            matches!(e, Event::Notice(n) if n.code == NOTICE_AUTO_ALLOWED
                && n.tool_use_id.as_deref() == Some(id)
                && n.message.contains("alice") && n.message.contains(&q1))
        }
    };
    let notice = position(&events, auto("toolu_r2"), "auto_allowed notice");
    let ran = position(
        &events,
        |e| matches!(e, Event::ToolResult(r) if r.tool_use_id == "toolu_r2"),
        "tool_result",
    );
    assert!(notice < ran, "{:?}", names(&events));
    assert!(!tool_result(&events, "toolu_r2").is_error);
    assert!(
        !events.iter().any(|(_, e)| matches!(e, Event::Error(_))),
        "{:?}",
        names(&events)
    );
    let requests = fake.model_requests();
    let resumed = requests
        .iter()
        .map(|r| r.body["messages"].to_string())
        .find(|m| m.contains("Read it again"))
        .expect("a model request after the message");
    assert!(
        resumed.contains("Read the notes") && resumed.contains("The code is 0451."),
        "the resumed request lacks the earlier conversation: {resumed}"
    );

    // After a restart, the allow still holds.
    let last = events.last().unwrap().0;
    drop(c);
    gw.gateway.shutdown().await;
    drop(gw);
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.attach("s1", last).await;
    c.ok("s1", message("Read the notes once more")).await;
    let after = c.until_result().await;
    position(
        &after,
        auto("toolu_r4"),
        "auto_allowed notice after the restart",
    );
    assert!(!tool_result(&after, "toolu_r4").is_error);
    assert!(
        !after
            .iter()
            .any(|(_, e)| matches!(e, Event::UserQuestion(_) | Event::Error(_))),
        "{:?}",
        names(&after)
    );
    gw.gateway.shutdown().await;
    eprintln!("idle CLI stopped and resumed: {} ms", ms(t0));
}

async fn abort_mid_stream_ends_the_turn_and_the_session_goes_on(bin: PathBuf) {
    let t0 = Instant::now();
    let h = Harness::on(bin);
    let held = Latch::new();
    let held_again = Latch::new();
    let fake = FakeAnthropic::start([
        Turn::text("This answer is long and will be cut off before it ends.")
            .with_chunk_chars(4)
            .with_hold(2, &held),
        Turn::text("Still here."),
        Turn::text("Another long answer, cut off again.")
            .with_chunk_chars(4)
            .with_hold(2, &held_again),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "Tell me something long"))
        .await;
    c.attach("s1", 0).await;
    let mut events = Vec::new();
    while deltas(&events).chars().count() < 8 {
        events.push(c.next_event().await);
    }
    tokio::time::timeout(DEADLINE, held.reached())
        .await
        .expect("the fake holds the stream");
    let aborted_at = Instant::now();
    c.ok("s1", Command::Abort(Abort {})).await;
    events.extend(c.until_result().await);
    let abort_ms = ms(aborted_at);
    held.release();
    assert_dense_from(&events, 1);
    let r = result_of(&events);
    assert!(r.is_error, "an abort is no normal end: {r:?}");
    assert!(!deltas(&events).is_empty());
    // The pinned CLI also says why the turn ended and repeats the partial
    // text as an aborted final message; older ones (2.1.88–2.1.112,
    // measured) leave out one or both: the deltas hold the text.
    if h.pinned() {
        assert_eq!(r.terminal_reason.as_deref(), Some("aborted_streaming"));
        let partial = finals(&events);
        assert_eq!(partial.len(), 1, "{:?}", names(&events));
        assert!(partial[0].aborted);
        assert_eq!(partial[0].text, deltas(&events));
    }
    let last = events.last().unwrap().0;

    // The same process answers the next message.
    let pid = h.cli_pid("app1");
    c.ok("s1", message("Are you there?")).await;
    let next = c.until_result().await;
    assert_dense_from(&next, last + 1);
    assert_eq!(finals(&next).last().unwrap().text, "Still here.");
    assert!(!result_of(&next).is_error);
    assert_eq!(h.cli_pid("app1"), pid, "the CLI was not restarted");

    // Aborted again, then stopped: the CLI exits 1 after a failed turn, and
    // that is no error of the session's.
    c.ok("s1", message("One more long one")).await;
    let mut again = Vec::new();
    while deltas(&again).is_empty() {
        again.push(c.next_event().await);
    }
    tokio::time::timeout(DEADLINE, held_again.reached())
        .await
        .expect("the fake holds the stream");
    c.ok("s1", Command::Abort(Abort {})).await;
    again.extend(c.until_result().await);
    held_again.release();
    assert!(result_of(&again).is_error);
    let last = again.last().unwrap().0;
    gw.gateway.shutdown().await;
    assert!(!alive(pid));
    let outbox = gw.gateway.session("s1").await.unwrap();
    let after = outbox.log().store().read_after(last, 100).await.unwrap();
    assert!(
        after.is_empty(),
        "events logged by the stop: {:?}",
        after.iter().map(|e| &e.json).collect::<Vec<_>>()
    );
    eprintln!(
        "abort mid-stream: result {abort_ms} ms after the abort; whole test {} ms",
        ms(t0)
    );
}

async fn after_a_gateway_restart_a_message_resumes_the_cli_session(bin: PathBuf) {
    let t0 = Instant::now();
    let h = Harness::on(bin);
    let fake = FakeAnthropic::start([
        Turn::text("Noted: the secret word is PAPAYA."),
        Turn::text("You told me PAPAYA."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "Remember the word PAPAYA"))
        .await;
    c.attach("s1", 0).await;
    let first = c.until_result().await;
    assert_dense_from(&first, 1);
    let executor_session = executor_session_of(&first);
    let pid = h.cli_pid("app1");
    drop(c);

    // A graceful restart: the CLI is stopped, the outbox stays.
    let stopping = Instant::now();
    gw.gateway.shutdown().await;
    let stop_ms = ms(stopping);
    assert!(!alive(pid), "the CLI survived the gateway's shutdown");
    drop(gw);
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    let last = first.last().unwrap().0;
    c.attach("s1", last).await;
    let resuming = Instant::now();
    c.ok("s1", message("What was the word?")).await;
    let resumed = c.until_result().await;
    let resume_ms = ms(resuming);
    assert_dense_from(&resumed, last + 1);
    let init = resumed
        .iter()
        .find_map(|(_, e)| match e {
            Event::SessionInit(i) => Some(i),
            _ => None,
        })
        .expect("session.init");
    assert_eq!(
        init.executor_session_id.as_deref(),
        Some(executor_session.as_str())
    );
    assert_eq!(finals(&resumed).last().unwrap().text, "You told me PAPAYA.");
    assert!(!result_of(&resumed).is_error);
    // Started with --resume (the oldest CLI overwrites its arguments with
    // its name), and the model saw the earlier conversation.
    let new_pid = h.cli_pid("app1");
    if h.pinned() {
        let cmdline = std::fs::read(format!("/proc/{new_pid}/cmdline")).unwrap();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--resume" && w[1] == executor_session),
            "{args:?}"
        );
    }
    let request = fake.model_requests().pop().unwrap();
    let history = request.body["messages"].to_string();
    assert!(
        history.contains("Remember the word PAPAYA")
            && history.contains("Noted: the secret word is PAPAYA.")
            && history.contains("What was the word?"),
        "the resumed request lacks the earlier conversation: {history}"
    );
    gw.gateway.shutdown().await;
    eprintln!(
        "restart: shutdown {stop_ms} ms; message -> resumed result {resume_ms} ms; whole test {} ms",
        ms(t0)
    );
}

async fn a_restart_while_a_question_waits_withdraws_it_without_another_model_call(bin: PathBuf) {
    let t0 = Instant::now();
    let h = Harness::on(bin);
    let fake = FakeAnthropic::start([
        Turn::tool_use(
            "Bash",
            json!({"command": "ls", "description": "List files"}),
        ),
        Turn::text("Resumed after the stop."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "List the files")).await;
    c.attach("s1", 0).await;
    let (mut events, q) = c.until_question().await;
    let bash_id = q.tool_use_id.clone().unwrap();
    let pid = h.cli_pid("app1");
    let stopping = Instant::now();
    gw.gateway.shutdown().await;
    let stop_ms = ms(stopping);
    assert!(!alive(pid));
    // The stop ended the turn: the question withdrawn, the tool not run,
    // and no model call on the CLI's own initiative.
    events.extend(c.until_result().await);
    assert_dense_from(&events, 1);
    assert!(events.iter().any(|(_, e)| matches!(e,
        Event::QuestionResolved(r) if r.question_id == q.question_id
            && matches!(&r.decision, Decision::Cancelled { reason: Some(why) } if why.contains("stopped")))));
    assert!(tool_result(&events, &bash_id).is_error);
    // 2.1.88 gives no terminal reason (2.1.98 does).
    if h.pinned() {
        assert_eq!(
            result_of(&events).terminal_reason.as_deref(),
            Some("aborted_tools")
        );
    }
    assert_eq!(
        fake.model_requests().len(),
        1,
        "a model call during the stop"
    );
    let last = events.last().unwrap().0;
    drop(c);
    drop(gw);

    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.attach("s1", last).await;
    c.ok("s1", message("Go on")).await;
    let resumed = c.until_result().await;
    assert_dense_from(&resumed, last + 1);
    assert!(
        !resumed
            .iter()
            .any(|(_, e)| matches!(e, Event::QuestionResolved(_) | Event::Error(_))),
        "{:?}",
        names(&resumed)
    );
    assert_eq!(
        finals(&resumed).last().unwrap().text,
        "Resumed after the stop."
    );
    let history = fake.model_requests().pop().unwrap().body["messages"].to_string();
    assert!(history.contains("List the files") && history.contains(&bash_id));
    gw.gateway.shutdown().await;
    eprintln!(
        "restart with a question pending: stop {stop_ms} ms; whole test {} ms",
        ms(t0)
    );
}

async fn a_cli_killed_mid_turn_is_an_error_and_the_next_message_resumes(bin: PathBuf) {
    let t0 = Instant::now();
    let h = Harness::on(bin);
    let held = Latch::new();
    let fake = FakeAnthropic::start([
        Turn::text("A long answer that never finishes, because the process dies.")
            .with_chunk_chars(4)
            .with_hold(2, &held),
        Turn::text("Back again."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "Tell me a long story"))
        .await;
    c.attach("s1", 0).await;
    let mut events = Vec::new();
    while deltas(&events).is_empty() {
        events.push(c.next_event().await);
    }
    tokio::time::timeout(DEADLINE, held.reached())
        .await
        .expect("the fake holds the stream");
    // The CLI saves its transcript a little after the turn starts; resume
    // needs it. (Killed before that, the session starts afresh: see
    // `a_session_the_cli_never_saved_starts_afresh_with_a_notice`.)
    let executor_session = executor_session_of(&events);
    wait_until("the CLI to save the prompt in its transcript", || {
        h.transcript(&executor_session)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .is_some_and(|t| t.contains("Tell me a long story"))
    })
    .await;
    let pid = h.cli_pid("app1");
    let killed_at = Instant::now();
    kill9(pid);
    events.extend(c.until(|e| matches!(e, Event::Error(_))).await);
    let error_ms = ms(killed_at);
    held.release();
    assert_dense_from(&events, 1);
    let Some((_, Event::Error(err))) = events.last() else {
        unreachable!()
    };
    assert_eq!(err.code.as_deref(), Some("executor_exited"), "{err:?}");
    assert_eq!(err.exit_status, Some(128 + 9), "{err:?}");
    assert!(
        !events.iter().any(|(_, e)| matches!(e, Event::Result(_))),
        "no result for a killed turn"
    );
    let last = events.last().unwrap().0;

    let resuming = Instant::now();
    c.ok("s1", message("Please continue")).await;
    let resumed = c.until_result().await;
    let resume_ms = ms(resuming);
    assert_dense_from(&resumed, last + 1);
    assert_eq!(finals(&resumed).last().unwrap().text, "Back again.");
    assert!(!result_of(&resumed).is_error);
    let new_pid = h.cli_pid("app1");
    assert_ne!(new_pid, pid);
    assert_eq!(executor_session_of(&resumed), executor_session);
    assert!(
        !resumed.iter().any(|(_, e)| matches!(e, Event::Error(_))),
        "{:?}",
        names(&resumed)
    );
    let history = fake.model_requests().pop().unwrap().body["messages"].to_string();
    assert!(
        history.contains("Tell me a long story") && history.contains("Please continue"),
        "the resumed request lacks the earlier prompt: {history}"
    );
    gw.gateway.shutdown().await;
    eprintln!(
        "SIGKILL: error {error_ms} ms after the kill; message -> resumed result {resume_ms} ms; \
         whole test {} ms",
        ms(t0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_cli_never_saved_starts_afresh_with_a_notice() {
    let t0 = Instant::now();
    let h = Harness::new();
    let held = Latch::new();
    let fake = FakeAnthropic::start([
        Turn::text("This never reaches the transcript.")
            .with_chunk_chars(4)
            .with_hold(2, &held),
        Turn::text("Fresh start."),
        Turn::text("Still fresh."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "Remember the word QUINCE"))
        .await;
    c.attach("s1", 0).await;
    let mut events = Vec::new();
    while deltas(&events).is_empty() {
        events.push(c.next_event().await);
    }
    tokio::time::timeout(DEADLINE, held.reached())
        .await
        .expect("the fake holds the stream");
    let first_session = executor_session_of(&events);
    let pid = h.cli_pid("app1");
    kill9(pid);
    events.extend(c.until(|e| matches!(e, Event::Error(_))).await);
    held.release();
    // As if the CLI had died before saving anything.
    if let Some(t) = h.transcript(&first_session) {
        std::fs::remove_file(t).unwrap();
    }
    let last = events.last().unwrap().0;

    c.ok("s1", message("Hello again")).await;
    let fresh = c.until_result().await;
    assert_dense_from(&fresh, last + 1);
    match &fresh[0].1 {
        Event::Unknown(v) => {
            assert_eq!(v["type"], "cli.resume_failed", "{v}");
            assert_eq!(v["executor_session_id"], first_session.as_str());
        }
        other => panic!("expected the resume notice first, got {other:?}"),
    }
    assert!(
        !fresh.iter().any(|(_, e)| matches!(e, Event::Error(_))),
        "the failed resume is not an error of the turn: {:?}",
        names(&fresh)
    );
    let second_session = executor_session_of(&fresh);
    assert_ne!(second_session, first_session);
    assert_eq!(finals(&fresh).last().unwrap().text, "Fresh start.");
    assert!(!result_of(&fresh).is_error);
    let history = fake.model_requests().pop().unwrap().body["messages"].to_string();
    assert!(history.contains("Hello again") && !history.contains("QUINCE"));
    // The new CLI session is the one the session goes on with.
    let last = fresh.last().unwrap().0;
    let pid = h.cli_pid("app1");
    c.ok("s1", message("And again")).await;
    let next = c.until_result().await;
    assert_dense_from(&next, last + 1);
    assert_eq!(finals(&next).last().unwrap().text, "Still fresh.");
    assert_eq!(executor_session_of(&next), second_session);
    assert_eq!(h.cli_pid("app1"), pid);
    gw.gateway.shutdown().await;
    eprintln!("resume without a transcript: {} ms", ms(t0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_reattached_after_the_last_gseq_gets_every_event_once() {
    let t0 = Instant::now();
    let h = Harness::new();
    let held = Latch::new();
    let text: String = (0..40).map(|i| format!("word{i} ")).collect();
    let fake = FakeAnthropic::start([Turn::text(text.clone())
        .with_chunk_chars(5)
        .with_hold(6, &held)])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "Count words")).await;
    c.attach("s1", 0).await;
    let mut seen = Vec::new();
    while deltas(&seen).chars().count() < 10 {
        seen.push(c.next_event().await);
    }
    tokio::time::timeout(DEADLINE, held.reached())
        .await
        .expect("the fake holds the stream");
    // Cut the link mid-stream; the turn goes on without a listener.
    drop(c);
    held.release();
    let mut c = Client::open(gw.addr).await;
    c.attach("s1", seen.last().unwrap().0).await;
    seen.extend(c.until_result().await);
    assert_dense_from(&seen, 1);
    assert_eq!(deltas(&seen), text, "every delta exactly once, in order");
    let f = finals(&seen);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].text, text);
    assert!(!result_of(&seen).is_error);
    // A second cut right after the result: nothing more, nothing again.
    let last = seen.last().unwrap().0;
    drop(c);
    let mut c = Client::open(gw.addr).await;
    c.attach("s1", last).await;
    c.send(&ToGateway::Ping { nonce: 9 }).await;
    match c.frame().await {
        FromGateway::Pong { nonce: 9 } => {}
        other => panic!("expected only the pong, got {other:?}"),
    }
    gw.gateway.shutdown().await;
    eprintln!("cut link: {} ms", ms(t0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_frames_and_worktrees_are_checked_with_the_real_executor() {
    let t0 = Instant::now();
    let h = Harness::new();
    let fake = FakeAnthropic::start([Turn::text("Hi.")]).await.unwrap();
    let gw = h.start(&fake).await;
    for auth in [
        None,
        Some("Bearer nope"),
        Some(&format!("Bearer {SECRET}x")[..]),
    ] {
        match connect_with(gw.addr, auth).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401, "{auth:?}");
            }
            other => panic!("{auth:?} was not refused: {:?}", other.map(|_| ())),
        }
    }
    // An oversized frame ends the link; the gateway stays up.
    let mut c = Client::open(gw.addr).await;
    let big = format!(
        r#"{{"type":"ping","nonce":1,"pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let _ = c.ws.send(Message::text(big)).await;
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match c.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the oversized frame should end the link");

    let mut c = Client::open(gw.addr).await;
    let sneaky = format!("{}/../app2", h.wt("app1"));
    for bad in [sneaky, "/etc".to_owned(), "app1".to_owned()] {
        let r = c.command("sbad", execute(bad.clone(), "hi")).await;
        assert!(!r.ok, "{bad} was accepted");
        assert_eq!(r.error.unwrap().code, "invalid", "{bad}");
    }
    assert!(h.cli_pids("app1").is_empty() && h.cli_pids("app2").is_empty());

    c.ok("s1", execute(h.wt("app1"), "hi")).await;
    c.attach("s1", 0).await;
    c.until_result().await;
    let r = c.command("s2", execute(h.wt("app1"), "me too")).await;
    let e = r
        .error
        .expect("a second session in a busy worktree is refused");
    assert_eq!(e.code, "worktree_busy");
    assert!(e.message.contains("s1"), "names the holder: {}", e.message);
    assert_eq!(h.cli_pids("app1").len(), 1);
    // The other worktree is free.
    c.ok("s3", execute(h.wt("app2"), "hi")).await;
    assert_eq!(h.cli_pids("app2").len(), 1);
    gw.gateway.shutdown().await;
    assert!(h.cli_pids("app1").is_empty() && h.cli_pids("app2").is_empty());
    eprintln!("auth and input checks: {} ms", ms(t0));
}

// ---------------------------------------------------------------------------
// Approval rules
// ---------------------------------------------------------------------------

fn rule(scope: RuleScope, text: &str, action: RuleAction) -> RuleEntry {
    RuleEntry {
        id: Some(format!("r-{text}")),
        scope,
        rule: text.into(),
        action,
    }
}

/// The `rule_decision` notices in `events`: (tool_use_id, rule, scope, action).
fn rule_decisions(events: &[(u64, Event)]) -> Vec<(String, String, RuleScope, RuleAction)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Notice(n) if n.code == NOTICE_RULE_DECISION => {
                let r = n.rule.as_ref().expect("a rule_decision names its rule");
                Some((
                    n.tool_use_id.clone().unwrap_or_default(),
                    r.rule.clone(),
                    r.scope,
                    r.action,
                ))
            }
            _ => None,
        })
        .collect()
}

/// "Reads are free": a turn that reads three files and edits one asks
/// once, about the edit; each read is a `rule_decision` naming the rule.
/// Rules sent later (a `rules` frame) replace them: a deny on `Bash(rm *)`
/// at the user scope beats an allow on `Bash` at the session scope, and
/// the command does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_decide_without_asking_and_a_deny_beats_a_session_allow() {
    let t0 = Instant::now();
    let h = Harness::new();
    let wt = h.worktree("app1");
    for (name, text) in [
        ("a.txt", "alpha\n"),
        ("b.txt", "beta\n"),
        ("c.txt", "gamma\n"),
    ] {
        std::fs::write(wt.join(name), text).unwrap();
    }
    let victim = wt.join("victim.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    let read = |n: &str| json!({"file_path": wt.join(n).to_str().unwrap()});
    let a = wt.join("a.txt");
    let fake = FakeAnthropic::start([
        Turn::text("One.").with_tool_use_id("toolu_r1", "Read", read("a.txt")),
        Turn::text("Two.").with_tool_use_id("toolu_r2", "Read", read("b.txt")),
        Turn::text("Three.").with_tool_use_id("toolu_r3", "Read", read("c.txt")),
        Turn::text("Edit.").with_tool_use_id(
            "toolu_e1",
            "Edit",
            json!({"file_path": a.to_str().unwrap(), "old_string": "alpha", "new_string": "ALPHA"}),
        ),
        Turn::text("Read and edited."),
        // The second turn.
        Turn::text("Listing.").with_tool_use_id("toolu_b1", "Bash", json!({"command": "ls"})),
        Turn::text("Deleting.").with_tool_use_id(
            "toolu_b2",
            "Bash",
            json!({"command": format!("rm {}", victim.display())}),
        ),
        Turn::text("Could not delete."),
    ])
    .await
    .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    let reads_free: Vec<RuleEntry> = ["Read", "Glob", "Grep", "LS"]
        .iter()
        .map(|t| rule(RuleScope::User, t, RuleAction::Allow))
        .collect();
    let Command::Execute(mut x) = execute(h.wt("app1"), "Read three, edit one") else {
        unreachable!()
    };
    x.rules = Some(reads_free);
    c.ok("s1", Command::Execute(x)).await;
    c.attach("s1", 0).await;
    let (mut events, q) = c.until_question().await;
    assert_eq!(permission_tool(&q), "Edit", "{:?}", names(&events));
    c.answer("s1", &q, allow()).await;
    events.extend(c.until_result().await);
    let asked: Vec<_> = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::UserQuestion(_)))
        .collect();
    assert_eq!(asked.len(), 1, "{:?}", names(&events));
    let decided = rule_decisions(&events);
    assert_eq!(
        decided,
        ["toolu_r1", "toolu_r2", "toolu_r3"].map(|id| (
            id.to_owned(),
            "Read".to_owned(),
            RuleScope::User,
            RuleAction::Allow
        ))
    );
    assert!(content_text(&tool_result(&events, "toolu_r2").content).contains("beta"));
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "ALPHA\n");
    assert!(
        !events.iter().any(|(_, e)| matches!(e, Event::Error(_))),
        "{:?}",
        names(&events)
    );

    // New rules: Bash allowed for this session, `rm` denied for the user.
    c.send(&ToGateway::Rules {
        session_id: "s1".into(),
        rules: vec![
            rule(RuleScope::Session, "Bash", RuleAction::Allow),
            rule(RuleScope::User, "Bash(rm *)", RuleAction::Deny),
        ],
    })
    .await;
    c.ok("s1", message("Now clean up")).await;
    let events = c.until_result().await;
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::UserQuestion(_))),
        "{:?}",
        names(&events)
    );
    assert_eq!(
        rule_decisions(&events),
        [
            (
                "toolu_b1".to_owned(),
                "Bash".to_owned(),
                RuleScope::Session,
                RuleAction::Allow
            ),
            (
                "toolu_b2".to_owned(),
                "Bash(rm *)".to_owned(),
                RuleScope::User,
                RuleAction::Deny
            ),
        ]
    );
    assert!(tool_result(&events, "toolu_b2").is_error);
    assert!(
        content_text(&model_saw(&fake, "toolu_b2")).contains("denied by rule Bash(rm *)"),
        "{}",
        model_saw(&fake, "toolu_b2")
    );
    assert!(victim.exists(), "the denied rm ran");
    gw.gateway.shutdown().await;
    assert!(victim.exists(), "the denied rm ran");
    eprintln!("rules through the gateway: {} ms", ms(t0));
}

/// A mode and a model switched mid-session (`set_mode`, `set_model`) hold
/// when the CLI is started again: after a `kill -9`, the next message's
/// `session.init` reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_and_model_switched_mid_session_hold_after_a_relaunch() {
    let h = Harness::new();
    let fake = FakeAnthropic::start([Turn::text("One."), Turn::text("Two.")])
        .await
        .unwrap();
    let gw = h.start(&fake).await;
    let mut c = Client::open(gw.addr).await;
    c.ok("s1", execute(h.wt("app1"), "Hello")).await;
    c.attach("s1", 0).await;
    let first = c.until_result().await;
    let executor_session = executor_session_of(&first);
    let set_mode = Command::SetMode(duraclaw_core::protocol::SetMode {
        mode: "plan".into(),
    });
    c.ok("s1", set_mode).await;
    c.until(|e| matches!(e, Event::Notice(n) if n.code == "mode_changed"))
        .await;
    let set_model = Command::SetModel(duraclaw_core::protocol::SetModel {
        model: "opus".into(),
    });
    c.ok("s1", set_model).await;
    let changed = c
        .until(|e| matches!(e, Event::Notice(n) if n.code == "model_changed"))
        .await;
    let Some((_, Event::Notice(notice))) = changed.last() else {
        unreachable!()
    };
    let model = notice.model.clone().unwrap();
    wait_until("the CLI to save its transcript", || {
        h.transcript(&executor_session).is_some()
    })
    .await;
    kill9(h.cli_pid("app1"));
    c.until(|e| matches!(e, Event::Error(_))).await;
    c.ok("s1", message("Again")).await;
    let resumed = c.until_result().await;
    let init = resumed
        .iter()
        .find_map(|(_, e)| match e {
            Event::SessionInit(i) => Some(i.clone()),
            _ => None,
        })
        .unwrap();
    gw.gateway.shutdown().await;
    assert_eq!(init.permission_mode.as_deref(), Some("plan"), "{init:?}");
    assert_eq!(init.model.as_deref(), Some(model.as_str()), "{init:?}");
    assert_eq!(
        fake.model_requests().last().unwrap().body["model"],
        model.as_str()
    );
}
