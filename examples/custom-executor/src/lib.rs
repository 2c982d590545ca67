//! A third-party [`Executor`]: a shell-script agent.
//!
//! Each prompt runs `sh <script> <prompt>` in the worktree, with `TURN`
//! (the turn's number, from 0, counted across resumes) and `HISTORY` (a
//! file holding the session's earlier prompts, one a line) in its
//! environment. The script says what it does on stdout, one line each:
//!
//! - `say <text>`: an assistant message;
//! - `run <command>`: a shell command; it runs (`sh -c`, in the worktree)
//!   only once a person allowed it, and the script reads `ok` or `denied`
//!   on stdin;
//! - `ask <question>|<option>|<option>…`: a question to the user; the
//!   script reads the chosen option on stdin;
//! - `fail <message>`: the turn fails.
//!
//! The turn ends when the script exits (non-zero is an error). Questions
//! are logged with [`ask_unless`] (an interrupt that lands while the gate
//! looks one up keeps it from being shown) and withdrawn with
//! [`withdraw`], as the contract on [`Executor`] says.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use duraclaw_core::approval::{ApprovalRequest, DynApprovalGate};
use duraclaw_core::executor::{
    DynEventSink, Executor, ExecutorSession, StartSpec, ask_unless, withdraw,
};
use duraclaw_core::protocol::{
    AskOption, AskQuestion, Assistant, AssistantPhase, DecidedBy, Decision, ErrorEvent, Event,
    QuestionKind, SessionInit, ToolResult, ToolUse, TurnResult, UserQuestion,
};
use duraclaw_core::{Error, Result};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

/// Runs a shell script per turn.
#[derive(Debug, Clone)]
pub struct ShellExecutor {
    script: PathBuf,
    /// Where each session's prompt history lives (what a resume reads).
    state_dir: PathBuf,
}

impl ShellExecutor {
    /// Runs `script`, keeping histories in `state_dir`.
    pub fn new(script: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        ShellExecutor {
            script: script.into(),
            state_dir: state_dir.into(),
        }
    }
}

enum Input {
    Prompt(String),
    Interrupt,
    Shutdown,
}

/// A running shell session.
#[derive(Debug)]
pub struct ShellSession {
    tx: mpsc::UnboundedSender<Input>,
    running: Arc<AtomicBool>,
    /// Set by an interrupt before the turn hears of it; cleared when the
    /// next turn starts.
    interrupted: Arc<AtomicBool>,
    done: watch::Receiver<bool>,
}

#[async_trait]
impl Executor for ShellExecutor {
    async fn start(
        &self,
        spec: StartSpec,
        gate: DynApprovalGate,
        sink: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>> {
        let id = spec
            .resume
            .clone()
            .unwrap_or_else(|| format!("shell-{}-{}", spec.session_id, now_ms()));
        let history = self.state_dir.join(format!("{id}.history"));
        if spec.resume.is_some() && !history.is_file() {
            return Err(Error::executor(format!(
                "no history of session {id} to resume"
            )));
        }
        tokio::fs::create_dir_all(&self.state_dir)
            .await
            .map_err(|e| Error::executor_from("state directory", e))?;
        sink.emit(Event::SessionInit(SessionInit {
            executor_session_id: Some(id.clone()),
            model: Some("shell".into()),
            tools: vec!["Bash".into(), "AskUserQuestion".into()],
            cwd: Some(spec.worktree.clone()),
            permission_mode: Some("default".into()),
            executor_version: Some(env!("CARGO_PKG_VERSION").into()),
        }))
        .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let running = Arc::new(AtomicBool::new(true));
        let interrupted = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = watch::channel(false);
        let turn = Turn {
            script: self.script.clone(),
            history,
            id,
            spec: spec.clone(),
            gate,
            sink,
            interrupted: interrupted.clone(),
        };
        let flag = running.clone();
        tokio::spawn(async move {
            turn.serve(rx).await;
            flag.store(false, Ordering::Release);
            let _ = done_tx.send(true);
        });
        if let Some(prompt) = spec.prompt {
            let _ = tx.send(Input::Prompt(prompt));
        }
        Ok(Box::new(ShellSession {
            tx,
            running,
            interrupted,
            done,
        }))
    }
}

#[async_trait]
impl ExecutorSession for ShellSession {
    async fn send_message(&self, text: &str) -> Result<()> {
        self.tx
            .send(Input::Prompt(text.to_owned()))
            .map_err(|_| Error::Closed("shell session"))
    }

