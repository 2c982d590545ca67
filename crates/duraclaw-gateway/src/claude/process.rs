//! The CLI process: its stdin and stdout, bounded line reading, the
//! watchdog that outlives a crashed gateway.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use duraclaw_core::Result;
use duraclaw_core::error::Error;
use duraclaw_core::protocol::{ErrorEvent, Event, MAX_EVENT_BYTES, MAX_FRAME_BYTES};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use super::approvals::{
    Next, act, register_ask, spawn_ask, standing_allow, swap_question, withdraw_all,
    withdrawn_meanwhile,
};
use super::{MAX_GARBAGE_LINES, STDERR_TAIL, Shared};
use crate::cli::{CliAction, CliInput};

pub(super) fn spawn_io(
    mut child: Child,
    shared: Arc<Shared>,
    mut stdin_rx: mpsc::UnboundedReceiver<CliInput>,
    done_tx: watch::Sender<bool>,
) -> Result<()> {
    let missing = || Error::executor("the CLI's pipes are missing");
    let mut stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let mut stderr = child.stderr.take().ok_or_else(missing)?;
    let watchdog = spawn_watchdog(&stdin, &shared);

    tokio::spawn(async move {
        while let Some(input) = stdin_rx.recv().await {
            // `to_line` ends with the newline.
            let line = input.to_line();
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
        // The watchdog holds the CLI's stdin too: it goes first (killed,
        // it kills nothing), so that dropping stdin tells the CLI to finish.
        if let Some(mut w) = watchdog {
            let _ = w.kill().await;
        }
        drop(stdin);
    });

    let err_shared = shared.clone();
    let err_reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut tail = err_shared.stderr.lock().unwrap_or_else(|p| p.into_inner());
            tail.extend(&buf[..n]);
            let excess = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..excess);
        }
    });

    let reader = tokio::spawn(read_stdout(shared.clone(), stdout));

    // The waiter owns the child, and with it the process's lifetime.
    tokio::spawn(async move {
        let status = child.wait().await;
        // Nothing more can be written to it: a message sent from now on
        // fails instead of vanishing into the pipe.
        shared.close_stdin();
        // Let the readers drain what the process wrote before it died: the
        // error below carries the end of its stderr.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = reader.await;
            let _ = err_reader.await;
        })
        .await;
        shared.running.store(false, Ordering::Release);
        shared.turn_running.store(false, Ordering::Release);
        // Nobody will answer control requests now.
        shared
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        withdraw_all(&shared, "the Claude Code process ended").await;
        // A process we stopped (whatever its status: closing stdin after a
        // failed turn exits 1, SIGTERM exits 143) is no news, nor is one
        // whose failed start `launch` reports itself.
        let news =
            shared.initialized.load(Ordering::Acquire) && !shared.stopping.load(Ordering::Acquire);
        let (outcome, code) = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                match (s.code(), s.signal()) {
                    (Some(c), _) => (
                        format!("the Claude Code process exited with status {c}"),
                        Some(c),
                    ),
                    (None, Some(sig)) => (
                        format!("the Claude Code process was killed by signal {sig}"),
                        Some(128 + sig),
                    ),
                    _ => ("the Claude Code process ended".to_owned(), None),
                }
            }
            Err(e) => (
                format!("cannot wait for the Claude Code process: {e}"),
                None,
            ),
        };
        if news {
            shared
                .emit_error(outcome.clone(), "executor_exited", code)
                .await;
        }
        tracing::info!(session = %shared.session_id, outcome, "Claude Code process ended");
        let _ = done_tx.send(true);
    });
    Ok(())
}

/// A process that SIGKILLs the CLI's process group if the gateway dies
/// without stopping it (SIGKILL, crash): a shell reading a pipe only the
/// gateway writes to, which kills the group when the pipe closes. It also
/// holds the CLI's stdin, so the CLI does not see it close first: a CLI
/// whose stdin closes finishes its turn on its own, denied every tool
/// call, calling the model again and writing to the transcript that the
/// next gateway resumes. Killed itself before the gateway closes stdin.
/// Without `/bin/sh` (or a process group) there is none, and a warning.
pub(super) fn spawn_watchdog(stdin: &tokio::process::ChildStdin, shared: &Shared) -> Option<Child> {
    use std::os::fd::AsFd;
    let pgid = shared.pgid?;
    let spawned = stdin.as_fd().try_clone_to_owned().and_then(|held| {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"read -r _ || kill -s KILL -- "-$1""#)
            .arg("duraclaw-cli-watchdog")
            .arg(pgid.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::from(held))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
    });
    match spawned {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::warn!(session = %shared.session_id, error = %e, "no watchdog for the Claude Code process: it would outlive a crashed gateway");
            None
        }
    }
}

