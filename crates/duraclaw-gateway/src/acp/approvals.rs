//! The agent's tool calls and questions through the approval gate: its
//! permission requests and form elicitations asked, each decision sent
//! back as the agent's option, and calls it runs unasked caught.

use super::*;

/// The agent says tool call `id` runs: it must have been allowed, else a
/// rule or a standing allow must allow it now; otherwise the session ends.
pub(super) async fn check_runs(shared: &Arc<Shared>, id: &str) -> bool {
    let call = {
        let map = shared.map.lock().unwrap_or_else(|p| p.into_inner());
        map.calls.get(id).cloned()
    };
    let Some(call) = call else {
        return true;
    };
    if call.allowed {
        return true;
    }
    let request = ApprovalRequest::new(
        shared.session_id.clone(),
        UserQuestion {
            question_id: shared.question_id(),
            tool_use_id: Some(id.to_owned()),
            kind: QuestionKind::Permission {
                tool_name: call.name.clone(),
                input: call.input.clone(),
                description: (!call.title.is_empty()).then(|| call.title.clone()),
            },
        },
        SystemClock.now_ms(),
    );
    let mut allowed = false;
    match shared.gate.by_rule(&request).await {
        Ok(Some(decided)) => {
            allowed = matches!(decided.resolution.decision, Decision::Allow { .. });
            shared.emit(Event::Notice(decided.notice)).await;
        }
        Ok(None) => match shared.gate.standing_allow(&request).await {
            Ok(Some(a)) => {
                allowed = true;
                shared
                    .emit(Event::Notice(a.notice(&call.name, Some(id))))
                    .await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(session = %shared.session_id, error = %e, "standing allows unreadable")
            }
        },
        Err(e) => {
            tracing::warn!(session = %shared.session_id, error = %e, "approval rules unreadable")
        }
    }
    if allowed {
        mark_allowed(shared, id);
        return true;
    }
    let bad = UnapprovedTool {
        tool_name: call.name,
        tool_use_id: id.to_owned(),
    };
    tracing::error!(session = %shared.session_id, agent = %shared.agent.name, tool = %bad.tool_name, tool_use_id = %bad.tool_use_id, "a tool ran without approval; stopping the agent");
    shared.ended.store(true, Ordering::Release);
    shared.kill_now();
    shared.rpc.close();
    shared.emit(bad.error_event()).await;
    false
}

pub(super) fn mark_allowed(shared: &Shared, id: &str) {
    let mut map = shared.map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.calls.get_mut(id) {
        c.allowed = true;
    }
}

/// `session/request_permission`: asks the gate; answers the agent with the
/// option the decision stands for.
pub(super) async fn permission(shared: &Arc<Shared>, id: Value, params: Value) {
    let req: RequestPermissionRequest = match serde_json::from_value(params) {
        Ok(r) => r,
        Err(e) => {
            shared.rpc.respond(
                &id,
                Err(RpcError {
                    code: rpc::INVALID_PARAMS,
                    message: format!("invalid params: {e}"),
                }),
            );
            return;
        }
    };
    let call_id = req.tool_call.tool_call_id.0.to_string();
    let late = shared
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .of_an_ended_turn(&call_id);
    if late {
        // About a call of a turn that has ended (work in flight of an
        // interrupted turn asking once the next turn began): not this
        // turn's question to put to anyone.
        tracing::warn!(session = %shared.session_id, agent = %shared.agent.name, tool_use_id = %call_id, "a permission request about a call of an ended turn; answered cancelled unasked");
        shared
            .rpc
            .respond(&id, Ok(json!({ "outcome": { "outcome": "cancelled" } })));
        return;
    }
    // The turn it was asked in: an interrupt of that turn, a stop or the
    // agent's exit before its question opens answers it `cancelled` unasked.
    let turn = shared.turns_played.load(Ordering::Acquire);
    shared.waiting();
    let announced = shared
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .calls
        .contains_key(&call_id);
    if announced {
        // Shown now, in order with the agent's updates.
        let call = show_asked(shared, &req, &call_id).await;
        let shared = shared.clone();
        tokio::spawn(async move { ask_call(&shared, id, req, call_id, call, turn).await });
        return;
    }
    // Asked before the agent announced the call (claude-agent-acp may ask
    // before it has sent the rest of the text that precedes the call): the
    // announcement is waited for (bounded), so that text, and the name the
    // announcement may carry, come before the call is shown.
    let shared = shared.clone();
    tokio::spawn(async move {
        call_announced(&shared, &call_id, turn).await;
        if withdrawn(&shared, turn) {
            // Withdrawn while it waited (interrupt, stop, exit): nothing
            // shown or asked.
            shared.waited();
            shared
                .rpc
                .respond(&id, Ok(json!({ "outcome": { "outcome": "cancelled" } })));
            return;
        }
        let call = show_asked(&shared, &req, &call_id).await;
        ask_call(&shared, id, req, call_id, call, turn).await;
    });
}

