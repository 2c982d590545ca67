//! Reading the agent: its lines sorted and served, its updates mapped, and
//! the watch for an agent that stops writing.

use super::approvals::{check_runs, elicit, permission};
use super::*;

/// Kills an agent that says nothing for the idle timeout while it should.
pub(super) async fn watchdog(shared: Arc<Shared>) {
    let idle = shared.limits.idle_timeout;
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if !shared.running.load(Ordering::Acquire) || shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let quiet = shared
            .last_activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if shared.turn_running.load(Ordering::Acquire)
            && shared.awaiting.load(Ordering::Acquire) == 0
            && quiet > idle
        {
            shared
                .emit_error(
                    format!(
                        "agent `{}` wrote nothing for {} ms during a turn; it was stopped",
                        shared.agent.name,
                        idle.as_millis()
                    ),
                    "executor_hung",
                    None,
                )
                .await;
            shared.kill_now();
            return;
        }
    }
}

pub(super) async fn read_stdout(shared: Arc<Shared>, stdout: tokio::process::ChildStdout) {
    let mut reader = BufReader::new(stdout);
    let mut garbage = 0u32;
    loop {
        let line = match next_line_bounded(&mut reader, MAX_LINE_BYTES).await {
            Ok(Some(Ok(l))) => l,
            Ok(Some(Err(len))) => {
                shared
                    .emit_error(
                        format!("agent `{}` wrote a line of {len} bytes, over the {MAX_LINE_BYTES}-byte limit; it was skipped", shared.agent.name),
                        "executor_line_too_long",
                        None,
                    )
                    .await;
                continue;
            }
            Ok(None) | Err(_) => return,
        };
        shared.touch();
        if line.trim().is_empty() {
            continue;
        }
        match rpc::parse_line(&line) {
            Ok(message) => {
                garbage = 0;
                if !handle(&shared, message).await {
                    return;
                }
            }
            Err(why) => {
                garbage += 1;
                tracing::warn!(session = %shared.session_id, agent = %shared.agent.name, why, "agent wrote garbage");
                if garbage == 1 {
                    shared
                        .emit_error(
                            format!(
                                "agent `{}` wrote a line that is no ACP message: {why}",
                                shared.agent.name
                            ),
                            "executor_garbage",
                            None,
                        )
                        .await;
                }
                if garbage >= MAX_GARBAGE_LINES {
                    shared
                        .emit_error(
                            format!("agent `{}` wrote {garbage} lines in a row that are no ACP messages; it was stopped", shared.agent.name),
                            "executor_garbage",
                            None,
                        )
                        .await;
                    shared.kill_now();
                    return;
                }
            }
        }
    }
}

/// Handles one message; `false` when the session ended on it.
pub(super) async fn handle(shared: &Arc<Shared>, message: Incoming) -> bool {
    match message {
        Incoming::Response { id, result } => shared.rpc.deliver(id, result),
        Incoming::Notification { method, params } => {
            if method == "session/update" {
                return session_update(shared, params).await;
            }
            tracing::debug!(session = %shared.session_id, method, "an ACP notification ignored");
        }
        Incoming::Request { id, method, params } => {
            if shared.ended.load(Ordering::Acquire) {
                return false;
            }
            match method.as_str() {
                "session/request_permission" => permission(shared, id, params).await,
                "elicitation/create" => elicit(shared, id, params).await,
                "fs/read_text_file" => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let r = client::read_text_file(&shared.worktree, params).await;
                        shared.rpc.respond(&id, r);
                    });
                }
                "fs/write_text_file" => {
                    let target = client::write_target(&shared.worktree, &params)
                        .and_then(|t| covered(shared, "write a file").map(|()| t));
                    match target {
                        Ok((path, content)) => {
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                let r = client::write_text_file(&path, &content).await;
                                shared.rpc.respond(&id, r);
                            });
                        }
                        Err(e) => shared.rpc.respond(&id, Err(e)),
                    }
                }
                "terminal/create" => {
                    let r = covered(shared, "run a command")
                        .and_then(|()| shared.terminals.create(params));
                    shared.rpc.respond(&id, r);
                }
                "terminal/output" => shared.rpc.respond(&id, shared.terminals.output(params)),
                "terminal/kill" => shared.rpc.respond(&id, shared.terminals.kill(params)),
                "terminal/release" => shared.rpc.respond(&id, shared.terminals.release(params)),
                "terminal/wait_for_exit" => {
                    let shared = shared.clone();
                    shared.waiting();
                    tokio::spawn(async move {
                        let r = shared.terminals.wait_for_exit(params).await;
                        shared.waited();
                        shared.rpc.respond(&id, r);
                    });
                }
                other => {
                    tracing::debug!(session = %shared.session_id, method = other, "an ACP request we do not serve");
                    shared.rpc.respond(
                        &id,
                        Err(RpcError {
                            code: METHOD_NOT_FOUND,
                            message: format!("`{other}` is not served by this client"),
                        }),
                    );
                }
            }
        }
    }
    true
}

/// Whether a tool call that a decision allowed runs now (it may `what`).
pub(super) fn covered(shared: &Shared, what: &str) -> std::result::Result<(), RpcError> {
    let map = shared.map.lock().unwrap_or_else(|p| p.into_inner());
    if map.calls.values().any(|c| c.allowed && !c.done) {
        return Ok(());
    }
    tracing::warn!(session = %shared.session_id, agent = %shared.agent.name, what, "refused: no allowed tool call runs");
    Err(RpcError {
        code: rpc::INVALID_PARAMS,
        message: format!(
            "permission denied: no allowed tool call covers a request to {what}; ask first"
        ),
    })
}

pub(super) async fn session_update(shared: &Arc<Shared>, params: Value) -> bool {
    if shared.replaying.load(Ordering::Acquire) {
        return true;
    }
    let note: SessionNotification = match serde_json::from_value(params) {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(session = %shared.session_id, error = %e, "an ACP update we do not know");
            return true;
        }
    };
    let outs = shared
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .update(note.update);
    shared.announced.notify_waiters();
    for out in outs {
        match out {
            Out::Emit(e) => shared.emit(e).await,
            Out::Runs(id) => {
                if !check_runs(shared, &id).await {
                    return false;
                }
            }
        }
    }
    true
}
