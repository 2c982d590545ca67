//! A scripted [`Executor`]: deterministic sessions for tests, demos and
//! benchmarks, with the same approval flow as the real CLI.
//!
//! A [`Script`] is a list of turns; turn *n* plays when the *n*-th prompt
//! arrives (the first prompt is turn 0). Each turn streams text, asks the
//! [`ApprovalGate`](duraclaw_core::approval::ApprovalGate) before every tool
//! call, asks questions, and ends with a `result`. An interrupt cancels the
//! open request and ends the turn as `aborted`. Prompts past the script get
//! an echo turn, and so does every prompt of a resumed session. A turn that
//! starts with [`Step::PromptTurn`] plays the steps its prompt carries, so a
//! test can choose the tool calls a session makes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use duraclaw_core::Result;
use duraclaw_core::approval::{ApprovalRequest, DynApprovalGate};
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::error::Error;
use duraclaw_core::executor::{
    DynEventSink, Executor, ExecutorSession, StartSpec, ask_unless, withdraw,
};
use duraclaw_core::protocol::{
    AskQuestion, Assistant, AssistantPhase, DecidedBy, Decision, ErrorEvent, Event,
    NOTICE_MODE_CHANGED, NOTICE_MODEL_CHANGED, Notice, QuestionKind, SessionInit, ToolResult,
    ToolUse, TurnResult, Usage, UserQuestion,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use duraclaw_approval::decision_message;

/// One step of a scripted turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Stream `text` as `chunks` deltas, then the final message.
    Text {
        /// The whole text.
        text: String,
        /// How many deltas (at least 1).
        #[serde(default = "one")]
        chunks: usize,
        /// Pause between deltas, in ms (0: none).
        #[serde(default)]
        delay_ms: u64,
    },
    /// Call a tool: `tool_use`, the approval, then `tool_result`.
    Tool {
        /// Tool name, e.g. `Bash`.
        name: String,
        /// Its input.
        input: Value,
        /// What it returns when allowed.
        result: String,
    },
    /// Ask the user (AskUserQuestion) and show the answers.
    Ask {
        /// The questions.
        questions: Vec<AskQuestion>,
    },
    /// Wait until interrupted (to test aborts).
    Stall,
    /// Report an executor error. It ends the turn, as a turn whose agent
    /// died ends: the `error` is its last event (no `result`), and the
    /// turn's remaining steps do not play.
    Fail {
        /// The message.
        message: String,
        /// Its code (default `scripted_failure`), e.g. to show how the UI
        /// presents an error of that code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    /// As a turn's first step: when the turn's prompt is a JSON object
    /// `{"turn": [steps…]}`, those steps play instead of the rest of the
    /// turn; any other prompt plays the rest as usual.
    PromptTurn,
}

/// The steps a turn plays for `prompt`: the prompt's own when the turn
/// starts with [`Step::PromptTurn`] and the prompt carries them.
pub fn turn_steps(steps: &[Step], prompt: &str) -> Vec<Step> {
    #[derive(Deserialize)]
    struct Carried {
        turn: Vec<Step>,
    }
    match steps.split_first() {
        Some((Step::PromptTurn, rest)) => match serde_json::from_str::<Carried>(prompt) {
            Ok(c) => c.turn,
            Err(_) => rest.to_vec(),
        },
        _ => steps.to_vec(),
    }
}

fn one() -> usize {
    1
}

/// Turns to play, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Script {
    /// Turn *n* plays on the *n*-th prompt.
    pub turns: Vec<Vec<Step>>,
}