/// Whether a request asked in `turn` is withdrawn before its question
/// opens: that turn was interrupted (even if it has ended since), the
/// session is stopping, or the agent's process is gone.
fn withdrawn(shared: &Shared, turn: u64) -> bool {
    shared.stopping.load(Ordering::Acquire)
        || !shared.running.load(Ordering::Acquire)
        || (turn != 0 && shared.withdrawn_turn.load(Ordering::Acquire) == turn)
}

/// Waits until the agent announced call `id`, or the limits'
/// `announce_wait`, or until the request is [`withdrawn`].
async fn call_announced(shared: &Shared, id: &str, turn: u64) {
    let wait = async {
        loop {
            let notified = shared.announced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let known = shared
                .map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .calls
                .contains_key(id);
            if known || withdrawn(shared, turn) {
                return;
            }
            notified.await;
        }
    };
    let _ = tokio::time::timeout(shared.limits.announce_wait, wait).await;
}

/// Logs the `tool_use` of permission request `req`'s call if it was not
/// yet; returns the call.
async fn show_asked(
    shared: &Shared,
    req: &RequestPermissionRequest,
    call_id: &str,
) -> Option<Call> {
    let f = &req.tool_call.fields;
    // The question needs its `tool_use` logged first.
    let outs = {
        let mut map = shared.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut outs = map.note(
            call_id,
            &Seen {
                title: f.title.as_deref(),
                kind: f.kind.as_ref(),
                name: f.name.as_deref(),
                raw_input: f.raw_input.as_ref(),
                meta: req.tool_call.meta.as_ref().or(req.meta.as_ref()),
            },
        );
        outs.extend(map.show(call_id));
        outs
    };
    for out in outs {
        if let Out::Emit(e) = out {
            shared.emit(e).await;
        }
    }
    shared
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .calls
        .get(call_id)
        .cloned()
}

/// Asks the gate about `call` of permission request `req` (counted as
/// waiting) and answers the agent.
async fn ask_call(
    shared: &Arc<Shared>,
    id: Value,
    req: RequestPermissionRequest,
    call_id: String,
    call: Option<Call>,
    turn: u64,
) {
    let Some(call) = call else {
        shared.waited();
        return;
    };
    let f = &req.tool_call.fields;
    let input = match &f.raw_input {
        Some(v) if !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()) => v.clone(),
        _ => call.input.clone(),
    };
    let title = f.title.clone().unwrap_or(call.title.clone());
    let question_id = shared.question_id();
    let request = ApprovalRequest::new(
        shared.session_id.clone(),
        UserQuestion {
            question_id: question_id.clone(),
            tool_use_id: Some(call_id.clone()),
            kind: QuestionKind::Permission {
                tool_name: call.name.clone(),
                input: input.clone(),
                description: (!title.is_empty()).then_some(title),
            },
        },
        SystemClock.now_ms(),
    );
    shared
        .open_questions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(question_id.clone());
    // Withdrawn before it opened (an interrupt's withdrawal only reaches
    // questions the gate already holds): answered `cancelled`, not asked.
    // The interrupt, the stop and the agent's exit each set what
    // `withdrawn` reads before they withdraw the open questions, and
    // `ask_unless` looks again once the gate holds this one.
    let decided = ask_unless(&shared.gate, &*shared.sink, request, || {
        withdrawn(shared, turn)
    })
    .await
    .transpose();
    shared
        .open_questions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&question_id);
    let decision = match decided {
        None => Decision::Cancelled {
            reason: Some("withdrawn before it was asked".to_owned()),
        },
        Some(Ok(r)) => r.decision,
        Some(Err(e)) => {
            tracing::warn!(session = %shared.session_id, error = %e, "approval failed");
            Decision::Cancelled {
                reason: Some(format!("the approval could not be obtained: {e}")),
            }
        }
    };
    let (outcome, allowed) = choose(&req.options, &decision, &input);
    if allowed {
        mark_allowed(shared, &call_id);
    }
    shared.waited();
    shared.rpc.respond(&id, Ok(json!({ "outcome": outcome })));
    if let Decision::Deny {
        interrupt: true, ..
    } = decision
    {
        interrupt_turn(shared).await;
    }
}

