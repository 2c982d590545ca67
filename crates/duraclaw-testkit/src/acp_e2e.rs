//! Real ACP agents through the gateway, as a client sees them, written
//! once and run on each host as cases of the API suite
//! ([`crate::api::cases`]): Codex (`codex-acp` against the fake OpenAI
//! API) and Claude through ACP (`claude-agent-acp` against the fake
//! Anthropic API), each from its [`crate::real_agents`] entry in the
//! host's agents file ([`gemini`] the same for the Gemini CLI, not in the
//! suite).
//!
//! One session per agent: the model's text streams in; a command is asked
//! about, allowed and runs (its file in the worktree); another is asked
//! about, denied and leaves nothing; after a gateway restart a follow-up
//! goes on (the agent's session loaded, or a fresh one with an
//! `agent_resumed_fresh` notice); last, abort ends a turn waiting on its
//! question (last because claude-agent-acp answers the prompt after a
//! cancel one turn late).
//!
//! The suite's ACP cases ([`CASES`]) share one gateway (`shared`): every
//! agent they run is in its agents file, each against a fake of its own.
//! Its built-in executor is the scripted one, or the Claude Code CLI for
//! the same-session case (the CLI's environment, given to the gateway,
//! would reach the other agents too). It starts with the first of them to
//! run; the scripted gateway and the suite's agents file are back
//! ([`leave`]) before any other case and at the suite's end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::browser::{Browser, is};
use crate::host::{Host, http, login, worktree};
use crate::rules::{close, wait_link};

/// The API suite's cases that share one gateway (`shared`).
pub const CASES: [&str; 3] = [
    "codex_through_acp_runs_a_whole_session_under_the_gate",
    "claude_through_acp_runs_a_whole_session_under_the_gate",
    "the_same_session_shows_the_same_events_through_both_claude_executors",
];

/// The agent the same-session case runs Claude through ACP as (its own
/// fake and private directories, beside `claude-acp` of the whole-session
/// case).
const SAME_ACP: &str = "claude-acp-same";

/// The gateway the ACP cases share on one host: the fakes its agents talk
/// to (kept alive), how each case runs, and how it is restarted.
struct Shared {
    /// A login of the first case's user, to watch the link with.
    cookie: String,
    /// The built-in Claude Code CLI's environment (the same-session fake).
    claude_env: Env,
    /// The built-in executor is that CLI (else the scripted one).
    cli: bool,
    codex: Run,
    claude: Run,
    _fakes: (
        duraclaw_fake_openai::FakeOpenAi,
        [duraclaw_fake_anthropic::FakeAnthropic; 3],
    ),
}

/// Environment variables, name and value.
type Env = Vec<(String, String)>;

/// The shared gateways, by host root.
static SHARED: Mutex<Option<HashMap<PathBuf, Shared>>> = Mutex::new(None);

/// On `h`'s shared gateway: the CLI's environment when it is the built-in
/// executor, and the cookie to watch the link with.
fn shared_env(h: &dyn Host) -> Option<(Option<Env>, String)> {
    let map = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    map.as_ref()?
        .get(h.root())
        .map(|s| (s.cli.then(|| s.claude_env.clone()), s.cookie.clone()))
}

/// Kills the gateway and starts it again as `shared` last started it
/// (scripted when it is not up); waits for the link each way.
async fn restart_gateway(h: &dyn Host, cookie: &str) {
    h.kill_gateway().await;
    wait_link(h, cookie, false).await;
    match shared_env(h).and_then(|(env, _)| env) {
        Some(env) => {
            h.start_gateway_with_claude(&crate::rules::claude_bin(), &env)
                .await;
        }
        None => h.start_gateway().await,
    }
    wait_link(h, cookie, true).await;
}

