//! Decoding and mapping of lines recorded from the real CLI (2.1.332)
//! against the fake Messages API, paths rewritten to `/srv/demo`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use duraclaw_core::protocol::{AssistantPhase, Decision, Event, QuestionKind};
use serde_json::{Value, json};

use super::message::{ApiEvent, ControlRequestBody};
use super::*;

/// Four turns: text; Read allowed; Bash denied; AskUserQuestion answered.
const TURNS: &str = include_str!("testdata/turns.jsonl");
/// Interrupt mid-stream; interrupt while `can_use_tool` is pending; two 529s
/// then success; six 400s (API error).
const INTERRUPTS: &str = include_str!("testdata/interrupts_and_errors.jsonl");

fn lines(fixture: &str) -> Vec<CliMessage> {
    fixture
        .lines()
        .map(|l| CliMessage::parse_line(l).unwrap())
        .collect()
}

fn map_all(fixture: &str) -> (Vec<Event>, Vec<CliAction>) {
    let mut mapper = CliEventMapper::new();
    let mut events = Vec::new();
    let mut actions = Vec::new();
    for line in fixture.lines() {
        let m = mapper.feed_line(line).unwrap();
        events.extend(m.events);
        actions.extend(m.actions);
    }
    (events, actions)
}

/// Splits events into turns, each ending with a `result`.
fn turns(events: Vec<Event>) -> Vec<Vec<Event>> {
    let mut out = vec![Vec::new()];
    for e in events {
        let end = matches!(e, Event::Result(_));
        if let Some(last) = out.last_mut() {
            last.push(e);
        }
        if end {
            out.push(Vec::new());
        }
    }
    out.retain(|t| !t.is_empty());
    out
}

fn deltas(turn: &[Event]) -> String {
    turn.iter()
        .filter_map(|e| match e {
            Event::Assistant(a) if a.phase == AssistantPhase::Delta => Some(a.text.as_str()),
            _ => None,
        })
        .collect()
}

fn finals(turn: &[Event]) -> Vec<&str> {
    turn.iter()
        .filter_map(|e| match e {
            Event::Assistant(a) if a.phase == AssistantPhase::Final => Some(a.text.as_str()),
            _ => None,
        })
        .collect()
}

fn names(turn: &[Event]) -> Vec<&str> {
    turn.iter().map(Event::type_name).collect()
}

#[test]
fn every_recorded_line_decodes_to_a_known_type() {
    for m in lines(TURNS).iter().chain(lines(INTERRUPTS).iter()) {
        assert!(
            !matches!(m, CliMessage::Unknown(_)),
            "unexpected unknown line: {}",
            m.kind()
        );
    }
    let kinds: Vec<String> = lines(TURNS).iter().map(CliMessage::kind).collect();
    assert_eq!(kinds[0], "control_response");
    assert_eq!(kinds[1], "system/init");
    assert_eq!(kinds[2], "system/status");
    assert!(
        kinds.contains(&"system/api_retry".to_owned()) || {
            lines(INTERRUPTS)
                .iter()
                .any(|m| matches!(m, CliMessage::ApiRetry(_)))
        }
    );
}

