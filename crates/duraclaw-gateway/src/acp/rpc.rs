//! JSON-RPC 2.0 over newline-delimited stdio, both ways: our requests to
//! the agent (each waits for its response, bounded where asked), the
//! agent's requests to us (answered with [`Peer::respond`]), and
//! notifications.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use duraclaw_core::Result;
use duraclaw_core::error::Error;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// An error the agent answered a request with.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RpcError {
    pub code: i64,
    pub message: String,
}

/// JSON-RPC's "method not found".
pub(super) const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC's "invalid params".
pub(super) const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC's "internal error".
pub(super) const INTERNAL_ERROR: i64 = -32603;

type Waiter = oneshot::Sender<std::result::Result<Value, RpcError>>;

/// Our end of the connection.
#[derive(Debug, Default)]
pub(super) struct Peer {
    out: Mutex<Option<mpsc::UnboundedSender<String>>>,
    pending: Mutex<HashMap<u64, Waiter>>,
    next: AtomicU64,
}

/// One line the agent wrote, sorted.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A request to us: answer it with [`Peer::respond`].
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    /// The answer to one of our requests (delivered by [`Peer::deliver`]).
    Response {
        id: u64,
        result: std::result::Result<Value, RpcError>,
    },
}

/// Sorts one line; `Err` says why it is no JSON-RPC message.
pub(super) fn parse_line(line: &str) -> std::result::Result<Incoming, String> {
    let value: Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {}", shown(line)))?;
    let Value::Object(mut obj) = value else {
        return Err(format!("not a JSON-RPC object: {}", shown(line)));
    };
    let method = obj.remove("method");
    let id = obj.remove("id");
    match (method, id) {
        (Some(Value::String(method)), Some(id)) if !id.is_null() => Ok(Incoming::Request {
            id,
            method,
            params: obj.remove("params").unwrap_or(Value::Null),
        }),
        (Some(Value::String(method)), _) => Ok(Incoming::Notification {
            method,
            params: obj.remove("params").unwrap_or(Value::Null),
        }),
        (None, Some(id)) => {
            let Some(id) = id.as_u64() else {
                return Err(format!(
                    "a response to a request we never sent: {}",
                    shown(line)
                ));
            };
            let result = match (obj.remove("result"), obj.remove("error")) {
                (_, Some(err)) if !err.is_null() => Err(RpcError {
                    code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: match err.get("message").and_then(Value::as_str) {
                        Some(m) => m.to_owned(),
                        None => err.to_string(),
                    },
                }),
                (Some(result), _) => Ok(result),
                (None, _) => return Err(format!("a response with no result: {}", shown(line))),
            };
            Ok(Incoming::Response { id, result })
        }
        _ => Err(format!("not a JSON-RPC message: {}", shown(line))),
    }
}

/// At most 300 characters of `line`, saying how long it was when cut.
pub(super) fn shown(line: &str) -> String {
    const KEEP: usize = 300;
    match line.char_indices().nth(KEEP) {
        None => line.to_owned(),
        Some((at, _)) => format!("{}… ({} bytes in all)", &line[..at], line.len()),
    }
}

impl Peer {
    /// A peer writing its lines (each without the newline) to `out`.
    pub(super) fn new(out: mpsc::UnboundedSender<String>) -> Self {
        Peer {
            out: Mutex::new(Some(out)),
            pending: Mutex::default(),
            next: AtomicU64::new(1),
        }
    }

    fn write(&self, message: &Value) -> Result<()> {
        let out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.as_ref()
            .and_then(|tx| tx.send(message.to_string()).ok())
            .ok_or_else(|| Error::executor("the agent's process is not running"))
    }

    /// Sends a notification.
    pub(super) fn notify(&self, method: &str, params: Value) -> Result<()> {
        self.write(&json!({ "jsonrpc": "2.0", "method": method, "params": params }))
    }

    /// Sends a request and waits for its response, at most `timeout` when
    /// given. An error the agent answered is `Ok(Err(..))`.
    pub(super) async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<std::result::Result<Value, RpcError>> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let sent = self.write(&json!({
            "jsonrpc": "2.0", "id": id, "method": method, "params": params
        }));
        if let Err(e) = sent {
            self.forget(id);
            return Err(e);
        }
        let answer = match timeout {
            None => rx.await,
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(a) => a,
                Err(_) => {
                    self.forget(id);
                    return Err(Error::Timeout {
                        what: "the agent to answer a request",
                        ms: u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
                    });
                }
            },
        };
        answer.map_err(|_| {
            Error::executor(format!(
                "the agent's process ended before it answered `{method}`"
            ))
        })
    }

    fn forget(&self, id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Hands a response to the request waiting for it.
    pub(super) fn deliver(&self, id: u64, result: std::result::Result<Value, RpcError>) {
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match waiter {
            Some(w) => {
                let _ = w.send(result);
            }
            None => tracing::debug!(id, "a response nobody waits for"),
        }
    }

    /// Answers the agent's request `id`.
    pub(super) fn respond(&self, id: &Value, result: std::result::Result<Value, RpcError>) {
        let message = match result {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(e) => json!({
                "jsonrpc": "2.0", "id": id,
                "error": { "code": e.code, "message": e.message },
            }),
        };
        if self.write(&message).is_err() {
            tracing::debug!("an answer to an agent that is gone");
        }
    }

    /// Closes our side: what is queued is still written, then the agent's
    /// stdin closes; every request still waiting fails.
    pub(super) fn close(&self) {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_sorted() {
        assert!(matches!(
            parse_line(r#"{"jsonrpc":"2.0","id":3,"method":"fs/read_text_file","params":{}}"#),
            Ok(Incoming::Request { method, .. }) if method == "fs/read_text_file"
        ));
        assert!(matches!(
            parse_line(r#"{"jsonrpc":"2.0","method":"session/update","params":{}}"#),
            Ok(Incoming::Notification { .. })
        ));
        assert!(matches!(
            parse_line(r#"{"jsonrpc":"2.0","id":4,"result":null}"#),
            Ok(Incoming::Response {
                id: 4,
                result: Ok(Value::Null)
            })
        ));
        assert!(matches!(
            parse_line(r#"{"jsonrpc":"2.0","id":5,"error":{"code":-1,"message":"no"}}"#),
            Ok(Incoming::Response {
                id: 5,
                result: Err(RpcError { code: -1, .. })
            })
        ));
        assert!(parse_line("hello").is_err());
        assert!(parse_line("[1,2]").is_err());
        let long = "x".repeat(1000);
        let why = parse_line(&long).unwrap_err();
        assert!(why.contains("1000 bytes in all"), "{why}");
    }
}