/// Makes the gateway the ACP cases share on `h` run, its built-in executor
/// the Claude Code CLI when `cli` (restarting it only to start it or to
/// switch executor), as the login `cookie`: the suite's agents file plus
/// `codex` and `claude-acp` of the whole-session cases and `SAME_ACP`,
/// each against its fake.
async fn shared(h: &dyn Host, cookie: &str, cli: bool) {
    let switch = {
        let mut map = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        map.as_mut()
            .and_then(|m| m.get_mut(h.root()))
            .map(|s| std::mem::replace(&mut s.cli, cli) != cli)
    };
    match switch {
        Some(true) => return restart_gateway(h, cookie).await,
        Some(false) => return,
        None => {}
    }
    let codex_fake = codex_fake().await;
    let claude_fake = claude_fake().await;
    let wts = SAME_USERS.map(|n| PathBuf::from(worktree(h, n)));
    let cli_fake = same_fake(&wts[0]).await;
    let acp_fake = same_fake(&wts[1]).await;
    let codex = codex_run(h.root(), &codex_fake);
    let claude = claude_run(h.root(), &claude_fake);
    // Each its own private directories: root/same-cli and root/same-acp.
    let claude_env = crate::browser_suite::claude_setup(&h.root().join("same-cli"), &cli_fake);
    let mut same = crate::real_agents::claude_acp(&h.root().join("same-acp"), &acp_fake);
    same["name"] = json!(SAME_ACP);
    let mut file: Value = serde_json::from_str(crate::agents::AGENTS).unwrap();
    let agents = file["agents"].as_array_mut().unwrap();
    agents.extend([codex.entry.clone(), claude.entry.clone(), same]);
    std::fs::write(h.root().join("agents.json"), file.to_string()).unwrap();
    SHARED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(
            h.root().to_owned(),
            Shared {
                cookie: cookie.to_owned(),
                claude_env,
                cli,
                codex,
                claude,
                _fakes: (codex_fake, [claude_fake, cli_fake, acp_fake]),
            },
        );
    restart_gateway(h, cookie).await;
}

/// Brings back the scripted gateway with the suite's agents file when the
/// ACP cases' gateway (`shared`) is up on `h`; else does nothing.
pub async fn leave(h: &dyn Host) {
    let Some((_, cookie)) = shared_env(h) else {
        return;
    };
    std::fs::write(h.root().join("agents.json"), crate::agents::AGENTS).unwrap();
    if let Some(map) = SHARED.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        map.remove(h.root());
    }
    restart_gateway(h, &cookie).await;
}

/// What one agent's run needs: its agents-file entry and the names its
/// tool calls carry.
#[derive(Clone)]
pub struct Run {
    /// The entry ([`crate::real_agents`]) the gateway is given.
    pub entry: Value,
    /// The tool names the agent's calls may show under (`execute`,
    /// `Bash`).
    pub tool: &'static [&'static str],
    /// The tool_use ids of the allowed, denied and aborted calls (`None`:
    /// the agent makes its own).
    pub ids: [Option<&'static str>; 3],
    /// The agent answers a denied call's turn with more text (Claude) or
    /// ends it as cancelled (Codex).
    pub text_after_deny: bool,
    /// The agent loads its session after a gateway restart; else it starts
    /// a fresh one, with an `agent_resumed_fresh` notice.
    pub loads: bool,
}

