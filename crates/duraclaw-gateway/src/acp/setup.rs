//! Starting an agent: `initialize`, the session opened or loaded (and the
//! history a load replays let settle), its modes and models.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agent_client_protocol::v1::schema::{InitializeResponse, NewSessionResponse};
use duraclaw_core::Result;
use duraclaw_core::error::Error;
use duraclaw_core::executor::StartSpec;
use duraclaw_core::protocol::Notice;
use serde_json::{Value, json};

use super::{NOTICE_AGENT_RESUMED_FRESH, Shared};

/// `initialize`'s params: protocol v1; we serve file reads and writes,
/// terminals and form elicitations.
pub(super) fn initialize_params() -> Value {
    json!({
        "protocolVersion": 1,
        "clientCapabilities": {
            "fs": { "readTextFile": true, "writeTextFile": true },
            "terminal": true,
            "elicitation": { "form": {} },
        },
        "clientInfo": { "name": "duraclaw", "version": env!("CARGO_PKG_VERSION") },
    })
}

/// `session/set_config_option`'s params choosing `model`.
pub(super) fn set_model_params(session: &str, config_id: &str, model: &str) -> Value {
    json!({ "sessionId": session, "configId": config_id, "value": model })
}

/// Initializes the agent and opens (or loads) its session. Returns the
/// notice of a resume that started fresh, and the agent's version.
pub(super) async fn setup(
    shared: &Arc<Shared>,
    spec: &StartSpec,
) -> Result<(Option<Notice>, Option<String>)> {
    let timeout = Some(shared.limits.request_timeout);
    let init = request(shared, "initialize", initialize_params(), timeout).await?;
    let init: InitializeResponse = serde_json::from_value(init)
        .map_err(|e| Error::executor_from("the agent's answer to `initialize`", e))?;
    let version = init
        .agent_info
        .as_ref()
        .map(|i| format!("{} {}", i.name, i.version));
    let cwd = shared.worktree.display().to_string();
    let mut fresh = None;
    if let Some(resume) = &spec.resume {
        if init.agent_capabilities.load_session {
            shared.replaying.store(true, Ordering::Release);
            let loaded = request(
                shared,
                "session/load",
                json!({ "sessionId": resume, "cwd": cwd, "mcpServers": [] }),
                timeout,
            )
            .await;
            match loaded {
                Ok(v) => {
                    *shared.acp_session.lock().unwrap_or_else(|p| p.into_inner()) = resume.clone();
                    take_session_options(shared, &v);
                    return Ok((None, version));
                }
                Err(e) => {
                    shared.replaying.store(false, Ordering::Release);
                    fresh = Some(format!(
                        "Agent `{}` could not load its session {resume} ({e}), so a new one started: \
                         the agent does not see the earlier conversation.",
                        shared.agent.name
                    ));
                }
            }
        } else {
            fresh = Some(format!(
                "Agent `{}` cannot load an earlier session, so a new one started: \
                 the agent does not see the earlier conversation.",
                shared.agent.name
            ));
        }
    }
    let created = request(
        shared,
        "session/new",
        json!({ "cwd": cwd, "mcpServers": [] }),
        timeout,
    )
    .await?;
    take_session_options(shared, &created);
    let created: NewSessionResponse = serde_json::from_value(created)
        .map_err(|e| Error::executor_from("the agent's answer to `session/new`", e))?;
    *shared.acp_session.lock().unwrap_or_else(|p| p.into_inner()) =
        created.session_id.0.to_string();
    if let Some(mode) = &spec.permission_mode
        && shared
            .modes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(mode)
    {
        set_mode(shared, mode).await?;
    }
    if let Some(model) = &spec.model {
        let option = shared
            .model_option
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match option {
            Some((config_id, values)) if values.contains(model) => {
                set_model(shared, &config_id, model).await?;
            }
            _ => {
                tracing::warn!(session = %shared.session_id, agent = %shared.agent.name, model, "the agent offers no such model; it uses its own")
            }
        }
    }
    if let Some(why) = &fresh {
        tracing::warn!(session = %shared.session_id, agent = %shared.agent.name, "{why}");
    }
    let notice = fresh.map(|why| Notice::new(NOTICE_AGENT_RESUMED_FRESH, why));
    Ok((notice, version))
}

/// Our request `method`; an error the agent answered is an error here.
pub(super) async fn request(
    shared: &Shared,
    method: &str,
    params: Value,
    timeout: Option<Duration>,
) -> Result<Value> {
    match shared.rpc.request(method, params, timeout).await? {
        Ok(v) => Ok(v),
        Err(e) => Err(Error::executor(format!(
            "the agent refused `{method}`: {} (code {})",
            e.message, e.code
        ))),
    }
}

/// Keeps the modes and the model choice a new or loaded session offers.
pub(super) fn take_session_options(shared: &Shared, answer: &Value) {
    if let Some(modes) = answer.get("modes") {
        let ids: Vec<String> = modes
            .get("availableModes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        *shared.modes.lock().unwrap_or_else(|p| p.into_inner()) = ids;
        if let Some(current) = modes.get("currentModeId").and_then(Value::as_str) {
            shared
                .map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_mode(current);
        }
    }
    let model = answer
        .get("configOptions")
        .and_then(Value::as_array)
        .and_then(|opts| {
            opts.iter()
                .find(|o| o.get("category").and_then(Value::as_str) == Some("model"))
        })
        .and_then(|o| {
            let id = o.get("id")?.as_str()?.to_owned();
            let mut values = Vec::new();
            for entry in o.get("options")?.as_array()? {
                match entry.get("options").and_then(Value::as_array) {
                    // A group of options.
                    Some(group) => values.extend(
                        group
                            .iter()
                            .filter_map(|v| v.get("value").and_then(Value::as_str))
                            .map(str::to_owned),
                    ),
                    None => values.extend(
                        entry
                            .get("value")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    ),
                }
            }
            Some((id, values))
        });
    if model.is_some() {
        *shared
            .model_option
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = model;
    }
}

pub(super) async fn set_mode(shared: &Shared, mode: &str) -> Result<()> {
    request(
        shared,
        "session/set_mode",
        json!({ "sessionId": shared.acp_session(), "modeId": mode }),
        Some(shared.limits.request_timeout),
    )
    .await?;
    shared
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_mode(mode);
    Ok(())
}

pub(super) async fn set_model(shared: &Shared, config_id: &str, model: &str) -> Result<()> {
    request(
        shared,
        "session/set_config_option",
        set_model_params(&shared.acp_session(), config_id, model),
        Some(shared.limits.request_timeout),
    )
    .await?;
    Ok(())
}

/// How long a loaded agent must be quiet before its first prompt: what it
/// sent until then is the replay of its history.
const REPLAY_QUIET: Duration = Duration::from_millis(200);
/// The longest the first prompt after a load waits for that quiet.
const REPLAY_BOUND: Duration = Duration::from_secs(5);

/// Waits (bounded) until a loaded agent has written nothing for
/// [`REPLAY_QUIET`]: agents that replay after the load's answer are done.
pub(super) async fn replay_settled(shared: &Shared) {
    let start = Instant::now();
    loop {
        let quiet = shared
            .last_activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if quiet >= REPLAY_QUIET || start.elapsed() >= REPLAY_BOUND {
            return;
        }
        tokio::time::sleep(REPLAY_QUIET - quiet).await;
    }
}
