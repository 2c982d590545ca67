//! Golden fixtures pin the exact JSON of every frame and event.
//!
//! Each file under `tests/fixtures/` is checked three ways: it decodes into
//! the typed value this file builds in code, that value encodes back to the
//! file's JSON, and so does the decoded one. A renamed field, a changed tag
//! or a dropped `skip_serializing_if` fails here; such a change is a wire
//! change and needs a protocol version decision, not just new fixtures.
//!
//! `DURACLAW_BLESS_FIXTURES=1 cargo test -p duraclaw-core --test golden`
//! rewrites the fixtures from the values below, for an intended change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use duraclaw_core::Error;
use duraclaw_core::protocol::{
    Abort, AskOption, AskQuestion, Assistant, AssistantPhase, Command, CommandEnvelope,
    CommandResult, DecidedBy, Decision, ErrorEvent, Event, Execute, FromBrowser, FromGateway,
    GatewayRequest, Hello, KNOWN_EVENT_TYPES, NOTICE_RERUN_AFTER_RESTART, NOTICE_RULE_DECISION,
    NOTICE_WORKTREE, Notice, QuestionKind, QuestionResolved, Resume, Role, RuleAction, RuleApplied,
    RuleEntry, RuleScope, SessionInit, SessionWorktree, Snapshot, StateChange, ToBrowser,
    ToGateway, ToolResult, ToolUse, TurnResult, Usage, UserMessage, UserQuestion, UserTurn,
    WireError, Worktree, browser_event_frame, decode_frame, encode_frame, gateway_event_frame,
};
use duraclaw_core::state::{PauseReason, SessionState};
use serde_json::{Value, json};

/// A typed value of one of the protocol's top-level kinds.
#[derive(Debug, Clone, PartialEq)]
enum Typed {
    ToGateway(ToGateway),
    FromGateway(FromGateway),
    FromBrowser(FromBrowser),
    ToBrowser(ToBrowser),
    Event(Event),
    Decision(Decision),
}

impl Typed {
    /// Decodes `text` as the same kind as `self`, through the public entry
    /// points a peer uses.
    fn decode_same_kind(&self, text: &str) -> duraclaw_core::Result<Typed> {
        Ok(match self {
            Typed::ToGateway(_) => Typed::ToGateway(decode_frame(text, "gateway frame")?),
            Typed::FromGateway(_) => Typed::FromGateway(decode_frame(text, "gateway frame")?),
            Typed::FromBrowser(_) => Typed::FromBrowser(decode_frame(text, "browser frame")?),
            Typed::ToBrowser(_) => Typed::ToBrowser(decode_frame(text, "browser frame")?),
            Typed::Event(_) => Typed::Event(Event::from_json(text)?),
            Typed::Decision(_) => Typed::Decision(decode_frame(text, "decision")?),
        })
    }

    fn encode(&self) -> String {
        match self {
            Typed::ToGateway(v) => encode_frame(v),
            Typed::FromGateway(v) => encode_frame(v),
            Typed::FromBrowser(v) => encode_frame(v),
            Typed::ToBrowser(v) => encode_frame(v),
            Typed::Event(v) => v.to_json(),
            Typed::Decision(v) => encode_frame(v),
        }
        .unwrap()
    }

    /// Pretty JSON in the serializer's field order, for blessed fixtures.
    fn encode_pretty(&self) -> String {
        match self {
            Typed::ToGateway(v) => serde_json::to_string_pretty(v),
            Typed::FromGateway(v) => serde_json::to_string_pretty(v),
            Typed::FromBrowser(v) => serde_json::to_string_pretty(v),
            Typed::ToBrowser(v) => serde_json::to_string_pretty(v),
            Typed::Event(v) => serde_json::to_string_pretty(v),
            Typed::Decision(v) => serde_json::to_string_pretty(v),
        }
        .unwrap()
    }

    fn to_value(&self) -> Value {
        serde_json::from_str(&self.encode()).unwrap()
    }
}

struct Case {
    /// Path under `tests/fixtures/`, without `.json`.
    name: &'static str,
    typed: Typed,
}

fn case(name: &'static str, typed: Typed) -> Case {
    Case { name, typed }
}

// --- sample values shared by several fixtures ---------------------------------

const SESSION: &str = "sess-01J9Z3";

fn s(text: &str) -> String {
    text.to_owned()
}

fn envelope(id: &str, command: Command) -> CommandEnvelope {
    CommandEnvelope {
        id: s(id),
        session_id: s(SESSION),
        command,
    }
}

fn permission_question() -> UserQuestion {
    UserQuestion {
        question_id: s("q-7"),
        tool_use_id: Some(s("toolu_01A")),
        kind: QuestionKind::Permission {
            tool_name: s("Bash"),
            input: json!({"command": "cargo test", "description": "Run the tests"}),
            description: Some(s("Run the tests")),
        },
    }
}

fn ask_user_question() -> UserQuestion {
    UserQuestion {
        question_id: s("q-8"),
        tool_use_id: Some(s("toolu_01B")),
        kind: QuestionKind::AskUser {
            questions: vec![AskQuestion {
                question: s("Which database should the service use?"),
                header: Some(s("Database")),
                options: vec![
                    AskOption {
                        label: s("SQLite"),
                        description: Some(s("One file, no server")),
                    },
                    AskOption {
                        label: s("PostgreSQL"),
                        description: None,
                    },
                ],
                multi_select: false,
            }],
        },
    }
}

fn allow_edited() -> Decision {
    Decision::Allow {
        updated_input: Some(json!({"command": "cargo test --workspace"})),
        remember: true,
    }
}