impl Script {
    /// The demo: streamed Markdown, an approved shell command, a question,
    /// then an edit.
    pub fn demo() -> Self {
        let text = |t: &str| Step::Text {
            text: t.into(),
            chunks: 12,
            delay_ms: 40,
        };
        Script {
            turns: vec![
                vec![
                    text("I'll look at the project first.\n\nLet me list the files so I know **where things are**."),
                    Step::Tool {
                        name: "Bash".into(),
                        input: serde_json::json!({"command": "ls -la", "description": "List files"}),
                        result: "total 16\ndrwxr-xr-x  4 dev dev 4096 .\n-rw-r--r--  1 dev dev  120 Cargo.toml\ndrwxr-xr-x  2 dev dev 4096 src".into(),
                    },
                    Step::Ask {
                        questions: vec![AskQuestion {
                            question: "Which change should I make?".into(),
                            header: Some("Change".into()),
                            options: vec![
                                duraclaw_core::protocol::AskOption { label: "Add a test".into(), description: Some("A unit test for main".into()) },
                                duraclaw_core::protocol::AskOption { label: "Fix a typo".into(), description: None },
                            ],
                            multi_select: false,
                        }],
                    },
                    Step::Tool {
                        name: "Edit".into(),
                        input: serde_json::json!({"file_path": "src/main.rs", "old_string": "println!(\"helo\");", "new_string": "println!(\"hello\");"}),
                        result: "The file src/main.rs has been updated.".into(),
                    },
                    text("Done. Here is what changed:\n\n```rust\nfn main() {\n    println!(\"hello\");\n}\n```\n"),
                ],
            ],
        }
    }
}

/// Players started in this process, for ids.
static RUNS: AtomicU64 = AtomicU64::new(0);

/// Runs [`Script`]s.
#[derive(Debug, Clone)]
pub struct ScriptedExecutor {
    script: Arc<Script>,
}

impl ScriptedExecutor {
    /// An executor that plays `script` in every session.
    pub fn new(script: Script) -> Self {
        ScriptedExecutor {
            script: Arc::new(script),
        }
    }
}

enum Input {
    Prompt(String),
    Interrupt,
    Shutdown,
}

/// A running scripted session.
#[derive(Debug)]
pub struct ScriptedSession {
    tx: mpsc::UnboundedSender<Input>,
    /// Where mode and model switches are logged.
    sink: DynEventSink,
    running: Arc<AtomicBool>,
    /// Set by an interrupt, cleared when the next turn starts: a question
    /// the gate is still looking up when it is set is never shown.
    interrupted: Arc<AtomicBool>,
    done: tokio::sync::watch::Receiver<bool>,
}

#[async_trait]
impl Executor for ScriptedExecutor {
    async fn start(
        &self,
        spec: StartSpec,
        gate: DynApprovalGate,
        sink: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let running = Arc::new(AtomicBool::new(true));
        let interrupted = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = tokio::sync::watch::channel(false);
        let player = Player {
            script: self.script.clone(),
            spec: spec.clone(),
            gate,
            sink: sink.clone(),
            run: format!(
                "{}-{}",
                SystemClock.now_ms(),
                RUNS.fetch_add(1, Ordering::Relaxed)
            ),
            ids: AtomicU64::new(0),
            cost: 0.0,
            interrupted: interrupted.clone(),
        };
        let flag = running.clone();
        tokio::spawn(async move {
            player.run(rx, flag).await;
            let _ = done_tx.send(true);
        });
        if let Some(prompt) = spec.prompt {
            tx.send(Input::Prompt(prompt))
                .map_err(|_| Error::Closed("scripted session"))?;
        }
        Ok(Box::new(ScriptedSession {
            tx,
            sink,
            running,
            interrupted,
            done,
        }))
    }
}

#[async_trait]
impl ExecutorSession for ScriptedSession {
    async fn send_message(&self, text: &str) -> Result<()> {
        self.tx
            .send(Input::Prompt(text.to_owned()))
            .map_err(|_| Error::Closed("scripted session"))
    }

    async fn interrupt(&self) -> Result<()> {
        // Before the player hears of it: see `ask_unless`.
        self.interrupted.store(true, Ordering::Release);
        self.tx
            .send(Input::Interrupt)
            .map_err(|_| Error::Closed("scripted session"))
    }

