#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Abuse of the whole `duraclaw up` on 127.0.0.1: secrets kept out of logs,
//! process arguments and error messages; floods of WebSocket frames and
//! logins; worktree paths that try to leave the offered worktrees; a
//! database from a newer version; a full disk during append. These need the
//! local process itself (its logs, arguments, data directory and disk);
//! the API's answers to malformed input, shared with Cloudflare, are the
//! API suite (`api.rs`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use duraclaw_testkit::local as support;
use support::{
    DEADLINE, PASSWORD, client, duraclaw, get_json, login, next, wait_gateway, worktree,
    write_script, ws,
};

/// Adds a user, the password on stdin; returns everything it printed.
async fn add_user(data: &Path, name: &str) -> String {
    let mut child = duraclaw("debug")
        .args(["user", "add", name, "--password-stdin", "--data-dir"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let argv = cmdline(child.id().unwrap());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{argv}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The arguments of a live process, NULs as spaces ("" once it is gone).
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// `pid` and all its descendants (bounded walk of /proc).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    for _ in 0..8 {
        let mut grew = false;
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parens.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if ppid.is_some_and(|pp| tree.contains(&pp)) && !tree.contains(&p) {
                tree.push(p);
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    tree
}

struct Up {
    child: Child,
    base: String,
    gateway: String,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Up {
    /// Stops the process and returns everything it wrote.
    async fn stop(mut self) -> String {
        self.child.start_kill().unwrap();
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        for r in self.readers {
            tokio::time::timeout(DEADLINE, r).await.unwrap().unwrap();
        }
        self.output.lock().unwrap().clone()
    }
}

fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    output: Arc<Mutex<String>>,
    lines_tx: mpsc::UnboundedSender<String>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            {
                let mut o = output.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
            let _ = lines_tx.send(line);
        }
    })
}

async fn up(data: &Path, script: &Path) -> Up {
    let mut child = duraclaw("debug")
        .args([
            "up",
            "--demo",
            "--bind",
            "127.0.0.1:0",
            "--gateway-bind",
            "127.0.0.1:0",
        ])
        .arg("--script")
        .arg(script)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let readers = vec![
        collect(child.stdout.take().unwrap(), output.clone(), tx.clone()),
        collect(child.stderr.take().unwrap(), output.clone(), tx),
    ];
    let (mut base, mut gateway) = (None, None);
    while base.is_none() || gateway.is_none() {
        let line = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("duraclaw up did not start in time")
            .unwrap_or_else(|| panic!("duraclaw up exited: {}", output.lock().unwrap()));
        if let Some(rest) = line.strip_prefix("duraclaw listening on ") {
            base = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("gateway listening on ") {
            gateway = Some(rest.trim().trim_start_matches("ws://").to_owned());
        }
    }
    Up {
        child,
        base: base.unwrap(),
        gateway: gateway.unwrap(),
        output,
        readers,
    }
}

async fn create_session(up: &Up, c: &reqwest::Client, worktree: &str) -> reqwest::Response {
    c.post(format!("{}/api/sessions", up.base))
        .header("origin", &up.base)
        .json(&json!({"worktree": worktree, "prompt": "look around"}))
        .send()
        .await
        .unwrap()
}

fn script(dir: &Path) -> PathBuf {
    write_script(
        dir,
        json!([[
            {"step": "text", "text": "Looking at the project.", "chunks": 2},
            {"step": "tool", "name": "Bash", "input": {"command": "ls"}, "result": "README.md"},
            {"step": "text", "text": "All done.", "chunks": 1}
        ]]),
    )
}

/// The hex SHA-256 of a cookie's token: what auth.db stores.
fn token_hash(cookie: &str) -> String {
    let token = cookie.strip_prefix("duraclaw_session=").unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_arguments_or_error_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut seen = add_user(&data, "alice").await;
    let up = up(&data, &script(tmp.path())).await;
    let secret = std::fs::read_to_string(data.join("gateway-secret"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(secret.len() >= 16);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("gateway-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the generated secret is private");
    }

    // A wrong password: the answer does not echo it.
    let wrong = "wrong-password-that-must-not-show";
    let r = client()
        .post(format!("{}/api/login", up.base))
        .header("origin", &up.base)
        .json(&json!({"username": "alice", "password": wrong}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    seen.push_str(&r.text().await.unwrap());

    let (alice, cookie) = login(&up.base, "alice").await;
    wait_gateway(&up.base, &alice, true).await;
    let wt = worktree(&up.base, &alice).await;
    let r = create_session(&up, &alice, &wt).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut w = ws(&up.base, &cookie, &id, 0, &up.base).await.unwrap();
    loop {
        let f = next(&mut w).await;
        seen.push_str(&f.to_string());
        if f["type"] == "event" && f["event"]["type"] == "user_question" {
            break;
        }
    }
    // A replayed cookie after logout: refused, and the answer says nothing.
    let r = alice
        .post(format!("{}/api/logout", up.base))
        .header("origin", &up.base)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = client()
        .get(format!("{}/api/sessions", up.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    seen.push_str(&r.text().await.unwrap());

    // Wrong and almost-right bearers at the gateway.
    let short = &secret[..secret.len() - 1];
    for auth in [
        format!("Bearer {secret}x"),
        format!("Bearer {short}"),
        format!("bearer {secret}"),
        secret.clone(),
        format!("Basic {secret}"),
    ] {
        let mut req = format!("ws://{}/", up.gateway)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", auth.parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401, "{auth}");
                seen.push_str(&format!("{:?}", resp.headers()));
                if let Some(body) = resp.body() {
                    seen.push_str(&String::from_utf8_lossy(body));
                }
            }
            other => panic!("{auth} was not refused: {:?}", other.map(|_| ())),
        }
    }

    // The arguments of the running processes.
    for pid in process_tree(up.child.id().unwrap()) {
        seen.push_str(&cmdline(pid));
    }
    drop(w);
    let logs = up.stop().await;
    assert!(
        logs.contains("DEBUG") || logs.contains("debug"),
        "debug logging was on: {logs}"
    );
    let all = format!("{seen}\n{logs}");
    let token = cookie.strip_prefix("duraclaw_session=").unwrap();
    for (what, value) in [
        ("the gateway secret", secret.as_str()),
        ("the password", PASSWORD),
        ("the wrong password", wrong),
        ("the session token", token),
        ("the session token's hash", token_hash(&cookie).as_str()),
    ] {
        assert!(!all.contains(value), "{what} leaked:\n{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_frames_and_logins_are_answered_and_the_server_stays_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice").await;
    add_user(&data, "bob").await;
    let up = up(&data, &script(tmp.path())).await;
    let (alice, cookie) = login(&up.base, "alice").await;
    let (bob, _) = login(&up.base, "bob").await;
    wait_gateway(&up.base, &alice, true).await;
    let wt = worktree(&up.base, &alice).await;
    let r = create_session(&up, &alice, &wt).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // 200 pings and 50 garbage frames as fast as they go: each is answered,
    // in order.
    let mut w = ws(&up.base, &cookie, &id, 0, &up.base).await.unwrap();
    const PINGS: u64 = 200;
    for n in 0..PINGS {
        w.feed(Message::text(
            json!({"type": "ping", "nonce": n}).to_string(),
        ))
        .await
        .unwrap();
        if n % 4 == 0 {
            w.feed(Message::text("{not a frame")).await.unwrap();
        }
    }
    w.flush().await.unwrap();
    let (mut pongs, mut errors) = (Vec::new(), 0);
    while pongs.len() < PINGS as usize {
        let f = next(&mut w).await;
        match f["type"].as_str() {
            Some("pong") => pongs.push(f["nonce"].as_u64().unwrap()),
            Some("error") => errors += 1,
            _ => {}
        }
    }
    assert_eq!(pongs, (0..PINGS).collect::<Vec<_>>());
    assert_eq!(errors, PINGS / 4);

    // A frame over the limit ends that connection, not the server.
    let huge = format!(
        "{{\"type\":\"ping\",\"nonce\":1,\"pad\":\"{}\"}}",
        "x".repeat(duraclaw_core::protocol::MAX_FRAME_BYTES)
    );
    let _ = w.send(Message::text(huge)).await;
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match w.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the oversized frame did not end the stream");

    // Many wrong logins: answered with 429 once the limit is reached.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let r = client()
            .post(format!("{}/api/login", up.base))
            .header("origin", &up.base)
            .json(&json!({"username": "alice", "password": "not her password at all"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");

    // Still up: health, a logged-in user's requests, a fresh WebSocket.
    assert_eq!(
        client()
            .get(format!("{}/api/health", up.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        bob.get(format!("{}/api/sessions", up.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut again = ws(&up.base, &cookie, &id, 0, &up.base).await.unwrap();
    assert_eq!(next(&mut again).await["type"], "hello");
    assert_eq!(next(&mut again).await["type"], "snapshot");
    again
        .send(Message::text(
            json!({"type": "ping", "nonce": 7}).to_string(),
        ))
        .await
        .unwrap();
    loop {
        let f = next(&mut again).await;
        if f["type"] == "pong" {
            assert_eq!(f["nonce"], 7);
            break;
        }
    }
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worktree_paths_that_leave_the_offered_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice").await;
    let up = up(&data, &script(tmp.path())).await;
    let (alice, _) = login(&up.base, "alice").await;
    wait_gateway(&up.base, &alice, true).await;
    let wt = worktree(&up.base, &alice).await;

    // Symlinks out of the worktree and to it from outside.
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, Path::new(&wt).join("escape")).unwrap();
    std::os::unix::fs::symlink("/", Path::new(&wt).join("root")).unwrap();
    let alias = tmp.path().join("alias");
    std::os::unix::fs::symlink(&wt, &alias).unwrap();

    let parent = Path::new(&wt).parent().unwrap().display().to_string();
    for bad in [
        format!("{wt}/.."),
        format!("{wt}/../.."),
        format!("{wt}/../../../../../../etc"),
        format!("{wt}/./"),
        format!("{wt}/escape"),
        format!("{wt}/root"),
        format!("{wt}/escape/.."),
        alias.display().to_string(),
        outside.display().to_string(),
        parent,
        "/".into(),
        "../".into(),
        "..".into(),
        "".into(),
        format!("{wt}\0"),
        format!("{wt}/\n"),
    ] {
        let r = create_session(&up, &alice, &bad).await;
        assert_eq!(r.status(), 400, "{bad:?}: {}", r.text().await.unwrap());
    }
    let list: Value = get_json(&alice, format!("{}/api/sessions", up.base)).await;
    assert_eq!(list, json!([]), "nothing was started");
    // The real worktree still works.
    assert_eq!(create_session(&up, &alice, &wt).await.status(), 201);
    up.stop().await;
}

async fn bump_schema(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute(
        "UPDATE duraclaw_meta SET int_value = 999 WHERE key = 'schema'",
        [],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_version_stops_duraclaw_up() {
    for file in ["auth.db", "sessions.db", "gateway/gateway.db"] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        add_user(&data, "alice").await;
        let path = data.join(file);
        if file != "auth.db" {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            drop(duraclaw_store::SqliteDirectory::open(&path).await.unwrap());
        }
        bump_schema(&path).await;
        let out = duraclaw("debug")
            .args([
                "up",
                "--demo",
                "--bind",
                "127.0.0.1:0",
                "--gateway-bind",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .output();
        let out = tokio::time::timeout(DEADLINE, out).await.unwrap().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: started anyway");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("duraclaw listening on"),
            "{file}: listened anyway"
        );
        assert!(stderr.contains("newer"), "{file}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{file}: the error names the file: {stderr}"
        );
        // Left as it was (compared through SQLite: with WAL the bytes of the
        // main file may legitimately move when a checkpoint runs).
        let conn = rusqlite::Connection::open(&path).unwrap();
        let schema: i64 = conn
            .query_row(
                "SELECT int_value FROM duraclaw_meta WHERE key = 'schema'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(schema, 999, "{file} left as it was");
    }
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where mounting is not allowed (not root, no CAP_SYS_ADMIN).
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn filler(n: u64) -> duraclaw_core::store::NewEvent {
    let event = duraclaw_core::protocol::Event::ToolResult(duraclaw_core::protocol::ToolResult {
        tool_use_id: format!("toolu_{n}"),
        content: json!(format!("{n:08}").repeat(1024)),
        is_error: false,
    });
    duraclaw_core::store::NewEvent::new(&event, Some(n), 1_700_000_000_000).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_append_is_a_clear_error_and_the_log_survives() {
    use duraclaw_core::store::{AppendBatch, SessionDirectory, SessionMeta};
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), "768k") else {
        eprintln!("skipped: mounting a small tmpfs is not allowed here");
        return;
    };
    let path = disk.0.join("sessions.db");
    let dir = duraclaw_store::SqliteDirectory::open(&path).await.unwrap();
    let store = dir
        .create(SessionMeta::new("s1", "alice", 1_700_000_000_000))
        .await
        .unwrap();

    // Append 8 KiB events until the disk is full (bounded: 768 KiB cannot
    // hold 200 of them).
    let mut acked = 0u64;
    let mut failure = None;
    for n in 1..=200u64 {
        match store.append(AppendBatch::events(vec![filler(n)])).await {
            Ok(out) => {
                assert_eq!(out.stored.len(), 1);
                acked = n;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("the disk never filled");
    assert!(acked > 0, "nothing fitted at all");
    assert!(
        matches!(err, duraclaw_core::Error::Storage { .. }),
        "a typed storage error: {err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("full"),
        "the error says the disk is full: {msg}"
    );
    // Still full: still a clean error, and the acknowledged log is whole.
    assert!(
        store
            .append(AppendBatch::events(vec![filler(acked + 1)]))
            .await
            .is_err()
    );
    assert_eq!(store.head().await.unwrap().last_seq, acked);

    // Free space: appends work again, from the next seq.
    disk.resize("16m");
    store
        .append(AppendBatch::events(vec![filler(acked + 1)]))
        .await
        .unwrap();
    let expected: Vec<u64> = (1..=acked + 1).collect();
    let check = |events: Vec<duraclaw_core::store::StoredEvent>| {
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, expected, "dense, in order, nothing lost");
        for e in &events {
            assert_eq!(e.json, filler(e.seq).json, "event {} intact", e.seq);
        }
    };
    check(store.read_after(0, 1000).await.unwrap());
    drop(store);
    drop(dir);

    // Reopened: the same log, and SQLite finds nothing wrong with the file.
    let dir = duraclaw_store::SqliteDirectory::open(&path).await.unwrap();
    let store = dir.open("s1").await.unwrap();
    check(store.read_after(0, 1000).await.unwrap());
    drop(store);
    drop(dir);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let verdict: String = raw
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verdict, "ok");
}
