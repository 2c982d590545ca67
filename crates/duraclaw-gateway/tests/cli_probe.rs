//! Drives the REAL Claude Code CLI (the pinned version) against the fake
//! Messages API on 127.0.0.1 and checks that the protocol types and the
//! event mapper hold up: initialize, a text turn, a `Read` allowed through
//! the approval path, a `Bash` call denied with a reason.
//!
//! The binary comes from `$CLAUDE_BIN` or the cache that
//! `scripts/install-tools.sh claude` fills; without it the test fails (it
//! never skips). Run with `--nocapture` to see the timings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duraclaw_core::protocol::{AssistantPhase, Decision, Event, QuestionKind, UserQuestion};
use duraclaw_fake_anthropic::{FakeAnthropic, Latch, RecordedRequest, Turn};
use duraclaw_gateway::cli::launch::{self, LaunchSpec};
use duraclaw_gateway::cli::{CliAction, CliEventMapper, CliInput, CliMessage};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

mod support;
use support::claude_bin;

/// The bound on every wait.
const WAIT: Duration = Duration::from_secs(60);
const MODEL: &str = "claude-sonnet-4-5";

/// A temporary worktree and the CLI's private directories.
struct Dirs {
    _root: tempfile::TempDir,
    worktree: PathBuf,
    private: PathBuf,
}

fn dirs() -> Dirs {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let worktree = root.path().join("worktree");
    let private = root.path().join("private");
    std::fs::create_dir(&worktree).unwrap();
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    for d in ["home", "config", "tmp"] {
        std::fs::create_dir(private.join(d)).unwrap();
    }
    std::fs::write(
        worktree.join("notes.txt"),
        "The launch code is 0451.\nSecond line.\n",
    )
    .unwrap();
    Dirs {
        worktree: worktree.canonicalize().unwrap(),
        private: private.canonicalize().unwrap(),
        _root: root,
    }
}

/// The CLI process with its pipes and a mapper; killed on drop.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    mapper: CliEventMapper,
    started: Instant,
    /// (ms since spawn, line kind), for the timeline printed at the end.
    timeline: Vec<(u128, String)>,
    /// Responses and withdrawals seen, in order.
    notices: Vec<CliAction>,
}