    async fn shutdown(&self) -> Result<()> {
        // Already gone is fine.
        let _ = self.tx.send(Input::Shutdown);
        let mut done = self.done.clone();
        // Returns once the player has written its last event.
        let _ = done.wait_for(|d| *d).await;
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Logs the switch as the CLI's mapper does (`mode_changed`).
    async fn set_permission_mode(&self, mode: &str) -> Result<()> {
        if !self.is_running() {
            return Err(Error::Closed("scripted session"));
        }
        let mut notice = Notice::new(
            NOTICE_MODE_CHANGED,
            format!("The permission mode is now {mode}."),
        );
        notice.permission_mode = Some(mode.to_owned());
        self.sink.emit(Event::Notice(notice)).await
    }

    /// Logs the switch (`model_changed`), any name taken as it is.
    async fn set_model(&self, model: &str) -> Result<()> {
        if !self.is_running() {
            return Err(Error::Closed("scripted session"));
        }
        let mut notice = Notice::new(NOTICE_MODEL_CHANGED, format!("The model is now {model}."));
        notice.model = Some(model.to_owned());
        self.sink.emit(Event::Notice(notice)).await
    }
}

struct Player {
    script: Arc<Script>,
    spec: StartSpec,
    gate: DynApprovalGate,
    sink: DynEventSink,
    /// When this player started and its number in this process: part of
    /// every id it makes, so that a resumed session never reuses an id of
    /// its past (also when resumed within the same millisecond).
    run: String,
    ids: AtomicU64,
    cost: f64,
    /// The session's interrupt flag ([`ScriptedSession`]).
    interrupted: Arc<AtomicBool>,
}

enum TurnEnd {
    Done,
    Interrupted,
    Shutdown,
}

impl Player {
    fn id(&self, prefix: &str) -> String {
        format!(
            "{prefix}_{}_{}_{}",
            self.spec.session_id,
            self.run,
            self.ids.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>, running: Arc<AtomicBool>) {
        let executor_session_id = self
            .spec
            .resume
            .clone()
            .unwrap_or_else(|| format!("scripted-{}", self.spec.session_id));
        let init = Event::SessionInit(SessionInit {
            executor_session_id: Some(executor_session_id),
            model: Some(self.spec.model.clone().unwrap_or_else(|| "scripted".into())),
            tools: vec![
                "Bash".into(),
                "Edit".into(),
                "Read".into(),
                "AskUserQuestion".into(),
            ],
            cwd: Some(self.spec.worktree.clone()),
            permission_mode: Some(
                self.spec
                    .permission_mode
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            executor_version: Some(env!("CARGO_PKG_VERSION").into()),
        });
        if self.sink.emit(init).await.is_err() {
            running.store(false, Ordering::Release);
            return;
        }
        // A resumed session has played its script already: it echoes.
        let mut turn = if self.spec.resume.is_some() {
            self.script.turns.len()
        } else {
            0
        };
        let mut queued: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        loop {
            let input = match queued.pop_front() {
                Some(prompt) => Input::Prompt(prompt),
                None => match rx.recv().await {
                    Some(input) => input,
                    None => break,
                },
            };
            match input {
                Input::Prompt(prompt) => {
                    let steps = match self.script.turns.get(turn) {
                        Some(steps) => turn_steps(steps, &prompt),
                        None => vec![Step::Text {
                            text: format!("You said: {prompt}"),
                            chunks: 3,
                            delay_ms: 0,
                        }],
                    };
                    turn += 1;
                    self.interrupted.store(false, Ordering::Release);
                    match self.play(&steps, &mut rx).await {
                        Ok((TurnEnd::Shutdown, _)) => break,
                        Ok((_, more)) => queued.extend(more),
                        Err(e) => {
                            tracing::warn!(session = %self.spec.session_id, error = %e, "scripted turn failed");
                            break;
                        }
                    }
                }
                Input::Interrupt => {}
                Input::Shutdown => break,
            }
        }
        running.store(false, Ordering::Release);
    }

    async fn play(
        &mut self,
        steps: &[Step],
        rx: &mut mpsc::UnboundedReceiver<Input>,
    ) -> Result<(TurnEnd, Vec<String>)> {
        let started = Instant::now();
        let mut end = TurnEnd::Done;
        let mut pending_prompts = Vec::new();
        for step in steps {
            let outcome = {
                let step_fut = self.step(step);
                tokio::pin!(step_fut);
                loop {
                    tokio::select! {
                        r = &mut step_fut => break Some(r),
                        input = rx.recv() => match input {
                            // Not this turn's when the flag is clear: one that
                            // a step already saw and ended the turn for.
                            Some(Input::Interrupt) if self.interrupted() => break None,
                            Some(Input::Interrupt) => {}
                            Some(Input::Shutdown) | None => { end = TurnEnd::Shutdown; break None }
                            Some(Input::Prompt(p)) => pending_prompts.push(p),
                        }
                    }
                }
            };
            // A step that saw the interrupt (a question withdrawn before it
            // was shown) may finish before the message is read.
            let outcome = outcome.filter(|_| !self.interrupted());
            match outcome {
                Some(r) => r?,
                None => {
                    if !matches!(end, TurnEnd::Shutdown) {
                        end = TurnEnd::Interrupted;
                    }
                    self.cancel_open_requests().await;
                    break;
                }
            }
            if matches!(step, Step::Fail { .. }) {
                // The `error` ended the turn.
                return Ok((end, pending_prompts));
            }
        }
        self.cost += 0.0125;
        let aborted = !matches!(end, TurnEnd::Done);
        self.sink
            .emit(Event::Result(TurnResult {
                // Where the turn ended, as the CLI says it: a fork resumes
                // there (a resumed scripted session echoes).
                last_message_uuid: Some(self.id("msg_end")),
                subtype: Some(
                    if aborted {
                        "error_during_execution"
                    } else {
                        "success"
                    }
                    .into(),
                ),
                is_error: aborted,
                duration_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
                cost_usd: Some(self.cost),
                usage: Some(Usage {
                    input_tokens: 1200,
                    output_tokens: 340,
                    ..Usage::default()
                }),
                num_turns: Some(1),
                terminal_reason: Some(
                    if aborted {
                        "aborted_streaming"
                    } else {
                        "completed"
                    }
                    .into(),
                ),
            }))
            .await?;
        // Prompts that arrived mid-turn play next, as the CLI queues them.
        Ok((end, pending_prompts))
    }

    async fn cancel_open_requests(&self) {
        if let Ok(pending) = self.gate.pending().await {
            for r in pending
                .into_iter()
                .filter(|r| r.session_id == self.spec.session_id)
            {
                // The waiter was dropped with the turn: `withdraw` logs it.
                let _ = withdraw(
                    &self.gate,
                    &*self.sink,
                    &r.question.question_id,
                    "the turn was interrupted",
                    DecidedBy::new("executor"),
                    SystemClock.now_ms(),
                )
                .await;
            }
        }
    }

    /// Whether an interrupt came since this turn started.
    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Acquire)
    }

