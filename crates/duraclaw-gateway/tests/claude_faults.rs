#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! [`ClaudeExecutor`] against FAKE `claude` binaries: small shell scripts,
//! written by each test, that answer `initialize` and then misbehave on the
//! first user turn. Covered: garbage on stdout, a CLI that hangs mid-turn,
//! one that never initializes (or dies before it does), one that exits 3
//! after writing to stderr, a 20 MB line, and what reaches the CLI of the
//! gateway's environment and of the configured secrets; through a
//! gateway, a CLI older than the minimum version (refused) and one that
//! runs a tool without asking (the session is stopped).
//!
//! Every wait is bounded; the only polling is for a process to be gone,
//! which no event announces.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use duraclaw_approval::{AuditAction, MemoryAudit, MemoryGate};
use duraclaw_core::Result;
use duraclaw_core::executor::{EventSink, Executor, ExecutorSession, StartSpec};
use duraclaw_core::protocol::{
    Command, CommandEnvelope, CommandResult, ERROR_EXECUTOR_UNSUPPORTED, ERROR_UNAPPROVED_TOOL,
    ErrorEvent, Event, FromGateway, Hello, Role, ToGateway, UserTurn,
};
use duraclaw_core::state::SessionState;
use duraclaw_gateway::claude::{ClaudeConfig, ClaudeExecutor};
use duraclaw_gateway::cli::launch;
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_store::SqliteDirectory;
use tokio::sync::mpsc;

mod support;

/// The bound on every wait for an event.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct ChannelSink(mpsc::UnboundedSender<Event>);

#[async_trait]
impl EventSink for ChannelSink {
    async fn emit(&self, event: Event) -> Result<()> {
        let _ = self.0.send(event);
        Ok(())
    }
}

/// A temporary directory holding the fake CLI and the files it writes.
struct Fake {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

/// The part of every fake that answers `initialize`; `$TURN` runs on each
/// user message (with `$N` its number from 1) and `$INIT` before the
/// answer to `initialize` (`return 1` there skips the answer).
const PRELUDE: &str = r#"#!/bin/sh
if [ "$1" = --version ]; then echo "$FAKE_VERSION (Claude Code)"; exit 0; fi
echo $$ > "$FAKE_DIR/pid"
N=0
while IFS= read -r line; do
  case "$line" in
    *'"subtype":"initialize"'*)
      init || continue
      id=$(printf '%s\n' "$line" | sed -n 's/.*"request_id":"\([^"]*\)".*/\1/p')
      printf '{"type":"control_response","response":{"subtype":"success","request_id":"%s","response":{}}}\n' "$id"
      ;;
    *'"type":"user"'*)
      N=$((N + 1))
      turn
      ;;
  esac
done
"#;

const SYSTEM_INIT: &str =
    r#"{"type":"system","subtype":"init","session_id":"fake-1","model":"fake","tools":[]}"#;
const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"session_id":"fake-1","total_cost_usd":0.001}"#;

impl Fake {
    /// A fake whose `init` and `turn` shell functions are `init` and `turn`.
    fn new(init: &str, turn: &str) -> Self {
        Self::with_version(launch::CLI_VERSION, init, turn)
    }