fn tool_use() -> Event {
    Event::ToolUse(ToolUse {
        tool_use_id: s("toolu_01A"),
        name: s("Bash"),
        input: json!({"command": "cargo test", "description": "Run the tests"}),
        message_id: Some(s("msg_01X")),
    })
}

fn assistant_delta() -> Event {
    Event::Assistant(Assistant {
        message_id: s("msg_01X"),
        phase: AssistantPhase::Delta,
        text: s("Let me run "),
        aborted: false,
    })
}

/// The notice a restarted gateway logs before it runs a message it took.
fn rerun_notice() -> Notice {
    Notice::new(
        NOTICE_RERUN_AFTER_RESTART,
        "the gateway restarted before the agent began this turn; it is run now",
    )
    .about_command("01JD8Y3Q4T6ZQ0C2V4X3M9K1AB/msg-6")
}

/// The notice of a tool call an approval rule decided.
fn rule_notice() -> Notice {
    let mut n = Notice::new(
        NOTICE_RULE_DECISION,
        "Bash was denied by rule Bash(rm *) (user scope), without asking",
    )
    .about_tool_use("toolu_01B");
    n.rule = Some(Box::new(RuleApplied {
        rule: s("Bash(rm *)"),
        scope: RuleScope::User,
        action: RuleAction::Deny,
        id: Some(s("r0000000000000002")),
    }));
    n
}

/// An event type this build does not know, as a newer gateway might send.
fn unknown_event() -> Value {
    json!({
        "type": "tool_progress",
        "tool_use_id": "toolu_01A",
        "elapsed_ms": 1200,
        "fraction": 0.25,
        "lines": ["Compiling duraclaw-core", null, true],
        "detail": {"stage": "build", "nested": {"deep": [1, -2, 3.5]}}
    })
}