    async fn step(&self, step: &Step) -> Result<()> {
        match step {
            Step::Text {
                text,
                chunks,
                delay_ms,
            } => self.text(text, *chunks, *delay_ms).await,
            Step::Tool {
                name,
                input,
                result,
            } => self.tool(name, input, result).await,
            Step::Ask { questions } => self.ask(questions).await,
            Step::Stall => std::future::pending().await,
            // Handled when the turn starts; anywhere else it does nothing.
            Step::PromptTurn => Ok(()),
            Step::Fail { message, code } => {
                self.sink
                    .emit(Event::Error(ErrorEvent {
                        message: message.clone(),
                        code: Some(code.clone().unwrap_or_else(|| "scripted_failure".into())),
                        ..ErrorEvent::default()
                    }))
                    .await
            }
        }
    }

    async fn text(&self, text: &str, chunks: usize, delay_ms: u64) -> Result<()> {
        let message_id = self.id("msg");
        let chars: Vec<char> = text.chars().collect();
        let per = chars.len().div_ceil(chunks.max(1)).max(1);
        for piece in chars.chunks(per) {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            self.sink
                .emit(Event::Assistant(Assistant {
                    message_id: message_id.clone(),
                    phase: AssistantPhase::Delta,
                    text: piece.iter().collect(),
                    aborted: false,
                }))
                .await?;
        }
        self.sink
            .emit(Event::Assistant(Assistant {
                message_id,
                phase: AssistantPhase::Final,
                text: text.to_owned(),
                aborted: false,
            }))
            .await
    }