impl Cli {
    fn spawn(dirs: &Dirs, base_url: &str) -> Cli {
        let private = &dirs.private;
        let mut cmd = Command::new(claude_bin());
        cmd.args(LaunchSpec::new(MODEL).args())
            .current_dir(&dirs.worktree)
            .env_clear()
            .envs(launch::filtered_env(std::env::vars_os(), true))
            .env("CLAUDE_CONFIG_DIR", private.join("config"))
            .env("HOME", private.join("home"))
            .env("TMPDIR", private.join("tmp"))
            .env("CLAUDE_CODE_TMPDIR", private.join("tmp"))
            .env("XDG_RUNTIME_DIR", private)
            .env("ANTHROPIC_BASE_URL", base_url)
            .env("ANTHROPIC_API_KEY", "sk-ant-fake-key")
            .env("CLAUDE_CODE_ENTRYPOINT", "sdk-py")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn the claude CLI");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                if s.len() > 16 * 1024 {
                    let cut = s.len() - 8 * 1024;
                    let cut = (cut..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(0);
                    s.drain(..cut);
                }
            }
        });
        Cli {
            child,
            stdin,
            stdout,
            stderr,
            mapper: CliEventMapper::new(),
            started,
            timeline: Vec::new(),
            notices: Vec::new(),
        }
    }

    fn ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    fn stderr_tail(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn send(&mut self, input: &CliInput) {
        let line = input.to_line();
        let stdin = self.stdin.as_mut().expect("stdin open");
        tokio::time::timeout(WAIT, async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        })
        .await
        .expect("writing to the CLI timed out")
        .expect("write to the CLI");
        let kind = input.to_value()["type"].as_str().unwrap_or("").to_owned();
        self.timeline.push((self.ms(), format!("> {kind}")));
    }

    /// The next stdout line, decoded and mapped.
    async fn next(&mut self) -> (CliMessage, Vec<Event>, Vec<CliAction>) {
        let line = match tokio::time::timeout(WAIT, self.stdout.next_line()).await {
            Err(_) => panic!(
                "no line from the CLI within {WAIT:?}; stderr:\n{}",
                self.stderr_tail()
            ),
            Ok(Err(e)) => panic!("reading the CLI's stdout: {e}"),
            Ok(Ok(None)) => panic!(
                "the CLI closed stdout (status {:?}); stderr:\n{}",
                self.child.try_wait(),
                self.stderr_tail()
            ),
            Ok(Ok(Some(line))) => line,
        };
        let msg = CliMessage::parse_line(&line).unwrap_or_else(|e| panic!("{e}"));
        let mapped = self.mapper.feed(&msg);
        let kind = msg.kind();
        if !matches!(self.timeline.last(), Some((_, k)) if *k == kind && kind == "stream_event") {
            self.timeline.push((self.ms(), kind));
        }
        (msg, mapped.events, mapped.actions)
    }

    /// Carries out the automatic actions; returns gate requests.
    async fn act(&mut self, actions: Vec<CliAction>) -> Vec<(String, UserQuestion, Value)> {
        let mut gate = Vec::new();
        for a in actions {
            match a {
                CliAction::Send(input) => self.send(&input).await,
                CliAction::AskGate {
                    request_id,
                    question,
                    input,
                } => gate.push((request_id, question, input)),
                other => self.notices.push(other),
            }
        }
        gate
    }

    /// Sends `prompt` and runs the turn to its `result`, deciding questions
    /// with `decide`. Returns the events in order.
    async fn turn(
        &mut self,
        prompt: &str,
        mut decide: impl FnMut(&UserQuestion) -> Decision,
    ) -> Vec<Event> {
        self.send(&CliInput::UserTurn {
            text: prompt.to_owned(),
        })
        .await;
        let mut events = Vec::new();
        loop {
            let (_, evs, actions) = self.next().await;
            let done = evs.iter().any(|e| matches!(e, Event::Result(_)));
            events.extend(evs);
            for (request_id, question, input) in self.act(actions).await {
                let decision = decide(&question);
                self.send(&CliInput::for_decision(&request_id, &input, &decision))
                    .await;
                assert!(self.mapper.answered(&request_id).is_some());
            }
            if done {
                return events;
            }
        }
    }

    /// Sends `initialize` and waits for its response.
    async fn initialize(&mut self) {
        self.send(&CliInput::Initialize {
            request_id: "init-1".into(),
        })
        .await;
        while !self.answered("init-1") {
            let (msg, events, actions) = self.next().await;
            assert!(events.is_empty(), "events before the first turn: {msg:?}");
            assert!(self.act(actions).await.is_empty());
        }
    }

    /// Whether the CLI answered our request `id` with success.
    fn answered(&self, id: &str) -> bool {
        self.notices.iter().any(
            |a| matches!(a, CliAction::Response { request_id, result: Ok(_) } if request_id == id),
        )
    }

    /// Reads until a `result`, answering hooks; a question is a failure.
    async fn until_result(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let (_, evs, actions) = self.next().await;
            let done = evs.iter().any(|e| matches!(e, Event::Result(_)));
            events.extend(evs);
            let gate = self.act(actions).await;
            assert!(gate.is_empty(), "unexpected question {gate:?}");
            if done {
                return events;
            }
        }
    }

    /// Closes stdin and waits for the exit status.
    async fn close(mut self) -> (std::process::ExitStatus, Vec<(u128, String)>) {
        drop(self.stdin.take());
        // Drain what is left so the CLI never blocks on a full pipe.
        let drain = async {
            while let Ok(Some(_)) = self.stdout.next_line().await {}
            self.child.wait().await
        };
        let status = tokio::time::timeout(WAIT, drain)
            .await
            .expect("the CLI did not exit after stdin closed")
            .expect("wait for the CLI");
        (status, std::mem::take(&mut self.timeline))
    }
}

fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(Event::type_name).collect()
}