fn cases() -> Vec<Case> {
    use Typed as T;
    vec![
        // ToGateway
        case(
            "to_gateway/hello",
            T::ToGateway(ToGateway::Hello(Hello {
                v: 1,
                role: Role::Orchestrator,
                agent: Some(s("duraclaw/0.1.0")),
                executor_error: None,
            })),
        ),
        case(
            "to_gateway/command_execute",
            T::ToGateway(ToGateway::Command(envelope(
                "cmd-1",
                Command::Execute(Execute {
                    worktree: s("/home/dev/src/app-feature-x"),
                    prompt: s("Add a health check endpoint"),
                    model: Some(s("claude-sonnet-4-5")),
                    permission_mode: Some(s("default")),
                    system_prompt: Some(s("Keep changes small.")),
                    rules: None,
                    new_worktree: None,
                    fork: None,
                    agent: None,
                }),
            ))),
        ),
        case(
            "to_gateway/command_resume",
            T::ToGateway(ToGateway::Command(envelope(
                "cmd-2",
                Command::Resume(Resume {
                    executor_session_id: s("5d1c7e0a-2f4b-4c55-9a51-0c1f4be8a9d2"),
                    worktree: s("/home/dev/src/app-feature-x"),
                    prompt: Some(s("Continue where you left off")),
                    model: Some(s("claude-sonnet-4-5")),
                    agent: None,
                }),
            ))),
        ),
        case(
            "to_gateway/command_message",
            T::ToGateway(ToGateway::Command(envelope(
                "cmd-3",
                Command::Message(UserTurn {
                    text: s("Now add a test for it"),
                }),
            ))),
        ),
        case(
            "to_gateway/command_abort",
            T::ToGateway(ToGateway::Command(envelope(
                "cmd-4",
                Command::Abort(Abort {}),
            ))),
        ),
        case(
            "to_gateway/command_close",
            T::ToGateway(ToGateway::Command(envelope(
                "cmd-6",
                Command::Close(duraclaw_core::protocol::Close {}),
            ))),
        ),
        case(
            "to_gateway/command_set_mode",
            T::ToGateway(ToGateway::Command(envelope(
                "cmd-7",
                Command::SetMode(duraclaw_core::protocol::SetMode {
                    mode: s("acceptEdits"),
                }),
            ))),
        ),
        case(
            "to_gateway/command_set_model",
            T::ToGateway(ToGateway::Command(envelope(
                "cmd-8",
                Command::SetModel(duraclaw_core::protocol::SetModel {
                    model: s("claude-opus-4-1"),
                }),
            ))),
        ),
        case(
            "to_gateway/command_answer",
            T::ToGateway(ToGateway::Command(envelope(
                "cmd-5",
                Command::Answer(duraclaw_core::protocol::Answer {
                    question_id: s("q-7"),
                    decision: allow_edited(),
                    by: Some(DecidedBy {
                        who: s("alice"),
                        client: Some(s("browser 3f2a")),
                    }),
                    allow_worktree_rule: None,
                }),
            ))),
        ),
        case(
            "to_gateway/ack",
            T::ToGateway(ToGateway::Ack {
                session_id: s(SESSION),
                gseq: 17,
            }),
        ),
        case(
            "to_gateway/attach",
            T::ToGateway(ToGateway::Attach {
                session_id: s(SESSION),
                after_gseq: 17,
            }),
        ),
        case(
            "to_gateway/list_worktrees",
            T::ToGateway(ToGateway::ListWorktrees { id: s("wt-1") }),
        ),
        case(
            "to_gateway/ping",
            T::ToGateway(ToGateway::Ping { nonce: 9 }),
        ),
        case(
            "to_gateway/rules",
            T::ToGateway(ToGateway::Rules {
                session_id: s(SESSION),
                rules: vec![
                    RuleEntry {
                        id: Some(s("r0000000000000001")),
                        scope: RuleScope::User,
                        rule: s("Read"),
                        action: RuleAction::Allow,
                    },
                    RuleEntry {
                        id: Some(s("r0000000000000002")),
                        scope: RuleScope::Worktree,
                        rule: s("Bash(git status*)"),
                        action: RuleAction::Allow,
                    },
                    RuleEntry {
                        id: None,
                        scope: RuleScope::Session,
                        rule: s("Bash(rm *)"),
                        action: RuleAction::Deny,
                    },
                ],
            }),
        ),
        case(
            "to_gateway/request",
            T::ToGateway(ToGateway::Request {
                id: s("rq-3"),
                request: GatewayRequest::RemoveWorktree {
                    session_id: s(SESSION),
                    force: true,
                },
            }),
        ),
        case(
            "to_gateway/request_agents",
            T::ToGateway(ToGateway::Request {
                id: s("rq-4"),
                request: GatewayRequest::Agents {},
            }),
        ),
        case(
            "to_gateway/command_execute_agent",
            T::ToGateway(ToGateway::Command(envelope(
                "cmd-9",
                Command::Execute(Execute {
                    agent: Some(s("codex")),
                    ..Execute::new("/home/dev/src/app-feature-x", "Add a health check endpoint")
                }),
            ))),
        ),
        // FromGateway
        case(
            "from_gateway/hello",
            T::FromGateway(FromGateway::Hello(Hello {
                v: 1,
                role: Role::Gateway,
                agent: Some(s("duraclaw-gateway/0.1.0")),
                executor_error: None,
            })),
        ),
        case(
            "from_gateway/event",
            T::FromGateway(FromGateway::Event {
                session_id: s(SESSION),
                gseq: 18,
                event: assistant_delta(),
            }),
        ),
        case(
            "from_gateway/event_unknown_type",
            T::FromGateway(FromGateway::Event {
                session_id: s(SESSION),
                gseq: 19,
                event: Event::Unknown(unknown_event()),
            }),
        ),
        case(
            "from_gateway/command_result",
            T::FromGateway(FromGateway::CommandResult(CommandResult {
                id: s("cmd-1"),
                ok: true,
                error: None,
            })),
        ),
        case(
            "from_gateway/command_result_error",
            T::FromGateway(FromGateway::CommandResult(CommandResult {
                id: s("cmd-1"),
                ok: false,
                error: Some(WireError::new(
                    "worktree_busy",
                    "session sess-01J9Y8 is running in /home/dev/src/app-feature-x",
                )),
            })),
        ),
        case(
            "from_gateway/worktrees",
            T::FromGateway(FromGateway::Worktrees {
                id: s("wt-1"),
                worktrees: vec![
                    Worktree {
                        path: s("/home/dev/src/app"),
                        repo: s("/home/dev/src/app"),
                        branch: Some(s("main")),
                        head: Some(s("9fceb02d0ae598e95dc970b74767f19372d61af8")),
                        dirty: false,
                        busy_session: None,
                        new_worktree: false,
                    },
                    Worktree {
                        path: s("/home/dev/src/app-feature-x"),
                        repo: s("/home/dev/src/app"),
                        branch: Some(s("feature-x")),
                        head: Some(s("e83c5163316f89bfbde7d9ab23ca2e25604af290")),
                        dirty: true,
                        busy_session: Some(s(SESSION)),
                        new_worktree: false,
                    },
                ],
            }),
        ),
        case(
            "from_gateway/pong",
            T::FromGateway(FromGateway::Pong { nonce: 9 }),
        ),
        case(
            "from_gateway/error",
            T::FromGateway(FromGateway::Error(WireError::new(
                "unsupported_version",
                "peer speaks protocol version 2, this side speaks version 1",
            ))),
        ),
        case(
            "from_gateway/reply",
            T::FromGateway(FromGateway::Reply {
                id: s("rq-3"),
                value: None,
                error: Some(WireError::new(
                    "worktree_dirty",
                    "worktree has uncommitted changes: notes.txt; commit them, keep the worktree, or remove it with force",
                )),
            }),
        ),
        // FromBrowser
        case(
            "from_browser/hello",
            T::FromBrowser(FromBrowser::Hello(Hello {
                v: 1,
                role: Role::Browser,
                agent: None,
                executor_error: None,
            })),
        ),
        case(
            "from_browser/command_message",
            T::FromBrowser(FromBrowser::Command {
                id: s("b-3f2a-1"),
                command: Command::Message(UserTurn {
                    text: s("Now add a test for it"),
                }),
            }),
        ),
        case(
            "from_browser/command_answer",
            T::FromBrowser(FromBrowser::Command {
                id: s("b-3f2a-2"),
                command: Command::Answer(duraclaw_core::protocol::Answer {
                    question_id: s("q-7"),
                    decision: Decision::Deny {
                        reason: s("Not on this branch"),
                        interrupt: false,
                    },
                    by: None,
                    allow_worktree_rule: None,
                }),
            }),
        ),
        case(
            "from_browser/command_abort",
            T::FromBrowser(FromBrowser::Command {
                id: s("b-3f2a-3"),
                command: Command::Abort(Abort {}),
            }),
        ),
        case(
            "from_browser/command_set_mode",
            T::FromBrowser(FromBrowser::Command {
                id: s("b-3f2a-4"),
                command: Command::SetMode(duraclaw_core::protocol::SetMode { mode: s("plan") }),
            }),
        ),
        case(
            "from_browser/command_set_model",
            T::FromBrowser(FromBrowser::Command {
                id: s("b-3f2a-5"),
                command: Command::SetModel(duraclaw_core::protocol::SetModel { model: s("opus") }),
            }),
        ),
        case(
            "from_browser/ping",
            T::FromBrowser(FromBrowser::Ping { nonce: 3 }),
        ),
        // ToBrowser
        case(
            "to_browser/hello",
            T::ToBrowser(ToBrowser::Hello(Hello {
                v: 1,
                role: Role::Orchestrator,
                agent: Some(s("duraclaw/0.1.0")),
                executor_error: None,
            })),
        ),
        case(
            "to_browser/snapshot",
            T::ToBrowser(ToBrowser::Snapshot(Snapshot {
                session_id: s(SESSION),
                state: SessionState::paused(PauseReason::AwaitingApproval),
                last_seq: 41,
                pending: vec![permission_question()],
                first_seq: None,
                turn_start: None,
                epoch: None,
            })),
        ),
        case(
            "to_browser/event",
            T::ToBrowser(ToBrowser::Event {
                seq: 42,
                event: tool_use(),
            }),
        ),
        case(
            "to_browser/command_result",
            T::ToBrowser(ToBrowser::CommandResult(CommandResult {
                id: s("b-3f2a-2"),
                ok: false,
                error: Some(WireError::new(
                    "already_decided",
                    "already decided: allow by bob",
                )),
            })),
        ),
        case(
            "to_browser/pong",
            T::ToBrowser(ToBrowser::Pong { nonce: 3 }),
        ),
        case(
            "to_browser/error",
            T::ToBrowser(ToBrowser::Error(WireError::new(
                "bad_frame",
                "cannot decode browser frame: missing field `id` at line 1 column 40",
            ))),
        ),
        // Events
        case(
            "event/session_init",
            T::Event(Event::SessionInit(SessionInit {
                executor_session_id: Some(s("5d1c7e0a-2f4b-4c55-9a51-0c1f4be8a9d2")),
                model: Some(s("claude-sonnet-4-5")),
                tools: vec![
                    s("Read"),
                    s("Write"),
                    s("Edit"),
                    s("Bash"),
                    s("AskUserQuestion"),
                ],
                cwd: Some(s("/home/dev/src/app-feature-x")),
                permission_mode: Some(s("default")),
                executor_version: Some(s("2.1.332")),
            })),
        ),
        case("event/assistant_delta", T::Event(assistant_delta())),
        case(
            "event/assistant_final",
            T::Event(Event::Assistant(Assistant {
                message_id: s("msg_01X"),
                phase: AssistantPhase::Final,
                text: s("Let me run the tests first."),
                aborted: true,
            })),
        ),
        case("event/tool_use", T::Event(tool_use())),
        case(
            "event/tool_result",
            T::Event(Event::ToolResult(ToolResult {
                tool_use_id: s("toolu_01A"),
                content: json!("test result: ok. 12 passed; 0 failed"),
                is_error: false,
            })),
        ),
        case(
            "event/user_question_permission",
            T::Event(Event::UserQuestion(permission_question())),
        ),
        case(
            "event/user_question_ask_user",
            T::Event(Event::UserQuestion(ask_user_question())),
        ),
        case(
            "event/question_resolved",
            T::Event(Event::QuestionResolved(QuestionResolved {
                question_id: s("q-7"),
                decision: allow_edited(),
                by: DecidedBy {
                    who: s("alice"),
                    client: Some(s("browser 3f2a")),
                },
                at_ms: 1_764_338_400_000,
            })),
        ),
        case(
            "event/result",
            T::Event(Event::Result(TurnResult {
                last_message_uuid: None,
                subtype: Some(s("success")),
                is_error: false,
                duration_ms: Some(8421),
                cost_usd: Some(0.0213),
                usage: Some(Usage {
                    input_tokens: 1520,
                    output_tokens: 310,
                    cache_read_input_tokens: 12000,
                    cache_creation_input_tokens: 800,
                }),
                num_turns: Some(3),
                terminal_reason: Some(s("completed")),
            })),
        ),
        case(
            "event/error",
            T::Event(Event::Error(ErrorEvent {
                message: s("the executor exited unexpectedly"),
                code: Some(s("executor_exited")),
                exit_status: Some(137),
                stderr_tail: Some(s("Killed")),
            })),
        ),
        case(
            "event/user_message",
            T::Event(Event::UserMessage(UserMessage {
                text: s("Now add a test for it"),
                by: Some(s("alice")),
                queued: false,
            })),
        ),
        case(
            "event/session_state",
            T::Event(Event::SessionState(StateChange {
                state: SessionState::paused(PauseReason::AwaitingApproval),
            })),
        ),
        case("event/notice", T::Event(Event::Notice(rerun_notice()))),
        case(
            "event/notice_rule_decision",
            T::Event(Event::Notice(rule_notice())),
        ),
        case(
            "event/notice_worktree",
            T::Event(Event::Notice(Notice {
                worktree: Some(Box::new(SessionWorktree {
                    path: s("/data/worktrees/app-4k2m9x1c"),
                    branch: Some(s("duraclaw/4k2m9x1c")),
                    base: Some(s("9fceb02d0ae598e95dc970b74767f19372d61af8")),
                    created: true,
                    origin: Some(s("/data/repos/app")),
                })),
                ..Notice::new(NOTICE_WORKTREE, "the session's worktree")
            })),
        ),
        case(
            "event/notice_mode_changed",
            T::Event(Event::Notice({
                let mut n = Notice::new("mode_changed", "The permission mode is now plan.");
                n.permission_mode = Some(s("plan"));
                n
            })),
        ),
        case(
            "event/notice_model_changed",
            T::Event(Event::Notice({
                let mut n = Notice::new("model_changed", "The model is now claude-opus-4-1.");
                n.model = Some(s("claude-opus-4-1"));
                n
            })),
        ),
        case(
            "event/notice_without_command",
            T::Event(Event::Notice(Notice::new(
                "executor_upgraded",
                "the executor was upgraded to 2.1.340 between two turns",
            ))),
        ),
        case(
            "event/unknown_type",
            T::Event(Event::Unknown(unknown_event())),
        ),
        // Decisions
        case(
            "decision/allow",
            T::Decision(Decision::Allow {
                updated_input: None,
                remember: false,
            }),
        ),
        case(
            "decision/allow_edited_remembered",
            T::Decision(allow_edited()),
        ),
        case(
            "decision/deny",
            T::Decision(Decision::Deny {
                reason: s("Not on this branch"),
                interrupt: false,
            }),
        ),
        case(
            "decision/deny_interrupt",
            T::Decision(Decision::Deny {
                reason: s("Stop, wrong approach"),
                interrupt: true,
            }),
        ),
        case(
            "decision/answered",
            T::Decision(Decision::Answered {
                answers: BTreeMap::from([(
                    s("Which database should the service use?"),
                    s("SQLite"),
                )]),
            }),
        ),
        case("decision/expired", T::Decision(Decision::Expired)),
        case(
            "decision/cancelled",
            T::Decision(Decision::Cancelled {
                reason: Some(s("the executor withdrew the request")),
            }),
        ),
    ]
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture_path(name: &str) -> PathBuf {
    fixtures_dir().join(format!("{name}.json"))
}

fn read_fixture(name: &str) -> String {
    let path = fixture_path(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

fn bless() -> bool {
    std::env::var_os("DURACLAW_BLESS_FIXTURES").is_some()
}

#[test]
fn fixtures_decode_to_the_typed_value_and_encode_back() {
    let mut failures = Vec::new();
    for Case { name, typed } in cases() {
        if bless() {
            let path = fixture_path(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, typed.encode_pretty() + "\n").unwrap();
        }
        let text = read_fixture(name);
        let fixture: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("fixture {name} is not JSON: {e}"));
        let decoded = match typed.decode_same_kind(&text) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{name}: does not decode: {e}"));
                continue;
            }
        };
        if decoded != typed {
            failures.push(format!(
                "{name}: decodes to\n  {decoded:?}\nnot to the value built in code\n  {typed:?}"
            ));
        }
        if decoded.to_value() != fixture {
            failures.push(format!(
                "{name}: decoded value re-encodes to\n  {}\nnot to the fixture",
                decoded.encode()
            ));
        }
        if typed.to_value() != fixture {
            failures.push(format!(
                "{name}: the value built in code encodes to\n  {}\nnot to the fixture",
                typed.encode()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_fixture_file_belongs_to_a_case() {
    let known: BTreeSet<String> = cases().iter().map(|c| c.name.to_owned()).collect();
    let mut on_disk = BTreeSet::new();
    for dir in std::fs::read_dir(fixtures_dir()).unwrap() {
        let dir = dir.unwrap().path();
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let rel = file.strip_prefix(fixtures_dir()).unwrap();
            let name = rel.with_extension("").to_string_lossy().replace('\\', "/");
            on_disk.insert(name);
        }
    }
    let orphans: Vec<_> = on_disk.difference(&known).collect();
    assert!(orphans.is_empty(), "fixtures with no case: {orphans:?}");
}

fn tags(cases: &[Case], pick: impl Fn(&Typed) -> bool) -> BTreeSet<String> {
    cases
        .iter()
        .filter(|c| pick(&c.typed))
        .filter_map(|c| c.typed.to_value()["type"].as_str().map(str::to_owned))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// The enums are `#[non_exhaustive]`, so a match cannot prove coverage from
/// here; the wire names can. Adding a variant means adding it below and a
/// fixture for it.
#[test]
fn every_frame_event_decision_and_question_kind_has_a_fixture() {
    let cases = cases();
    assert_eq!(
        tags(&cases, |t| matches!(t, Typed::ToGateway(_))),
        set(&[
            "hello",
            "command",
            "ack",
            "attach",
            "list_worktrees",
            "ping",
            "rules",
            "request"
        ])
    );
    assert_eq!(
        tags(&cases, |t| matches!(t, Typed::FromGateway(_))),
        set(&[
            "hello",
            "event",
            "command_result",
            "worktrees",
            "pong",
            "error",
            "reply"
        ])
    );
    assert_eq!(
        tags(&cases, |t| matches!(t, Typed::FromBrowser(_))),
        set(&["hello", "command", "ping"])
    );
    assert_eq!(
        tags(&cases, |t| matches!(t, Typed::ToBrowser(_))),
        set(&[
            "hello",
            "snapshot",
            "event",
            "command_result",
            "pong",
            "error"
        ])
    );

    let mut commands = BTreeSet::new();
    let mut events = BTreeSet::new();
    let mut decisions = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    let mut unknown_events = 0;
    for c in &cases {
        match &c.typed {
            Typed::ToGateway(ToGateway::Command(env)) => {
                commands.insert(env.command.name());
            }
            Typed::Event(e) => {
                if matches!(e, Event::Unknown(_)) {
                    unknown_events += 1;
                } else {
                    events.insert(e.type_name().to_owned());
                }
                if let Event::UserQuestion(q) = e {
                    kinds.insert(q.kind.name());
                }
            }
            Typed::Decision(d) => {
                decisions.insert(d.name());
            }
            _ => {}
        }
    }
    assert_eq!(
        commands,
        [
            "execute",
            "resume",
            "message",
            "abort",
            "answer",
            "close",
            "set_mode",
            "set_model"
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(events, set(KNOWN_EVENT_TYPES));
    assert!(unknown_events > 0, "no fixture for an unknown event type");
    assert_eq!(
        decisions,
        ["allow", "deny", "answered", "expired", "cancelled"]
            .into_iter()
            .collect()
    );
    assert_eq!(kinds, ["permission", "ask_user"].into_iter().collect());
}

/// docs/protocol.md shows every fixture: its examples are the fixtures.
#[test]
fn protocol_doc_shows_every_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    if !Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../Cargo.toml")
        .exists()
    {
        // Outside the workspace (a packaged crate) there is no doc to check.
        return;
    }
    let doc = std::fs::read_to_string(&path).expect("docs/protocol.md");
    let mut examples = Vec::new();
    let mut block: Option<String> = None;
    for line in doc.lines() {
        match &mut block {
            None if line.trim_start().starts_with("```json") => block = Some(String::new()),
            Some(text) if line.trim_start().starts_with("```") => {
                let value: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("a json block in docs/protocol.md: {e}\n{text}"));
                examples.push(value);
                block = None;
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    let missing: Vec<_> = cases()
        .into_iter()
        .filter(|c| !examples.contains(&c.typed.to_value()))
        .map(|c| c.name)
        .collect();
    assert!(
        missing.is_empty(),
        "docs/protocol.md has no example equal to these fixtures: {missing:?}"
    );
}

// --- unknown events ---------------------------------------------------------------

/// Earlier builds had no typed notice: the gateway built it as raw JSON
/// (`Event::Unknown`) and logs hold it in that form. The JSON is the same,
/// so such a stored event, or a frame carrying it, decodes as the typed
/// notice, and encodes back to the same JSON (a replay sends the stored
/// bytes as they are).
#[test]
fn a_notice_stored_raw_by_an_earlier_build_decodes_as_the_typed_notice() {
    // Exactly what the gateway built before the typed variant existed.
    let raw = json!({
        "type": "notice",
        "code": "rerun_after_restart",
        "message": "the gateway restarted before the agent began this turn; it is run now",
        "command_id": "01JD8Y3Q4T6ZQ0C2V4X3M9K1AB/msg-6",
    });
    let stored = Event::Unknown(raw.clone()).to_json().unwrap();
    let event = Event::from_json(&stored).unwrap();
    assert_eq!(event, Event::Notice(rerun_notice()));
    assert_eq!(event.type_name(), "notice");
    let back: Value = serde_json::from_str(&event.to_json().unwrap()).unwrap();
    assert_eq!(back, raw);

    let frame = gateway_event_frame(SESSION, 3, &stored).unwrap();
    let decoded: FromGateway = decode_frame(&frame, "gateway frame").unwrap();
    assert_eq!(
        decoded,
        FromGateway::Event {
            session_id: s(SESSION),
            gseq: 3,
            event: Event::Notice(rerun_notice()),
        }
    );
    let decoded: ToBrowser =
        decode_frame(&browser_event_frame(9, &stored), "browser frame").unwrap();
    assert_eq!(
        decoded,
        ToBrowser::Event {
            seq: 9,
            event: Event::Notice(rerun_notice()),
        }
    );
}

#[test]
fn an_unknown_event_type_survives_decode_and_encode() {
    let raw = unknown_event();
    let text = raw.to_string();
    let event = Event::from_json(&text).unwrap();
    assert_eq!(event, Event::Unknown(raw.clone()));
    assert_eq!(event.type_name(), "tool_progress");
    let back: Value = serde_json::from_str(&event.to_json().unwrap()).unwrap();
    assert_eq!(back, raw);
}

#[test]
fn an_unknown_event_type_is_relayed_inside_a_gateway_event_frame() {
    let raw = unknown_event();
    let frame = json!({"type": "event", "session_id": SESSION, "gseq": 19, "event": raw});
    let decoded: FromGateway = decode_frame(&frame.to_string(), "gateway frame").unwrap();
    let FromGateway::Event {
        session_id,
        gseq,
        event,
    } = &decoded
    else {
        panic!("not an event frame: {decoded:?}");
    };
    assert_eq!((session_id.as_str(), *gseq), (SESSION, 19));
    assert_eq!(event, &Event::Unknown(raw.clone()));

    // Relayed on: stored as the gateway sent it and sent to a browser whole.
    let reencoded: Value = serde_json::from_str(&encode_frame(&decoded).unwrap()).unwrap();
    assert_eq!(reencoded, frame);
    let to_browser: Value =
        serde_json::from_str(&browser_event_frame(5, &event.to_json().unwrap())).unwrap();
    assert_eq!(to_browser, json!({"type": "event", "seq": 5, "event": raw}));
    let decoded: ToBrowser = decode_frame(&to_browser.to_string(), "browser frame").unwrap();
    assert_eq!(
        decoded,
        ToBrowser::Event {
            seq: 5,
            event: Event::Unknown(raw)
        }
    );
}

#[test]
fn a_known_type_with_a_bad_body_is_kept_raw_by_the_lenient_decoder() {
    let raw = json!({"type": "assistant", "message_id": "msg_01X", "text": 7});
    assert!(matches!(
        Event::from_value(raw.clone()),
        Err(Error::Decode { what: "event", .. })
    ));
    assert_eq!(
        Event::from_value_lenient(raw.clone()).unwrap(),
        Event::Unknown(raw)
    );
    assert!(Event::from_value_lenient(json!([1, 2])).is_err());
}

// --- the replay fast path -----------------------------------------------------------

#[test]
fn browser_event_frame_is_the_serde_encoding_of_an_event_frame() {
    for c in cases() {
        let Typed::Event(event) = c.typed else {
            continue;
        };
        let json = event.to_json().unwrap();
        for seq in [0, 1, 42, 9_007_199_254_740_993, u64::MAX] {
            let fast = browser_event_frame(seq, &json);
            let typed = ToBrowser::Event {
                seq,
                event: event.clone(),
            };
            assert_eq!(fast, encode_frame(&typed).unwrap(), "{}", c.name);
            let back: ToBrowser = decode_frame(&fast, "browser frame").unwrap();
            assert_eq!(back, typed, "{}", c.name);
        }
    }
}

#[test]
fn gateway_event_frame_is_the_serde_encoding_of_an_event_frame() {
    for c in cases() {
        let Typed::Event(event) = c.typed else {
            continue;
        };
        let json = event.to_json().unwrap();
        for session_id in [
            SESSION,
            "",
            "quote \" back\\slash",
            "tab\tnewline\n",
            "ünï €",
        ] {
            let fast = gateway_event_frame(session_id, 7, &json).unwrap();
            let typed = FromGateway::Event {
                session_id: session_id.to_owned(),
                gseq: 7,
                event: event.clone(),
            };
            assert_eq!(fast, encode_frame(&typed).unwrap(), "{}", c.name);
            let back: FromGateway = decode_frame(&fast, "gateway frame").unwrap();
            assert_eq!(back, typed, "{}", c.name);
        }
    }
}

// --- damaged input: typed errors, never a panic ---------------------------------

fn decode_all(text: &str) -> Vec<duraclaw_core::Result<()>> {
    vec![
        decode_frame::<ToGateway>(text, "frame").map(drop),
        decode_frame::<FromGateway>(text, "frame").map(drop),
        decode_frame::<FromBrowser>(text, "frame").map(drop),
        decode_frame::<ToBrowser>(text, "frame").map(drop),
    ]
}

fn assert_decode_error(text: &str) {
    for (i, r) in decode_all(text).into_iter().enumerate() {
        match r {
            Err(Error::Decode { what: "frame", .. }) => {}
            other => panic!("kind #{i} on {text:?}: expected a decode error, got {other:?}"),
        }
    }
}

#[test]
fn bad_json_is_a_decode_error() {
    for text in [
        "",
        " ",
        "{",
        "}",
        "{\"type\":\"ping\"",
        "{\"type\":\"ping\",}",
        "{'type':'ping'}",
        "ping",
        "\u{feff}{\"type\":\"ping\"}",
        "{\"type\":\"ping\"} {\"type\":\"ping\"}",
        "{\"type\":\"ping\",\"nonce\":1e999999}",
        "\"\\ud800\"",
    ] {
        assert_decode_error(text);
    }
}

#[test]
fn a_frame_over_the_limit_is_too_large_and_one_at_the_limit_decodes() {
    use duraclaw_core::protocol::MAX_FRAME_BYTES;
    let ping = "{\"type\":\"ping\",\"nonce\":1}";
    let at_limit = format!("{ping}{}", " ".repeat(MAX_FRAME_BYTES - ping.len()));
    assert_eq!(at_limit.len(), MAX_FRAME_BYTES);
    assert_eq!(
        decode_frame::<ToGateway>(&at_limit, "frame").unwrap(),
        ToGateway::Ping { nonce: 1 }
    );

    let over = format!("{at_limit} ");
    for r in decode_all(&over) {
        match r {
            Err(Error::TooLarge { what, size, limit }) => {
                assert_eq!(
                    (what, size, limit),
                    ("frame", MAX_FRAME_BYTES + 1, MAX_FRAME_BYTES)
                );
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
    // Checked before parsing: garbage over the limit is still TooLarge.
    let garbage = "x".repeat(MAX_FRAME_BYTES + 1);
    assert!(matches!(
        Event::from_json(&garbage),
        Err(Error::TooLarge { what: "event", .. })
    ));
}

#[test]
fn a_hello_with_another_major_version_is_refused() {
    for text in [
        r#"{"type":"hello","v":2,"role":"gateway"}"#,
        r#"{"type":"hello","v":0,"role":"gateway","agent":"duraclaw-gateway/0.0.1"}"#,
    ] {
        let FromGateway::Hello(hello) = decode_frame::<FromGateway>(text, "frame").unwrap() else {
            panic!("not a hello");
        };
        match hello.check_version() {
            Err(Error::UnsupportedVersion { got, supported: 1 }) => assert_eq!(got, hello.v),
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
        let wire = WireError::from(&hello.check_version().unwrap_err());
        assert_eq!(wire.code, "unsupported_version");
    }
    let ours = Hello::new(Role::Gateway);
    ours.check_version().unwrap();
    assert_eq!(ours.v, duraclaw_core::protocol::PROTOCOL_VERSION);
}

#[test]
fn wrong_field_types_are_decode_errors() {
    for text in [
        r#"{"type":"hello","v":"1","role":"gateway"}"#,
        r#"{"type":"hello","v":1,"role":"relay"}"#,
        r#"{"type":"hello","v":-1,"role":"gateway"}"#,
        r#"{"type":"hello","v":4294967296,"role":"gateway"}"#,
        r#"{"type":"ping","nonce":"1"}"#,
        r#"{"type":"ping","nonce":-1}"#,
        r#"{"type":"ping","nonce":1.5}"#,
        r#"{"type":"pong","nonce":null}"#,
        r#"{"type":"command","id":7,"session_id":"s","command":{"type":"abort"}}"#,
        r#"{"type":"command","id":"c","command":"abort"}"#,
        r#"{"type":"error","code":1,"message":"m"}"#,
        r#"{"type":5}"#,
        r#"{"type":null}"#,
        r#"{"type":"teleport"}"#,
        r#"{"nonce":1}"#,
        r#"[]"#,
        r#""ping""#,
        r#"null"#,
        r#"42"#,
    ] {
        assert_decode_error(text);
    }
    for text in [
        r#"{"type":"ack","session_id":"s","gseq":"7"}"#,
        r#"{"type":"ack","session_id":"s","gseq":-7}"#,
        r#"{"type":"attach","session_id":["s"],"after_gseq":0}"#,
        r#"{"type":"list_worktrees","id":{}}"#,
        r#"{"type":"command","id":"c","session_id":"s","command":{"type":"message","text":1}}"#,
        r#"{"type":"command","id":"c","session_id":"s","command":{"type":"answer","question_id":"q","decision":"maybe"}}"#,
        r#"{"type":"command","id":"c","session_id":"s","command":{"type":"answer","question_id":"q","decision":"allow","remember":"yes"}}"#,
        r#"{"type":"command","id":"c","session_id":"s","command":{"type":"execute","worktree":"/w"}}"#,
    ] {
        assert!(
            matches!(
                decode_frame::<ToGateway>(text, "frame"),
                Err(Error::Decode { .. })
            ),
            "{text}"
        );
    }
    for text in [
        r#"{"type":"event","session_id":"s","gseq":-1,"event":{"type":"user.message","text":"hi"}}"#,
        r#"{"type":"event","session_id":"s","gseq":1.5,"event":{"type":"user.message","text":"hi"}}"#,
        r#"{"type":"worktrees","id":"w","worktrees":[{"path":"/a"}]}"#,
        r#"{"type":"command_result","id":"c","ok":"true"}"#,
    ] {
        assert!(
            matches!(
                decode_frame::<FromGateway>(text, "frame"),
                Err(Error::Decode { .. })
            ),
            "{text}"
        );
    }
    for text in [
        r#"{"type":"snapshot","session_id":"s","state":"sleeping","last_seq":0,"pending":[]}"#,
        r#"{"type":"snapshot","session_id":"s","state":"paused","last_seq":0,"pending":[]}"#,
        r#"{"type":"event","seq":"1","event":{"type":"user.message","text":"hi"}}"#,
    ] {
        assert!(
            matches!(
                decode_frame::<ToBrowser>(text, "frame"),
                Err(Error::Decode { .. })
            ),
            "{text}"
        );
    }
}

#[test]
fn a_known_event_type_with_a_missing_field_is_a_decode_error() {
    for event in [
        json!({"type": "assistant", "message_id": "m", "text": "hi"}),
        json!({"type": "tool_use", "tool_use_id": "t", "name": "Bash"}),
        json!({"type": "tool_result", "content": "ok"}),
        json!({"type": "user_question", "question_id": "q"}),
        json!({"type": "user_question", "question_id": "q", "kind": "permission", "tool_name": "Bash"}),
        json!({"type": "question.resolved", "question_id": "q", "decision": "expired", "at_ms": 1}),
        json!({"type": "error"}),
        json!({"type": "user.message"}),
        json!({"type": "session.state"}),
        json!({"type": "notice", "message": "m"}),
        json!({"type": "notice", "code": "c"}),
        json!({"type": "notice", "code": "c", "message": "m", "command_id": 7}),
    ] {
        let text = event.to_string();
        assert!(
            matches!(
                Event::from_json(&text),
                Err(Error::Decode { what: "event", .. })
            ),
            "{text}"
        );
        // Inside a frame it is kept raw and relayed, so one odd event from
        // a newer peer never wedges the frames behind it.
        let frame = json!({"type": "event", "session_id": "s", "gseq": 1, "event": event.clone()});
        match decode_frame::<FromGateway>(&frame.to_string(), "frame") {
            Ok(FromGateway::Event {
                event: Event::Unknown(raw),
                ..
            }) => assert_eq!(raw, event),
            other => panic!("{frame}: {other:?}"),
        }
    }
}

#[test]
fn a_non_object_event_is_a_decode_error() {
    for event in [
        json!(null),
        json!(true),
        json!(7),
        json!("assistant"),
        json!([{"type": "assistant"}]),
        json!({"type": 7}),
        json!({"type": ["assistant"]}),
        json!({"text": "no type"}),
    ] {
        let text = event.to_string();
        assert!(
            matches!(
                Event::from_json(&text),
                Err(Error::Decode { what: "event", .. })
            ),
            "{text}"
        );
        assert!(Event::from_value(event.clone()).is_err(), "{event}");
        let frame = json!({"type": "event", "seq": 1, "event": event});
        assert!(
            matches!(
                decode_frame::<ToBrowser>(&frame.to_string(), "frame"),
                Err(Error::Decode { .. })
            ),
            "{frame}"
        );
    }
}

#[test]
fn deeply_nested_input_is_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert_decode_error(&arrays);
    let in_event = format!(r#"{{"type":"event","seq":1,"event":{{"type":"x","deep":{arrays}}}}}"#);
    assert!(matches!(
        decode_frame::<ToBrowser>(&in_event, "frame"),
        Err(Error::Decode { .. })
    ));
    assert!(Event::from_json(&format!(r#"{{"type":"x","deep":{arrays}}}"#)).is_err());
}