#[test]
fn decodes_the_fields_the_executor_needs() {
    let all = lines(TURNS);
    let init = all
        .iter()
        .find_map(|m| match m {
            CliMessage::SystemInit(i) => Some(i),
            _ => None,
        })
        .unwrap();
    assert_eq!(init.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(init.permission_mode.as_deref(), Some("default"));
    assert_eq!(init.claude_code_version.as_deref(), Some("2.1.332"));
    assert_eq!(init.cwd.as_deref(), Some("/srv/demo/wt"));
    assert!(init.tools.iter().any(|t| t == "Read"));

    let hook = all
        .iter()
        .find_map(|m| match m {
            CliMessage::ControlRequest(r) => match &r.request {
                ControlRequestBody::HookCallback(h) => Some(h),
                _ => None,
            },
            _ => None,
        })
        .unwrap();
    assert_eq!(hook.callback_id.as_deref(), Some("h1"));
    assert_eq!(hook.input.hook_event_name.as_deref(), Some("PreToolUse"));
    assert_eq!(hook.input.tool_name.as_deref(), Some("Read"));

    let ask = all
        .iter()
        .find_map(|m| match m {
            CliMessage::ControlRequest(r) => match &r.request {
                ControlRequestBody::CanUseTool(c) if c.tool_name == "AskUserQuestion" => Some(c),
                _ => None,
            },
            _ => None,
        })
        .unwrap();
    assert!(ask.requires_user_interaction);

    let result = all
        .iter()
        .find_map(|m| match m {
            CliMessage::Result(r) if !r.permission_denials.is_empty() => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(result.permission_denials[0].tool_name, "Bash");
    assert_eq!(result.terminal_reason.as_deref(), Some("completed"));

    let text_deltas = all
        .iter()
        .filter(|m| match m {
            CliMessage::StreamEvent(s) => matches!(s.api_event(), ApiEvent::TextDelta { .. }),
            _ => false,
        })
        .count();
    assert!(text_deltas > 5);
}

#[test]
fn bad_lines_are_typed_errors() {
    let long = format!("Error: {}", "x".repeat(500));
    match CliMessage::parse_line(&long) {
        Err(CliLineError::NotJson { prefix, reason }) => {
            assert_eq!(prefix.chars().count(), 200);
            assert!(prefix.starts_with("Error: xxx"));
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        CliMessage::parse_line(""),
        Err(CliLineError::NotJson { .. })
    ));
    assert!(matches!(
        CliMessage::parse_line("[1,2]"),
        Err(CliLineError::NotObject { .. })
    ));
    // Multi-byte characters are cut on character boundaries.
    let wide = "é".repeat(300);
    match CliMessage::parse_line(&wide) {
        Err(CliLineError::NotJson { prefix, .. }) => assert_eq!(prefix.chars().count(), 200),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_and_malformed_lines_are_kept_raw() {
    let raw = json!({"type": "rate_limit_event", "x": 1});
    assert_eq!(
        CliMessage::parse_line(&raw.to_string()).unwrap(),
        CliMessage::Unknown(raw.clone())
    );
    let sys = json!({"type": "system", "subtype": "compact_boundary"});
    let m = CliMessage::parse_line(&sys.to_string()).unwrap();
    assert_eq!(m.kind(), "system/compact_boundary");
    // A known type whose body does not fit.
    let bad = json!({"type": "assistant", "message": "not an object"});
    assert_eq!(
        CliMessage::parse_line(&bad.to_string()).unwrap(),
        CliMessage::Unknown(bad)
    );
    // An unknown control request subtype is typed as Other, not lost.
    let req = json!({"type": "control_request", "request_id": "r1",
        "request": {"subtype": "mcp_message", "server_name": "x"}});
    match CliMessage::parse_line(&req.to_string()).unwrap() {
        CliMessage::ControlRequest(r) => {
            assert_eq!(r.request_id, "r1");
            assert!(
                matches!(r.request, ControlRequestBody::Other { ref subtype, .. } if subtype == "mcp_message")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn maps_the_four_recorded_turns() {
    let (events, actions) = map_all(TURNS);
    let t = turns(events);
    assert_eq!(t.len(), 4);

    // 1. A text turn: init, streamed deltas, the final text, the result.
    let text = "Hello there, this is a streamed answer.";
    assert_eq!(t[0][0].type_name(), "session.init");
    assert_eq!(deltas(&t[0]), text);
    assert_eq!(finals(&t[0]), vec![text]);
    let Event::Result(r) = t[0].last().unwrap() else {
        panic!()
    };
    assert_eq!(r.subtype.as_deref(), Some("success"));
    assert!(!r.is_error);
    assert_eq!(r.terminal_reason.as_deref(), Some("completed"));
    assert_eq!(r.num_turns, Some(1));
    assert!(r.duration_ms.is_some());
    assert!(r.cost_usd.unwrap() > 0.0);
    let usage = r.usage.as_ref().unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (10, 5));
    if let Event::SessionInit(i) = &t[0][0] {
        assert_eq!(
            i.executor_session_id.as_deref(),
            Some("7a787c60-1aba-4d4a-bc43-a7ab645287dc")
        );
        assert_eq!(i.executor_version.as_deref(), Some("2.1.332"));
    }

    // 2. Read, allowed: tool_use, the question, the file's contents.
    let n = names(&t[1]);
    let pos = |name: &str| n.iter().position(|x| *x == name).unwrap();
    assert!(pos("tool_use") < pos("user_question"));
    assert!(pos("user_question") < pos("tool_result"));
    assert_eq!(finals(&t[1]), vec!["Let me read it.", "The file says hi."]);
    let Some(Event::ToolUse(tu)) = t[1].iter().find(|e| e.type_name() == "tool_use") else {
        panic!()
    };
    assert_eq!(tu.name, "Read");
    assert_eq!(tu.input["file_path"], "/srv/demo/wt/notes.txt");
    let Some(Event::UserQuestion(q)) = t[1].iter().find(|e| e.type_name() == "user_question")
    else {
        panic!()
    };
    assert_eq!(q.tool_use_id.as_deref(), Some(tu.tool_use_id.as_str()));
    match &q.kind {
        QuestionKind::Permission {
            tool_name,
            input,
            description,
        } => {
            assert_eq!(tool_name, "Read");
            assert_eq!(input, &tu.input);
            assert_eq!(description.as_deref(), Some("notes.txt"));
        }
        other => panic!("{other:?}"),
    }
    let Some(Event::ToolResult(tr)) = t[1].iter().find(|e| e.type_name() == "tool_result") else {
        panic!()
    };
    assert!(!tr.is_error);
    assert!(tr.content.as_str().unwrap().contains("secret contents 42"));

    // 3. Bash, denied: an error tool_result with the reason.
    let Some(Event::ToolResult(tr)) = t[2].iter().find(|e| e.type_name() == "tool_result") else {
        panic!()
    };
    assert!(tr.is_error);
    assert_eq!(tr.content, json!("No deleting things, please."));

    // 4. AskUserQuestion: an ask_user question with its options.
    let Some(Event::UserQuestion(q)) = t[3].iter().find(|e| e.type_name() == "user_question")
    else {
        panic!()
    };
    match &q.kind {
        QuestionKind::AskUser { questions } => {
            assert_eq!(questions.len(), 1);
            assert_eq!(questions[0].question, "Which color?");
            assert_eq!(questions[0].header.as_deref(), Some("Color"));
            assert!(!questions[0].multi_select);
            let labels: Vec<&str> = questions[0]
                .options
                .iter()
                .map(|o| o.label.as_str())
                .collect();
            assert_eq!(labels, ["Red", "Blue"]);
            assert_eq!(questions[0].options[1].description.as_deref(), Some("cool"));
        }
        other => panic!("{other:?}"),
    }

    // Actions: one hook answer and one gate request per tool call, and the
    // initialize response.
    let hooks = actions
        .iter()
        .filter(|a| matches!(a, CliAction::Send(CliInput::HookAsk { .. })))
        .count();
    let gates: Vec<&UserQuestionRef> = actions
        .iter()
        .filter_map(|a| match a {
            CliAction::AskGate {
                request_id,
                question,
                ..
            } => {
                assert_eq!(request_id, &question.question_id);
                Some(question)
            }
            _ => None,
        })
        .collect();
    assert_eq!(hooks, 3);
    assert_eq!(gates.len(), 3);
    assert!(matches!(
        &actions[0],
        CliAction::Response { request_id, result: Ok(_) } if request_id == "init-1"
    ));
}

type UserQuestionRef = duraclaw_core::protocol::UserQuestion;

#[test]
fn maps_interrupts_retries_and_api_errors() {
    let (events, actions) = map_all(INTERRUPTS);
    let t = turns(events);
    assert_eq!(t.len(), 5);

    // Interrupted mid-stream: the partial text, marked aborted; the marker;
    // the result.
    let aborted = t[0]
        .iter()
        .find_map(|e| match e {
            Event::Assistant(a) if a.phase == AssistantPhase::Final => Some(a),
            _ => None,
        })
        .unwrap();
    assert!(aborted.aborted);
    assert_eq!(aborted.text, deltas(&t[0]));
    let marker = t[0]
        .iter()
        .find_map(|e| match e {
            Event::Unknown(v) if v["type"] == "cli.user" => Some(v),
            _ => None,
        })
        .unwrap();
    assert_eq!(marker["text"], "[Request interrupted by user]");
    let Event::Result(r) = t[0].last().unwrap() else {
        panic!()
    };
    assert_eq!(r.subtype.as_deref(), Some("error_during_execution"));
    assert!(r.is_error);
    assert_eq!(r.terminal_reason.as_deref(), Some("aborted_streaming"));

    // Interrupted while can_use_tool was pending: the CLI withdraws it.
    let Some(Event::UserQuestion(q)) = t[1].iter().find(|e| e.type_name() == "user_question")
    else {
        panic!()
    };
    let withdrawn: Vec<&CliAction> = actions
        .iter()
        .filter(|a| matches!(a, CliAction::Withdraw { .. }))
        .collect();
    assert_eq!(
        withdrawn,
        vec![&CliAction::Withdraw {
            request_id: q.question_id.clone(),
            question_id: Some(q.question_id.clone()),
        }]
    );
    let Event::Result(r) = t[1].last().unwrap() else {
        panic!()
    };
    assert_eq!(r.terminal_reason.as_deref(), Some("aborted_tools"));
    let responses = actions
        .iter()
        .filter(|a| matches!(a, CliAction::Response { result: Ok(v), .. } if v["still_queued"].is_array()))
        .count();
    assert_eq!(responses, 2);

    // 529 twice: two api_retry events, then success.
    let retries: Vec<&Value> = t[3]
        .iter()
        .filter_map(|e| match e {
            Event::Unknown(v) if v["type"] == "cli.api_retry" => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 2);
    assert_eq!(retries[0]["error_status"], 529);
    assert_eq!(retries[1]["attempt"], 2);
    assert_eq!(finals(&t[3]), vec!["after retries"]);

    // HTTP 400 six times: a synthetic assistant message and an error result.
    assert_eq!(finals(&t[4]), vec!["API Error: 400 bad request body"]);
    let Event::Result(r) = t[4].last().unwrap() else {
        panic!()
    };
    assert!(r.is_error);
    assert_eq!(r.subtype.as_deref(), Some("success"));
    assert_eq!(r.terminal_reason.as_deref(), Some("api_error"));
}

#[test]
fn unknown_events_survive_the_wire() {
    let (events, _) = map_all(INTERRUPTS);
    for e in events {
        let json = e.to_json().unwrap();
        let back = Event::from_json(&json).unwrap();
        assert_eq!(back, e);
        if let Event::Unknown(v) = &e {
            assert!(v["type"].as_str().unwrap().starts_with("cli."));
        }
    }
    let mut m = CliEventMapper::new();
    let out = m
        .feed_line(r#"{"type":"system","subtype":"compact_boundary","n":1}"#)
        .unwrap();
    assert_eq!(
        out.events,
        vec![Event::Unknown(json!({
            "type": "cli.system.compact_boundary",
            "line": {"type": "system", "subtype": "compact_boundary", "n": 1}
        }))]
    );
}

#[test]
fn assistant_blocks_merge_by_message_id_and_repeats_are_ignored() {
    let mut m = CliEventMapper::new();
    let line = |uuid: &str, content: Value| {
        json!({"type": "assistant", "uuid": uuid,
            "message": {"id": "msg_1", "content": [content]}})
        .to_string()
    };
    let a = m
        .feed_line(&line("u1", json!({"type": "text", "text": "First."})))
        .unwrap();
    assert_eq!(finals(&a.events), vec!["First."]);
    let b = m
        .feed_line(&line(
            "u2",
            json!({"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}),
        ))
        .unwrap();
    assert_eq!(names(&b.events), vec!["tool_use"]);
    let c = m
        .feed_line(&line("u3", json!({"type": "text", "text": "Second."})))
        .unwrap();
    assert_eq!(finals(&c.events), vec!["First.\n\nSecond."]);
    // The same line again changes nothing.
    let d = m
        .feed_line(&line("u3", json!({"type": "text", "text": "Second."})))
        .unwrap();
    assert!(d.events.is_empty());
}

#[test]
fn control_requests_become_actions() {
    let mut m = CliEventMapper::new().with_hook_reason("gate");
    let hook = json!({"type": "control_request", "request_id": "h-1", "request": {
        "subtype": "hook_callback", "callback_id": PRE_TOOL_USE_CALLBACK_ID,
        "input": {"hook_event_name": "PreToolUse", "tool_name": "Read",
                  "tool_input": {}, "tool_use_id": "t1"}, "tool_use_id": "t1"}});
    let out = m.feed_line(&hook.to_string()).unwrap();
    assert!(out.events.is_empty());
    assert_eq!(
        out.actions,
        vec![CliAction::Send(CliInput::HookAsk {
            request_id: "h-1".into(),
            reason: "gate".into()
        })]
    );
    let other_hook = json!({"type": "control_request", "request_id": "h-2", "request": {
        "subtype": "hook_callback", "input": {"hook_event_name": "PostToolUse"}}});
    let out = m.feed_line(&other_hook.to_string()).unwrap();
    assert_eq!(
        out.actions,
        vec![CliAction::Send(CliInput::HookContinue {
            request_id: "h-2".into()
        })]
    );

    let can = json!({"type": "control_request", "request_id": "c-1", "request": {
        "subtype": "can_use_tool", "tool_name": "Write",
        "input": {"file_path": "a", "content": "b"}, "tool_use_id": "t2"}});
    let out = m.feed_line(&can.to_string()).unwrap();
    assert_eq!(names(&out.events), vec!["user_question"]);
    assert!(
        matches!(&out.actions[0], CliAction::AskGate { request_id, input, .. }
        if request_id == "c-1" && input["content"] == "b")
    );
    assert_eq!(m.pending().len(), 1);
    assert!(m.answered("c-1").is_some());
    assert!(m.pending().is_empty());

    // A withdrawn request we never saw.
    let cancel = json!({"type": "control_cancel_request", "request_id": "zzz"});
    let out = m.feed_line(&cancel.to_string()).unwrap();
    assert_eq!(
        out.actions,
        vec![CliAction::Withdraw {
            request_id: "zzz".into(),
            question_id: None
        }]
    );

    // An unsupported request gets an error answer and is logged.
    let odd = json!({"type": "control_request", "request_id": "o-1",
        "request": {"subtype": "elicitation"}});
    let out = m.feed_line(&odd.to_string()).unwrap();
    assert_eq!(out.events[0].type_name(), "cli.control_request");
    assert!(
        matches!(&out.actions[0], CliAction::Send(CliInput::Error { request_id, .. }) if request_id == "o-1")
    );

    // An error control_response.
    let err = json!({"type": "control_response", "response": {
        "subtype": "error", "request_id": "i-9", "error": "nope"}});
    let out = m.feed_line(&err.to_string()).unwrap();
    assert_eq!(
        out.actions,
        vec![CliAction::Response {
            request_id: "i-9".into(),
            result: Err("nope".into())
        }]
    );

    // A malformed AskUserQuestion falls back to a permission question.
    let ask = json!({"type": "control_request", "request_id": "c-2", "request": {
        "subtype": "can_use_tool", "tool_name": "AskUserQuestion",
        "input": {"questions": "what?"}}});
    let out = m.feed_line(&ask.to_string()).unwrap();
    let Event::UserQuestion(q) = &out.events[0] else {
        panic!()
    };
    assert_eq!(q.kind.name(), "permission");
}

#[test]
fn stdin_lines_have_the_documented_shape() {
    let init = CliInput::Initialize {
        request_id: "init-1".into(),
    };
    assert_eq!(
        init.to_value(),
        json!({"type": "control_request", "request_id": "init-1", "request": {
            "subtype": "initialize",
            "hooks": {"PreToolUse": [{"matcher": null,
                "hookCallbackIds": [PRE_TOOL_USE_CALLBACK_ID]}]}}})
    );
    let line = init.to_line();
    assert!(line.ends_with('\n'));
    assert_eq!(line.matches('\n').count(), 1);

    assert_eq!(
        CliInput::UserTurn {
            text: "hi\nthere".into()
        }
        .to_value(),
        json!({"type": "user", "message": {"role": "user", "content": "hi\nthere"},
            "parent_tool_use_id": null})
    );
    assert_eq!(
        CliInput::UserTurn {
            text: "a\nb".into()
        }
        .to_line()
        .matches('\n')
        .count(),
        1
    );
    assert_eq!(
        CliInput::Interrupt {
            request_id: "i1".into()
        }
        .to_value(),
        json!({"type": "control_request", "request_id": "i1",
            "request": {"subtype": "interrupt"}})
    );
    assert_eq!(
        CliInput::HookAsk {
            request_id: "h".into(),
            reason: "why".into()
        }
        .to_value(),
        json!({"type": "control_response", "response": {"subtype": "success",
            "request_id": "h", "response": {"hookSpecificOutput": {
                "hookEventName": "PreToolUse", "permissionDecision": "ask",
                "permissionDecisionReason": "why"}}}})
    );
    assert_eq!(
        CliInput::Error {
            request_id: "e".into(),
            message: "m".into()
        }
        .to_value(),
        json!({"type": "control_response", "response": {"subtype": "error",
            "request_id": "e", "error": "m"}})
    );
}

fn response_of(input: &CliInput) -> Value {
    input.to_value()["response"]["response"].clone()
}

#[test]
fn gate_decisions_become_can_use_tool_answers() {
    let input = json!({"command": "ls"});
    let allow = CliInput::for_decision(
        "r",
        &input,
        &Decision::Allow {
            updated_input: None,
            remember: false,
        },
    );
    assert_eq!(
        response_of(&allow),
        json!({"behavior": "allow", "updatedInput": {"command": "ls"}})
    );
    assert_eq!(allow.to_value()["response"]["request_id"], "r");
    let edited = CliInput::for_decision(
        "r",
        &input,
        &Decision::Allow {
            updated_input: Some(json!({"command": "ls -la"})),
            remember: true,
        },
    );
    assert_eq!(response_of(&edited)["updatedInput"]["command"], "ls -la");
    let deny = CliInput::for_decision(
        "r",
        &input,
        &Decision::Deny {
            reason: "no".into(),
            interrupt: false,
        },
    );
    assert_eq!(
        response_of(&deny),
        json!({"behavior": "deny", "message": "no"})
    );
    let deny_stop = CliInput::for_decision(
        "r",
        &input,
        &Decision::Deny {
            reason: "stop".into(),
            interrupt: true,
        },
    );
    assert_eq!(response_of(&deny_stop)["interrupt"], true);
    let expired = CliInput::for_decision("r", &input, &Decision::Expired);
    let msg = response_of(&expired)["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.contains("in time") && !msg.contains("denied by"));

    let q = json!({"questions": [{"question": "Which color?", "options": []}]});
    let answers = BTreeMap::from([("Which color?".to_owned(), "Blue".to_owned())]);
    let answered = CliInput::for_decision("r", &q, &Decision::Answered { answers });
    assert_eq!(
        response_of(&answered),
        json!({"behavior": "allow", "updatedInput": {
            "questions": [{"question": "Which color?", "options": []}],
            "answers": {"Which color?": "Blue"}}})
    );
}

#[test]
fn plan_mode_refuses_edits_unasked_and_shows_the_plan() {
    let mut m = CliEventMapper::new().with_permission_mode("default");
    let hook = |id: &str, tool: &str| {
        json!({"type": "control_request", "request_id": id, "request": {
            "subtype": "hook_callback", "callback_id": PRE_TOOL_USE_CALLBACK_ID,
            "input": {"hook_event_name": "PreToolUse", "tool_name": tool,
                      "tool_input": {}, "tool_use_id": "t1"}, "tool_use_id": "t1"}})
        .to_string()
    };
    // The CLI's report of the new mode is a notice, once.
    let status = json!({"type": "system", "subtype": "status", "status": null,
        "permissionMode": "plan", "session_id": "s"});
    let out = m.feed_line(&status.to_string()).unwrap();
    let Some(Event::Notice(n)) = out.events.last() else {
        panic!("{:?}", out.events)
    };
    assert_eq!(n.code, "mode_changed");
    assert_eq!(n.permission_mode.as_deref(), Some("plan"));
    let again = m.feed_line(&status.to_string()).unwrap();
    assert_eq!(names(&again.events), vec!["cli.status"]);

    // An edit is denied at the hook; a Bash call is still asked about.
    for tool in ["Write", "Edit", "MultiEdit", "NotebookEdit"] {
        let out = m.feed_line(&hook("h", tool)).unwrap();
        assert!(
            matches!(
                &out.actions[..],
                [CliAction::Send(CliInput::HookDeny { .. })]
            ),
            "{tool}: {:?}",
            out.actions
        );
    }
    let out = m.feed_line(&hook("h", "Bash")).unwrap();
    assert!(matches!(
        &out.actions[..],
        [CliAction::Send(CliInput::HookAsk { .. })]
    ));

    // ExitPlanMode's request has no input: the plan comes from its tool_use.
    let plan = json!({"type": "assistant", "uuid": "u1", "message": {"id": "m1", "role": "assistant",
        "content": [{"type": "tool_use", "id": "t9", "name": "ExitPlanMode",
                     "input": {"plan": "# Plan"}}]}});
    m.feed_line(&plan.to_string()).unwrap();
    let can = json!({"type": "control_request", "request_id": "c-9", "request": {
        "subtype": "can_use_tool", "tool_name": "ExitPlanMode", "input": {},
        "tool_use_id": "t9", "requires_user_interaction": true}});
    let out = m.feed_line(&can.to_string()).unwrap();
    let Event::UserQuestion(q) = &out.events[0] else {
        panic!("{:?}", out.events)
    };
    let QuestionKind::Permission { input, .. } = &q.kind else {
        panic!("{q:?}")
    };
    assert_eq!(input["plan"], "# Plan");

    // Back to default: edits are asked about again.
    let status = json!({"type": "system", "subtype": "status", "permissionMode": "default"});
    m.feed_line(&status.to_string()).unwrap();
    assert_eq!(m.permission_mode(), Some("default"));
    let out = m.feed_line(&hook("h", "Write")).unwrap();
    assert!(matches!(
        &out.actions[..],
        [CliAction::Send(CliInput::HookAsk { .. })]
    ));
}