/// The agent's option for `decision`: (the outcome, whether it allows).
pub(super) fn choose(
    options: &[PermissionOption],
    decision: &Decision,
    input: &Value,
) -> (Value, bool) {
    let find = |kinds: &[PermissionOptionKind]| {
        kinds
            .iter()
            .find_map(|k| options.iter().find(|o| &o.kind == k))
    };
    let selected =
        |o: &PermissionOption| json!({ "outcome": "selected", "optionId": o.option_id.0 });
    let cancelled = json!({ "outcome": "cancelled" });
    let deny = || match find(&[
        PermissionOptionKind::RejectOnce,
        PermissionOptionKind::RejectAlways,
    ]) {
        Some(o) => selected(o),
        None => cancelled.clone(),
    };
    match decision {
        Decision::Allow {
            updated_input,
            remember,
        } => {
            // An agent takes no changed input: refused rather than run as asked.
            if updated_input.as_ref().is_some_and(|u| u != input) {
                tracing::warn!(
                    "an allow with changed input; an ACP agent cannot take it, so it is refused"
                );
                return (deny(), false);
            }
            let order = if *remember {
                [
                    PermissionOptionKind::AllowAlways,
                    PermissionOptionKind::AllowOnce,
                ]
            } else {
                [
                    PermissionOptionKind::AllowOnce,
                    PermissionOptionKind::AllowAlways,
                ]
            };
            match find(&order) {
                Some(o) => (selected(o), true),
                None => (cancelled, false),
            }
        }
        Decision::Deny { .. } => (deny(), false),
        _ => (cancelled, false),
    }
}