    async fn interrupt(&self) -> Result<()> {
        self.interrupted.store(true, Ordering::Release);
        self.tx
            .send(Input::Interrupt)
            .map_err(|_| Error::Closed("shell session"))
    }

    async fn shutdown(&self) -> Result<()> {
        let _ = self.tx.send(Input::Shutdown);
        let _ = self.done.clone().wait_for(|d| *d).await;
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }
}

/// What plays the turns of one session.
struct Turn {
    script: PathBuf,
    history: PathBuf,
    id: String,
    spec: StartSpec,
    gate: DynApprovalGate,
    sink: DynEventSink,
    interrupted: Arc<AtomicBool>,
}

/// How a turn ended.
enum End {
    Done,
    Failed(String),
    Interrupted,
    Shutdown,
}

impl Turn {
    async fn serve(self, mut rx: mpsc::UnboundedReceiver<Input>) {
        let mut queued = std::collections::VecDeque::new();
        loop {
            let prompt = match queued.pop_front() {
                Some(p) => p,
                None => match rx.recv().await {
                    Some(Input::Prompt(p)) => p,
                    Some(Input::Interrupt) => continue,
                    Some(Input::Shutdown) | None => return,
                },
            };
            self.interrupted.store(false, Ordering::Release);
            let number = self.record(&prompt).await;
            let end = {
                let play = self.play(&prompt, number);
                tokio::pin!(play);
                loop {
                    tokio::select! {
                        end = &mut play => break end,
                        input = rx.recv() => match input {
                            Some(Input::Prompt(p)) => queued.push_back(p),
                            // With the flag clear, the interrupt was already
                            // seen (it ended the turn before): not this turn's.
                            Some(Input::Interrupt) if self.interrupted() => break End::Interrupted,
                            Some(Input::Interrupt) => {}
                            Some(Input::Shutdown) | None => break End::Shutdown,
                        },
                    }
                }
            };
            // A question the interrupt withdrew before it was shown lets
            // the script go on to its end before the interrupt is read.
            let end = match end {
                End::Done | End::Failed(_) if self.interrupted() => End::Interrupted,
                end => end,
            };
            // The script (and what it started) ended with `play`.
            if matches!(end, End::Interrupted | End::Shutdown) {
                self.withdraw_open().await;
            }
            let ended = match &end {
                End::Failed(why) => self.sink.emit(Event::Error(ErrorEvent {
                    message: why.clone(),
                    code: Some("script_failed".into()),
                    ..ErrorEvent::default()
                })),
                _ => self.sink.emit(Event::Result(TurnResult {
                    last_message_uuid: None,
                    subtype: Some("success".into()),
                    is_error: !matches!(end, End::Done),
                    duration_ms: None,
                    cost_usd: None,
                    usage: None,
                    num_turns: Some(1),
                    terminal_reason: Some(
                        if matches!(end, End::Done) {
                            "completed"
                        } else {
                            "interrupted"
                        }
                        .into(),
                    ),
                })),
            };
            if ended.await.is_err() || matches!(end, End::Shutdown) {
                return;
            }
        }
    }

    /// Appends `prompt` to the history; returns the turn's number.
    async fn record(&self, prompt: &str) -> usize {
        let before = tokio::fs::read_to_string(&self.history)
            .await
            .unwrap_or_default();
        let line = prompt.replace('\n', " ");
        if let Err(e) = tokio::fs::write(&self.history, format!("{before}{line}\n")).await {
            tracing::warn!(session = %self.id, error = %e, "history not written");
        }
        before.lines().count()
    }

