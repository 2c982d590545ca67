//! A minimal Agent Client Protocol client over a child's stdio: JSON-RPC
//! 2.0, one message a line. It records every `session/update`, answers
//! `session/request_permission` with the option the test chooses, and
//! refuses any other request of the agent. The real-agent tests drive the
//! pinned ACP agents with it (`tests/real_agents.rs`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The bound on any one answer of the agent.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// What the client answers a permission request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// The first option of kind `allow_once`.
    AllowOnce,
    /// The first option of kind `reject_once`.
    RejectOnce,
}

/// An agent process and the client's view of it.
pub struct Agent {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Every `session/update` notification's `update`, in order.
    pub updates: Vec<Value>,
    /// Every permission request's params, in order.
    pub permissions: Vec<Value>,
    /// How permission requests are answered.
    pub answer: Permission,
}

impl Agent {
    /// Spawns `program` with `args` in `cwd` with only `env` (and PATH,
    /// HOME) in its environment; its stderr goes to `log`.
    pub fn spawn(
        program: &Path,
        args: &[&str],
        cwd: &Path,
        env: &[(&str, String)],
        log: &Path,
    ) -> Agent {
        let mut c = Command::new(program);
        c.args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .kill_on_drop(true);
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Agent {
            child,
            stdin,
            lines,
            next_id: 1,
            updates: Vec::new(),
            permissions: Vec::new(),
            answer: Permission::AllowOnce,
        }
    }

    /// Runs an agents-file entry (`command`, `args`, `env`; see
    /// [`crate::real_agents`]) in `cwd`, its stderr to `log`.
    pub fn spawn_entry(entry: &Value, cwd: &Path, log: &Path) -> Agent {
        let command = Path::new(entry["command"].as_str().expect("command"));
        let args: Vec<&str> = entry["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let env: Vec<(&str, String)> = entry["env"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        Agent::spawn(command, &args, cwd, &env, log)
    }

    async fn write(&mut self, message: &Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Sends request `method` and returns its `result`, handling what the
    /// agent sends meanwhile; panics on an error answer or after
    /// [`DEADLINE`] without one.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        match self.try_request(method, params).await {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e}"),
        }
    }

    /// [`Agent::request`], an error answer as `Err`.
    pub async fn try_request(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let line = tokio::time::timeout_at(until, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within {DEADLINE:?}"))
                .unwrap()
                .unwrap_or_else(|| panic!("the agent closed its stdout before answering {method}"));
            let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                panic!("the agent wrote a line that is not JSON: {line}");
            };
            if msg.get("method").is_some() {
                self.incoming(msg).await;
                continue;
            }
            if msg["id"] == json!(id) {
                return match msg.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(msg["result"].clone()),
                };
            }
        }
    }

    async fn incoming(&mut self, msg: Value) {
        let method = msg["method"].as_str().unwrap_or_default().to_owned();
        match (method.as_str(), msg.get("id")) {
            ("session/update", None) => self.updates.push(msg["params"]["update"].clone()),
            ("session/request_permission", Some(id)) => {
                let id = id.clone();
                let want = match self.answer {
                    Permission::AllowOnce => "allow_once",
                    Permission::RejectOnce => "reject_once",
                };
                let option = msg["params"]["options"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|o| o["kind"] == want)
                    .and_then(|o| o["optionId"].as_str())
                    .unwrap_or_else(|| panic!("no {want} option in {msg}"))
                    .to_owned();
                self.permissions.push(msg["params"].clone());
                self.write(&json!({"jsonrpc": "2.0", "id": id,
                    "result": {"outcome": {"outcome": "selected", "optionId": option}}}))
                    .await;
            }
            (_, Some(id)) => {
                let id = id.clone();
                self.write(&json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32601, "message": format!("{method} is not offered")}}))
                    .await;
            }
            (_, None) => {}
        }
    }

    /// `initialize` with no client file system or terminal.
    pub async fn initialize(&mut self) -> Value {
        self.request(
            "initialize",
            json!({"protocolVersion": 1, "clientCapabilities":
                {"fs": {"readTextFile": false, "writeTextFile": false}, "terminal": false}}),
        )
        .await
    }

    /// `session/new` in `cwd`: the session id.
    pub async fn new_session(&mut self, cwd: &Path) -> String {
        let r = self
            .request(
                "session/new",
                json!({"cwd": cwd.display().to_string(), "mcpServers": []}),
            )
            .await;
        r["sessionId"].as_str().unwrap().to_owned()
    }

    /// `session/prompt` with `text`: its stop reason.
    pub async fn prompt(&mut self, session: &str, text: &str) -> String {
        let r = self
            .request(
                "session/prompt",
                json!({"sessionId": session, "prompt": [{"type": "text", "text": text}]}),
            )
            .await;
        r["stopReason"].as_str().unwrap_or_default().to_owned()
    }

    /// The text of every `agent_message_chunk` so far, joined.
    pub fn agent_text(&self) -> String {
        self.updates
            .iter()
            .filter(|u| u["sessionUpdate"] == "agent_message_chunk")
            .filter_map(|u| u["content"]["text"].as_str())
            .collect()
    }

    /// The `sessionUpdate` kinds so far, in order, repeats folded.
    pub fn kinds(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for u in &self.updates {
            let k = u["sessionUpdate"].as_str().unwrap_or("?").to_owned();
            if out.last() != Some(&k) {
                out.push(k);
            }
        }
        out
    }

    /// Kills the agent.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