/// `elicitation/create` of a form of choices: a question to the user.
pub(super) async fn elicit(shared: &Arc<Shared>, id: Value, params: Value) {
    let refuse = |why: String| {
        tracing::warn!(session = %shared.session_id, why, "elicitation declined");
        shared.rpc.respond(&id, Ok(json!({ "action": "cancel" })));
    };
    let req: CreateElicitationRequest = match serde_json::from_value(params.clone()) {
        Ok(r) => r,
        Err(e) => return refuse(format!("invalid params: {e}")),
    };
    let ElicitationMode::Form(form) = &req.mode else {
        return refuse("only forms are asked".into());
    };
    // (field, question, labels, values, multi)
    let mut fields = Vec::new();
    for (name, schema) in &form.requested_schema.properties {
        let (title, description, pairs, multi) = match schema {
            ElicitationPropertySchema::String(s) => {
                let pairs: Vec<(String, String)> = match (&s.one_of, &s.enum_values) {
                    (Some(one_of), _) => one_of
                        .iter()
                        .map(|o| (o.title.clone(), o.value.clone()))
                        .collect(),
                    (None, Some(values)) => values.iter().map(|v| (v.clone(), v.clone())).collect(),
                    (None, None) => return refuse(format!("field `{name}` is free text")),
                };
                (s.title.clone(), s.description.clone(), pairs, false)
            }
            ElicitationPropertySchema::Array(a) => {
                let pairs = match &a.items {
                    MultiSelectItems::String(s) => {
                        s.values.iter().map(|v| (v.clone(), v.clone())).collect()
                    }
                    MultiSelectItems::Titled(t) => t
                        .options
                        .iter()
                        .map(|o| (o.title.clone(), o.value.clone()))
                        .collect(),
                    _ => return refuse(format!("field `{name}` has choices we cannot show")),
                };
                (a.title.clone(), a.description.clone(), pairs, true)
            }
            _ => return refuse(format!("field `{name}` is no choice")),
        };
        let question = title.clone().unwrap_or_else(|| {
            if form.requested_schema.properties.len() == 1 {
                req.message.clone()
            } else {
                name.clone()
            }
        });
        fields.push((name.clone(), question, description, pairs, multi));
    }
    if fields.is_empty() {
        return refuse("an empty form".into());
    }
    let tool_use_id = params
        .get("toolCallId")
        .and_then(Value::as_str)
        .filter(|t| {
            shared
                .map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .calls
                .get(*t)
                .is_some_and(|c| c.shown)
        })
        .map(str::to_owned);
    let questions = fields
        .iter()
        .map(|(_, question, description, pairs, multi)| AskQuestion {
            question: question.clone(),
            header: description.clone(),
            options: pairs
                .iter()
                .map(|(label, _)| AskOption {
                    label: label.clone(),
                    description: None,
                })
                .collect(),
            multi_select: *multi,
        })
        .collect();
    let question_id = shared.question_id();
    let request = ApprovalRequest::new(
        shared.session_id.clone(),
        UserQuestion {
            question_id: question_id.clone(),
            tool_use_id,
            kind: QuestionKind::AskUser { questions },
        },
        SystemClock.now_ms(),
    );
    shared
        .open_questions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(question_id.clone());
    shared.waiting();
    let shared = shared.clone();
    tokio::spawn(async move {
        let decided = ask(&shared.gate, &*shared.sink, request).await;
        shared
            .open_questions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&question_id);
        shared.waited();
        let answer = match decided.map(|r| r.decision) {
            Ok(Decision::Answered { answers }) => {
                let mut content = serde_json::Map::new();
                for (name, question, _, pairs, multi) in &fields {
                    let Some(given) = answers.get(question) else {
                        continue;
                    };
                    let value_of = |label: &str| {
                        pairs
                            .iter()
                            .find(|(l, _)| l == label)
                            .map_or_else(|| label.to_owned(), |(_, v)| v.clone())
                    };
                    content.insert(
                        name.clone(),
                        if *multi {
                            Value::from(given.split(", ").map(value_of).collect::<Vec<String>>())
                        } else {
                            Value::from(value_of(given))
                        },
                    );
                }
                json!({ "action": "accept", "content": content })
            }
            Ok(Decision::Deny { .. }) => json!({ "action": "decline" }),
            _ => json!({ "action": "cancel" }),
        };
        shared.rpc.respond(&id, Ok(answer));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our answers parse as the pinned crate's own messages.
    #[test]
    fn our_answers_are_the_crates() {
        use agent_client_protocol::v1::schema::{
            CreateElicitationResponse, ElicitationAction, RequestPermissionOutcome,
            RequestPermissionResponse,
        };
        let options: Vec<PermissionOption> = serde_json::from_value(json!([
            { "optionId": "o1", "name": "Once", "kind": "allow_once" },
        ]))
        .unwrap();
        let allow = Decision::Allow {
            updated_input: None,
            remember: false,
        };
        for decision in [allow, Decision::Expired] {
            let (outcome, _) = choose(&options, &decision, &Value::Null);
            let r: RequestPermissionResponse =
                serde_json::from_value(json!({ "outcome": outcome })).unwrap();
            match (&decision, r.outcome) {
                (Decision::Allow { .. }, RequestPermissionOutcome::Selected(s)) => {
                    assert_eq!(s.option_id.0.as_ref(), "o1");
                }
                (Decision::Expired, RequestPermissionOutcome::Cancelled) => {}
                other => panic!("{other:?}"),
            }
        }
        let accept: CreateElicitationResponse =
            serde_json::from_value(json!({ "action": "accept", "content": { "answer": "Yes" } }))
                .unwrap();
        assert!(matches!(accept.action, ElicitationAction::Accept(a) if a.content.is_some()));
    }

    #[test]
    fn decisions_pick_the_agents_options() {
        let options: Vec<PermissionOption> = serde_json::from_value(json!([
            { "optionId": "o1", "name": "Once", "kind": "allow_once" },
            { "optionId": "o2", "name": "Always", "kind": "allow_always" },
            { "optionId": "r1", "name": "No", "kind": "reject_once" },
            { "optionId": "r2", "name": "Never", "kind": "reject_always" },
        ]))
        .unwrap();
        let input = json!({ "command": "ls" });
        let allow = |remember| Decision::Allow {
            updated_input: None,
            remember,
        };
        let picked = |d: &Decision| {
            let (o, allowed) = choose(&options, d, &input);
            (
                o["optionId"]
                    .as_str()
                    .unwrap_or(o["outcome"].as_str().unwrap_or(""))
                    .to_owned(),
                allowed,
            )
        };
        assert_eq!(picked(&allow(false)), ("o1".into(), true));
        assert_eq!(picked(&allow(true)), ("o2".into(), true));
        let deny = Decision::Deny {
            reason: "no".into(),
            interrupt: false,
        };
        assert_eq!(picked(&deny), ("r1".into(), false));
        assert_eq!(
            picked(&Decision::Cancelled { reason: None }),
            ("cancelled".into(), false)
        );
        let changed = Decision::Allow {
            updated_input: Some(json!({ "command": "rm -rf /" })),
            remember: false,
        };
        assert_eq!(picked(&changed), ("r1".into(), false));
        // Only "always" on offer: a deny still denies.
        let only_always: Vec<PermissionOption> = options[1..2].to_vec();
        assert_eq!(
            choose(&only_always, &deny, &input).0,
            json!({ "outcome": "cancelled" })
        );
    }
}