/// The longest stdout line read whole; longer ones are skipped and reported.
pub(crate) const MAX_LINE_BYTES: usize = 8 * MAX_FRAME_BYTES;

/// One line of at most `max` bytes: `Ok(Some(Ok(line)))`, or
/// `Ok(Some(Err(len)))` for a longer line (consumed and dropped), or
/// `Ok(None)` at the end. Memory stays bounded whatever the CLI writes.
pub(crate) async fn next_line_bounded<R>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<std::result::Result<String, usize>>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut buf = Vec::new();
    let mut len = 0usize;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match len {
                0 => None,
                n if n > max => Some(Err(n)),
                _ => Some(Ok(String::from_utf8_lossy(&buf).into_owned())),
            });
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        len += take;
        if len <= max {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            buf = Vec::new();
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(if len > max {
                Err(len)
            } else {
                Ok(String::from_utf8_lossy(&buf).into_owned())
            }));
        }
    }
}

/// Makes an event fit in one frame: a huge tool result is cut with a note,
/// anything else too large becomes an error event saying so.
pub(crate) fn fit_to_frame(event: Event) -> Event {
    let size = match event.to_json() {
        Ok(j) => j.len(),
        Err(_) => return event,
    };
    if size <= MAX_EVENT_BYTES {
        return event;
    }
    match event {
        Event::ToolResult(mut r) => {
            let text = match &r.content {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let keep = MAX_EVENT_BYTES / 2;
            let mut cut = keep.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            r.content = Value::String(format!(
                "{}\n… [{} more bytes not shown: the result was larger than one frame]",
                &text[..cut],
                text.len() - cut
            ));
            Event::ToolResult(r)
        }
        other => Event::Error(ErrorEvent {
            message: format!(
                "a `{}` event of {size} bytes was larger than the {MAX_EVENT_BYTES}-byte limit and was not recorded",
                other.type_name()
            ),
            code: Some("event_too_large".into()),
            ..ErrorEvent::default()
        }),
    }
}

/// The next stdout line, or `None` when the CLI stayed silent for
/// `idle_timeout` while [`Shared::idle_matters`].
///
/// Whether the silence matters is looked at again whenever it may change
/// (a turn starts, a question is decided) while the read waits: a read
/// that began between turns, or while a human was deciding, must still time
/// out if the CLI then says nothing. The read itself is never cancelled
/// (a cancelled read would lose a partial line), except to give up.
pub(super) async fn next_line_watched<R>(
    shared: &Shared,
    reader: &mut R,
) -> Option<std::io::Result<Option<std::result::Result<String, usize>>>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let read = next_line_bounded(reader, MAX_LINE_BYTES);
    tokio::pin!(read);
    let mut since = tokio::time::Instant::now();
    loop {
        let idle = shared.idle_matters();
        tokio::select! {
            r = &mut read => return Some(r),
            () = shared.wake.notified() => since = tokio::time::Instant::now(),
            () = tokio::time::sleep_until(since + shared.config.idle_timeout), if idle => return None,
        }
    }
}

/// `d` for a message: whole seconds, or milliseconds below that.
pub(super) fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