    /// A fake that says it is `version` when asked (`--version`).
    fn with_version(version: &str, init: &str, turn: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("claude");
        let script = format!(
            "#!/bin/sh\nFAKE_DIR='{}'\nFAKE_VERSION='{version}'\ninit() {{\n{init}\n:\n}}\nturn() {{\n{turn}\n:\n}}\n{}",
            dir.path().display(),
            PRELUDE.trim_start_matches("#!/bin/sh\n")
        );
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fake { dir, bin }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> ClaudeConfig {
        let mut cfg = ClaudeConfig::new(&self.bin);
        cfg.isolated = true;
        cfg.init_timeout = Duration::from_secs(5);
        cfg.interrupt_timeout = Duration::from_secs(1);
        cfg.idle_timeout = Duration::from_secs(60);
        cfg.stop_grace = Duration::from_secs(2);
        cfg
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(self.path("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Starts a session with `cfg` and the first prompt.
    async fn start(
        &self,
        cfg: ClaudeConfig,
    ) -> (
        Result<Box<dyn ExecutorSession>>,
        mpsc::UnboundedReceiver<Event>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let executor = ClaudeExecutor::new(cfg);
        let spec = StartSpec {
            session_id: "faulty".into(),
            worktree: self.dir.path().display().to_string(),
            prompt: Some("hello".into()),
            model: None,
            permission_mode: None,
            system_prompt: None,
            resume: None,
            fork_at: None,
        };
        let started = executor
            .start(spec, Arc::new(MemoryGate::new()), Arc::new(ChannelSink(tx)))
            .await;
        (started, rx)
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("no event in time")
        .expect("the sink was dropped")
}

/// Events up to the first that satisfies `stop`, which is the last.
async fn until(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    stop: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut got = Vec::new();
    loop {
        let e = next(rx).await;
        let done = stop(&e);
        got.push(e);
        if done {
            return got;
        }
    }
}

fn error_code<'a>(e: &'a Event, code: &str) -> Option<&'a ErrorEvent> {
    match e {
        Event::Error(err) if err.code.as_deref() == Some(code) => Some(err),
        _ => None,
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Waits (bounded) until the session's process has ended and `pid` is gone.
async fn wait_stopped(session: &dyn ExecutorSession, pids: &[i32]) {
    let start = Instant::now();
    while session.is_running() || !pids.iter().all(|p| gone(*p)) {
        assert!(
            start.elapsed() < DEADLINE,
            "the CLI (pids {pids:?}) was not stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pid a fake wrote to `name` in its directory.
fn read_pid(fake: &Fake, name: &str) -> i32 {
    std::fs::read_to_string(fake.path(name))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn garbage_on_stdout_is_reported_and_then_stopped() {
    // A child of its own (which the stop must reach too), 80 lines that
    // are not JSON, then the fake would wait forever.
    let fake = Fake::new(
        "",
        r#"sleep 600 & echo $! > "$FAKE_DIR/sleeper"
           i=0; while [ $i -lt 80 ]; do echo "this is not json $i"; i=$((i + 1)); done
           wait"#,
    );
    let started = Instant::now();
    let (session, mut rx) = fake.start(fake.config()).await;
    let session = session.unwrap();
    let events = until(&mut rx, |e| {
        error_code(e, "executor_garbage").is_some_and(|err| err.message.contains("in a row"))
    })
    .await;
    let garbage: Vec<_> = events
        .iter()
        .filter_map(|e| error_code(e, "executor_garbage"))
        .collect();
    assert_eq!(garbage.len(), 51, "50 lines reported, then the stop");
    assert!(
        garbage[0].message.contains("this is not json 0"),
        "{:?}",
        garbage[0]
    );
    wait_stopped(session.as_ref(), &[fake.pid(), read_pid(&fake, "sleeper")]).await;
    println!("garbage: stopped after {:?}", started.elapsed());
    // Nothing else: the stop was ours, so no exit is reported.
    assert!(rx.try_recv().is_err());
    assert!(session.send_message("more").await.is_err());
}

#[tokio::test]
async fn a_cli_that_hangs_mid_turn_is_killed_after_the_idle_timeout() {
    // Answers initialize, then reads the user turn and says nothing more.
    let fake = Fake::new("", r#"echo "$N" > "$FAKE_DIR/turns""#);
    let mut cfg = fake.config();
    cfg.idle_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let (session, mut rx) = fake.start(cfg).await;
    let session = session.unwrap();
    let events = until(&mut rx, |e| error_code(e, "executor_hung").is_some()).await;
    let elapsed = started.elapsed();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    wait_stopped(session.as_ref(), &[fake.pid()]).await;
    println!("hung: reported after {elapsed:?}");
    assert_eq!(
        std::fs::read_to_string(fake.path("turns")).unwrap().trim(),
        "1"
    );
}

#[tokio::test]
async fn a_cli_that_hangs_after_an_approved_tool_is_killed_too() {
    // The turn asks about a tool; once it is answered, silence.
    let fake = Fake::new(
        "",
        r#"printf '%s\n' '{"type":"control_request","request_id":"req-1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"},"tool_use_id":"toolu_1"}}'
           IFS= read -r answer; printf '%s\n' "$answer" > "$FAKE_DIR/answer""#,
    );
    let mut cfg = fake.config();
    cfg.idle_timeout = Duration::from_millis(500);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gate = Arc::new(MemoryGate::new());
    let executor = ClaudeExecutor::new(cfg);
    let session = executor
        .start(
            StartSpec {
                session_id: "faulty".into(),
                worktree: fake.dir.path().display().to_string(),
                prompt: Some("hello".into()),
                model: None,
                permission_mode: None,
                system_prompt: None,
                resume: None,
                fork_at: None,
            },
            gate.clone(),
            Arc::new(ChannelSink(tx)),
        )
        .await
        .unwrap();
    let asked = until(&mut rx, |e| matches!(e, Event::UserQuestion(_))).await;
    let Some(Event::UserQuestion(q)) = asked.last() else {
        unreachable!()
    };
    // Waiting for a human is not a hang, however long it takes: the idle
    // timeout is not running while the question is pending.
    assert!(
        tokio::time::timeout(Duration::from_millis(1200), rx.recv())
            .await
            .is_err(),
        "nothing happens while the question waits"
    );
    use duraclaw_core::approval::ApprovalGate;
    use duraclaw_core::protocol::{DecidedBy, Decision};
    gate.decide(
        &q.question_id,
        Decision::Allow {
            updated_input: None,
            remember: false,
        },
        DecidedBy {
            who: "test".into(),
            client: None,
        },
    )
    .await
    .unwrap();
    let decided = Instant::now();
    let events = until(&mut rx, |e| error_code(e, "executor_hung").is_some()).await;
    let elapsed = decided.elapsed();
    assert!(
        matches!(events[0], Event::QuestionResolved(_)),
        "{events:?}"
    );
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    wait_stopped(session.as_ref(), &[fake.pid()]).await;
    let answer = std::fs::read_to_string(fake.path("answer")).unwrap();
    assert!(answer.contains(r#""behavior":"allow""#), "{answer}");
    println!("hung after an answer: reported {elapsed:?} after the decision");
}

#[tokio::test]
async fn a_cli_that_never_initializes_fails_the_start_with_its_stderr() {
    let fake = Fake::new(
        r#"echo "fake: cannot reach the API, retrying forever" >&2; return 1"#,
        "",
    );
    let mut cfg = fake.config();
    cfg.init_timeout = Duration::from_millis(700);
    let started = Instant::now();
    let (session, mut rx) = fake.start(cfg.clone()).await;
    let elapsed = started.elapsed();
    let err = session.unwrap_err().to_string();
    println!("never initialized: failed after {elapsed:?}: {err}");
    assert!(err.contains("did not initialize"), "{err}");
    assert!(err.contains("timed out after 700 ms"), "{err}");
    assert!(
        err.contains("fake: cannot reach the API, retrying forever"),
        "{err}"
    );
    assert!(
        elapsed < cfg.init_timeout + cfg.stop_grace + Duration::from_secs(1),
        "{elapsed:?}"
    );
    assert!(gone(fake.pid()));
    // A failed start logs nothing.
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn a_cli_that_dies_before_initializing_fails_the_start_at_once() {
    let fake = Fake::new(
        r#"echo "Invalid API key · Please run /login" >&2; exit 1"#,
        "",
    );
    let mut cfg = fake.config();
    cfg.init_timeout = Duration::from_secs(30);
    let started = Instant::now();
    let (session, _rx) = fake.start(cfg).await;
    let elapsed = started.elapsed();
    let err = session.unwrap_err().to_string();
    println!("died before initializing: failed after {elapsed:?}: {err}");
    assert!(err.contains("exited"), "{err}");
    assert!(err.contains("Invalid API key"), "{err}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[tokio::test]
async fn a_cli_that_exits_mid_turn_reports_its_status_and_stderr() {
    let fake = Fake::new(
        "",
        &format!(
            r#"printf '%s\n' '{SYSTEM_INIT}'
               echo "Error: something went badly wrong" >&2
               echo "  at the very end" >&2
               exit 3"#
        ),
    );
    let (session, mut rx) = fake.start(fake.config()).await;
    let session = session.unwrap();
    let events = until(&mut rx, |e| matches!(e, Event::Error(_))).await;
    assert!(matches!(events[0], Event::SessionInit(_)), "{events:?}");
    let err = error_code(events.last().unwrap(), "executor_exited").expect("an exit error");
    assert_eq!(err.exit_status, Some(3), "{err:?}");
    let tail = err.stderr_tail.as_deref().unwrap_or_default();
    assert!(
        tail.contains("Error: something went badly wrong") && tail.ends_with("at the very end"),
        "{err:?}"
    );
    assert!(err.message.contains("status 3"), "{err:?}");
    wait_stopped(session.as_ref(), &[fake.pid()]).await;
    assert!(session.send_message("again").await.is_err());
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .to_owned();
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Runs the ignored test `name` alone in a new process of this test binary
/// with `env` added; returns its stdout once it passed.
async fn nested(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(exe)
            .args(["--exact", name, "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the nested test did not finish in time")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn a_20_mb_line_is_skipped_and_the_session_goes_on() {
    // In a process of its own, so that its peak memory is its own.
    let out = nested("a_20_mb_line_in_a_process_of_its_own", &[]).await;
    for line in out
        .lines()
        .filter_map(|l| l.find("20 MB line").map(|at| &l[at..]))
    {
        println!("{line}");
    }
}

#[tokio::test]
#[ignore = "run by a_20_mb_line_is_skipped_and_the_session_goes_on, alone in its process"]
async fn a_20_mb_line_in_a_process_of_its_own() {
    const LINE: u64 = 20 * 1024 * 1024;
    let fake = Fake::new(
        "",
        &format!(
            r#"printf '%s\n' '{SYSTEM_INIT}'
               if [ "$N" = 1 ]; then head -c {LINE} /dev/zero | tr '\0' x; echo; fi
               printf '%s\n' '{RESULT}'"#
        ),
    );
    let before = peak_rss();
    let started = Instant::now();
    let (session, mut rx) = fake.start(fake.config()).await;
    let session = session.unwrap();
    let first = until(&mut rx, |e| matches!(e, Event::Result(_))).await;
    let elapsed = started.elapsed();
    let too_long: Vec<_> = first
        .iter()
        .filter_map(|e| error_code(e, "executor_line_too_long"))
        .collect();
    assert_eq!(too_long.len(), 1, "{first:?}");
    assert!(
        too_long[0].message.contains(&format!("{LINE} bytes")),
        "{:?}",
        too_long[0]
    );
    let grew = peak_rss().saturating_sub(before);
    println!(
        "20 MB line: skipped in {elapsed:?}; peak memory grew by {} KiB",
        grew / 1024
    );
    assert!(
        grew < LINE * 3 / 4,
        "peak memory grew by {grew} bytes for a {LINE}-byte line"
    );
    // The session goes on.
    assert!(session.is_running());
    session.send_message("next").await.unwrap();
    let second = until(&mut rx, |e| matches!(e, Event::Result(_))).await;
    assert!(
        second.iter().all(|e| !matches!(e, Event::Error(_))),
        "{second:?}"
    );
    session.shutdown().await.unwrap();
    assert!(!session.is_running());
}

/// The marker that makes [`env_and_argv_in_a_nested_gateway`] do its work:
/// only [`the_cli_gets_no_claudecode_variables_and_no_secrets_in_argv`]
/// sets it, in a copy of this test binary it starts with `CLAUDECODE*`
/// variables in its environment (which a test cannot set in its own).
const CHILD_MARKER: &str = "DURACLAW_FAULTS_CHILD_DIR";
const SECRET: &str = "sk-ant-fake-secret-0123456789";

#[tokio::test]
async fn the_cli_gets_no_claudecode_variables_and_no_secrets_in_argv() {
    let out_dir = tempfile::tempdir().unwrap();
    nested(
        "env_and_argv_in_a_nested_gateway",
        &[
            (CHILD_MARKER, out_dir.path().as_os_str()),
            ("CLAUDECODE", "1".as_ref()),
            ("CLAUDECODE_ENTRYPOINT", "nested".as_ref()),
            ("CLAUDE_CODE_SSE_PORT", "12345".as_ref()),
            ("DURACLAW_FAULTS_INHERITED", "kept".as_ref()),
        ],
    )
    .await;
    let env = std::fs::read_to_string(out_dir.path().join("env")).unwrap();
    let argv = std::fs::read(out_dir.path().join("cmdline")).unwrap();
    let argv: Vec<String> = argv
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("CLAUDECODE")),
        "{names:?}"
    );
    // `isolated` also drops inherited CLAUDE_CODE_*; other variables pass.
    assert!(!names.contains(&"CLAUDE_CODE_SSE_PORT"), "{names:?}");
    assert!(env.contains("DURACLAW_FAULTS_INHERITED=kept"), "{env}");
    // The secret is in the environment, nowhere in the arguments.
    assert!(
        env.contains(&format!("ANTHROPIC_API_KEY={SECRET}")),
        "{env}"
    );
    assert!(argv.iter().all(|a| !a.contains(SECRET)), "{argv:?}");
    assert!(argv.iter().any(|a| a == "--model"), "{argv:?}");
}

#[tokio::test]
#[ignore = "run by the_cli_gets_no_claudecode_variables_and_no_secrets_in_argv with CLAUDECODE set"]
async fn env_and_argv_in_a_nested_gateway() {
    let out = PathBuf::from(std::env::var_os(CHILD_MARKER).expect("run by its parent test"));
    assert_eq!(std::env::var("CLAUDECODE").as_deref(), Ok("1"));
    let fake = Fake::new(
        "",
        &format!(
            r#"env > "{out}/env.tmp" && mv "{out}/env.tmp" "{out}/env"
               cat /proc/$$/cmdline > "{out}/cmdline"
               printf '%s\n' '{RESULT}'"#,
            out = out.display()
        ),
    );
    let mut cfg = fake.config();
    cfg.env = vec![("ANTHROPIC_API_KEY".into(), SECRET.into())];
    let (session, mut rx) = fake.start(cfg).await;
    let session = session.unwrap();
    until(&mut rx, |e| matches!(e, Event::Result(_))).await;
    session.shutdown().await.unwrap();
    assert!(Path::new(&out).join("env").is_file());
}

// ---------------------------------------------------------------------------
// Through a gateway: the CLI's version, and tools that run unapproved
// ---------------------------------------------------------------------------

/// The gateway link's bearer secret in these tests.
const LINK_SECRET: &str = "test-secret-0123456789abcdef";

/// A gateway whose executor runs `fake`, serving on 127.0.0.1, with a git
/// worktree `projects/app` and an audit trail kept in memory.
struct FakeGateway {
    _dir: tempfile::TempDir,
    worktree: PathBuf,
    gateway: Gateway,
    addr: std::net::SocketAddr,
    audit: Arc<MemoryAudit>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGateway {
    async fn start(fake: &Fake) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let worktree = root.join("projects/app");
        support::init_repo(&worktree);
        let directory = Arc::new(
            SqliteDirectory::open(root.join("gateway.db"))
                .await
                .unwrap(),
        );
        let audit = Arc::new(MemoryAudit::default());
        let gateway = Gateway::with_audit(
            GatewayOptions {
                directory,
                executor: Arc::new(ClaudeExecutor::new(fake.config())),
                worktrees: WorktreeIndex::new(vec![format!("{}/projects/*", root.display())])
                    .unwrap(),
                approval_timeout: None,
            },
            audit.clone(),
        )
        .await
        .unwrap();
        let (addr, task) = support::serve_link(&gateway, LINK_SECRET).await;
        FakeGateway {
            _dir: dir,
            worktree,
            gateway,
            addr,
            audit,
            task,
        }
    }

    async fn apply(&self, id: &str, session: &str, command: Command) -> CommandResult {
        self.gateway
            .apply(CommandEnvelope {
                id: id.into(),
                session_id: session.into(),
                command,
            })
            .await
    }

    /// The gateway's hello to an orchestrator that connects now.
    async fn hello(&self) -> Hello {
        let mut ws = support::connect_with(self.addr, Some(&format!("Bearer {LINK_SECRET}")))
            .await
            .unwrap();
        support::send(&mut ws, &ToGateway::Hello(Hello::new(Role::Orchestrator))).await;
        match support::recv(&mut ws, DEADLINE).await {
            FromGateway::Hello(h) => h,
            other => panic!("expected hello, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_below_the_minimum_version_is_refused_at_start_and_in_the_status() {
    let fake = Fake::with_version("2.1.84", "", r#"touch "$FAKE_DIR/ran""#);
    let gw = FakeGateway::start(&fake).await;
    let why = format!(
        "unsupported Claude Code CLI: version 2.1.84 found, {} or later needed",
        launch::MIN_CLI_VERSION
    );
    // What the orchestrator's /api/status shows comes from the hello.
    let status = gw
        .gateway
        .executor_error()
        .await
        .expect("an executor error");
    assert!(status.starts_with(&why), "{status}");
    assert_eq!(
        gw.hello().await.executor_error.as_deref(),
        Some(status.as_str())
    );
    // A session start is refused with the same message and its own code.
    let r = gw
        .apply(
            "c-1",
            "s1",
            support::execute(gw.worktree.display().to_string(), "hello"),
        )
        .await;
    assert!(!r.ok);
    let err = r.error.unwrap();
    assert_eq!(err.code, ERROR_EXECUTOR_UNSUPPORTED);
    assert_eq!(err.message, status);
    // The executor alone refuses too: the CLI never ran.
    let (started, _rx) = fake.start(fake.config()).await;
    match started {
        Err(duraclaw_core::Error::ExecutorUnsupported(m)) => assert_eq!(m, status),
        other => panic!("{other:?}"),
    }
    assert!(!fake.path("pid").exists(), "the old CLI was started");
    assert!(!fake.path("ran").exists());

    // The minimum itself is accepted.
    let ok = Fake::with_version(launch::MIN_CLI_VERSION, "", "");
    let gw = FakeGateway::start(&ok).await;
    assert_eq!(gw.gateway.executor_error().await, None);
    assert_eq!(gw.hello().await.executor_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_that_runs_without_a_question_stops_the_session() {
    // What CLIs before 2.1.85 do with a tool they allow by themselves: no
    // `can_use_tool`, the tool runs, its result comes; then the turn goes
    // on.
    let fake = Fake::new(
        "",
        &format!(
            r#"printf '%s\n' '{SYSTEM_INIT}'
               printf '%s\n' '{{"type":"assistant","message":{{"content":[{{"id":"toolu_unasked","input":{{"command":"echo pwned > PWNED"}},"name":"Bash","type":"tool_use"}}],"id":"msg_1","role":"assistant","type":"message"}},"parent_tool_use_id":null,"session_id":"fake-1","uuid":"u-1"}}'
               echo pwned > "$FAKE_DIR/PWNED"
               printf '%s\n' '{{"type":"user","message":{{"role":"user","content":[{{"tool_use_id":"toolu_unasked","type":"tool_result","content":"","is_error":false}}]}},"parent_tool_use_id":null,"session_id":"fake-1","uuid":"u-2"}}'
               printf '%s\n' '{{"type":"assistant","message":{{"content":[{{"text":"Done, and more work after it.","type":"text"}}],"id":"msg_2","role":"assistant","type":"message"}},"parent_tool_use_id":null,"session_id":"fake-1","uuid":"u-3"}}'
               printf '%s\n' '{RESULT}'
               sleep 1; touch "$FAKE_DIR/later""#
        ),
    );
    let gw = FakeGateway::start(&fake).await;
    let r = gw
        .apply(
            "c-1",
            "s1",
            support::execute(gw.worktree.display().to_string(), "list the files"),
        )
        .await;
    assert!(r.ok, "{r:?}");
    let session = gw.gateway.session("s1").await.unwrap();
    let mut sub = session.log().subscribe(0);
    let mut events = Vec::new();
    let error = loop {
        let e = tokio::time::timeout(DEADLINE, sub.next())
            .await
            .expect("no unapproved_tool error in time")
            .unwrap()
            .unwrap()
            .event()
            .unwrap();
        if let Event::Error(err) = &e
            && err.code.as_deref() == Some(ERROR_UNAPPROVED_TOOL)
        {
            break err.clone();
        }
        events.push(e);
    };
    assert!(
        error
            .message
            .starts_with("a tool ran without approval: Bash (toolu_unasked)"),
        "{error:?}"
    );
    // What ran is in the log, before the error.
    assert!(
        matches!(events.last(), Some(Event::ToolResult(t)) if t.tool_use_id == "toolu_unasked"),
        "{events:?}"
    );
    // The CLI is stopped, the session closed on the gateway, and nothing
    // of the turn after the error is logged.
    let pid = fake.pid();
    let started = Instant::now();
    while session.is_running().await || !gone(pid) {
        assert!(started.elapsed() < DEADLINE, "the CLI was not stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed at once: it did nothing more (given the usual grace, it
    // would have gone on for a second and done more).
    assert!(
        !fake.path("later").exists(),
        "the CLI went on after the unapproved tool"
    );
    let meta = session.log().store().meta().await.unwrap();
    assert_eq!(meta.state, SessionState::Terminated);
    let after = session
        .log()
        .store()
        .read_after(sub.delivered(), 100)
        .await
        .unwrap();
    assert!(
        after.iter().all(|e| e.json.contains("question.resolved")),
        "logged after the error: {:?}",
        after.iter().map(|e| &e.json).collect::<Vec<_>>()
    );
    let again = gw
        .apply(
            "c-2",
            "s1",
            Command::Message(UserTurn {
                text: "go on".into(),
            }),
        )
        .await;
    assert_eq!(
        again.error.map(|e| e.code).as_deref(),
        Some("session_closed")
    );
    // The audit trail has it.
    assert!(
        gw.audit
            .entries()
            .iter()
            .any(|e| e.action == AuditAction::Unapproved
                && e.question_id == "toolu_unasked"
                && e.tool_name.as_deref() == Some("Bash")),
        "{:?}",
        gw.audit.entries()
    );
}