    /// Whether an interrupt came since this turn started.
    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Acquire)
    }

    async fn withdraw_open(&self) {
        let Ok(pending) = self.gate.pending().await else {
            return;
        };
        for r in pending
            .iter()
            .filter(|r| r.session_id == self.spec.session_id)
        {
            let why = "the turn was interrupted";
            let by = DecidedBy::new("shell executor");
            let q = &r.question.question_id;
            let _ = withdraw(&self.gate, &*self.sink, q, why, by, now_ms()).await;
        }
    }

    async fn play(&self, prompt: &str, number: usize) -> End {
        let mut child = match tokio::process::Command::new("sh")
            .arg(&self.script)
            .arg(prompt)
            .current_dir(&self.spec.worktree)
            .env("TURN", number.to_string())
            .env("HISTORY", &self.history)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return End::Failed(format!("the script did not start: {e}")),
        };
        // Killing the group on every way out ends what the script started.
        let mut group = Group(child.id());
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return End::Failed("the script has no stdin or stdout".into());
        };
        let mut lines = BufReader::new(stdout).lines();
        let mut n = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            n += 1;
            let id = format!("{}-{number}-{n}", self.id);
            let (verb, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let reply = match verb {
                "say" => self.say(&id, rest).await.map(|()| None),
                "run" => self.run(&id, rest).await.map(Some),
                "ask" => self.ask_user(&id, rest).await.map(Some),
                "fail" => return End::Failed(rest.to_owned()),
                _ => Ok(None),
            };
            match reply {
                Ok(Some(reply)) => {
                    let _ = stdin.write_all(format!("{reply}\n").as_bytes()).await;
                }
                Ok(None) => {}
                Err(e) => return End::Failed(e.to_string()),
            }
        }
        let status = child.wait().await;
        group.0 = None;
        match status {
            Ok(status) if status.success() => End::Done,
            Ok(status) => End::Failed(format!("the script exited with {status}")),
            Err(e) => End::Failed(format!("the script was lost: {e}")),
        }
    }

    async fn say(&self, id: &str, text: &str) -> Result<()> {
        for phase in [AssistantPhase::Delta, AssistantPhase::Final] {
            let message = Assistant {
                message_id: format!("msg-{id}"),
                phase,
                text: text.to_owned(),
                aborted: false,
            };
            self.sink.emit(Event::Assistant(message)).await?;
        }
        Ok(())
    }

    /// A tool call: logged, asked, run if allowed. Returns the script's reply.
    async fn tool(
        &self,
        id: &str,
        name: &str,
        input: Value,
        kind: QuestionKind,
    ) -> Result<Decision> {
        let tool_use_id = format!("toolu-{id}");
        let call = ToolUse {
            tool_use_id: tool_use_id.clone(),
            name: name.into(),
            input,
            message_id: None,
        };
        self.sink.emit(Event::ToolUse(call)).await?;
        let question = UserQuestion {
            question_id: format!("q-{id}"),
            tool_use_id: Some(tool_use_id),
            kind,
        };
        let request = ApprovalRequest::new(self.spec.session_id.clone(), question, now_ms());
        Ok(
            match ask_unless(&self.gate, &*self.sink, request, || self.interrupted()).await? {
                Some(resolution) => resolution.decision,
                None => Decision::Cancelled {
                    reason: Some("the turn was interrupted".into()),
                },
            },
        )
    }

    async fn result(&self, id: &str, content: String, is_error: bool) -> Result<()> {
        let result = ToolResult {
            tool_use_id: format!("toolu-{id}"),
            content: Value::String(content),
            is_error,
        };
        self.sink.emit(Event::ToolResult(result)).await
    }

    async fn run(&self, id: &str, command: &str) -> Result<String> {
        let input = json!({ "command": command });
        let kind = QuestionKind::Permission {
            tool_name: "Bash".into(),
            input: input.clone(),
            description: None,
        };
        if !matches!(
            self.tool(id, "Bash", input, kind).await?,
            Decision::Allow { .. }
        ) {
            self.result(id, "denied".into(), true).await?;
            return Ok("denied".into());
        }
        let out = tokio::process::Command::new("sh")
            .args(["-c", command])
            .current_dir(&self.spec.worktree)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| Error::executor_from(format!("`{command}` did not start"), e))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        self.result(id, text, !out.status.success()).await?;
        Ok("ok".into())
    }

    async fn ask_user(&self, id: &str, spec: &str) -> Result<String> {
        let mut parts = spec.split('|');
        let question = parts.next().unwrap_or_default().to_owned();
        let options = parts
            .map(|o| AskOption {
                label: o.to_owned(),
                description: None,
            })
            .collect();
        let questions = vec![AskQuestion {
            question: question.clone(),
            header: None,
            options,
            multi_select: false,
        }];
        let input = json!({ "questions": questions });
        let kind = QuestionKind::AskUser { questions };
        match self.tool(id, "AskUserQuestion", input, kind).await? {
            Decision::Answered { answers } => {
                let answer = answers.get(&question).cloned().unwrap_or_default();
                self.result(id, answer.clone(), false).await?;
                Ok(answer)
            }
            _ => {
                self.result(id, "not answered".into(), true).await?;
                Ok(String::new())
            }
        }
    }
}

/// Kills a process group when dropped, unless its leader was reaped.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn now_ms() -> i64 {
    duraclaw_core::clock::Clock::now_ms(&duraclaw_core::clock::SystemClock)
}
