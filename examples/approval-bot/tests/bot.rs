#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The real `approval-bot` binary, driven over its stdout, stdin and HTTP
//! endpoint. Every wait has a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous: a debug build on a busy two-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

struct Bot {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    /// `taken[i]`: `seen[i]` was returned by `wait_for`.
    taken: Vec<bool>,
    addr: SocketAddr,
}

impl Bot {
    fn start(data_dir: &Path, extra: &[&str]) -> Bot {
        let mut child = Command::new(env!("CARGO_BIN_EXE_approval-bot"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--port", "0"])
            .args(extra)
            .env_remove("USER")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut bot = Bot {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            taken: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let listening = bot.wait_for("LISTENING ");
        bot.addr = listening
            .trim_start_matches("LISTENING http://")
            .parse()
            .unwrap();
        assert!(bot.addr.ip().is_loopback(), "{listening}");
        bot
    }

    /// The first line starting with `prefix` not returned before, already
    /// seen or still to come (output of concurrent tasks interleaves), or a
    /// panic showing all output.
    fn wait_for(&mut self, prefix: &str) -> String {
        if let Some(i) =
            (0..self.seen.len()).find(|&i| !self.taken[i] && self.seen[i].starts_with(prefix))
        {
            self.taken[i] = true;
            return self.seen[i].clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let wanted = line.starts_with(prefix);
                    self.seen.push(line.clone());
                    self.taken.push(wanted);
                    if wanted {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line {prefix:?} within {DEADLINE:?}; saw:\n{}",
                        self.seen.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "stdout closed before {prefix:?}; saw:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Reads to the end of stdout, then waits for the exit.
    fn finish(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line);
                    self.taken.push(false);
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the bot did not finish; saw:\n{}", self.seen.join("\n"))
                }
            }
        }
        // stdout is closed, so the process is exiting; bounded poll for it.
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the bot closed stdout but did not exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn saw(&self, prefix: &str) -> Vec<&String> {
        self.seen.iter().filter(|l| l.starts_with(prefix)).collect()
    }

    fn get(&self, path: &str) -> (u16, Value) {
        http(self.addr, "GET", path, "")
    }

    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        http(self.addr, "POST", path, body)
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`; the status and JSON body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, payload) = response.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let json = serde_json::from_str(payload)
        .unwrap_or_else(|e| panic!("{method} {path}: body {payload:?} is not JSON: {e}"));
    (status, json)
}

fn pending_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn policy_answers_reads_and_deletes_and_http_answers_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut bot = Bot::start(dir.path(), &[]);

    assert!(bot.wait_for("ALLOWED read-config").contains("by policy"));
    bot.wait_for("DONE read-config");
    let denied = bot.wait_for("DENIED rm-build");
    assert!(denied.contains("by policy"), "{denied}");
    assert!(denied.contains("recursive deletes"), "{denied}");
    assert!(bot.saw("DONE rm-build").is_empty());

    bot.wait_for("PENDING cargo-test");
    let (status, list) = bot.get("/pending");
    assert_eq!(status, 200);
    assert_eq!(pending_ids(&list), vec!["cargo-test"]);
    assert_eq!(list[0]["tool"], "Bash");
    assert_eq!(list[0]["input"]["command"], "cargo test");

    let (status, body) = bot.post("/decide/cargo-test", "not json");
    assert_eq!(status, 400, "{body}");
    let (status, body) = bot.post("/decide/cargo-test", r#"{"decision":"expired"}"#);
    assert_eq!(status, 400, "{body}");
    let (status, body) = bot.post("/decide/no-such-action", r#"{"decision":"allow"}"#);
    assert_eq!(status, 404, "{body}");

    let (status, body) = bot.post("/decide/cargo-test", r#"{"decision":"allow","by":"alice"}"#);
    assert_eq!((status, body["outcome"].as_str()), (200, Some("decided")));
    assert!(bot.wait_for("ALLOWED cargo-test").contains("by alice"));
    bot.wait_for("DONE cargo-test");

    // First answer wins; a late one is refused and says who was first.
    let (status, body) = bot.post(
        "/decide/cargo-test",
        r#"{"decision":"deny","reason":"late"}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["first"]["by"]["who"], "alice");

    bot.wait_for("PENDING deploy-prod");
    let (status, _) = bot.post(
        "/decide/deploy-prod",
        r#"{"decision":"deny","reason":"not on a Friday"}"#,
    );
    assert_eq!(status, 200);
    let denied = bot.wait_for("DENIED deploy-prod");
    assert!(denied.contains("by http: not on a Friday"), "{denied}");
    bot.wait_for("FINISHED");
    assert!(bot.finish().success());
    assert!(bot.saw("DONE deploy-prod").is_empty());

    // One audit line per decision, human ones with the client.
    let audit = bot.saw("AUDIT decided ");
    assert_eq!(audit.len(), 4, "{audit:?}");
    assert!(audit.iter().any(|l| l.contains("cargo-test")
        && l.contains("who=alice")
        && l.contains("http 127.0.0.1")));
    assert_eq!(bot.saw("AUDIT refused cargo-test").len(), 1);
    let jsonl = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let decided = jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "decided")
        .count();
    assert_eq!(decided, 4);
}

#[test]
fn terminal_commands_answer_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut bot = Bot::start(dir.path(), &[]);
    bot.wait_for("PENDING cargo-test");
    bot.type_line("pending");
    assert!(bot.wait_for("REPLY pending").contains("cargo-test"));
    bot.type_line("approve no-such-action");
    assert!(bot.wait_for("REPLY").contains("no such approval request"));
    bot.type_line("approve cargo-test");
    assert!(bot.wait_for("REPLY cargo-test").contains("decided"));
    let allowed = bot.wait_for("ALLOWED cargo-test");
    assert!(allowed.contains("by operator"), "{allowed}");
    bot.wait_for("DONE cargo-test");
    bot.wait_for("PENDING deploy-prod");
    bot.type_line("deny deploy-prod the release is frozen");
    let denied = bot.wait_for("DENIED deploy-prod");
    assert!(denied.contains("the release is frozen"), "{denied}");
    bot.wait_for("FINISHED");
    assert!(bot.finish().success());
    assert!(
        bot.saw("AUDIT decided cargo-test")[0].contains("client=\"terminal\""),
        "{:?}",
        bot.seen
    );
}

#[test]
fn a_pending_request_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Bot::start(dir.path(), &[]);
    first.wait_for("PENDING cargo-test");
    first.kill();

    let mut second = Bot::start(dir.path(), &[]);
    let (status, list) = second.get("/pending");
    assert_eq!(status, 200);
    assert_eq!(pending_ids(&list), vec!["cargo-test"]);
    let (status, _) = second.post("/decide/cargo-test", r#"{"decision":"allow","by":"bob"}"#);
    assert_eq!(status, 200);
    assert!(second.wait_for("ALLOWED cargo-test").contains("by bob"));
    second.wait_for("DONE cargo-test");
    second.wait_for("PENDING deploy-prod");
    let (status, _) = second.post("/decide/deploy-prod", r#"{"decision":"allow"}"#);
    assert_eq!(status, 200);
    second.wait_for("DONE deploy-prod");
    second.wait_for("FINISHED");
    assert!(second.finish().success());
    // The request was asked once, before the restart, and never again.
    assert!(second.saw("AUDIT requested cargo-test").is_empty());
}

#[test]
fn a_decision_made_before_a_restart_is_honoured_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Bot::start(dir.path(), &[]);
    first.wait_for("PENDING cargo-test");
    let (status, _) = first.post(
        "/decide/cargo-test",
        r#"{"decision":"deny","reason":"flaky"}"#,
    );
    assert_eq!(status, 200);
    first.wait_for("PENDING deploy-prod");
    first.kill();

    let mut second = Bot::start(dir.path(), &[]);
    let denied = second.wait_for("DENIED cargo-test");
    assert!(denied.contains("decided before this run"), "{denied}");
    assert!(denied.contains("flaky"), "{denied}");
    let (_, list) = second.get("/pending");
    assert_eq!(pending_ids(&list), vec!["deploy-prod"]);
    second.type_line("approve deploy-prod");
    second.wait_for("DONE deploy-prod");
    assert!(second.finish().success());
}

#[test]
fn unanswered_requests_expire_and_are_never_called_denied() {
    let dir = tempfile::tempdir().unwrap();
    let mut bot = Bot::start(dir.path(), &["--timeout-secs", "1"]);
    let expired = bot.wait_for("EXPIRED cargo-test");
    assert!(expired.contains("within 1 s"), "{expired}");
    bot.wait_for("EXPIRED deploy-prod");
    bot.wait_for("FINISHED");
    assert!(bot.finish().success());
    for line in &bot.seen {
        if line.contains("cargo-test") || line.contains("deploy-prod") {
            assert!(!line.to_lowercase().contains("denied"), "{line}");
            assert!(!line.starts_with("DONE"), "{line}");
        }
    }
    let audit = bot.saw("AUDIT decided cargo-test");
    assert!(
        audit[0].contains("decision=expired who=timeout"),
        "{audit:?}"
    );
}

#[test]
fn rules_come_from_a_file_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"[{"tool":"Deploy","action":"deny","reason":"deploys go through CI"},
            {"tool":"*","action":"allow"}]"#,
    )
    .unwrap();
    let mut bot = Bot::start(
        &dir.path().join("data"),
        &["--rules", rules.to_str().unwrap()],
    );
    bot.wait_for("DONE rm-build");
    bot.wait_for("DONE cargo-test");
    assert!(
        bot.wait_for("DENIED deploy-prod")
            .contains("deploys go through CI")
    );
    assert!(bot.finish().success());
    assert!(bot.saw("PENDING").is_empty());
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    let dir = tempfile::tempdir().unwrap();
    let bad_rules = dir.path().join("bad.json");
    std::fs::write(&bad_rules, "{").unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec![], 2, "--data-dir is required"),
        (
            vec!["--data-dir", data, "--port", "http"],
            2,
            "not a port number",
        ),
        (
            vec!["--data-dir", data, "--timeout-secs", "0"],
            2,
            "at least 1",
        ),
        (vec!["--data-dir"], 2, "needs a value"),
        (
            vec!["--data-dir", data, "--frobnicate"],
            2,
            "unknown argument",
        ),
        (
            vec!["--data-dir", data, "--rules", bad_rules.to_str().unwrap()],
            1,
            "not a JSON array of rules",
        ),
    ];
    for (args, code, says) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_approval-bot"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