    async fn approve(&self, tool_use_id: &str, kind: QuestionKind) -> Result<Decision> {
        let question = UserQuestion {
            question_id: self.id("q"),
            tool_use_id: Some(tool_use_id.to_owned()),
            kind,
        };
        let request =
            ApprovalRequest::new(self.spec.session_id.clone(), question, SystemClock.now_ms());
        Ok(
            match ask_unless(&self.gate, &*self.sink, request, || self.interrupted()).await? {
                Some(resolution) => resolution.decision,
                None => Decision::Cancelled {
                    reason: Some("the turn was interrupted".into()),
                },
            },
        )
    }

    async fn tool(&self, name: &str, input: &Value, result: &str) -> Result<()> {
        let tool_use_id = self.id("toolu");
        self.sink
            .emit(Event::ToolUse(ToolUse {
                tool_use_id: tool_use_id.clone(),
                name: name.to_owned(),
                input: input.clone(),
                message_id: None,
            }))
            .await?;
        let decision = self
            .approve(
                &tool_use_id,
                QuestionKind::Permission {
                    tool_name: name.to_owned(),
                    input: input.clone(),
                    description: None,
                },
            )
            .await?;
        let (content, is_error) = match &decision {
            Decision::Allow { .. } => (Value::String(result.to_owned()), false),
            other => (Value::String(decision_message(other)), true),
        };
        self.sink
            .emit(Event::ToolResult(ToolResult {
                tool_use_id,
                content,
                is_error,
            }))
            .await
    }

    async fn ask(&self, questions: &[AskQuestion]) -> Result<()> {
        let tool_use_id = self.id("toolu");
        let input = serde_json::json!({ "questions": questions });
        self.sink
            .emit(Event::ToolUse(ToolUse {
                tool_use_id: tool_use_id.clone(),
                name: "AskUserQuestion".into(),
                input,
                message_id: None,
            }))
            .await?;
        let decision = self
            .approve(
                &tool_use_id,
                QuestionKind::AskUser {
                    questions: questions.to_vec(),
                },
            )
            .await?;
        let (content, is_error) = match &decision {
            Decision::Answered { answers } => (
                Value::String(
                    answers
                        .iter()
                        .map(|(q, a)| format!("\"{q}\"=\"{a}\""))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                false,
            ),
            other => (Value::String(decision_message(other)), true),
        };
        self.sink
            .emit(Event::ToolResult(ToolResult {
                tool_use_id,
                content,
                is_error,
            }))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_turn_plays_the_steps_its_prompt_carries() {
        let turn = vec![
            Step::PromptTurn,
            Step::Text {
                text: "usual".into(),
                chunks: 1,
                delay_ms: 0,
            },
        ];
        let carried = r#"{"turn": [{"step": "tool", "name": "Bash", "input": {"command": "ls"}, "result": "ok"}]}"#;
        assert_eq!(
            turn_steps(&turn, carried),
            vec![Step::Tool {
                name: "Bash".into(),
                input: serde_json::json!({"command": "ls"}),
                result: "ok".into(),
            }]
        );
        // Any other prompt plays the rest of the turn.
        assert_eq!(turn_steps(&turn, "Fix the greeting"), turn[1..].to_vec());
        assert_eq!(turn_steps(&turn, r#"{"turn": 3}"#), turn[1..].to_vec());
        // A turn without the step ignores what its prompt says.
        assert_eq!(turn_steps(&turn[1..], carried), turn[1..].to_vec());
    }
}