pub(super) async fn read_stdout(shared: Arc<Shared>, stdout: tokio::process::ChildStdout) {
    let mut reader = BufReader::new(stdout);
    let mut garbage = 0u32;
    loop {
        let Some(next) = next_line_watched(&shared, &mut reader).await else {
            shared
                .emit_error(
                    format!(
                        "the Claude Code CLI wrote nothing for {} during a turn; it was stopped",
                        seconds(shared.config.idle_timeout)
                    ),
                    "executor_hung",
                    None,
                )
                .await;
            shared.stopping.store(true, Ordering::Release);
            shared.signal_group(nix::sys::signal::Signal::SIGKILL);
            return;
        };
        let line = match next {
            Ok(Some(Ok(l))) => l,
            Ok(Some(Err(len))) => {
                shared
                    .emit_error(
                        format!("the Claude Code CLI wrote a line of {len} bytes, over the {MAX_LINE_BYTES}-byte limit; it was skipped"),
                        "executor_line_too_long",
                        None,
                    )
                    .await;
                continue;
            }
            Ok(None) | Err(_) => return,
        };
        if line.trim().is_empty() {
            continue;
        }
        let mapped = {
            let mut mapper = shared.mapper.lock().unwrap_or_else(|p| p.into_inner());
            mapper.feed_line(&line)
        };
        let mapped = match mapped {
            Ok(m) => {
                garbage = 0;
                m
            }
            Err(e) => {
                garbage += 1;
                shared
                    .emit_error(e.to_string(), "executor_garbage", None)
                    .await;
                if garbage >= MAX_GARBAGE_LINES {
                    shared
                        .emit_error(
                            format!("the Claude Code CLI wrote {garbage} lines that are not JSON in a row; it was stopped"),
                            "executor_garbage",
                            None,
                        )
                        .await;
                    shared.stopping.store(true, Ordering::Release);
                    shared.signal_group(nix::sys::signal::Signal::SIGKILL);
                    return;
                }
                continue;
            }
        };
        // Questions go to the gate before they are emitted; the rest of the
        // actions follow the events. A call an approval rule decides, or one
        // allowed "for this session" before, is not asked: a notice takes
        // the question's place.
        let mut events = mapped.events;
        let mut actions = Vec::with_capacity(mapped.actions.len());
        for action in mapped.actions {
            actions.push(match action {
                CliAction::AskGate {
                    request_id,
                    question,
                    input,
                } => match standing_allow(&shared, &question).await {
                    Some((notice, decision)) => {
                        swap_question(&mut events, &question.question_id, notice);
                        shared
                            .mapper
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .answered(&request_id);
                        Next::Act(CliAction::Send(CliInput::for_decision(
                            &request_id,
                            &input,
                            &decision,
                        )))
                    }
                    None => {
                        let ask = register_ask(&shared, request_id, question, input).await;
                        let id = ask.request_id();
                        if withdrawn_meanwhile(&shared, &id).await {
                            // An interrupt took the request while the gate
                            // looked it up: never shown, never asked.
                            events.retain(
                                |e| !matches!(e, Event::UserQuestion(q) if q.question_id == id),
                            );
                            continue;
                        }
                        Next::Ask(ask)
                    }
                },
                other => Next::Act(other),
            });
        }
        for event in events {
            if matches!(event, Event::Result(_)) {
                shared.turn_running.store(false, Ordering::Release);
            }
            shared.emit(fit_to_frame(event)).await;
        }
        for action in actions {
            match action {
                Next::Act(action) => act(&shared, action).await,
                Next::Ask(ask) => spawn_ask(&shared, ask),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let data = format!("short\n{}\nafter\nlast", "x".repeat(100));
        let mut r = BufReader::with_capacity(7, data.as_bytes());
        assert_eq!(
            next_line_bounded(&mut r, 50).await.unwrap(),
            Some(Ok("short".into()))
        );
        assert_eq!(next_line_bounded(&mut r, 50).await.unwrap(), Some(Err(100)));
        assert_eq!(
            next_line_bounded(&mut r, 50).await.unwrap(),
            Some(Ok("after".into()))
        );
        assert_eq!(
            next_line_bounded(&mut r, 50).await.unwrap(),
            Some(Ok("last".into()))
        );
        assert_eq!(next_line_bounded(&mut r, 50).await.unwrap(), None);
    }

    #[test]
    fn huge_tool_results_are_cut_to_fit() {
        let big = Event::ToolResult(duraclaw_core::protocol::ToolResult {
            tool_use_id: "t".into(),
            content: Value::String("é".repeat(MAX_FRAME_BYTES)),
            is_error: false,
        });
        let fitted = fit_to_frame(big);
        let json = fitted.to_json().unwrap();
        assert!(json.len() <= MAX_EVENT_BYTES);
        assert!(json.contains("more bytes not shown"));
        let small = Event::Error(ErrorEvent {
            message: "x".into(),
            ..ErrorEvent::default()
        });
        assert_eq!(fit_to_frame(small.clone()), small);
    }
}