fn position(events: &[Event], name: &str) -> usize {
    events
        .iter()
        .position(|e| e.type_name() == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", names(events)))
}

fn result_of(events: &[Event]) -> &duraclaw_core::protocol::TurnResult {
    match events.last() {
        Some(Event::Result(r)) => r,
        other => panic!("the turn did not end with a result: {other:?}"),
    }
}

fn tool_result_of<'a>(req: &'a RecordedRequest, tool_use_id: &str) -> &'a Value {
    req.tool_results()
        .into_iter()
        .find(|b| b["tool_use_id"] == tool_use_id)
        .unwrap_or_else(|| panic!("no tool_result for {tool_use_id} in the request"))
}

fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cli_text_read_allowed_bash_denied() {
    let dirs = dirs();
    let notes = dirs.worktree.join("notes.txt");
    let forbidden = dirs.worktree.join("forbidden.txt");
    let hello = "Hello! I am a scripted reply, streamed in pieces.";
    let deny_reason = "Not in this worktree, please: no shell commands today.";
    let fake = FakeAnthropic::start([
        Turn::text(hello),
        Turn::text("Let me read the notes.").with_tool_use_id(
            "toolu_read_1",
            "Read",
            json!({"file_path": notes.to_str().unwrap()}),
        ),
        Turn::text("The notes say the launch code is 0451."),
        Turn::tool_use(
            "Bash",
            json!({"command": format!("touch {}", forbidden.display()), "description": "Create a file"}),
        )
        .with_stop_reason("tool_use"),
        Turn::text("Understood, I will not run it."),
    ])
    .await
    .unwrap();

    let mut cli = Cli::spawn(&dirs, &fake.base_url());

    cli.initialize().await;
    let init_ms = cli.ms();

    // 1. A text turn.
    let sent = cli.ms();
    let t1 = cli
        .turn("Say hello", |q| panic!("unexpected question {q:?}"))
        .await;
    let t1_ms = cli.ms() - sent;
    match &t1[0] {
        Event::SessionInit(init) => {
            assert_eq!(init.model.as_deref(), Some(MODEL));
            assert_eq!(init.cwd.as_deref(), dirs.worktree.to_str());
            assert_eq!(init.permission_mode.as_deref(), Some("default"));
            assert_eq!(init.executor_version.as_deref(), Some(launch::CLI_VERSION));
            assert!(init.tools.iter().any(|t| t == "Read"));
            assert!(init.executor_session_id.is_some());
        }
        other => panic!("the turn did not start with session.init: {other:?}"),
    }
    let deltas: Vec<&str> = t1
        .iter()
        .filter_map(|e| match e {
            Event::Assistant(a) if a.phase == AssistantPhase::Delta => Some(a.text.as_str()),
            _ => None,
        })
        .collect();
    assert!(deltas.len() >= 3, "expected several deltas, got {deltas:?}");
    assert_eq!(deltas.concat(), hello);
    let finals: Vec<&str> = t1
        .iter()
        .filter_map(|e| match e {
            Event::Assistant(a) if a.phase == AssistantPhase::Final => Some(a.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(finals, [hello]);
    assert!(position(&t1, "assistant") < position(&t1, "result"));
    let r1 = result_of(&t1);
    assert!(!r1.is_error);
    assert_eq!(r1.subtype.as_deref(), Some("success"));
    assert_eq!(r1.terminal_reason.as_deref(), Some("completed"));
    assert!(r1.duration_ms.is_some() && r1.cost_usd.is_some() && r1.usage.is_some());

    // 2. Read: the hook answers "ask", can_use_tool arrives, we allow.
    let sent = cli.ms();
    let mut asked = Vec::new();
    let t2 = cli
        .turn("What do the notes say?", |q| {
            asked.push(q.clone());
            Decision::Allow {
                updated_input: None,
                remember: false,
            }
        })
        .await;
    let t2_ms = cli.ms() - sent;
    assert_eq!(asked.len(), 1, "one approval for Read: {asked:?}");
    assert_eq!(asked[0].tool_use_id.as_deref(), Some("toolu_read_1"));
    match &asked[0].kind {
        QuestionKind::Permission {
            tool_name, input, ..
        } => {
            assert_eq!(tool_name, "Read");
            assert_eq!(input["file_path"], notes.to_str().unwrap());
        }
        other => panic!("{other:?}"),
    }
    assert!(position(&t2, "tool_use") < position(&t2, "user_question"));
    assert!(position(&t2, "user_question") < position(&t2, "tool_result"));
    let read_result = t2
        .iter()
        .find_map(|e| match e {
            Event::ToolResult(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(read_result.tool_use_id, "toolu_read_1");
    assert!(!read_result.is_error);
    assert!(
        content_text(&read_result.content).contains("The launch code is 0451."),
        "{:?}",
        read_result.content
    );
    let r2 = result_of(&t2);
    assert!(!r2.is_error);
    assert_eq!(r2.num_turns, Some(2));
    // The model saw the file too.
    let after_read = fake
        .model_requests()
        .into_iter()
        .find(|r| {
            r.tool_results()
                .iter()
                .any(|b| b["tool_use_id"] == "toolu_read_1")
        })
        .expect("a request carrying the Read result");
    assert!(content_text(&tool_result_of(&after_read, "toolu_read_1")["content"]).contains("0451"));

    // 3. Bash: denied with a reason.
    let sent = cli.ms();
    let mut bash_tool_use = None;
    let t3 = cli
        .turn("Create a file", |q| {
            bash_tool_use.clone_from(&q.tool_use_id);
            assert!(
                matches!(&q.kind, QuestionKind::Permission { tool_name, .. } if tool_name == "Bash")
            );
            Decision::Deny {
                reason: deny_reason.into(),
                interrupt: false,
            }
        })
        .await;
    let t3_ms = cli.ms() - sent;
    let bash_id = bash_tool_use.expect("Bash was asked about");
    let denied = t3
        .iter()
        .find_map(|e| match e {
            Event::ToolResult(r) if r.tool_use_id == bash_id => Some(r),
            _ => None,
        })
        .unwrap();
    assert!(denied.is_error);
    assert!(content_text(&denied.content).contains(deny_reason));
    let r3 = result_of(&t3);
    assert!(!r3.is_error, "a denial does not fail the turn: {r3:?}");
    assert!(!forbidden.exists(), "the denied command ran");
    // The next API request tells the model why, as an error tool_result.
    let requests = fake.model_requests();
    let after_deny = requests
        .iter()
        .find(|r| {
            r.tool_results()
                .iter()
                .any(|b| b["tool_use_id"] == bash_id.as_str())
        })
        .expect("a request carrying the denial");
    let block = tool_result_of(after_deny, &bash_id);
    assert_eq!(block["is_error"], true);
    assert!(content_text(&block["content"]).contains(deny_reason));
    assert_eq!(requests.len(), 5, "five scripted model calls");
    assert!(
        requests
            .iter()
            .all(|r| r.query.as_deref() == Some("beta=true"))
    );
    assert!(requests.iter().all(|r| r.body["stream"] == true));

    let (status, timeline) = cli.close().await;
    assert!(status.success(), "exit status {status:?}");
    // The transcript lives in the private config directory.
    let projects = dirs.private.join("config").join("projects");
    assert!(
        walk_has_jsonl(&projects),
        "no transcript under {}",
        projects.display()
    );

    eprintln!(
        "claude {}: initialize reply {init_ms} ms after spawn; text turn {t1_ms} ms; \
         Read turn {t2_ms} ms; Bash-denied turn {t3_ms} ms",
        launch::CLI_VERSION
    );
    for (ms, kind) in timeline {
        eprintln!("{ms:>6} ms  {kind}");
    }
}

fn finals(events: &[Event]) -> Vec<&duraclaw_core::protocol::Assistant> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Assistant(a) if a.phase == AssistantPhase::Final => Some(a),
            _ => None,
        })
        .collect()
}

/// Interrupts while the model streams (the fake holds the stream on a
/// latch) and while a `can_use_tool` waits for a human; the process stays
/// usable and the partial answer is part of the next turn's context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cli_interrupts_and_stays_usable() {
    let dirs = dirs();
    let held = Latch::new();
    let fake = FakeAnthropic::start([
        Turn::text("This answer is long and will be cut off before it ends.")
            .with_chunk_chars(4)
            .with_hold(2, &held),
        Turn::tool_use(
            "Bash",
            json!({"command": "ls", "description": "List files"}),
        ),
        Turn::text("Still here."),
    ])
    .await
    .unwrap();
    let mut cli = Cli::spawn(&dirs, &fake.base_url());
    cli.initialize().await;

    // 1. Interrupt mid-stream: wait until two deltas reached us and the fake
    // holds the rest.
    cli.send(&CliInput::UserTurn {
        text: "Tell me something long".into(),
    })
    .await;
    let mut events = Vec::new();
    let mut streamed = String::new();
    while streamed.chars().count() < 8 {
        let (_, evs, actions) = cli.next().await;
        assert!(cli.act(actions).await.is_empty());
        for e in &evs {
            if let Event::Assistant(a) = e {
                assert_eq!(a.phase, AssistantPhase::Delta);
                streamed.push_str(&a.text);
            }
        }
        events.extend(evs);
    }
    tokio::time::timeout(WAIT, held.reached()).await.unwrap();
    cli.send(&CliInput::Interrupt {
        request_id: "int-1".into(),
    })
    .await;
    let interrupted_at = Instant::now();
    events.extend(cli.until_result().await);
    let interrupt_ms = interrupted_at.elapsed().as_millis();
    held.release();
    assert!(cli.answered("int-1"), "no response to the interrupt");
    let partial = finals(&events);
    assert_eq!(partial.len(), 1, "{events:?}");
    assert!(partial[0].aborted);
    assert_eq!(partial[0].text, streamed);
    assert!(events.iter().any(|e| matches!(e,
        Event::Unknown(v) if v["type"] == "cli.user" && v["text"] == "[Request interrupted by user]")));
    let r = result_of(&events);
    assert!(r.is_error);
    assert_eq!(r.subtype.as_deref(), Some("error_during_execution"));
    assert_eq!(r.terminal_reason.as_deref(), Some("aborted_streaming"));

    // 2. Interrupt while can_use_tool is pending: the CLI withdraws it.
    cli.send(&CliInput::UserTurn {
        text: "List the files".into(),
    })
    .await;
    let mut events = Vec::new();
    let (request_id, question) = loop {
        let (_, evs, actions) = cli.next().await;
        events.extend(evs);
        let mut gate = cli.act(actions).await;
        if let Some((id, q, _)) = gate.pop() {
            break (id, q);
        }
    };
    cli.send(&CliInput::Interrupt {
        request_id: "int-2".into(),
    })
    .await;
    let interrupted_at = Instant::now();
    events.extend(cli.until_result().await);
    let cancel_ms = interrupted_at.elapsed().as_millis();
    assert!(cli.answered("int-2"));
    assert!(
        cli.notices.contains(&CliAction::Withdraw {
            request_id: request_id.clone(),
            question_id: Some(question.question_id.clone()),
        }),
        "no withdrawal of {request_id}: {:?}",
        cli.notices
    );
    assert!(cli.mapper.pending().is_empty());
    let rejected = events
        .iter()
        .find_map(|e| match e {
            Event::ToolResult(t) => Some(t),
            _ => None,
        })
        .unwrap();
    assert!(rejected.is_error);
    assert_eq!(Some(&rejected.tool_use_id), question.tool_use_id.as_ref());
    assert_eq!(
        result_of(&events).terminal_reason.as_deref(),
        Some("aborted_tools")
    );
    assert_eq!(
        fake.model_requests().len(),
        2,
        "no model call after the cancel"
    );

    // 3. The process is still usable; the model sees the partial answer.
    let events = cli
        .turn("Are you there?", |q| panic!("unexpected question {q:?}"))
        .await;
    assert_eq!(finals(&events)[0].text, "Still here.");
    assert!(!result_of(&events).is_error);
    let last = fake.model_requests().pop().unwrap();
    assert!(
        last.body["messages"].to_string().contains(&streamed),
        "the partial text is not in the next request"
    );

    let (status, _) = cli.close().await;
    assert!(status.success(), "exit status {status:?}");
    eprintln!(
        "claude {}: interrupt mid-stream -> result {interrupt_ms} ms; \
         interrupt during can_use_tool -> result {cancel_ms} ms",
        launch::CLI_VERSION
    );
}

fn walk_has_jsonl(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            walk_has_jsonl(&p)
        } else {
            p.extension().is_some_and(|x| x == "jsonl")
        }
    })
}