/// The text of the assistant messages after `seq`, finals only.
fn texts_after(b: &Browser, seq: u64) -> Vec<String> {
    b.events
        .iter()
        .filter(|(s, e)| *s > seq && e["type"] == "assistant" && e["phase"] == "final")
        .map(|(_, e)| e["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Writes the suite's agents file plus `entry` and restarts the gateway
/// (scripted built-in, so only the ACP agent is real).
async fn gateway_with(h: &dyn Host, cookie: &str, entry: Option<&Value>) {
    let mut file: Value = serde_json::from_str(crate::agents::AGENTS).unwrap();
    if let Some(entry) = entry {
        file["agents"].as_array_mut().unwrap().push(entry.clone());
    }
    std::fs::write(h.root().join("agents.json"), file.to_string()).unwrap();
    restart_gateway(h, cookie).await;
}

async fn start(h: &dyn Host, cookie: &str, name: &str, agent: &str, prompt: &str) -> String {
    let r = http()
        .post(format!("{}/api/sessions", h.base()))
        .header("cookie", cookie)
        .header("origin", h.origin())
        .json(&json!({"worktree": worktree(h, name), "prompt": prompt, "agent": agent}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "{body}\n{}", h.log_tails());
    body["session_id"].as_str().unwrap().to_owned()
}

async fn message(b: &mut Browser, id: &str, text: &str) {
    let r = b
        .command(id, json!({"type": "message", "text": text}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
}

/// The next question after `seq`, checked to be about `tool` (and call
/// `id` where given).
async fn question(b: &mut Browser, seq: u64, tool: &[&str], id: Option<&str>) -> Value {
    let q = b.until_after(seq, is("user_question")).await;
    assert_eq!(q["kind"], "permission", "{q}");
    assert!(
        tool.iter().any(|t| q["tool_name"] == *t),
        "{q}\n{:?}",
        b.events
    );
    if let Some(id) = id {
        assert_eq!(q["tool_use_id"], id, "{q}");
    }
    q
}

async fn answer(b: &mut Browser, id: &str, q: &Value, decision: &str) {
    let mut a = json!({"type": "answer", "question_id": q["question_id"], "decision": decision});
    if decision == "deny" {
        a["reason"] = json!("not this one");
    }
    let r = b.command(id, a).await;
    assert_eq!(r["ok"], true, "{r}");
}

/// The run described at the top of this module, for user `name` (worktree
/// `name`) and agent `agent` as `run` sets it up. The prompts it sends:
/// "say hello", "make a file" (`made.txt`), "make another" (`denied.txt`),
/// "after the restart", "make a third" (`aborted.txt`).
/// On a gateway of its own: the agents file has only `run`'s entry added,
/// the scripted gateway is back after.
pub async fn the_whole_session(h: &dyn Host, name: &str, agent: &str, run: Run) {
    let cookie = login(h, name, crate::api::PASSWORD).await;
    gateway_with(h, &cookie, Some(&run.entry)).await;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(session(
        h, &cookie, name, agent, &run,
    )))
    .await;
    gateway_with(h, &cookie, None).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

/// The session of [`the_whole_session`] on the gateway as it is.
async fn session(h: &dyn Host, cookie: &str, name: &str, agent: &str, run: &Run) {
    let wt = PathBuf::from(worktree(h, name));
    let id = start(h, cookie, name, agent, "say hello").await;
    let mut b = Browser::connect(h.base(), cookie, &id, 0).await;
    let outcome = std::panic::AssertUnwindSafe(steps(h, cookie, &mut b, &wt, run));
    let outcome = futures::FutureExt::catch_unwind(outcome).await;
    close(h, cookie, &id).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

/// The run of `codex` or `claude-acp` on the gateway the ACP cases share.
async fn shared_session(h: &dyn Host, name: &str, agent: &str) {
    let cookie = login(h, name, crate::api::PASSWORD).await;
    shared(h, &cookie, false).await;
    let run = {
        let map = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let s = &map.as_ref().unwrap()[h.root()];
        if agent == "codex" {
            s.codex.clone()
        } else {
            s.claude.clone()
        }
    };
    session(h, &cookie, name, agent, &run).await;
}

async fn steps(h: &dyn Host, cookie: &str, b: &mut Browser, wt: &Path, run: &Run) {
    let [allowed_id, denied_id, aborted_id] = run.ids;
    let init = b.until(is("session.init")).await;
    b.until(is("result")).await;
    let deltas = b
        .events
        .iter()
        .filter(|(_, e)| e["type"] == "assistant" && e["phase"] == "delta")
        .count();
    assert!(deltas >= 2, "the text did not stream: {:?}", b.events);
    assert_eq!(
        texts_after(b, 0),
        ["Hello from the fake."],
        "{:?}",
        b.events
    );
    assert!(
        init["executor_session_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{init}"
    );

    // Asked, allowed: it runs in the worktree and the model gets its output.
    let seq = b.last_seq();
    message(b, "t-2", "make a file").await;
    let q = question(b, seq, run.tool, allowed_id).await;
    answer(b, "a-2", &q, "allow").await;
    let allowed_id = q["tool_use_id"].clone();
    let done = b
        .until_after(seq, |e: &Value| {
            e["type"] == "tool_result" && e["tool_use_id"] == allowed_id
        })
        .await;
    b.until_after(seq, is("result")).await;
    assert_ne!(done["is_error"], true, "{done}");
    assert_eq!(
        std::fs::read_to_string(wt.join("made.txt")).unwrap_or_default(),
        "made\n",
        "{:?}",
        b.events
    );
    assert_eq!(
        texts_after(b, seq).last().map(String::as_str),
        Some("Made it.")
    );

    // Asked, denied: nothing made.
    let seq = b.last_seq();
    message(b, "t-3", "make another").await;
    let q = question(b, seq, run.tool, denied_id).await;
    answer(b, "a-3", &q, "deny").await;
    b.until_after(seq, is("result")).await;
    assert!(!wt.join("denied.txt").exists(), "a denied command ran");
    if run.text_after_deny {
        assert_eq!(
            texts_after(b, seq).last().map(String::as_str),
            Some("Not made.")
        );
    }
    assert!(
        !b.events.iter().any(|(_, e)| e["type"] == "error"),
        "{:?}",
        b.events
    );

    // A gateway restart: the follow-up goes on, loaded or fresh.
    restart_gateway(h, cookie).await;
    let seq = b.last_seq();
    message(b, "t-4", "after the restart").await;
    b.until_after(seq, is("result")).await;
    assert_eq!(
        texts_after(b, seq).last().map(String::as_str),
        Some("Back again."),
        "{:?}",
        b.events
    );
    let fresh = b
        .events
        .iter()
        .any(|(_, e)| e["type"] == "notice" && e["code"] == "agent_resumed_fresh");
    assert_eq!(fresh, !run.loads, "loaded or fresh: {:?}", b.events);

    // Abort while the turn waits on its question: the turn ends, the
    // command never runs.
    let seq = b.last_seq();
    message(b, "t-5", "make a third").await;
    question(b, seq, run.tool, aborted_id).await;
    let r = b.command("x-5", json!({"type": "abort"})).await;
    assert_eq!(r["ok"], true, "{r}");
    b.until_after(seq, is("result")).await;
    assert!(!wt.join("aborted.txt").exists(), "an aborted command ran");
}

/// Codex through `codex-acp` against the fake OpenAI API, on the gateway
/// the ACP cases share.
pub async fn codex(h: &dyn Host, name: &str) {
    shared_session(h, name, "codex").await;
}

async fn codex_fake() -> duraclaw_fake_openai::FakeOpenAi {
    use duraclaw_fake_openai::{FakeOpenAi, Turn};
    let call = |cmd: &str, id: &str| {
        Turn::function_call("exec_command", json!({"cmd": cmd, "tty": false}), id)
    };
    FakeOpenAi::start([
        Turn::text("Hello from the fake."),
        call("echo made > made.txt", "call_e2e_1"),
        Turn::text("Made it."),
        call("echo no > denied.txt", "call_e2e_2"),
        Turn::text("Back again."),
        call("echo no > aborted.txt", "call_e2e_3"),
    ])
    .await
    .unwrap()
}

fn codex_run(root: &Path, fake: &duraclaw_fake_openai::FakeOpenAi) -> Run {
    Run {
        entry: crate::real_agents::codex(root, fake),
        tool: &["execute"],
        ids: [Some("call_e2e_1"), Some("call_e2e_2"), Some("call_e2e_3")],
        text_after_deny: false,
        loads: true,
    }
}

/// The Gemini CLI (`gemini --acp`) against the fake Gemini API. Not a
/// case of the suite: after a gateway restart its `session/load` either
/// fails (`-32603`, a fresh session follows, as this expects) or succeeds
/// and replays the earlier tool calls, which the gateway takes for tool
/// calls run without approval and ends the session.
pub async fn gemini(h: &dyn Host, name: &str) {
    use duraclaw_fake_gemini::{FakeGemini, Turn};
    let shell = |cmd: &str| {
        Turn::function_call(
            "run_shell_command",
            json!({"command": cmd, "description": "a file"}),
        )
    };
    let fake = FakeGemini::start([
        Turn::text("Hello from the fake."),
        shell("echo made > made.txt"),
        Turn::text("Made it."),
        shell("echo no > denied.txt"),
        Turn::text("Not made."),
        Turn::text("Back again."),
        shell("echo no > aborted.txt"),
    ])
    .await
    .unwrap();
    let run = Run {
        entry: crate::real_agents::gemini(h.root(), &fake),
        tool: &["execute"],
        ids: [None, None, None],
        text_after_deny: true,
        // Its `session/load` fails (-32603 Internal error) for a session
        // it made in an earlier process.
        loads: false,
    };
    the_whole_session(h, name, "gemini", run).await;
}

/// Claude Code through `claude-agent-acp` against the fake Anthropic API,
/// on the gateway the ACP cases share.
pub async fn claude_acp(h: &dyn Host, name: &str) {
    shared_session(h, name, "claude-acp").await;
}

async fn claude_fake() -> duraclaw_fake_anthropic::FakeAnthropic {
    use duraclaw_fake_anthropic::{FakeAnthropic, Turn};
    let bash = |text: &str, cmd: &str, id: &str| {
        Turn::text(text).with_tool_use_id(
            id,
            "Bash",
            json!({"command": cmd, "description": "a file"}),
        )
    };
    FakeAnthropic::start([
        Turn::text("Hello from the fake."),
        bash("Making it.", "echo made > made.txt", "toolu_e2e_1"),
        Turn::text("Made it."),
        bash("Making another.", "echo no > denied.txt", "toolu_e2e_2"),
        Turn::text("Not made."),
        Turn::text("Back again."),
        bash("Making a third.", "echo no > aborted.txt", "toolu_e2e_3"),
    ])
    .await
    .unwrap()
}

fn claude_run(root: &Path, fake: &duraclaw_fake_anthropic::FakeAnthropic) -> Run {
    Run {
        entry: crate::real_agents::claude_acp(root, fake),
        // Claude Code's tool name, also when the adapter's permission
        // request overtakes the notification that names it.
        tool: &["Bash"],
        ids: [
            Some("toolu_e2e_1"),
            Some("toolu_e2e_2"),
            Some("toolu_e2e_3"),
        ],
        text_after_deny: true,
        loads: true,
    }
}

/// What a client's view of a session comes to once ids, timings, costs
/// and the streaming's granularity are set aside: per event, its type and
/// what it shows (text, tool and input, decision and by whom, error flag).
/// A tool result's text is left out: claude-agent-acp wraps a command's
/// output in a fenced block.
pub fn shown(events: &[(u64, Value)]) -> Vec<Value> {
    events
        .iter()
        .map(|(_, e)| e)
        .filter_map(|e| {
            let t = e["type"].as_str().unwrap_or("");
            Some(match t {
                "assistant" if e["phase"] == "final" => json!([t, e["text"]]),
                "user.message" => json!([t, e["text"]]),
                "tool_use" => json!([t, e["name"], e["tool_use_id"], e["input"]]),
                "user_question" => json!([t, e["kind"], e["tool_name"], e["tool_use_id"]]),
                "question.resolved" => json!([t, e["decision"], e["by"]["who"]]),
                "tool_result" => json!([t, e["tool_use_id"], e["is_error"] == true]),
                "result" => json!([t, e["is_error"] == true]),
                "error" => json!([t, e["code"]]),
                _ => return None,
            })
        })
        .collect()
}

/// One scripted session: "say hello", then "run it" (a `Bash` call,
/// asked and allowed), its events.
async fn scripted_session(
    h: &dyn Host,
    cookie: &str,
    name: &str,
    agent: &str,
) -> Vec<(u64, Value)> {
    let id = start(h, cookie, name, agent, "say hello").await;
    let mut b = Browser::connect(h.base(), cookie, &id, 0).await;
    b.until(is("result")).await;
    let seq = b.last_seq();
    message(&mut b, "t-2", "run it").await;
    let q = b.until_after(seq, is("user_question")).await;
    answer(&mut b, "a-2", &q, "allow").await;
    b.until_after(seq, is("result")).await;
    close(h, cookie, &id).await;
    b.events
}

/// The users (and worktrees) of the same-session case: through the CLI,
/// through ACP.
pub const SAME_USERS: [&str; 2] = ["samecli", "sameacp"];

/// The same-session case's script, its command writing `same.txt` in `wt`.
async fn same_fake(wt: &Path) -> duraclaw_fake_anthropic::FakeAnthropic {
    use duraclaw_fake_anthropic::{FakeAnthropic, Turn};
    let file = wt.join("same.txt").display().to_string();
    FakeAnthropic::start([
        Turn::text("Hello, same either way."),
        Turn::text("Running it.").with_tool_use_id(
            "toolu_same_1",
            "Bash",
            json!({"command": format!("echo same > {file}"), "description": "write same.txt"}),
        ),
        Turn::text("Done, same either way."),
    ])
    .await
    .unwrap()
}

/// The same scripted fake-Anthropic session run through the built-in
/// Claude Code executor (the real CLI) and through `claude-agent-acp`
/// (`claude-acp-same`) shows the same events: the same texts, the same tool
/// call with its input, asked and allowed, its result and the turns'
/// results. As the users [`SAME_USERS`], on the gateway the ACP cases
/// share.
pub async fn the_same_session_through_both_executors(h: &dyn Host) {
    let names = SAME_USERS;
    let cookie = login(h, names[0], crate::api::PASSWORD).await;
    let wts = names.map(|n| PathBuf::from(worktree(h, n)));
    shared(h, &cookie, true).await;
    let cli = scripted_session(h, &cookie, names[0], "claude").await;
    let acp = scripted_session(h, &cookie, names[1], SAME_ACP).await;
    let cli_shown = shown(&cli);
    let acp_shown = shown(&acp);
    // The worktree paths differ: compare the inputs with them replaced.
    let norm = |v: &[Value], wt: &Path| {
        serde_json::to_string(v)
            .unwrap()
            .replace(&wt.display().to_string(), "<wt>")
    };
    assert_eq!(
        norm(&cli_shown, &wts[0]),
        norm(&acp_shown, &wts[1]),
        "\nthe CLI's events: {cli:?}\nthrough ACP: {acp:?}"
    );
    for wt in &wts {
        assert_eq!(
            std::fs::read_to_string(wt.join("same.txt")).unwrap_or_default(),
            "same\n"
        );
    }
    assert!(
        cli_shown.iter().any(|e| e[0] == "tool_use") && cli_shown.len() >= 8,
        "{cli_shown:?}"
    );
}
